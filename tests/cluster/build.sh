#!/usr/bin/env bash
# Builds the local control plane's binaries from their Go modules into a per-version cache, so
# only the first build on a machine pays. Prints the cache's bin directory on stdout.
#   build.sh                 etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok
#   build.sh kubelet ...     also (or only) the named binaries (kubelet, kube-proxy, containerd,
#                            containerd-shim-runc-v2, ctr, pause, metrics-server for the real node)
# The binaries are never committed; the wrapper modules under modules/ are.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${MLMODEL_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlmodel-operator/k8s}
bin="$cache/kubernetes-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
mkdir -p "$bin"

wanted=("$@")
((${#wanted[@]})) || wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

# shellcheck source=../tools/gobuild.sh
source "$here/../tools/gobuild.sh"
minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
build_date=$(date -u -d "@${SOURCE_DATE_EPOCH:-0}" +%Y-%m-%dT%H:%M:%SZ)
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

build() { # name module-dir package ldflags [output-dir]
  go_build "$1" "$here/modules/$2" "$3" "$4" "${5:-$bin}"
}

# containerd and metrics-server have versions of their own, so cache directories of their own,
# linked into bin.
build_versioned() { # name version module-dir package ldflags
  local out="$cache/$3-$2/bin"
  build "$1" "$3" "$4" "$5" "$out"
  ln -sfn "$out/$1" "$bin/$1"
}
build_containerd() { # name
  build_versioned "$1" "$CONTAINERD_VERSION" containerd "github.com/containerd/containerd/v2/cmd/$1" \
    "-X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION#v}"
}

for name in "${wanted[@]}"; do
  case $name in
    etcd) build etcd etcd . "-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" ;;
    kwok) build kwok kwok sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}" ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
      build "$name" kubernetes "k8s.io/kubernetes/cmd/$name" "$stamp" ;;
    containerd | containerd-shim-runc-v2 | ctr) build_containerd "$name" ;;
    pause) build pause pause . "" ;;
    metrics-server) build_versioned metrics-server "$METRICS_SERVER_VERSION" metrics-server \
      sigs.k8s.io/metrics-server/cmd/metrics-server "-X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION" ;;
    *) echo "build.sh: unknown binary $name" >&2; exit 2 ;;
  esac
done
echo "$bin"
