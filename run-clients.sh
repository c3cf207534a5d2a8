#!/usr/bin/env bash
# Start the meter fleet (12 by default) against the running server, each meter its own process,
# and show every meter's bill, state and last problem on one screen. Ctrl-C stops them all.
#   ./run-clients.sh [--count N] [--time-scale X] [--plain] [--duration SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
if [ ! -f data/tls/ca.pem ]; then
  echo "run-clients: no server certificate yet (data/tls/ca.pem); start the server first: ./run-server.sh" >&2
  exit 1
fi
exec .venv/bin/python -m meters.fleet "$@"
