# Shared by the side-by-side benchmarks (ab_builds.sh, ab_configs.sh); sourced, not run.
# Knobs, the peer harness's tools, a scratch dir with the processes started in it (all
# stopped on exit), free ports, and the harness's fake upstream on LOAD_CPU.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${HARNESS:-$ROOT/../shared/peer-bench}
WORK=${WORK:-${TMPDIR:-/tmp}/peerbench}
PY=$WORK/tools-venv/bin/python
ROUNDS=${ROUNDS:-3}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
[ -x "$PY" ] || { echo "run $HARNESS/run.sh setup first (no $PY)" >&2; exit 2; }

TMP=$(mktemp -d)
PIDS=()
AT_EXIT=()  # more commands to run on exit, before the scratch dir goes
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for c in "${AT_EXIT[@]}"; do eval "$c" || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
url() { echo "http://127.0.0.1:$1/v1/chat/completions"; }

UP_PORT=$(free_port)
taskset -c "$LOAD_CPU" "$PY" "$HARNESS/upstream.py" --port "$UP_PORT" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
