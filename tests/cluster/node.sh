#!/usr/bin/env bash
# A real node for the local cluster (MLMODEL_CLUSTER_NODE=real): containerd 2.x with Debian's
# runc, Debian's CNI plugins on a bridge, kubelet and kube-proxy of the control plane's release.
# Pods run for real; images come from the local Docker engine (no registry is reachable).
#
#   node.sh up DIR              start the node of the cluster in DIR (up.sh calls it)
#   node.sh import DIR IMAGE... copy Docker images into the node's containerd (k8s.io namespace)
#   node.sh down DIR            stop every pod, the node, and undo its mounts, bridge and rules
#
# Needs root, runc and containernetworking-plugins (apt), iptables, Docker (for the images).
# One real node per machine: the bridge, kube-proxy's iptables chains and the kubepods cgroups
# are host-wide. Environment: MLMODEL_CLUSTER_PORT (as up.sh; the node takes port+6 to port+9),
# MLMODEL_CLUSTER_IMAGES (Docker images to import at start, default mlmodel-runtime:dev if built),
# MLMODEL_NODE_IP (default: the address of the default route's interface).
#
# Kubelet settings chosen for this kind of VM (a Firecracker guest without systemd):
# - cgroupDriver cgroupfs: there is no systemd to delegate to; containerd (SystemdCgroup=false)
#   must agree with the kubelet.
# - failCgroupV1 false: `stat -fc %T /sys/fs/cgroup` says tmpfs (cgroup v1 hierarchies); kubelet
#   1.35+ refuses v1 unless told, and v1 is deprecated: a cgroup v2 host needs no such line.
# - failSwapOn false with swapBehavior NoSwap: pods never swap, and a host with swap still runs.
# - no cluster DNS (none runs); pods get the host's resolv.conf.
# - containerd's restrict_oom_score_adj, and kube-proxy's oomScoreAdj 0: see containerd.toml.
# - x509 client CA and webhook authorization on the kubelet API, so `kubectl logs/exec` work
#   with the apiserver's kubelet client certificate and nothing else is let in.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=processes.sh
source "$here/processes.sh"
# shellcheck source=pki.sh
source "$here/pki.sh"
action=${1:?usage: node.sh up|import|down DIR [IMAGE...]}
dir=$(cd "${2:?usage: node.sh up|import|down DIR}" && pwd)
shift 2
port=${MLMODEL_CLUSTER_PORT:-16443}
kubelet_port=$((port + 6)) kubelet_healthz_port=$((port + 7))
proxy_healthz_port=$((port + 8)) proxy_metrics_port=$((port + 9))
node_name=mlmodel-node-0
bridge=mlmodel0
pod_cidr=10.244.0.0/24 cluster_cidr=10.244.0.0/16
# Short and outside DIR: unix socket paths are limited to 108 bytes.
state=/run/mlmodel-node
owner_file=/run/mlmodel-node.owner
sock="$state/containerd.sock"
node="$dir/node"
bin=$("$here/build.sh" kubelet kube-proxy containerd containerd-shim-runc-v2 ctr pause | tail -n 1)

ctr() { "$bin/ctr" --address "$sock" --namespace k8s.io "$@"; }
import_images() { # docker-image...
  local image
  for image in "$@"; do
    docker save "$image" | ctr images import --platform linux/amd64 - >/dev/null
    echo "node.sh: imported $image" >&2
  done
}

# Every process in the kubepods cgroups (cgroup v1 has one hierarchy per controller).
pod_processes() {
  find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -name cgroup.procs -exec cat {} + \
    2>/dev/null | sort -u || true
}

