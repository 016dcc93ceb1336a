# shellcheck shell=bash
# Certificates, keys and kubeconfigs for the local test cluster. Sourced by
# the other scripts after lib.sh; never run.

# ensure_pki: CA, apiserver serving cert, service-account signing keys and the
# client certs of the components. Generated once; kept across restarts.
ensure_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if [[ ! -f "$PKI/ca.crt" ]]; then
    log "generating certificates in $PKI"
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 -subj "/CN=hodei-test-cluster-ca" 2>/dev/null
  fi
  [[ -f "$PKI/sa.key" ]] || {
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
  }
  # The ClusterIP SANs are names in a certificate, never a traffic target.
  issue_cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:$HODEI_CLUSTER_SERVICE_IP"
  issue_cert admin "/O=system:masters/CN=hodei-admin" clientAuth
  issue_cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  issue_cert kube-scheduler "/CN=system:kube-scheduler" clientAuth
  # The API server's identity towards kubelets (logs, exec); kubelets check it
  # with a SubjectAccessReview.
  issue_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  # The kubelet: a node identity (Node authorizer, NodeRestriction) and a serving
  # cert for its node IP, which the API server verifies.
  issue_cert kubelet "/O=system:nodes/CN=system:node:$HODEI_NODE_NAME" clientAuth
  issue_cert kubelet-serving "/CN=$HODEI_NODE_NAME" serverAuth \
    "IP:$HODEI_CLUSTER_NODE_IP,IP:127.0.0.1,DNS:$HODEI_NODE_NAME"
}

# issue_cert NAME SUBJECT serverAuth|clientAuth [SANS]: NAME.{key,crt} signed
# by the CA, unless they exist.
issue_cert() {
  local name="$1" subject="$2" usage="$3" sans="${4:-}" ext
  [[ -f "$PKI/$name.crt" ]] && return 0
  ext="$(mktemp)"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -n "$sans" ]] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -out "$PKI/$name.crt" -days 825 -extfile "$ext" 2>/dev/null
  rm -f "$ext" "$PKI/$name.csr"
}

# write_kubeconfig FILE USER NAMESPACE (--cert NAME | --token TOKEN)
write_kubeconfig() {
  local file="$1" user="$2" namespace="$3" kind="$4" value="$5" tmp
  tmp="$file.tmp.$$"
  rm -f "$tmp"
  kubectl config --kubeconfig="$tmp" set-cluster hodei-test \
    --server="$API_URL" --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  case "$kind" in
    --cert)
      kubectl config --kubeconfig="$tmp" set-credentials "$user" --embed-certs=true \
        --client-certificate="$PKI/$value.crt" --client-key="$PKI/$value.key" >/dev/null
      ;;
    --token)
      kubectl config --kubeconfig="$tmp" set-credentials "$user" --token="$value" >/dev/null
      ;;
    *) die "write_kubeconfig: unknown credential kind $kind" ;;
  esac
  kubectl config --kubeconfig="$tmp" set-context hodei-test \
    --cluster=hodei-test --user="$user" --namespace="$namespace" >/dev/null
  kubectl config --kubeconfig="$tmp" use-context hodei-test >/dev/null
  chmod 600 "$tmp"
  mv "$tmp" "$file"
}
