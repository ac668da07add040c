# shellcheck shell=bash
# Settings and helpers shared by the launch_tpu scripts (sourced by them, never run on its own).
# Every setting is an environment variable; README.md lists them.

LAUNCH_TPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAUNCH_TPU_DIR/.." && pwd)

PROJECT=${PROJECT:-}
ZONE=${ZONE:-}
TPU_NAME=${TPU_NAME:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-}
RUNTIME_VERSION=${RUNTIME_VERSION:-}  # Empty: default_runtime_version of ACCELERATOR_TYPE.
QUEUED=${QUEUED:-0}  # 1: go through a queued resource (gcloud compute tpus queued-resources).
QUEUED_RESOURCE=${QUEUED_RESOURCE:-${TPU_NAME:+$TPU_NAME-qr}}
SPOT=${SPOT:-0}
PREEMPTIBLE=${PREEMPTIBLE:-0}
SCOPES=${SCOPES:-https://www.googleapis.com/auth/cloud-platform}
SSH_FLAGS=${SSH_FLAGS:-}  # Extra flags for every `tpu-vm ssh/scp`, e.g. "--internal-ip".
BUCKET=${BUCKET:-}
RUN_NAME=${RUN_NAME:-spiral}
CONFIG=${CONFIG:-configs/spiral.py}
REMOTE_DIR=${REMOTE_DIR:-jaxplay}  # On each worker, relative to the home directory (or absolute).
WORKDIR=${WORKDIR:-workdir/$RUN_NAME}  # Relative to REMOTE_DIR, absolute, or gs://...
LOG_FILE=${LOG_FILE:-workdir/$RUN_NAME.log}  # On each worker, relative to REMOTE_DIR.
TRAIN_ENV=${TRAIN_ENV:-}  # Extra KEY=VALUE words for the training process.
REPO_URL=${REPO_URL:-}  # Empty: copy this checkout to the workers instead of cloning.
REPO_REF=${REPO_REF:-main}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
UV_VERSION=${UV_VERSION:-0.13.9}
DRY_RUN=${DRY_RUN:-0}

die() {
  echo "${0##*/}: $*" >&2
  exit 2
}

is_dry_run() {
  case ${DRY_RUN:-0} in 0 | '' | false | no) return 1 ;; esac
}

# Prints its arguments as one shell-quoted command line.
quote() {
  local arg flag words=()
  for arg in "$@"; do
    flag=''
    if [[ $arg =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then  # Quote only the value of --flag=value.
      flag=${BASH_REMATCH[1]}
      arg=${BASH_REMATCH[2]}
    fi
    if [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      words+=("$flag$arg")
    else
      words+=("$flag'${arg//\'/\'\\\'\'}'")
    fi
  done
  printf '%s\n' "${words[*]}"
}

# Runs a command, or in dry-run mode prints it (copy-pasteable) and runs nothing.
run() {
  if is_dry_run; then
    quote "$@"
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}

# Fails naming every listed variable that is empty.
require() {
  local name missing=()
  for name in "$@"; do
    [[ -n ${!name:-} ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) ||
    die "missing required variable(s): ${missing[*]}" \
      "(export them or put them before the command, e.g. ${missing[0]}=...; see -h)"
}

# The runtime Google recommends for JAX on each TPU generation (cloud.google.com/tpu/docs/runtimes).
default_runtime_version() {
  case $1 in
    v6e*) echo v2-alpha-tpuv6e ;;
    v5p*) echo v2-alpha-tpuv5 ;;
    v5litepod* | v5e*) echo v2-alpha-tpuv5-lite ;;
    v2* | v3* | v4*) echo tpu-ubuntu2204-base ;;
  esac
}

# The jax version pinned in pyproject.toml ("jax==X").
jax_version() {
  local version
  version=$(sed -n 's/^[[:space:]]*"jax==\([^"]*\)".*/\1/p' "$REPO_ROOT/pyproject.toml")
  [[ -n $version ]] || die "no \"jax==VERSION\" pin found in $REPO_ROOT/pyproject.toml"
  echo "$version"
}

# --project and --zone for every gcloud compute tpus command.
where_flags() {
  WHERE=(--project="$PROJECT" --zone="$ZONE")
}

# tpu_ssh WORKER COMMAND: runs COMMAND (a shell string) on WORKER (a number or "all").
tpu_ssh() {
  local extra=()
  read -r -a extra <<<"$SSH_FLAGS"
  where_flags
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${WHERE[@]}" --worker="$1" --command="$2" \
    "${extra[@]}"
}

# tpu_scp SOURCE DEST [WORKER]: copies a local file to DEST (TPU_NAME:path) on WORKER (default all).
tpu_scp() {
  local extra=()
  read -r -a extra <<<"$SSH_FLAGS"
  where_flags
  run gcloud compute tpus tpu-vm scp "$1" "$2" "${WHERE[@]}" --worker="${3:-all}" "${extra[@]}"
}
