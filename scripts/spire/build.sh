#!/usr/bin/env bash
# Builds SPIRE (spire-server and spire-agent v1.13.3, the Go module github.com/spiffe/spire as tools of
# the module beside this script) into a cache directory keyed by a hash of go.mod, go.sum and the Go
# version. A complete cache directory is reused; a build happens in a temporary directory renamed into
# place only when complete. spire-server links SQLite (github.com/mattn/go-sqlite3) and so needs cgo
# and a C compiler; spire-agent is built with cgo too, so that it reuses the packages compiled for the
# server (a different CGO_ENABLED compiles every package that imports net again).
#   bash scripts/spire/build.sh              build if needed, print the bin directory
#   bash scripts/spire/build.sh --print-dir  print the bin directory only (does not build)
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)"
bins=(spire-server spire-agent)
command -v go > /dev/null || { echo "spire/build.sh: go is not on the PATH (Go >= 1.26 is needed)" >&2; exit 1; }

key="$( (cd "$src" && go env GOVERSION && sha256sum go.mod go.sum) | sha256sum | cut -c1-16)"
cache_root="${SOCKMESH_CACHE:-/var/cache/sockmesh}/spire"
dir="$cache_root/$key"

# shellcheck source=../lib/cached-build.sh
. "$(dirname "$0")/../lib/cached-build.sh"
cached_build_args "$dir/bin" "$0" "$@"

complete() { has_bins "$1" "${bins[@]}"; }

build() {
  command -v "${CC:-gcc}" > /dev/null || {
    echo "spire/build.sh: spire-server needs a C compiler for SQLite (cgo): install gcc" >&2
    exit 1
  }
  # -mod=readonly: go.mod and go.sum are the committed ones.
  (cd "$src" && CGO_ENABLED=1 go build -mod=readonly -trimpath -o "$1/bin/" \
    github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent)
}

started=$SECONDS
cached_build "$cache_root" "$key" "$dir" complete build spire/build.sh
[ "$CACHED_BUILD_DID" = 1 ] && echo "spire/build.sh: built ${bins[*]} in $((SECONDS - started))s" >&2
echo "$dir/bin"
