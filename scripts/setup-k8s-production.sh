#!/usr/bin/env bash
# Prepares a Kubernetes cluster for Hodei Jobs: the worker namespace (Pod
# Security "restricted"), the worker and server ServiceAccounts, the server's
# Role and RoleBinding in the worker namespace, its ClusterRole to create
# TokenReviews (to check worker identities), a ResourceQuota, a LimitRange
# and the network policies; optionally a TLS certificate for the server (and
# its CA for the workers), an image pull secret, and the worker and server
# images.
#
# The manifests are k8s/namespaces.yaml, k8s/rbac.yaml, k8s/quota.yaml and
# k8s/network-policies.yaml: this script only substitutes the values marked
# "# @name" there. Re-running it is safe: it compares with `kubectl diff` and
# changes only what differs ("no changes" when nothing does).
#
# Run with --help for the options.
set -euo pipefail

readonly SCRIPT_NAME="setup-k8s-production.sh"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
readonly K8S_DIR="$REPO_ROOT/k8s"
readonly FIELD_MANAGER="hodei-jobs-setup"
readonly SERVER_ROLE="hodei-jobs-server"
readonly REVIEW_ROLE="hodei-jobs-server-token-review"
readonly TLS_SECRET="hodei-server-tls"
readonly CA_CONFIGMAP="hodei-server-ca"

# ---------------------------------------------------------------- options ----

context=""
kubeconfig=""
worker_ns="hodei-jobs-workers"
server_ns="hodei-jobs"
build_image=0
registry_url=""
image_tag=""
pull_secret=""
credentials_file=""
network_policies=1
generate_tls=0
dry_run=0
verify_only=0
quota_pods="100"
quota_requests_cpu="50"
quota_limits_cpu="100"
quota_requests_memory="200Gi"
quota_limits_memory="400Gi"
quota_requests_ephemeral_storage="100Gi"
quota_limits_ephemeral_storage="1000Gi"

usage() {
  cat <<'EOF'
Usage: scripts/setup-k8s-production.sh [options]

Prepares a cluster for Hodei Jobs. Idempotent: a second run reports "no changes".

Target cluster:
  --kubeconfig FILE            kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config)
  --cluster-context NAME       kubeconfig context to use (default: the current one)

What to create:
  --namespace NAME             worker namespace (default: hodei-jobs-workers)
  --server-namespace NAME      namespace of the server and its ServiceAccount (default: hodei-jobs)
  --quota-pods N               ResourceQuota pods (default: 100)
  --quota-requests-cpu Q       ResourceQuota requests.cpu (default: 50)
  --quota-limits-cpu Q         ResourceQuota limits.cpu (default: 100)
  --quota-requests-memory Q    ResourceQuota requests.memory (default: 200Gi)
  --quota-limits-memory Q      ResourceQuota limits.memory (default: 400Gi)
  --quota-requests-ephemeral-storage Q
                               ResourceQuota requests.ephemeral-storage (default: 100Gi)
  --quota-limits-ephemeral-storage Q
                               ResourceQuota limits.ephemeral-storage (default: 1000Gi)
  --no-network-policies        do not apply k8s/network-policies.yaml (applied by default:
                               workers may reach only DNS and the in-cluster server's worker
                               port 50052; the job port 50051 accepts namespaces labeled
                               hodei.io/job-api-access=true). Skip them when the server runs
                               outside the cluster
  --generate-tls               without cert-manager: create a CA and a server certificate with
                               openssl into the Secret hodei-server-tls (server namespace; kept
                               when it exists, delete it to issue a new one) and the CA into the
                               ConfigMap hodei-server-ca (key ca.crt, worker namespace)

Images and registry:
  --build-image                build hodei-worker and hodei-server from Dockerfile.worker and
                               Dockerfile.server (needs docker, or $HODEI_CONTAINER_TOOL, e.g. podman)
  --image-tag TAG              tag of the built images (default: the workspace version)
  --registry-url HOST[/PATH]   registry to push the built images to, and the registry the
                               pull secret is for, e.g. registry.example.com/hodei
  --image-pull-secret NAME     create or update a docker-registry Secret NAME in the worker
                               namespace; then set HODEI_K8S_IMAGE_PULL_SECRET=NAME on the server
  --registry-credentials-file FILE
                               registry credentials: a Docker config.json ({"auths": ...}) or
                               lines "username=..." and "password=...". Without it they are read
                               from HODEI_REGISTRY_USERNAME and HODEI_REGISTRY_PASSWORD.
                               Credentials are never accepted as command-line arguments.

Modes:
  --dry-run                    print the manifests on stdout and change nothing; when the cluster
                               is reachable, also validate them with a server-side dry run and
                               show the diff on stderr
  --verify                     change nothing: report what is present and check both accounts'
                               permissions with `kubectl auth can-i` (exit 1 if anything is wrong)
  -h, --help                   show this help

Examples:
  scripts/setup-k8s-production.sh --cluster-context kind-hodei --dry-run
  scripts/setup-k8s-production.sh --cluster-context kind-hodei
  HODEI_REGISTRY_USERNAME=ci read -rs HODEI_REGISTRY_PASSWORD; export HODEI_REGISTRY_USERNAME HODEI_REGISTRY_PASSWORD
  scripts/setup-k8s-production.sh --registry-url registry.example.com/hodei --image-pull-secret hodei-registry
  scripts/setup-k8s-production.sh --verify

Exit status: 0 on success, 1 when a step or check failed (the message names it and how to
fix it), 2 on a bad command line.
EOF
}

# ---------------------------------------------------------------- output -----

info() { printf '%s\n' "$*" >&2; }
step() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }

# fail WHAT FIX...: names what failed and how to fix it, then exits 1.
fail() {
  local what="$1"
  shift
  printf 'error: %s\n' "$what" >&2
  local line
  for line in "$@"; do
    printf '  fix: %s\n' "$line" >&2
  done
  exit 1
}

# ---------------------------------------------------------------- parsing ----

