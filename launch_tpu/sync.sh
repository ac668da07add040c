#!/usr/bin/env bash
# Copies the run's workdir (checkpoints, metrics, transcripts) and log to BUCKET, or from it.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF2
Usage: ${0##*/} [-n|--dry-run] [--down=LOCAL_DIR]

Without --down, on worker 0 of TPU_NAME:
  gcloud storage rsync --recursive WORKDIR BUCKET/RUN_NAME   (and LOG_FILE to BUCKET/RUN_NAME.log)
With --down=LOCAL_DIR, on this machine:
  gcloud storage rsync --recursive BUCKET/RUN_NAME LOCAL_DIR  (or WORKDIR, when it is a gs:// path)
A WORKDIR that is already gs://... needs no upload (train on pod slices that way: every host writes
its own checkpoint shards there).

Required: BUCKET (gs://NAME[/PREFIX]); without --down also PROJECT ZONE TPU_NAME.
Optional: RUN_NAME (default spiral), WORKDIR, LOG_FILE, REMOTE_DIR, SSH_FLAGS, DRY_RUN=1.
  --down=DIR      download instead of upload
  -n, --dry-run   print the commands instead of running them
  -h, --help      this help
EOF2
}

down=''
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    -n | --dry-run) DRY_RUN=1 ;;
    --down=*) down=${1#*=} ;;
    *) die "unknown argument '$1' (see -h)" ;;
  esac
  shift
done

if [[ -n $down && $WORKDIR == gs://* ]]; then
  run mkdir -p "$down"
  run gcloud storage rsync --recursive "$WORKDIR" "$down"
  exit 0
fi
require BUCKET
[[ $BUCKET == gs://* ]] || die "BUCKET must look like gs://NAME, not '$BUCKET'"
dest="${BUCKET%/}/$RUN_NAME"
if [[ -n $down ]]; then
  run mkdir -p "$down"
  run gcloud storage rsync --recursive "$dest" "$down"
  exit 0
fi
require PROJECT ZONE TPU_NAME WORKDIR LOG_FILE
[[ $WORKDIR != gs://* ]] ||
  die "WORKDIR=$WORKDIR is already in a bucket; nothing to upload (use --down=DIR)"
tpu_ssh 0 "set -e; cd $(quote "$REMOTE_DIR"); \
gcloud storage rsync --recursive $(quote "$WORKDIR" "$dest"); \
if [ -f $(quote "$LOG_FILE") ]; then gcloud storage cp $(quote "$LOG_FILE" "$dest.log"); fi"
