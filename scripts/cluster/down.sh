#!/usr/bin/env bash
# Stops the local cluster by the PIDs the scripts recorded: the node (kubelet,
# every pod, containerd and its shims), the scheduler, the controller manager,
# the API server, its forwarders and etcd. Then it undoes the node's traces on
# the host (mounts, cgroups, kernel settings, host paths) and deletes the
# cluster's network namespace. Keeps certificates and etcd data so the next
# up.sh is quick; --purge deletes the whole state dir as well.
#
# Usage: down.sh [--purge]
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/lib.sh"
source "$here/pki.sh"
source "$here/netns.sh"
source "$here/node.sh"

purge=0
case "${1:-}" in
  --purge) purge=1 ;;
  "") ;;
  *) die "usage: down.sh [--purge]" ;;
esac

stop_node

"$here/expose-to-pods.sh" --stop-all
stop_pid kube-scheduler 10
stop_pid kube-controller-manager 10
stop_forwarder api-forwarder
stop_pid kube-apiserver 15
stop_pid etcd 10
delete_netns

if ((purge)); then
  log "deleting state dir $HODEI_CLUSTER_STATE"
  unmount_under "$HODEI_CLUSTER_STATE"
  rm -rf "$HODEI_CLUSTER_STATE"
fi
log "cluster stopped"