normalize_args "$@"
set -- ${normalized[@]+"${normalized[@]}"}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --cluster-context | --context) need_value "$@"; context="$2"; shift 2 ;;
    --kubeconfig) need_value "$@"; kubeconfig="$2"; shift 2 ;;
    --namespace) need_value "$@"; worker_ns="$2"; shift 2 ;;
    --server-namespace) need_value "$@"; server_ns="$2"; shift 2 ;;
    --build-image) build_image=1; shift ;;
    --image-tag) need_value "$@"; image_tag="$2"; shift 2 ;;
    --registry-url) need_value "$@"; registry_url="$2"; shift 2 ;;
    --image-pull-secret) need_value "$@"; pull_secret="$2"; shift 2 ;;
    --registry-credentials-file) need_value "$@"; credentials_file="$2"; shift 2 ;;
    --network-policies) network_policies=1; shift ;;
    --no-network-policies) network_policies=0; shift ;;
    --generate-tls) generate_tls=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --verify) verify_only=1; shift ;;
    --quota-pods) need_value "$@"; quota_pods="$2"; shift 2 ;;
    --quota-requests-cpu) need_value "$@"; quota_requests_cpu="$2"; shift 2 ;;
    --quota-limits-cpu) need_value "$@"; quota_limits_cpu="$2"; shift 2 ;;
    --quota-requests-memory) need_value "$@"; quota_requests_memory="$2"; shift 2 ;;
    --quota-limits-memory) need_value "$@"; quota_limits_memory="$2"; shift 2 ;;
    --quota-requests-ephemeral-storage) need_value "$@"; quota_requests_ephemeral_storage="$2"; shift 2 ;;
    --quota-limits-ephemeral-storage) need_value "$@"; quota_limits_ephemeral_storage="$2"; shift 2 ;;
    --registry-password | --registry-username | --password | --username | --docker-password)
      usage_error "$1: credentials are never taken from the command line (they would show in ps and in shell history); export HODEI_REGISTRY_USERNAME and HODEI_REGISTRY_PASSWORD, or use --registry-credentials-file FILE"
      ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option: $1" ;;
  esac
done

# ---------------------------------------------------------------- checks -----

readonly QUANTITY_RE='^([0-9]+([.][0-9]+)?|[.][0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$'
readonly COUNT_RE='^[1-9][0-9]{0,8}$'
readonly TAG_RE='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'
readonly REGISTRY_RE='^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?$'

check_label() { # FLAG VALUE
  [[ "$2" =~ $DNS_LABEL_RE ]] ||
    usage_error "$1 \"$2\" is not a valid Kubernetes name (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
}
check_quantity() { # FLAG VALUE
  [[ "$2" =~ $QUANTITY_RE ]] ||
    usage_error "$1 \"$2\" is not a Kubernetes quantity (e.g. 50, 500m, 200Gi)"
}

check_label --namespace "$worker_ns"
check_label --server-namespace "$server_ns"
if [[ "$worker_ns" == "$server_ns" ]]; then
  usage_error "--namespace and --server-namespace must differ: worker pods run job code and get a namespace of their own, with a quota and network policies that must not apply to the server"
fi
[[ "$quota_pods" =~ $COUNT_RE ]] || usage_error "--quota-pods \"$quota_pods\" is not a positive whole number"
check_quantity --quota-requests-cpu "$quota_requests_cpu"
check_quantity --quota-limits-cpu "$quota_limits_cpu"
check_quantity --quota-requests-memory "$quota_requests_memory"
check_quantity --quota-limits-memory "$quota_limits_memory"
check_quantity --quota-requests-ephemeral-storage "$quota_requests_ephemeral_storage"
check_quantity --quota-limits-ephemeral-storage "$quota_limits_ephemeral_storage"
[[ -z "$pull_secret" ]] || check_label --image-pull-secret "$pull_secret"

registry_url="${registry_url#https://}"
registry_url="${registry_url#http://}"
registry_url="${registry_url%/}"
if [[ -n "$registry_url" && ! "$registry_url" =~ $REGISTRY_RE ]]; then
  usage_error "--registry-url \"$registry_url\" is not a registry address such as registry.example.com or registry.example.com:5000/team"
fi
registry_host="${registry_url%%/*}"

if [[ -z "$image_tag" ]]; then
  image_tag="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -n 1)"
  image_tag="${image_tag:-dev}"
fi
[[ "$image_tag" =~ $TAG_RE ]] || usage_error "--image-tag \"$image_tag\" is not a valid image tag"

if [[ -n "$credentials_file" && -z "$pull_secret" && -z "$registry_url" ]]; then
  usage_error "--registry-credentials-file is used with --image-pull-secret or --registry-url"
fi
check_kubeconfig "$kubeconfig"
if ((verify_only && dry_run)); then
  usage_error "--verify and --dry-run do not go together: --verify changes nothing already"
fi
if ((verify_only && build_image)); then
  usage_error "--verify and --build-image do not go together: --verify changes nothing"
fi

worker_image="hodei-worker:$image_tag"
server_image="hodei-server:$image_tag"
if [[ -n "$registry_url" ]]; then
  worker_image="$registry_url/$worker_image"
  server_image="$registry_url/$server_image"
fi

registry_user=""
registry_pass=""
dockerconfig=""
stdin_doc=""

tmp="$(mktemp -d "${TMPDIR:-/tmp}/hodei-setup.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# ---------------------------------------------------------------- kubectl ----

kubectl_target "$kubeconfig" "$context"

require_kubectl() {
  has_kubectl ||
    fail "kubectl is not installed" "install kubectl 1.27 or newer (https://kubernetes.io/docs/tasks/tools/) and put it on PATH"
}

# The kubeconfig must name the context; checked before any request so a typo
# never falls back to another cluster.
check_context() {
  [[ -n "$context" ]] || return 0
  local known
  known="$("${kubeconfig_args[@]}" config get-contexts -o name 2>/dev/null || true)"
  if ! printf '%s\n' "$known" | grep -qxF -- "$context"; then
    known="$(printf '%s' "$known" | tr '\n' ' ')"
    fail "context \"$context\" is not in the kubeconfig${kubeconfig:+ $kubeconfig}" \
      "pick one of: ${known:-<none; the kubeconfig has no contexts>}" \
      "or point --kubeconfig at the file that has it"
  fi
}

