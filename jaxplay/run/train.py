"""The training loop: collect (compiled rollouts) -> train_step -> evaluate -> checkpoint.

Deterministic for a seed: the rollout key of step k is fold_in(seed key, k), and the train state
(params, optimizer, RAE baselines, step, rng) is checkpointed whole, so a resumed run continues
exactly as if never stopped; it may raise `train.steps` (see `workdir.RESUMABLE_FIELDS`).

Nothing in the workdir is touched until the config is validated and the model, games and train
step are built; then the run takes the workdir's lock, (with `overwrite`) removes the old run, and
records its config. Ctrl-C (SIGINT) or SIGTERM stops at the end of the current step with a
checkpoint (a second one aborts at once, saving only if the state is intact). The workdir may be
local or `gs://...` (jaxplay/run/workdir.py); on several hosts the first process writes its files
(config, metrics, transcripts, lock) and Orbax has every process write its own checkpoint shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath
from jax.experimental import multihost_utils

from jaxplay.rl import population
from jaxplay.run import checkpoints, configuration, evaluator, experiment, metrics, store
from jaxplay.run import phases as phases_lib
from jaxplay.run import schedule as schedule_lib
from jaxplay.run import spec as spec_lib
from jaxplay.run import workdir as workdir_lib


@contextlib.contextmanager
def _claim_workdir(workdir: str, config: spec_lib.RunSpec, overwrite: bool):
  """Holds the workdir's lock while the run trains; on entry removes the old run when
  `overwrite` (or when it saved no checkpoint) and records this config.

  The first process does the work; every process fails alike when it cannot."""
  lock = workdir_lib.RunLock(workdir)
  refusal = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
      has_checkpoints = store.has_checkpoints(workdir, config)
      if not overwrite:
        workdir_lib.check_resumable(workdir, store.config_record(config), has_checkpoints)
      if overwrite or not has_checkpoints:
        removed = workdir_lib.remove_run(workdir)
        if overwrite and removed:
          print(f"--overwrite: removed the old run's {', '.join(removed)} from {workdir}.",
                flush=True)
      (epath.Path(workdir) / "config.json").write_text(
          json.dumps(store.config_record(config), indent=2, sort_keys=True))
    except BaseException as error:  # The lock is ours only while the run goes on.
      lock.release()
      if not isinstance(error, workdir_lib.WorkdirError):
        raise
      refusal = error
  if _any_process(refusal is not None):
    raise refusal or workdir_lib.WorkdirError(f"{workdir}: the first process refused it.")
  try:
    yield
  finally:
    lock.release()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _write_transcripts(workdir: str, step: int, transcripts: list[str]) -> str:
  folder = epath.Path(workdir) / "transcripts"
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / f"step_{step:06d}.txt"
  path.write_text("\n\n".join(transcripts) + "\n")
  return os.fspath(path)


@contextlib.contextmanager
def _stop_requests():
  """Yields a list that a first SIGINT (Ctrl-C) or SIGTERM appends its name to, so the loop can
  stop at a step boundary; a second one interrupts at once (KeyboardInterrupt). Main thread only."""
  requests = []
  if threading.current_thread() is not threading.main_thread():
    yield requests
    return

  def abort(signum, frame):
    del signum, frame
    raise KeyboardInterrupt

  def request_stop(signum, frame):
    del frame
    requests.append(signal.Signals(signum).name)
    for stop in STOP_SIGNALS:
      signal.signal(stop, abort)
    print(f"{requests[-1]}: stopping after this step with a checkpoint (send it again to "
          "abort now).", flush=True)

  previous = {stop: signal.signal(stop, request_stop) for stop in STOP_SIGNALS}
  try:
    yield requests
  finally:
    for stop, handler in previous.items():
      signal.signal(stop, handler)


def _any_process(flag: bool) -> bool:
  """True when `flag` is set on any process (every process then stops at the same step)."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(jax.numpy.asarray(flag)).any())


