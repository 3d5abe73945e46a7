#!/usr/bin/env bash
# Everything a fresh machine needs to run sockmesh from this checkout: system packages, npm deps, build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-packages.sh
npm ci --no-fund --no-audit
# The Kubernetes test binaries (from the Go module proxy), cached by version.
bash scripts/k8s/build.sh
npm run build
# `sockmesh` on the PATH, pointing at this checkout.
ln -sf "$PWD/bin/sockmesh.js" /usr/local/bin/sockmesh
