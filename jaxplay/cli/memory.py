"""Per-device memory plan of a config: the train step and the sampler compiled ahead of time.

  python -m jaxplay.cli.memory --config=configs/spiral.py --devices=8 --mesh=1,8,1 --budget_gib=95

Nothing is allocated: both programs are lowered from `jax.ShapeDtypeStruct`s carrying their
NamedShardings and compiled for `--devices` devices (simulated on a CPU host with
`--xla_force_host_platform_device_count`; the module re-executes itself to set it). Params,
optimizer state, batch and KV cache are counted from shapes, dtypes and shardings (bytes per device)
and cross-checked against XLA's argument sizes; activations and temporaries are XLA's temp size
(`memory_analysis`). XLA:CPU fuses and lays out buffers differently from TPU/GPU, so on a CPU host
the temporaries are an estimate of the accelerator's, while params/optimizer/cache are exact.

The sampler program takes params in the train layout and reshards them to the sampler layout inside
(as the rollout does), so its temporaries hold that copy (when the layouts differ), the int8
copies `rollout.int8_logits` / `int8_weights` make, the KV cache and the activations. During a
rollout the optimizer state stays resident; the sampling peak counts it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec
from ml_collections import config_flags

from jaxplay import compiling
from jaxplay import sharding as sharding_lib
from jaxplay.models import sampling, transformer
from jaxplay.rl import advantages, train_step
from jaxplay.run import configuration, experiment
from jaxplay.run import spec as spec_lib

GIB = 2**30

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_DEVICES = flags.DEFINE_integer("devices", None, "Device count to plan for; default: all present.")
_MESH = flags.DEFINE_string("mesh", None, "data,fsdp,tensor sizes (-1 = the rest); "
                            "default: config.mesh.")
_BUDGET = flags.DEFINE_float("budget_gib", 16.0, "Per-device memory budget in GiB "
                             "(TPU v5e: 16, v5p: 95, H100: 80).")
_SAMPLER_BATCH = flags.DEFINE_integer("sampler_batch", None, "Rows per sampler call; default: "
                                      "rollout.games_per_batch (one call per game turn).")
_JSON = flags.DEFINE_string("json", None, "Also write the figures (bytes) to this file.")


@dataclasses.dataclass(frozen=True)
class XlaStats:
  """Per-device sizes from `compiled.memory_analysis()`, in bytes."""

  argument: int
  output: int
  alias: int
  temp: int

  @classmethod
  def of(cls, compiled) -> XlaStats:
    m = compiled.memory_analysis()
    return cls(m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
               m.temp_size_in_bytes)

  @property
  def peak(self) -> int:
    """Arguments, non-donated outputs and temporaries live at once (an upper bound)."""
    return self.argument + self.output - self.alias + self.temp


@dataclasses.dataclass(frozen=True)
class TrainPlan:
  params: int  # Analytic bytes per device (train layout).
  optimizer: int
  population: int  # The opponent pool's snapshots (rollout.seats=population), else 0.
  counter_policy: int  # FXP's counter policy: its params, optimizer state, ... (else 0).
  other_state: int  # KL reference params (if any), step, baselines, rng, counters.
  batch: int
  xla: XlaStats

  @property
  def analytic_arguments(self) -> int:
    return (self.params + self.optimizer + self.population + self.counter_policy
            + self.other_state + self.batch)

  @property
  def temporaries(self) -> int:
    return self.xla.temp

  @property
  def peak(self) -> int:
    return self.xla.peak


@dataclasses.dataclass(frozen=True)
class SamplerPlan:
  params: int  # Train layout, the program's argument.
  sampler_params: int  # The resharded copy (0 when the layouts agree).
  int8_copies: int  # The unembedding / layer weights the sampler quantises (0 when neither).
  kv_cache: int
  inputs: int  # Prompts, lengths, key.
  resident_state: int  # Optimizer state and the rest of the train state (the population's
  # snapshots included), held during rollouts.
  xla: XlaStats

  @property
  def analytic_arguments(self) -> int:
    return self.params + self.inputs

  @property
  def activations(self) -> int:
    """XLA temporaries beyond the resharded params, the int8 copies and the cache."""
    return self.xla.temp - self.sampler_params - self.int8_copies - self.kv_cache

  @property
  def peak(self) -> int:
    return self.xla.peak + self.resident_state


def leaf_bytes(x) -> int:
  """Bytes of one device's shard of an abstract or concrete array (replicated if unsharded)."""
  sharding = getattr(x, "sharding", None)
  shape = sharding.shard_shape(x.shape) if sharding is not None else x.shape
  dtype = x.dtype
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):  # Stored as its key data.
    data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct((), dtype))
    return math.prod(shape) * data.size * data.dtype.itemsize
  return math.prod(shape) * np.dtype(dtype).itemsize