def train(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False) -> dict:
  """Runs (or resumes) training; returns a summary with paths, the first/last evaluations and,
  when a signal stopped the run early, `stopped_by` (its name)."""
  config = configuration.validate(config)
  workdir_lib.check_writable(workdir)
  workdir_lib.RunLock(workdir).check()
  if not overwrite:  # Refused before minutes of set-up; checked again under the lock.
    workdir_lib.check_resumable(workdir, store.config_record(config),
                                store.has_checkpoints(workdir, config))
  keys = store.run_keys(config)
  phases = phases_lib.Phases()
  with phases("set-up: model, games, train step"):
    exp, state, step_fn, layout = store.setup(config)
  if not config.rollout.max_prompt_len:
    print(f"rollout.max_prompt_len=0: the longest prompt of the run's games takes "
          f"{exp.config.rollout.max_prompt_len} tokens.", flush=True)
  # The frozen opponent keeps the initial params (copied: the train step donates the state).
  frozen_params = (jax.tree.map(jax.numpy.copy, state.params)
                   if "frozen" in config.rollout.seats else None)
  if config.schedule.mode:
    collect = _phase_games([
        _learner_games(experiment.make_collect(exp, layout, kinds=kinds))
        for kinds in schedule_lib.phase_kinds([kit.game for kit in exp.kits])])
  elif experiment.uses_counters(config) and config.population.counter_oracle == "games":
    collect = _with_counter_games(experiment.make_collect(exp, layout),
                                  experiment.make_collect(exp, layout, counter=True))
  else:
    collect = _learner_games(experiment.make_collect(exp, layout))
  evaluate_games = evaluator.Evaluator(exp, store.decoder(exp), phases)
  with _claim_workdir(workdir, config, overwrite):
    return _loop(config, workdir, keys, exp, state, step_fn, collect, frozen_params,
                 evaluate_games, phases)


def _learner_games(collect):
  """`collect(state, others, key) -> (train step input, the learner's batch, stats)`."""
  def games(state, others, key):
    batch, stats = collect(state.params, others, key)
    return batch, batch, stats
  return games


def _phase_games(collects):
  """`collect` of the schedule's current phase (Iterative-SPO): `collects[phase]`."""
  def games(state, others, key):
    return collects[int(state.schedule.phase)](state, others, key)
  return games


def _with_schedule(state, schedule: schedule_lib.Schedule):
  """The state with `schedule`, placed as the one it replaces."""
  placed = jax.device_put(schedule, jax.tree.map(lambda x: x.sharding, state.schedule))
  if int(placed.phase) != int(state.schedule.phase):
    print(f"schedule: the {schedule_lib.PHASES[int(placed.phase)]} phase starts after step "
          f"{int(placed.since)}.", flush=True)
  return state.replace(schedule=placed)


def _with_counter_games(collect, collect_counter):
  """`collect(state, pool, key) -> ((batch, counter batch), batch, stats)`: the learner's games
  and the counter policy's (FXP), the latter's stats under "counter"."""
  def games(state, pool, key):
    batch, stats = collect(state.params, pool, key)
    counter_batch, stats["counter"] = collect_counter(
        state.counter.params, pool, jax.random.fold_in(key, experiment.COUNTER_STREAM))
    return (batch, counter_batch), batch, stats
  return games


def _pool_metrics(pool: population.Pool, games, score_sums) -> dict:
  """The learner's mean score over `games` (float32 [members]) and the held members' scores."""
  held = population.held(pool)
  return {"size": pool.size, "learner_score": score_sums.sum() / max(float(games.sum()), 1.0),
          "member_score_min": jnp.where(held, pool.score, jax.numpy.inf).min(),
          "member_score_max": jnp.where(held, pool.score, -jax.numpy.inf).max()}


def _advance_pool(config, update_pool, restart_counter, state, stats, step: int):
  """(state with the step's results against the population recorded and, every
  population.snapshot_every steps, the new params (and the counter policy's) added, then the
  counter policy restarted by `restart_counter` if given; the population's metrics)."""
  games, score_sums = stats.pop("population_games"), stats.pop("population_score_sums")
  snapshot = step % config.population.snapshot_every == 0
  counter_params = None if state.counter is None else state.counter.params
  pool = update_pool(state.pool, state.params, counter_params, games, score_sums, step, snapshot)
  metrics = _pool_metrics(pool, games, score_sums)
  if snapshot and restart_counter is not None:
    state = state.replace(counter=restart_counter(state.counter, state.counter_start))
  if state.counter is not None:
    metrics["counter_size"] = population.counters_held(pool).sum()
  if "counter" in stats:  # The counter policy's games (population.counter_oracle=games).
    counter_stats = stats["counter"]
    counter_games = counter_stats.pop("population_games")
    counter_scores = counter_stats.pop("population_score_sums")
    metrics["counter_score"] = counter_scores.sum() / max(float(counter_games.sum()), 1.0)
  return state.replace(pool=pool), metrics


