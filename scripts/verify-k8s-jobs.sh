#!/usr/bin/env bash
# Checks end to end that Hodei Jobs runs jobs on Kubernetes: the worker
# namespace, accounts and quota are in place, the server answers, and a hello
# job gets a worker pod that appears, runs, succeeds and is removed.
#
# Prints PASS, FAIL or SKIP per step; exits 0 only when every step passed.
# Run with --help for the options.
set -euo pipefail

readonly SCRIPT_NAME="verify-k8s-jobs.sh"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

context=""
kubeconfig=""
namespace="hodei-jobs-workers"
server_namespace="hodei-jobs"
server_url="${HODEI_SERVER_URL:-http://localhost:50051}"
timeout="300"
pod_gone_timeout="60"
hodei_cli="${HODEI_CLI:-}"
image=""

usage() {
  cat <<'EOF'
Usage: scripts/verify-k8s-jobs.sh [options]

Runs a hello job on the Kubernetes provider and checks each step:
  cluster, namespace, accounts, quota, server reachable, job submitted,
  pod created, pod running, job succeeded, output streamed, pod removed.

Options:
  --kubeconfig FILE          kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config)
  --cluster-context NAME     kubeconfig context (alias --context; default: the current one)
  --namespace NAME           worker namespace (default: hodei-jobs-workers; must match the
                             server's HODEI_K8S_NAMESPACE)
  --server-namespace NAME    namespace of the server's ServiceAccount (default: hodei-jobs)
  --server URL               Hodei server (default: $HODEI_SERVER_URL, then http://localhost:50051)
  --hodei PATH               the hodei CLI (default: $HODEI_CLI, then target/debug/hodei,
                             target/release/hodei, then hodei on PATH)
  --image IMAGE              worker image for the job (default: the server's HODEI_WORKER_IMAGE)
  --timeout DURATION         how long the job may take from submission to its end, image
                             pull included; also its --timeout (default: 300s; e.g. 90, 90s, 5m)
  --pod-gone-timeout DURATION
                             how long the pod may take to disappear after the job ended
                             (default: 60s; raise it when the server keeps finished pods with
                             HODEI_K8S_TTL_SECONDS_AFTER_FINISHED)
  -h, --help                 show this help

Exit status: 0 when every step passed, 1 when a step failed, 2 on a bad command line.
EOF
}

# seconds DURATION: "90", "90s", "5m" or "1h" as whole seconds.
seconds() {
  local v="$1"
  case "$v" in
    *[!0-9smh]* | "" | [smh]*) return 1 ;;
    *h) v="${v%h}"; [[ "$v" =~ ^[0-9]+$ ]] && printf '%s' "$((v * 3600))" ;;
    *m) v="${v%m}"; [[ "$v" =~ ^[0-9]+$ ]] && printf '%s' "$((v * 60))" ;;
    *s) v="${v%s}"; [[ "$v" =~ ^[0-9]+$ ]] && printf '%s' "$v" ;;
    *) [[ "$v" =~ ^[0-9]+$ ]] && printf '%s' "$v" ;;
  esac
}

normalize_args "$@"
set -- ${normalized[@]+"${normalized[@]}"}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --kubeconfig) need_value "$@"; kubeconfig="$2"; shift 2 ;;
    --cluster-context | --context) need_value "$@"; context="$2"; shift 2 ;;
    --namespace) need_value "$@"; namespace="$2"; shift 2 ;;
    --server-namespace) need_value "$@"; server_namespace="$2"; shift 2 ;;
    --server) need_value "$@"; server_url="$2"; shift 2 ;;
    --hodei) need_value "$@"; hodei_cli="$2"; shift 2 ;;
    --image) need_value "$@"; image="$2"; shift 2 ;;
    --timeout) need_value "$@"; timeout="$2"; shift 2 ;;
    --pod-gone-timeout) need_value "$@"; pod_gone_timeout="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option: $1" ;;
  esac
