"""A run from its config or its workdir: `setup` builds the experiment, train state and compiled
step; `load_run` restores a run's latest good checkpoint (what evaluate, export and play use)."""

from __future__ import annotations

import functools
import os

import jax
from etils import epath

from jaxplay import sharding
from jaxplay.models import transformer
from jaxplay.rl import train_step
from jaxplay.run import checkpoints, configuration, experiment
from jaxplay.run import spec as spec_lib
from jaxplay.run import workdir as workdir_lib
from jaxplay.text import tokenizer as tokenizers


def config_record(config: spec_lib.RunSpec) -> dict:
  """The config as the JSON record kept in a run's config.json."""
  return spec_lib.as_record(config)


def run_keys(config: spec_lib.RunSpec) -> dict[str, jax.Array]:
  names = ("model", "run", "eval")
  return dict(zip(names, jax.random.split(jax.random.key(config.seed), len(names))))


def setup(config: spec_lib.RunSpec):
  """(experiment, initial train state, compiled train step, layout) for a run spec.

  The state is placed on the mesh of `config.mesh` by the train rules (optimizer state like its
  params); the train step keeps that layout, takes batches split by rows, and donates the state.
  With counter policies (population.counters) it takes (batch, counter batch) and updates both,
  or with population.counter_oracle=exact the learner's batch, the counter learning from the pool.
  """
  layout = sharding.Layout.from_config(config.mesh)
  try:  # Loaded weights go straight to their shards; fresh ones are placed after init.
    model, params, tokenizer = experiment.load_model_and_tokenizer(
        config, run_keys(config)["model"], layout.logical)
    axes = transformer.param_axes(model)
    params = sharding.shard_params(params, layout.mesh, layout.train_rules, axes)
  except sharding.IndivisibleError as error:
    raise configuration.ConfigError(f"config.mesh: {error}") from None
  exp = experiment.build(config, tokenizer, model)
  step_fn, optimizer = experiment.build_train_step(exp, layout)
  if experiment.uses_counters(config):  # Takes (batch, counter batch): one program.
    step_fn = experiment.with_counter_update(
        step_fn, experiment.make_best_response_update(exp)
        if config.population.counter_oracle == "exact" else None)
  state = sharding.init_sharded(lambda p: experiment.init_state(exp, p, optimizer), params,
                                layout.params(axes))
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  step_fn = sharding.shard_step(step_fn, state_shardings, layout.rows(),
                               jit=functools.partial(exp.programs.jit, name="train_step"))
  return exp, state, step_fn, layout


def frozen_leaves(exp: experiment.Experiment, state: train_step.TrainState):
  """What checkpoints leave out: with LoRA, the base weights in params and ref_params (loaded
  again from the model's path at every start), the counter policy's too, else nothing (None)."""
  trainable = experiment.trainable(exp.model)
  if trainable is None:
    return None
  fixed = lambda tree: None if tree is None else jax.tree.map(
      lambda x, keep: None if keep else x, tree, trainable)

  def frozen(state):
    leaves = jax.tree.map(lambda _: None, state).replace(params=fixed(state.params),
                                                         ref_params=fixed(state.ref_params))
    return leaves if state.counter is None else leaves.replace(counter=frozen(state.counter))
  return frozen(state)


def checkpointer(workdir: str, config: spec_lib.RunSpec,
                 frozen=None) -> checkpoints.Checkpointer:
  """The run's checkpoints; `frozen` (`frozen_leaves`) as in checkpoints.Checkpointer."""
  return checkpoints.Checkpointer(os.fspath(epath.Path(workdir) / "checkpoints"),
                                  config.train.keep_checkpoints, frozen)


def has_checkpoints(workdir: str, config: spec_lib.RunSpec) -> bool:
  """Whether the run in `workdir` saved a checkpoint (creates nothing)."""
  if not (epath.Path(workdir) / "checkpoints").exists():
    return False
  ckpt = checkpointer(workdir, config)
  saved = bool(ckpt.steps())
  ckpt.close()
  return saved


def load_run(workdir: str, mesh: dict[str, int] | None = None):
  """(spec, experiment, train state, step) of the latest good checkpoint in a run's workdir.

  `mesh` ({axis: size}, e.g. {"data": -1}) replaces the run's mesh sizes, to load a run on other
  devices than it trained on (a pod run on one GPU); the checkpoint is restored into that layout.
  Raises WorkdirError when the workdir holds no run or no readable checkpoint.
  """
  record = workdir_lib.read_config(workdir)
  if record is None:
    raise workdir_lib.WorkdirError(f"{workdir} holds no run (no config.json); train one with "
                                   "`python -m jaxplay.main`.")
  try:
    config = spec_lib.from_mapping(record)
  except spec_lib.SpecError as error:
    raise workdir_lib.WorkdirError(f"{workdir}/config.json: {error}") from None
  config = config.replace(mesh=dict(mesh or {}))
  try:
    sharding.mesh_shape(config.mesh, jax.device_count())
  except ValueError as error:
    raise workdir_lib.WorkdirError(
        f"{workdir}: the run's {error} Pass a mesh for these devices (load_run(..., "
        "mesh={'data': -1, 'fsdp': 1, 'tensor': 1}); --mesh=-1,1,1 on the command line).") from None
  exp, state, _, _ = setup(config)
  restored = checkpointer(workdir, config, frozen_leaves(exp, state)).restore_latest(
      checkpoints.abstract_like(state))
  if restored is None:
    raise workdir_lib.WorkdirError(f"{workdir} has no readable checkpoint.")
  step, state = restored
  return config, exp, state, step


def decoder(exp: experiment.Experiment):
  """Token ids -> text (special tokens skipped), for transcripts."""
  return lambda ids: tokenizers.decode(exp.tokenizer, list(map(int, ids)))
