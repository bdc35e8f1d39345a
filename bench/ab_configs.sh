#!/usr/bin/env bash
# Added latency of configurations side by side: what auth and `redis://` state cost on the
# request path, in the peer comparison's own terms (bench/peers: its fake upstream, its open-loop load
# generator, "added" = proxied − direct in the same round).
#
#   bench/ab_configs.sh            (needs redis-server)
#
# One build (the `hybridgate` this checkout installs) is served three times, all on
# PROXY_CPU, against bench/peers' upstream on LOAD_CPU:
#   open    the harness's own config (no key, memory:// state);
#   auth    a key with rpm and tpm limits, its tenant with a monthly budget: every request
#           is authenticated and goes through the budget and rate checks (memory://);
#   redis   the same as `auth` with `state.url: redis://` (a throwaway redis-server on
#           LOAD_CPU), so the local deltas are flushed to Redis and the cluster view read back.
# Then, ROUNDS times, for each rate in RATES: `direct` and each config in turn get SECS
# seconds of fixed-rate open-loop load, alternating, so drift hits all of them alike.
set -euo pipefail

SECS=${SECS:-8}
RATES=${RATES:-100 300}
KEY=sk-bench-ab-configs
. "$(dirname "$0")/ab_common.sh"
command -v redis-server >/dev/null || { echo "redis-server is missing" >&2; exit 2; }
command -v hybridgate >/dev/null || { echo "hybridgate is not installed (pip install -e .)" >&2; exit 2; }

REDIS_PORT=$(free_port)
taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
  --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)

NAMES=(open auth redis)
declare -A PORT
for name in "${NAMES[@]}"; do
  port=$(free_port)
  PORT[$name]=$port
  {
    echo "listen: {host: 127.0.0.1, port: $port}"
    echo "backends:"
    echo "  bench: {type: openai, base_url: \"http://127.0.0.1:$UP_PORT/v1\", max_concurrency: 1024}"
    echo "models:"
    echo "  bench-model:"
    echo "    targets: [{backend: bench, model: bench-model}]"
    if [ "$name" != open ]; then
      echo "auth:"
      echo "  keys: [{key: $KEY, tenant: team, name: bench, rpm: 1000000000, tpm: 1000000000000}]"
      echo "tenants:"
      echo "  team: {monthly_api_budget_usd: 1000000000}"
    fi
    if [ "$name" = redis ]; then
      echo "state: {url: \"redis://127.0.0.1:$REDIS_PORT/0\"}"
    fi
  } >"$TMP/$name.yaml"
  taskset -c "$PROXY_CPU" hybridgate serve -c "$TMP/$name.yaml" >"$TMP/$name.log" 2>&1 &
  PIDS+=($!)
done

for port in "$UP_PORT" "${PORT[@]}"; do
  ok=
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$(url "$port")" \
      -H 'content-type: application/json' -H "authorization: Bearer $KEY" \
      -d '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}' || true)
    [ "$code" = 200 ] && { ok=1; break; }
    sleep 0.3
  done
  [ -n "$ok" ] || { echo "port $port never answered 200" >&2; tail -20 "$TMP"/*.log >&2; exit 1; }
done

open_p50_p99() {  # PORT RATE -> "p50 p99" (ms)
  taskset -c "$LOAD_CPU" "$PY" "$PEERS/load.py" open --url "$(url "$1")" \
    -H "Authorization: Bearer $KEY" --model bench-model -r "$2" -d "$SECS" 2>/dev/null |
    "$PY" -c 'import json,sys; d=json.load(sys.stdin); L=d["latency_ms"]
assert d["ok"] == d["sent"], d["errors"]
print("%.3f %.3f" % (L["p50"], L["p99"]))'
}

printf '%-6s %-6s %-8s %16s %22s\n' round rate target "p50 / p99 ms" "added p50 / p99 ms"
for round in $(seq 1 "$ROUNDS"); do
  for rate in $RATES; do
    read -r d50 d99 < <(open_p50_p99 "$UP_PORT" "$rate")
    printf '%-6s %-6s %-8s %16s %22s\n' "$round" "$rate" direct "$d50 / $d99" ""
    for name in "${NAMES[@]}"; do
      read -r p50 p99 < <(open_p50_p99 "${PORT[$name]}" "$rate")
      added=$("$PY" -c "print('%.3f / %.3f' % ($p50 - $d50, $p99 - $d99))")
      printf '%-6s %-6s %-8s %16s %22s\n' "$round" "$rate" "$name" "$p50 / $p99" "$added"
    done
  done
done