down() {
  for name in kubelet kube-proxy; do
    alive "$name" && kill "$(cat "$dir/run/$name.pid")"
  done
  if alive containerd; then
    # Every container and sandbox, so no shim or container process outlives the node.
    local id
    for id in $(ctr tasks ls -q 2>/dev/null); do ctr tasks delete --force "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr containers ls -q 2>/dev/null); do ctr containers delete "$id" >/dev/null 2>&1 || true; done
    kill "$(cat "$dir/run/containerd.pid")"
    for _ in $(seq 50); do alive containerd || break; sleep 0.2; done
  fi
  # What a containerd killed before its node was stopped leaves running: its shims, and the pods'
  # processes in the kubepods cgroups. One node per machine, so every such process is this node's.
  pkill -KILL -f -- "containerd-shim-runc-v2 .*-address $sock" || true
  local pids
  for _ in $(seq 50); do
    pids=$(pod_processes)
    [[ -z $pids ]] && break
    # shellcheck disable=SC2086  # a list of pids
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  # Volumes, network namespaces and rootfs mounts, deepest first, before anything is removed.
  findmnt -rn -o TARGET | awk -v d="$dir/" -v s="$state/" 'index($0, d) == 1 || index($0, s) == 1' \
    | sort -r | while read -r target; do umount -l "$target" 2>/dev/null || true; done
  "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  while iptables -D FORWARD -m comment --comment mlmodel-node -i "$bridge" -j ACCEPT 2>/dev/null; do :; done
  while iptables -D FORWARD -m comment --comment mlmodel-node -o "$bridge" -j ACCEPT 2>/dev/null; do :; done
  # What the kubelet adds (kubelet_network_linux.go): canary chains, the iptables-backend hint and a
  # filter rule that drops non-local traffic to 127.0.0.0/8.
  local tool table
  for tool in iptables ip6tables; do
    while "$tool" -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    while "$tool" -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    "$tool" -F KUBE-FIREWALL 2>/dev/null && "$tool" -X KUBE-FIREWALL 2>/dev/null || true
    for table in filter nat mangle; do "$tool" -t "$table" -X KUBE-KUBELET-CANARY 2>/dev/null || true; done
    "$tool" -t mangle -X KUBE-IPTABLES-HINT 2>/dev/null || true
  done
  ip link delete "$bridge" 2>/dev/null || true
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $root ]] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$state" "$node"
  [[ $(cat "$owner_file" 2>/dev/null) == "$dir" ]] && rm -f "$owner_file"
  return 0
}

case $action in
  import) import_images "$@"; exit 0 ;;
  down) down; exit 0 ;;
  up) ;;
  *) echo "node.sh: unknown action $action" >&2; exit 2 ;;
esac

# --- preconditions, each with what to do about it
[[ $(id -u) == 0 ]] || { echo "node.sh: a real node needs root (mounts, cgroups, iptables)" >&2; exit 1; }
for tool in runc iptables ip docker; do
  command -v "$tool" >/dev/null || { echo "node.sh: $tool is missing (apt-get install runc iptables iproute2; Docker: .ci/start-docker.sh)" >&2; exit 1; }
done
[[ -x /usr/lib/cni/bridge ]] || { echo "node.sh: apt-get install containernetworking-plugins" >&2; exit 1; }
# The machine's node belongs to the cluster named in the owner file. A node whose processes still
# run is left alone. One whose processes are gone (its run was killed: a test session stopped
# mid-way, a reboot of the processes but not of /run) left its mounts, bridge, rules and cgroups
# behind: they are cleaned up here, so one killed run does not block every later one.
owner=$(cat "$owner_file" 2>/dev/null || true)
if [[ -n $owner && $owner != "$dir" && -d $owner/node ]]; then
  if alive kubelet "$owner" || alive containerd "$owner" || alive kube-proxy "$owner"; then
    echo "node.sh: the real node of $owner is running; stop it first (down.sh DIR)" >&2
    exit 1
  fi
  echo "node.sh: the real node of $owner was left behind by a run that stopped (none of its processes runs); cleaning it up" >&2
  "$here/node.sh" down "$owner"
fi
echo "$dir" >"$owner_file"
cgroup_fs=$(stat -fc %T /sys/fs/cgroup)
node_ip=${MLMODEL_NODE_IP:-$(ip -4 route get 1.1.1.1 | sed -n 's/.* src \([0-9.]*\).*/\1/p')}
mkdir -p "$node"/{pki,cni/net.d,cni/ipam,kubelet,pod-logs} "$state" "$dir/logs" "$dir/run"
pki="$dir/pki"

# --- certificates: the kubelet's client (system:node:NAME) and serving certificates, kube-proxy's
if [[ ! -f $node/pki/kubelet.crt ]]; then
  issue_certificate "$node/pki" kubelet "/O=system:nodes/CN=system:node:$node_name" \
    "extendedKeyUsage=clientAuth" "$pki/ca"
  issue_certificate "$node/pki" kubelet-serving "/CN=$node_name" \
    "$(printf 'subjectAltName=IP:%s,IP:127.0.0.1,DNS:%s\nextendedKeyUsage=serverAuth' "$node_ip" "$node_name")" \
    "$pki/ca"
  issue_certificate "$node/pki" kube-proxy /CN=system:kube-proxy "extendedKeyUsage=clientAuth" "$pki/ca"
fi
for user in kubelet kube-proxy; do
  write_kubeconfig "$node/$user.kubeconfig" "https://127.0.0.1:$port" "$pki/ca.crt" "$node/pki/$user"
done

