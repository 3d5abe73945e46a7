#!/usr/bin/env bash
# Builds the Kubernetes test binaries (kube-apiserver, kube-controller-manager, kubectl, kine, helm)
# and copies the Gateway API standard-channel CRDs into a cache directory keyed by the versions in
# versions.env. Everything comes from the Go module proxy; CGO_ENABLED=0.
# A complete cache directory is reused; a build happens in a temporary directory that is renamed
# into place only when complete, so an interrupted build is never taken as done.
#   bash scripts/k8s/build.sh              build if needed, print a one-line summary
#   bash scripts/k8s/build.sh --print-dir  print the cache directory only (does not build)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

# lab/kube/binaries.ts computes the same path: keep the two in step.
cache_root="${SOCKMESH_CACHE:-/var/cache/sockmesh}/k8s"
key="${K8S_VERSION}-kine${KINE_VERSION}-helm${HELM_VERSION}-gwapi${GATEWAY_API_VERSION}"
dir="$cache_root/$key"
bins=(kube-apiserver kube-controller-manager kubectl kine helm)

# shellcheck source=../lib/cached-build.sh
. "$here/../lib/cached-build.sh"
cached_build_args "$dir" "$0" "$@"

complete() {
  has_bins "$1" "${bins[@]}" && compgen -G "$1/crds/gateway-api/*.yaml" > /dev/null
}

summary() {
  echo "k8s binaries ($1): $dir/bin/{$(IFS=,; echo "${bins[*]}")}, Gateway API CRDs $dir/crds/gateway-api/"
}

if complete "$dir"; then
  summary "cache hit"
  exit 0
fi

build() {
  local tmp="$1"
  command -v go > /dev/null || { echo "build.sh: go is not on the PATH (Go >= 1.26 is needed)" >&2; exit 1; }
  mkdir -p "$tmp/bin" "$tmp/crds/gateway-api"
  export CGO_ENABLED=0

  # Same -X flags as kubernetes' hack/lib/version.sh, so `kubectl version` and /version tell the truth.
  minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done

  echo "build.sh: building k8s.io/kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kubectl)" >&2
  (
    cd "$here/wrapper"
    # -mod=readonly: go.mod/go.sum are the committed, generated ones (scripts/k8s/gen-wrapper.sh).
    go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp/bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
  )
  echo "build.sh: building kine $KINE_VERSION and helm $HELM_VERSION" >&2
  # Run outside any module so `go install pkg@version` uses that module's own go.mod and go.sum.
  (
    cd "$tmp"
    GOBIN="$tmp/bin" go install -trimpath -ldflags "-s -w -X github.com/k3s-io/kine/pkg/version.Version=$KINE_VERSION" \
      "github.com/k3s-io/kine@$KINE_VERSION"
    GOBIN="$tmp/bin" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  )

  gw="$(cd "$tmp" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$gw/config/crd/standard" ] || { echo "build.sh: no config/crd/standard in sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" >&2; exit 1; }
  cp "$gw"/config/crd/standard/*.yaml "$tmp/crds/gateway-api/"
  chmod -R u+w "$tmp/crds"
}

started=$SECONDS
cached_build "$cache_root" "$key" "$dir" complete build build.sh
if [ "$CACHED_BUILD_DID" = 1 ]; then summary "built in $((SECONDS - started)) s"; else summary "cache hit"; fi
