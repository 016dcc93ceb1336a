#!/usr/bin/env bash
# Stops the test node agent, kube-controller-manager, kube-apiserver and etcd
# by the PIDs that up.sh recorded. Keeps certificates and etcd data so the next
# up.sh is quick; --purge deletes the whole state dir as well.
#
# Usage: down.sh [--purge]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
case "${1:-}" in
  --purge) purge=1 ;;
  "") ;;
  *) die "usage: down.sh [--purge]" ;;
esac

# The agent stops its containers itself on SIGTERM (it waits up to 15 s).
stop_pid node 20

reap_orphaned_containers

stop_pid kube-controller-manager 10
stop_pid kube-apiserver 15
stop_pid etcd 10

if ((purge)); then
  log "deleting state dir $HODEI_CLUSTER_STATE"
  rm -rf "$HODEI_CLUSTER_STATE"
fi
log "cluster stopped"
