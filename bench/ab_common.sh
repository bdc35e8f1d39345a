# Shared by the side-by-side benchmarks (peers/run.sh, ab_builds.sh, ab_configs.sh); sourced,
# not run. Knobs, a scratch dir with the processes started in it (all stopped on exit, Ctrl-C
# included), free ports, and bench/peers' fake upstream on LOAD_CPU.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS=$ROOT/bench/peers
WORK=${WORK:-${TMPDIR:-/tmp}/peerbench}
PY=${PY:-python3}
ROUNDS=${ROUNDS:-3}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
CHUNKS=${CHUNKS:-50}
TTFT_MS=${TTFT_MS:-0}
ITL_MS=${ITL_MS:-0}
"$PY" -c 'import httptools, uvloop' || { echo "$PY lacks httptools/uvloop (pip install -e .)" >&2; exit 2; }

TMP=$(mktemp -d)
PIDS=()
AT_EXIT=()  # more commands to run on exit, before the scratch dir goes
stop_pid() {  # TERM a process (its whole group when it leads one), KILL it after 10 s
  local p=$1
  kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  for c in "${AT_EXIT[@]}"; do eval "$c" || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # through the EXIT trap

free_port() { (cd "$ROOT" && "$PY" -c "from proxy.ports import free_port; print(free_port())"); }
url() { echo "http://127.0.0.1:$1/v1/chat/completions"; }

UP_PORT=$(free_port)
taskset -c "$LOAD_CPU" "$PY" "$PEERS/upstream.py" --port "$UP_PORT" --chunks "$CHUNKS" \
  --ttft-ms "$TTFT_MS" --itl-ms "$ITL_MS" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
