#!/usr/bin/env bash
# (Re)starts the real node in the cluster's network namespace: containerd
# (Debian's package, with runc and the CNI bridge plugins) and the kubelet.
# Imports the pause image and any other image archives given, and waits until
# the node is Ready and schedulable.
#
# Usage: node-up.sh [IMAGE_ARCHIVE ...]
# Env:   HODEI_NODE_IMAGES   comma-separated image archives (used when no
#                            arguments are given). With neither, the worker
#                            and pause images are built (scripts/build-images.sh,
#                            cached) and imported. The pause image
#                            ($HODEI_PAUSE_IMAGE) must be among them or
#                            already imported.
# Output: logs in $HODEI_CLUSTER_STATE/logs/{containerd,kubelet}.log.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/lib.sh"
source "$here/pki.sh"
source "$here/netns.sh"
source "$here/node.sh"

[[ -f "$PKI/kubelet.crt" ]] || die "no cluster state in $HODEI_CLUSTER_STATE; run up.sh first"
netns_exists || die "network namespace $HODEI_CLUSTER_NETNS is missing; run up.sh first"
[[ -x "$K8S_BIN/kubelet" && -x "$CRICTL_BIN/crictl" ]] || "$here/build.sh"
ensure_node_packages

images=("$@")
if ((${#images[@]} == 0)) && [[ -n "${HODEI_NODE_IMAGES:-}" ]]; then
  IFS=',' read -ra images <<<"$HODEI_NODE_IMAGES"
fi
if ((${#images[@]} == 0)); then
  built="$("$REPO_ROOT/scripts/build-images.sh")" || die "building the worker and pause images failed"
  eval "$built"
  images=("$HODEI_WORKER_ARCHIVE" "$HODEI_PAUSE_ARCHIVE")
fi

stop_node
remember_host_state
write_node_config
mkdir -p "$LOGS" "$PIDS"
start_containerd
import_images "${images[@]}"
pause="$(ctr_images check "name==$HODEI_PAUSE_IMAGE")"
[[ -n "$pause" ]] ||
  die "the pause image $HODEI_PAUSE_IMAGE is not imported; build it with scripts/build-images.sh"
start_kubelet
wait_for "node $HODEI_NODE_NAME Ready" 90 kubelet node_ready
log "node $HODEI_NODE_NAME ready (node IP $HODEI_CLUSTER_NODE_IP)"
