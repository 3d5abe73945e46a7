# The one image the sockmesh chart runs (control plane and node agent): docs/install.md, "The image
# contract". Built in a full Debian stage with the toolchain, run from a slim one with only the results.
#   docker build -t registry.example.com/sockmesh:0.1.0 .
# Node >= 20.18; the run stage must be the same Debian and Node as the build stage: the N-API addons
# link the build stage's glibc and libbpf.
ARG NODE_IMAGE=node:20-bookworm

FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev bpftool make g++ python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-fund --no-audit
COPY . .
# CO-RE: vmlinux.h from the build host's BTF; the objects relocate on any kernel >= 6.1 with BTF.
# BPF, then the three addons against this image's own Node headers, then the TypeScript.
RUN npm run build \
 && npm prune --omit=dev --no-fund --no-audit \
 && mkdir -p /out \
 && cp -a package.json bin dist node_modules /out/ \
 && mkdir -p /out/bpf-sockops /out/certs/workload-api/peercred /out/certs/delegated-identity /out/mesh-agent/handoff/fdpass \
 && cp -a bpf-sockops/obj /out/bpf-sockops/ \
 && mkdir -p /out/bpf-sockops/addon && cp -a bpf-sockops/addon/build /out/bpf-sockops/addon/ \
 && cp -a certs/workload-api/peercred/build /out/certs/workload-api/peercred/ \
 && cp -a certs/workload-api/workload.proto /out/certs/workload-api/ \
 && cp -a certs/delegated-identity/proto /out/certs/delegated-identity/ \
 && cp -a mesh-agent/handoff/fdpass/build /out/mesh-agent/handoff/fdpass/

FROM ${NODE_IMAGE}-slim
# libbpf1: the shared library the BPF loader addon links. Not needed: clang, llvm, bpftool, libbpf-dev.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 libelf1 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out /opt/sockmesh
# The chart's command is `sockmesh`; the control plane runs as 65532, which only reads.
RUN ln -s /opt/sockmesh/bin/sockmesh.js /usr/local/bin/sockmesh \
 && chmod -R a+rX /opt/sockmesh
ENV NODE_ENV=production
WORKDIR /opt/sockmesh
ENTRYPOINT ["sockmesh"]
