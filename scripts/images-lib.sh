# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# The images the local cluster's node runs, built without a Docker engine: the
# worker image, the pod-sandbox (pause) image and the benchmark image (the
# worker image plus hodei-bench). Their names, where their
# archives go, and the worker image's definition, read from the runtime stage
# of Dockerfile.worker so that the Dockerfile stays the one source of truth.
# Sourced, never run (build-images.sh, check-worker-image.sh, smoke-images.sh,
# test-images-lib.sh); a cluster script may source it for the names.

IMAGES_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# workspace_version: the version in Cargo.toml's [workspace.package].
workspace_version() {
  awk '/^\[/ { section = $0 } section == "[workspace.package]" && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' \
    "$IMAGES_REPO_ROOT/Cargo.toml"
}

# A version tag, never "latest": Kubernetes always pulls ":latest", and nothing
# serves these images but the node's own containerd.
HODEI_WORKER_IMAGE="${HODEI_WORKER_IMAGE:-hodei-worker:$(workspace_version)}"
# containerd's sandbox_image on the local cluster's node.
HODEI_PAUSE_IMAGE="${HODEI_PAUSE_IMAGE:-hodei.local/pause:3.10}"
# The worker image plus hodei-bench, for scripts/bench-k8s.sh (the name and
# path are hodei-bench's defaults).
HODEI_BENCH_IMAGE="${HODEI_BENCH_IMAGE:-hodei-worker-bench:$(workspace_version)}"
BENCH_BIN_PATH=/usr/local/bin/hodei-bench
HODEI_IMAGE_DIR="${HODEI_IMAGE_DIR:-${HODEI_CLUSTER_CACHE:-$HOME/.cache/hodei-cluster}/images}"

WORKER_DOCKERFILE="$IMAGES_REPO_ROOT/Dockerfile.worker"
WORKER_STAGE=runtime
# The environment the Dockerfile's base image (debian:*-slim) brings along.
DEBIAN_BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Debian packages of the runtime stage that the no-Docker build can provide,
# and the file each one must leave in the image.
declare -A PACKAGE_FILES=([ca-certificates]=/etc/ssl/certs/ca-certificates.crt)
# Where the no-Docker build takes busybox (busybox-static) and the CA bundle
# (ca-certificates) from.
BUSYBOX=/bin/busybox
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# Tools a job may expect from the image besides the shell (busybox applets).
JOB_TOOLS=(sh env cat ls id date sleep grep sed awk tr head tail wc sort find xargs mkdir rm cp mv tar gzip dd hostname)

images_log() { printf '[images] %s\n' "$*" >&2; }
images_die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

# archive_for IMAGE: the archive file of IMAGE in HODEI_IMAGE_DIR.
archive_for() {
  local name="${1//\//_}"
  printf '%s/%s.tar\n' "$HODEI_IMAGE_DIR" "${name//:/_}"
}

