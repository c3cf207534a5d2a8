#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/bootstrap.sh), then runs pytest.
# Tests start their own Ganache (and servers) on free loopback ports and stop them.
# Extra arguments go to pytest, e.g. ./run-tests.sh tests/contracts -x
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
