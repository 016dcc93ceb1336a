#!/usr/bin/env bash
# Builds, without a Docker engine, the images the local cluster's node runs,
# each as a docker-archive that `ctr -n k8s.io images import` takes:
#   worker  what Dockerfile.worker's runtime stage builds (user, paths, env and
#           entrypoint read from it, and checked against it afterwards), made of
#           busybox-static (sh and the usual tools), a static musl
#           hodei-worker-bin, the CA bundle and passwd/group entries
#   pause   the pod sandbox: busybox sh as PID 1 that reaps children and exits
#           0 on SIGTERM
#   bench   the worker image plus a static musl hodei-bench in /usr/local/bin,
#           for scripts/bench-k8s.sh (its jobs run `hodei-bench emit`)
# An archive is rebuilt only when its inputs change (the worker binary, the
# Dockerfile, these scripts, busybox, the CA bundle, the name; for bench also
# hodei-bench). Missing tools
# (buildah, busybox-static, musl-tools, ca-certificates) are installed with apt.
#
# Usage: scripts/build-images.sh [worker] [pause] [bench]   (default: worker pause)
# Env:   HODEI_WORKER_IMAGE  worker image name (default hodei-worker:<workspace version>)
#        HODEI_PAUSE_IMAGE   pause image name (default hodei.local/pause:3.10)
#        HODEI_BENCH_IMAGE   bench image name (default hodei-worker-bench:<workspace version>)
#        HODEI_IMAGE_DIR     where the archives go (default $HODEI_CLUSTER_CACHE/images,
#                            HODEI_CLUSTER_CACHE defaulting to ~/.cache/hodei-cluster)
#        HODEI_WORKER_BIN    a static hodei-worker-bin to put in the image instead
#                            of building one (cargo, release, musl)
#        HODEI_BENCH_BIN     likewise, a static hodei-bench for the bench image
#        CARGO_TARGET_DIR    cargo's target dir (default <repo>/target)
# Output: <name with / and : as _>.tar in HODEI_IMAGE_DIR; on stdout
#         `export HODEI_WORKER_IMAGE=... HODEI_WORKER_ARCHIVE=...` (and PAUSE, BENCH)
#         lines for eval; everything else goes to stderr. buildah keeps its
#         storage in HODEI_IMAGE_DIR/.buildah only while it runs.
set -euo pipefail
# shellcheck source=images-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/images-lib.sh"

MUSL_TARGET="$(uname -m)-unknown-linux-musl"
PAUSE_USER=65535:65535
# PID 1 ignores signals it has no handler for, so the trap is what makes
# SIGTERM end it; `wait` reaps every child, re-parented orphans included.
PAUSE_SCRIPT="trap 'exit 0' TERM INT; while :; do sleep 86400 & wait \$!; done"

