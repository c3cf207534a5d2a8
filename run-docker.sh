#!/usr/bin/env bash
# Start the local chain: Ganache 7.9.2 on 127.0.0.1:8545, chain id 1337, deterministic accounts,
# data kept in data/chain across restarts. Uses the Docker engine where `docker info` works,
# otherwise the same Ganache from node_modules with the same flags and data directory.
#   ./run-docker.sh           start (or say it is already running) and wait until the RPC answers
#   ./run-docker.sh --stop    stop it
#   ./run-docker.sh --reset   stop it and delete the chain's data (deployments must be redone)
#   ./run-docker.sh --status  say whether it runs
set -euo pipefail
cd "$(dirname "$0")"

PORT="${GANACHE_PORT:-8545}"
DATA_DIR="${DATA_DIR:-data}"
CHAIN_DIR="$DATA_DIR/chain"
PID_FILE="$DATA_DIR/ganache.pid"
LOG_FILE="$DATA_DIR/logs/ganache.log"
CONTAINER="smartmeter-ganache"
IMAGE="trufflesuite/ganache:v7.9.2"
URL="http://127.0.0.1:$PORT"

say() { printf 'run-docker: %s\n' "$*"; }

answers() {
  curl -s -m 2 -X POST -H 'content-type: application/json' \
    --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "$URL" 2>/dev/null | grep -q result
}

docker_works() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

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
      say "stopped Ganache (pid $pid)"
    fi
    rm -f "$PID_FILE"
  fi
}

case "${1:-}" in
  --stop) stop_chain; exit 0 ;;
  --reset)
    stop_chain
    rm -rf "$CHAIN_DIR" deployments/1337.json "$DATA_DIR/meters" "$DATA_DIR/gateway" "$DATA_DIR/index" "$DATA_DIR/customers.json" \
      "$DATA_DIR"/api/messages.sqlite*
    say "deleted the chain's data, the recorded deployment, provisioned meters and their messages; run ./run-docker.sh to start afresh"
    exit 0 ;;
  --status)
    if answers; then say "the chain answers at $URL"; else say "no chain answers at $URL"; exit 1; fi
    exit 0 ;;
  "" ) ;;
  *) echo "usage: $0 [--stop|--reset|--status]" >&2; exit 2 ;;
esac

if answers; then
  say "a chain is already running at $URL"
  exit 0
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  say "port $PORT is in use by something that is not a JSON-RPC node; free it or set GANACHE_PORT"
  exit 1
fi

scripts/bootstrap.sh
mkdir -p "$CHAIN_DIR" "$(dirname "$LOG_FILE")"

if docker_works; then
  say "starting Ganache in Docker ($IMAGE)"
  mapfile -t FLAGS < <(.venv/bin/python -m common.devchain flags 8545 /data 0.0.0.0)
  docker run -d --rm --name "$CONTAINER" -p "127.0.0.1:$PORT:8545" \
    -v "$(cd "$CHAIN_DIR" && pwd):/data" "$IMAGE" "${FLAGS[@]}" >/dev/null
else
  say "no Docker engine here; starting Ganache from node_modules"
  mapfile -t FLAGS < <(.venv/bin/python -m common.devchain flags "$PORT" "$CHAIN_DIR")
  setsid node_modules/.bin/ganache "${FLAGS[@]}" >>"$LOG_FILE" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
fi

for _ in $(seq 1 150); do
  if answers; then say "the chain answers at $URL (chain id 1337, data in $CHAIN_DIR)"; exit 0; fi
  sleep 0.2
done
say "Ganache did not answer at $URL within 30 s; see $LOG_FILE"
exit 1
