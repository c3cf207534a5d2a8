#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/bootstrap.sh, with Debian's Chromium for
# the dashboard's browser test), then runs pytest.
# Before the tests, ruff and mypy (strict) check the source and MkDocs builds the documentation site with
# --strict (into site/): a finding, a broken link or a missing page fails the run.
# Tests start their own Ganache (and servers, and PostgreSQL clusters for the index) on free loopback ports and stop them.
# The tests run in TEST_WORKERS processes (default 2, one per core here), a test file to a process, each
# with its own Ganache and Anvil; TEST_WORKERS=0 runs them in this one process. A test that fails is run
# once more (pytest-rerunfailures; the summary names it RERUN): the other process's load can upset the
# timing of end-to-end tests; a test that fails twice fails the run.
# The contracts' static analysis (Slither, tests/contracts/test_slither.py) and Foundry fuzz and invariant tests
# (tests/contracts/test_forge.py) run as tests of the suite: docs/contract-checks.md.
# Extra arguments go to pytest, e.g. ./run-tests.sh tests/contracts -x
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh --browser
echo "run-tests: ruff" >&2
.venv/bin/ruff check .
echo "run-tests: mypy (strict, settings in pyproject.toml)" >&2
.venv/bin/mypy
echo "run-tests: mkdocs build --strict (the documentation site, into site/)" >&2
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --reruns 1 --reruns-delay 2 "$@"