# Explains a kubectl error by its usual causes.
explain_kubectl_error() { # STDERR_FILE
  local text
  text="$(cat "$1")"
  printf '%s\n' "$text" | sed 's/^/  kubectl: /' >&2
  case "$text" in
    *"exceeded quota"*)
      info "  hint: a ResourceQuota refused it; see kubectl -n $worker_ns describe resourcequota" ;;
    *"cannot impersonate"*)
      info "  hint: checking another account's rights needs the 'impersonate' verb; run this as a cluster admin" ;;
    *forbidden* | *Forbidden*)
      info "  hint: your account lacks a permission; run this as a cluster admin, or ask one to grant the verb named above" ;;
    *"connection refused"* | *"no such host"* | *"i/o timeout"* | *"Unable to connect"* | *"deadline exceeded"*)
      info "  hint: the API server is not reachable; check --cluster-context/--kubeconfig, VPN and 'kubectl cluster-info'" ;;
    *Unauthorized* | *"provide credentials"*)
      info "  hint: your credentials were refused or expired; log in to the cluster again" ;;
    *"not found"*)
      info "  hint: something this depends on does not exist yet; run the setup without --verify first" ;;
  esac
}

describe_target() {
  local ctx server
  ctx="$(k config current-context 2>/dev/null || true)"
  [[ -z "$context" ]] || ctx="$context"
  server="$(k config view --minify -o 'jsonpath={.clusters[0].cluster.server}' 2>/dev/null || true)"
  info "target: context ${ctx:-<none>} (API server ${server:-unknown})"
}

# connect FIX: checks that kubectl is there and the context exists, names the
# target and stops with FIX unless its API server answers.
connect() {
  require_kubectl
  check_context
  describe_target
  api_reachable "$tmp/reach.err" || {
    info "error: the cluster is not reachable:"
    explain_kubectl_error "$tmp/reach.err"
    fail "cannot reach the Kubernetes API server" "$1"
  }
}

# ---------------------------------------------------------------- render -----

# render FILE...: the templates with the "# @name" values substituted and the
# markers removed, joined into one multi-document YAML stream.
render() {
  local file first=1
  sub() { # MARKER VALUE -> sed expression (keeps optional quotes around the value)
    printf 's|^\\(.*: \\)\\("\\{0,1\\}\\)[^" ]*\\("\\{0,1\\}\\) *# @%s$|\\1\\2%s\\3|' "$1" "$2"
  }
  for file in "$@"; do
    [[ -r "$K8S_DIR/$file" ]] || fail "template k8s/$file is missing" "run the script from a complete checkout of the repository"
    ((first)) || printf -- '---\n'
    first=0
    sed -e "$(sub worker-namespace "$worker_ns")" \
      -e "$(sub server-namespace "$server_ns")" \
      -e "$(sub review-binding "$REVIEW_ROLE-$server_ns")" \
      -e "$(sub quota-pods "$quota_pods")" \
      -e "$(sub quota-requests-cpu "$quota_requests_cpu")" \
      -e "$(sub quota-limits-cpu "$quota_limits_cpu")" \
      -e "$(sub quota-requests-memory "$quota_requests_memory")" \
      -e "$(sub quota-limits-memory "$quota_limits_memory")" \
      -e "$(sub quota-requests-ephemeral-storage "$quota_requests_ephemeral_storage")" \
      -e "$(sub quota-limits-ephemeral-storage "$quota_limits_ephemeral_storage")" \
      "$K8S_DIR/$file"
  done
}

render_all() {
  render namespaces.yaml >"$tmp/namespaces.yaml"
  local rest=(rbac.yaml quota.yaml)
  ((network_policies == 0)) || rest+=(network-policies.yaml)
  render "${rest[@]}" >"$tmp/resources.yaml"
  local leftover
  leftover="$(grep -hE '^[^#]*# @[a-z-]+[[:space:]]*$' "$tmp/namespaces.yaml" "$tmp/resources.yaml" || true)"
  [[ -z "$leftover" ]] || fail "a template line has a \"# @\" marker this script does not know: $leftover" \
    "markers must end a 'key: value' line and be one of the names this script substitutes"
}

# ---------------------------------------------------------------- secrets ----

json_escape() { # STRING -> JSON string body
  local s="$1"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  printf '%s' "$s"
}

b64() { base64 | tr -d '\n'; }

# Sets dockerconfig (the .dockerconfigjson content) from the file or the env.
load_registry_credentials() {
  local user="" pass="" line key value
  dockerconfig=""
  if [[ -n "$credentials_file" ]]; then
    [[ -r "$credentials_file" ]] || fail "--registry-credentials-file $credentials_file cannot be read" "check the path and its permissions"
    if [[ -n "$(find "$credentials_file" -prune \( -perm -g=r -o -perm -o=r \) 2>/dev/null)" ]]; then
      warn "$credentials_file is readable by other users; chmod 600 it"
    fi
    if grep -q '^[[:space:]]*{' "$credentials_file"; then
      grep -q '"auths"' "$credentials_file" ||
        fail "$credentials_file looks like JSON but has no \"auths\" key" "use a Docker config.json (as written by 'docker login') or username=/password= lines"
      dockerconfig="$(cat "$credentials_file")"
      return 0
    fi
    while IFS= read -r line || [[ -n "$line" ]]; do
      line="${line%$'\r'}"
      [[ "$line" == *=* ]] || continue
      key="${line%%=*}"
      value="${line#*=}"
      case "$key" in
        username | HODEI_REGISTRY_USERNAME) user="$value" ;;
        password | HODEI_REGISTRY_PASSWORD) pass="$value" ;;
      esac
    done <"$credentials_file"
    [[ -n "$user" && -n "$pass" ]] ||
      fail "$credentials_file has no username= and password= lines" "write them one per line, e.g. username=ci and password=<token>; chmod 600 the file"
  else
    user="${HODEI_REGISTRY_USERNAME:-}"
    pass="${HODEI_REGISTRY_PASSWORD:-}"
    [[ -n "$user" && -n "$pass" ]] ||
      fail "--image-pull-secret $pull_secret needs registry credentials, and none were found" \
        "export HODEI_REGISTRY_USERNAME=<user>; read -rs HODEI_REGISTRY_PASSWORD; export HODEI_REGISTRY_PASSWORD" \
        "or pass --registry-credentials-file FILE (username=/password= lines, or a Docker config.json)"
  fi
  [[ -n "$registry_host" ]] ||
    fail "--image-pull-secret with a username and password needs --registry-url to know which registry they are for" \
      "add --registry-url HOST, e.g. --registry-url registry.example.com"
  if [[ "$user$pass" == *[[:cntrl:]]* ]]; then
    fail "the registry username or password contains control characters" "check HODEI_REGISTRY_USERNAME/HODEI_REGISTRY_PASSWORD or the credentials file"
  fi
  registry_user="$user"
  registry_pass="$pass"
  local server="$registry_host"
  case "$registry_host" in
    docker.io | index.docker.io | registry-1.docker.io) server="https://index.docker.io/v1/" ;;
  esac
  dockerconfig="$(printf '{"auths":{"%s":{"username":"%s","password":"%s","auth":"%s"}}}' \
    "$(json_escape "$server")" "$(json_escape "$user")" "$(json_escape "$pass")" \
    "$(printf '%s:%s' "$user" "$pass" | b64)")"
}

