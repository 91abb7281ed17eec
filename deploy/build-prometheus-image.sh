#!/usr/bin/env bash
# Builds the Prometheus image of the compose fleet's `monitoring` profile from nothing (no base
# image can be pulled here), as deploy/build-image.sh builds gauntlet's: Debian's prometheus
# binary (the `prometheus` package, installed when missing and this runs as root with
# apt-get), exactly the shared libraries `ldd` says it needs, its web assets, and
# deploy/prometheus.yml, into `FROM scratch` (deploy/prometheus.Dockerfile).
#   deploy/build-prometheus-image.sh [TAG]     (default TAG: gauntlet-prometheus:dev)
# With a registry, use the upstream image instead (GAUNTLET_PROMETHEUS_IMAGE=prom/prometheus
# for compose), which reads the same deploy/prometheus.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-gauntlet-prometheus:dev}"

if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "no prometheus binary here: install Debian's \`prometheus\` package (as root: apt-get install prometheus), then run this again" >&2
    exit 1
  fi
fi
bin=$(command -v prometheus)

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/etc/prometheus" "$ctx/rootfs/prometheus" "$ctx/rootfs/tmp"
cp "$bin" "$ctx/rootfs/bin/prometheus"
strip "$ctx/rootfs/bin/prometheus" 2>/dev/null || true

# Every shared library the binary loads, and the dynamic loader, at their own paths.
ldd "$bin" | grep -oE '/[^ ]+' | sort -u | while read -r lib; do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done

# The web UI's assets (Debian's binary reads them from --web.local-assets). Debian links the
# JavaScript libraries it shares between packages: each link becomes a copy of what it points
# to, except moment-timezone's 200 MB of data variants, of which the UI loads one file.
web=/usr/share/prometheus/web
if [ -d "$web" ]; then
  dst="$ctx/rootfs$web"
  mkdir -p "$(dirname "$dst")"
  cp -r "$web" "$dst"
  find "$dst" -type l | while read -r link; do
    target=$(readlink -f "$web${link#"$dst"}")
    rm "$link"
    if [ "$(basename "$target")" = moment-timezone ]; then
      mkdir -p "$link"
      cp "$target/moment-timezone-with-data.min.js" "$link/"
    elif [ -e "$target" ]; then
      cp -rL "$target" "$link"
    fi
  done
fi
cp deploy/prometheus.yml "$ctx/rootfs/etc/prometheus/prometheus.yml"
printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/prometheus:/sbin/nologin\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ctx/rootfs/etc/group"
printf 'hosts: files dns\n' > "$ctx/rootfs/etc/nsswitch.conf"
# Any user may write its data (compose runs it as GAUNTLET_USER, the owner of the token file).
chmod 1777 "$ctx/rootfs/prometheus" "$ctx/rootfs/tmp"

cp deploy/prometheus.Dockerfile "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
echo "built $tag from $("$bin" --version 2>&1 | head -1) ($(docker image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.1f MB", $1/1e6}'))"
