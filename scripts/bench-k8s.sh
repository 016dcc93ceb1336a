#!/usr/bin/env bash
# Runs hodei-bench against worker pods on the local test cluster's real node
# (started if needed, stopped afterwards if this script started it) and writes
# target/bench-k8s-report.json. Extra arguments go to hodei-bench, e.g.
#
#   scripts/bench-k8s.sh                                  latency, throughput, start, concurrency 50 and 200
#   scripts/bench-k8s.sh --scenario start --start-jobs 20
#
# Job pods and baseline pods run the bench image (scripts/build-images.sh bench:
# the worker image plus hodei-bench, whose `emit` the output jobs run) in
# containerd; the measured server runs on this machine and pods reach it through
# expose-to-pods.sh. Set HODEI_BENCH_KEEP_CLUSTER=1 to keep a cluster this
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

"$release/hodei-bench" --provider kubernetes \
  --k8s-namespace hodei-jobs-workers \
  --k8s-server-kubeconfig "$server_kubeconfig" \
  --k8s-worker-image "$HODEI_BENCH_IMAGE" \
  --k8s-baseline-image "$HODEI_BENCH_IMAGE" \
  --k8s-expose "$PWD/scripts/cluster/expose-to-pods.sh" \
  --out target/bench-k8s-report.json "$@"
