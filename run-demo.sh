#!/usr/bin/env bash
# The whole system in one command: installs what is missing, starts the chain, deploys the
# contract, provisions twelve meters (first run only: the chain persists in data/chain),
# starts the server (with the REST API and web dashboard) and the grid-alert emitter, then
# twelve meters with the fleet view.
# While the meters run it watches the chain and the server side: if either stops (the server or
# the emitter, which run-server.sh stops together), it stops the meters, says which part
# stopped, which log to read and that log's last lines, and tears the rest down (exit 1).
# Ctrl-C, SIGTERM or a closed terminal (SIGHUP) tears everything down, and a second signal during the
# teardown does not cut it short; running it again resumes the persisted chain.
#   ./run-demo.sh [--count N] [--time-scale X]   (extra options go to the fleet)
#   CHAIN_NODE=anvil BLOCK_TIME=1 ./run-demo.sh   the same on Anvil, a block a second (two confirmations
#                                                 unless CONFIRMATIONS is set)
set -euo pipefail
cd "$(dirname "$0")"
say() { printf 'run-demo: %s\n' "$*"; }
START=$(date +%s)

scripts/bootstrap.sh
PY=.venv/bin/python
# Every script below uses this data directory (run-docker.sh reads DATA_DIR from the environment only).
DATA_DIR="$($PY -c 'from common.settings import ROOT, load_settings; d = load_settings().data_dir; print(d.relative_to(ROOT) if d.is_relative_to(ROOT) else d)')"
export DATA_DIR
LOG_DIR="$DATA_DIR/logs"
RUN_SERVER_LOG="$LOG_DIR/run-server.log"
CHAIN_PID_FILE="$DATA_DIR/ganache.pid"
export CHAIN_NODE="${CHAIN_NODE:-ganache}"
CHAIN_LOG="$LOG_DIR/$CHAIN_NODE.log"
if [ "$CHAIN_NODE" = anvil ] && [ "${BLOCK_TIME:-0}" != 0 ] \
    && [ "$($PY -c 'from common.settings import load_settings; print(load_settings().confirmations)')" = -1 ]; then
  export CONFIRMATIONS=2  # blocks come every BLOCK_TIME seconds and may be replaced: bills turn final two blocks on
fi
CHAIN_URL="$($PY -c 'from common.settings import load_settings; print(load_settings().chain_rpc_url)')"
CHAIN_PID=""

./run-docker.sh
if [ -f "$CHAIN_PID_FILE" ] && kill -0 "$(cat "$CHAIN_PID_FILE")" 2>/dev/null; then
  CHAIN_PID="$(cat "$CHAIN_PID_FILE")"
fi

SERVER_PID=""
CLIENTS_PID=""
stop_clients() {
  if [ -n "$CLIENTS_PID" ] && kill -0 "$CLIENTS_PID" 2>/dev/null; then
    kill -TERM "$CLIENTS_PID" 2>/dev/null || true
    wait "$CLIENTS_PID" 2>/dev/null || true
  fi
  CLIENTS_PID=""
}
# Runs once, to the end: a second Ctrl-C, the SIGHUP of a terminal closed meanwhile or a pipe
# whose reader is gone must not abandon it half-way with the chain still running. The signals are
# ignored (not trapped) so that the commands it runs ignore them too (a closed terminal hangs up
# its whole process group), and a failed write to that terminal does not stop it under set -e.
teardown() {
  trap '' INT TERM HUP PIPE
  trap - EXIT
  set +e
  say "tearing down" 2>/dev/null
  stop_clients
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  ./run-docker.sh --stop
  say "done; run ./run-demo.sh again to resume where it stopped" 2>/dev/null
}
trap teardown EXIT
trap 'teardown; exit 130' INT
trap 'teardown; exit 143' TERM
trap 'teardown; exit 129' HUP

# A part of the system stopped under the demo: stop the meters (whose screen would hide the
# message), then say what stopped and show the end of its log. The EXIT trap tears down the rest.
stopped() {  # WHAT LOG
  stop_clients
  say "$1 stopped while the demo was running, so the demo stops too; see $2. Its last lines:" >&2
  tail -n 14 "$2" 2>/dev/null | sed 's/^/  | /' >&2 || true
  exit 1
}

# A Ganache run-docker.sh started from node_modules has a live pid in its pid file; a chain in
# Docker (or started some other way) is asked over RPC every few seconds, and counts as stopped
# after two unanswered probes in a row.
CHAIN_MISSES=0
TICK=0
chain_alive() {
  if [ -n "$CHAIN_PID" ]; then
    kill -0 "$CHAIN_PID" 2>/dev/null
    return
  fi
  TICK=$((TICK + 1))
  [ $((TICK % 5)) -ne 0 ] && return 0
  if $PY -c "import sys; from common.devchain import rpc_answers; sys.exit(0 if rpc_answers('$CHAIN_URL', 5) else 1)"; then
    CHAIN_MISSES=0
  else
    CHAIN_MISSES=$((CHAIN_MISSES + 1))
  fi
  [ "$CHAIN_MISSES" -lt 2 ]
}

mkdir -p "$LOG_DIR"
: > "$RUN_SERVER_LOG"
./run-server.sh > "$RUN_SERVER_LOG" 2>&1 &
SERVER_PID=$!
say "deploying, provisioning and starting the server (log: $RUN_SERVER_LOG)"
until grep -q "Ctrl-C stops" "$RUN_SERVER_LOG" 2>/dev/null; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    say "the server side failed to start:"; tail -20 "$RUN_SERVER_LOG" >&2; exit 1
  fi
  sleep 0.5
done
grep "run-server:" "$RUN_SERVER_LOG" | tail -4
if [ -t 1 ]; then  # run-server.log holds the dashboard's address without the operator's key: a log never holds a key
  DASHBOARD="$($PY -c 'from server.api.auth import dashboard_link; from common.settings import load_settings; print(dashboard_link(load_settings()))')"
  [ -n "$DASHBOARD" ] && say "dashboard and REST API (signed in as the operator): $DASHBOARD"
fi
say "ready after $(( $(date +%s) - START )) s; logs in $LOG_DIR/ and $DATA_DIR/meters/<name>/meter.log"

./run-clients.sh "$@" &
CLIENTS_PID=$!
while kill -0 "$CLIENTS_PID" 2>/dev/null; do
  kill -0 "$SERVER_PID" 2>/dev/null || stopped "the server side (run-server.sh)" "$RUN_SERVER_LOG"
  chain_alive || stopped "the chain ($CHAIN_NODE at $CHAIN_URL)" "$CHAIN_LOG"
  sleep 1
done
STATUS=0
wait "$CLIENTS_PID" || STATUS=$?
CLIENTS_PID=""
exit "$STATUS"
