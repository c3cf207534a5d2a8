#!/usr/bin/env bash
# Start the local chain: Ganache 7.9.2 (the default) or Foundry's Anvil (CHAIN_NODE=anvil) on
# 127.0.0.1 at the port of CHAIN_RPC_URL (environment, then .env; default 8545), chain id 1337,
# deterministic accounts (the same keys on both), data kept across restarts (Ganache's in
# data/chain, Anvil's in data/chain-anvil/state.json). Ganache runs in Docker where `docker info`
# works (the engine of DOCKER_HOST), from trufflesuite/ganache:v7.9.2 where it can be pulled, else
# from the project's chain image (smartmeter-chain, built here by scripts/docker-images.sh chain when
# missing); otherwise from node_modules with the same flags and data directory. Anvil runs from
# node_modules. Ganache mines each transaction at once; Anvil does too unless BLOCK_TIME=N, when
# it mines a block every N seconds as a real network does (set CONFIRMATIONS for it, e.g. 2). It
# starts a chain on this machine only, so it refuses a CHAIN_RPC_URL on another host, and a
# GANACHE_PORT (older setting, optional) or CHAIN_WS_URL port that disagrees with CHAIN_RPC_URL's.
#   ./run-docker.sh           start (or say it is already running) and wait until the RPC answers
#   ./run-docker.sh --stop    stop it
#   ./run-docker.sh --reset   stop it and delete the chain's data (deployments must be redone)
#   ./run-docker.sh --status  say whether it runs
#   CHAIN_NODE=anvil BLOCK_TIME=1 ./run-docker.sh    Anvil, a block a second
set -euo pipefail
cd "$(dirname "$0")"

DATA_DIR="${DATA_DIR:-data}"
CHAIN_NODE="${CHAIN_NODE:-ganache}"
BLOCK_TIME="${BLOCK_TIME:-0}"
case "$CHAIN_NODE" in
  ganache) CHAIN_DIR="$DATA_DIR/chain"; NODE_NAME="Ganache" ;;
  anvil) CHAIN_DIR="$DATA_DIR/chain-anvil"; NODE_NAME="Anvil" ;;
  *) echo "run-docker: CHAIN_NODE=$CHAIN_NODE is not a node this script starts; use ganache or anvil" >&2; exit 2 ;;
esac
# The pid file names whichever node this script started (run-demo.sh watches it).
PID_FILE="$DATA_DIR/ganache.pid"
LOG_FILE="$DATA_DIR/logs/$CHAIN_NODE.log"
CONTAINER="smartmeter-ganache"
IMAGE="trufflesuite/ganache:v7.9.2"
LOCAL_IMAGE="smartmeter-chain:latest"

say() { printf 'run-docker: %s\n' "$*"; }

# The port to serve, from the settings every other part reads (so the chain starts where the server,
# the meters and the tools look for it); prints a plain refusal and exits 2 when it cannot be ours.
chain_port() {
  .venv/bin/python - <<'PY'
import ipaddress
import os
import sys
from urllib.parse import urlsplit

from common.errors import SmartMeterError
from common.settings import load_settings


def refuse(text: str) -> None:
    print(f"run-docker: {text}", file=sys.stderr)
    sys.exit(2)


def port_of(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


try:
    settings = load_settings()
except SmartMeterError as err:
    refuse(f"{err.message} (check .env)")
url = settings.chain_rpc_url
parts = urlsplit(url)
port = port_of(url)
if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
    refuse(f"CHAIN_RPC_URL={url} is not an http://HOST:PORT address; run-docker.sh starts the chain at that "
           "port, e.g. CHAIN_RPC_URL=http://127.0.0.1:8545")
host = parts.hostname
try:
    loopback = host == "localhost" or ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
except ValueError:
    loopback = False
if not loopback:
    refuse(f"CHAIN_RPC_URL={url} points to {host}, another machine; run-docker.sh starts a chain on this "
           "machine only (127.0.0.1). Start that node there yourself, or set CHAIN_RPC_URL and CHAIN_WS_URL "
           "to http://127.0.0.1:PORT and ws://127.0.0.1:PORT for a local chain.")
ganache_port = os.environ.get("GANACHE_PORT", "").strip()
if ganache_port and ganache_port != str(port):
    refuse(f"GANACHE_PORT={ganache_port} and CHAIN_RPC_URL={url} disagree: the chain would start where the "
           "server and the meters do not look for it. Unset GANACHE_PORT (CHAIN_RPC_URL alone sets the port) "
           "or make them the same.")
ws_port = port_of(settings.chain_ws_url)
if ws_port != port:
    refuse(f"CHAIN_WS_URL={settings.chain_ws_url} and CHAIN_RPC_URL={url} use different ports, but Ganache "
           f"serves both on one: set CHAIN_WS_URL=ws://127.0.0.1:{port}")
print(port)
PY
}

answers() {
  curl -s -m 2 -X POST -H 'content-type: application/json' \
    --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "$URL" 2>/dev/null | grep -q result
}

docker_works() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# The Ganache image to run: the official one if the engine has it or can pull it, else the project's own
# (same flags), built here when missing. Prints its name.
chain_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1 || timeout 120 docker pull -q "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE"
    return
  fi
  if ! docker image inspect "$LOCAL_IMAGE" >/dev/null 2>&1; then
    say "cannot pull $IMAGE (no registry reachable?); building $LOCAL_IMAGE here" >&2
    scripts/docker-images.sh chain >&2 || return 1
  fi
  echo "$LOCAL_IMAGE"
}

