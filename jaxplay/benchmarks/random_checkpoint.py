"""An HF checkpoint of random weights in a model preset's shapes, with a real tokenizer: the model
the benchmarks load (`--model DIR`) where the real weights cannot go, such as a device machine
reached by copying a 64 MiB working tree (`jaxplay/benchmarks/on_gpu.sh`).

python -m jaxplay.benchmarks.random_checkpoint --out DIR [--preset gemma3_270m]
    [--tokenizer PATH] [--seed 0]

The weights are `transformer.init_params`' draw (bfloat16), the tokenizer that of `--tokenizer` (a
.gguf file or an HF folder holding tokenizer files; by default the offline Gemma 3 270M's), whose
vocabulary must fit the model's. Both sides of a benchmark load the same files. A step's time does
not depend on the weights' values where its lengths are fixed (the sampler's and the train step's
benchmarks); in the episode benchmark the weights decide what is played (random weights answer with
invalid moves, which end games at once), so its rates with such a model are not the real model's.
"""

from __future__ import annotations

import argparse
import os

import jax

from jaxplay import benchmarks
from jaxplay.cli import export
from jaxplay.models import configs, transformer
from jaxplay.models.configs import ModelConfig


def write(out: str, config: ModelConfig, tokenizer_path: str = "", seed: int = 0) -> str:
  """Writes the checkpoint of `config` into `out` (a new or empty folder) and returns it;
  ValueError naming the flag when `out` holds files or the tokenizer's vocabulary is larger than
  the model's."""
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ValueError(f"--out: {out} exists and is not an empty folder; nothing was written.")
  tokenizer = benchmarks.load_tokenizer(tokenizer_path or benchmarks.model_path(""))
  if len(tokenizer) > config.vocab_size:
    raise ValueError(f"--tokenizer: its {len(tokenizer):,} tokens do not fit the model's "
                     f"vocabulary of {config.vocab_size:,}.")
  params = transformer.init_params(config, jax.random.key(seed))
  return export.export_hf(config, params, out, tokenizer)


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="a new or empty folder")
  parser.add_argument("--preset", default="gemma3_270m", choices=sorted(configs.PRESETS))
  parser.add_argument("--tokenizer", default="",
                      help="a .gguf file or an HF folder with tokenizer files (default: the "
                      "offline Gemma 3 270M's)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  try:
    out = write(args.out, configs.get(args.preset, param_dtype="bfloat16"), args.tokenizer,
                args.seed)
  except ValueError as error:
    parser.error(str(error))
  print(f"wrote {out}")
  return out


if __name__ == "__main__":
  main()
