#!/usr/bin/env bash
# The README's first command: install hybridgate, then run its demo. A simulated vLLM
# (the GPU) and a simulated commercial API start behind the proxy, a working day of
# traffic runs through it in --duration seconds (60), the live report is printed and the
# dashboard stays up until Ctrl-C (--exit: stop right after the report).
# Needs Python 3.11+ and pip; no GPU, no API keys, no Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q --root-user-action=ignore -e .
if command -v hybridgate >/dev/null 2>&1; then
  exec hybridgate demo "$@"
fi
exec python3 -m proxy demo "$@"