# --- network: one bridge, host-local addresses; no masquerade (pods talk to the host and each
# other only). Docker sets the FORWARD policy to DROP, so pod-to-pod traffic is let through.
cat >"$node/cni/net.d/10-mlmodel.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "mlmodel",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$node/cni/ipam",
              "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
CNI
# The bridge made here rather than by the plugin on the first pod, so the host's address on it
# (the pods' gateway, 10.244.0.1) exists from the start: tests serve artifacts there.
if ! ip link show "$bridge" >/dev/null 2>&1; then
  ip link add "$bridge" type bridge
  ip addr add "${pod_cidr%.0/24}.1/24" dev "$bridge"
fi
ip link set "$bridge" up
for flag in -i -o; do
  iptables -C FORWARD -m comment --comment mlmodel-node "$flag" "$bridge" -j ACCEPT 2>/dev/null \
    || iptables -I FORWARD -m comment --comment mlmodel-node "$flag" "$bridge" -j ACCEPT
done
sysctl -qw net.ipv4.ip_forward=1

# --- containerd
cat >"$node/containerd.toml" <<TOML
version = 3
root = "$node/containerd"
state = "$state/containerd"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'mlmodel.local/pause:1'
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # This VM's root lacks CAP_SYS_RESOURCE (CapBnd 000001fffeffffff), so no process may lower its
  # oom_score_adj: runc failed writing the sandbox's -998 ("failed to update
  # /proc/self/oom_score_adj: Permission denied"). Clamp to containerd's own score instead.
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = '$(command -v runc)'
  Root = '$state/runc'
  SystemdCgroup = false
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['/usr/lib/cni']
  conf_dir = '$node/cni/net.d'
[plugins.'io.containerd.nri.v1.nri']
  disable = true
TOML
# Our shim first on PATH: Docker's containerd package puts a 1.x shim in /usr/bin.
start containerd env PATH="$(dirname "$(readlink -f "$bin/containerd")"):$PATH" \
  "$bin/containerd" --config "$node/containerd.toml"
wait_until containerd 30 ctr version

# The sandbox image: a static pause binary in an image of its own, built by Docker.
if ! ctr images ls -q | grep -qx mlmodel.local/pause:1; then
  if ! docker image inspect mlmodel.local/pause:1 >/dev/null 2>&1; then
    context=$(mktemp -d)
    cp "$here/modules/pause/Dockerfile" "$bin/pause" "$context/"
    DOCKER_BUILDKIT=0 docker build -q -t mlmodel.local/pause:1 "$context" >/dev/null
    rm -rf "$context"
  fi
  import_images mlmodel.local/pause:1
fi
images=${MLMODEL_CLUSTER_IMAGES-}
if [[ -z ${MLMODEL_CLUSTER_IMAGES+set} ]] && docker image inspect mlmodel-runtime:dev >/dev/null 2>&1; then
  images=mlmodel-runtime:dev
fi
# shellcheck disable=SC2086  # a list of image names
[[ -n $images ]] && import_images $images

# --- kubelet
cat >"$node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
cgroupDriver: cgroupfs
failCgroupV1: $([[ $cgroup_fs == cgroup2fs ]] && echo true || echo false)
failSwapOn: false
memorySwap: {swapBehavior: NoSwap}
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
tlsCertFile: $node/pki/kubelet-serving.crt
tlsPrivateKeyFile: $node/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
podLogsDir: $node/pod-logs
resolvConf: /etc/resolv.conf
podCIDR: $pod_cidr
maxPods: 30
serializeImagePulls: false
# The disk is shared with builds and other tests: evict only when it is really short.
evictionHard: {memory.available: 200Mi, nodefs.available: 5%, imagefs.available: 5%}
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
YAML
start kubelet "$bin/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$node/kubelet.kubeconfig" \
  --root-dir "$node/kubelet" --hostname-override "$node_name" --node-ip "$node_ip" --v 1
kubectl() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }
wait_until kubelet 90 kubectl wait --for=condition=Ready "node/$node_name" --timeout=1s

# --- kube-proxy (iptables mode): ClusterIPs reachable from the host and from pods
cat >"$node/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $node/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $node_name
clusterCIDR: $cluster_cidr
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$proxy_healthz_port
metricsBindAddress: 127.0.0.1:$proxy_metrics_port
oomScoreAdj: 0
# Leave the host's conntrack table size alone (shared machine).
conntrack: {maxPerCore: 0}
YAML
start kube-proxy "$bin/kube-proxy" --config "$node/kube-proxy.yaml"
wait_until kube-proxy 60 curl -sf "http://127.0.0.1:$proxy_healthz_port/healthz"
echo "real node $node_name ready ($node_ip, pods in $pod_cidr, cgroup fs $cgroup_fs)" >&2
