"""The training loop: collect (compiled rollouts) -> train_step -> evaluate -> checkpoint.

Deterministic for a seed: the rollout key of step k is fold_in(seed key, k), and the train state
(params, optimizer, RAE baselines, step, rng) is checkpointed whole, so a resumed run continues
exactly as if never stopped. Ctrl-C stops at the end of the current step with a checkpoint (a
second Ctrl-C aborts at once, saving only if the state is intact). The workdir may be local or `gs://...` (jaxplay/workdir.py); on
several hosts the first process writes its files (config, metrics, transcripts) and Orbax has every
process write its own checkpoint shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading

import jax
import ml_collections
from etils import epath
from jax.experimental import multihost_utils

from jaxplay import checkpoints, configuration, evaluate, experiment, metrics, sharding
from jaxplay import tokenizer as tokenizers
from jaxplay import train_step
from jaxplay import workdir as workdir_lib
from jaxplay.models import transformer


class WorkdirError(RuntimeError):
  pass


def _check_workdir(workdir: str, config: ml_collections.ConfigDict, overwrite: bool) -> None:
  """Refuses a workdir holding a run of another config (unless `overwrite`); records ours.

  Every process checks; the first one writes (all processes wait for it)."""
  folder = epath.Path(workdir)
  path = folder / "config.json"
  ours = json.loads(config.to_json_best_effort(sort_keys=True))
  if path.exists() and not overwrite:
    theirs = json.loads(path.read_text())
    if theirs != ours:
      changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
      raise WorkdirError(f"{workdir} holds a run of a different config (differs in "
                         f"{', '.join(changed)}); use another --workdir or pass --overwrite.")
  if jax.process_index() == 0:
    if overwrite and (folder / "checkpoints").is_dir():
      (folder / "checkpoints").rmtree()
      (folder / "metrics.jsonl").unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ours, indent=2, sort_keys=True))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("workdir checked")


def _write_transcripts(workdir: str, step: int, transcripts: list[str]) -> str:
  folder = epath.Path(workdir) / "transcripts"
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / f"step_{step:06d}.txt"
  path.write_text("\n\n".join(transcripts) + "\n")
  return os.fspath(path)


def _keys(config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  names = ("model", "run", "eval")
  return dict(zip(names, jax.random.split(jax.random.key(config.seed), len(names))))


@contextlib.contextmanager
def _stop_requests():
  """Yields a list that a first Ctrl-C (SIGINT) appends to, so the loop can stop at a step
  boundary; a second Ctrl-C interrupts at once (KeyboardInterrupt). Main thread only."""
  requests = []
  if threading.current_thread() is not threading.main_thread():
    yield requests
    return

  def request_stop(signum, frame):
    del signum, frame
    requests.append(True)
    signal.signal(signal.SIGINT, previous)
    print("Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again to abort now).",
          flush=True)

  previous = signal.signal(signal.SIGINT, request_stop)
  try:
    yield requests
  finally:
    signal.signal(signal.SIGINT, previous)


def _any_process(flag: bool) -> bool:
  """True when `flag` is set on any process (every process then stops at the same step)."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(jax.numpy.asarray(flag)).any())


def setup(config: ml_collections.ConfigDict):
  """(experiment, initial train state, compiled train step, layout) for a validated config.

  The state is placed on the mesh of `config.mesh` by the train rules (optimizer state like its
  params); the train step keeps that layout, takes batches split by rows, and donates the state.
  """
  layout = sharding.Layout.from_config(config.mesh)
  try:  # Loaded weights go straight to their shards; fresh ones are placed after init.
    model, params, tokenizer = experiment.load_model_and_tokenizer(
        config, _keys(config)["model"], layout.logical)
    axes = transformer.param_axes(model)
    params = sharding.shard_params(params, layout.mesh, layout.train_rules, axes)
  except sharding.IndivisibleError as error:
    raise configuration.ConfigError(f"config.mesh: {error}") from None
  exp = experiment.build(config, tokenizer, model)
  step_fn, optimizer = experiment.make_train_step(exp, layout)
  state = sharding.init_sharded(
      lambda p: train_step.init_state(p, optimizer, num_kinds=len(exp.kits), num_roles=2,
                                      seed=config.seed, reference=config.rl.kl_coef > 0),
      params, layout.params(axes))
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  return exp, state, sharding.shard_step(step_fn, state_shardings, layout.rows()), layout


def checkpointer(workdir: str, config: ml_collections.ConfigDict) -> checkpoints.Checkpointer:
  return checkpoints.Checkpointer(os.fspath(epath.Path(workdir) / "checkpoints"),
                                  config.train.keep_checkpoints)