# pull_secret_manifest DATA: the Secret with DATA as its base64 .dockerconfigjson.
pull_secret_manifest() {
  cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $pull_secret
  namespace: $worker_ns
  labels:
    app.kubernetes.io/part-of: hodei-jobs
type: kubernetes.io/dockerconfigjson
data:
  .dockerconfigjson: $1
EOF
}

# ---------------------------------------------------------------- tls --------

# The server's DNS names in the cluster, as the certificate must hold them.
server_names() {
  printf 'DNS:hodei-server,DNS:hodei-server.%s,DNS:hodei-server.%s.svc,DNS:hodei-server.%s.svc.cluster.local' \
    "$server_ns" "$server_ns" "$server_ns"
}

# Writes a new CA ($tmp/ca.crt) and a server certificate it signed
# ($tmp/tls.crt, $tmp/tls.key). The CA's key is never stored: to rotate, delete
# the Secret and run again.
issue_certificate() {
  command -v openssl >/dev/null 2>&1 ||
    fail "openssl is not installed" "install openssl, or issue the certificate with cert-manager (docs/KUBERNETES_PRODUCTION_READY.md)"
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=hodei-jobs CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$tmp/ca.key" -out "$tmp/ca.crt" 2>"$tmp/openssl.err" &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=hodei-server.$server_ns.svc" -keyout "$tmp/tls.key" -out "$tmp/tls.csr" 2>>"$tmp/openssl.err" &&
      printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$(server_names)" >"$tmp/tls.ext" &&
      openssl x509 -req -in "$tmp/tls.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial \
        -days 825 -extfile "$tmp/tls.ext" -out "$tmp/tls.crt" 2>>"$tmp/openssl.err"
  ) || fail "openssl could not issue the certificate: $(tail -n 1 "$tmp/openssl.err")" "check that openssl is 1.1.1 or newer"
  rm -f "$tmp/ca.key" "$tmp/ca.srl" "$tmp/tls.csr"
}

tls_secret_manifest() { # CERT_B64 KEY_B64 CA_B64
  cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $TLS_SECRET
  namespace: $server_ns
  labels:
    app.kubernetes.io/part-of: hodei-jobs
type: kubernetes.io/tls
data:
  tls.crt: $1
  tls.key: $2
  ca.crt: $3
EOF
}

ca_configmap_manifest() { # CA_PEM
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\n  labels:\n    app.kubernetes.io/part-of: hodei-jobs\ndata:\n  ca.crt: |\n' \
    "$CA_CONFIGMAP" "$worker_ns"
  printf '%s\n' "$1" | sed 's/^/    /'
}

# Creates the server's TLS Secret unless it exists, and the workers' CA
# ConfigMap from its ca.crt. Returns 10 when it changed something.
ensure_tls() {
  local ca changed=0 rc
  if k get secret "$TLS_SECRET" -n "$server_ns" >/dev/null 2>&1; then
    info "secret $TLS_SECRET: exists, kept (delete it to issue a new certificate)"
    ca="$(k get secret "$TLS_SECRET" -n "$server_ns" -o 'jsonpath={.data.ca\.crt}' 2>"$tmp/get.err" | base64 -d)"
    [[ -n "$ca" ]] ||
      fail "Secret $server_ns/$TLS_SECRET has no ca.crt" \
        "add the CA that signed its certificate as key ca.crt (cert-manager does), or delete the Secret to have a new one generated"
  else
    issue_certificate
    stdin_doc="$(tls_secret_manifest "$(b64 <"$tmp/tls.crt")" "$(b64 <"$tmp/tls.key")" "$(b64 <"$tmp/ca.crt")")"
    rc=0; diff_and_apply "secret $TLS_SECRET (values masked)" - || rc=$?
    stdin_doc=""
    ((rc == 0)) || changed=1
    ca="$(cat "$tmp/ca.crt")"
    rm -f "$tmp/tls.key"
  fi
  stdin_doc="$(ca_configmap_manifest "$ca")"
  rc=0; diff_and_apply "configmap $CA_CONFIGMAP" - || rc=$?
  stdin_doc=""
  ((rc == 0)) || changed=1
  ((changed == 0)) || return 10
}

# ---------------------------------------------------------------- images -----

