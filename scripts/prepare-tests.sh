#!/usr/bin/env bash
# npm test's pretest: builds (or finds cached) what the suite runs besides the package: the
# Kubernetes binaries, the Go peers and SPIRE (each from the Go module proxy), then Node 24.
# The three Go builds run at once: cold, their compiles already keep both cores busy, but each
# also fetches modules and links large binaries on one core, and those phases overlap the
# others' compiles. Their caches are separate directories with a lock each
# (scripts/lib/cached-build.sh), and Go's module and build caches take concurrent builders.
# Each build's output is printed once it ends, whole, with how long it took.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

builds=(k8s peers spire)
declare -A pid started
for b in "${builds[@]}"; do
  started[$b]=$SECONDS
  bash "$here/$b/build.sh" > "$logs/$b.log" 2>&1 &
  pid[$b]=$!
done

failed=()
for b in "${builds[@]}"; do
  if wait "${pid[$b]}"; then status=ok; else status=FAILED; failed+=("$b"); fi
  echo "prepare-tests: $b/build.sh $status after $((SECONDS - started[$b])) s" >&2
  sed "s/^/  [$b] /" "$logs/$b.log" >&2
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "prepare-tests: failed: ${failed[*]} (their output is above; rerun one alone with bash scripts/<name>/build.sh)" >&2
  exit 1
fi
bash "$here/node24.sh" > /dev/null
