"""Decode tokens per second of the compiled sampler vs transformers generate, same model and batch.

python -m jaxplay.benchmarks.sampler [--batches 1 8 32] [--prompt-len 256] [--new-tokens 128]

Both sides run the real Gemma 3 270M (the Q4_K_M GGUF, dequantised to float32 by each library),
greedy, on random prompts of the same length, with every row forced to the full length (no stop
token). Decode time is the time of a call generating `new_tokens` minus that of a call generating
one token (the prefill), so the rate counts new_tokens - 1 decode steps per row. PyTorch gets as
many threads as this process may use. The roofline share compares the decode FLOP/s (matmul FLOPs
of the model per token, attention over the live context included) with a measured large float32
matmul.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxplay import benchmarks
from jaxplay.models import loading, sampling
from jaxplay.models.configs import ModelConfig

HEADER = ("date", "model", "batch", "prompt", "new tokens", "ours tok/s", "transformers tok/s",
          "ours/transformers", "ours % of matmul peak", "matmul GFLOP/s", "machine")


def matmul_flops_per_second(n: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of a jitted float32 [n, n] @ [n, n] matmul: the machine's practical peak."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  [seconds] = benchmarks.median_seconds([functools.partial(matmul, a, b)], repeats)
  return 2 * n ** 3 / seconds


def decode_flops_per_token(config: ModelConfig, context: float) -> float:
  """Matmul FLOPs to decode one token: projections, MLP, unembedding, attention over `context`."""
  c = config
  attention_params = c.d_model * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
  per_layer = attention_params + 3 * c.d_model * c.mlp_dim
  attention = 4 * c.num_heads * c.head_dim * context  # scores and weighted values
  return 2 * (c.num_layers * per_layer + c.vocab_size * c.d_model) + c.num_layers * attention


def ours_call(config, params, prompts, new_tokens):
  lengths = np.full(prompts.shape[0], prompts.shape[1], np.int32)
  stop = jnp.asarray([-1])
  return functools.partial(sampling.generate, config, params, prompts, lengths,
                           jax.random.key(0), 0.0, 1.0, 0, stop, max_response_len=new_tokens)


def transformers_call(model, prompts, new_tokens):
  import torch

  def call():
    with torch.inference_mode():
      ids = torch.tensor(prompts, dtype=torch.long)
      return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            pad_token_id=0).numpy()
  return call


def main(argv=None) -> list[tuple]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", nargs="+", type=int, default=(1, 8, 32))
  parser.add_argument("--prompt-len", type=int, default=256)
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--output", default=str(benchmarks.BENCHMARKS_MD),
                      help="markdown file the dated rows are appended to ('' to skip)")
  args = parser.parse_args(argv)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import torch
  import transformers

  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  path = loading.gemma3_270m_default()
  config, params = loading.load_gguf(path)
  directory, name = os.path.split(path)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(
      directory, gguf_file=name, dtype=torch.float32).eval()
  peak = matmul_flops_per_second()
  machine, today = benchmarks.machine(), datetime.date.today().isoformat()
  steps = args.new_tokens - 1
  rows = []
  for batch in args.batches:
    rng = np.random.default_rng(batch)
    prompts = rng.integers(1000, 200_000, (batch, args.prompt_len)).astype(np.int32)
    calls = [ours_call(config, params, prompts, 1),
             ours_call(config, params, prompts, args.new_tokens),
             transformers_call(hf_model, prompts, 1),
             transformers_call(hf_model, prompts, args.new_tokens)]
    ours_1, ours_n, hf_1, hf_n = benchmarks.median_seconds(calls, args.repeats)
    ours_rate = batch * steps / (ours_n - ours_1)
    hf_rate = batch * steps / (hf_n - hf_1)
    flops = decode_flops_per_token(config, args.prompt_len + args.new_tokens / 2)
    rows.append((today, "gemma3_270m f32", batch, args.prompt_len, args.new_tokens,
                 f"{ours_rate:,.1f}", f"{hf_rate:,.1f}", f"{ours_rate / hf_rate:.2f}",
                 f"{100 * ours_rate * flops / peak:.1f}%", f"{peak / 1e9:,.0f}",
                 f"{machine}, torch {torch.__version__} ({threads} threads)"))
    print(benchmarks.markdown_table(HEADER, rows[-1:])[-1], flush=True)
  print("\n".join(benchmarks.markdown_table(HEADER, rows)))
  if args.output:
    benchmarks.append_rows("sampler: decode tokens per second vs transformers generate",
                           HEADER, rows, pathlib.Path(args.output))
  return rows


if __name__ == "__main__":
  main()
