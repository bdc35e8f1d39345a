#!/usr/bin/env bash
# Installs the peers for bench/peers/run.sh, outside the checkout, under WORK
# (default ${TMPDIR:-/tmp}/peerbench); idempotent, so `run.sh setup` may be run again.
#
#   wrk                        apt (the closed-loop load; needs root or sudo)
#   WORK/litellm-venv          pip: litellm[proxy] (LITELLM_VERSION, empty = latest), its own venv
#   WORK/portkey               npm: @portkey-ai/gateway@PORTKEY_VERSION, with @hono/node-server
#                              pinned (HONO_NODE_SERVER_PIN): 1.14.2 and later answer every
#                              streaming request of Portkey 1.15.x with 500 "TypeError: immutable"
#                              (Portkey-AI/gateway#1389, #1550)
#
# hybridgate itself is the checkout this script lives in (`python -m proxy`), not installed here.
set -euo pipefail

WORK=${WORK:-${TMPDIR:-/tmp}/peerbench}
LITELLM_VERSION=${LITELLM_VERSION:-}
PORTKEY_VERSION=${PORTKEY_VERSION:-1.15.2}
HONO_NODE_SERVER_PIN=${HONO_NODE_SERVER_PIN:-1.14.1}
mkdir -p "$WORK"

if ! command -v wrk >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -qq wrk || { $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk; }
fi

if [ ! -x "$WORK/litellm-venv/bin/litellm" ]; then
  python3 -m venv "$WORK/litellm-venv"
  "$WORK/litellm-venv/bin/pip" install -q "litellm[proxy]${LITELLM_VERSION:+==$LITELLM_VERSION}"
fi

if [ ! -f "$WORK/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
  mkdir -p "$WORK/portkey"
  cat >"$WORK/portkey/package.json" <<JSON
{
  "name": "hybridgate-peers-portkey",
  "private": true,
  "dependencies": {"@portkey-ai/gateway": "$PORTKEY_VERSION"},
  "overrides": {"@hono/node-server": "$HONO_NODE_SERVER_PIN"}
}
JSON
  (cd "$WORK/portkey" && npm install --no-audit --no-fund --loglevel=error)
fi
