#!/usr/bin/env bash
# The whole system in one command: installs what is missing, starts the chain, deploys the
# contract, provisions twelve meters (first run only: the chain persists in data/chain),
# starts the server (with the REST API and web dashboard) and the grid-alert emitter, then
# twelve meters with the fleet view.
# Ctrl-C tears everything down; running it again resumes the persisted chain.
#   ./run-demo.sh [--count N] [--time-scale X]   (extra options go to the fleet)
set -euo pipefail
cd "$(dirname "$0")"
say() { printf 'run-demo: %s\n' "$*"; }
START=$(date +%s)

scripts/bootstrap.sh
./run-docker.sh

SERVER_PID=""
teardown() {
  trap - INT TERM EXIT
  say "tearing down"
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  ./run-docker.sh --stop || true
  say "done; run ./run-demo.sh again to resume where it stopped"
}
trap teardown INT TERM EXIT

mkdir -p data/logs
: > data/logs/run-server.log
./run-server.sh > data/logs/run-server.log 2>&1 &
SERVER_PID=$!
say "deploying, provisioning and starting the server (log: data/logs/run-server.log)"
until grep -q "Ctrl-C stops" data/logs/run-server.log 2>/dev/null; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    say "the server side failed to start:"; tail -20 data/logs/run-server.log >&2; exit 1
  fi
  sleep 0.5
done
grep "run-server:" data/logs/run-server.log | tail -4
say "ready after $(( $(date +%s) - START )) s; logs in data/logs/ and data/meters/<name>/meter.log"
./run-clients.sh "$@"
