#!/usr/bin/env bash
# hybridgate beside LiteLLM's proxy and Portkey's gateway, in one run on one machine: what each
# adds to a request over calling the upstream directly.
#
#   bash bench/peers/run.sh setup                     # once: wrk, LiteLLM, Portkey, under WORK
#   bash bench/peers/run.sh [TARGET ...]              # default: direct litellm portkey hybridgate
#   bash bench/peers/run.sh report WORK/results/STAMP # re-print an earlier run's table
#
# Targets, one at a time, each on PROXY_CPU (its whole process tree), against bench/peers'
# fake upstream on LOAD_CPU with the load generator:
#   direct       the upstream itself (no proxy: the zero every "added" is measured from)
#   litellm      `litellm --config ... --num_workers 1` (its default), callbacks and spend logs off
#   litellm-w2   the same with 2 workers
#   portkey      Portkey's gateway (node, --headless), routed per request by x-portkey-* headers
#   hybridgate   this checkout: `python -m proxy serve` (HG_ARGS adds flags, e.g. "--workers 2")
# Per target: a probe (well-formed answers, usage chunk, [DONE]), WARMUP_S s of unmeasured
# load (node's JIT, LiteLLM's lazy imports), then REPS x (closed loop with
# wrk, open loop at each of RATES, streaming clients), each once the target's process tree is
# idle again (at most 60 s: an overloaded one works off its backlog first), with the CPU
# seconds of that tree over the run; then its peak RSS. Results: WORK/results/STAMP/ (<target>.json, table.txt,
# table.md, env.txt, logs/).
#
# Knobs (env, defaults): WORK=${TMPDIR:-/tmp}/peerbench REPS=3 WARMUP_S=2 CLOSED_S=10 CONNS=32
# RATES="100 300" OPEN_S=10 STREAM_CLIENTS=10 STREAM_S=10 CHUNKS=50 TTFT_MS=0 ITL_MS=0
# LOAD_CPU=0 PROXY_CPU=1 WAIT_QUIET=1 (wait up to 20 min for load average < 0.7 and no compiler
# running before measuring; 0 skips). Loopback only; every step is bounded in time, and every
# process started here is stopped on exit, failure or Ctrl-C.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${WORK:-${TMPDIR:-/tmp}/peerbench}
case "${1:-}" in
  setup) exec bash "$HERE/setup.sh" ;;
  report) exec "${PY:-python3}" "$HERE/report.py" "${2:?usage: run.sh report RESULTS_DIR}" ;;
esac

