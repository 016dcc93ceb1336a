#!/usr/bin/env bash
# Smoke test of the local cluster and the test node: starts the cluster (if
# needed), runs a few pods in a Pod Security "restricted" namespace, checks
# what the apiserver reports, and stops the cluster again if it started it.
# Manual/CI helper, not a cargo test. Prints "N passed, N failed".
#
# Env: HODEI_SMOKE_KEEP=1 leaves the cluster and the namespace in place.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/lib.sh"

started=0
pid_alive kube-apiserver || started=1
HODEI_CLUSTER_NO_NODE=1 "$here/up.sh" >/dev/null
"$here/node-up.sh" smoke-sh=/bin/sh
export KUBECONFIG="$ADMIN_KUBECONFIG"
ns="hodei-smoke-$$"
cleanup() {
  [[ "${HODEI_SMOKE_KEEP:-0}" == 1 ]] && return
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  ((started)) && "$here/down.sh"
}
trap cleanup EXIT

passed=0 failed=0
check() {
  local what="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
    log "PASS $what"
  else
    failed=$((failed + 1))
    log "FAIL $what"
  fi
}

# wait_jsonpath POD JSONPATH EXPECTED [TIMEOUT]
wait_jsonpath() {
  local deadline=$((SECONDS + ${4:-30})) value=""
  while ((SECONDS < deadline)); do
    value="$(kubectl -n "$ns" get pod "$1" -o "jsonpath=$2" 2>/dev/null || true)"
    [[ "$value" == "$3" ]] && return 0
    sleep 0.2
  done
  log "  $1 $2: wanted '$3', last saw '$value'"
  return 1
}

# restricted_pod NAME IMAGE [ACTIVE_DEADLINE] -- ARGS...: a pod that passes
# Pod Security "restricted".
restricted_pod() {
  local name="$1" image="$2" deadline="${3:-}" args
  shift 4
  args="$(printf '"%s",' "$@")"
  kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: { name: $name }
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  ${deadline:+activeDeadlineSeconds: $deadline}
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    seccompProfile: { type: RuntimeDefault }
  containers:
    - name: main
      image: $image
      args: [${args%,}]
      env: [{ name: GREETING, value: hello }]
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: { drop: [ALL] }
YAML
}

kubectl create namespace "$ns" >/dev/null
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null

# shellcheck disable=SC2016 # $GREETING is for the pod's shell
restricted_pod exit3 smoke-sh:latest "" -- -c 'echo $GREETING; sleep 2; exit 3'
check "exit3 goes Running" wait_jsonpath exit3 '{.status.phase}' Running
check "exit3 goes Failed" wait_jsonpath exit3 '{.status.phase}' Failed
check "exit3 reports exit code 3" wait_jsonpath exit3 '{.status.containerStatuses[0].state.terminated.exitCode}' 3
check "exit3 reports reason Error" wait_jsonpath exit3 '{.status.containerStatuses[0].state.terminated.reason}' Error
uid="$(kubectl -n "$ns" get pod exit3 -o 'jsonpath={.metadata.uid}')"
check "exit3 output captured" grep -qx hello "$HODEI_CLUSTER_STATE/node/pods/${ns}_exit3_$uid/output.log"

restricted_pod ok smoke-sh "" -- -c 'exit 0'
check "ok goes Succeeded with reason Completed" wait_jsonpath ok \
  '{.status.phase}/{.status.containerStatuses[0].state.terminated.reason}' Succeeded/Completed

restricted_pod missing registry.example/nope:1.0 "" -- x
check "unknown image reports ErrImagePull" wait_jsonpath missing '{.status.containerStatuses[0].state.waiting.reason}' ErrImagePull 10
check "unknown image then ImagePullBackOff" wait_jsonpath missing '{.status.containerStatuses[0].state.waiting.reason}' ImagePullBackOff 10

restricted_pod sleeper smoke-sh "" -- -c 'exec sleep 100'
check "sleeper goes Running" wait_jsonpath sleeper '{.status.phase}' Running
pid="$(kubectl -n "$ns" get pod sleeper -o 'jsonpath={.status.containerStatuses[0].containerID}')"
pid="${pid##*://}"
check "sleeper process is alive" kill -0 "$pid"
check "deleting sleeper completes" kubectl -n "$ns" delete pod sleeper --timeout=30s
check "sleeper process is gone" bash -c "! kill -0 $pid 2>/dev/null"
check "sleeper pod is gone" bash -c "! kubectl -n $ns get pod sleeper 2>/dev/null"

restricted_pod stubborn smoke-sh "" -- -c "trap '' TERM; sleep 100 & wait"
check "stubborn goes Running" wait_jsonpath stubborn '{.status.phase}' Running
pid="$(kubectl -n "$ns" get pod stubborn -o 'jsonpath={.status.containerStatuses[0].containerID}')"
pid="${pid##*://}"
started_ms="$(date +%s%3N)"
check "deleting stubborn with --grace-period=3 completes" kubectl -n "$ns" delete pod stubborn --grace-period=3 --timeout=30s
elapsed_ms=$(($(date +%s%3N) - started_ms))
log "  stubborn deletion took ${elapsed_ms} ms"
check "stubborn got SIGKILL only after its grace" test "$elapsed_ms" -ge 2500 -a "$elapsed_ms" -le 10000
# Orphaned group members are reaped by init, which may take a moment.
check "stubborn's whole process group is gone" \
  bash -c "for _ in {1..20}; do kill -0 -- -$pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"

restricted_pod late smoke-sh 2 -- -c 'exec sleep 100'
check "activeDeadlineSeconds gives DeadlineExceeded" wait_jsonpath late '{.status.phase}/{.status.reason}' Failed/DeadlineExceeded 15

refused="$(kubectl -n "$ns" run loose --image=smoke-sh --restart=Never 2>&1 || true)"
check "a pod without restricted securityContext is refused" grep -q 'violates PodSecurity "restricted' <<<"$refused"

sa_kubeconfig="$("$here/kubeconfig-for.sh" "$ns" smoke-reader)"
check "a bare ServiceAccount cannot list pods" bash -c "! kubectl --kubeconfig=$sa_kubeconfig get pods 2>/dev/null"
kubectl -n "$ns" create role pod-reader --verb=get,list,watch --resource=pods >/dev/null
kubectl -n "$ns" create rolebinding pod-reader --role=pod-reader --serviceaccount="$ns:smoke-reader" >/dev/null
check "with a Role it can" kubectl --kubeconfig="$sa_kubeconfig" get pods -o name

echo "$passed passed, $failed failed"
((failed == 0))
