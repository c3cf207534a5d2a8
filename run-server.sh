#!/usr/bin/env bash
# Start the server side: checks the chain answers, deploys the contract and provisions the
# meters if needed, then runs the server (gateway, batcher, relay, indexer, REST API and
# dashboard) and the grid-alert emitter with their logs in data/logs/. Ctrl-C stops both.
#   ./run-server.sh [--no-emitter]
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh

PY=.venv/bin/python
LOG_DIR="data/logs"
mkdir -p "$LOG_DIR"
say() { printf 'run-server: %s\n' "$*"; }

RPC_URL="$($PY -c 'from common.settings import load_settings; print(load_settings().chain_rpc_url)')"
if ! $PY -c "import sys; from common.devchain import rpc_answers; sys.exit(0 if rpc_answers('$RPC_URL', 3) else 1)"; then
  say "no blockchain node answers at $RPC_URL."
  say "start the local chain first:  ./run-docker.sh   (or run everything at once: ./run-demo.sh)"
  exit 1
fi

$PY scripts/deploy.py
$PY scripts/provision.py

EMITTER=1
[ "${1:-}" = "--no-emitter" ] && EMITTER=0

PIDS=()
stop_all() {
  trap - INT TERM EXIT
  say "stopping"
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  say "stopped"
}
trap stop_all INT TERM EXIT

$PY -m server --log-file "$LOG_DIR/server.log" 2>>"$LOG_DIR/server.stderr.log" &
PIDS+=($!)
for _ in $(seq 1 100); do
  grep -q "event=gateway_listening" "$LOG_DIR/server.log" 2>/dev/null && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { say "the server exited; see $LOG_DIR/server.log and $LOG_DIR/server.stderr.log"; tail -5 "$LOG_DIR/server.stderr.log" >&2; exit 1; }
  sleep 0.2
done
if [ "$EMITTER" = 1 ]; then
  $PY scripts/grid_alert_emitter.py --scenario scripts/scenarios/demo.json --log-file "$LOG_DIR/emitter.log" \
    >>"$LOG_DIR/emitter.stdout.log" 2>&1 &
  PIDS+=($!)
fi
WSS="$($PY -c 'from common.settings import load_settings; print(load_settings().server_url)')"
DASHBOARD="$($PY -c 'from server.api.auth import dashboard_link; from common.settings import load_settings; print(dashboard_link(load_settings()))')"
[ -n "$DASHBOARD" ] && say "dashboard and REST API (signed in as the operator): $DASHBOARD"
say "server running: meters connect to $WSS"
say "logs: $LOG_DIR/server.log$( [ "$EMITTER" = 1 ] && echo ", $LOG_DIR/emitter.log" ); Ctrl-C stops"
wait -n "${PIDS[@]}" || true
say "a server process exited; see the logs in $LOG_DIR"