REPS=${REPS:-3}
WARMUP_S=${WARMUP_S:-2}
CLOSED_S=${CLOSED_S:-10}
CONNS=${CONNS:-32}
RATES=${RATES:-100 300}
OPEN_S=${OPEN_S:-10}
STREAM_CLIENTS=${STREAM_CLIENTS:-10}
STREAM_S=${STREAM_S:-10}
WAIT_QUIET=${WAIT_QUIET:-1}
HG_ARGS=${HG_ARGS:-}
TARGETS=${*:-direct litellm portkey hybridgate}
MODEL=bench-model
LITELLM_KEY=sk-peers-master-0123456789abcdef  # LiteLLM's proxy will not start without one
. "$HERE/../ab_common.sh"
command -v wrk >/dev/null || { echo "wrk is missing: bash bench/peers/run.sh setup" >&2; exit 2; }
UPSTREAM=http://127.0.0.1:$UP_PORT/v1
RESULTS=${RESULTS:-$WORK/results/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS/logs"

log() { echo "[peers $(date -u +%H:%M:%S)] $*" >&2; }

busy_compilers() { ps -eo comm= | grep -cE '^(cc1|cc1plus|ld|rustc|cargo|cmake|ninja|make|nvcc)$' || true; }

wait_quiet() {  # bounded: 40 polls of 30 s, then measure anyway and say so
  [ "$WAIT_QUIET" = 1 ] || return 0
  for i in $(seq 1 40); do
    la=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$la" 'BEGIN { exit !(l < 0.7) }' && [ "$(busy_compilers)" = 0 ]; then
      log "machine quiet (load $la)"
      return 0
    fi
    log "waiting for a quiet machine: load $la, $(busy_compilers) compilers ($i/40)"
    sleep 30
  done
  log "WARNING: the machine never got quiet; measuring anyway (see the load averages)"
}

ready() {  # ready URL PID LOG [header ...]: a 200 to a chat request within 180 s
  local u=$1 pid=$2 logf=$3 code=000
  shift 3
  local hs=()
  for h in "$@"; do hs+=(-H "$h"); done
  for _ in $(seq 1 360); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "${hs[@]}" -H 'content-type: application/json' \
      -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" "$u" || true)
    [ "$code" = 200 ] && return 0
    if [ "$pid" != 0 ] && ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.5
  done
  log "not ready (last HTTP $code): $u"
  [ -f "$logf" ] && tail -20 "$logf" >&2
  return 1
}

# start_<target> PORT LOG: start it on 127.0.0.1:PORT (its own process group, pinned to
# PROXY_CPU) in front of $UPSTREAM; set T_PID (0 = nothing started), T_URL, T_HEADERS.
spawn() {  # LOG cmd...: setsid, so stop_pid stops the whole tree
  local logf=$1
  shift
  setsid taskset -c "$PROXY_CPU" "$@" >"$logf" 2>&1 </dev/null &
  T_PID=$!
  PIDS+=("$T_PID")
}

start_direct() { T_PID=0 T_URL=$UPSTREAM/chat/completions T_HEADERS=(); }

litellm() {  # PORT LOG WORKERS
  local bin=$WORK/litellm-venv/bin/litellm
  [ -x "$bin" ] || { log "no $bin: bash bench/peers/run.sh setup"; return 1; }
  cat >"$TMP/litellm.yaml" <<EOF
model_list:
  - model_name: $MODEL
    litellm_params: {model: openai/$MODEL, api_base: "$UPSTREAM", api_key: sk-upstream}
litellm_settings: {telemetry: false, set_verbose: false, callbacks: [], success_callback: [], failure_callback: [], cache: false}
general_settings: {master_key: $LITELLM_KEY, disable_spend_logs: true, disable_error_logs: true}
EOF
  spawn "$2" env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR "$bin" --config "$TMP/litellm.yaml" \
    --host 127.0.0.1 --port "$1" --num_workers "$3"
  T_URL=$(url "$1") T_HEADERS=("Authorization: Bearer $LITELLM_KEY")
}
start_litellm() { litellm "$1" "$2" 1; }
start_litellm-w2() { litellm "$1" "$2" 2; }

start_portkey() {
  local js=$WORK/portkey/node_modules/@portkey-ai/gateway/build/start-server.js
  [ -f "$js" ] || { log "no $js: bash bench/peers/run.sh setup"; return 1; }
  spawn "$2" node "$js" --port="$1" --headless
  T_URL=$(url "$1")
  T_HEADERS=("x-portkey-provider: openai" "x-portkey-custom-host: $UPSTREAM" "Authorization: Bearer sk-upstream")
}

start_hybridgate() {
  cat >"$TMP/hybridgate.yaml" <<EOF
listen: {host: 127.0.0.1, port: $1}
backends:
  bench: {type: openai, base_url: "$UPSTREAM", max_concurrency: 1024}
models:
  $MODEL:
    targets: [{backend: bench, model: $MODEL}]
EOF
  # shellcheck disable=SC2086  # HG_ARGS is a list of flags
  spawn "$2" env -C "$ROOT" "$PY" -m proxy serve -c "$TMP/hybridgate.yaml" $HG_ARGS
  T_URL=$(url "$1") T_HEADERS=()
}

run_target() {  # NAME: start, check, measure, stop; a failure skips the target, not the run
  local name=$1 port logf hs=()
  declare -F "start_$name" >/dev/null || { log "unknown target $name"; return 1; }
  port=$(free_port)
  logf=$RESULTS/logs/$name.log
  T_PID=0 T_URL="" T_HEADERS=()
  "start_$name" "$port" "$logf" || return 1
  if ! ready "$T_URL" "$T_PID" "$logf" "${T_HEADERS[@]}"; then
    [ "$T_PID" = 0 ] || stop_pid "$T_PID"
    return 1
  fi
  for h in "${T_HEADERS[@]}"; do hs+=(-H "$h"); done
  local nrates budget
  nrates=$(wc -w <<<"$RATES")
  # each run: its duration + up to 60 s for the target to go idle + 35 s of request timeouts
  budget=$((WARMUP_S + 120 + REPS * (CLOSED_S + ${STREAM_S%.*} + nrates * ${OPEN_S%.*} + (2 + nrates) * 100)))
  # In the background (its own process group, timeout's) so that `wait`, unlike a foreground
  # child, lets Ctrl-C through at once, and stop_pid stops the load and its wrk with it.
  # shellcheck disable=SC2086  # RATES is a list
  timeout -k 10 "$budget" taskset -c "$LOAD_CPU" "$PY" "$PEERS/load.py" suite --name "$name" \
    --url "$T_URL" "${hs[@]}" --model "$MODEL" --pid "$T_PID" --reps "$REPS" --warmup-s "$WARMUP_S" --conns "$CONNS" \
    --closed-s "$CLOSED_S" --rates $RATES --open-s "$OPEN_S" --stream-clients "$STREAM_CLIENTS" \
    --stream-s "$STREAM_S" --out "$RESULTS/$name.json" 2> >(tee -a "$RESULTS/logs/load.log" >&2) &
  local load_pid=$!
  PIDS+=("$load_pid")
  wait "$load_pid" || log "$name: the suite failed"
  [ -f "$RESULTS/$name.json" ] || log "$name: no results"
  [ "$T_PID" = 0 ] || stop_pid "$T_PID"
}

versions() {
  echo "date:       $(date -u +%FT%TZ)"
  echo "hybridgate: $(git -C "$ROOT" describe --always --dirty 2>/dev/null) ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
  echo "litellm:    $("$WORK/litellm-venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || echo -)"
  echo "portkey:    $(node -p "require('$WORK/portkey/node_modules/@portkey-ai/gateway/package.json').version" 2>/dev/null || echo -)"
  echo "wrk:        $(wrk -v 2>&1 | head -1)"
  echo "machine:    $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"
  echo "targets:    $TARGETS (proxy CPU $PROXY_CPU, load + upstream CPU $LOAD_CPU)"
  echo "knobs:      REPS=$REPS WARMUP_S=$WARMUP_S CLOSED_S=$CLOSED_S CONNS=$CONNS RATES=\"$RATES\" OPEN_S=$OPEN_S" \
    "STREAM_CLIENTS=$STREAM_CLIENTS STREAM_S=$STREAM_S CHUNKS=$CHUNKS TTFT_MS=$TTFT_MS ITL_MS=$ITL_MS"
}

ready "$(url "$UP_PORT")" "${PIDS[0]}" "$TMP/upstream.log" || exit 1
versions | tee "$RESULTS/env.txt" >&2
wait_quiet
for t in $TARGETS; do
  [ "$(busy_compilers)" = 0 ] || wait_quiet
  log "=== $t"
  run_target "$t" || log "$t skipped"
done
echo "end load average: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/env.txt"
"$PY" "$PEERS/report.py" "$RESULTS" --md >"$RESULTS/table.md"
"$PY" "$PEERS/report.py" "$RESULTS" | tee "$RESULTS/table.txt"
log "results: $RESULTS"
