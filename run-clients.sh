#!/usr/bin/env bash
# Start the meter fleet (12 by default) against the running server, each meter its own process,
# and show every meter's bill, state and last problem on one screen. Ctrl-C stops them all.
# Each meter's log is DATA_DIR/meters/<name>/meter.log; console.log beside it holds anything
# else it printed (a crash's traceback).
#   ./run-clients.sh [--count N] [--time-scale X] [--plain] [--duration SECONDS]
#   (piped or with --plain: a line for a meter only when its state, bill or problem changes, money in pounds)
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
CA="$(.venv/bin/python -c 'from common.settings import ROOT, load_settings; p = load_settings().ca_cert_path; print(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)')"
if [ ! -f "$CA" ]; then
  echo "run-clients: no server certificate yet ($CA); start the server first: ./run-server.sh" >&2
  exit 1
fi
exec .venv/bin/python -m meters.fleet "$@"
