"""Decode tokens per second of the compiled sampler vs transformers generate, each library at its
best dtype, same model and batch.

python -m jaxplay.benchmarks.sampler [--batches 1 8 32] [--prompt-len 256] [--new-tokens 128]
    [--temperature 0] [--model PATH] [--repeats 3] [--dtypes float32 bfloat16]
    [--peer-dtypes DTYPE ...] [--int8-logits] [--int8-weights]

Both sides run the same model, `--model` (a .gguf file or an HF checkpoint directory; by default
the real Gemma 3 270M, its Q4_K_M GGUF), loaded by each library in each of `--dtypes` for ours,
`--peer-dtypes` for transformers (weights and compute in that dtype), greedy
or, with `--temperature` > 0, sampling from the whole vocabulary at that temperature (no top-k or
top-p: self-play's setting), on random prompts of the same length, with every row forced to the
full length (no stop token), the
way a user of each would run it: a warm-up call first, then the median of `--repeats` rounds in
which the calls alternate. Decode time is the time of a call generating `new_tokens` minus that of
a call generating one token (the prefill), so the rate counts new_tokens - 1 decode steps per row.
The ratio is ours at our best dtype over transformers at its best dtype, per batch. Our compile
time (first call less a timed one) is reported apart. PyTorch runs where ours does
(`benchmarks.torch_device`: on the GPU when JAX has one) with as many threads as this process
may use. The matmul share compares our best decode FLOP/s (matmul FLOPs per token, attention over
the live context included) with a measured large matmul in that dtype, run as `transformer.dot`
runs it (the "matmul GFLOP/s" cell names the dtype). The roofline is the rate of a decode step that
runs at that matmul peak or reads its bytes (every weight, and each row's KV cache) at the measured
memory bandwidth, whichever takes longer; the row names the bound that binds (memory at small
batch, matmul at large). The logits column times our decode step's largest dot
alone (`logits_seconds`: the [vocabulary, d_model] embedding by [batch, d_model] hidden states,
at our best dtype): its FLOP rate, and its share of a decode step at our best rate.
With `--int8-logits` / `--int8-weights` ours also runs each of `--dtypes` with int8 logits / int8
layer weights / both (`sampling.sample`'s `int8_logits`, `int8_weights`; labelled "<dtype> int8
logits" and so on in our cell, `benchmarks.our_variants`). They approximate the model, so "our
best" (the ratio, the roofline and the logits columns) stays among the float runs.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxplay import benchmarks, compiling
from jaxplay.models import loading, sampling, transformer

SECTION = "sampler: decode tokens per second vs transformers generate, each at its best dtype"
HEADER = ("date", "model", "batch", "prompt", "new tokens", "decoding", "ours tok/s by dtype",
          "transformers tok/s by dtype", "ours best / transformers best", "our compile s",
          "ours % of matmul peak", "matmul GFLOP/s", "memory GB/s", "ours % of roofline (bound)",
          "ours: logits GFLOP/s, share of a decode step", "machine")


def ours_call(config, params, prompts, new_tokens, temperature=0.0, **int8):
  """Our sampler on `prompts`, `new_tokens` a row; `int8`: `sampling.sample`'s int8 keywords."""
  lengths = np.full(prompts.shape[0], prompts.shape[1], np.int32)
  stop = jnp.asarray([-1])
  return functools.partial(sampling.generate, config, params, prompts, lengths,
                           jax.random.key(0), temperature, 1.0, 0, stop,
                           max_response_len=new_tokens, **int8)


def transformers_call(model, prompts, new_tokens, temperature=0.0):
  import torch
  sampled = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
  options = sampled if temperature > 0 else dict(do_sample=False)

  def call():
    with torch.inference_mode():
      ids = torch.tensor(prompts, dtype=torch.long, device=model.device)
      return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                            max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0,
                            **options).cpu().numpy()
  return call


def logits_seconds(config, params, batch: int, repeats: int) -> float:
  """Median seconds of our decode step's logits for `batch` rows: the jitted
  `transformer.logits_vocab_major` of [batch, d_model] hidden states in the config's dtype, as
  the sampler computes them."""
  hidden = jnp.ones((batch, config.d_model), config.jnp_dtype)
  logits = compiling.jit(functools.partial(transformer.logits_vocab_major, config))
  [seconds] = benchmarks.median_seconds([lambda: logits(params, hidden)], repeats)
  return seconds


