#!/bin/sh
# Ganache with the given flags, or Anvil when the first argument is `anvil`.
set -e
if [ "${1:-}" = anvil ]; then
  shift
  exec "$(ls /opt/chain/node_modules/@foundry-rs/anvil-linux-*/bin/anvil 2>/dev/null | head -n 1)" "$@"
fi
exec node /opt/chain/node_modules/ganache/dist/node/cli.js "$@"
