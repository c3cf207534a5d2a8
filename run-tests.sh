#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/bootstrap.sh, with Debian's Chromium for
# the dashboard's browser test), then runs pytest.
# Tests start their own Ganache (and servers) on free loopback ports and stop them.
# Extra arguments go to pytest, e.g. ./run-tests.sh tests/contracts -x
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh --browser
exec .venv/bin/python -m pytest "$@"
