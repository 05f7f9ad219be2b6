#!/usr/bin/env bash
# Builds (or reuses) the test control plane's binaries:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, and the
#   real node's kubelet and kube-proxy (k8s.io/kubernetes, one build),
#   etcd (go.etcd.io/etcd/server/v3/etcdmain), kwok, helm, crane (OCI images
#   without a Docker engine) and coredns (the real node's cluster DNS).
# Output: the cache directory, printed on the last line. The cache is keyed by
# versions.env, so only the first run pays the build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
source ./versions.env
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}_crane-${CRANE_VERSION}_coredns-${COREDNS_VERSION}"
cache="${PAPERBOT_CP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/paperbot/control-plane}/$key"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd kwok helm crane coredns)
missing=()
for b in "${bins[@]}"; do [ -x "$cache/bin/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "control plane binaries cached in $cache" >&2
  echo "$cache"
  exit 0
fi
mkdir -p "$cache/bin"
# A private Go build cache, removed when done: the one build of these
# binaries leaves about 5 GB of compiled packages that nothing reuses (the
# binaries are cached above), on a disk the tests' real node shares.
gocache="$(mktemp -d "${TMPDIR:-/tmp}/paperbot-gocache.XXXXXX")"
trap 'rm -rf "$gocache"' EXIT
export GOCACHE="$gocache"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w \
 -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor} \
 -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z \
 -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION} -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=${minor} -X k8s.io/client-go/pkg/version.gitTreeState=clean"
start=$(date +%s)
[ -f go.mod ] || ./gen-go-mod.sh
echo "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy, etcd (${K8S_VERSION}, etcd ${ETCD_VERSION})..." >&2
go build -trimpath -ldflags "$ldflags" -o "$cache/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy \
  ./cmd/etcd
echo "installing kwok ${KWOK_VERSION} and helm ${HELM_VERSION}..." >&2
GOBIN="$cache/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
GOBIN="$cache/bin" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
echo "installing crane ${CRANE_VERSION} and coredns ${COREDNS_VERSION}..." >&2
GOBIN="$cache/bin" go install -trimpath -ldflags "-s -w" "github.com/google/go-containerregistry/cmd/crane@${CRANE_VERSION}"
GOBIN="$cache/bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@${COREDNS_VERSION}"
echo "built in $(( $(date +%s) - start )) s; cache $(du -sh "$cache" | cut -f1) at $cache" >&2
echo "$cache"
