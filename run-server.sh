#!/usr/bin/env bash
# Start the server side: checks the chain answers, deploys the contract and provisions the
# meters if needed, then runs the server (gateway, batcher, relay, indexer, REST API and
# dashboard) and the grid-alert emitter. Each writes one log, every line once: its log lines
# and anything else it prints (a crash's traceback, a warning) in data/logs/server.log and
# data/logs/emitter.log (under DATA_DIR). Ctrl-C stops both; if either stops by itself, this says which, shows
# the last lines of its log, stops the other and exits 1.
#   ./run-server.sh [--no-emitter]
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh

PY=.venv/bin/python
DATA_DIR="$($PY -c 'from common.settings import ROOT, load_settings; d = load_settings().data_dir; print(d.relative_to(ROOT) if d.is_relative_to(ROOT) else d)')"
LOG_DIR="$DATA_DIR/logs"
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
NAMES=()
LOGS=()
stop_all() {
  trap - INT TERM EXIT
  say "stopping"
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  say "stopped"
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

# What stopped, in a sentence, with the last lines of its log.
report_exit() {  # NAME LOG STATUS
  how="exit status $3"
  [ "$3" -gt 128 ] && how="killed by SIG$(kill -l "$(($3 - 128))" 2>/dev/null || echo "$(($3 - 128))")"
  say "$1 stopped by itself ($how); its log is $2; its last lines:"
  tail -n 8 "$2" | sed 's/^/  | /'
}

# One log a process, every line once: the processes log to stderr, and stdout and stderr both
# go to the file (a traceback or a warning lands there too, in order).
$PY -m server >>"$LOG_DIR/server.log" 2>&1 &
PIDS+=($!); NAMES+=("the server (python -m server)"); LOGS+=("$LOG_DIR/server.log")
for _ in $(seq 1 100); do
  grep -q "event=gateway_listening" "$LOG_DIR/server.log" 2>/dev/null && break
  if ! kill -0 "${PIDS[0]}" 2>/dev/null; then
    status=0; wait "${PIDS[0]}" || status=$?
    report_exit "${NAMES[0]}" "${LOGS[0]}" "$status" >&2
    exit 1
  fi
  sleep 0.2
done
if [ "$EMITTER" = 1 ]; then
  $PY scripts/grid_alert_emitter.py --scenario scripts/scenarios/demo.json >>"$LOG_DIR/emitter.log" 2>&1 &
  PIDS+=($!); NAMES+=("the grid-alert emitter (scripts/grid_alert_emitter.py)"); LOGS+=("$LOG_DIR/emitter.log")
fi
WSS="$($PY -c 'from common.settings import load_settings; print(load_settings().server_url)')"
# The operator's key goes to a terminal only: output kept in a file (run-demo.sh keeps this in run-server.log) is a log.
SIGNED_IN=False; [ -t 1 ] && SIGNED_IN=True
DASHBOARD="$($PY -c "from server.api.auth import dashboard_link; from common.settings import load_settings; print(dashboard_link(load_settings(), signed_in=$SIGNED_IN))")"
[ -n "$DASHBOARD" ] && say "dashboard and REST API$( [ "$SIGNED_IN" = True ] && echo " (signed in as the operator)"): $DASHBOARD"
say "server running: meters connect to $WSS"
say "logs: $LOG_DIR/server.log$( [ "$EMITTER" = 1 ] && echo ", $LOG_DIR/emitter.log" ); Ctrl-C stops"
status=0
wait -n "${PIDS[@]}" || status=$?
for i in "${!PIDS[@]}"; do
  kill -0 "${PIDS[$i]}" 2>/dev/null || report_exit "${NAMES[$i]}" "${LOGS[$i]}" "$status"
done
exit 1
