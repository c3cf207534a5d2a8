#!/usr/bin/env bash
# Build the container images: smartmeter-app (server, meters, grid-alert emitter, operator tools) and
# smartmeter-chain (Ganache 7.9.2, or Anvil). Air-gapped: the Python wheels and the npm packages are
# prepared here, from this checkout's pinned requirements.txt and node_modules, and copied into each
# image's build context (build/docker/<image>/), so nothing is downloaded inside a container (where
# HTTPS to the registries fails on machines whose own CA bundle is not trusted there) and two builds
# of one checkout install the same files.
# The images build FROM the official python:3.11-slim-bookworm and node:20-bookworm-slim where the engine
# has or can pull them, else FROM a local Debian base made with debootstrap (ops/docker/base.sh).
#   scripts/docker-images.sh [app|chain|all]    (default all)
#   BASE_IMAGE=IMAGE scripts/docker-images.sh    build both FROM this image (e.g. smartmeter-base:bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'docker-images: %s\n' "$*" >&2; }
WHAT="${1:-all}"
case "$WHAT" in app|chain|all) ;; *) echo "usage: $0 [app|chain|all]" >&2; exit 2 ;; esac
LOCAL_BASE=smartmeter-base:bookworm
STAGE=build/docker
# Test and development tools stay out of the image.
DEV_ONLY='^(pytest|pytest-[a-z-]+|playwright|hypothesis|ruff|mypy|mkdocs-material)=='

docker info >/dev/null 2>&1 || { say "no Docker engine answers (docker info); start one, or set DOCKER_HOST"; exit 1; }
scripts/bootstrap.sh

base_for() {  # OFFICIAL: the image to build FROM
  if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
  if docker image inspect "$1" >/dev/null 2>&1 || timeout 120 docker pull -q "$1" >/dev/null 2>&1; then
    echo "$1"; return
  fi
  say "cannot pull $1 (no registry reachable?): building FROM $LOCAL_BASE, made with debootstrap"
  ops/docker/base.sh "$LOCAL_BASE"
  echo "$LOCAL_BASE"
}

# The npm packages NAMES need, with what they depend on (this checkout's hoisted node_modules).
npm_closure() {
  node -e '
    const fs = require("fs"), path = require("path");
    const seen = new Set(), todo = process.argv.slice(1);
    while (todo.length) {
      const name = todo.pop();
      if (seen.has(name) || !fs.existsSync(path.join("node_modules", name, "package.json"))) continue;
      seen.add(name);
      const pkg = JSON.parse(fs.readFileSync(path.join("node_modules", name, "package.json")));
      todo.push(...Object.keys({...pkg.dependencies, ...pkg.optionalDependencies}));
    }
    console.log([...seen].sort().join("\n"));' "$@"
}

copy_npm() {  # DEST NAMES...: the packages and their dependencies into DEST/node_modules
  local dest="$1"; shift
  rm -rf "$dest/node_modules"
  mkdir -p "$dest/node_modules"
  npm_closure "$@" | while read -r name; do
    mkdir -p "$dest/node_modules/$(dirname "$name")"
    cp -a "node_modules/$name" "$dest/node_modules/$name"
  done
}

build() {  # NAME CONTEXT OFFICIAL_BASE
  local base started
  base="$(base_for "$3")"
  started=$SECONDS
  docker build -q --build-arg "BASE_IMAGE=$base" -t "smartmeter-$1:latest" "$2" >/dev/null
  say "built smartmeter-$1:latest FROM $base in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' \
    "smartmeter-$1:latest" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

if [ "$WHAT" = app ] || [ "$WHAT" = all ]; then
  ctx="$STAGE/app"
  mkdir -p "$ctx/wheels"
  grep -Ev '^\s*(#|$)' requirements.txt | grep -Ev "$DEV_ONLY" > "$ctx/requirements.txt.new"
  if ! cmp -s "$ctx/requirements.txt.new" "$ctx/wheels/requirements.txt"; then
    say "making the wheelhouse ($ctx/wheels)"
    rm -rf "$ctx/wheels" && mkdir -p "$ctx/wheels"
    .venv/bin/python -m pip wheel --quiet --disable-pip-version-check -r "$ctx/requirements.txt.new" -w "$ctx/wheels" \
      2>"$STAGE/pip-wheel.log" || { say "pip wheel failed; see $STAGE/pip-wheel.log"; exit 1; }
    cp "$ctx/requirements.txt.new" "$ctx/wheels/requirements.txt"
  fi
  rm -f "$ctx/requirements.txt.new"
  rm -rf "$ctx/src" && mkdir -p "$ctx/src"
  tar --exclude=__pycache__ --exclude='*.pyc' -cf - common server meters operations scripts contracts pyproject.toml \
    | tar -C "$ctx/src" -xf -
  copy_npm "$ctx" solc @openzeppelin/contracts chart.js swagger-ui-dist
  # Compiled here (or taken from build/), named as the image's /app checkout looks them up.
  .venv/bin/python -m common.compiler stage "$ctx/src/build" /app >/dev/null
  cp ops/docker/app.Dockerfile "$ctx/Dockerfile"
  build app "$ctx" python:3.11-slim-bookworm
fi

if [ "$WHAT" = chain ] || [ "$WHAT" = all ]; then
  ctx="$STAGE/chain"
  mkdir -p "$ctx"
  # shellcheck disable=SC2046 # one package a word
  copy_npm "$ctx" ganache @foundry-rs/anvil $(cd node_modules && ls -d @foundry-rs/anvil-linux-* 2>/dev/null)
  cp ops/docker/chain.Dockerfile "$ctx/Dockerfile"
  cp ops/docker/chain-entrypoint.sh "$ctx/chain-entrypoint.sh"
  build chain "$ctx" node:20-bookworm-slim
fi
