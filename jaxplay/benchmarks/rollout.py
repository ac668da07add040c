"""Turn-samples per second of a whole self-play collection: the compiled episode vs a host loop.

python -m jaxplay.benchmarks.rollout [--games kuhn_poker tic_tac_toe simple_negotiation]
    [--batch 32] [--response-len 32] [--examples 2] [--batch-halvings 1 ...] [--model PATH]
    [--repeats 2] [--dtypes float32 bfloat16] [--peer-dtypes DTYPE ...] [--int8-logits]
    [--int8-weights]

Ours is the training rollout of `configs/spiral.py:local` (Gemma 3 270M from its GGUF, or the
model of `--model`: a .gguf file or an HF checkpoint directory; free text, temperature 1,
self-play) with `--batch` games side by side: one compiled program renders every
live game's prompt, samples the responses with the KV cache, parses `\\boxed{}` and steps the
games, turn after turn, until every game has ended (`experiment.play`). The host loop is how SPIRAL
and TextArena collect: a Python loop over turns that writes each live game's prompt as text (the
same prompt: `prompts.reference_prompt`), tokenises the batch with the model's transformers
tokenizer, samples with transformers `generate` (the same model, temperature 1, no top-k/top-p),
decodes, finds the answer with Python string matching (`answers.parse_text`) and steps each game on
its own (our jitted single-game `step`, compiled before timing: the game logic is not what is
compared). Both sides stop a response only at the model's end-of-turn tokens or after
`--response-len` tokens (no stop at the answer), so both generate alike; a turn-sample is one live
game's turn. Ours runs at each of `--dtypes` and each of `--batch-halvings`
(`rollout.batch_halvings`: how far the model's batch may shrink as games end; one row each), with
`--int8-logits` / `--int8-weights` each dtype with int8 logits / layer weights / both too
(`rollout.int8_logits`, `rollout.int8_weights`, in our cell; "ours best" stays among the float
runs), the host loop (whose batch is always the live games) at each of `--peer-dtypes`; after a
warm-up collection, the median of `--repeats` alternating rounds. Our compile time is reported
apart; transformers runs where ours does (`benchmarks.torch_device`: on the GPU when JAX has one)
with as many threads as this process may use. The host loop's share of its time
inside `generate` bounds what any orchestration can save it: the rest (prompt text, tokenising,
parsing, game steps) is all a compiled episode removes beyond a faster model.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import time

import jax
import numpy as np

from configs import spiral
from jaxplay import benchmarks, compiling
from jaxplay.run import configuration, experiment
from jaxplay.text import answers, prompts

SECTION = "episode: turn-samples per second of a self-play collection vs a host loop"
HEADER = ("date", "model", "game", "batch", "response tokens", "examples", "batch halvings",
          "ours turn-samples/s by dtype", "host loop turn-samples/s by dtype",
          "ours best / host loop best", "turn-samples per collection (ours, host)",
          "our compile s", "host loop's time in generate", "machine")


def bench_config(game: str, batch: int, response_len: int, examples: int, dtype: str,
                 batch_halvings: int = 1, model: str = "", **int8):
  """configs/spiral.py:local playing `game` alone in self-play, `batch` games a collection, the
  plain model (no LoRA; its path `model`, or the preset's) in `dtype`, responses stopped only at
  end-of-turn tokens; `int8`: rollout.int8_logits / int8_weights."""
  config = spiral.get_config("local")
  config.games = game
  config.model.update(dtype=dtype, param_dtype=dtype, lora_rank=0)
  if model:
    config.model.path = model
  config.prompt.examples = examples
  config.rollout.update(seats="self_play", games_per_batch=batch, samples_per_step=batch,
                        max_response_len=response_len, stop_at_answer=False, temperature=1.0,
                        top_p=1.0, top_k=0, max_prompt_len=0, batch_halvings=batch_halvings,
                        **int8)
  config.rl.group_size = 1
  config.rl.estimator = "rae"
  return configuration.validate(config)


def ours_collection(config, batch: int):
  """A call playing one collection of `batch` games; returns the turn-samples it played."""
  model, params, tokenizer = experiment.load_model_and_tokenizer(config, jax.random.key(0))
  exp = experiment.build(config, tokenizer, model)
  [kit] = exp.kits
  play = compiling.jit(
      lambda params, key: experiment.play(exp, kit, params, key, batch).active.sum())
  keys = iter(jax.random.split(jax.random.key(1), 1000))
  return lambda: int(play(params, next(keys))), exp, kit


def host_collection(exp: experiment.Experiment, kit: experiment.GameKit, model, hf_tokenizer,
                    batch: int, response_len: int, generate_seconds: list[float]):
  """The host loop's call playing one collection of `batch` games; returns its turn-samples and
  appends the seconds it spent in `model.generate` to `generate_seconds`."""
  import torch
  game, chat, style = kit.game, exp.chat, kit.style
  init, step = jax.jit(game.init), jax.jit(game.step)
  hf_tokenizer.padding_side = "left"
  pad = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else exp.pad_id
  rng = np.random.default_rng(0)

  def call():
    states = [init(jax.random.key(int(seed))) for seed in rng.integers(1 << 30, size=batch)]
    turns, generating = 0, 0.0
    while live := [i for i, s in enumerate(states) if not bool(s.terminated)]:
      texts = [prompts.reference_prompt(game, chat, states[i], int(states[i].current_player),
                                        style) for i in live]
      encoded = hf_tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
      encoded = {name: ids.to(model.device) for name, ids in encoded.items()}
      start = time.perf_counter()
      with torch.inference_mode():
        output = model.generate(**encoded, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                max_new_tokens=response_len, eos_token_id=list(chat.stop_ids),
                                pad_token_id=pad)
      generating += time.perf_counter() - start
      responses = hf_tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:],
                                            skip_special_tokens=True)
      for i, response in zip(live, responses):
        action = answers.parse_text(response, game.actions)
        states[i] = step(states[i], action, jax.random.key(int(rng.integers(1 << 30))))
      turns += len(live)
    generate_seconds.append(generating)
    return turns

  return call


def main(argv=None) -> list[tuple]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--games", nargs="+", default=("kuhn_poker", "tic_tac_toe"))
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--response-len", type=int, default=32)
  parser.add_argument("--examples", type=int, default=2,
                      help="worked examples per prompt (the local preset's 2)")
  parser.add_argument("--batch-halvings", type=int, nargs="+", default=(1,),
                      help="rollout.batch_halvings values to time ours at, one row each")
  benchmarks.add_int8_flags(parser)
  benchmarks.add_side_by_side_flags(parser)
  parser.set_defaults(repeats=2)
  args = benchmarks.parse_side_by_side(parser, argv)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import torch

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  path = benchmarks.model_path(args.model)
  hf_tokenizer = benchmarks.load_tokenizer(path)
  theirs = {dtype: benchmarks.load_peer(path, dtype) for dtype in args.peer_dtypes}
  today = datetime.date.today().isoformat()
  variants = benchmarks.our_variants(args.dtypes, args.int8_logits, args.int8_weights)
  rows = []
  for game in args.games:
    calls, generate_seconds = {}, {dtype: [] for dtype in args.peer_dtypes}
    for halvings in args.batch_halvings:
      for label, (dtype, int8) in variants.items():
        config = bench_config(game, args.batch, args.response_len, args.examples, dtype, halvings,
                              args.model, **int8)
        calls["ours", label, halvings], exp, kit = ours_collection(config, args.batch)
    for dtype, model in theirs.items():
      calls["host", dtype, None] = host_collection(exp, kit, model, hf_tokenizer, args.batch,
                                                   args.response_len, generate_seconds[dtype])
    turns = {key: [] for key in calls}
    counted = {key: functools.partial(_counting, call, turns[key]) for key, call in calls.items()}
    first, median = benchmarks.first_and_median_seconds(list(counted.values()), args.repeats)
    rates, compile_s, in_generate = {}, {}, {}
    for index, key in enumerate(calls):
      timed = turns[key][1:]  # The warm-up collection is not counted.
      rates[key] = float(np.mean(timed)) / median[index]
      if key[0] == "ours":  # The warm-up call less its turn-samples at the timed rate.
        compile_s[key] = first[index] - turns[key][0] / rates[key]
      else:
        in_generate[key[1]] = 100 * float(np.mean(generate_seconds[key[1]][1:])) / median[index]
    host = {key[1]: rate for key, rate in rates.items() if key[0] == "host"}
    mean_turns = lambda keys: np.mean([np.mean(turns[key][1:]) for key in keys])
    for halvings in args.batch_halvings:
      ours = {label: rates["ours", label, halvings] for label in variants}
      rows.append((today, benchmarks.model_name(args.model), game, args.batch,
                   args.response_len, args.examples, halvings, benchmarks.by_dtype(ours),
                   benchmarks.by_dtype(host),
                   f"{max(ours[dtype] for dtype in args.dtypes) / max(host.values()):.2f}",
                   f"{mean_turns([('ours', label, halvings) for label in variants]):.0f}, "
                   f"{mean_turns([('host', d, None) for d in args.peer_dtypes]):.0f}",
                   benchmarks.by_dtype({label: compile_s["ours", label, halvings]
                                        for label in variants}),
                   ", ".join(f"{dtype} {share:.0f}%" for dtype, share in in_generate.items()),
                   benchmarks.torch_machine(args.repeats)))
      print(benchmarks.markdown_table(HEADER, rows[-1:])[-1], flush=True)
  benchmarks.report(SECTION, HEADER, rows, args.output)
  return rows


def _counting(call, turns: list[int]):
  turns.append(call())


if __name__ == "__main__":
  main()