def tree_bytes(tree) -> int:
  return sum(leaf_bytes(x) for x in jax.tree.leaves(tree))


def with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def experiment_shapes(config: spec_lib.RunSpec) -> experiment.Experiment:
  """An Experiment with what the train step needs (no tokenizer, no weights)."""
  if config.rollout.mode != "text":
    raise ValueError(f"rollout.mode={config.rollout.mode!r}: memory planning covers 'text' only.")
  if not config.rollout.max_prompt_len:
    raise ValueError("rollout.max_prompt_len=0: memory planning needs the prompt length; set it "
                     "(a run with 0 prints the length it found at start-up).")
  return experiment.Experiment(config, experiment.model_config(config), tokenizer=None,
                               chat=None, kits=(),
                               max_response_len=config.rollout.max_response_len, num_actions=1,
                               pad_id=0)


def batch_shapes(exp: experiment.Experiment) -> train_step.Batch:
  """The abstract train batch `experiment.make_collect` produces (text mode): every turn slot of
  the step's games, `configuration.collected_rows` rows."""
  size, length = configuration.collected_rows(exp.config), exp.seq_len
  full = lambda dtype: jax.ShapeDtypeStruct((size, length), dtype)
  row = lambda dtype: jax.ShapeDtypeStruct((size,), dtype)
  samples = advantages.Outcomes(
      reward=row(jnp.float32), game_kind=row(jnp.int32), role=row(jnp.int32),
      group=row(jnp.int32), game_index=row(jnp.int32), turn_index=row(jnp.int32),
      mask=row(jnp.bool_))
  return train_step.Batch(
      tokens=full(jnp.int32), positions=full(jnp.int32), response_mask=full(jnp.bool_),
      old_log_probs=full(jnp.float32), outcomes=samples, invalid_action=row(jnp.bool_))


def layout(exp: experiment.Experiment, mesh) -> sharding_lib.Layout:
  """`mesh` with the rules of the config (config.mesh.rules), as the training loop uses them."""
  return sharding_lib.Layout.from_config(exp.config.mesh, mesh=mesh)


def train_state_shapes(exp: experiment.Experiment, optimizer, mesh) -> train_step.TrainState:
  """The abstract TrainState, sharded in the train layout."""
  params = transformer.param_shapes(exp.model)
  shardings = layout(exp, mesh).params(transformer.param_axes(exp.model))
  sharding_lib.check_divisible(params, shardings)
  state = jax.eval_shape(lambda p: experiment.init_state(exp, p, optimizer), params)
  return with_shardings(state, sharding_lib.like_params(state, params, shardings))


def compile_train(exp: experiment.Experiment, mesh):
  """(compiled sharded train step, abstract state, abstract batch)."""
  placement = layout(exp, mesh)
  step, optimizer = experiment.build_train_step(exp, placement)
  state = train_state_shapes(exp, optimizer, mesh)
  batch = batch_shapes(exp)
  batch = with_shardings(batch, sharding_lib.batch_shardings(batch, mesh, placement.train_rules))
  if state.counter is not None:  # One program updates the learner, then the counter policy.
    step, batch = experiment.with_counter_update(step), (batch, batch)
  shardings = lambda tree: jax.tree.map(lambda x: x.sharding, tree)
  jitted = sharding_lib.shard_step(step, shardings(state), shardings(batch))
  return jitted.lower(state, batch).compile(), state, batch


def plan_train(exp: experiment.Experiment, mesh) -> TrainPlan:
  compiled, state, batch = compile_train(exp, mesh)
  params, opt = tree_bytes(state.params), tree_bytes(state.opt_state)
  pool, counter = tree_bytes(state.pool), tree_bytes(state.counter)
  return TrainPlan(params=params, optimizer=opt, population=pool, counter_policy=counter,
                   other_state=tree_bytes(state) - params - opt - pool - counter,
                   batch=tree_bytes(batch),
                   xla=XlaStats.of(compiled))


def sampler_fn(exp: experiment.Experiment, serve_shardings):
  """(params in train layout, prompts [B, P], lengths [B], key) -> sampling.Generation."""
  rollout = exp.config.rollout

  def run(params, prompts, lengths, key):
    return sampling.sample(exp.model, sharding_lib.reshard(params, serve_shardings), prompts,
                           lengths, key, rollout.temperature, rollout.top_p, rollout.top_k, (0,),
                           max_response_len=exp.max_response_len,
                           int8_logits=rollout.int8_logits, int8_weights=rollout.int8_weights)
  return run


