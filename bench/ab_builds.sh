#!/usr/bin/env bash
# A/B of hybridgate builds side by side, for changes smaller than run-to-run noise.
#
#   bench/ab_builds.sh REV [REV ...]      (e.g. bench/ab_builds.sh main~1 main)
#
# Each REV is checked out in a git worktree and served by its own `python -m proxy serve`,
# all on PROXY_CPU, against bench/peers' fake upstream on LOAD_CPU. Then, ROUNDS times, each
# build in turn gets a closed-loop run (wrk, 32 connections, SECS seconds: req/s and the
# proxy's CPU seconds per 1,000 requests) and a streaming run (10 clients: streams/s and
# TTFT p50). Alternating in short runs puts every build under the same machine weather;
# compare builds within a round. Needs wrk (`bench/peers/run.sh setup`).
set -euo pipefail

SECS=${SECS:-5}
. "$(dirname "$0")/ab_common.sh"
[ $# -ge 1 ] || { echo "usage: $0 REV [REV ...]" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing (bench/peers/run.sh setup installs it)" >&2; exit 2; }

PORTS=()
i=0
for rev in "$@"; do
  tree=$TMP/tree-$i
  git -C "$ROOT" worktree add -q --detach "$tree" "$rev"
  AT_EXIT+=("git -C '$ROOT' worktree remove --force '$tree' 2>/dev/null")
  port=$(free_port)
  cat >"$TMP/hg-$i.yaml" <<EOF
listen: {host: 127.0.0.1, port: $port}
backends:
  bench: {type: openai, base_url: "http://127.0.0.1:$UP_PORT/v1", max_concurrency: 1024}
models:
  bench-model:
    targets: [{backend: bench, model: bench-model}]
EOF
  (cd "$tree" && exec taskset -c "$PROXY_CPU" python -m proxy serve -c "$TMP/hg-$i.yaml") \
    >"$TMP/hg-$i.log" 2>&1 &
  PIDS+=($!)
  PORTS+=("$port")
  i=$((i + 1))
done

for port in "$UP_PORT" "${PORTS[@]}"; do
  for _ in $(seq 1 100); do
    curl -s -o /dev/null -X POST "$(url "$port")" -H 'content-type: application/json' \
      -d '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}' && break
    sleep 0.3
  done
done

cat >"$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
EOF
proxy_pid() { pgrep -f "proxy serve -c $TMP/hg-$1.yaml" | head -1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

printf '%-6s %-24s %10s %12s %10s %14s\n' round build "req/s" "CPU s / 1k" "streams/s" "TTFT p50 ms"
for round in $(seq 1 "$ROUNDS"); do
  i=0
  for rev in "$@"; do
    port=${PORTS[$i]}
    pid=$(proxy_pid "$i")
    a=$(cpu_ticks "$pid")
    rps=$(taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${SECS}s" -s "$TMP/post.lua" "$(url "$port")" |
      awk '/Requests\/sec/ {print $2}')
    b=$(cpu_ticks "$pid")
    cpu=$("$PY" -c "print(round(($b - $a) / $hz / ($rps * $SECS) * 1000, 3))")
    read -r sps ttft < <(taskset -c "$LOAD_CPU" "$PY" "$PEERS/load.py" stream --url "$(url "$port")" \
      --model bench-model -c 10 -d "$SECS" 2>/dev/null |
      "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(round(d["streams_per_s"]), round(d["ttft_ms"]["p50"], 3))')
    printf '%-6s %-24s %10s %12s %10s %14s\n' "$round" "$rev" "$rps" "$cpu" "$sps" "$ttft"
    i=$((i + 1))
  done
done
