#!/usr/bin/env bash
# Deletes the TPU VM or pod slice TPU_NAME (or its queued resource).
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF2
Usage: ${0##*/} [-n|--dry-run] [-y|--yes] [--async] [--queued]

Deletes TPU_NAME (gcloud compute tpus tpu-vm delete) or, with --queued (QUEUED=1), the queued
resource QUEUED_RESOURCE together with its node (queued-resources delete --force). Everything on
the workers' disks is lost: run sync.sh first.

Required: PROJECT ZONE TPU_NAME.
Optional: QUEUED_RESOURCE (default TPU_NAME-qr), DRY_RUN=1.
  -y, --yes       do not ask for confirmation (gcloud --quiet)
  --async         return without waiting for the deletion to finish
  -n, --dry-run   print the command instead of running it
  -h, --help      this help
EOF2
}

flags=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    -n | --dry-run) DRY_RUN=1 ;;
    -y | --yes) flags+=(--quiet) ;;
    --async) flags+=(--async) ;;
    --queued) QUEUED=1 ;;
    *) die "unknown argument '$1' (see -h)" ;;
  esac
  shift
done

require PROJECT ZONE TPU_NAME
where_flags
if [[ $QUEUED == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE" "${WHERE[@]}" --force \
    "${flags[@]}"
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${WHERE[@]}" "${flags[@]}"
fi