def int8_copy_bytes(exp: experiment.Experiment, serve_shapes) -> int:
  """Per-device bytes of what the sampler quantises (`rollout.int8_logits`: the unembedding;
  `rollout.int8_weights`: every layer projection): one byte per weight of its source's sampler
  shard, and the float32 scales (one per output channel) whole."""
  rollout, model = exp.config.rollout, exp.model
  sources = []  # (weight, product of its input dims)
  if rollout.int8_weights:
    for name, (module, inputs) in transformer.PROJECTIONS.items():
      weight = serve_shapes["layers"][module][name]
      sources.append((weight, math.prod(weight.shape[1:1 + inputs])))
  if rollout.int8_logits:
    sources.append((serve_shapes["embedding" if model.tie_embeddings else "lm_head"],
                    model.d_model))
  return sum(leaf_bytes(weight) // weight.dtype.itemsize + 4 * weight.size // inputs
             for weight, inputs in sources)


def sampler_inputs(exp: experiment.Experiment, mesh, batch: int):
  """Abstract (params in train layout, prompts, lengths, key) with their shardings."""
  params = transformer.param_shapes(exp.model)
  placement = layout(exp, mesh)
  train = placement.params(transformer.param_axes(exp.model))
  rows = sharding_lib.batch_shardings(jax.ShapeDtypeStruct((batch,), jnp.int32), mesh,
                                      placement.sampler_rules)
  prompt_len = exp.config.rollout.max_prompt_len
  return (with_shardings(params, train),
          jax.ShapeDtypeStruct((batch, prompt_len), jnp.int32, sharding=rows),
          jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=rows),
          jax.ShapeDtypeStruct((), jax.random.key(0).dtype,
                               sharding=NamedSharding(mesh, PartitionSpec())))


def plan_sampler(exp: experiment.Experiment, mesh, batch: int, resident_state: int
                 ) -> SamplerPlan:
  """The sampler compiled for `batch` rows; `resident_state`: optimizer + other state bytes."""
  axes = transformer.param_axes(exp.model)
  placement = layout(exp, mesh)
  serve, train = placement.params(axes, sampler=True), placement.params(axes)
  params, *inputs = sampler_inputs(exp, mesh, batch)
  compiled = compiling.jit(sampler_fn(exp, serve)).lower(params, *inputs).compile()
  shapes = transformer.param_shapes(exp.model)
  same_layout = all(a.is_equivalent_to(b, len(x.shape)) for a, b, x in zip(
      jax.tree.leaves(train), jax.tree.leaves(serve), jax.tree.leaves(shapes)))
  cache = jax.eval_shape(lambda: transformer.init_cache(
      exp.model, batch, exp.config.rollout.max_prompt_len + exp.max_response_len))
  cache = with_shardings(cache, sharding_lib.cache_shardings(cache, mesh, placement.sampler_rules))
  serve_shapes = with_shardings(shapes, serve)
  return SamplerPlan(params=tree_bytes(params),
                     sampler_params=0 if same_layout else tree_bytes(serve_shapes),
                     int8_copies=int8_copy_bytes(exp, serve_shapes), kv_cache=tree_bytes(cache),
                     inputs=tree_bytes(inputs),
                     resident_state=resident_state, xla=XlaStats.of(compiled))


def plan(config: spec_lib.RunSpec, mesh, sampler_batch: int | None = None
         ) -> tuple[TrainPlan, SamplerPlan]:
  exp = experiment_shapes(config)
  train = plan_train(exp, mesh)
  sampler = plan_sampler(exp, mesh, sampler_batch or config.rollout.games_per_batch,
                         train.optimizer + train.population + train.counter_policy
                         + train.other_state)
  return train, sampler


def gib(n: int) -> str:
  """Bytes as GiB, or MiB below 0.1 GiB, in a fixed width."""
  return f"{n / GIB:9.3f} GiB" if abs(n) >= GIB / 10 else f"{n / 2**20:9.3f} MiB"