done

[[ "$namespace" =~ $DNS_LABEL_RE ]] || usage_error "--namespace \"$namespace\" is not a valid Kubernetes name"
[[ "$server_namespace" =~ $DNS_LABEL_RE ]] || usage_error "--server-namespace \"$server_namespace\" is not a valid Kubernetes name"
if ! timeout_s="$(seconds "$timeout")" || ((timeout_s == 0)); then
  usage_error "--timeout \"$timeout\" is not a duration such as 300, 300s or 5m"
fi
if ! gone_s="$(seconds "$pod_gone_timeout")" || ((gone_s == 0)); then
  usage_error "--pod-gone-timeout \"$pod_gone_timeout\" is not a duration such as 60s"
fi
check_kubeconfig "$kubeconfig"
case "$server_url" in
  http://* | https://*) ;;
  *) usage_error "--server \"$server_url\" must be a URL such as http://localhost:50051" ;;
esac

if [[ -z "$hodei_cli" ]]; then
  for candidate in "$REPO_ROOT/target/debug/hodei" "$REPO_ROOT/target/release/hodei"; do
    if [[ -x "$candidate" ]]; then
      hodei_cli="$candidate"
      break
    fi
  done
  [[ -n "$hodei_cli" ]] || hodei_cli="$(command -v hodei 2>/dev/null || true)"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/hodei-verify.XXXXXX")"
watch_pid=""
job_id=""
job_done=0
# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
  if [[ -n "$watch_pid" ]]; then
    kill "$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
  fi
  if [[ -n "$job_id" ]] && ((job_done == 0)); then
    # Interrupted or timed out: do not leave the job (and its pod) behind.
    "$hodei_cli" --server "$server_url" cancel "$job_id" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kubectl_target "$kubeconfig" "$context"
hodei() { "$hodei_cli" --server "$server_url" "$@"; }

# ---------------------------------------------------------------- report ----

passed=0
failed=0
skipped=0
pass() { printf 'PASS  %s\n' "$1"; passed=$((passed + 1)); }
fail() { # STEP DETAIL FIX
  printf 'FAIL  %s\n' "$1"
  [[ -z "${2:-}" ]] || printf '      %s\n' "$2"
  [[ -z "${3:-}" ]] || printf '      fix: %s\n' "$3"
  failed=$((failed + 1))
}
skip() { printf 'SKIP  %s (%s)\n' "$1" "$2"; skipped=$((skipped + 1)); }
first_line() { head -n 1 "$1" 2>/dev/null | cut -c1-300; }

finish() {
  printf '\n%d passed, %d failed' "$passed" "$failed"
  ((skipped == 0)) || printf ', %d skipped' "$skipped"
  printf '\n'
  if ((failed || skipped)); then
    printf 'see docs/TROUBLESHOOTING.md for each failure above\n'
    exit 1
  fi
  exit 0
}

# ---------------------------------------------------------------- helpers ---

# The job's state from `hodei get -o json`: "phase<TAB>reason" (reason as JSON).
job_state() {
  local json
  json="$(hodei get "$job_id" -o json 2>"$tmp/get.err")" || return 1
  printf '%s' "$json" >"$tmp/job.json"
  if command -v jq >/dev/null 2>&1; then
    jq -r '[.state.phase, (.state.reason // "" | if type == "string" then . else tojson end), (.detail // "")] | @tsv' <"$tmp/job.json"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json,sys
j=json.load(sys.stdin); s=j.get("state",{}); r=s.get("reason","")
print(s.get("phase",""), r if isinstance(r,str) else json.dumps(r), j.get("detail") or "", sep="\t")' <"$tmp/job.json"
  else
    printf '%s\t\t\n' "$(sed -n 's/.*"phase": *"\([a-z_]*\)".*/\1/p' "$tmp/job.json" | head -n 1)"
  fi
}

