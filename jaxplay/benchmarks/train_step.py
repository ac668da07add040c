"""Tokens per second of one PPO policy update (forward, backward, AdamW) vs PyTorch, each library at
its best dtype, same model, rows and micro-batching.

python -m jaxplay.benchmarks.train_step [--rows 16] [--micro-batch 4] [--prompt-len 232]
    [--response-len 24] [--model PATH] [--repeats 3] [--dtypes float32 bfloat16]
    [--peer-dtypes DTYPE ...] [--profile]

Both sides train every parameter of the same model, `--model` (a .gguf file or an HF checkpoint
directory; by default the real Gemma 3 270M, its Q4_K_M GGUF), loaded in float32 by each library
(parameters, gradients and Adam moments stay float32), on the same `--rows` random
token rows of prompt + response, with the same update: the PPO clipped loss (clip 0.2) on the
response tokens under Dr. GRPO's aggregation, advantages +-1, old log-probs from the model itself
(ratio 1, as in a first epoch), gradients accumulated over micro-batches of `--micro-batch` rows,
clipped at global norm 1, one AdamW step (lr 1e-6, betas 0.9 / 0.95). Ours is `make_train_step`
with the free-text policy's log-probs (logits only where a response token is predicted); theirs is
the transformers model with `logits_to_keep` (the same saving, as TRL does it) and torch's fused
AdamW. `--dtypes` (ours) and `--peer-dtypes` (PyTorch's) are compute dtypes: bfloat16 is ours with
bfloat16 compute and theirs under `torch.autocast` (mixed precision, the way a PyTorch user trains
in bfloat16). PyTorch runs where ours does (`benchmarks.torch_device`: on the GPU when JAX has
one). Timing: a warm-up step first (our compile time is reported apart), then the median of
`--repeats` alternating rounds. Tokens/s counts every row token run forward and backward. The share
of the matmul peak counts 3x the forward matmul FLOPs (layers at all positions, logits at the
response positions) against a measured large matmul at our best dtype, run as `transformer.dot`
runs it (a CPU's bfloat16 kernels can run several times its float32 rate). The gradient norms of
the two warm-up steps (same initial weights) are reported side by side: they agree when both sides
compute the same update.

With `--profile` (on a CPU), one warm step of each side at each dtype is traced by its library's
profiler instead of timed; its rows (their own section) give the shares of the step's op time
spent in matmuls, in layout changes (copies and transposes) and in the rest (`profiles`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxplay import benchmarks, compiling
from jaxplay.benchmarks import profiles
from jaxplay.models import loading
from jaxplay.models.configs import ModelConfig
from jaxplay.rl import advantages, losses, policies, train_step

SECTION = "train step: PPO update tokens per second vs PyTorch, each at its best dtype"
HEADER = ("date", "model", "rows x (prompt + response)", "micro-batch", "ours tok/s by dtype",
          "PyTorch tok/s by dtype", "ours best / PyTorch best", "our compile s",
          "ours % of matmul peak", "grad norm ours / PyTorch (float32)", "machine")
PROFILE_SECTION = "train step: where a step's op time goes, each side's profiler"
PROFILE_HEADER = ("date", "model", "rows x (prompt + response)", "side", "dtype",
                  *(f"{kind} %" for kind in profiles.KINDS), "backward pass %", "machine")
CLIP_EPS = 0.2
MAX_GRAD_NORM = 1.0


@dataclasses.dataclass(frozen=True)
class Shape:
  """The update both sides take."""

  rows: int  # N, turn-samples in the update.
  micro_batch: int  # Rows per gradient-accumulation step; divides rows.
  prompt_len: int  # P
  response_len: int  # R
  learning_rate: float = 1e-6

  def __post_init__(self):
    if min(self.rows, self.micro_batch, self.prompt_len, self.response_len) < 1:
      raise ValueError(f"{self}: every size must be >= 1.")
    if self.rows % self.micro_batch:
      raise ValueError(f"--micro-batch={self.micro_batch} must divide --rows={self.rows}.")

  @property
  def seq_len(self) -> int:
    return self.prompt_len + self.response_len


def random_rows(shape: Shape, vocab_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int32 [N, P + R] drawn from the vocabulary, advantages float32 [N] of +-1)."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, vocab_size, (shape.rows, shape.seq_len)).astype(np.int32)
  return tokens, np.where(np.arange(shape.rows) % 2 == 0, 1.0, -1.0).astype(np.float32)


def train_flops(config: ModelConfig, shape: Shape) -> float:
  """Matmul FLOPs of one update: 3x the forward's (the backward costs twice the forward)."""
  t = shape.seq_len
  forward = (t * benchmarks.layer_flops_per_token(config, (t + 1) / 2)
             + shape.response_len * benchmarks.unembed_flops(config))
  return 3 * shape.rows * forward