stop_chain() {
  if docker_works && docker ps -q -f name="^${CONTAINER}$" | grep -q .; then
    docker stop "$CONTAINER" >/dev/null && say "stopped the Ganache container"
  fi
  if [ -f "$PID_FILE" ]; then
    pid="$(cat "$PID_FILE")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -INT -- "-$pid" 2>/dev/null || kill -INT "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null || true
      say "stopped the chain (pid $pid)"
    fi
    rm -f "$PID_FILE"
  fi
}

case "${1:-}" in
  --stop) stop_chain; exit 0 ;;
  --reset)
    stop_chain
    rm -rf "$DATA_DIR/chain" "$DATA_DIR/chain-anvil" deployments/1337.json "$DATA_DIR/meters" "$DATA_DIR/gateway" \
      "$DATA_DIR/index" "$DATA_DIR/customers.json" "$DATA_DIR"/api/messages.sqlite*
    say "deleted the chain's data, the recorded deployment, provisioned meters and their messages; run ./run-docker.sh to start afresh"
    exit 0 ;;
  --status|"") ;;
  *) echo "usage: $0 [--stop|--reset|--status]" >&2; exit 2 ;;
esac

scripts/bootstrap.sh
PORT="$(chain_port)" || exit 2
URL="http://127.0.0.1:$PORT"

case "${1:-}" in
  --status)
    if answers; then say "the chain answers at $URL"; else say "no chain answers at $URL"; exit 1; fi
    exit 0 ;;
esac

if answers; then
  say "a chain is already running at $URL"
  exit 0
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  say "port $PORT is in use by something that is not a JSON-RPC node; free it, or choose another port in CHAIN_RPC_URL and CHAIN_WS_URL (.env)"
  exit 1
fi

mkdir -p "$CHAIN_DIR" "$(dirname "$LOG_FILE")"

if [ "$CHAIN_NODE" = anvil ]; then
  ANVIL="$(.venv/bin/python -m common.devchain anvil-binary)"
  [ -x "$ANVIL" ] || { say "Anvil is not installed in node_modules; run scripts/bootstrap.sh"; exit 1; }
  say "starting Anvil from node_modules ($( [ "$BLOCK_TIME" = 0 ] && echo "mining each transaction at once" || echo "a block every $BLOCK_TIME s"))"
  mapfile -t FLAGS < <(.venv/bin/python -m common.devchain anvil-flags "$PORT" "$CHAIN_DIR/state.json" 127.0.0.1 "$BLOCK_TIME")
  setsid "$ANVIL" "${FLAGS[@]}" >>"$LOG_FILE" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
elif docker_works; then
  CHAIN_IMAGE="$(chain_image)" || { say "no Ganache image: see above"; exit 1; }
  say "starting Ganache in Docker ($CHAIN_IMAGE)"
  mapfile -t FLAGS < <(.venv/bin/python -m common.devchain flags 8545 /data 0.0.0.0)
  # As this user, so that the chain's files in $CHAIN_DIR stay this user's.
  docker run -d --rm --name "$CONTAINER" --user "$(id -u):$(id -g)" -p "127.0.0.1:$PORT:8545" \
    -v "$(cd "$CHAIN_DIR" && pwd):/data" "$CHAIN_IMAGE" "${FLAGS[@]}" >/dev/null
else
  say "no Docker engine here; starting Ganache from node_modules"
  mapfile -t FLAGS < <(.venv/bin/python -m common.devchain flags "$PORT" "$CHAIN_DIR")
  setsid node_modules/.bin/ganache "${FLAGS[@]}" >>"$LOG_FILE" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
fi

for _ in $(seq 1 150); do
  if answers; then say "$NODE_NAME answers at $URL (chain id 1337, data in $CHAIN_DIR)"; exit 0; fi
  sleep 0.2
done
say "$NODE_NAME did not answer at $URL within 30 s; see $LOG_FILE"
exit 1