images=("$@")
((${#images[@]})) || images=(worker pause)
for image in "${images[@]}"; do
  [[ "$image" == worker || "$image" == pause || "$image" == bench ]] ||
    images_die "unknown image '$image' (worker, pause or bench)"
done

# install_missing: the Debian packages this build needs, with one apt-get update.
install_missing() {
  local pkg missing=()
  for pkg in buildah busybox-static ca-certificates musl-tools; do
    # musl-tools only when a binary is to be built.
    [[ "$pkg" == musl-tools && -n "${HODEI_WORKER_BIN:-}" &&
      (-n "${HODEI_BENCH_BIN:-}" || " ${images[*]} " != *" bench "*) ]] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    images_log "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  fi
}

# worker_binary: path of a static hodei-worker-bin, built unless HODEI_WORKER_BIN names one.
worker_binary() {
  static_binary "${HODEI_WORKER_BIN:-}" hodei-bins hodei-worker-bin
}

# bench_binary: path of a static hodei-bench, built unless HODEI_BENCH_BIN names one.
bench_binary() {
  static_binary "${HODEI_BENCH_BIN:-}" hodei-bench hodei-bench
}

# static_binary GIVEN PACKAGE BIN: GIVEN, or else BIN of PACKAGE built for musl;
# fails unless it is statically linked.
static_binary() {
  local bin="$1" package="$2" name="$3"
  if [[ -z "$bin" ]]; then
    rustup target list --installed | grep -qx "$MUSL_TARGET" || rustup target add "$MUSL_TARGET" >&2
    local target="${CARGO_TARGET_DIR:-$IMAGES_REPO_ROOT/target}" cc_var="CC_${MUSL_TARGET//-/_}"
    images_log "building $name for $MUSL_TARGET (release; target dir $target)"
    # musl-gcc builds the C parts (bundled SQLite, ring) against musl too.
    (cd "$IMAGES_REPO_ROOT" && env "$cc_var=musl-gcc" CARGO_TARGET_DIR="$target" nice -n 19 \
      cargo build --release --locked --target "$MUSL_TARGET" -p "$package" --bin "$name" >&2)
    bin="$target/$MUSL_TARGET/release/$name"
  fi
  [[ -x "$bin" ]] || images_die "$name binary $bin is missing"
  # The image has no dynamic loader: a dynamically linked binary would not start.
  ! readelf -lW "$bin" | grep -q 'program interpreter' || images_die "$bin is dynamically linked; the image needs a static one"
  printf '%s\n' "$bin"
}

# inputs_hash FILE... -- WORD...: one hash of the files' contents and the words.
inputs_hash() {
  local files=()
  while (($#)) && [[ "$1" != -- ]]; do files+=("$1"); shift; done
  shift
  { sha256sum "${files[@]}" | cut -d' ' -f1; printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1
}

# up_to_date ARCHIVE HASH: ARCHIVE exists and was built from inputs with HASH.
up_to_date() {
  [[ -f "$1" && "$(cat "$1.inputs" 2>/dev/null)" == "$2" ]]
}

# populate_worker_image ROOT: the worker image's files, and $extra_bin at
# $extra_path when set (the bench image).
populate_worker_image() {
  populate_worker_rootfs "$1" "$definition" "$worker_bin"
  [[ -z "$extra_bin" ]] || install -D -m 0755 "$extra_bin" "$1$extra_path"
}

# populate_pause ROOT: busybox with just the applets the pause script runs.
populate_pause() {
  install -d -m 0755 "$1"/{dev,proc,sys}
  install_busybox "$1" sh sleep
}

# commit_image NAME ARCHIVE POPULATE CONFIG_ARG...: a one-layer image from
# scratch filled by POPULATE, written to ARCHIVE as a docker-archive tagged NAME.
commit_image() {
  local name="$1" archive="$2" populate="$3" ctr mnt id
  shift 3
  ctr="$(bah from --quiet --name "hodei-image-$$" scratch)"
  mnt="$(bah mount "$ctr")"
  "$populate" "$mnt"
  bah config "$@" "$ctr"
  # A fixed timestamp: the same inputs give the same image digest.
  id="$(bah commit --quiet --rm --format docker --timestamp 0 "$ctr")"
  rm -f "$archive.tmp"
  bah push --quiet --signature-policy "$store/policy.json" "$id" "docker-archive:$archive.tmp:$name" >&2
  bah rmi "$id" >/dev/null
  mv "$archive.tmp" "$archive"
}

# bah ARG...: buildah with its storage in $store. Whatever --root says, it
# also writes a blob-info cache under /var/lib/containers and network state
# under /run/containers; an empty /var/lib and /run in a mount namespace of
# its own keep those off the host.
bah() {
  unshare --mount --propagation private -- sh -c 'mount -t tmpfs tmpfs /var/lib && mount -t tmpfs tmpfs /run && exec "$@"' \
    bah buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"
}

# cleanup: drop buildah's working containers, images and storage.
cleanup() {
  if [[ -d "$store" ]]; then
    bah rm --all >/dev/null 2>&1 || true
    bah rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$store"
  fi
}

build_worker() {
  build_worker_like "$HODEI_WORKER_IMAGE"
  printf 'export HODEI_WORKER_IMAGE=%q\nexport HODEI_WORKER_ARCHIVE=%q\n' "$HODEI_WORKER_IMAGE" "$archive"
}

build_bench() {
  build_worker_like "$HODEI_BENCH_IMAGE" "$BENCH_BIN_PATH" "$(bench_binary)"
  printf 'export HODEI_BENCH_IMAGE=%q\nexport HODEI_BENCH_ARCHIVE=%q\n' "$HODEI_BENCH_IMAGE" "$archive"
}

# build_worker_like NAME [PATH BIN]: in $archive (rebuilt when its inputs
# changed) the image Dockerfile.worker's runtime stage describes, named NAME,
# with BIN added at PATH when given.
build_worker_like() {
  local name="$1" hash entry config=()
  extra_path="${2:-}" extra_bin="${3:-}"
  definition="$(worker_image_definition "$WORKER_DOCKERFILE" "$WORKER_STAGE")"
  # Built (or checked) once per run, whichever images need it.
  [[ -n "${worker_bin:-}" ]] || worker_bin="$(worker_binary)"
  archive="$(archive_for "$name")"
  hash="$(inputs_hash "$worker_bin" ${extra_bin:+"$extra_bin"} "$WORKER_DOCKERFILE" "${BASH_SOURCE[0]}" \
    "$IMAGES_REPO_ROOT/scripts/images-lib.sh" "$BUSYBOX" "$CA_BUNDLE" -- "$name" "$extra_path")"
  if up_to_date "$archive" "$hash"; then
    images_log "$name is up to date ($archive)"
    return
  fi
  images_log "building $name"
  while IFS= read -r entry; do config+=(--env "$entry"); done < <(definition_values "$definition" env)
  commit_image "$name" "$archive" populate_worker_image "${config[@]}" \
    --user "$(definition_value "$definition" user)" \
    --workingdir "$(definition_value "$definition" workdir)" \
    --entrypoint "$(definition_value "$definition" entrypoint)" \
    --cmd ''
  unpack_docker_archive "$archive" "$store/check"
  check_archive_tag "$store/check" "$name"
  check_worker_image "$definition" "$store/check" || images_die "$archive does not match Dockerfile.worker"
  [[ -z "$extra_bin" || -x "$store/check/rootfs$extra_path" ]] || images_die "$archive has no $extra_path"
  echo "$hash" >"$archive.inputs"
  images_log "$name: $archive ($(du -h "$archive" | cut -f1))"
}

build_pause() {
  local archive hash
  archive="$(archive_for "$HODEI_PAUSE_IMAGE")"
  hash="$(inputs_hash "${BASH_SOURCE[0]}" "$BUSYBOX" -- "$HODEI_PAUSE_IMAGE")"
  if up_to_date "$archive" "$hash"; then
    images_log "$HODEI_PAUSE_IMAGE is up to date ($archive)"
  else
    images_log "building $HODEI_PAUSE_IMAGE"
    commit_image "$HODEI_PAUSE_IMAGE" "$archive" populate_pause \
      --env PATH=/bin --user "$PAUSE_USER" --workingdir / \
      --entrypoint "$(jq -cn --arg s "$PAUSE_SCRIPT" '["/bin/sh", "-c", $s]')" --cmd ''
    unpack_docker_archive "$archive" "$store/check"
    check_archive_tag "$store/check" "$HODEI_PAUSE_IMAGE"
    echo "$hash" >"$archive.inputs"
    images_log "$HODEI_PAUSE_IMAGE: $archive ($(du -h "$archive" | cut -f1))"
  fi
  printf 'export HODEI_PAUSE_IMAGE=%q\nexport HODEI_PAUSE_ARCHIVE=%q\n' "$HODEI_PAUSE_IMAGE" "$archive"
}

install_missing
mkdir -p "$HODEI_IMAGE_DIR"
# One build at a time per image dir: concurrent callers wait, then find it warm.
exec 9>"$HODEI_IMAGE_DIR/.lock"
flock 9
store="$HODEI_IMAGE_DIR/.buildah"
trap cleanup EXIT
cleanup
mkdir -p "$store/tmp"
export TMPDIR="$store/tmp"
echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$store/policy.json"

for image in "${images[@]}"; do
  "build_$image"
done
