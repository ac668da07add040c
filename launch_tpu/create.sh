#!/usr/bin/env bash
# Creates the TPU VM or pod slice TPU_NAME (directly, or through a queued resource).
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: ${0##*/} [-n|--dry-run] [--queued] [--wait] [--spot] [--preemptible] [-- GCLOUD_FLAGS...]

Creates the TPU VM or pod slice TPU_NAME in ZONE:
  gcloud compute tpus tpu-vm create TPU_NAME --accelerator-type=... --version=...
or, with --queued (QUEUED=1), a queued resource QUEUED_RESOURCE that brings up node TPU_NAME:
  gcloud compute tpus queued-resources create QUEUED_RESOURCE --node-id=TPU_NAME ...

Required: PROJECT ZONE TPU_NAME ACCELERATOR_TYPE (e.g. v5litepod-8, v4-32, v5p-8, v6e-8).
Optional: RUNTIME_VERSION (default from the accelerator, e.g. $(default_runtime_version v5litepod-8)
  for v5e), QUEUED_RESOURCE (default TPU_NAME-qr), SCOPES (default cloud-platform), SPOT=1,
  PREEMPTIBLE=1 (tpu-vm create only), DRY_RUN=1.
  --wait          with --queued: poll until the queued resource is ACTIVE
  -n, --dry-run   print the commands instead of running them
  -h, --help      this help
Flags after -- go to gcloud unchanged (e.g. --reserved, --network=NAME, --internal-ips).
EOF
}

wait=0
extra=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    -n | --dry-run) DRY_RUN=1 ;;
    --queued) QUEUED=1 ;;
    --wait) wait=1 ;;
    --spot) SPOT=1 ;;
    --preemptible) PREEMPTIBLE=1 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument '$1' (see -h)" ;;
  esac
  shift
done

require PROJECT ZONE TPU_NAME ACCELERATOR_TYPE
RUNTIME_VERSION=${RUNTIME_VERSION:-$(default_runtime_version "$ACCELERATOR_TYPE")}
[[ -n $RUNTIME_VERSION ]] ||
  die "missing required variable(s): RUNTIME_VERSION" \
    "(no default for ACCELERATOR_TYPE=$ACCELERATOR_TYPE)"
where_flags
capacity=()
[[ $SPOT == 1 ]] && capacity+=(--spot)

if [[ $QUEUED == 1 ]]; then
  [[ $PREEMPTIBLE == 1 ]] && die "PREEMPTIBLE=1 is for tpu-vm create; queued resources use SPOT=1"
  run gcloud compute tpus queued-resources create "$QUEUED_RESOURCE" "${WHERE[@]}" \
    --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" --scopes="$SCOPES" "${capacity[@]}" "${extra[@]}"
  describe=(gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" "${WHERE[@]}"
    --format='value(state.state)')
  if [[ $wait == 1 ]] && is_dry_run; then
    quote "${describe[@]}"
  elif [[ $wait == 1 ]]; then
    while state=$("${describe[@]}"); [[ $state != ACTIVE ]]; do
      case $state in FAILED | SUSPENDED) die "queued resource $QUEUED_RESOURCE is $state" ;; esac
      echo "queued resource $QUEUED_RESOURCE: ${state:-unknown}; checking again in 30 s" >&2
      sleep 30
    done
  fi
  echo "# state: $(quote "${describe[@]}")" >&2
else
  [[ $PREEMPTIBLE == 1 ]] && capacity+=(--preemptible)
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${WHERE[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" --scopes="$SCOPES" \
    "${capacity[@]}" "${extra[@]}"
fi
echo "# next: launch_tpu/install.sh" >&2
