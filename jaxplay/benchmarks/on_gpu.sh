#!/usr/bin/env bash
# The three side-by-side benchmarks (sampler, train step, episode) on a GPU machine that has JAX
# with CUDA, PyTorch and transformers installed but cannot download anything, reached by copying
# this repository and a small bundle (the real weights, ~240 MB, do not travel: the model is a
# random-weight Gemma 3 270M, `random_checkpoint.py`, which both sides load).
#
# Here, from the repository's root with its .venv active (network for two wheels):
#   bash jaxplay/benchmarks/on_gpu.sh prepare [BUNDLE]
# writes BUNDLE (default .device, added to .git/info/exclude): Gemma 3's tokenizer files (~33 MB)
# and the wheels of the pure-Python packages such an image may lack (gguf, ml_collections).
# There, from the copied repository's root:
#   bash jaxplay/benchmarks/on_gpu.sh run OUT [BUNDLE]
# installs the wheels under /tmp, writes the random-weight model, and runs each benchmark against
# transformers on the same GPU (each stopped after STAGE_SECONDS, default 150, so that one stage
# cannot take the others' time): their rows go to OUT/BENCHMARKS.md, their output to OUT/*.log.
set -euo pipefail

mode=${1:-}
case "$mode" in
  prepare)
    bundle=${2:-.device}
    mkdir -p "$bundle/wheels" .git/info
    grep -qxF "/$bundle/" .git/info/exclude 2>/dev/null || echo "/$bundle/" >> .git/info/exclude
    python -c "import sys; from jaxplay import benchmarks
benchmarks.load_tokenizer(benchmarks.model_path('')).save_pretrained(sys.argv[1])" \
      "$bundle/tokenizer"
    for package in gguf ml_collections; do
      version=$(python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" \
        "$package")
      python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        -d "$bundle/wheels" "$package==$version"
    done
    du -sh "$bundle"
    ;;
  run)
    out=${2:?usage: on_gpu.sh run OUT [BUNDLE]}
    bundle=${3:-.device}
    stage_seconds=${STAGE_SECONDS:-150}
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/jaxplay_site \
      "$bundle"/wheels/*.whl
    export PYTHONPATH="$PWD:/tmp/jaxplay_site" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    export XLA_PYTHON_CLIENT_PREALLOCATE=false  # PyTorch shares the GPU.
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" || true
    model=/tmp/gemma3_270m_random
    rm -rf "$model"
    python3 -m jaxplay.benchmarks.random_checkpoint --out "$model" --tokenizer "$bundle/tokenizer"
    rows="$out/BENCHMARKS.md"
    stage() {  # NAME ARGS...: one benchmark, its output kept even when it fails or runs out.
      local name=$1
      shift
      timeout "$stage_seconds" python3 -m "jaxplay.benchmarks.$name" --model "$model" \
        --output "$rows" "$@" > "$out/$name.log" 2>&1 || echo "$name: exit $?" >> "$out/$name.log"
      tail -n 3 "$out/$name.log"
    }
    stage sampler --batches 1 8 32 --prompt-len 256 --new-tokens 64 --temperature 1
    stage train_step
    stage rollout --games kuhn_poker tic_tac_toe
    ;;
  *)
    echo "usage: on_gpu.sh prepare [BUNDLE] | on_gpu.sh run OUT [BUNDLE]" >&2
    exit 2
    ;;
esac
