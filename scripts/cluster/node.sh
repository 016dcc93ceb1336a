# shellcheck shell=bash
# The real node: containerd with runc and the CNI bridge, and the kubelet, both
# inside the cluster's network namespace. Sourced by node-up.sh and down.sh
# after lib.sh, pki.sh and netns.sh; never run.

# The names of the images the node runs (HODEI_PAUSE_IMAGE, HODEI_WORKER_IMAGE).
# shellcheck source=../images-lib.sh
source "$REPO_ROOT/scripts/images-lib.sh"

NODE_DIR="$HODEI_CLUSTER_STATE/node"
CONTAINERD_DIR="$NODE_DIR/containerd"
CONTAINERD_SOCK="$CONTAINERD_DIR/containerd.sock"
KUBELET_DIR="$NODE_DIR/kubelet"
CNI_CONF_DIR="$NODE_DIR/cni/net.d"
CNI_DATA_DIR="$NODE_DIR/cni/ipam"
CNI_BIN_DIR="${HODEI_CNI_BIN_DIR:-/usr/lib/cni}"
NODE_KUBECONFIG="$HODEI_CLUSTER_STATE/kubelet.kubeconfig"
# Kernel settings the kubelet changes on start; down.sh puts them back.
KUBELET_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Host paths the kubelet, containerd and the CNI plugins write outside the state
# dir; down.sh removes those that did not exist before the node started.
NODE_HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd)

crictl() { "$CRICTL_BIN/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 30s "$@"; }
ctr_images() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io images "$@"; }

# ensure_node_packages: containerd, runc, the CNI plugins and conntrack
# from Debian's packages.
ensure_node_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x "$CNI_BIN_DIR/bridge" ]] || missing+=(containernetworking-plugins)
  command -v conntrack >/dev/null || missing+=(conntrack)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2 ||
      die "installing ${missing[*]} failed"
  fi
  for plugin in bridge host-local loopback; do
    [[ -x "$CNI_BIN_DIR/$plugin" ]] || die "CNI plugin $plugin is missing from $CNI_BIN_DIR"
  done
}

# remember_host_state: before the node first starts, note the kernel settings
# and which host paths exist, so stop_node can undo what the node changes.
remember_host_state() {
  local name path
  mkdir -p "$NODE_DIR"
  if [[ ! -f "$NODE_DIR/sysctls.saved" ]]; then
    for name in "${KUBELET_SYSCTLS[@]}"; do
      printf '%s=%s\n' "$name" "$(sysctl -n "$name")"
    done >"$NODE_DIR/sysctls.saved.tmp"
    mv "$NODE_DIR/sysctls.saved.tmp" "$NODE_DIR/sysctls.saved"
  fi
  if [[ ! -f "$NODE_DIR/host-paths.new" ]]; then
    for path in "${NODE_HOST_PATHS[@]}"; do
      [[ -e "$path" ]] || echo "$path"
    done >"$NODE_DIR/host-paths.new.tmp"
    mv "$NODE_DIR/host-paths.new.tmp" "$NODE_DIR/host-paths.new"
  fi
}

# write_node_config: containerd's config, the CNI network and the kubelet's
# config and kubeconfig.
write_node_config() {
  mkdir -p "$CONTAINERD_DIR" "$KUBELET_DIR" "$CNI_CONF_DIR" "$CNI_DATA_DIR" "$NODE_DIR/pod-logs"
  cat >"$CONTAINERD_DIR/config.toml" <<EOF
version = 2
root = "$CONTAINERD_DIR/root"
state = "$CONTAINERD_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$CONTAINERD_DIR/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$HODEI_PAUSE_IMAGE"
  # Root here may lack CAP_SYS_RESOURCE: without this, runc cannot give the
  # sandbox a negative OOM score and no pod starts.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  max_container_log_line_size = 65536

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
  discard_unpacked_layers = false

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "$CNI_BIN_DIR"
  conf_dir = "$CNI_CONF_DIR"
  max_conf_num = 1
EOF
  # No masquerade and no default route: a pod reaches the pod subnet only,
  # where the node IP is the one address that answers.
  cat >"$CNI_CONF_DIR/10-hodei-pods.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "hodei-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CNI_DATA_DIR",
        "ranges": [[{ "subnet": "$HODEI_CLUSTER_POD_CIDR", "gateway": "$HODEI_CLUSTER_NODE_IP" }]]
      }
    }
  ]
}
EOF
  cat >"$KUBELET_DIR/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $HODEI_CLUSTER_NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# No cluster DNS and no host resolver: pods resolve nothing.
