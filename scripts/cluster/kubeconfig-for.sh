#!/usr/bin/env bash
# Mints a kubeconfig for one identity of the running local cluster and prints
# its path, so a test can run the server with exactly the rights it grants.
#
# Usage: kubeconfig-for.sh NAMESPACE SERVICEACCOUNT [DURATION]
#          ServiceAccount token (kubectl create token, default 24h); the
#          ServiceAccount is created if missing, the namespace must exist.
#        kubeconfig-for.sh --user NAME [--group GROUP]...
#          Client certificate with CN=NAME and O=GROUP for each group.
# Output: $HODEI_CLUSTER_STATE/kubeconfigs/<...>.kubeconfig (path on stdout).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/lib.sh"
source "$here/pki.sh"

usage() { die "usage: kubeconfig-for.sh NAMESPACE SERVICEACCOUNT [DURATION] | --user NAME [--group GROUP]..."; }
[[ -f "$ADMIN_KUBECONFIG" ]] || die "no cluster state in $HODEI_CLUSTER_STATE; run up.sh first"
out="$HODEI_CLUSTER_STATE/kubeconfigs"
mkdir -p "$out"
chmod 700 "$out"
admin=(kubectl --kubeconfig="$ADMIN_KUBECONFIG")

if [[ "${1:-}" == --user ]]; then
  [[ $# -ge 2 ]] || usage
  user="$2"
  shift 2
  subject=""
  while (($#)); do
    [[ "$1" == --group && $# -ge 2 ]] || usage
    subject+="/O=$2"
    shift 2
  done
  subject+="/CN=$user"
  name="user-$(printf '%s' "$subject" | sha256sum | cut -c1-12)"
  issue_cert "$name" "$subject" clientAuth
  file="$out/$name.kubeconfig"
  write_kubeconfig "$file" "$user" default --cert "$name"
else
  [[ $# -ge 2 && $# -le 3 ]] || usage
  namespace="$1" account="$2" duration="${3:-24h}"
  "${admin[@]}" get namespace "$namespace" >/dev/null || die "namespace $namespace does not exist"
  if ! "${admin[@]}" -n "$namespace" get serviceaccount "$account" >/dev/null 2>&1; then
    "${admin[@]}" -n "$namespace" create serviceaccount "$account" >/dev/null
  fi
  token="$("${admin[@]}" -n "$namespace" create token "$account" --duration="$duration")"
  file="$out/sa-$namespace-$account.kubeconfig"
  write_kubeconfig "$file" "system:serviceaccount:$namespace:$account" "$namespace" --token "$token"
fi
echo "$file"
