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

key="$( (cd "$src" && go env GOVERSION && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)"
cache_root="${SOCKMESH_CACHE:-/var/cache/sockmesh}/peers"
dir="$cache_root/$key"

if [ "${1:-}" = "--print-dir" ]; then
  echo "$dir/bin"
  exit 0
elif [ -n "${1:-}" ]; then
  echo "usage: $0 [--print-dir]" >&2
  exit 2
fi

complete() {
  local b
  for b in "${bins[@]}"; do [ -x "$1/bin/$b" ] || return 1; done
}

if complete "$dir"; then
  echo "$dir/bin"
  exit 0
fi
mkdir -p "$cache_root"
exec 9> "$cache_root/.build.lock"
flock 9
if complete "$dir"; then
  echo "$dir/bin"
  exit 0
fi
rm -rf "$cache_root"/.tmp-*
started=$SECONDS
tmp="$(mktemp -d "$cache_root/.tmp-$key.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
# -mod=readonly: go.mod and go.sum are the committed ones.
(cd "$src" && CGO_ENABLED=0 go build -mod=readonly -trimpath -o "$tmp/bin/" ./spiffe-peer ./xds-peer)
complete "$tmp" || { echo "peers/build.sh: the build left no ${bins[*]}" >&2; exit 1; }
rm -rf "$dir"
mv "$tmp" "$dir"
echo "peers/build.sh: built ${bins[*]} in $((SECONDS - started))s" >&2
echo "$dir/bin"