# The label value hodei-k8s derives from an id (what hodei.io/job-id holds).
label_value() {
  local v="$1"
  v="${v//[^A-Za-z0-9._-]/-}"
  v="${v:0:63}"
  while [[ -n "$v" && ! "$v" =~ ^[A-Za-z0-9] ]]; do v="${v:1}"; done
  while [[ -n "$v" && ! "$v" =~ [A-Za-z0-9]$ ]]; do v="${v%?}"; done
  printf '%s' "$v"
}

# Lines of the pod watch for our job: EVENT NAME PHASE.
job_pod_events() {
  awk -F'|' -v id="$job_label" '$3 == id { print $1, $2, $4 }' "$tmp/watch.log" 2>/dev/null || true
}

diagnose_pod() { # POD
  [[ -n "$1" ]] || return 0
  printf '      pod %s:\n' "$1"
  k get pod "$1" -n "$namespace" -o 'jsonpath={range .status.containerStatuses[*]}        container {.name}: waiting={.state.waiting.reason} {.state.waiting.message} terminated={.state.terminated.reason} exit={.state.terminated.exitCode}{"\n"}{end}' 2>/dev/null || true
  k get events -n "$namespace" --field-selector "involvedObject.name=$1" \
    -o 'jsonpath={range .items[*]}        event {.reason}: {.message}{"\n"}{end}' 2>/dev/null | tail -n 8 || true
}

# ---------------------------------------------------------------- steps -----

printf 'Hodei Jobs on Kubernetes: namespace %s, server %s\n\n' "$namespace" "$server_url"

# 1. Cluster.
if ! has_kubectl; then
  fail "kubectl is installed" "kubectl was not found on PATH" "install kubectl 1.27 or newer"
  finish
fi
if api_reachable "$tmp/err"; then
  pass "cluster reachable (context $(k config current-context 2>/dev/null || echo "${context:-?}"))"
else
  fail "cluster reachable" "$(first_line "$tmp/err")" "check --kubeconfig/--cluster-context and 'kubectl cluster-info'"
  finish
fi

# 2. Namespace.
if v="$(k get namespace "$namespace" -o 'jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}' 2>"$tmp/err")"; then
  if [[ "$v" == restricted ]]; then
    pass "namespace $namespace exists (Pod Security enforce=restricted)"
  else
    fail "namespace $namespace enforces Pod Security restricted" "enforce label is '${v:-unset}'" "scripts/setup-k8s-production.sh --namespace $namespace"
  fi
else
  fail "namespace $namespace exists" "$(first_line "$tmp/err")" "scripts/setup-k8s-production.sh --namespace $namespace"
fi

# 3. Accounts.
if v="$(k get serviceaccount "$WORKER_SA" -n "$namespace" -o 'jsonpath={.automountServiceAccountToken}' 2>"$tmp/err")"; then
  if [[ "$v" == false ]]; then
    pass "worker ServiceAccount $namespace/$WORKER_SA exists (token not mounted)"
  else
    fail "worker ServiceAccount $namespace/$WORKER_SA does not mount its token" "automountServiceAccountToken=${v:-unset}" "scripts/setup-k8s-production.sh --namespace $namespace"
  fi
else
  fail "worker ServiceAccount $namespace/$WORKER_SA exists" "$(first_line "$tmp/err")" "scripts/setup-k8s-production.sh --namespace $namespace"
fi
if v="$(k get rolebinding "$SERVER_SA" -n "$namespace" -o 'jsonpath={range .subjects[*]}{.namespace}/{.name} {end}' 2>"$tmp/err")" &&
  [[ " $v " == *" $server_namespace/$SERVER_SA "* ]]; then
  pass "server account $server_namespace/$SERVER_SA is bound to its Role in $namespace"
else
  fail "server account $server_namespace/$SERVER_SA is bound to its Role in $namespace" \
    "${v:+bound: $v}$(first_line "$tmp/err")" \
    "scripts/setup-k8s-production.sh --namespace $namespace --server-namespace $server_namespace"
