#!/usr/bin/env bash
# Make the local base image where no image registry answers: a Debian bookworm root (debootstrap
# --variant=minbase, from the plain-HTTP Debian mirror, so no certificate is needed inside) with
# Python 3.11 and Node.js, imported with `docker import`. Both images build FROM it with
# --build-arg BASE_IMAGE=smartmeter-base:bookworm (elsewhere they use the official python and node
# images). The root's tarball is kept in the cache directory, so an engine with an empty data root
# imports it in seconds instead of debootstrapping again (77-169 s). Needs root (debootstrap).
#   ops/docker/base.sh [IMAGE]     default IMAGE smartmeter-base:bookworm
#   SMARTMETER_DOCKER_CACHE=DIR    where the tarball is kept (default ~/.cache/smartmeter-docker)
#   DEBIAN_MIRROR=URL              default http://deb.debian.org/debian
#   ops/docker/base.sh --tarball   only make (or find) the tarball and print its path
set -euo pipefail

say() { printf 'base: %s\n' "$*" >&2; }
ONLY_TARBALL=0
if [ "${1:-}" = "--tarball" ]; then ONLY_TARBALL=1; shift; fi
IMAGE="${1:-smartmeter-base:bookworm}"
CACHE="${SMARTMETER_DOCKER_CACHE:-$HOME/.cache/smartmeter-docker}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# passwd: useradd for the images' non-root user (minbase has it, the official slim images too).
PACKAGES="python3,python3-venv,nodejs,passwd"
TARBALL="$CACHE/base-bookworm-$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-12).tar"

if [ "$ONLY_TARBALL" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE is already in this engine"
  exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { say "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
  [ "$(id -u)" = 0 ] || { say "debootstrap needs root"; exit 1; }
  root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  say "debootstrap bookworm ($PACKAGES) from $MIRROR into $root"
  started=$SECONDS
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
    || { say "debootstrap failed; see $root.log"; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root.log"
  tar --numeric-owner -C "$root" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  say "made $TARBALL in $((SECONDS - started)) s"
fi
if [ "$ONLY_TARBALL" = 1 ]; then echo "$TARBALL"; exit 0; fi
docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$TARBALL" "$IMAGE" >/dev/null
say "imported $IMAGE from $TARBALL"