def _loop(config, workdir, keys, exp, state, step_fn, collect, frozen_params, evaluate_games,
          phases) -> dict:
  """The steps of `train` in a claimed workdir."""
  ckpt = store.checkpointer(workdir, config, store.frozen_leaves(exp, state))
  restored = ckpt.restore_latest(checkpoints.abstract_like(state), move_aside=True)
  start = 0
  if restored is not None:
    start, state = restored
    print(f"Resumed from the checkpoint of step {start} in {ckpt.directory}.", flush=True)
  primary = jax.process_index() == 0  # Writes the workdir's files (Orbax: each its shards).
  sink = (metrics.WandbSink(workdir, config.train.wandb_project, config.train.wandb_mode,
                            store.config_record(config))
          if primary and config.train.wandb_project else None)
  writer = metrics.MetricsWriter(workdir, write_files=primary,
                                 keep_through=start if restored else -1, sink=sink)
  summary = {"workdir": workdir_lib.absolute(workdir), "start_step": start}
  if sink is not None:
    summary["wandb"] = sink.folder

  def run_eval(step: int):
    games_key, math_key = jax.random.split(jax.random.fold_in(keys["eval"], step))
    results, transcripts = evaluate_games(state.params, games_key, state.pool)
    if evaluator.math_due(config, step):
      results.update(evaluator.run_math(exp, state.params, math_key, workdir, step))
    writer.write_eval(step, results, transcripts)
    summary.setdefault("first_eval", results) if step == 0 else None
    summary["last_eval"] = results
    if primary:
      summary["transcripts"] = _write_transcripts(workdir, step, transcripts)
    print(f"eval step {step}: " + ", ".join(
        f"{k.removeprefix('eval/')} {v:.2f}" for k, v in results.items()
        if k.endswith(("/win_rate", "/invalid_rate", "/exploitability",
                       "/exploitability_estimate", "/accuracy"))), flush=True)
    return results

  def with_eval(state, step: int):
    """Evaluates at `step`; returns the state with the schedule's plateau rule applied."""
    results = run_eval(step)
    if state.schedule is None:
      return state
    return _with_schedule(state, schedule_lib.after_eval(
        config.schedule, state.schedule, step, results, [kit.game for kit in exp.kits]))

  update_pool = (experiment.make_pool_update(exp, state.pool)
                 if experiment.uses_population(config) else None)
  restart_counter = (experiment.make_counter_restart(exp, state)
                     if state.counter_start is not None else None)
  if not restored:
    state = with_eval(state, 0)
  progress = metrics.Progress(config.train.steps, first_step=start)
  step = start
  with _stop_requests() as stop_requests:
    try:
      for step in range(start + 1, config.train.steps + 1):
        with phases(f"step {step}: rollout", eta_label="rollout", report=False):
          others = state.pool if update_pool else frozen_params
          step_input, batch, stats = jax.block_until_ready(
              collect(state, others, jax.random.fold_in(keys["run"], step)))
        with phases(f"step {step}: train", eta_label="train", report=False):
          state, step_metrics = jax.block_until_ready(step_fn(state, step_input))
          if update_pool:
            state, step_metrics["population"] = _advance_pool(
                config, update_pool, restart_counter, state, stats, step)
          if state.schedule is not None:  # The phase this step trained in.
            step_metrics["schedule"] = {"phase": state.schedule.phase,
                                        "phase_steps": step - state.schedule.since}
            state = _with_schedule(state, schedule_lib.after_step(config.schedule,
                                                                  state.schedule, step))
        flat = writer.write(step, {**step_metrics, "rollout": stats})
        learner = batch.outcomes.mask  # The learner's turns of the step's games (all collected).
        tokens = int((batch.response_mask & learner[:, None]).sum())
        print(progress.line(step, flat, samples=int(learner.sum()), tokens=tokens,
                            phases={"rollout": phases.brief(f"step {step}: rollout"),
                                    "train": phases.brief(f"step {step}: train")}), flush=True)
        if step % config.train.eval_every == 0 or step == config.train.steps:
          state = with_eval(state, step)
        if _any_process(bool(stop_requests)) and step < config.train.steps:
          summary["stopped_by"] = stop_requests[0] if stop_requests else "another process"
          ckpt.save(step, state)
          break
        if step % config.train.checkpoint_every == 0 or step == config.train.steps:
          ckpt.save(step, state)
    except KeyboardInterrupt:
      ckpt.wait()
      if not any(leaf.is_deleted() for leaf in jax.tree.leaves(state)):
        if int(state.step) not in ckpt.steps():
          ckpt.save(int(state.step), state, force=True)
        print(f"Aborted: saved the checkpoint of step {int(state.step)}.", flush=True)
      raise
    finally:
      ckpt.wait()
      writer.close()
  summary.update(final_step=step, checkpoints=ckpt.directory, metrics=writer.path,
                 tensorboard=os.fspath(epath.Path(workdir) / "tensorboard"))
  ckpt.close()
  return summary