def decode_rate(batch: int, new_tokens: int, one_token_s: float, all_tokens_s: float) -> float:
  """Decoded tokens per second: the new_tokens - 1 steps after the prefill, of every row."""
  return batch * (new_tokens - 1) / (all_tokens_s - one_token_s)


def main(argv=None) -> list[tuple]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", nargs="+", type=int, default=(1, 8, 32))
  parser.add_argument("--prompt-len", type=int, default=256)
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--temperature", type=float, default=0.0,
                      help="0 decodes greedily; above 0 samples the whole vocabulary at it")
  benchmarks.add_int8_flags(parser)
  benchmarks.add_side_by_side_flags(parser)
  args = benchmarks.parse_side_by_side(parser, argv)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import torch

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  path = benchmarks.model_path(args.model)
  ours = {dtype: loading.load(path, dtype=dtype, param_dtype=dtype) for dtype in args.dtypes}
  theirs = {dtype: benchmarks.load_peer(path, dtype) for dtype in args.peer_dtypes}
  peaks = {dtype: benchmarks.matmul_flops_per_second(dtype) for dtype in args.dtypes}
  bandwidth = benchmarks.memory_bytes_per_second()
  today = datetime.date.today().isoformat()
  rows = []
  for batch in args.batches:
    rng = np.random.default_rng(batch)
    prompts = rng.integers(1000, 200_000, (batch, args.prompt_len)).astype(np.int32)
    calls = {}
    for label, (dtype, int8) in benchmarks.our_variants(args.dtypes, args.int8_logits,
                                                        args.int8_weights).items():
      calls["ours", label] = [ours_call(*ours[dtype], prompts, n, args.temperature, **int8)
                              for n in (1, args.new_tokens)]
    for dtype, model in theirs.items():
      calls["transformers", dtype] = [transformers_call(model, prompts, n, args.temperature)
                                      for n in (1, args.new_tokens)]
    flat = [call for pair in calls.values() for call in pair]
    first, median = benchmarks.first_and_median_seconds(flat, args.repeats)
    rates, compile_s = {"ours": {}, "transformers": {}}, {}
    for index, (side, dtype) in enumerate(calls):
      one, full = median[2 * index], median[2 * index + 1]
      rates[side][dtype] = decode_rate(batch, args.new_tokens, one, full)
      if side == "ours":
        compile_s[dtype] = sum(first[2 * index:2 * index + 2]) - one - full
    best = max(ours, key=rates["ours"].get)  # Float runs only: see the module docstring.
    ratio = rates["ours"][best] / max(rates["transformers"].values())
    config, peak = ours[best][0], peaks[best]
    context = args.prompt_len + args.new_tokens / 2
    flops = benchmarks.layer_flops_per_token(config, context) + benchmarks.unembed_flops(config)
    weight_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(ours[best][1]))
    step_bytes = benchmarks.decode_bytes_per_step(weight_bytes, config, batch, context,
                                                  jnp.dtype(best).itemsize)
    roofline, bound = benchmarks.roofline_rate(batch, flops, step_bytes, peak, bandwidth)
    logits_s = logits_seconds(*ours[best], batch, args.repeats)
    logits_cell = (f"{batch * benchmarks.unembed_flops(config) / logits_s / 1e9:,.0f}, "
                   f"{100 * logits_s * rates['ours'][best] / batch:.0f}%")
    decoding = f"temperature {args.temperature:g}" if args.temperature > 0 else "greedy"
    rows.append((today, benchmarks.model_name(args.model), batch, args.prompt_len,
                 args.new_tokens, decoding,
                 benchmarks.by_dtype(rates["ours"]), benchmarks.by_dtype(rates["transformers"]),
                 f"{ratio:.2f}", benchmarks.by_dtype(compile_s),
                 f"{100 * rates['ours'][best] * flops / peak:.1f}%",
                 f"{best} {peak / 1e9:,.0f}", f"{bandwidth / 1e9:,.1f}",
                 f"{100 * rates['ours'][best] / roofline:.0f}% ({bound})", logits_cell,
                 benchmarks.torch_machine(args.repeats)))
    print(benchmarks.markdown_table(HEADER, rows[-1:])[-1], flush=True)
  benchmarks.report(SECTION, HEADER, rows, args.output)
  return rows


if __name__ == "__main__":
  main()
