#!/usr/bin/env bash
# Builds the standard Go peers the interop tests run against sockmesh (test/peers/go: go-spiffe v2
# and grpc-go's xDS client, from the Go module proxy) into a cache directory keyed by a hash of
# their go.mod, go.sum, sources and the Go version. A complete cache directory is reused; a build
# happens in a temporary directory renamed into place only when complete.
#   bash scripts/peers/build.sh              build if needed, print the bin directory
#   bash scripts/peers/build.sh --print-dir  print the bin directory only (does not build)
set -euo pipefail
src="$(cd "$(dirname "$0")/../../test/peers/go" && pwd)"
bins=(spiffe-peer xds-peer)
command -v go > /dev/null || { echo "peers/build.sh: go is not on the PATH (Go >= 1.26 is needed)" >&2; exit 1; }

# shellcheck source=../lib/cached-build.sh
. "$(dirname "$0")/../lib/cached-build.sh"
key="$(go_module_key "$src")"
cache_root="${SOCKMESH_CACHE:-/var/cache/sockmesh}/peers"
dir="$cache_root/$key"

cached_build_args "$dir/bin" "$0" "$@"

complete() { has_bins "$1" "${bins[@]}"; }

build() {
  # -mod=readonly: go.mod and go.sum are the committed ones.
  (cd "$src" && CGO_ENABLED=0 go build -mod=readonly -trimpath -o "$1/bin/" ./spiffe-peer ./xds-peer)
}

started=$SECONDS
cached_build "$cache_root" "$key" "$dir" complete build peers/build.sh
[ "$CACHED_BUILD_DID" = 1 ] && echo "peers/build.sh: built ${bins[*]} in $((SECONDS - started))s" >&2
echo "$dir/bin"
