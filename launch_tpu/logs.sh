#!/usr/bin/env bash
# Shows (and follows) the training log of a worker of TPU_NAME.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF2
Usage: ${0##*/} [-n|--dry-run] [--worker=N|all] [--lines=N] [--no-follow]

Runs \`tail -n LINES -F LOG_FILE\` on a worker of TPU_NAME (worker 0 by default, which
prints the progress lines and metrics of the run started by train.sh). Ctrl-C stops following;
the run goes on.

Required: PROJECT ZONE TPU_NAME.
Optional: LOG_FILE (default workdir/RUN_NAME.log under REMOTE_DIR), RUN_NAME, REMOTE_DIR,
  SSH_FLAGS, DRY_RUN=1.
  --worker=N      worker number, or all (default 0)
  --lines=N       lines of history to show first (default 100)
  --no-follow     print them and return
  -n, --dry-run   print the command instead of running it
  -h, --help      this help
EOF2
}

worker=0
lines=100
follow=-F
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    -n | --dry-run) DRY_RUN=1 ;;
    --worker=*) worker=${1#*=} ;;
    --lines=*) lines=${1#*=} ;;
    --no-follow) follow='' ;;
    *) die "unknown argument '$1' (see -h)" ;;
  esac
  shift
done

require PROJECT ZONE TPU_NAME LOG_FILE
[[ $worker =~ ^([0-9]+|all)$ ]] || die "--worker must be a number or all, not '$worker'"
[[ $lines =~ ^[0-9]+$ ]] || die "--lines must be a number, not '$lines'"
tpu_ssh "$worker" \
  "cd $(quote "$REMOTE_DIR") && tail -n $lines${follow:+ $follow} $(quote "$LOG_FILE")"
