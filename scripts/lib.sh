# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared by the scripts that prepare and check a real cluster for Hodei Jobs
# (setup-k8s-production.sh, verify-k8s-jobs.sh): names, command-line parsing
# and the kubectl target. Sourced, never run; the script sets SCRIPT_NAME (its
# name in messages) before sourcing it.
#
# The local test cluster scripts have their own, cluster/lib.sh: it is about
# ports, PIDs and a cluster this machine runs, none of which applies here.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly WORKER_SA="hodei-jobs-worker"
readonly SERVER_SA="hodei-jobs-server"
readonly DNS_LABEL_RE='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'

# ---------------------------------------------------------------- parsing ----

# usage_error MESSAGE: a bad command line; names it, points at --help, exits 2.
usage_error() {
  printf '%s: %s\n' "$SCRIPT_NAME" "$1" >&2
  printf 'Run %s --help for the options.\n' "$SCRIPT_NAME" >&2
  exit 2
}

# normalize_args ARGS...: ARGS with every --flag=value split into --flag value,
# in the array "normalized", so that both spellings parse alike. Use it as
#   normalize_args "$@"; set -- ${normalized[@]+"${normalized[@]}"}
normalize_args() {
  local arg
  normalized=()
  for arg in "$@"; do
    case "$arg" in
      --*=*) normalized+=("${arg%%=*}" "${arg#*=}") ;;
      *) normalized+=("$arg") ;;
    esac
  done
}

# need_value FLAG [VALUE ...] (the parser's "$@"): a usage error unless FLAG is
# followed by a value that is not empty and not another flag.
need_value() {
  if [[ $# -lt 2 || -z "$2" || "$2" == --* ]]; then
    usage_error "$1 needs a value"
  fi
}

# check_kubeconfig FILE: a usage error unless FILE is empty (the default
# kubeconfig) or readable.
check_kubeconfig() {
  [[ -z "$1" || -r "$1" ]] || usage_error "--kubeconfig $1: file not found or not readable"
}

# ---------------------------------------------------------------- kubectl ----

# kubectl_target KUBECONFIG CONTEXT (either may be empty): sets what k runs,
# kubectl_args (kubectl, --kubeconfig, --context), and kubeconfig_args
# (kubectl and --kubeconfig only).
kubectl_target() {
  kubeconfig_args=(kubectl)
  [[ -z "$1" ]] || kubeconfig_args+=(--kubeconfig "$1")
  kubectl_args=("${kubeconfig_args[@]}")
  [[ -z "$2" ]] || kubectl_args+=(--context "$2")
}

k() { "${kubectl_args[@]}" "$@"; }

has_kubectl() { command -v kubectl >/dev/null 2>&1; }

# api_reachable ERR_FILE: true when the API server answers within 15 s;
# otherwise kubectl's error is in ERR_FILE.
api_reachable() {
  k --request-timeout=15s get --raw /version >/dev/null 2>"$1"
}
