# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared settings for the local test cluster scripts. Sourced, never run.
#
# Every path and version is overridable through the environment so that CI and
# developers can move the cache or pin other versions without editing scripts.

HODEI_K8S_VERSION="${HODEI_K8S_VERSION:-v1.34.4}"
HODEI_ETCD_VERSION="${HODEI_ETCD_VERSION:-v3.6.4}"
HODEI_CRICTL_VERSION="${HODEI_CRICTL_VERSION:-v1.34.0}"
HODEI_CLUSTER_CACHE="${HODEI_CLUSTER_CACHE:-$HOME/.cache/hodei-cluster}"
HODEI_CLUSTER_STATE="${HODEI_CLUSTER_STATE:-$HODEI_CLUSTER_CACHE/state}"

# Loopback only: nothing here may listen on, or talk to, another address.
HODEI_CLUSTER_HOST=127.0.0.1
HODEI_CLUSTER_API_PORT="${HODEI_CLUSTER_API_PORT:-6443}"
HODEI_CLUSTER_ETCD_PORT="${HODEI_CLUSTER_ETCD_PORT:-23790}"
HODEI_CLUSTER_ETCD_PEER_PORT="${HODEI_CLUSTER_ETCD_PEER_PORT:-23800}"
HODEI_CLUSTER_KCM_PORT="${HODEI_CLUSTER_KCM_PORT:-10257}"
# Required by kube-apiserver for Service objects. It is a bookkeeping range
# only: nothing on this machine routes it and no script or test sends to it.
HODEI_CLUSTER_SERVICE_CIDR="${HODEI_CLUSTER_SERVICE_CIDR:-10.96.0.0/24}"
HODEI_CLUSTER_SERVICE_IP="${HODEI_CLUSTER_SERVICE_CIDR%.*/*}.1"

# The node and its pods live in this network namespace (see netns.sh). The pod
# subnet exists only inside it; its first address is the node's IP.
HODEI_CLUSTER_NETNS="${HODEI_CLUSTER_NETNS:-hodei-cluster}"
HODEI_CLUSTER_POD_CIDR="${HODEI_CLUSTER_POD_CIDR:-10.244.0.0/24}"
HODEI_CLUSTER_NODE_IP="${HODEI_CLUSTER_POD_CIDR%.*/*}.1"
HODEI_NODE_NAME="${HODEI_NODE_NAME:-hodei-node}"
HODEI_CLUSTER_SCHEDULER_PORT="${HODEI_CLUSTER_SCHEDULER_PORT:-10259}"

K8S_BIN="$HODEI_CLUSTER_CACHE/kubernetes-$HODEI_K8S_VERSION/bin"
ETCD_BIN="$HODEI_CLUSTER_CACHE/etcd-$HODEI_ETCD_VERSION/bin"
CRICTL_BIN="$HODEI_CLUSTER_CACHE/crictl-$HODEI_CRICTL_VERSION/bin"
# The Kubernetes commands build.sh builds into $K8S_BIN.
K8S_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
PKI="$HODEI_CLUSTER_STATE/pki"
LOGS="$HODEI_CLUSTER_STATE/logs"
PIDS="$HODEI_CLUSTER_STATE/pids"
ADMIN_KUBECONFIG="$HODEI_CLUSTER_STATE/admin.kubeconfig"
API_URL="https://$HODEI_CLUSTER_HOST:$HODEI_CLUSTER_API_PORT"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

# pid_alive NAME: true when the PID recorded for NAME is a live process.
pid_alive() {
  local f="$PIDS/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# stop_pid NAME [GRACE_SECONDS]: SIGTERM the recorded PID, SIGKILL after the
# grace, then forget it. Only ever touches the PID this state dir recorded.
stop_pid() {
  local name="$1" grace="${2:-10}" f="$PIDS/$1.pid" pid i
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in ${grace}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}

# wait_for DESCRIPTION TIMEOUT_SECONDS PID_NAME COMMAND...: retry COMMAND until
# it succeeds; fail early if the process it waits on has died.
wait_for() {
  local what="$1" timeout="$2" name="$3" deadline
  shift 3
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$name" || die "$name exited while waiting for $what; see $LOGS/$name.log"
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what; see $LOGS/$name.log"
    sleep 0.2
  done
}

# start_local_cluster KEEP_VAR NODE_SCRIPT [ARG...]: for a script that runs
# against the local cluster (e2e.sh, bench-k8s.sh). Starts the control plane
# unless it is running, (re)starts the node with NODE_SCRIPT (node-up.sh) and
# its arguments (image archives), and exports KUBECONFIG.
# Sets the EXIT trap, before starting anything: when this call started the
# control plane, the script's exit stops it again, unless the variable named
# KEEP_VAR is set (to look at the cluster afterwards).
start_local_cluster() {
  local_cluster_keep_var="$1"
  local node_script="$2"
  shift 2
  local_cluster_started=0
  pid_alive kube-apiserver || local_cluster_started=1
  trap stop_local_cluster_if_started EXIT
  local exports
  # A failing up.sh must stop the caller: `eval "$(...)"` alone would succeed.
  exports="$(HODEI_CLUSTER_NO_NODE=1 "$REPO_ROOT/scripts/cluster/up.sh")" || die "starting the local control plane failed"
  eval "$exports"
  "$REPO_ROOT/scripts/cluster/$node_script" "$@"
}

# stop_local_cluster_if_started: the EXIT trap of start_local_cluster.
stop_local_cluster_if_started() {
  if ((local_cluster_started)) && [[ -z "${!local_cluster_keep_var:-}" ]]; then
    "$REPO_ROOT/scripts/cluster/down.sh" >&2 || true
  fi
}

# pod_forwarders: the ports that expose-to-pods.sh forwards now, one a line.
pod_forwarders() {
  local f
  for f in "$PIDS"/pod-forward-*.pid; do
    [[ -e "$f" ]] && basename "$f" .pid | sed 's/^pod-forward-//'
  done
  return 0
}

# stop_pod_forwarders_since BEFORE: stop the forwarders started since
# pod_forwarders printed BEFORE (a test's or a benchmark's servers), and keep
# the others (a `just server-k8s` someone runs).
stop_pod_forwarders_since() {
  local port
  for port in $(comm -13 <(sort <<<"$1") <(pod_forwarders | sort)); do
    "$REPO_ROOT/scripts/cluster/expose-to-pods.sh" --stop "$port" >&2
  done
}
