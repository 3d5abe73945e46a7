#!/usr/bin/env bash
# System packages sockmesh builds and tests with (Debian/Ubuntu). Idempotent.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "SOCKMESH_E_NOT_ROOT: installing system packages needs root (run with sudo)" >&2
  exit 3
fi
export DEBIAN_FRONTEND=noninteractive
[ "${SKIP_APT_UPDATE:-}" = 1 ] || apt-get update -qq
# clang/llvm/libbpf-dev/bpftool: the eBPF programs and the libbpf addon; iproute2: the local mesh;
# make/g++/python3: node-gyp; openssl/tcpdump: tests that verify chains and capture the underlay;
# haproxy/wrk: the benchmark baselines; chromium: the dashboard's browser test (headless, through
# playwright-core).
apt-get install -y -qq --no-install-recommends \
  clang llvm libbpf-dev bpftool iproute2 util-linux make g++ python3 pkg-config \
  openssl tcpdump curl haproxy wrk ca-certificates chromium >/dev/null
