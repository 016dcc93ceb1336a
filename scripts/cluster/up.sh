#!/usr/bin/env bash
# Starts the local test cluster: etcd, kube-apiserver, kube-controller-manager
# and kube-scheduler inside the cluster's network namespace (netns.sh), the API
# server forwarded to 127.0.0.1:$HODEI_CLUSTER_API_PORT on the host, then the
# node (node-up.sh). Idempotent: if it is already up it says so and exits 0.
#
# Env: see lib.sh (HODEI_CLUSTER_CACHE, HODEI_CLUSTER_STATE, ports, versions);
#      node-up.sh's variables are passed on;
#      HODEI_CLUSTER_NO_NODE=1 starts the control plane only.
# Output: $HODEI_CLUSTER_STATE/admin.kubeconfig; prints `export KUBECONFIG=...`
#         on stdout (everything else goes to stderr).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/lib.sh"
source "$here/pki.sh"
source "$here/netns.sh"

components=(etcd kube-apiserver kube-controller-manager kube-scheduler api-forwarder)

api_ready() {
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$API_URL/readyz" | grep -qx ok
}

running=0
for c in "${components[@]}"; do pid_alive "$c" && running=$((running + 1)); done
if ((running == ${#components[@]})) && api_ready; then
  log "control plane already running (state: $HODEI_CLUSTER_STATE)"
  if [[ "${HODEI_CLUSTER_NO_NODE:-0}" != 1 ]] && ! pid_alive node; then
    "$here/node-up.sh" >&2
  fi
  echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
  exit 0
fi
if ((running > 0)); then
  log "control plane partly running; restarting it"
  "$here/down.sh" >&2
fi

# Refuse early, with a clear message, if another program holds the host port.
# The other ports are inside the cluster's own network namespace.
if (exec 3<>"/dev/tcp/$HODEI_CLUSTER_HOST/$HODEI_CLUSTER_API_PORT") 2>/dev/null; then
  die "port $HODEI_CLUSTER_HOST:$HODEI_CLUSTER_API_PORT is already in use; set HODEI_CLUSTER_API_PORT (see lib.sh)"
fi

"$here/build.sh"
mkdir -p "$LOGS" "$PIDS" "$HODEI_CLUSTER_STATE/etcd"
ensure_pki
ensure_netns

start_in_netns etcd "$ETCD_BIN/etcd" \
  --name=hodei-test \
  --data-dir="$HODEI_CLUSTER_STATE/etcd" \
  --listen-client-urls="http://$HODEI_CLUSTER_HOST:$HODEI_CLUSTER_ETCD_PORT" \
  --advertise-client-urls="http://$HODEI_CLUSTER_HOST:$HODEI_CLUSTER_ETCD_PORT" \
  --listen-peer-urls="http://$HODEI_CLUSTER_HOST:$HODEI_CLUSTER_ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://$HODEI_CLUSTER_HOST:$HODEI_CLUSTER_ETCD_PEER_PORT" \
  --initial-cluster="hodei-test=http://$HODEI_CLUSTER_HOST:$HODEI_CLUSTER_ETCD_PEER_PORT" \
  --listen-metrics-urls="" \
  --log-level=warn
wait_for "etcd health" 30 etcd \
  in_netns curl -sf --max-time 2 "http://$HODEI_CLUSTER_HOST:$HODEI_CLUSTER_ETCD_PORT/health"

start_in_netns kube-apiserver "$K8S_BIN/kube-apiserver" \
  --bind-address="$HODEI_CLUSTER_HOST" \
  --advertise-address="$HODEI_CLUSTER_HOST" \
  --secure-port="$HODEI_CLUSTER_API_PORT" \
  --etcd-servers="http://$HODEI_CLUSTER_HOST:$HODEI_CLUSTER_ETCD_PORT" \
  --service-cluster-ip-range="$HODEI_CLUSTER_SERVICE_CIDR" \
  --endpoint-reconciler-type=none \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,NodeRestriction,PodSecurity,Priority,DefaultTolerationSeconds,ResourceQuota \
  --allow-privileged=false \
  --client-ca-file="$PKI/ca.crt" \
  --tls-cert-file="$PKI/apiserver.crt" \
  --tls-private-key-file="$PKI/apiserver.key" \
  --service-account-issuer="https://kubernetes.default.svc.cluster.local" \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --cert-dir="$HODEI_CLUSTER_STATE/apiserver-certs" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --profiling=false
start_forwarder api-forwarder "$HOST_NETNS_PATH" "$HODEI_CLUSTER_HOST" "$HODEI_CLUSTER_API_PORT" \
  "$NETNS_PATH" "$HODEI_CLUSTER_API_PORT"
wait_for "kube-apiserver /readyz" 90 kube-apiserver api_ready

write_kubeconfig "$ADMIN_KUBECONFIG" hodei-admin default --cert admin
write_kubeconfig "$HODEI_CLUSTER_STATE/kube-controller-manager.kubeconfig" \
  system:kube-controller-manager kube-system --cert kube-controller-manager
write_kubeconfig "$HODEI_CLUSTER_STATE/kube-scheduler.kubeconfig" \
  system:kube-scheduler kube-system --cert kube-scheduler

start_in_netns kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$HODEI_CLUSTER_STATE/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$HODEI_CLUSTER_STATE/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$HODEI_CLUSTER_STATE/kube-controller-manager.kubeconfig" \
  --authentication-skip-lookup=true \
  --bind-address="$HODEI_CLUSTER_HOST" \
  --secure-port="$HODEI_CLUSTER_KCM_PORT" \
  --cert-dir="$HODEI_CLUSTER_STATE/kcm-certs" \
  --controllers=serviceaccount-controller,serviceaccount-token-controller,namespace-controller,garbage-collector-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller,resourcequota-controller,job-controller,ttl-after-finished-controller,node-lifecycle-controller,taint-eviction-controller,pod-garbage-collector-controller \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --use-service-account-credentials=true \
  --leader-elect=false \
  --profiling=false
wait_for "kube-controller-manager /healthz" 60 kube-controller-manager \
  in_netns curl -sfk --max-time 2 "https://$HODEI_CLUSTER_HOST:$HODEI_CLUSTER_KCM_PORT/healthz"
wait_for "the default ServiceAccount" 60 kube-controller-manager \
  kubectl --kubeconfig="$ADMIN_KUBECONFIG" -n default get serviceaccount default

start_in_netns kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$HODEI_CLUSTER_STATE/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$HODEI_CLUSTER_STATE/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$HODEI_CLUSTER_STATE/kube-scheduler.kubeconfig" \
  --bind-address="$HODEI_CLUSTER_HOST" \
  --secure-port="$HODEI_CLUSTER_SCHEDULER_PORT" \
  --cert-dir="$HODEI_CLUSTER_STATE/scheduler-certs" \
  --leader-elect=false \
  --profiling=false
wait_for "kube-scheduler /healthz" 60 kube-scheduler \
  in_netns curl -sfk --max-time 2 "https://$HODEI_CLUSTER_HOST:$HODEI_CLUSTER_SCHEDULER_PORT/healthz"

if [[ "${HODEI_CLUSTER_NO_NODE:-0}" != 1 ]]; then
  "$here/node-up.sh" >&2
fi
log "control plane ready at $API_URL"
echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
