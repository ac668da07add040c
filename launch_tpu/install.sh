#!/usr/bin/env bash
# Puts jaxplay on every worker of TPU_NAME and installs it with jax[tpu] in a virtual environment.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: ${0##*/} [-n|--dry-run] [--skip-code] [--skip-env]

On every worker (--worker=all) of TPU_NAME:
  1. code: git clone REPO_URL at REPO_REF into REMOTE_DIR (or update it), or, with REPO_URL
     empty, copy this checkout there (tar + gcloud compute tpus tpu-vm scp);
  2. environment: uv (PyPI, uv==$UV_VERSION) makes REMOTE_DIR/.venv with Python $PYTHON_VERSION,
     installs -e '.[local]' and jax[tpu] at the jax pin of pyproject.toml (now $(jax_version)),
     then prints the local TPU devices.

Required: PROJECT ZONE TPU_NAME.
Optional: REPO_URL, REPO_REF (branch or tag, default main), REMOTE_DIR (default jaxplay),
  PYTHON_VERSION, UV_VERSION, SSH_FLAGS, DRY_RUN=1.
  --skip-code     leave the code on the workers as it is
  --skip-env      do not (re)install the environment
  -n, --dry-run   print the commands instead of running them
  -h, --help      this help
EOF
}

code=1
env=1
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    -n | --dry-run) DRY_RUN=1 ;;
    --skip-code) code=0 ;;
    --skip-env) env=0 ;;
    *) die "unknown argument '$1' (see -h)" ;;
  esac
  shift
done

require PROJECT ZONE TPU_NAME
dir=$(quote "$REMOTE_DIR")

if [[ $code == 1 && -n $REPO_URL ]]; then
  url=$(quote "$REPO_URL")
  ref=$(quote "$REPO_REF")
  tpu_ssh all "set -e; if [ -d $dir/.git ]; then git -C $dir fetch --depth=1 origin $ref \
&& git -C $dir checkout --force FETCH_HEAD; else git clone --depth=1 --branch $ref $url $dir; fi"
elif [[ $code == 1 ]]; then
  tarball="${TMPDIR:-/tmp}/jaxplay-$TPU_NAME.tar.gz"
  run tar -czf "$tarball" -C "$REPO_ROOT" --exclude=./.git --exclude=./.venv \
    --exclude='./workdir*' --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache .
  tpu_scp "$tarball" "$TPU_NAME:jaxplay.tar.gz"
  run rm -f "$tarball"
  tpu_ssh all "set -e; mkdir -p $dir; tar -xzf jaxplay.tar.gz -C $dir; rm jaxplay.tar.gz"
fi

if [[ $env == 1 ]]; then
  jax_tpu="\"jax[tpu]==$(jax_version)\""
  # PIP_BREAK_SYSTEM_PACKAGES lets `pip install --user` work on images whose Python is
  # externally managed (PEP 668); older pips ignore it.
  tpu_ssh all "set -e; cd $dir; \
export PATH=\"\$HOME/.local/bin:\$PATH\" PIP_BREAK_SYSTEM_PACKAGES=1; \
python3 -m pip install --user --quiet uv==$(quote "$UV_VERSION"); \
[ -x .venv/bin/python ] || uv venv --python $(quote "$PYTHON_VERSION") .venv; \
uv pip install --python .venv/bin/python -e \".[local]\" $jax_tpu; \
.venv/bin/python -c \"import jax; \
print(jax.__version__, jax.local_device_count(), jax.local_devices()[0].device_kind)\""
fi
echo "# next: launch_tpu/train.sh" >&2