fi

# 4. Quota: room for one more pod.
if v="$(k get resourcequota -n "$namespace" -o 'jsonpath={range .items[*]}{.metadata.name} {.status.used.pods} {.spec.hard.pods}{"\n"}{end}' 2>"$tmp/err")" && [[ -n "$v" ]]; then
  full=""
  while read -r name used hard; do
    [[ -n "$hard" && -n "$used" ]] || continue
    ((used < hard)) || full="$full $name ($used/$hard pods)"
  done <<<"$v"
  if [[ -z "$full" ]]; then
    pass "ResourceQuota in $namespace has room ($(printf '%s' "$v" | awk '{printf "%s%s %s/%s pods", (NR > 1 ? ", " : ""), $1, $2, $3}'))"
  else
    fail "ResourceQuota in $namespace has room for a pod" "full:$full" \
      "wait for jobs to end, delete stale pods (just k8s-cleanup), or raise it: scripts/setup-k8s-production.sh --quota-pods N"
  fi
else
  fail "ResourceQuota exists in $namespace" "${v:-none found}$(first_line "$tmp/err")" "scripts/setup-k8s-production.sh --namespace $namespace"
fi

# 5. Server.
if [[ -z "$hodei_cli" || ! -x "$hodei_cli" ]]; then
  fail "hodei CLI found" "${hodei_cli:-not in target/ nor on PATH}" "cargo build --bins, or pass --hodei PATH"
  for s in "server reachable" "job submitted" "worker pod created" "worker pod running" "job succeeded" "job output streamed" "worker pod removed"; do
    skip "$s" "no hodei CLI"
  done
  finish
fi
if hodei list --limit 1 >/dev/null 2>"$tmp/err"; then
  pass "server reachable at $server_url (hodei list)"
else
  fail "server reachable at $server_url" "$(first_line "$tmp/err")" "start it (just server-k8s, or kubectl -n $server_namespace port-forward svc/hodei-server 50051) or pass --server URL"
  for s in "job submitted" "worker pod created" "worker pod running" "job succeeded" "job output streamed" "worker pod removed"; do
    skip "$s" "server unreachable"
  done
  finish
fi

# 6. Submit, watching worker pods from before the job exists so no event is missed.
# Fields are separated by '|': kubectl turns tabs in watch output into spaces.
k get pods -n "$namespace" -l hodei.io/managed=true --watch --output-watch-events \
  -o 'jsonpath={.type}{"|"}{.object.metadata.name}{"|"}{.object.metadata.labels.hodei\.io/job-id}{"|"}{.object.status.phase}{"\n"}' \
  >"$tmp/watch.log" 2>"$tmp/watch.err" &
watch_pid=$!
sleep 1
if ! kill -0 "$watch_pid" 2>/dev/null; then
  fail "watching worker pods in $namespace" "$(first_line "$tmp/watch.err")" "your account needs list/watch on pods in $namespace"
  watch_pid=""
fi

run_args=(run --provider kubernetes --detach --timeout "${timeout_s}s")
[[ -z "$image" ]] || run_args+=(--image "$image")
started=$SECONDS
if job_id="$(hodei "${run_args[@]}" -- sh -c 'echo hello; sleep 2; echo done' 2>"$tmp/err")" && [[ -n "$job_id" ]]; then
  job_id="$(printf '%s' "$job_id" | tr -d '[:space:]')"
  pass "job submitted ($job_id)"
else
  job_id=""
  fail "job submitted (hodei run --provider kubernetes)" "$(first_line "$tmp/err")" \
    "an 'invalid provider' error means the server runs without HODEI_KUBERNETES_ENABLED=1; see docs/TROUBLESHOOTING.md"
  for s in "worker pod created" "worker pod running" "job succeeded" "job output streamed" "worker pod removed"; do
    skip "$s" "no job"
  done
  finish
fi
job_label="$(label_value "$job_id")"