resolvConf: ""
podLogsDir: $NODE_DIR/pod-logs
maxPods: 250
serializeImagePulls: false
# Images are imported, with nothing to pull them from again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 87600h
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
  nodefs.inodesFree: 2%
staticPodPath: ""
enableServer: true
EOF
  [[ -f "$NODE_KUBECONFIG" ]] || write_kubeconfig "$NODE_KUBECONFIG" "system:node:$HODEI_NODE_NAME" default --cert kubelet
}

start_containerd() {
  start_in_netns containerd containerd --config "$CONTAINERD_DIR/config.toml"
  wait_for "containerd" 30 containerd ctr --address "$CONTAINERD_SOCK" version
}

start_kubelet() {
  start_in_netns kubelet "$K8S_BIN/kubelet" \
    --config="$KUBELET_DIR/config.yaml" \
    --kubeconfig="$NODE_KUBECONFIG" \
    --root-dir="$KUBELET_DIR/root" \
    --cert-dir="$KUBELET_DIR/pki" \
    --hostname-override="$HODEI_NODE_NAME" \
    --node-ip="$HODEI_CLUSTER_NODE_IP" \
    --v=1
}

# import_images ARCHIVE...: docker- or OCI-archive images into containerd's
# Kubernetes namespace.
import_images() {
  local archive
  for archive in "$@"; do
    [[ -f "$archive" ]] || die "image archive $archive is missing"
    log "importing $(basename "$archive")"
    ctr_images import --no-unpack=false "$archive" >&2 || die "importing $archive into containerd failed"
  done
}

node_ready() {
  local out
  out="$(kubectl --kubeconfig="$ADMIN_KUBECONFIG" get node "$HODEI_NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.spec.taints[*].key}' 2>/dev/null)" || return 1
  # Ready, and the node-lifecycle controller has lifted the not-ready taint.
  [[ "$out" == "True" || "$out" == "True " ]]
}

# stop_node: the kubelet, every pod, containerd and its shims; then undo the
# node's traces on the host (mounts, cgroups, kernel settings, host paths).
stop_node() {
  stop_pid kubelet 20
  local pods
  if pid_alive containerd; then
    mapfile -t pods < <(crictl pods -q 2>/dev/null)
    if ((${#pods[@]})); then
      log "removing ${#pods[@]} pod sandbox(es)"
      crictl stopp "${pods[@]}" >/dev/null 2>&1 || true
      crictl rmp -f "${pods[@]}" >/dev/null 2>&1 || true
    fi
  fi
  stop_pid containerd 20
  kill_shims
  unmount_under "$NODE_DIR"
  remove_kubepods_cgroups
  restore_host_state
}

# kill_shims: containerd's shims (and so their containers) left running.
kill_shims() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do
    log "killing leftover shim $pid"
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# unmount_under DIR: every mount below DIR, deepest first.
unmount_under() {
  local dir="$1" mnt
  [[ -d "$dir" ]] || return 0
  while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
}

# remove_kubepods_cgroups: the kubelet's cgroups, once nothing runs in them.
remove_kubepods_cgroups() {
  local root
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$root" ]] || continue
    find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null || log "could not remove all of $root"
  done
}

restore_host_state() {
  local line path
  if [[ -f "$NODE_DIR/sysctls.saved" ]]; then
    while read -r line; do
      sysctl -q -w "$line" >/dev/null 2>&1 || log "could not restore $line"
    done <"$NODE_DIR/sysctls.saved"
    rm -f "$NODE_DIR/sysctls.saved"
  fi
  if [[ -f "$NODE_DIR/host-paths.new" ]]; then
    while read -r path; do
      [[ -n "$path" && -e "$path" ]] || continue
      unmount_under "$path"
      rm -rf "$path"
    done <"$NODE_DIR/host-paths.new"
    rm -f "$NODE_DIR/host-paths.new"
  fi
}
