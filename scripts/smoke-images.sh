#!/usr/bin/env bash
# shellcheck disable=SC2016  # the container's shell expands the $ in its scripts
# Runs the archives build-images.sh wrote with runc, no cluster needed:
#   worker  as the pod template runs it: its user, working dir and env from
#           the image, a read-only root, emptyDir-like (0777) directories at
#           /tmp and /workspace, no capabilities. A shell job sees uid 1000, HOME=/tmp
#           and a writable /workspace; the entrypoint without its HODEI_*
#           variables names the missing one and exits 2.
#   pause   as PID 1 of its own PID namespace: it reaps an orphan re-parented
#           to it and exits 0 on SIGTERM.
# Installs runc with apt if it is missing. Leaves nothing behind: the bundles
# and runc's state live in a temporary dir under HODEI_IMAGE_DIR.
#
# Usage: scripts/smoke-images.sh      (same env as build-images.sh)
# Exit:  0 when every check passes; prints "N passed, N failed".
set -euo pipefail
# shellcheck source=images-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/images-lib.sh"

worker_archive="$(archive_for "$HODEI_WORKER_IMAGE")"
pause_archive="$(archive_for "$HODEI_PAUSE_IMAGE")"
for archive in "$worker_archive" "$pause_archive"; do
  [[ -f "$archive" ]] || images_die "$archive is missing; run scripts/build-images.sh first"
done
if ! command -v runc >/dev/null; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >&2
fi

work="$(mktemp -d "$HODEI_IMAGE_DIR/.smoke.XXXXXX")"
ids=()
cleanup() {
  local id
  for id in ${ids[@]+"${ids[@]}"}; do runc --root "$work/runc" delete --force "$id" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() {
  local what="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
    images_log "ok: $what"
  else
    failed=$((failed + 1))
    images_log "FAILED: $what"
  fi
}

# bundle NAME ARCHIVE ARG...: a runc bundle in $work/NAME for the image in
# ARCHIVE, running ARGs (the image's entrypoint when none) with the image's
# user, working dir and env, the way the worker pod's security context asks,
# with emptyDirs at /tmp and at /workspace when that is the working dir.
bundle() {
  local name="$1" archive="$2" dir="$work/$1" args arg
  shift 2
  unpack_docker_archive "$archive" "$dir/image"
  (cd "$dir" && runc spec)
  args="[]"
  for arg in "$@"; do args="$(jq -c --arg a "$arg" '. + [$a]' <<<"$args")"; done
  # The pod's emptyDirs: host directories with mode 0777.
  install -d -m 0777 "$dir/tmp" "$dir/workspace"
  jq --slurpfile image "$dir/image/config.json" --argjson args "$args" --arg tmp "$dir/tmp" --arg workspace "$dir/workspace" '
      ($image[0].config) as $c
    | ($c.User | split(":") | map(tonumber)) as $u
    | .process.args = (if $args == [] then $c.Entrypoint + ($c.Cmd // []) else $args end)
    | .process.user = {uid: $u[0], gid: $u[1]}
    | .process.cwd = (if ($c.WorkingDir // "") == "" then "/" else $c.WorkingDir end)
    | .process.env = $c.Env
    | .process.terminal = false
    | .process.noNewPrivileges = true
    | .process.capabilities = {bounding: [], effective: [], permitted: [], inheritable: [], ambient: []}
    | .root = {path: "image/rootfs", readonly: true}
    | .hostname = "hodei-smoke"
    | .mounts += [{destination: "/tmp", type: "bind", source: $tmp, options: ["rbind", "rw", "nosuid", "nodev"]}]
    | .mounts += (if $c.WorkingDir == "/workspace" then [{destination: "/workspace", type: "bind", source: $workspace, options: ["rbind", "rw", "nosuid", "nodev"]}] else [] end)
    ' <"$dir/config.json" >"$dir/bundle.json"
  mv "$dir/bundle.json" "$dir/config.json"
}

# run NAME: run the bundle NAME in the foreground; its output in $work/NAME.out.
run() {
  local id="hodei-smoke-$$-$1"
  ids+=("$id")
  timeout 60 runc --root "$work/runc" run --bundle "$work/$1" "$id" >"$work/$1.out" 2>&1 </dev/null
}

# --- worker: a shell job, as the pod runs it
bundle job "$worker_archive" /bin/sh -c '
  id
  echo "HOME=$HOME PWD=$PWD"
  ls -ld /workspace
  touch /workspace/file && echo "workspace writable"
  touch /usr/file 2>/dev/null || echo "root read-only"
  echo hello | sed s/hello/tools/ | awk "{ print \$1 }"
  test -s /etc/ssl/certs/ca-certificates.crt && echo "ca bundle"'
check "a shell job runs in the worker image" run job
out="$(cat "$work/job.out")"
printf '%s\n' "$out" | sed 's/^/    /' >&2
check "it runs as uid and gid 1000" grep -q '^uid=1000(hodei) gid=1000(hodei)' <<<"$out"
check "HOME is /tmp, PWD /workspace" grep -qx 'HOME=/tmp PWD=/workspace' <<<"$out"
check "/workspace is writable, the root is not" grep -q 'workspace writable' <<<"$out"
check "the root filesystem is read-only" grep -qx 'root read-only' <<<"$out"
check "busybox tools work" grep -qx 'tools' <<<"$out"
check "the CA bundle is there" grep -qx 'ca bundle' <<<"$out"

# --- worker: its entrypoint without the variables the server sets
bundle entrypoint "$worker_archive"
code=0
run entrypoint || code=$?
printf '    %s\n' "$(cat "$work/entrypoint.out")" >&2
check "hodei-worker-bin starts and exits 2 without HODEI_* variables" test "$code" -eq 2
check "it names the missing variable" grep -q 'HODEI_[A-Z_]*: must be set' "$work/entrypoint.out"

# --- pause: PID 1 that reaps and stops on SIGTERM
bundle pause "$pause_archive"
pause_id="hodei-smoke-$$-pause"
ids+=("$pause_id")
runc --root "$work/runc" run --bundle "$work/pause" "$pause_id" >"$work/pause.out" 2>&1 </dev/null &
runner=$!
for _ in $(seq 50); do
  [[ "$(runc --root "$work/runc" state "$pause_id" 2>/dev/null | jq -r .status)" == running ]] && break
  sleep 0.1
done
# The inner shell exits at once, so its sleep is re-parented to PID 1.
runc --root "$work/runc" exec "$pause_id" /bin/sh -c '(sleep 1 &) ; exit 0'
sleep 2
zombies="$(runc --root "$work/runc" exec "$pause_id" /bin/sh -c '
  for f in /proc/[0-9]*/stat; do read -r line <"$f" && case "$line" in *") Z "*) echo "$line" ;; esac; done')"
check "pause reaps an orphan re-parented to it" test -z "$zombies"
runc --root "$work/runc" kill "$pause_id" TERM
code=0
wait "$runner" || code=$?
check "pause exits 0 on SIGTERM" test "$code" -eq 0

echo "smoke-images: $passed passed, $failed failed"
((failed == 0))
