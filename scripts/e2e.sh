#!/usr/bin/env bash
# Runs the Kubernetes end-to-end tests against the local control plane (started if
# needed), or against the cluster in $KUBECONFIG with --existing-cluster.
#
#   scripts/e2e.sh                     local control plane; stops it afterwards if it started it
#   scripts/e2e.sh --existing-cluster  the cluster in $KUBECONFIG; needs HODEI_E2E_WORKER_IMAGE
#   scripts/e2e.sh [--existing-cluster] NAME...  only the tests whose names contain NAME
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=cluster/lib.sh
source scripts/cluster/lib.sh

existing=0
if [[ "${1:-}" == "--existing-cluster" ]]; then
  existing=1
  shift
fi
filters=("$@")

cargo build --bins --locked
if [[ "$existing" == 0 ]]; then
  # The real node: the worker image (built without Docker) runs in containerd.
  start_local_cluster HODEI_E2E_KEEP_CLUSTER node-up.sh
  HODEI_E2E_WORKER_IMAGE="$(source scripts/images-lib.sh && echo "$HODEI_WORKER_IMAGE")"
  export HODEI_E2E_WORKER_IMAGE
  # A pod that runs and never registers (its registration stays open for the tests).
  HODEI_E2E_IDLE_IMAGE="$(source scripts/images-lib.sh && echo "$HODEI_PAUSE_IMAGE")"
  export HODEI_E2E_IDLE_IMAGE
  # Pods reach a server on the host's loopback through a forwarder at the node IP.
  export HODEI_E2E_EXPOSE="$PWD/scripts/cluster/expose-to-pods.sh"
fi
: "${KUBECONFIG:?KUBECONFIG must point at the cluster}"
: "${HODEI_E2E_WORKER_IMAGE:?set HODEI_E2E_WORKER_IMAGE to a worker image the cluster can pull}"

echo "== setup (twice: the second run must change nothing)" >&2
# The server under test runs on this host, outside the cluster: its network policies
# would keep the workers from reaching it.
scripts/setup-k8s-production.sh --kubeconfig "$KUBECONFIG" --no-network-policies
second="$(scripts/setup-k8s-production.sh --kubeconfig "$KUBECONFIG" --no-network-policies 2>&1)"
echo "$second" >&2
grep -qi "no changes" <<<"$second" || { echo "the second setup run changed something" >&2; exit 1; }

export HODEI_E2E_KUBECONFIG="$KUBECONFIG"
if [[ "$existing" == 0 ]]; then
  HODEI_E2E_SERVER_KUBECONFIG="$(scripts/cluster/kubeconfig-for.sh hodei-jobs hodei-jobs-server)"
else
  : "${HODEI_E2E_SERVER_KUBECONFIG:?set HODEI_E2E_SERVER_KUBECONFIG to a kubeconfig of the hodei-jobs-server account}"
fi
export HODEI_E2E_SERVER_KUBECONFIG

echo "== end-to-end tests" >&2
before="$(pod_forwarders)"
status=0
cargo test --locked -p hodei-bins --test k8s_e2e -- --ignored --test-threads=1 "${filters[@]}" || status=$?
# Each test server was exposed to pods through a forwarder of its own: stop those.
stop_pod_forwarders_since "$before"
exit "$status"
