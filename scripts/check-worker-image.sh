#!/usr/bin/env bash
# Checks that the worker image built without Docker (build-images.sh) and
# Dockerfile.worker still describe the same image. Reads the Dockerfile's
# runtime stage, failing on anything build-images.sh does not reproduce; given
# a worker archive, also compares its user, working dir, entrypoint,
# environment and files with the Dockerfile (build-images.sh does that after
# every build).
#
# Usage: scripts/check-worker-image.sh [ARCHIVE]
# Exit:  0 when they agree, 1 with every difference on stderr.
set -euo pipefail
# shellcheck source=images-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/images-lib.sh"

archive="${1:-}"
definition="$(worker_image_definition "$WORKER_DOCKERFILE" "$WORKER_STAGE")"
images_log "Dockerfile.worker: every instruction of its $WORKER_STAGE stage is reproduced"
[[ -n "$archive" ]] || exit 0
[[ -f "$archive" ]] || images_die "$archive: no such file"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unpack_docker_archive "$archive" "$work"
check_worker_image "$definition" "$work"
images_log "$archive matches Dockerfile.worker"
