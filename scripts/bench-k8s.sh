#!/usr/bin/env bash
# Runs hodei-bench against worker pods on the local test cluster's real node
# (started if needed, stopped afterwards if this script started it) and writes
# target/bench-k8s-report.json. Extra arguments go to hodei-bench, e.g.
#
#   scripts/bench-k8s.sh                                  latency, throughput, start, concurrency 50 and 200
#   scripts/bench-k8s.sh --start-jobs 20 --concurrency 10,20
#                                                         the run in docs/BENCHMARKS.md (~7 min)
#
# On a 2-CPU machine the node runs at most 20 pods of 100m at once; larger
# concurrency rounds queue in the scheduler. Job pods and baseline pods run the
# bench image (scripts/build-images.sh bench: the worker image plus hodei-bench,
# whose `emit` the output jobs run) in containerd. The measured server runs on
# this machine; pods reach it through expose-to-pods.sh, a forwarder per
# server, stopped at the end. HODEI_BENCH_KEEP_CLUSTER=1 keeps a cluster this
# script started. See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=cluster/lib.sh
source scripts/cluster/lib.sh

nice -n 19 cargo build --release --locked -p hodei-bench -p hodei-bins
release="$PWD/target/release"

images="$(scripts/build-images.sh worker pause bench)" || die "building the images failed"
eval "$images"
start_local_cluster HODEI_BENCH_KEEP_CLUSTER node-up.sh \
  "$HODEI_WORKER_ARCHIVE" "$HODEI_PAUSE_ARCHIVE" "$HODEI_BENCH_ARCHIVE"

# 200 concurrent jobs (100m/64Mi requests, 1/256Mi limits each) need more than the
# default quota of 100 pods and 100 CPUs of limits.
scripts/setup-k8s-production.sh --kubeconfig "$KUBECONFIG" --quota-pods 250 --quota-limits-cpu 300 >&2
server_kubeconfig="$(scripts/cluster/kubeconfig-for.sh hodei-jobs hodei-jobs-server)"

before="$(pod_forwarders)"

status=0
"$release/hodei-bench" --provider kubernetes \
  --k8s-namespace hodei-jobs-workers \
  --k8s-server-kubeconfig "$server_kubeconfig" \
  --k8s-worker-image "$HODEI_BENCH_IMAGE" \
  --k8s-baseline-image "$HODEI_BENCH_IMAGE" \
  --k8s-expose "$PWD/scripts/cluster/expose-to-pods.sh" \
  --out target/bench-k8s-report.json "$@" || status=$?

# Every server hodei-bench started had its own port and forwarder: stop those.
stop_pod_forwarders_since "$before"
exit "$status"
