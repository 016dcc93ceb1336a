#!/usr/bin/env bash
# Builds the local cluster's Go components from Go modules into a cache outside
# the repo, keyed by version: kube-apiserver, kube-controller-manager,
# kube-scheduler and kubelet, etcd, and crictl. A warm cache does nothing.
#
# Env: HODEI_K8S_VERSION (v1.34.4), HODEI_ETCD_VERSION (v3.6.4),
#      HODEI_CRICTL_VERSION (v1.34.0),
#      HODEI_CLUSTER_CACHE (~/.cache/hodei-cluster),
#      HODEI_CLUSTER_BUILD_JOBS (1: go build -p; others share the machine).
# Output: $HODEI_CLUSTER_CACHE/kubernetes-<version>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet}
#         $HODEI_CLUSTER_CACHE/etcd-<version>/bin/etcd
#         $HODEI_CLUSTER_CACHE/crictl-<version>/bin/crictl
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JOBS="${HODEI_CLUSTER_BUILD_JOBS:-1}"
# Never fetch another Go toolchain; the installed one builds these. The
# wrapper modules below are edited by `go get`, so vendoring must be off.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
command -v go >/dev/null || die "go is not installed"
command -v flock >/dev/null || die "flock (util-linux) is not installed"

# One build at a time per cache: concurrent callers wait, then find it warm.
mkdir -p "$HODEI_CLUSTER_CACHE"
exec 9>"$HODEI_CLUSTER_CACHE/build.lock"
flock 9

# new_wrapper DIR: an empty throwaway module that the builds below live in,
# because k8s.io/kubernetes cannot be built as a dependency without replaces.
new_wrapper() {
  rm -rf "$1"
  mkdir -p "$1"
  printf 'module hodei.local/cluster-build\n\ngo %s\n' "$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')" >"$1/go.mod"
}

# go_build DIR OUT_DIR LDFLAGS PACKAGE...: build into a temp dir, then move, so
# an interrupted build never leaves a half-written binary in the cache.
go_build() {
  local dir="$1" out="$2" ldflags="$3" tmp
  shift 3
  tmp="$(mktemp -d "$dir/out.XXXXXX")"
  (cd "$dir" && nice -n 19 go build -p "$JOBS" -trimpath -tags=notest,grpcnotrace \
    -ldflags="-s -w $ldflags" -o "$tmp/" "$@")
  mkdir -p "$out"
  mv "$tmp"/* "$out"/
  rmdir "$tmp"
}

build_kubernetes() {
  local v="$HODEI_K8S_VERSION" staging="v0.${HODEI_K8S_VERSION#v1.}"
  local dir="$HODEI_CLUSTER_CACHE/src/kubernetes-$v" gomod major minor ldflags
  local cmd packages=()
  for cmd in "${K8S_COMPONENTS[@]}"; do
    [[ -x "$K8S_BIN/$cmd" ]] || packages+=("k8s.io/kubernetes/cmd/$cmd")
  done
  if ((${#packages[@]} == 0)); then
    log "kubernetes $v: cached in $K8S_BIN"
    return
  fi
  log "kubernetes $v: building ${packages[*]##*/} (cold builds take a long time on 2 cores)"
  new_wrapper "$dir"
  gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$v" | sed -nE 's/^\s*"GoMod": "(.*)",?$/\1/p')"
  [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@$v"
  {
    printf '\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$v"
    # Every staging module that upstream replaces with ./staging/src/... is
    # published on its own as v0.<minor>.<patch>.
    sed -nE 's#^\s*(k8s\.io/[a-z0-9-]+) => \./staging/src/.*#\1#p' "$gomod" |
      while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
    printf ')\n'
  } >>"$dir/go.mod"
  (cd "$dir" && go get "${packages[@]/%/@$v}")
  major="${v#v}" && major="${major%%.*}"
  minor="${v#v*.}" && minor="${minor%%.*}"
  ldflags=""
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  go_build "$dir" "$K8S_BIN" "$ldflags" "${packages[@]}"
  log "kubernetes $v: built into $K8S_BIN"
}

build_etcd() {
  local v="$HODEI_ETCD_VERSION" dir="$HODEI_CLUSTER_CACHE/src/etcd-$HODEI_ETCD_VERSION"
  if [[ -x "$ETCD_BIN/etcd" ]]; then
    log "etcd $v: cached in $ETCD_BIN"
    return
  fi
  log "etcd $v: building"
  new_wrapper "$dir"
  # server/v3 requires its sibling modules at real versions, so its own
  # replace directives (which point at ../) do not matter here.
  (cd "$dir" && go get "go.etcd.io/etcd/server/v3@$v")
  # The main package is the module root, so go names the binary "server".
  rm -rf "$ETCD_BIN.tmp"
  go_build "$dir" "$ETCD_BIN.tmp" "" go.etcd.io/etcd/server/v3
  mkdir -p "$ETCD_BIN"
  mv "$ETCD_BIN.tmp/server" "$ETCD_BIN/etcd"
  rmdir "$ETCD_BIN.tmp"
  log "etcd $v: built into $ETCD_BIN"
}

build_crictl() {
  local v="$HODEI_CRICTL_VERSION" dir="$HODEI_CLUSTER_CACHE/src/crictl-$HODEI_CRICTL_VERSION"
  if [[ -x "$CRICTL_BIN/crictl" ]]; then
    log "crictl $v: cached in $CRICTL_BIN"
    return
  fi
  log "crictl $v: building"
  new_wrapper "$dir"
  (cd "$dir" && go get "sigs.k8s.io/cri-tools/cmd/crictl@$v")
  go_build "$dir" "$CRICTL_BIN" "-X sigs.k8s.io/cri-tools/pkg/version.Version=$v" sigs.k8s.io/cri-tools/cmd/crictl
  log "crictl $v: built into $CRICTL_BIN"
}

build_etcd
build_kubernetes
build_crictl
