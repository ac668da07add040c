#!/usr/bin/env bash
# Starts (or stops) `python -m jaxplay.main` on every worker of TPU_NAME.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: ${0##*/} [-n|--dry-run] [--foreground | --stop] [-- --config.a.b=VALUE ...]

Runs on every worker (--worker=all), from REMOTE_DIR:
  env JAX_PLATFORMS=tpu [TRAIN_ENV] .venv/bin/python -m jaxplay.main \\
    --config=CONFIG --workdir=WORKDIR [OVERRIDES]
in the background (nohup; output to LOG_FILE, pid next to it), so the run survives the ssh session;
follow it with logs.sh. Arguments after -- are passed to jaxplay.main (config overrides).
jaxplay.main calls jax.distributed.initialize() itself, which finds the other workers of a
pod slice.

Required: PROJECT ZONE TPU_NAME.
Optional: CONFIG (default configs/spiral.py), RUN_NAME (default spiral), WORKDIR (default
  workdir/RUN_NAME under REMOTE_DIR; use gs://BUCKET/... on multi-host slices), LOG_FILE (default
  workdir/RUN_NAME.log), TRAIN_ENV ("KEY=VALUE ..."), REMOTE_DIR, SSH_FLAGS, DRY_RUN=1.
  --foreground    stream the output through ssh instead (and tee it to LOG_FILE)
  --stop          stop the run started in the background (kills the pid in LOG_FILE.pid)
  -n, --dry-run   print the commands instead of running them
  -h, --help      this help
EOF
}

mode=background
overrides=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    -n | --dry-run) DRY_RUN=1 ;;
    --foreground) mode=foreground ;;
    --stop) mode=stop ;;
    --) shift; overrides=("$@"); break ;;
    *) die "unknown argument '$1' (see -h); config overrides go after --" ;;
  esac
  shift
done

require PROJECT ZONE TPU_NAME CONFIG WORKDIR LOG_FILE
read -r -a env_words <<<"$TRAIN_ENV"
for word in "${env_words[@]}"; do
  [[ $word =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "TRAIN_ENV word '$word' is not KEY=VALUE"
done

dir=$(quote "$REMOTE_DIR")
log=$(quote "$LOG_FILE")
pid=$(quote "$LOG_FILE.pid")
program="env $(quote JAX_PLATFORMS=tpu "${env_words[@]}") .venv/bin/python -m jaxplay.main \
$(quote "--config=$CONFIG" "--workdir=$WORKDIR" "${overrides[@]}")"

case $mode in
  background)
    tpu_ssh all "set -e; cd $dir; mkdir -p \"\$(dirname $log)\"; \
if [ -f $pid ] && kill -0 \"\$(cat $pid)\" 2>/dev/null; then \
echo \"jaxplay.main is already running (pid \$(cat $pid)); stop it with train.sh --stop\" >&2; \
exit 1; fi; setsid nohup $program >$log 2>&1 </dev/null & echo \$! >$pid; \
echo \"\$(hostname): started pid \$!\""
    echo "# follow: launch_tpu/logs.sh" >&2
    ;;
  foreground)
    tpu_ssh all "set -eo pipefail; cd $dir; mkdir -p \"\$(dirname $log)\"; $program 2>&1 | tee $log"
    ;;
  stop)
    tpu_ssh all "cd $dir; \
if [ -f $pid ]; then kill \"\$(cat $pid)\" 2>/dev/null || true; rm -f $pid; fi; \
echo \"\$(hostname): stopped\""
    ;;
esac
