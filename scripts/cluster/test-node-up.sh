#!/usr/bin/env bash
# (Re)starts the test node agent against the running local cluster and waits
# until it is registered and watching pods. up.sh calls it; tests call it
# again to restart the node with another image map.
#
# Usage: node-up.sh [IMAGE=PATH ...]
# Env:   HODEI_TEST_NODE_IMAGE_MAP  comma-separated IMAGE=PATH entries (used
#                                   when no arguments are given)
#        HODEI_TEST_NODE_BIN        prebuilt agent binary; otherwise it is
#                                   built with cargo into $CARGO_TARGET_DIR
#                                   (default <repo>/target)
# Output: PID in $HODEI_CLUSTER_STATE/pids/node.pid, log in logs/node.log,
#         per-pod dirs (scratch, output.log) in $HODEI_CLUSTER_STATE/node/pods.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/lib.sh"
source "$here/pki.sh"

[[ -f "$PKI/test-node.crt" ]] || die "no cluster state in $HODEI_CLUSTER_STATE; run up.sh first"
stop_pid node 20
reap_orphaned_containers

bin="${HODEI_TEST_NODE_BIN:-}"
if [[ -z "$bin" ]]; then
  target="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
  log "building hodei-test-node (target dir $target)"
  (cd "$REPO_ROOT" && CARGO_TARGET_DIR="$target" nice -n 19 cargo build --quiet -p hodei-test-node)
  bin="$target/debug/hodei-test-node"
fi
[[ -x "$bin" ]] || die "test node binary $bin is missing"

map=("$@")
if ((${#map[@]} == 0)) && [[ -n "${HODEI_TEST_NODE_IMAGE_MAP:-}" ]]; then
  IFS=',' read -ra map <<<"$HODEI_TEST_NODE_IMAGE_MAP"
fi
args=()
for entry in "${map[@]}"; do args+=(--image-map "$entry"); done

node_kubeconfig="$HODEI_CLUSTER_STATE/test-node.kubeconfig"
work="$HODEI_CLUSTER_STATE/node"
ready="$work/ready"
mkdir -p "$work" "$LOGS" "$PIDS"
[[ -f "$node_kubeconfig" ]] || write_kubeconfig "$node_kubeconfig" hodei-test-node default --cert test-node
rm -f "$ready"

log "starting test node $HODEI_TEST_NODE_NAME (log: $LOGS/node.log; images: ${map[*]:-none})"
# The agent reads only its flags: keep a stray KUBECONFIG or image map in the
# caller's environment from overriding them.
env -u HODEI_TEST_NODE_IMAGE_MAP -u HODEI_TEST_NODE_KUBECONFIG \
  RUST_LOG="${RUST_LOG:-info}" setsid "$bin" \
  --node-name "$HODEI_TEST_NODE_NAME" \
  --kubeconfig "$node_kubeconfig" \
  --work-dir "$work" \
  --ready-file "$ready" \
  "${args[@]}" >"$LOGS/node.log" 2>&1 </dev/null &
echo $! >"$PIDS/node.pid"
wait_for "test node registration" 60 node test -f "$ready"
log "test node ready"
