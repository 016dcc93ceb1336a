#!/usr/bin/env bash
# Checks that the worker image built without Docker (build-images.sh) and
# Dockerfile.worker still describe the same image. Always reads the
# Dockerfile's runtime stage, failing on anything build-images.sh does not
# reproduce; then, if there is a worker archive, compares its user, working
# dir, entrypoint, environment and files with the Dockerfile.
#
# Usage: scripts/check-worker-image.sh [ARCHIVE]
#        ARCHIVE defaults to the one build-images.sh writes for
#        HODEI_WORKER_IMAGE (see images-lib.sh), checked only if it exists.
# Exit:  0 when they agree, 1 with every difference on stderr.
set -euo pipefail
# shellcheck source=images-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/images-lib.sh"

archive="${1:-}"
definition="$(worker_image_definition "$WORKER_DOCKERFILE" "$WORKER_STAGE")"
images_log "Dockerfile.worker: every instruction of its $WORKER_STAGE stage is reproduced"
if [[ -z "$archive" ]]; then
  archive="$(archive_for "$HODEI_WORKER_IMAGE")"
  if [[ ! -f "$archive" ]]; then
    images_log "no worker archive at $archive (scripts/build-images.sh builds it); skipped comparing it"
    exit 0
  fi
fi
[[ -f "$archive" ]] || images_die "$archive: no such file"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unpack_docker_archive "$archive" "$work"
check_worker_image "$definition" "$work"
images_log "$archive matches Dockerfile.worker"