build_images() {
  local tool="${HODEI_CONTAINER_TOOL:-docker}"
  local cmds=(
    "$tool build -f Dockerfile.worker -t $worker_image ."
    "$tool build -f Dockerfile.server -t $server_image ."
  )
  [[ -z "$registry_url" ]] || cmds+=("$tool push $worker_image" "$tool push $server_image")
  if ((dry_run)); then
    step "images (dry run; would run in $REPO_ROOT):"
    local c
    for c in "${cmds[@]}"; do info "  $c"; done
    return 0
  fi
  step "building images with $tool"
  command -v "$tool" >/dev/null 2>&1 ||
    fail "$tool is not installed" "install Docker (or set HODEI_CONTAINER_TOOL=podman), or build the images on a machine that has it and drop --build-image"
  "$tool" info >/dev/null 2>"$tmp/engine.err" ||
    fail "$tool cannot reach a container engine: $(head -n 1 "$tmp/engine.err")" \
      "start the Docker daemon (or use a machine that has one) and re-run, or drop --build-image"
  (cd "$REPO_ROOT" && "$tool" build -f Dockerfile.worker -t "$worker_image" .) ||
    fail "building $worker_image from Dockerfile.worker failed (see the build output above)" "fix the build error; 'cargo build --release -p hodei-bins' reproduces compile errors locally"
  (cd "$REPO_ROOT" && "$tool" build -f Dockerfile.server -t "$server_image" .) ||
    fail "building $server_image from Dockerfile.server failed (see the build output above)" "fix the build error; 'cargo build --release -p hodei-bins' reproduces compile errors locally"
  if [[ -n "$registry_url" ]]; then
    if [[ -z "$registry_user" && -n "${HODEI_REGISTRY_USERNAME:-}" && -n "${HODEI_REGISTRY_PASSWORD:-}" ]]; then
      registry_user="$HODEI_REGISTRY_USERNAME"
      registry_pass="$HODEI_REGISTRY_PASSWORD"
    fi
    if [[ -n "$registry_user" ]]; then
      printf '%s' "$registry_pass" | "$tool" login --username "$registry_user" --password-stdin "$registry_host" >/dev/null ||
        fail "logging in to $registry_host failed" "check HODEI_REGISTRY_USERNAME/HODEI_REGISTRY_PASSWORD (or the credentials file) and that the account may push"
    fi
    "$tool" push "$worker_image" ||
      fail "pushing $worker_image failed" "log in first ('$tool login $registry_host', or set HODEI_REGISTRY_USERNAME/HODEI_REGISTRY_PASSWORD) and check the account may push to $registry_url"
    "$tool" push "$server_image" ||
      fail "pushing $server_image failed" "log in first ('$tool login $registry_host') and check the account may push to $registry_url"
    info "pushed $worker_image and $server_image"
  else
    info "built $worker_image and $server_image (local only; load them into kind/k3d or pass --registry-url to push)"
  fi
}

# ---------------------------------------------------------------- apply ------

server_side=(--server-side "--field-manager=$FIELD_MANAGER" --force-conflicts)

# kubectl_server_side VERB FILE ('-' reads stdin from $stdin_doc): kubectl VERB
# --server-side on FILE, its output in $tmp/VERB.out and $tmp/VERB.err.
kubectl_server_side() {
  local verb="$1" file="$2"
  if [[ "$file" == - ]]; then
    printf '%s\n' "$stdin_doc" | k "$verb" "${server_side[@]}" -f - >"$tmp/$verb.out" 2>"$tmp/$verb.err"
  else
    k "$verb" "${server_side[@]}" -f "$file" >"$tmp/$verb.out" 2>"$tmp/$verb.err"
  fi
}

# diff_and_apply WHAT FILE ('-' reads stdin from $stdin_doc): returns 0 when
# nothing changed, 10 when it applied changes; exits on errors.
diff_and_apply() {
  local what="$1" file="$2" rc=0
  kubectl_server_side diff "$file" || rc=$?
  case "$rc" in
    0)
      info "$what: no changes"
      return 0
      ;;
    1)
      info "$what: changes:"
      sed 's/^/    /' "$tmp/diff.out" >&2
      ;;
    *)
      info "error: comparing $what with the cluster (kubectl diff) failed:"
      explain_kubectl_error "$tmp/diff.err"
      fail "kubectl diff failed for $what" "fix the cause above and re-run; nothing after this step was changed"
      ;;
  esac
  rc=0
  kubectl_server_side apply "$file" || rc=$?
  if ((rc != 0)); then
    info "error: applying $what failed:"
    explain_kubectl_error "$tmp/apply.err"
    fail "kubectl apply failed for $what" "fix the cause above and re-run; the script is safe to run again"
  fi
  sed 's/^/    /' "$tmp/apply.out" >&2
  return 10
}

