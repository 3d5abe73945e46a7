# Sourced by the scripts that build or install into /var/cache/sockmesh (k8s/build.sh, peers/build.sh,
# node24.sh): one builder at a time, and a build lands only when complete, so an interrupted one is
# never taken for done.
#   cached_build <cache root> <key> <dir> <complete fn> <build fn> <name>
# <complete fn> DIR succeeds when DIR holds a finished build; <build fn> TMP builds into TMP. Returns at
# once when <dir> is complete (also after waiting for another builder); otherwise builds in a temporary
# directory under the root and renames it to <dir>. Sets CACHED_BUILD_DID=1 when it built.

cached_build() {
  local root="$1" key="$2" dir="$3" complete="$4" build="$5" name="$6"
  CACHED_BUILD_DID=0
  "$complete" "$dir" && return 0
  mkdir -p "$root"
  exec 9> "$root/.build.lock"
  flock 9
  if "$complete" "$dir"; then
    exec 9>&-
    return 0
  fi
  rm -rf "$root"/.tmp-*
  CACHED_BUILD_TMP="$(mktemp -d "$root/.tmp-$key.XXXXXX")"
  chmod 755 "$CACHED_BUILD_TMP"
  trap 'rm -rf "$CACHED_BUILD_TMP"' EXIT
  "$build" "$CACHED_BUILD_TMP"
  "$complete" "$CACHED_BUILD_TMP" || { echo "$name: the build finished but is incomplete in $CACHED_BUILD_TMP" >&2; exit 1; }
  rm -rf "$dir"
  mv "$CACHED_BUILD_TMP" "$dir"
  trap - EXIT
  exec 9>&-
  CACHED_BUILD_DID=1
}

# cached_build_args <what --print-dir prints> <script name> "$@": the one option these scripts take.
# With --print-dir prints the path and exits; any other argument is a usage error.
cached_build_args() {
  local print="$1" name="$2"
  shift 2
  if [ "${1:-}" = "--print-dir" ]; then
    echo "$print"
    exit 0
  elif [ -n "${1:-}" ]; then
    echo "usage: $name [--print-dir]" >&2
    exit 2
  fi
}

# has_bins <dir> <name>...: succeeds when every <name> is an executable in <dir>/bin.
has_bins() {
  local dir="$1" b
  shift
  for b in "$@"; do [ -x "$dir/bin/$b" ] || return 1; done
}

# go_module_key <module dir>: a cache key over the Go version, go.mod, go.sum and the Go sources.
go_module_key() {
  (cd "$1" && go env GOVERSION && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