# normalize_ref IMAGE: IMAGE fully qualified the way containerd's CRI names it
# (hodei-worker:0.1.0 -> docker.io/library/hodei-worker:0.1.0).
normalize_ref() {
  local ref="$1" first="${1%%/*}"
  if [[ "$ref" != */* ]]; then
    ref="docker.io/library/$ref"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
    ref="docker.io/$ref"
  fi
  [[ "${ref##*/}" == *:* || "$ref" == *@* ]] || ref="$ref:latest"
  printf '%s\n' "$ref"
}

# dockerfile_stage_chain FILE STAGE: the instructions that build STAGE, one
# logical line each (continuations joined, comments dropped), from the first
# stage of its FROM chain to STAGE itself; the chain's outside base image comes
# first as "FROM <image>". Prints nothing when FILE has no stage STAGE.
dockerfile_stage_chain() {
  awk -v target="$2" '
    /^[[:space:]]*#/ || /^[[:space:]]*$/ { next }
    {
      line = $0
      sub(/^[[:space:]]+/, "", line)
      sub(/[[:space:]]+$/, "", line)
      if (line ~ /\\$/) { sub(/\\$/, "", line); buf = buf line " "; next }
      n++; text[n] = buf line; buf = ""
      nw = split(text[n], w, " ")
      if (toupper(w[1]) == "FROM") {
        s++; first[s] = n
        base[s] = (w[2] ~ /^--/) ? w[3] : w[2]
        for (i = 2; i < nw; i++) if (toupper(w[i]) == "AS") name[s] = w[i + 1]
      }
      last[s] = n
    }
    END {
      for (t = 1; t <= s; t++) if (name[t] == target) break
      if (t > s) exit
      depth = 0
      while (t) {
        chain[++depth] = t; parent = 0
        for (u = 1; u <= s; u++) if (name[u] == base[t]) parent = u
        t = parent
      }
      print "FROM " base[chain[depth]]
      for (d = depth; d >= 1; d--) for (i = first[chain[d]] + 1; i <= last[chain[d]]; i++) print text[i]
    }' "$1"
}

# worker_image_definition [DOCKERFILE [STAGE]]: what STAGE (runtime) of
# DOCKERFILE (Dockerfile.worker) puts in the image, one key=value a line:
#   base=IMAGE  env=NAME=VALUE (in order)  user=UID:GID  workdir=PATH
#   entrypoint=JSON  bin=PATH (the worker binary)  package=NAME
#   group=NAME:GID  account=NAME:UID:GID:HOME:SHELL  dir=PATH  chown=UID:GID:PATH
# Fails, quoting the instruction, on anything the no-Docker build does not
# reproduce: a new instruction there must be taught to this function (and to
# build-images.sh) before the two images can drift apart.
worker_image_definition() {
  local file="${1:-$WORKER_DOCKERFILE}" stage="${2:-$WORKER_STAGE}" chain instr kw args
  [[ -r "$file" ]] || images_die "$file is missing"
  chain="$(dockerfile_stage_chain "$file" "$stage")"
  [[ -n "$chain" ]] || images_die "$file has no stage named $stage"
  while IFS= read -r instr; do
    read -r kw args <<<"$instr"
    case "${kw^^}" in
      FROM) definition_from "$args" ;;
      ARG) ;; # only expanded in FROM and RUN, which are checked as written
      ENV) definition_env "$args" ;;
      RUN) definition_run "$args" ;;
      COPY) definition_copy "$args" ;;
      WORKDIR)
        [[ "$args" == /* && "$args" != *[[:space:]\$]* ]] || definition_unsupported "$instr" "WORKDIR must be one absolute path"
        printf 'dir=%s\nworkdir=%s\n' "$args" "$args"
        ;;
      USER)
        [[ "$args" =~ ^[0-9]+:[0-9]+$ ]] || definition_unsupported "$instr" "USER must be numeric UID:GID (the kubelet checks runAsNonRoot against it)"
        printf 'user=%s\n' "$args"
        ;;
      ENTRYPOINT)
        local json
        json="$(jq -ce 'select(type == "array" and length > 0 and all(type == "string"))' <<<"$args" 2>/dev/null)" ||
          definition_unsupported "$instr" "ENTRYPOINT must be exec form (a JSON array)"
        printf 'entrypoint=%s\n' "$json"
        ;;
      *) definition_unsupported "$instr" "${kw^^} is not reproduced" ;;
    esac
  done <<<"$chain"
}

definition_unsupported() {
  images_die "$(basename "${file:-Dockerfile}") ($stage stage): '$1': $2 by scripts/build-images.sh; teach scripts/images-lib.sh (worker_image_definition) and build-images.sh first"
}

definition_from() {
  [[ "$1" == debian:*-slim ]] || definition_unsupported "FROM $1" "only a debian:*-slim base"
  printf 'base=%s\nenv=PATH=%s\n' "$1" "$DEBIAN_BASE_PATH"
}

definition_env() {
  local -a words
  local word
  read -ra words <<<"$1"
  for word in "${words[@]}"; do
    [[ "$word" =~ ^[A-Za-z_][A-Za-z0-9_]*=[^\$\"\'\\]*$ ]] || definition_unsupported "ENV $1" "only NAME=value with a plain value"
    printf 'env=%s\n' "$word"
  done
}

definition_copy() {
  local -a words
  read -ra words <<<"$1"
  if ((${#words[@]} == 3)) && [[ "${words[0]}" == --from=* && "${words[1]##*/}" == hodei-worker-bin && "${words[2]}" == /* ]]; then
    local dest="${words[2]}"
    [[ "$dest" == */ ]] && dest="$dest${words[1]##*/}"
    printf 'bin=%s\n' "$dest"
  else
    definition_unsupported "COPY $1" "only COPY --from=STAGE .../hodei-worker-bin /absolute/path"
  fi
}