def load_run(workdir: str, mesh: dict[str, int] | None = None):
  """(config, experiment, train state, step) of the latest good checkpoint in a run's workdir.

  `mesh` ({axis: size}, e.g. {"data": -1}) replaces the run's mesh sizes, to load a run on other
  devices than it trained on (a pod run on one GPU); the checkpoint is restored into that layout.
  """
  config = ml_collections.ConfigDict(json.loads((epath.Path(workdir) / "config.json").read_text()))
  config.mesh.update(mesh or {})
  try:
    sharding.mesh_shape(config.mesh, jax.device_count())
  except ValueError as error:
    raise WorkdirError(f"{workdir}: the run's {error} Pass a mesh for these devices "
                       "(load_run(..., mesh={'data': -1, 'fsdp': 1, 'tensor': 1}); "
                       "--mesh=-1,1,1 on the command line).") from None
  exp, state, _, _ = setup(config)
  restored = checkpointer(workdir, config).restore_latest(checkpoints.abstract_like(state))
  if restored is None:
    raise WorkdirError(f"{workdir} has no readable checkpoint.")
  step, state = restored
  return config, exp, state, step


def decoder(exp: experiment.Experiment):
  """Token ids -> text (special tokens skipped), for transcripts."""
  return lambda ids: tokenizers.decode(exp.tokenizer, list(map(int, ids)))


def train(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False) -> dict:
  """Runs (or resumes) training; returns a summary with paths and the first/last evaluations."""
  configuration.validate(config)
  _check_workdir(workdir, config, overwrite)
  keys = _keys(config)
  exp, state, step_fn, layout = setup(config)
  # The frozen opponent keeps the initial params (copied: the train step donates the state).
  frozen_params = (jax.tree.map(jax.numpy.copy, state.params)
                   if config.rollout.seats == "frozen" else None)
  collect = experiment.make_collect(exp, layout)
  evaluator = evaluate.Evaluator(exp, decoder(exp))
  ckpt = checkpointer(workdir, config)
  restored = ckpt.restore_latest(checkpoints.abstract_like(state))
  start = 0
  if restored is not None:
    start, state = restored
    print(f"Resumed from the checkpoint of step {start} in {ckpt.directory}.", flush=True)
  primary = jax.process_index() == 0  # Writes the workdir's files (Orbax: each its shards).
  writer = metrics.MetricsWriter(workdir, write_files=primary)
  if primary:
    metrics.truncate_after(writer.path, start)
  summary = {"workdir": workdir_lib.absolute(workdir), "start_step": start}

  def run_eval(step: int):
    games_key, math_key = jax.random.split(jax.random.fold_in(keys["eval"], step))
    results, transcripts = evaluator(state.params, games_key)
    if evaluate.math_due(config, step):
      results.update(evaluate.run_math(exp, state.params, math_key, workdir, step))
    writer.write(step, results)
    summary.setdefault("first_eval", results) if step == 0 else None
    summary["last_eval"] = results
    if primary:
      summary["transcripts"] = _write_transcripts(workdir, step, transcripts)
    print(f"eval step {step}: " + ", ".join(
        f"{k.removeprefix('eval/')} {v:.2f}" for k, v in results.items()
        if k.endswith(("/win_rate", "/invalid_rate", "/exploitability",
                       "/exploitability_estimate", "/accuracy"))), flush=True)

  if start == 0:
    run_eval(0)
  progress = metrics.Progress(config.train.steps, first_step=start)
  step = start
  with _stop_requests() as stop_requests:
    try:
      for step in range(start + 1, config.train.steps + 1):
        batch, stats = collect(state.params, frozen_params,
                               jax.random.fold_in(keys["run"], step))
        state, step_metrics = step_fn(state, batch)
        flat = writer.write(step, {**step_metrics, "rollout": stats})
        learner = batch.samples.mask  # The learner's turns of the step's games (all collected).
        tokens = int((batch.response_mask & learner[:, None]).sum())
        print(progress.line(step, flat, samples=int(learner.sum()), tokens=tokens), flush=True)
        if step % config.train.eval_every == 0 or step == config.train.steps:
          run_eval(step)
        if step % config.train.checkpoint_every == 0 or step == config.train.steps:
          ckpt.save(step, state)
        if _any_process(bool(stop_requests)):
          raise KeyboardInterrupt
    except KeyboardInterrupt:
      ckpt.wait()
      if not any(leaf.is_deleted() for leaf in jax.tree.leaves(state)):
        if int(state.step) not in ckpt.steps():
          ckpt.save(int(state.step), state, force=True)
        print(f"Interrupted: saved the checkpoint of step {int(state.step)}.", flush=True)
      raise
    finally:
      ckpt.wait()
      writer.close()
  summary.update(final_step=step, checkpoints=ckpt.directory, metrics=writer.path,
                 tensorboard=os.fspath(epath.Path(workdir) / "tensorboard"))
  ckpt.close()
  return summary
