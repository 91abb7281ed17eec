#!/usr/bin/env bash
# Builds the gauntlet image from nothing (no base image can be pulled here): the host-built
# release binary plus exactly the shared libraries `ldd` says it needs, CA certificates and a
# non-root user, into `FROM scratch`.
#   deploy/build-image.sh [TAG]        (default TAG: gauntlet:dev)
# With a registry, the usual way is a multi-stage Dockerfile: `FROM rust:1.95` to build and
# `FROM gcr.io/distroless/cc` (or scratch with a musl build) to run; see deploy/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-gauntlet:dev}"

cargo build --release --locked -p gauntlet
bin=target/release/gauntlet

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/data"
cp "$bin" "$ctx/rootfs/usr/local/bin/gauntlet"
strip "$ctx/rootfs/usr/local/bin/gauntlet" 2>/dev/null || true

# Every shared library the binary loads, and the dynamic loader, at their own paths.
ldd "$bin" | grep -oE '/[^ ]+' | sort -u | while read -r lib; do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done

if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
fi
printf 'root:x:0:0:root:/:/sbin/nologin\ngauntlet:x:10001:10001:gauntlet:/data:/sbin/nologin\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\ngauntlet:x:10001:\n' > "$ctx/rootfs/etc/group"
printf 'hosts: files dns\n' > "$ctx/rootfs/etc/nsswitch.conf"
chmod 1777 "$ctx/rootfs/tmp"

cp deploy/Dockerfile "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
echo "built $tag ($(docker image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.1f MB", $1/1e6}'))"
