#!/usr/bin/env bash
# Runs hodei-bench against worker pods on the local test control plane (started if
# needed, stopped afterwards if this script started it) and writes
# target/bench-k8s-report.json. Extra arguments go to hodei-bench, e.g.
#
#   scripts/bench-k8s.sh                                  latency, throughput, start, concurrency 50 and 200
#   scripts/bench-k8s.sh --scenario start --start-jobs 20
#
# The test node runs each pod's container as a process on this machine, so job commands
# (hodei-bench emit, sh, sleep) are this machine's programs; see docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=cluster/lib.sh
source scripts/cluster/lib.sh

cargo build --release --locked -p hodei-bench -p hodei-bins
release="$PWD/target/release"

# The worker image runs the release worker; the baseline image is a plain shell.
start_local_cluster HODEI_BENCH_KEEP_CLUSTER test-node-up.sh "hodei-worker:latest=$release/hodei-worker-bin" \
  "hodei-bench-shell:latest=/bin/sh"

# 200 concurrent jobs (100m/64Mi requests, 1/256Mi limits each) need more than the
# default quota of 100 pods and 100 CPUs of limits.
scripts/setup-k8s-production.sh --kubeconfig "$KUBECONFIG" --quota-pods 250 --quota-limits-cpu 300 >&2
server_kubeconfig="$(scripts/cluster/kubeconfig-for.sh hodei-jobs hodei-jobs-server)"

"$release/hodei-bench" --provider kubernetes \
  --k8s-namespace hodei-jobs-workers \
  --k8s-server-kubeconfig "$server_kubeconfig" \
  --k8s-worker-image hodei-worker:latest \
  --k8s-baseline-image hodei-bench-shell:latest \
  --out target/bench-k8s-report.json "$@"
