# shellcheck shell=bash
# The cluster's network namespace and the loopback forwarders in and out of it.
# Sourced by the other scripts after lib.sh; never run.
#
# Every cluster daemon (etcd, the control plane, containerd, kubelet) and every
# pod address lives inside the namespace $HODEI_CLUSTER_NETNS, which only these
# scripts create. Inside it: `lo`, and the bridge cni0 whose one address
# ($HODEI_CLUSTER_NODE_IP) is the node IP, the pods' gateway and the address a
# server under test is reached at. Pods get no default route, so they reach that
# subnet only. The host reaches in through loopback forwarders:
#   host 127.0.0.1:$HODEI_CLUSTER_API_PORT  -> the API server in the namespace
#   node IP:PORT (in the namespace)         -> host 127.0.0.1:PORT  (expose-to-pods.sh)
# so kubectl and a server on the host work as with any cluster, and no cluster
# address ever sits on the host's own interfaces.

NETNS_DIR=/run/netns
NETNS_PATH="$NETNS_DIR/$HODEI_CLUSTER_NETNS"
# A name for the host's own namespace, so a forwarder in the cluster namespace
# can dial back to the host's loopback.
HOST_NETNS_PATH="$NETNS_DIR/$HODEI_CLUSTER_NETNS-host"

# in_netns COMMAND...: run COMMAND in the cluster namespace (network only: the
# kubelet's mounts must stay visible to runc, so no private mount namespace).
in_netns() {
  nsenter --net="$NETNS_PATH" "$@"
}

# start_in_netns NAME COMMAND...: run a daemon in the cluster namespace, in the
# background in its own session (so a Ctrl-C in the caller's terminal does not
# reach it), and record its PID (nsenter and setsid exec, so it is the daemon's
# own). Its output goes to $LOGS/NAME.log.
start_in_netns() {
  local name="$1"
  shift
  mkdir -p "$LOGS" "$PIDS"
  log "starting $name (log: $LOGS/$name.log)"
  setsid nsenter --net="$NETNS_PATH" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

netns_exists() {
  [[ -e "$NETNS_PATH" ]] && nsenter --net="$NETNS_PATH" true 2>/dev/null
}

# The cni0 bridge's own (locally administered) MAC address.
CNI_BRIDGE_MAC=02:68:6f:64:65:69

# ensure_netns: the cluster namespace with lo and the cni0 bridge up, and the
# name of the host namespace. Idempotent.
ensure_netns() {
  command -v ip >/dev/null || die "ip (iproute2) is not installed"
  command -v nsenter >/dev/null || die "nsenter (util-linux) is not installed"
  if ! netns_exists; then
    log "creating network namespace $HODEI_CLUSTER_NETNS (node IP $HODEI_CLUSTER_NODE_IP)"
    ip netns del "$HODEI_CLUSTER_NETNS" 2>/dev/null || true
    ip netns add "$HODEI_CLUSTER_NETNS" || die "cannot create network namespace $HODEI_CLUSTER_NETNS (needs root and CAP_SYS_ADMIN)"
  fi
  in_netns ip link set lo up
  if ! in_netns ip link show cni0 >/dev/null 2>&1; then
    in_netns ip link add cni0 type bridge
  fi
  # A fixed address: a bridge with a random one takes the lowest address of its
  # ports, so it changes whenever a pod comes or goes, and every other pod's
  # cached neighbour entry for the node IP goes stale: their connections to the
  # node stall silently until it is resolved again (tens of seconds).
  in_netns ip link set cni0 address "$CNI_BRIDGE_MAC"
  if ! in_netns ip -4 addr show dev cni0 | grep -q "inet $HODEI_CLUSTER_NODE_IP/"; then
    in_netns ip addr add "$HODEI_CLUSTER_NODE_IP/${HODEI_CLUSTER_POD_CIDR#*/}" dev cni0
  fi
  in_netns ip link set cni0 up
  if [[ ! -e "$HOST_NETNS_PATH" ]]; then
    ip netns attach "$HODEI_CLUSTER_NETNS-host" $$ || die "cannot name the host network namespace"
  fi
}

# delete_netns: remove the cluster namespace and the host namespace's name.
delete_netns() {
  ip netns del "$HODEI_CLUSTER_NETNS" 2>/dev/null || true
  ip netns del "$HODEI_CLUSTER_NETNS-host" 2>/dev/null || true
}

# forwarder_bin: the hodei-netns-forward binary, built with cargo unless
# HODEI_NETNS_FORWARD_BIN names one.
forwarder_bin() {
  local bin="${HODEI_NETNS_FORWARD_BIN:-}" target
  if [[ -z "$bin" ]]; then
    target="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
    bin="$target/debug/hodei-netns-forward"
    if [[ ! -x "$bin" ]]; then
      log "building hodei-netns-forward (target dir $target)"
      (cd "$REPO_ROOT" && CARGO_TARGET_DIR="$target" nice -n 19 cargo build --quiet -p hodei-netns-forward) >&2 ||
        die "building hodei-netns-forward failed"
    fi
  fi
  [[ -x "$bin" ]] || die "forwarder binary $bin is missing"
  echo "$bin"
}

# start_forwarder NAME LISTEN_NETNS LISTEN_ADDR LISTEN_PORT TARGET_NETNS TARGET_PORT:
# a forwarder (hodei-netns-forward) listening on LISTEN_ADDR:LISTEN_PORT in
# LISTEN_NETNS that carries each connection to 127.0.0.1:TARGET_PORT in
# TARGET_NETNS. Records its PID as NAME.
start_forwarder() {
  local name="$1" from_ns="$2" addr="$3" port="$4" to_ns="$5" to_port="$6" bin
  bin="$(forwarder_bin)"
  mkdir -p "$LOGS" "$PIDS"
  setsid "$bin" --listen "$addr:$port" --listen-netns "$from_ns" \
    --connect "127.0.0.1:$to_port" --connect-netns "$to_ns" \
    >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

# stop_forwarder NAME: stop a forwarder started by start_forwarder.
stop_forwarder() {
  stop_pid "$1" 5
}
