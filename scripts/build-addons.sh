#!/usr/bin/env bash
# Builds the native addons (libbpf loader, SO_PEERCRED, fd passing for the agent handoff) against the installed Node's own headers:
# node-gyp would otherwise try to download them, and these machines only reach the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
args=(rebuild --loglevel=warn)
if [ -f "$prefix/include/node/node.h" ]; then args+=("--nodedir=$prefix"); fi
for dir in bpf-sockops/addon certs/workload-api/peercred mesh-agent/handoff/fdpass; do
  npx --no-install node-gyp "${args[@]}" --directory "$dir"
done