# The operator needs these rights; checked first so a run never stops halfway
# for lack of one.
check_operator_rights() {
  local missing=() spec verb resource ns
  for spec in \
    "create namespaces -" \
    "create serviceaccounts $server_ns" "create serviceaccounts $worker_ns" \
    "create roles $worker_ns" "create rolebindings $worker_ns" \
    "create clusterroles -" "create clusterrolebindings -" \
    "create resourcequotas $worker_ns" "create limitranges $worker_ns"; do
    read -r verb resource ns <<<"$spec"
    local nsarg=()
    [[ "$ns" == - ]] || nsarg=(-n "$ns")
    if [[ "$(k auth can-i "$verb" "$resource" ${nsarg[@]+"${nsarg[@]}"} 2>/dev/null || true)" != yes ]]; then
      missing+=("$verb $resource${nsarg[1]:+ in ${nsarg[1]}}")
    fi
  done
  if ((network_policies)); then
    for ns in "$worker_ns" "$server_ns"; do
      [[ "$(k auth can-i create networkpolicies.networking.k8s.io -n "$ns" 2>/dev/null || true)" == yes ]] ||
        missing+=("create networkpolicies in $ns")
    done
  fi
  if ((generate_tls)); then
    [[ "$(k auth can-i create secrets -n "$server_ns" 2>/dev/null || true)" == yes ]] ||
      missing+=("create secrets in $server_ns")
    [[ "$(k auth can-i create configmaps -n "$worker_ns" 2>/dev/null || true)" == yes ]] ||
      missing+=("create configmaps in $worker_ns")
  fi
  [[ -z "$pull_secret" ]] || [[ "$(k auth can-i create secrets -n "$worker_ns" 2>/dev/null || true)" == yes ]] ||
    missing+=("create secrets in $worker_ns")
  # RBAC lets you grant only rights you hold yourself, unless you may escalate.
  if [[ "$(k auth can-i escalate roles.rbac.authorization.k8s.io -n "$worker_ns" 2>/dev/null || true)" != yes ]]; then
    for verb in get list watch create delete; do
      [[ "$(k auth can-i "$verb" pods -n "$worker_ns" 2>/dev/null || true)" == yes ]] ||
        missing+=("$verb pods in $worker_ns (needed to grant it to $SERVER_SA)")
    done
  fi
  if [[ "$(k auth can-i escalate clusterroles.rbac.authorization.k8s.io 2>/dev/null || true)" != yes ]]; then
    for review in tokenreviews.authentication.k8s.io subjectaccessreviews.authorization.k8s.io; do
      [[ "$(k auth can-i create "$review" 2>/dev/null || true)" == yes ]] ||
        missing+=("create ${review%%.*} (needed to grant it to $SERVER_SA)")
    done
  fi
  if ((${#missing[@]})); then
    local joined
    joined="$(printf '%s; ' "${missing[@]}")"
    fail "your account may not: ${joined%; }" \
      "run this script as a cluster admin (e.g. the kubeconfig from your cluster's installer)" \
      "or have an admin grant those verbs, or run the script for you"
  fi
}

# ---------------------------------------------------------------- verify -----

failures=0
pass() { printf '  PASS  %s\n' "$*" >&2; }
flunk() { # WHAT FIX
  printf '  FAIL  %s\n        fix: %s\n' "$1" "$2" >&2
  failures=$((failures + 1))
}
note() { printf '  WARN  %s\n' "$*" >&2; }

# absent WHAT [CONSEQUENCE]: the last `jp` found nothing; says whether it is
# missing or just unreadable for this account.
absent() {
  if grep -qi forbidden "$tmp/get.err" 2>/dev/null; then
    flunk "cannot read $1: $(head -n 1 "$tmp/get.err")" \
      "run --verify with an account that may read it (e.g. a cluster admin)"
  else
    flunk "$1 does not exist${2:+ ($2)}" "run scripts/setup-k8s-production.sh (without --verify)"
  fi
}

jp() { # KIND NAME NAMESPACE(- for none) JSONPATH -> value, or exit 1 when absent
  local nsarg=()
  [[ "$3" == - ]] || nsarg=(-n "$3")
  k get "$1" "$2" ${nsarg[@]+"${nsarg[@]}"} -o "jsonpath=$4" 2>"$tmp/get.err"
}

expect_exists() { # KIND NAME NAMESPACE(- for none) WHAT
  if jp "$1" "$2" "$3" '{.metadata.name}' >/dev/null; then
    pass "$4 exists"
  else
    absent "$4"
  fi
}

# can_i AS VERB RESOURCE [--subresource=X]: prints yes, no, or error:<reason>.
can_i() {
  local sa="$1" sa_ns="$2" out
  shift 2
  # The groups every ServiceAccount token carries, so rights granted to them count.
  out="$(k auth can-i "$@" -n "$worker_ns" --as="system:serviceaccount:$sa_ns:$sa" \
    --as-group=system:serviceaccounts --as-group="system:serviceaccounts:$sa_ns" \
    --as-group=system:authenticated 2>"$tmp/cani.err" || true)"
  out="${out%%[[:space:]]*}"
  if [[ "$out" == yes || "$out" == no ]]; then
    printf '%s' "$out"
  else
    printf 'error:%s' "$(head -n 1 "$tmp/cani.err")"
  fi
  return 0
}

expect_can() { # SA SA_NS EXPECT DESCRIPTION ARGS...
  local sa="$1" sa_ns="$2" expect="$3" desc="$4" got
  shift 4
  got="$(can_i "$sa" "$sa_ns" "$@")"
  if [[ "$got" == "$expect" && "$expect" == yes ]]; then
    pass "$sa may $desc in $worker_ns"
  elif [[ "$got" == "$expect" ]]; then
    pass "$sa may not $desc in $worker_ns"
  elif [[ "$got" == error:* ]]; then
    flunk "cannot check whether $sa may $desc: ${got#error:}" \
      "run --verify as a cluster admin: 'kubectl auth can-i --as' needs the impersonate verb"
  elif [[ "$expect" == yes ]]; then
    flunk "$sa may not $desc in $worker_ns" \
      "re-run this script without --verify to restore Role/RoleBinding $SERVER_ROLE in $worker_ns"
  else
    flunk "$sa may $desc in $worker_ns, but it must not: job code runs as this account" \
      "find what grants it: kubectl get rolebindings,clusterrolebindings -A -o wide | grep $sa; remove that binding"
  fi
}

check_permissions() {
  expect_can "$WORKER_SA" "$worker_ns" no "create pods" create pods
  expect_can "$WORKER_SA" "$worker_ns" no "get pods" get pods
  expect_can "$WORKER_SA" "$worker_ns" no "get secrets" get secrets
  expect_can "$SERVER_SA" "$server_ns" yes "create pods" create pods
  expect_can "$SERVER_SA" "$server_ns" yes "delete pods" delete pods
  expect_can "$SERVER_SA" "$server_ns" yes "watch pods" watch pods
  expect_can "$SERVER_SA" "$server_ns" yes "list pods" list pods
  expect_can "$SERVER_SA" "$server_ns" yes "get pods/log" get pods --subresource=log
  expect_can "$SERVER_SA" "$server_ns" no "get secrets" get secrets
  expect_can "$SERVER_SA" "$server_ns" yes "create tokenreviews" create tokenreviews.authentication.k8s.io
  expect_can "$WORKER_SA" "$worker_ns" no "create tokenreviews" create tokenreviews.authentication.k8s.io
  expect_can "$SERVER_SA" "$server_ns" yes "create subjectaccessreviews" create subjectaccessreviews.authorization.k8s.io
  expect_can "$WORKER_SA" "$worker_ns" no "create subjectaccessreviews" create subjectaccessreviews.authorization.k8s.io
}

verify() {
  step "verifying ($worker_ns, $server_ns)"
  local v

  # Namespaces and Pod Security.
  if v="$(jp namespace "$worker_ns" - '{.metadata.labels.pod-security\.kubernetes\.io/enforce},{.metadata.labels.pod-security\.kubernetes\.io/audit},{.metadata.labels.pod-security\.kubernetes\.io/warn}')"; then
    if [[ "$v" == restricted,restricted,restricted ]]; then
      pass "namespace $worker_ns exists, Pod Security restricted (enforce, audit, warn)"
    else
      flunk "namespace $worker_ns has Pod Security labels enforce,audit,warn = $v, not restricted" \
        "re-run this script without --verify to restore the labels"
    fi
  else
    absent "namespace $worker_ns"
  fi
  expect_exists namespace "$server_ns" - "namespace $server_ns"

  # Accounts.
  if v="$(jp serviceaccount "$WORKER_SA" "$worker_ns" '{.automountServiceAccountToken}')"; then
    if [[ "$v" == false ]]; then
      pass "ServiceAccount $worker_ns/$WORKER_SA exists, token not mounted"
    else
      flunk "ServiceAccount $worker_ns/$WORKER_SA mounts its token (automountServiceAccountToken=${v:-unset})" \
        "re-run this script without --verify; job code must not get an API token"
    fi
  else
    absent "ServiceAccount $worker_ns/$WORKER_SA" "worker pods would be refused"
  fi
  expect_exists serviceaccount "$SERVER_SA" "$server_ns" "ServiceAccount $server_ns/$SERVER_SA"
  expect_exists role "$SERVER_ROLE" "$worker_ns" "Role $worker_ns/$SERVER_ROLE"
  if v="$(jp rolebinding "$SERVER_ROLE" "$worker_ns" '{range .subjects[*]}{.kind}/{.namespace}/{.name} {end}')"; then
    if [[ " $v " == *" ServiceAccount/$server_ns/$SERVER_SA "* ]]; then
      pass "RoleBinding $worker_ns/$SERVER_ROLE binds $server_ns/$SERVER_SA"
    else
      flunk "RoleBinding $worker_ns/$SERVER_ROLE binds ${v:-nobody}, not ServiceAccount $server_ns/$SERVER_SA" \
        "re-run this script without --verify (with the same --server-namespace the server uses)"
    fi
  else
    absent "RoleBinding $worker_ns/$SERVER_ROLE"
  fi
  expect_exists clusterrole "$REVIEW_ROLE" - "ClusterRole $REVIEW_ROLE"
  if v="$(jp clusterrolebinding "$REVIEW_ROLE-$server_ns" - '{range .subjects[*]}{.kind}/{.namespace}/{.name} {end}')"; then
    if [[ " $v " == *" ServiceAccount/$server_ns/$SERVER_SA "* ]]; then
      pass "ClusterRoleBinding $REVIEW_ROLE-$server_ns binds $server_ns/$SERVER_SA"
    else
      flunk "ClusterRoleBinding $REVIEW_ROLE-$server_ns binds ${v:-nobody}, not ServiceAccount $server_ns/$SERVER_SA" \
        "re-run this script without --verify (with the same --server-namespace the server uses)"
    fi
  else
    absent "ClusterRoleBinding $REVIEW_ROLE-$server_ns" "the server cannot check worker identities: workers are refused"
  fi

  # Nothing may bind the worker account.
  local bindings
  if bindings="$(k get rolebindings -n "$worker_ns" -o 'jsonpath={range .items[*]}{.metadata.name}{":"}{range .subjects[*]}{.kind}/{.namespace}/{.name} {end}{"\n"}{end}' 2>"$tmp/get.err")"; then
    v="$(printf '%s\n' "$bindings" | grep -F "ServiceAccount/$worker_ns/$WORKER_SA " | cut -d: -f1 | tr '\n' ' ' || true)"
    v="${v% }"
    if [[ -z "$v" ]]; then
      pass "no RoleBinding in $worker_ns names $WORKER_SA"
    else
      flunk "RoleBinding(s) $v in $worker_ns grant rights to $WORKER_SA" \
        "delete them: kubectl -n $worker_ns delete rolebinding $v"
    fi
  else
    note "cannot list RoleBindings in $worker_ns: $(head -n 1 "$tmp/get.err")"
  fi

  # Quota and defaults.
  if v="$(jp resourcequota hodei-jobs-workers "$worker_ns" '{.status.used.pods}/{.spec.hard.pods} pods, requests.cpu {.status.used.requests\.cpu}/{.spec.hard.requests\.cpu}, requests.memory {.status.used.requests\.memory}/{.spec.hard.requests\.memory}')"; then
    pass "ResourceQuota $worker_ns/hodei-jobs-workers (used/hard: $v)"
  else
    absent "ResourceQuota $worker_ns/hodei-jobs-workers"
  fi
  if v="$(jp limitrange hodei-jobs-workers "$worker_ns" '{.spec.limits[0].defaultRequest.cpu}/{.spec.limits[0].defaultRequest.memory} requests, {.spec.limits[0].default.cpu}/{.spec.limits[0].default.memory} limits')"; then
    pass "LimitRange $worker_ns/hodei-jobs-workers (defaults: $v)"
  else
    absent "LimitRange $worker_ns/hodei-jobs-workers"
  fi
  if v="$(k get networkpolicies -n "$worker_ns" -o name 2>/dev/null | tr '\n' ' ')" && [[ -n "$v" ]]; then
    pass "network policies in $worker_ns: $v"
  else
    note "no NetworkPolicy in $worker_ns: workers can reach anything their network allows (see --network-policies)"
  fi
  if [[ -n "$pull_secret" ]]; then
    if v="$(jp secret "$pull_secret" "$worker_ns" '{.type}')" && [[ "$v" == kubernetes.io/dockerconfigjson ]]; then
      pass "image pull secret $worker_ns/$pull_secret exists (set HODEI_K8S_IMAGE_PULL_SECRET=$pull_secret on the server)"
    else
      flunk "image pull secret $worker_ns/$pull_secret is missing or not of type kubernetes.io/dockerconfigjson" \
        "run this script with --image-pull-secret $pull_secret and registry credentials"
    fi
  fi

  # Permissions, as the accounts themselves see them (needs impersonation).
  v="$(can_i "$SERVER_SA" "$server_ns" get pods)"
  if [[ "$v" == error:* ]]; then
    flunk "cannot check the accounts' permissions: ${v#error:}" \
      "run --verify as a cluster admin: 'kubectl auth can-i --as' needs the impersonate verb"
  else
    check_permissions
  fi

  if ((failures)); then
    info "verify: $failures check(s) failed"
    return 1
  fi
  info "verify: all checks passed"
}

# ---------------------------------------------------------------- main -------

next_steps() {
  cat >&2 <<EOF

Next steps:
  Server in the cluster:  kubectl apply -f k8s/server-deployment.yaml -f k8s/pdb.yaml
    (edit its image and HODEI_WORKER_IMAGE first if yours differ; with other namespaces,
    also its namespace, HODEI_K8S_NAMESPACE and HODEI_ADVERTISE_ADDRESS)
  Server elsewhere: start hodei-server-bin with
    HODEI_KUBERNETES_ENABLED=1 HODEI_LOCAL_ENABLED=false \\
    HODEI_K8S_NAMESPACE=$worker_ns HODEI_K8S_SERVICE_ACCOUNT=$WORKER_SA \\
    HODEI_WORKER_IMAGE=$worker_image${pull_secret:+ HODEI_K8S_IMAGE_PULL_SECRET=$pull_secret} \\
    HODEI_ADVERTISE_ADDRESS=<URL of the worker port pods can reach, e.g. https://hodei-server.$server_ns.svc:50052>
    and TLS (HODEI_TLS_CERT/HODEI_TLS_KEY, HODEI_K8S_SERVER_CA_CONFIGMAP=$CA_CONFIGMAP)
  Then check a real job end to end:  scripts/verify-k8s-jobs.sh --namespace $worker_ns
EOF
}

main() {
  if ((verify_only)); then
    connect "check --cluster-context/--kubeconfig and your network, then re-run"
    verify
    return
  fi

  render_all
  # A dry run prints the pull secret redacted, so it needs no credentials.
  if [[ -n "$pull_secret" ]] && ((dry_run == 0)); then
    load_registry_credentials
  fi
  ((build_image == 0)) || build_images

  if ((dry_run)); then
    cat "$tmp/namespaces.yaml"
    printf -- '---\n'
    cat "$tmp/resources.yaml"
    [[ -z "$pull_secret" ]] || { printf -- '---\n'; pull_secret_manifest "<redacted>"; }
    if ((generate_tls)); then
      printf -- '---\n'
      tls_secret_manifest "<generated unless it exists>" "<redacted>" "<generated>"
      info "dry run: --generate-tls would create a CA and a certificate for $(server_names) unless Secret $server_ns/$TLS_SECRET exists, and copy its ca.crt into ConfigMap $worker_ns/$CA_CONFIGMAP"
    fi
    if ! has_kubectl; then
      info "dry run: kubectl not found; printed the manifests only (not validated)"
      return 0
    fi
    check_context
    if ! api_reachable "$tmp/reach.err"; then
      info "dry run: cluster not reachable ($(head -n 1 "$tmp/reach.err")); printed the manifests only (client-side, not validated)"
      return 0
    fi
    describe_target
    step "server-side dry run (nothing is changed)"
    k apply "${server_side[@]}" --dry-run=server -f "$tmp/namespaces.yaml" >&2 2>"$tmp/dry.err" || {
      explain_kubectl_error "$tmp/dry.err"
      fail "the server refused the namespaces in a dry run" "fix the cause above"
    }
    if k get namespace "$worker_ns" >/dev/null 2>&1 && k get namespace "$server_ns" >/dev/null 2>&1; then
      k apply "${server_side[@]}" --dry-run=server -f "$tmp/resources.yaml" >&2 2>"$tmp/dry.err" || {
        explain_kubectl_error "$tmp/dry.err"
        fail "the server refused the manifests in a dry run" "fix the cause above"
      }
      local rc=0
      k diff "${server_side[@]}" -f "$tmp/namespaces.yaml" -f "$tmp/resources.yaml" >"$tmp/diff.out" 2>"$tmp/diff.err" || rc=$?
      case "$rc" in
        0) info "dry run: no changes: the cluster already matches" ;;
        1) info "dry run: these changes would be made:"; sed 's/^/    /' "$tmp/diff.out" >&2 ;;
        *) explain_kubectl_error "$tmp/diff.err"; fail "kubectl diff failed" "fix the cause above" ;;
      esac
    else
      info "dry run: the namespaces do not exist yet, so the objects inside them were checked client-side only"
      k apply --dry-run=client -f "$tmp/resources.yaml" >&2 2>"$tmp/dry.err" || {
        explain_kubectl_error "$tmp/dry.err"
        fail "the manifests did not pass a client-side dry run" "fix the cause above"
      }
    fi
    return 0
  fi

  connect "check --cluster-context/--kubeconfig and your network ('kubectl cluster-info'), then re-run"
  check_operator_rights

  local changed=0 rc
  step "namespaces"
  rc=0; diff_and_apply "namespaces $server_ns, $worker_ns" "$tmp/namespaces.yaml" || rc=$?
  ((rc == 0)) || changed=1
  local what="accounts, RBAC, quota and limits"
  ((network_policies == 0)) || what="$what, network policies"
  step "$what"
  rc=0; diff_and_apply "$what" "$tmp/resources.yaml" || rc=$?
  ((rc == 0)) || changed=1
  if ((generate_tls)); then
    step "TLS: Secret $server_ns/$TLS_SECRET, ConfigMap $worker_ns/$CA_CONFIGMAP"
    rc=0; ensure_tls || rc=$?
    ((rc == 0)) || changed=1
  fi
  if [[ -n "$pull_secret" ]]; then
    step "image pull secret $worker_ns/$pull_secret"
    stdin_doc="$(pull_secret_manifest "$(printf '%s' "$dockerconfig" | b64)")"
    rc=0; diff_and_apply "secret $pull_secret (values masked)" - || rc=$?
    stdin_doc=""
    ((rc == 0)) || changed=1
  fi
  if ((changed)); then
    info "applied the changes above"
  else
    info "no changes: the cluster already matches"
  fi

  verify || fail "the setup was applied but verification failed (see FAIL lines above)" "fix what they name and re-run"
  next_steps
}

main
