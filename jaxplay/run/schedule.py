"""Iterative-SPO's schedule: a run alternates phases of game self-play and of RLVR on tasks.

With `schedule.mode="iterative_spo"` each step trains on one phase's game kinds only: phase 0 the
training games that are not tasks (self-play), phase 1 the tasks (games/task.py). The run starts
in phase 0 and switches

- `switch="cadence"`: every `schedule.cadence` steps;
- `switch="plateau"`: at an evaluation, once the phase has run `min_steps` steps and its tracked
  metric has not beaten the phase's best by more than `tolerance` for `patience` evaluations in a
  row. The tracked metric is, in phase 0, the learner's win rate against `schedule.opponent`
  (eval/<game>/<opponent>/win_rate, mean over the games) and, in phase 1, the held-out accuracy
  (eval/<task>/difficulty_<d>/accuracy, mean over tasks and difficulties). The evaluation at the
  start of a phase sets its first best.

The schedule lives in the train state (`TrainState.schedule`), so checkpoints hold it and a resumed
run goes on in the same phase; `schedule/phase` and `schedule/phase_steps` are logged every step.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from games import task
from jaxplay.run import spec as spec_lib

MODES = ("", "iterative_spo")
SWITCHES = ("plateau", "cadence")
PHASES = ("games", "tasks")  # Phase 0 and phase 1.


@struct.dataclass
class Schedule:
  phase: jnp.ndarray  # int32 [], 0 = games (self-play), 1 = tasks (RLVR).
  since: jnp.ndarray  # int32 [], the step the phase began after.
  best: jnp.ndarray  # float32 [], the tracked metric's best evaluation in this phase.
  stale: jnp.ndarray  # int32 [], evaluations in a row without beating it by > tolerance.


def initial() -> Schedule:
  return Schedule(jnp.int32(0), jnp.int32(0), jnp.float32(-jnp.inf), jnp.int32(0))


def phase_kinds(game_list) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The game kinds (indices into the training games) of phase 0 (games) and phase 1 (tasks)."""
  tasks = tuple(k for k, g in enumerate(game_list) if isinstance(g, task.Task))
  return tuple(k for k in range(len(game_list)) if k not in tasks), tasks


def _switched(schedule: Schedule, step: int) -> Schedule:
  return Schedule(1 - schedule.phase, jnp.int32(step), jnp.float32(-jnp.inf), jnp.int32(0))


def after_step(config: spec_lib.ScheduleSpec, schedule: Schedule, step: int) -> Schedule:
  """The schedule after train step `step`: the cadence's switch."""
  if config.switch == "cadence" and step - int(schedule.since) >= config.cadence:
    return _switched(schedule, step)
  return schedule


def tracked(config: spec_lib.ScheduleSpec, phase: int, results: dict[str, float],
            game_list) -> float:
  """The phase's tracked metric in an evaluation's results."""
  kinds = phase_kinds(game_list)[phase]
  names = [game_list[k].name for k in kinds]
  if phase == 0:
    values = [results[f"eval/{name}/{config.opponent}/win_rate"] for name in names]
  else:
    values = [v for k, v in results.items() if k.endswith("/accuracy")
              and any(k.startswith(f"eval/{name}/difficulty_") for name in names)]
  return sum(values) / len(values)


def after_eval(config: spec_lib.ScheduleSpec, schedule: Schedule, step: int,
               results: dict[str, float], game_list) -> Schedule:
  """The schedule after the evaluation `results` at `step`: the plateau's switch. A phase that
  starts here takes its first best from the same results."""
  if config.switch != "plateau":
    return schedule
  metric = tracked(config, int(schedule.phase), results, game_list)
  if not jnp.isfinite(schedule.best) or metric > float(schedule.best) + config.tolerance:
    return schedule.replace(best=jnp.float32(max(metric, float(schedule.best))),
                            stale=jnp.int32(0))
  schedule = schedule.replace(stale=schedule.stale + 1)
  if int(schedule.stale) >= config.patience and step - int(schedule.since) >= config.min_steps:
    schedule = _switched(schedule, step)
    return schedule.replace(best=jnp.float32(
        tracked(config, int(schedule.phase), results, game_list)))
  return schedule