def report(config, mesh, train: TrainPlan, sampler: SamplerPlan, budget_gib: float,
           sampler_batch: int) -> str:
  """The printed table, per device."""
  m = experiment.model_config(config)
  budget = budget_gib * GIB
  fits = lambda n: "fits" if n <= budget else f"DOES NOT FIT (over by {(n - budget) / GIB:.2f} GiB)"
  r = config.rollout
  mesh_text = " x ".join(f"{k}={v}" for k, v in mesh.shape.items())
  lines = [
      f"model {config.model.preset} (params {m.param_dtype}, compute {m.dtype}, "
      f"remat={m.remat}); mesh {mesh_text} ({mesh.size} devices, {jax.devices()[0].platform})",
      f"train batch {r.samples_per_step} of {configuration.collected_rows(config)} collected "
      f"rows x {r.max_prompt_len}+{r.max_response_len} tokens, micro-batch "
      f"{config.rl.micro_batch_size}; sampler batch {sampler_batch}",
      "", "per device                     analytic         XLA",
      "training",
      f"  params                    {gib(train.params)}",
      f"  optimizer state           {gib(train.optimizer)}",
      f"  opponent population       {gib(train.population)}",
      f"  counter policy (FXP)      {gib(train.counter_policy)}",
      f"  other state + batch       {gib(train.other_state + train.batch)}",
      f"  arguments (cross-check)   {gib(train.analytic_arguments)} {gib(train.xla.argument)}",
      f"  activations/temporaries                 {gib(train.temporaries)}",
      f"  outputs not donated                     {gib(train.xla.output - train.xla.alias)}",
      f"  peak                                    {gib(train.peak)}  {fits(train.peak)}",
      "sampling",
      f"  params (train layout)     {gib(sampler.params)}",
      f"  params (sampler layout)   {gib(sampler.sampler_params)}   (resharded copy)",
      f"  int8 copies               {gib(sampler.int8_copies)}   (rollout.int8_logits/weights)",
      f"  KV cache                  {gib(sampler.kv_cache)}",
      f"  arguments (cross-check)   {gib(sampler.analytic_arguments)} {gib(sampler.xla.argument)}",
      f"  temporaries (all)                       {gib(sampler.xla.temp)}",
      f"  activations (temp - copies - cache)     {gib(sampler.activations)}",
      f"  resident train state      {gib(sampler.resident_state)}   (optimizer etc.)",
      f"  peak                                    {gib(sampler.peak)}  {fits(sampler.peak)}",
      f"overall peak {gib(max(train.peak, sampler.peak))} vs budget {budget_gib:g} GiB: "
      f"{fits(max(train.peak, sampler.peak))}"]
  return "\n".join(lines)


def _ensure_devices(count: int) -> None:
  """Re-executes this module with `count` simulated CPU devices unless XLA_FLAGS has them."""
  flag = f"--xla_force_host_platform_device_count={count}"
  current = os.environ.get("XLA_FLAGS", "")
  if flag in current.split():
    return
  kept = [f for f in current.split() if not f.startswith("--xla_force_host_platform_device_count")]
  os.environ["XLA_FLAGS"] = " ".join(kept + [flag])
  sys.stdout.flush()
  os.execv(sys.executable, [sys.executable, "-m", "jaxplay.cli.memory", *sys.argv[1:]])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  count = _DEVICES.value
  if count:
    _ensure_devices(count)
  devices = jax.devices()
  if count and len(devices) < count:  # E.g. one GPU here: simulate on the host's CPU devices.
    devices = jax.devices("cpu")
  if count and len(devices) < count:
    raise SystemExit(f"error: --devices={count} but only {len(devices)} are present.")
  devices = devices[:count] if count else devices
  try:  # The run's checks need the weights; a plan needs only the typed fields.
    config = spec_lib.from_mapping(_CONFIG.value)
  except spec_lib.SpecError as error:
    raise SystemExit(f"error: {error}") from None
  try:
    mesh_config = (config.mesh if _MESH.value is None
                   else sharding_lib.MeshConfig(**sharding_lib.parse_mesh_sizes(_MESH.value)))
  except ValueError as error:
    raise SystemExit(f"error: --mesh: {error}") from None
  mesh = sharding_lib.make_mesh(mesh_config, devices)
  batch = _SAMPLER_BATCH.value or config.rollout.games_per_batch
  try:
    train, sampler = plan(config, mesh, batch)
  except ValueError as error:  # Misconfiguration: a mesh or batch that does not split.
    raise SystemExit(f"error: {error}") from None
  print(report(config, mesh, train, sampler, _BUDGET.value, batch))
  if _JSON.value:
    figures = {"train": {**dataclasses.asdict(train), "peak": train.peak},
               "sampler": {**dataclasses.asdict(sampler), "peak": sampler.peak,
                           "activations": sampler.activations},
               "mesh": dict(mesh.shape), "devices": mesh.size}
    with open(_JSON.value, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  app.run(main)
