#!/usr/bin/env bash
# Starts a local Kubernetes control plane built from source, in the background on 127.0.0.1:
# etcd, kube-apiserver (RBAC, Pod Security admission, a service-account signing key, audit log),
# kube-controller-manager, kube-scheduler and KWOK with one fake node. Idempotent.
#
#   up.sh [DIR]    state, logs and kubeconfig under DIR (default: .cluster at the repo root)
#
# Environment: MLMODEL_CLUSTER_PORT (kube-apiserver's port, default 16443; etcd, the controller
# manager, the scheduler and KWOK take the next five).
# MLMODEL_CLUSTER_NODE=real adds a real node beside the KWOK one (node.sh: containerd, kubelet,
# kube-proxy; root and Docker needed; it takes the next four ports) and metrics-server, which
# scrapes its kubelet (port + 10). MLMODEL_CLUSTER_HPA_DOWNSCALE_STABILIZATION: how long the HPA
# controller waits before scaling down (default 5m0s, as Kubernetes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=$(mkdir -p "${1:-$repo/.cluster}" && cd "${1:-$repo/.cluster}" && pwd)
port=${MLMODEL_CLUSTER_PORT:-16443}
etcd_port=$((port + 1)) etcd_peer_port=$((port + 2)) cm_port=$((port + 3)) sched_port=$((port + 4))
kwok_port=$((port + 5))
server="https://127.0.0.1:$port"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=processes.sh
source "$here/processes.sh"
# shellcheck source=pki.sh
source "$here/pki.sh"

bin=$("$here/build.sh" | tail -n 1)
mkdir -p "$dir/bin" "$dir/pki" "$dir/logs" "$dir/run"
ln -sf "$bin/kubectl" "$dir/bin/kubectl"
kubeconfig="$dir/kubeconfig"
kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

if alive kube-apiserver && kubectl get --raw /readyz >/dev/null 2>&1 \
  && { [[ ${MLMODEL_CLUSTER_NODE:-kwok} != real ]] || alive kubelet; }; then
  echo "cluster already running: export KUBECONFIG=$kubeconfig"
  exit 0
fi

# --- PKI: one CA; a serving certificate; client certificates; the service-account key pair.
pki="$dir/pki"
client='extendedKeyUsage=clientAuth'
if [[ ! -f $pki/ca.crt ]]; then
  issue_ca "$pki" ca mlmodel-local-ca
  issue_certificate "$pki" apiserver /CN=kube-apiserver "$(printf '%s\n%s' \
    'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local' \
    'extendedKeyUsage=serverAuth')" "$pki/ca"
  issue_certificate "$pki" admin /O=system:masters/CN=kubernetes-admin "$client" "$pki/ca"
  issue_certificate "$pki" controller-manager /CN=system:kube-controller-manager "$client" "$pki/ca"
  issue_certificate "$pki" scheduler /CN=system:kube-scheduler "$client" "$pki/ca"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
# The apiserver's client certificate towards kubelets (logs, exec on a real node).
if [[ ! -f $pki/kubelet-client.crt ]]; then
  issue_certificate "$pki" kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client \
    "$client" "$pki/ca"
fi
# The aggregation layer: the apiserver proxies /apis/metrics.k8s.io to metrics-server with a
# front-proxy client certificate of a CA of its own (the cluster CA would let any client
# certificate assert a user in request headers), and metrics-server's own identity.
if [[ ! -f $pki/front-proxy-client.crt ]]; then
  issue_ca "$pki" front-proxy-ca mlmodel-local-front-proxy-ca
  issue_certificate "$pki" front-proxy-client /CN=front-proxy-client "$client" "$pki/front-proxy-ca"
  issue_certificate "$pki" metrics-server /CN=system:metrics-server "$client" "$pki/ca"
fi

for user in controller-manager scheduler metrics-server; do
  write_kubeconfig "$dir/$user.kubeconfig" "$server" "$pki/ca.crt" "$pki/$user"
done
write_kubeconfig "$kubeconfig" "$server" "$pki/ca.crt" "$pki/admin"

# --- etcd
start etcd "$bin/etcd" --name local --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "local=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
wait_until etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

# --- kube-apiserver (a /16 of Service IPs: every MLModel has a Service, and a /24 ran out at the
# 253rd in the 1,000-model benchmark)
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --kubelet-client-certificate "$pki/kubelet-client.crt" --kubelet-client-key "$pki/kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode Node,RBAC \
  --allow-privileged=true \
  --audit-policy-file "$here/audit-policy.yaml" --audit-log-path "$dir/logs/audit.log" \
  --audit-log-maxsize 200 --audit-log-maxbackup 1 \
  --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
  --enable-aggregator-routing=true \
  --profiling=false
wait_until kube-apiserver 90 kubectl get --raw /readyz

