#!/usr/bin/env bash
# shellcheck disable=SC2016  # sed scripts below hold Dockerfile text with $ in it
# Tests of images-lib.sh without buildah or a built worker: what it reads
# from Dockerfile.worker, that a Dockerfile change the no-Docker build does
# not reproduce fails the read, and that check_worker_image finds every way an
# image can differ from the definition. Needs busybox-static (its busybox
# stands in for the worker binary) and ca-certificates.
#
# Usage: scripts/test-images-lib.sh     prints "N passed, N failed"; exit 1 on a failure
set -euo pipefail
# shellcheck source=images-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/images-lib.sh"

passed=0
failed=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); printf 'FAIL: %s\n' "$*" >&2; }

# The worker pod template (hodei-k8s/src/pod_spec.rs) runs as 1000:1000 with
# a read-only root, HOME and /tmp on an emptyDir and /workspace as the working
# dir; the image must agree.
expected="base=debian:\${DEBIAN_RELEASE}-slim
env=PATH=$DEBIAN_BASE_PATH
package=ca-certificates
group=hodei:1000
account=hodei:1000:1000:/tmp:/bin/sh
dir=/workspace
chown=1000:1000:/workspace
bin=/usr/local/bin/hodei-worker-bin
env=HOME=/tmp
dir=/workspace
workdir=/workspace
user=1000:1000
entrypoint=[\"/usr/local/bin/hodei-worker-bin\"]"
definition="$(worker_image_definition "$WORKER_DOCKERFILE" "$WORKER_STAGE")"
if [[ "$definition" == "$expected" ]]; then pass; else fail "Dockerfile.worker reads as:"$'\n'"$definition"; fi

# rejects DESCRIPTION SED_SCRIPT: Dockerfile.worker edited by SED_SCRIPT no
# longer reads, and the message names the instruction.
rejects() {
  local file="$work/Dockerfile.$passed.$failed" out
  sed "$2" "$WORKER_DOCKERFILE" >"$file"
  cmp -s "$file" "$WORKER_DOCKERFILE" && { fail "$1: the edit changed nothing"; return; }
  if out="$(worker_image_definition "$file" "$WORKER_STAGE" 2>&1)"; then
    fail "$1: read without complaint"
  elif [[ "$out" != *"teach scripts/images-lib.sh"* ]]; then
    fail "$1: unclear message: $out"
  else
    pass
  fi
}
rejects "another package" 's/--no-install-recommends ca-certificates/--no-install-recommends ca-certificates git/'
rejects "a shell-form entrypoint" 's|^ENTRYPOINT .*|ENTRYPOINT /usr/local/bin/hodei-worker-bin|'
rejects "a named user" 's/^USER 1000:1000$/USER hodei/'
rejects "a new instruction" 's|^ENV HOME=/tmp$|ENV HOME=/tmp\nEXPOSE 8080|'
rejects "an unknown command" 's|&& mkdir -p /workspace|\&\& mkdir -p /workspace \&\& ln -s /tmp /scratch|'
rejects "an expanded ENV value" 's|^ENV HOME=/tmp$|ENV HOME=$TMPDIR|'
rejects "a pipe in RUN" 's|&& mkdir -p /workspace|\&\& mkdir -p /workspace \| cat|'
rejects "another base image" 's|^FROM debian:${DEBIAN_RELEASE}-slim AS base|FROM alpine:3 AS base|'
rejects "a useradd option" 's/--no-create-home/--no-create-home --groups users/'
if (worker_image_definition "$WORKER_DOCKERFILE" no-such-stage >/dev/null 2>&1); then fail "a missing stage read"; else pass; fi

# The with-asdf stage is not the runtime chain: editing it changes nothing.
sed 's|^ARG ASDF_TOOLS=""|ARG ASDF_TOOLS=""\nEXPOSE 8080|' "$WORKER_DOCKERFILE" >"$work/Dockerfile.asdf"
if [[ "$(worker_image_definition "$work/Dockerfile.asdf" "$WORKER_STAGE")" == "$definition" ]]; then pass; else fail "the with-asdf stage leaked into the runtime stage"; fi

# An image made by populate_worker_rootfs with the config build-images.sh
# sets, then spoiled one way at a time.
fake_image() {
  local dir="$1"
  rm -rf "$dir"
  mkdir -p "$dir/rootfs"
  populate_worker_rootfs "$dir/rootfs" "$definition" "$BUSYBOX"
  jq -n --arg user "$(definition_value "$definition" user)" --arg dir "$(definition_value "$definition" workdir)" \
    --argjson entrypoint "$(definition_value "$definition" entrypoint)" \
    --args '{config: {User: $user, WorkingDir: $dir, Entrypoint: $entrypoint, Env: $ARGS.positional, Cmd: []}}' \
    "$(definition_values "$definition" env)" >"$dir/config.json"
  # one argument per variable, not one for all
  jq '.config.Env |= (.[0] | split("\n"))' "$dir/config.json" >"$dir/c" && mv "$dir/c" "$dir/config.json"
}
fake_image "$work/good"
if check_worker_image "$definition" "$work/good" 2>"$work/err"; then pass; else fail "a faithful image failed: $(cat "$work/err")"; fi

# differs DESCRIPTION EXPECTED_TEXT COMMAND...: COMMAND spoils a fresh fake
# image in $img; check_worker_image must fail and say EXPECTED_TEXT.
differs() {
  local what="$1" text="$2"
  shift 2
  img="$work/bad"
  rm -rf "$img"
  cp -a "$work/good" "$img"
  "$@"
  if check_worker_image "$definition" "$img" 2>"$work/err"; then
    fail "$what: not found"
  elif ! grep -qF -- "$text" "$work/err"; then
    fail "$what: the report does not say '$text': $(cat "$work/err")"
  else
    pass
  fi
}
config() { jq "$1" "$img/config.json" >"$img/c" && mv "$img/c" "$img/config.json"; }
differs "user" "user is '0:0'" config '.config.User = "0:0"'
differs "working dir" "working dir is '/'" config '.config.WorkingDir = "/"'
differs "entrypoint" "entrypoint is" config '.config.Entrypoint = ["/bin/sh"]'
differs "a command" "has a command" config '.config.Cmd = ["--help"]'
differs "a missing variable" "environment is" config '.config.Env |= map(select(startswith("HOME=") | not))'
differs "an extra variable" "environment is" config '.config.Env += ["HODEI_LOG=debug"]'
differs "the account" "/etc/passwd has no hodei" sed -i 's|^hodei:.*|hodei:x:1001:1000::/tmp:/bin/sh|' "$work/bad/rootfs/etc/passwd"
differs "the group" "/etc/group has no hodei" sed -i '/^hodei:/d' "$work/bad/rootfs/etc/group"
differs "the workspace owner" "/workspace is owned by 0:0" chown 0:0 "$work/bad/rootfs/workspace"
differs "the workspace" "directory /workspace is missing" rm -r "$work/bad/rootfs/workspace"
differs "the worker binary" "the worker binary" rm "$work/bad/rootfs/usr/local/bin/hodei-worker-bin"
differs "the CA bundle" "package ca-certificates" rm "$work/bad/rootfs$CA_BUNDLE"
differs "the shell" "shell /bin/sh is missing" rm "$work/bad/rootfs/bin/sh"
differs "a tool" "job tool awk is missing" rm "$work/bad/rootfs/usr/bin/awk"
differs "/tmp" "/tmp is not mode 1777" chmod 0755 "$work/bad/rootfs/tmp"
# Another image altogether (an empty root): every difference is listed.
differs "an empty image" "the worker binary" find "$work/bad/rootfs" -mindepth 1 -delete
# A Dockerfile change that reads fine still shows against an older image.
definition_new="${definition/$'\n'env=HOME=\/tmp$'\n'/$'\n'env=HOME=\/workspace$'\n'}"
[[ "$definition_new" != "$definition" ]] || fail "the test did not change the definition"
if check_worker_image "$definition_new" "$work/good" 2>/dev/null; then fail "a changed ENV went unnoticed"; else pass; fi

echo "images-lib: $passed passed, $failed failed"
((failed == 0))
