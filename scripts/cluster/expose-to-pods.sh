#!/usr/bin/env bash
# Makes a server listening on the host's 127.0.0.1:PORT reachable from pods at
# the node IP, through a forwarder inside the cluster's network namespace (see
# netns.sh). Prints the URL pods dial, e.g. http://10.244.0.1:50051, which is
# the server's HODEI_ADVERTISE_ADDRESS. down.sh stops every such forwarder.
#
# Usage: expose-to-pods.sh PORT        start (or keep) the forwarder for PORT
#        expose-to-pods.sh --stop PORT stop it
#        expose-to-pods.sh --stop-all  stop every such forwarder
#        expose-to-pods.sh --check     exit 0 when the local cluster's namespace exists
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/lib.sh"
source "$here/netns.sh"

usage() { die "usage: expose-to-pods.sh [--stop] PORT | --stop-all | --check"; }
case "${1:-}" in
  --check)
    netns_exists
    exit
    ;;
  --stop-all)
    shopt -s nullglob
    for f in "$PIDS"/pod-forward-*.pid; do stop_forwarder "$(basename "$f" .pid)"; done
    exit 0
    ;;
esac
stop=0
if [[ "${1:-}" == --stop ]]; then
  stop=1
  shift
fi
port="${1:-}"
if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then usage; fi
name="pod-forward-$port"

if ((stop)); then
  stop_forwarder "$name"
  exit 0
fi
netns_exists || die "network namespace $HODEI_CLUSTER_NETNS is missing; run up.sh first"
if ! pid_alive "$name"; then
  start_forwarder "$name" "$NETNS_PATH" "$HODEI_CLUSTER_NODE_IP" "$port" "$HOST_NETNS_PATH" "$port"
  wait_for "the forwarder on $HODEI_CLUSTER_NODE_IP:$port" 10 "$name" \
    in_netns bash -c "exec 3<>/dev/tcp/$HODEI_CLUSTER_NODE_IP/$port"
fi
echo "http://$HODEI_CLUSTER_NODE_IP:$port"