# --- controllers, scheduler, KWOK
# Each controller's client may send this many requests per second. Kubernetes' defaults (20 for
# the controller manager, 50 for the scheduler) hold a thousand new Deployments for minutes
# whatever the operator does; large clusters raise them, and so does this one by default.
api_qps=${MLMODEL_CLUSTER_API_QPS:-200}
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$cm_port" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --horizontal-pod-autoscaler-sync-period 5s \
  --horizontal-pod-autoscaler-downscale-stabilization "${MLMODEL_CLUSTER_HPA_DOWNSCALE_STABILIZATION:-5m0s}" \
  --kube-api-qps "$api_qps" --kube-api-burst "$((api_qps * 2))" \
  --profiling=false
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig "$dir/scheduler.kubeconfig" \
  --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
  --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$sched_port" \
  --kube-api-qps "$api_qps" --kube-api-burst "$((api_qps * 2))" \
  --profiling=false

# KWOK's own default stages (read from its module, as kwokctl embeds them) plus ours.
kwok_dir=$(cd "$here/modules/kwok" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
  | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
stages="$kwok_dir/kustomize/stage"
{
  for stage in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$stages/$stage"; echo "---"
  done
  cat "$here/kwok/failing-pods.yaml"
} >"$dir/kwok.yaml"
start kwok "$bin/kwok" --kubeconfig "$kubeconfig" --config "$dir/kwok.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds 40 --cidr 127.64.0.0/16 --node-ip 127.0.0.1 \
  --server-address "127.0.0.1:$kwok_port"

kubectl apply -f "$here/kwok/node.yaml" >/dev/null
wait_until kube-controller-manager 60 kubectl get serviceaccount default -n default
wait_until kwok 60 kubectl wait --for=condition=Ready node/kwok-node-0 --timeout=1s
wait_until kube-scheduler 30 curl -skf "https://127.0.0.1:$sched_port/readyz"

# --- metrics-server: the resource metrics API (metrics.k8s.io) that the HPA controller and
# `kubectl top` read, through the aggregation layer. A process on the host, not a pod: the apiserver
# proxies to the address of its Service's EndpointSlice (--enable-aggregator-routing; an endpoint
# may not be a loopback address, so it listens on the real node's address). It scrapes only the
# nodes that are not KWOK's, whose kubelets have no metrics endpoint.
start_metrics_server() {
  local ms_bin ms_port=$((port + 10)) address
  ms_bin=$("$here/build.sh" metrics-server | tail -n 1)
  address=$(kubectl get nodes -l 'type!=kwok' \
    -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')
  if [[ ! -f $pki/metrics-server-serving.crt ]]; then
    issue_certificate "$pki" metrics-server-serving /CN=metrics-server.kube-system.svc \
      "$(printf 'subjectAltName=DNS:metrics-server.kube-system.svc,IP:%s\nextendedKeyUsage=serverAuth' "$address")" \
      "$pki/ca"
  fi
  kubectl apply -f "$here/metrics-server.yaml" >/dev/null
  kubectl apply -f - >/dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {kubernetes.io/service-name: metrics-server, endpointslice.kubernetes.io/managed-by: up.sh}
addressType: IPv4
endpoints: [{addresses: ["$address"], conditions: {ready: true}}]
ports: [{name: https, port: $ms_port, protocol: TCP}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {name: metrics-server, namespace: kube-system, port: 443}
  caBundle: $(base64 -w0 "$pki/ca.crt")
YAML
  # Once its RBAC is in force: it reads kube-system/extension-apiserver-authentication once at
  # start, and exits if refused.
  wait_until kube-apiserver 30 kubectl auth can-i get configmap/extension-apiserver-authentication \
    -n kube-system --as system:metrics-server
  start metrics-server "$ms_bin/metrics-server" \
    --kubeconfig "$dir/metrics-server.kubeconfig" \
    --authentication-kubeconfig "$dir/metrics-server.kubeconfig" \
    --authorization-kubeconfig "$dir/metrics-server.kubeconfig" \
    --bind-address "$address" --secure-port "$ms_port" \
    --tls-cert-file "$pki/metrics-server-serving.crt" --tls-private-key-file "$pki/metrics-server-serving.key" \
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --kubelet-use-node-status-port --node-selector 'type!=kwok' --metric-resolution 15s
  wait_until metrics-server 60 kubectl wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=1s
}

case ${MLMODEL_CLUSTER_NODE:-kwok} in
  kwok) ;;
  real) # Pods go to the real node; only those that tolerate the taint to KWOK's.
    kubectl taint node kwok-node-0 kwok.x-k8s.io/node=fake:NoSchedule --overwrite >/dev/null
    "$here/node.sh" up "$dir"
    start_metrics_server ;;
  *) echo "up.sh: MLMODEL_CLUSTER_NODE is kwok (the default) or real" >&2; exit 2 ;;
esac

echo "cluster ready ($KUBERNETES_VERSION, logs in $dir/logs):"
echo "export KUBECONFIG=$kubeconfig PATH=$dir/bin:\$PATH"