def _log_probs_fn(config: ModelConfig, shape: Shape):
  return policies.response_log_probs_fn(config, shape.prompt_len)


def old_log_probs(config: ModelConfig, params, tokens: np.ndarray, shape: Shape) -> np.ndarray:
  """float32 [N, P + R]: log-prob of tokens[:, t] at t >= P under the model (0 on the prompt),
  what a sampler records; computed a micro-batch at a time."""
  rows = lambda t: train_step.Rows(t, jnp.broadcast_to(jnp.arange(shape.seq_len), t.shape),
                                   jnp.zeros(t.shape[0], jnp.int32))
  log_probs = compiling.jit(lambda p, t: _log_probs_fn(config, shape)(p, rows(t))[0])
  chunks = [np.asarray(log_probs(params, tokens[i:i + shape.micro_batch]))
            for i in range(0, shape.rows, shape.micro_batch)]
  return np.pad(np.concatenate(chunks), ((0, 0), (1, 0)))


class OurStep:
  """Calling it takes one update of its own copy of `params` (the step donates its state) and
  returns the gradient norm; `state` is the train state after the last call."""

  def __init__(self, config: ModelConfig, params, tokens, old, advantages_N, shape: Shape):
    step_config = train_step.TrainStepConfig(
        batch_size=shape.rows, seq_len=shape.seq_len, estimator="reinforce",
        loss=losses.LossConfig(clip_eps=CLIP_EPS, max_response_len=shape.response_len),
        num_epochs=1, num_microbatches=shape.rows // shape.micro_batch)
    optimizer = train_step.make_optimizer(shape.learning_rate, max_grad_norm=MAX_GRAD_NORM)
    # Re-jitted as the outermost program, with the run's compiler options (`shard_step`'s).
    self.step = compiling.jit(train_step.make_train_step(step_config, None, optimizer,
                                                         _log_probs_fn(config, shape)),
                              donate_argnums=0)
    n = shape.rows
    columns = np.arange(shape.seq_len)
    self.batch = train_step.Batch(
        tokens=jnp.asarray(tokens), positions=jnp.asarray(np.broadcast_to(columns, tokens.shape)),
        response_mask=jnp.asarray(np.broadcast_to(columns >= shape.prompt_len, tokens.shape)),
        old_log_probs=jnp.asarray(old),
        outcomes=advantages.Outcomes(
            reward=jnp.asarray(advantages_N), game_kind=jnp.zeros(n, jnp.int32),
            role=jnp.zeros(n, jnp.int32), group=jnp.arange(n), game_index=jnp.arange(n),
            turn_index=jnp.zeros(n, jnp.int32), mask=jnp.ones(n, bool)),
        invalid_action=jnp.zeros(n, bool))
    self.state = train_step.init_state(jax.tree.map(jnp.copy, params), optimizer, num_kinds=1,
                                       num_roles=1, seed=0)

  def __call__(self) -> jax.Array:
    self.state, metrics = self.step(self.state, self.batch)
    return metrics["grad_norm"]

  def hlo_text(self) -> str:
    """The optimized HLO of the step, whose instruction names the profiler's trace uses."""
    return self.step.lower(self.state, self.batch).compile().as_text()


def torch_step(model, tokens, old, advantages_N, shape: Shape, dtype: str):
  """A call taking one update of the transformers `model` in place -> grad norm; `dtype` is the
  compute dtype (bfloat16 under autocast)."""
  import torch

  p, r, micro = shape.prompt_len, shape.response_len, shape.micro_batch
  device = model.device
  tokens = torch.tensor(tokens, dtype=torch.long, device=device)
  old = torch.tensor(old[:, p:], device=device)
  advantages_N = torch.tensor(advantages_N, device=device)[:, None]
  weight = 1.0 / (r * shape.rows)  # Dr. GRPO: token sum / (max response length * sequences).
  params = [x for x in model.parameters() if x.requires_grad]
  optimizer = torch.optim.AdamW(params, lr=shape.learning_rate, betas=(0.9, 0.95), eps=1e-8,
                                weight_decay=0.0, fused=True)
  model.train()

  def call():
    for start in range(0, shape.rows, micro):
      rows = slice(start, start + micro)
      with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        logits = model(input_ids=tokens[rows], logits_to_keep=r + 1).logits[:, :-1]
      log_probs = torch.log_softmax(logits.float(), -1).gather(
          -1, tokens[rows, p:, None])[..., 0]
      ratio = torch.exp(log_probs - old[rows])
      a = advantages_N[rows]
      per_token = torch.maximum(-a * ratio, -a * ratio.clamp(1 - CLIP_EPS, 1 + CLIP_EPS))
      (per_token.sum() * weight).backward()
    norm = torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm.item()
  return call


def main(argv=None) -> tuple:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=16)
  parser.add_argument("--micro-batch", type=int, default=4)
  parser.add_argument("--prompt-len", type=int, default=232)
  parser.add_argument("--response-len", type=int, default=24)
  parser.add_argument("--profile", action="store_true",
                      help="trace one warm step of each side instead of timing (see above)")
  benchmarks.add_side_by_side_flags(parser)
  args = benchmarks.parse_side_by_side(parser, argv)
  try:
    shape = Shape(args.rows, args.micro_batch, args.prompt_len, args.response_len)
  except ValueError as e:
    parser.error(str(e))
  if args.profile and jax.default_backend() != "cpu":
    parser.error(f"--profile reads CPU op times only; JAX runs on {jax.default_backend()} here.")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import torch
  import transformers

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  path = benchmarks.model_path(args.model)
  config, params = loading.load(path, dtype="float32", param_dtype="float32")
  model = benchmarks.load_peer(path, "float32")
  tokens, advantages_N = random_rows(shape, config.vocab_size)
  old = old_log_probs(config, params, tokens, shape)
  calls = {("ours", dtype): OurStep(dataclasses.replace(config, dtype=dtype), params, tokens,
                                    old, advantages_N, shape) for dtype in args.dtypes}
  del params  # Each of our steps holds its own copy.
  calls.update({("PyTorch", dtype): torch_step(model, tokens, old, advantages_N, shape, dtype)
                for dtype in args.peer_dtypes})
  if args.profile:
    return profile_rows(calls, shape, args.output, benchmarks.model_name(args.model))
  norms = {}

  def first_norm(key, call):
    def recorded():
      norm = call()
      norms.setdefault(key, float(norm))
      return norm
    return recorded
  first, median = benchmarks.first_and_median_seconds(
      [first_norm(key, call) for key, call in calls.items()], args.repeats)
  row_tokens = shape.rows * shape.seq_len
  rates = {"ours": {}, "PyTorch": {}}
  compile_s = {}
  for (side, dtype), first_s, median_s in zip(calls, first, median):
    rates[side][dtype] = row_tokens / median_s
    if side == "ours":
      compile_s[dtype] = first_s - median_s
  best = max(rates["ours"], key=rates["ours"].get)
  peak = benchmarks.matmul_flops_per_second(best)
  peak_share = train_flops(config, shape) * rates["ours"][best] / row_tokens / peak
  norm_cell = (f"{norms['ours', 'float32']:.4g} / {norms['PyTorch', 'float32']:.4g}"
               if "float32" in args.dtypes and "float32" in args.peer_dtypes else "-")
  row = (datetime.date.today().isoformat(), benchmarks.model_name(args.model),
         f"{shape.rows} x ({shape.prompt_len} + {shape.response_len})", shape.micro_batch,
         benchmarks.by_dtype(rates["ours"]), benchmarks.by_dtype(rates["PyTorch"]),
         f"{rates['ours'][best] / max(rates['PyTorch'].values()):.2f}",
         benchmarks.by_dtype(compile_s),
         f"{100 * peak_share:.1f}%", norm_cell,
         f"{benchmarks.torch_machine()}, transformers {transformers.__version__}, "
         f"{args.repeats} repeats, {best} matmul peak {peak / 1e9:,.0f} GFLOP/s")
  benchmarks.report(SECTION, HEADER, [row], args.output)
  return row


def profile_rows(calls: dict, shape: Shape, output: str, model: str = "gemma3_270m"
                 ) -> list[tuple]:
  """One warm-up step of each call (ours: OurStep, PyTorch: `torch_step`'s), then one traced by
  its library's profiler; a row each (`model` its model cell), reported to `output`."""
  rows = []
  for (side, dtype), call in calls.items():
    call()
    shares, backward = (profiles.xla_shares(call, call.hlo_text()) if side == "ours" else
                        profiles.torch_shares(call))
    rows.append((datetime.date.today().isoformat(), model,
                 f"{shape.rows} x ({shape.prompt_len} + {shape.response_len})", side, dtype,
                 *(f"{100 * shares[kind]:.0f}" for kind in profiles.KINDS), f"{100 * backward:.0f}",
                 benchmarks.torch_machine()))
    print(benchmarks.markdown_table(PROFILE_HEADER, rows[-1:])[-1], flush=True)
  benchmarks.report(PROFILE_SECTION, PROFILE_HEADER, rows, output)
  return rows


if __name__ == "__main__":
  main()