# definition_run COMMANDS: a RUN made of "&&"-joined commands of known shapes.
definition_run() {
  local cmd
  local -a w
  [[ "$1" != *[\;\|\`\$]* && "$1" != *\|\|* ]] || definition_unsupported "RUN $1" "only plain commands joined with &&"
  while IFS= read -r cmd; do
    read -ra w <<<"$cmd"
    cmd="${w[*]}"
    case "${w[*]}" in
      "apt-get update" | "rm -rf /var/lib/apt/lists/*") ;;
      "apt-get install -y --no-install-recommends "*)
        local pkg
        for pkg in "${w[@]:4}"; do
          [[ -n "${PACKAGE_FILES[$pkg]:-}" ]] || definition_unsupported "RUN $cmd" "Debian package $pkg is not provided"
          printf 'package=%s\n' "$pkg"
        done
        ;;
      "groupadd --gid "*)
        if ((${#w[@]} != 4)) || [[ ! "${w[2]}" =~ ^[0-9]+$ ]]; then
          definition_unsupported "RUN $cmd" "only groupadd --gid GID NAME"
        fi
        printf 'group=%s:%s\n' "${w[3]}" "${w[2]}"
        ;;
      useradd\ *) definition_useradd "$cmd" "${w[@]:1}" ;;
      "mkdir -p "*) printf 'dir=%s\n' "${w[@]:2}" ;;
      chown\ *)
        [[ "${w[1]}" =~ ^[0-9]+:[0-9]+$ ]] || definition_unsupported "RUN $cmd" "only chown UID:GID PATH..."
        local path
        for path in "${w[@]:2}"; do printf 'chown=%s:%s\n' "${w[1]}" "$path"; done
        ;;
      *) definition_unsupported "RUN $cmd" "this command is not reproduced" ;;
    esac
  done <<<"${1//&&/$'\n'}"
}

# definition_useradd COMMAND ARGS...: useradd with --uid, --gid, --home-dir,
# --shell and --no-create-home (HOME is not part of the image) only.
definition_useradd() {
  local cmd="$1" uid="" gid="" home="" shell="" name=""
  shift
  while (($#)); do
    case "$1" in
      --uid) uid="$2"; shift 2 ;;
      --gid) gid="$2"; shift 2 ;;
      --home-dir) home="$2"; shift 2 ;;
      --shell) shell="$2"; shift 2 ;;
      --no-create-home) shift ;;
      -*) definition_unsupported "RUN $cmd" "useradd $1 is not reproduced" ;;
      *) name="$1"; shift ;;
    esac
  done
  [[ "$uid" =~ ^[0-9]+$ && "$gid" =~ ^[0-9]+$ && -n "$home" && -n "$shell" && -n "$name" ]] ||
    definition_unsupported "RUN $cmd" "useradd needs --uid, --gid, --home-dir, --shell and a name"
  printf 'account=%s:%s:%s:%s:%s\n' "$name" "$uid" "$gid" "$home" "$shell"
}

# definition_values DEFINITION KEY: the values of KEY, one a line.
definition_values() {
  sed -n "s/^$2=//p" <<<"$1"
}

# definition_value DEFINITION KEY: the last value of KEY (a later USER,
# WORKDIR or ENTRYPOINT overrides an earlier one).
definition_value() {
  definition_values "$1" "$2" | tail -n1
}

# install_busybox ROOT APPLET...: busybox in ROOT/bin, a link per APPLET
# (every applet it has without any).
install_busybox() {
  local root="$1" applet
  shift
  install -D -m 0755 "$BUSYBOX" "$root/bin/busybox"
  if (($#)); then
    for applet in "$@"; do ln -s busybox "$root/bin/$applet"; done
  else
    while IFS= read -r applet; do
      [[ -e "$root/$applet" || -L "$root/$applet" ]] || ln -s /bin/busybox "$root/$applet"
    done < <("$BUSYBOX" --list-full)
  fi
}

# populate_worker_rootfs ROOT DEFINITION WORKER_BIN: the files of the worker
# image that DEFINITION (worker_image_definition) describes, in ROOT: busybox
# for sh and the usual tools, passwd and group, directories and owners, the
# worker binary, and what the Debian packages would have left.
populate_worker_rootfs() {
  local root="$1" definition="$2" worker_bin="$3" entry
  local -a f
  install -d -m 0755 "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,dev,proc,sys,var}
  install -d -m 1777 "$root/tmp" "$root/var/tmp"
  chmod 0700 "$root/root"
  install_busybox "$root"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  while IFS=: read -r -a f; do
    printf '%s:x:%s:\n' "${f[0]}" "${f[1]}" >>"$root/etc/group"
  done < <(definition_values "$definition" group)
  while IFS=: read -r -a f; do
    printf '%s:x:%s:%s::%s:%s\n' "${f[@]}" >>"$root/etc/passwd"
  done < <(definition_values "$definition" account)
  while IFS= read -r entry; do
    install -d -m 0755 "$root$entry"
  done < <(definition_values "$definition" dir)
  while IFS=: read -r -a f; do
    chown "${f[0]}:${f[1]}" "$root${f[2]}"
  done < <(definition_values "$definition" chown)
  while IFS= read -r entry; do
    install -D -m 0755 "$worker_bin" "$root$entry"
  done < <(definition_values "$definition" bin)
  while IFS= read -r entry; do
    case "$entry" in
      ca-certificates) install -D -m 0644 "$CA_BUNDLE" "$root${PACKAGE_FILES[$entry]}" ;;
      *) images_die "no way to provide Debian package $entry" ;;
    esac
  done < <(definition_values "$definition" package)
}

# unpack_docker_archive ARCHIVE DIR: the archive's files in DIR/archive and
# its layers applied in order in DIR/rootfs (owners kept: run as root).
# Checks what `ctr images import` relies on: one image in manifest.json, its
# config and layers present, and each layer's digest the config's diff_id.
unpack_docker_archive() {
  local archive="$1" dir="$2" config layer i=0 diff_id
  rm -rf "$dir"
  mkdir -p "$dir/archive" "$dir/rootfs"
  tar -xf "$archive" -C "$dir/archive" || images_die "$archive is not a tar archive"
  [[ -f "$dir/archive/manifest.json" ]] || images_die "$archive has no manifest.json (not a docker-archive)"
  jq -e 'length == 1' "$dir/archive/manifest.json" >/dev/null || images_die "$archive must hold exactly one image"
  config="$dir/archive/$(jq -r '.[0].Config' "$dir/archive/manifest.json")"
  [[ -f "$config" ]] || images_die "$archive: the config named in manifest.json is missing"
  while IFS= read -r layer; do
    [[ -f "$dir/archive/$layer" ]] || images_die "$archive: layer $layer is missing"
    diff_id="$(jq -r --argjson i "$i" '.rootfs.diff_ids[$i]' "$config")"
    [[ "sha256:$(sha256sum <"$dir/archive/$layer" | cut -d' ' -f1)" == "$diff_id" ]] ||
      images_die "$archive: layer $layer does not match diff_id $diff_id"
    tar -xpf "$dir/archive/$layer" -C "$dir/rootfs" --numeric-owner
    i=$((i + 1))
  done < <(jq -r '.[0].Layers[]' "$dir/archive/manifest.json")
  jq -e --argjson n "$i" '.rootfs.diff_ids | length == $n' "$config" >/dev/null ||
    images_die "$archive: the config lists another number of layers than manifest.json"
  cp "$config" "$dir/config.json"
}

# check_archive_tag DIR IMAGE: the unpacked archive is tagged IMAGE.
check_archive_tag() {
  local tag
  tag="$(jq -r '.[0].RepoTags // [] | if length == 1 then .[0] else "" end' "$1/archive/manifest.json")"
  [[ -n "$tag" && "$(normalize_ref "$tag")" == "$(normalize_ref "$2")" ]] ||
    images_die "the archive is tagged '${tag:-none}', not $2"
}

# check_worker_image DEFINITION DIR: the image unpacked in DIR (unpack_docker_archive)
# is what DEFINITION (worker_image_definition) describes: its config's user,
# working dir, entrypoint and environment, and in its root filesystem the
# accounts, directories and owners, the worker binary, the packages' files, a
# shell and the usual tools. Prints every difference, then fails if any.
check_worker_image() {
  local def="$1" root="$2/rootfs" config="$2/config.json" problems=() want got entry
  local -a f
  want="$(definition_value "$def" user)"
  got="$(jq -r '.config.User // ""' "$config")"
  [[ "$got" == "$want" ]] || problems+=("user is '$got', the Dockerfile says '$want'")
  want="$(definition_value "$def" workdir)"
  got="$(jq -r '.config.WorkingDir // ""' "$config")"
  [[ "$got" == "$want" ]] || problems+=("working dir is '$got', the Dockerfile says '$want'")
  want="$(definition_value "$def" entrypoint)"
  got="$(jq -c '.config.Entrypoint // null' "$config")"
  [[ "$got" == "$want" ]] || problems+=("entrypoint is $got, the Dockerfile says $want")
  entry="$(jq -r '.[0]' <<<"$want")"
  [[ -x "$root$entry" ]] || problems+=("the entrypoint $entry is missing or not executable")
  got="$(jq -c '.config.Cmd // [] ' "$config")"
  [[ "$got" == "[]" ]] || problems+=("the image has a command ($got); the Dockerfile has none")
  want="$(definition_values "$def" env | awk -F= '{ v[$1] = $0; if (!seen[$1]++) o[++n] = $1 } END { for (i = 1; i <= n; i++) print v[o[i]] }' | sort)"
  got="$(jq -r '.config.Env // [] | .[]' "$config" | sort)"
  [[ "$got" == "$want" ]] || problems+=("environment is [${got//$'\n'/ }], the Dockerfile gives [${want//$'\n'/ }]")

  while IFS=: read -r -a f; do
    grep -qx "${f[0]}:x:${f[1]}:${f[2]}:[^:]*:${f[3]}:${f[4]}" "$root/etc/passwd" 2>/dev/null ||
      problems+=("/etc/passwd has no ${f[0]} with uid ${f[1]}, gid ${f[2]}, home ${f[3]}, shell ${f[4]}")
    [[ -x "$root${f[4]}" || -L "$root${f[4]}" ]] || problems+=("${f[0]}'s shell ${f[4]} is missing")
  done < <(definition_values "$def" account)
  while IFS=: read -r -a f; do
    grep -q "^${f[0]}:x:${f[1]}:" "$root/etc/group" 2>/dev/null || problems+=("/etc/group has no ${f[0]} with gid ${f[1]}")
  done < <(definition_values "$def" group)
  while IFS= read -r entry; do
    [[ -d "$root$entry" ]] || problems+=("directory $entry is missing")
  done < <(definition_values "$def" dir | sort -u)
  while IFS=: read -r -a f; do
    if ! got="$(stat -c %u:%g "$root${f[2]}" 2>/dev/null)"; then
      problems+=("${f[2]} is missing, so not owned by ${f[0]}:${f[1]}")
    elif [[ "$got" != "${f[0]}:${f[1]}" ]]; then
      problems+=("${f[2]} is owned by $got, not ${f[0]}:${f[1]}")
    fi
  done < <(definition_values "$def" chown)
  while IFS= read -r entry; do
    [[ -f "$root$entry" && -x "$root$entry" ]] || problems+=("the worker binary $entry is missing or not executable")
  done < <(definition_values "$def" bin)
  while IFS= read -r entry; do
    [[ -s "$root${PACKAGE_FILES[$entry]}" ]] || problems+=("package $entry: ${PACKAGE_FILES[$entry]} is missing")
  done < <(definition_values "$def" package)
  for entry in "${JOB_TOOLS[@]}"; do
    [[ -L "$root/bin/$entry" || -L "$root/usr/bin/$entry" || -x "$root/bin/$entry" || -x "$root/usr/bin/$entry" ]] ||
      problems+=("job tool $entry is missing")
  done
  [[ "$(stat -c %a "$root/tmp" 2>/dev/null)" == 1777 ]] || problems+=("/tmp is not mode 1777")

  if ((${#problems[@]})); then
    printf '[images] the image differs from %s:\n' "$(basename "$WORKER_DOCKERFILE")" >&2
    printf '  - %s\n' "${problems[@]}" >&2
    return 1
  fi
}
