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
# kube-proxy; root and Docker needed; it takes the next four ports).
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

bin=$("$here/build.sh" | tail -n 1)
mkdir -p "$dir/bin" "$dir/pki" "$dir/logs" "$dir/run"
ln -sf "$bin/kubectl" "$dir/bin/kubectl"
kubeconfig="$dir/kubeconfig"
kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

alive() { [[ -f $dir/run/$1.pid ]] && kill -0 "$(cat "$dir/run/$1.pid")" 2>/dev/null; }

if alive kube-apiserver && kubectl get --raw /readyz >/dev/null 2>&1; then
  echo "cluster already running: export KUBECONFIG=$kubeconfig"
  exit 0
fi

fail() { # component message
  echo "up.sh: $1 $2; the end of $dir/logs/$1.log:" >&2
  tail -n 30 "$dir/logs/$1.log" >&2 || true
  exit 1
}

start() { # name command...
  local name=$1; shift
  alive "$name" && return 0
  setsid nohup "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/run/$name.pid"
}

wait_until() { # name seconds command...
  local name=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || fail "$name" "exited"
    ((SECONDS < deadline)) || fail "$name" "was not ready after $seconds s"
    sleep 0.2
  done
}

# --- PKI: one CA; a serving certificate; client certificates; the service-account key pair.
pki="$dir/pki"
if [[ ! -f $pki/ca.crt ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mlmodel-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' >"$pki/apiserver.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$pki/client.ext"
  for user in "admin|/O=system:masters/CN=kubernetes-admin" \
    "controller-manager|/CN=system:kube-controller-manager" "scheduler|/CN=system:kube-scheduler"; do
    file=${user%%|*} subject=${user#*|}
    openssl req -newkey rsa:2048 -nodes -subj "$subject" \
      -keyout "$pki/$file.key" -out "$pki/$file.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$file.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
      -CAcreateserial -days 3650 -extfile "$pki/client.ext" -out "$pki/$file.crt" 2>/dev/null
  done
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
# The apiserver's client certificate towards kubelets (logs, exec on a real node).
if [[ ! -f $pki/kubelet-client.crt ]]; then
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
    -keyout "$pki/kubelet-client.key" -out "$pki/kubelet-client.csr" 2>/dev/null
  openssl x509 -req -in "$pki/kubelet-client.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -extfile <(printf 'extendedKeyUsage=clientAuth\n') \
    -out "$pki/kubelet-client.crt" 2>/dev/null
fi

write_kubeconfig() { # path user
  cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: mlmodel-local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$pki/$2.crt")
    client-key-data: $(base64 -w0 "$pki/$2.key")
contexts:
- name: mlmodel-local
  context: {cluster: mlmodel-local, user: $2}
current-context: mlmodel-local
KUBECONFIG
}
write_kubeconfig "$kubeconfig" admin
write_kubeconfig "$dir/controller-manager.kubeconfig" controller-manager
write_kubeconfig "$dir/scheduler.kubeconfig" scheduler

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
  --profiling=false
wait_until kube-apiserver 90 kubectl get --raw /readyz

# --- controllers, scheduler, KWOK
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$cm_port" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --horizontal-pod-autoscaler-sync-period 5s \
  --profiling=false
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig "$dir/scheduler.kubeconfig" \
  --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
  --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$sched_port" \
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

case ${MLMODEL_CLUSTER_NODE:-kwok} in
  kwok) ;;
  real) # Pods go to the real node; only those that tolerate the taint to KWOK's.
    kubectl taint node kwok-node-0 kwok.x-k8s.io/node=fake:NoSchedule --overwrite >/dev/null
    "$here/node.sh" up "$dir" ;;
  *) echo "up.sh: MLMODEL_CLUSTER_NODE is kwok (the default) or real" >&2; exit 2 ;;
esac

echo "cluster ready ($KUBERNETES_VERSION, logs in $dir/logs):"
echo "export KUBECONFIG=$kubeconfig PATH=$dir/bin:\$PATH"