# 7. Follow the job until it ends, noting what the pod did on the way.
phase=""
reason=""
detail=""
deadline=$((started + timeout_s + 30))
while ((SECONDS < deadline)); do
  if state="$(job_state)"; then
    IFS=$'\t' read -r phase reason detail <<<"$state" || true
    case "$phase" in
      succeeded | failed | cancelled | timed_out) break ;;
    esac
  fi
  sleep 1
done
case "$phase" in
  succeeded | failed | cancelled | timed_out) job_done=1 ;;
esac

pod_name="$(job_pod_events | awk '{ print $2; exit }')"
if [[ -z "$watch_pid" ]]; then
  skip "worker pod created" "could not watch pods"
  skip "worker pod running" "could not watch pods"
elif [[ -n "$pod_name" ]]; then
  pass "worker pod created ($pod_name, label hodei.io/job-id=$job_label)"
  if job_pod_events | awk '$3 == "Running" || $3 == "Succeeded" { found = 1 } END { exit !found }'; then
    pass "worker pod running"
  else
    fail "worker pod running" "phases seen: $(job_pod_events | awk '{ printf "%s ", $3 }')" "see the pod diagnosis below and docs/TROUBLESHOOTING.md"
    diagnose_pod "$pod_name"
  fi
else
  fail "worker pod created (label hodei.io/job-id=$job_label)" \
    "no pod appeared in $namespace; job phase ${phase:-unknown}${detail:+, detail: $detail}" \
    "check that the server's HODEI_K8S_NAMESPACE is $namespace, and its log for 'forbidden' or 'quota' (docs/TROUBLESHOOTING.md, \"Pods are not created\")"
  skip "worker pod running" "no pod"
fi

if [[ "$phase" == succeeded ]]; then
  pass "job succeeded in $((SECONDS - started))s"
elif [[ -n "$phase" && "$job_done" == 1 ]]; then
  fail "job succeeded" "job ended $phase${reason:+: $reason}" "docs/TROUBLESHOOTING.md explains each reason"
  diagnose_pod "$pod_name"
else
  fail "job succeeded within ${timeout_s}s" "still ${phase:-unknown}${detail:+ ($detail)}; cancelling it" \
    "a slow image pull or a full quota keeps jobs waiting; see docs/TROUBLESHOOTING.md"
  diagnose_pod "$pod_name"
fi

# 8. Output.
if ((job_done)); then
  if hodei logs "$job_id" >"$tmp/logs.out" 2>"$tmp/err" && grep -qx hello "$tmp/logs.out" && grep -qx "done" "$tmp/logs.out"; then
    pass "job output streamed (hello, done)"
  else
    fail "job output streamed (hello, done)" "got: $(tr '\n' ' ' <"$tmp/logs.out" | cut -c1-200)$(first_line "$tmp/err")" \
      "the worker could not stream output; check the server log for this job id"
  fi
else
  skip "job output streamed" "job did not end"
fi

# 9. The pod goes away.
if [[ -z "$pod_name" ]]; then
  skip "worker pod removed" "no pod seen"
else
  gone_deadline=$((SECONDS + gone_s))
  gone=0
  while ((SECONDS < gone_deadline)); do
    if job_pod_events | awk '$1 == "DELETED" { found = 1 } END { exit !found }'; then
      gone=1
      break
    fi
    if ! k get pod "$pod_name" -n "$namespace" >/dev/null 2>"$tmp/err" && grep -q NotFound "$tmp/err"; then
      gone=1
      break
    fi
    sleep 1
  done
  if ((gone)); then
    pass "worker pod removed"
  else
    fail "worker pod removed within ${gone_s}s" "$pod_name is still there" \
      "if the server sets HODEI_K8S_TTL_SECONDS_AFTER_FINISHED, pass a larger --pod-gone-timeout; otherwise check the server log for delete errors (RBAC: delete pods)"
  fi
fi

finish
