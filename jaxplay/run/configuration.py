"""Start-up checks of an experiment config: every error is one line naming the field and the fix."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from typing import Any, Mapping

import jax
import ml_collections

import games
from games import opponents, task
from jaxplay import errors, sharding
from jaxplay.evaluation import matches
from jaxplay.models import configs as model_configs
from jaxplay.models import loading, weight_files
from jaxplay.rl import advantages, losses, population
from jaxplay.run import schedule as schedule_lib
from jaxplay.run import spec as spec_lib
from jaxplay.text import tokenizer as tokenizers

ROLLOUT_MODES = ("text", "action_scoring")
SEAT_MODES = ("self_play", "frozen", "population")  # Besides opponent:<name>.
SCHEDULES = ("constant", "cosine")
WANDB_MODES = ("offline", "online")
PACKAGE_MODELS = ("gemma3_270m_package", "games_bpe")
# Estimators that compare the games of a group (rl.group_size games sharing a seed).
GROUP_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "spo")

# (field, valid(value), the rule its error states), checked in this order.
_RANGES = (
    ("rollout.temperature", lambda t: t > 0,
     "must be > 0 for training: at 0 the sampler is greedy and reports temperature-1 log-probs "
     "while the loss divides logits by 1e-6, so the importance ratio explodes (eval.temperature=0 "
     "is greedy evaluation)."),
    ("rollout.top_p", lambda p: 0 < p <= 1, "must be in (0, 1] (1 = off)."),
    ("rollout.top_k", lambda k: k >= 0, "must be >= 0 (0 = off)."),
    ("rollout.batch_halvings", lambda n: n >= 0,
     "must be >= 0 (0 = the model always runs on all of a batch's games)."),
    ("rollout.max_prompt_len", lambda n: n >= 0,
     "must be >= 0 (0 = the longest prompt of the run's games, found at start-up)."),
    ("eval.temperature", lambda t: t >= 0, "must be >= 0 (0 = greedy)."),
    ("eval.top_p", lambda p: 0 < p <= 1, "must be in (0, 1] (1 = off)."),
    ("eval.kuhn_samples", lambda n: n >= 0, "must be >= 0 (0 = no estimate)."),
    ("eval.transcripts", lambda n: n >= 0, "must be >= 0 (0 = none)."),
    ("rl.rae_decay", lambda d: 0 <= d < 1,
     "must be in [0, 1) (the decay of RAE's moving-average baseline)."),
    ("rl.clip_eps", lambda e: e > 0,
     "must be > 0 (PPO clips the ratio to [1 - clip_eps, 1 + clip_eps_high])."),
    ("rl.clip_eps_high", lambda e: e > 0,
     "must be > 0 (PPO clips the ratio to [1 - clip_eps, 1 + clip_eps_high])."),
    ("rl.dual_clip", lambda c: c == 0 or c > 1, "must be 0 (off) or > 1 (MARS: 1 + 2 * clip_eps)."),
    ("rl.kl_coef", lambda c: c >= 0, "must be >= 0 (0 = no KL term)."),
    ("rl.kl_reference_decay", lambda d: 0 <= d <= 1, "must be in [0, 1] (1 = the initial params)."),
    ("rl.entropy_coef", lambda c: c >= 0, "must be >= 0 (0 = no entropy bonus)."),
    ("population.score_decay", lambda d: 0 <= d < 1,
     "must be in [0, 1) (the decay of the learner's moving-average score per member)."),
    ("population.counters", lambda n: n >= 0, "must be >= 0 (0 = no counter policies, no FXP)."),
    ("population.cross_play", lambda c: 0 <= c <= 1,
     "must be in [0, 1] (the share of population games against the counter policies)."),
    ("optimizer.warmup_steps", lambda n: n >= 0, "must be >= 0 (0 = no warm-up)."),
    ("optimizer.b1", lambda b: 0 <= b < 1, "must be in [0, 1) (Adam's first-moment decay)."),
    ("optimizer.b2", lambda b: 0 <= b < 1, "must be in [0, 1) (Adam's second-moment decay)."),
    ("optimizer.weight_decay", lambda w: w >= 0, "must be >= 0 (0 = none)."),
    ("optimizer.grad_clip", lambda g: g > 0,
     "must be > 0 (gradients are clipped to this global norm)."),
    ("prompt.examples", lambda n: n >= 0, "must be >= 0 (0 = no worked examples)."),
    ("model.vocab_size", lambda n: n >= 0, "must be >= 0 (the games BPE's size; 0 = bytes only)."),
    ("invalid_rewards", lambda r: len(r) == 2, "must be two rewards: (offender, other)."),
    ("eval.invalid_rewards", lambda r: len(r) == 2, "must be two rewards: (offender, other)."),
)


class ConfigError(errors.UserError, ValueError):
  """A config field is wrong; the message names it."""



def heldout_game_names(config: spec_lib.RunSpec) -> tuple[str, ...]:
  """eval.heldout_games less the training games (those are evaluated once, as training games)."""
  return tuple(n for n in config.eval.heldout_games if n not in config.games)


def eval_games_per_seat(config: spec_lib.RunSpec, name: str) -> int:
  """Games per seat and opponent in the evaluation of game `name` (a task: half its problems)."""
  return config.eval.games_per_seat_by_game.get(name, config.eval.games_per_seat)


def _make(config: spec_lib.RunSpec, names: tuple[str, ...],
          invalid_rewards: tuple[float, float] | None) -> tuple[games.Game, ...]:
  rewards = tuple(invalid_rewards or config.invalid_rewards)
  return tuple(games.make(name, invalid_rewards=rewards, **dict(config.game_options.get(name, {})))
               for name in names)


def make_games(config: spec_lib.RunSpec,
               invalid_rewards: tuple[float, float] | None = None) -> tuple[games.Game, ...]:
  """The training games with their options and invalid-move rewards."""
  return _make(config, config.games, invalid_rewards)


def make_heldout_games(config: spec_lib.RunSpec) -> tuple[games.Game, ...]:
  """The held-out games (evaluated, never trained on) with their options."""
  return _make(config, heldout_game_names(config), None)


def _check_schedule(config: spec_lib.RunSpec) -> None:
  """schedule.*: Iterative-SPO needs games and tasks, and a tracked metric the evaluations give."""
  _one_of(config, "schedule.mode", schedule_lib.MODES)
  _one_of(config, "schedule.switch", schedule_lib.SWITCHES)
  if not config.schedule.mode:
    return
  game_list = make_games(config)
  phases = schedule_lib.phase_kinds(game_list)
  if not all(phases):
    tasks = [n for n in games.registered_names() if isinstance(games.make(n), task.Task)]
    _fail("schedule.mode", config.schedule.mode, "alternates games and tasks: config.games needs "
          f"at least one of each (tasks: {', '.join(tasks)}).")
  _positive(config, "schedule.cadence", "schedule.patience")
  if config.schedule.tolerance < 0 or config.schedule.min_steps < 0:
    field = "tolerance" if config.schedule.tolerance < 0 else "min_steps"
    _fail(f"schedule.{field}", getattr(config.schedule, field), "must be >= 0.")
  opponent = config.schedule.opponent
  if config.schedule.switch == "plateau":
    for kind in phases[0]:
      name = game_list[kind].name
      if opponent not in config.eval.opponents or opponent not in opponents.names(name):
        _fail("schedule.opponent", opponent, f"the games' phase tracks the win rate against it: "
              f"list it in eval.opponents={','.join(config.eval.opponents)!r} (and {name} must "
              f"have it; valid: {', '.join(opponents.names(name))}).")
  for phase, kinds in zip(schedule_lib.PHASES, phases):
    rows = sum(game_list[k].max_turns for k in kinds) * config.rollout.games_per_batch
    if config.rollout.samples_per_step > rows:
      _fail("rollout.samples_per_step", config.rollout.samples_per_step,
            f"more than the {rows} turns the {phase} phase's games give; raise games_per_batch.")


def task_difficulties(config: spec_lib.RunSpec, game: games.Game) -> tuple[int, ...]:
  """The difficulties a task is evaluated at: those of eval.task_difficulties it has, else the
  one it trains at."""
  listed = [int(d) for d in config.eval.task_difficulties]
  return tuple(d for d in listed if d in game.difficulties) or (game.difficulty,)


def collected_rows(config: spec_lib.RunSpec) -> int:
  """Rows of a step's train batch: every turn slot of rollout.games_per_batch games of each
  training game (the train step draws rollout.samples_per_step of them)."""
  return sum(g.max_turns for g in make_games(config)) * config.rollout.games_per_batch


def seat_opponent(config: spec_lib.RunSpec) -> str | None:
  """The fixed opponent's name when `rollout.seats` has 'opponent:<name>', else None."""
  return next((m.split(":", 1)[1] for m in config.rollout.seats if m.startswith("opponent:")),
              None)


def self_play_games(config: spec_lib.RunSpec) -> int:
  """Games of each kind's batch played in self-play (the first ones; the rest against the frozen
  copy, the population or the fixed opponent): all, none, or half of them when `rollout.seats`
  mixes self_play with another mode."""
  modes = config.rollout.seats
  return config.rollout.games_per_batch * ("self_play" in modes) // len(modes)


_SHIPPED_CONFIG = re.compile(r"--config=configs/(\w+\.py)(:.*)?$")


def installed_config(arg: str) -> str:
  """`--config=configs/NAME.py[:ARG]` naming a shipped config that is not under the current
  directory -> the same flag with the installed `configs` package's file (runs outside the
  repository); any other argument unchanged."""
  match = _SHIPPED_CONFIG.match(arg)
  if match is None or os.path.exists(os.path.join("configs", match[1])):
    return arg
  spec = importlib.util.find_spec("configs")
  for folder in (spec.submodule_search_locations or []) if spec else []:
    if os.path.isfile(path := os.path.join(folder, match[1])):
      return f"--config={path}{match[2] or ''}"
  return arg


def _fail(field: str, value, problem: str) -> None:
  if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
    value = ",".join(value)  # Names, as the config writes them.
  raise ConfigError(f"config.{field}={value!r}: {problem}")


def _get(config: spec_lib.RunSpec, field: str):
  value = config
  for part in field.split("."):
    value = getattr(value, part)
  return value


def _one_of(config, field: str, valid) -> None:
  value = _get(config, field)
  if value not in valid:
    _fail(field, value, f"unknown; valid: {', '.join(map(str, valid))}.")


def _positive(config, *fields: str) -> None:
  for field in fields:
    if not (value := _get(config, field)) > 0:
      _fail(field, value, "must be positive.")


def validate(config: ml_collections.ConfigDict | Mapping[str, Any],
             num_devices: int | None = None) -> spec_lib.RunSpec:
  """The typed spec of a config (a ConfigDict or a config.json record), checked once: raises
  ConfigError naming the first missing, unknown, mistyped or wrong field. The mesh must fit
  `num_devices` (default: all devices, of every process)."""
  try:
    config = spec_lib.from_mapping(config)
  except spec_lib.SpecError as error:
    raise ConfigError(str(error)) from None
  names = config.games
  if not names:
    _fail("games", config.games, "name at least one game.")
  for name in names:
    if name not in games.registered_names():
      _fail("games", config.games, f"unknown game {name!r}; valid: "
            f"{', '.join(games.registered_names())}.")
  for name in config.eval.heldout_games:
    if name not in games.registered_names():
      _fail("eval.heldout_games", config.eval.heldout_games, f"unknown game {name!r}; valid: "
            f"{', '.join(games.registered_names())} (or '' for none).")
  heldout = heldout_game_names(config)
  # Options of a registered game the run does not play are checked and kept (a preset's options
  # survive --config.games=...); only unknown names fail.
  for name in config.game_options:
    if name not in games.registered_names():
      _fail(f"game_options.{name}", dict(config.game_options[name]),
            f"unknown game {name!r}; valid: {', '.join(games.registered_names())}.")
  try:
    _make(config, tuple(config.game_options), None)
    make_games(config)
    make_heldout_games(config)
  except ValueError as error:
    raise ConfigError(f"config.game_options: {error}") from None

  _check_shared_rules(config)
  _one_of(config, "rollout.mode", ROLLOUT_MODES)
  seats = modes = config.rollout.seats
  if not modes or any(m not in SEAT_MODES and not m.startswith("opponent:") for m in modes):
    _fail("rollout.seats", seats, "valid: self_play, frozen, population, opponent:<name>, or "
          "self_play and one of the others, comma-separated (each plays half of the games).")
  fixed_in_pool = "population" in modes and seat_opponent(config) is not None
  if len(modes) > 1 and (len(modes) != 2 or modes[0] == modes[1]
                         or ("self_play" not in modes and not fixed_in_pool)):
    _fail("rollout.seats", seats, "two modes mix only as self_play and one of frozen, "
          "population, opponent:<name> (half of the games each), or as population and "
          "opponent:<name> (the fixed opponent one more member of the population).")
  if ("self_play" in modes and len(modes) == 2
      and config.rollout.games_per_batch % (2 * max(config.rl.group_size, 1))):
    _fail("rollout.games_per_batch", config.rollout.games_per_batch,
          f"with rollout.seats={','.join(seats)!r} the games split in two halves, each a multiple of "
          f"rl.group_size={config.rl.group_size}.")
  if (opponent := seat_opponent(config)) is not None:
    for name in names:
      if opponent not in opponents.names(name):
        _fail("rollout.seats", seats, f"no opponent {opponent!r} for {name}; valid: "
              f"{', '.join(opponents.names(name))}.")
  tasks = [g.name for g in make_games(config) + make_heldout_games(config)
           if isinstance(g, task.Task)]
  # Like game_options, sizes of registered games the run does not play are kept.
  sizes = config.eval.games_per_seat_by_game
  written = ",".join(f"{name}:{count}" for name, count in sizes.items())
  for name, count in sizes.items():
    if name not in games.registered_names():
      _fail("eval.games_per_seat_by_game", written, f"unknown game {name!r}; valid: "
            f"{', '.join(games.registered_names())}.")
    if count < 1:
      _fail("eval.games_per_seat_by_game", written, f"{name}: must be at least 1 game per seat.")
  for opponent in config.eval.opponents:
    if not any(opponent in opponents.names(name) for name in names + heldout
               if name not in tasks):
      _fail("eval.opponents", config.eval.opponents, f"no game has opponent {opponent!r} "
            "(tasks have none).")
  if tasks and config.rollout.mode != "text":
    _fail("rollout.mode", config.rollout.mode, f"tasks ({', '.join(tasks)}) read free-text "
          "answers: use text.")
  if set(tasks) & set(names) and modes != ("self_play",):
    _fail("rollout.seats", seats, f"tasks ({', '.join(tasks)}) are played alone: use self_play.")
  for difficulty in config.eval.task_difficulties:
    if not difficulty.isdigit():
      _fail("eval.task_difficulties", config.eval.task_difficulties,
            "must be whole numbers, comma-separated (e.g. 1,2,3), or '' for the training one.")
  _positive(config, "rollout.samples_per_step", "rollout.games_per_batch",
            "rollout.max_response_len", "rl.ppo_epochs",
            "rl.num_minibatches", "rl.micro_batch_size", "rl.group_size", "train.steps", "train.eval_every",
            "train.checkpoint_every", "train.keep_checkpoints", "eval.games_per_seat",
            "optimizer.learning_rate")
  for field, valid, rule in _RANGES:
    if not valid(value := _get(config, field)):
      _fail(field, value, rule)
  _positive(config, "population.size", "population.snapshot_every", "population.pfsp_power")
  _one_of(config, "population.sampling", population.SAMPLINGS)
  _one_of(config, "population.dtype", ("", *sorted(model_configs.DTYPES)))
  _one_of(config, "population.counter_sampling", population.COUNTER_SAMPLINGS)
  _one_of(config, "population.counter_oracle", population.COUNTER_ORACLES)
  _positive(config, "population.counter_updates")
  _check_schedule(config)
  if config.population.counters and "population" not in config.rollout.seats:
    _fail("population.counters", config.population.counters,
          "counter policies play in the population: set rollout.seats to population (or "
          "self_play,population), or population.counters=0.")
  if config.population.counter_oracle == "exact":
    _check_exact_counter(config)
  if config.prompt.instruction and "\\boxed{}" not in config.prompt.instruction:
    _fail("prompt.instruction", config.prompt.instruction,
          "must ask for the answer in \\boxed{} (answers are parsed from it); '' = SPIRAL's line.")
  if config.rollout.samples_per_step % config.rl.num_minibatches:
    _fail("rl.num_minibatches", config.rl.num_minibatches,
          f"must divide rollout.samples_per_step={config.rollout.samples_per_step}.")
  minibatch = config.rollout.samples_per_step // config.rl.num_minibatches
  if minibatch % config.rl.micro_batch_size:
    _fail("rl.micro_batch_size", config.rl.micro_batch_size,
          f"must divide the {minibatch} rows of a mini-batch (rollout.samples_per_step="
          f"{config.rollout.samples_per_step} / rl.num_minibatches={config.rl.num_minibatches}).")
  if config.rollout.games_per_batch % config.rl.group_size:
    _fail("rl.group_size", config.rl.group_size,
          f"must divide rollout.games_per_batch={config.rollout.games_per_batch}.")
  most_samples = collected_rows(config)
  if config.rollout.samples_per_step > most_samples:
    _fail("rollout.samples_per_step", config.rollout.samples_per_step,
          f"more than the {most_samples} turns that rollout.games_per_batch="
          f"{config.rollout.games_per_batch} games of each kind can give; raise games_per_batch.")

  _one_of(config, "rl.estimator", tuple(advantages.ESTIMATORS))
  if config.rl.estimator in GROUP_ESTIMATORS and config.rl.group_size < 2:
    _fail("rl.group_size", config.rl.group_size, f"must be >= 2 for rl.estimator="
          f"{config.rl.estimator!r}: it compares the games of a group, so groups of one give every "
          "advantage 0 and every update is skipped.")
  _one_of(config, "rl.aggregation", losses.AGGREGATIONS)
  _one_of(config, "rl.rae_order", ("released", "paper"))
  _one_of(config, "rl.forfeit_credit", advantages.FORFEIT_CREDITS)
  _one_of(config, "optimizer.schedule", SCHEDULES)
  updates = config.train.steps * config.rl.ppo_epochs
  if config.optimizer.schedule == "cosine" and config.optimizer.warmup_steps >= updates:
    _fail("optimizer.warmup_steps", config.optimizer.warmup_steps, f"must be below the {updates} "
          "optimizer updates (train.steps x rl.ppo_epochs) the cosine schedule decays over.")
  _one_of(config, "model.preset", tuple(model_configs.PRESETS))
  _one_of(config, "model.dtype", tuple(model_configs.DTYPES))
  _one_of(config, "model.param_dtype", tuple(model_configs.DTYPES))
  _one_of(config, "model.chat_format", tokenizers.CHAT_FORMATS)
  _one_of(config, "train.wandb_mode", WANDB_MODES)
  if config.train.wandb_project and importlib.util.find_spec("wandb") is None:
    _fail("train.wandb_project", config.train.wandb_project,
          "wandb is not installed: pip install 'jaxplay[wandb]' (or '' to log without it).")
  _check_lora(config)
  _check_math(config)
  _check_mesh(config, jax.device_count() if num_devices is None else num_devices)
  _check_model(config)
  return config


def _check_shared_rules(config: spec_lib.RunSpec) -> None:
  """prompt.shared_rules names games; those the run plays must show a rules paragraph (a
  registered game it does not play is kept, as game_options are: a preset's choice survives
  --config.games=...)."""
  played = {g.name: g for g in make_games(config) + make_heldout_games(config)}
  with_rules = [n for n, g in played.items() if isinstance(g, games.WithRules) and g.rules]
  for name in config.prompt.shared_rules:
    if name in with_rules or (name in games.registered_names() and name not in played):
      continue
    why = ("has no rules paragraph to show (rules=False, or none in the game)" if name in played
           else "is not a game")
    _fail("prompt.shared_rules", config.prompt.shared_rules,
          f"{name} {why}; games of this run with one: {', '.join(with_rules) or 'none'} "
          "('' for none).")


def _check_exact_counter(config: spec_lib.RunSpec) -> None:
  """population.counter_oracle=exact needs counter policies, action scoring (the policy's exact
  action probabilities) and games whose best responses are computed exactly."""
  oracle = config.population.counter_oracle
  if not config.population.counters:
    _fail("population.counter_oracle", oracle, "needs counter policies: population.counters > 0.")
  if config.rollout.mode != "action_scoring":
    _fail("population.counter_oracle", oracle,
          "needs rollout.mode=action_scoring (the policy's exact action probabilities).")
  inexact = [g.name for g in make_games(config) if not matches.has_exact_game(g)]
  if inexact:
    _fail("population.counter_oracle", oracle,
          f"no exact best response in {', '.join(inexact)}; it has one in single-round "
          "kuhn_poker and team_zero_one.")


def _check_lora(config: spec_lib.RunSpec) -> None:
  """model.lora_*: a rank >= 0, a positive alpha, known targets."""
  if config.model.lora_rank < 0:
    _fail("model.lora_rank", config.model.lora_rank, "must be >= 0 (0 = train every weight).")
  if not config.model.lora_rank:
    return
  if not config.model.lora_alpha > 0:
    _fail("model.lora_alpha", config.model.lora_alpha, "must be > 0 (adapters scale by "
          "lora_alpha / lora_rank).")
  targets = config.model.lora_targets
  if not targets or any(t not in model_configs.LORA_TARGETS for t in targets):
    _fail("model.lora_targets", config.model.lora_targets,
          f"name one or more of {', '.join(model_configs.LORA_TARGETS)}, comma-separated.")


def _check_math(config: spec_lib.RunSpec) -> None:
  """eval.math names installed sets or existing JSONL files; math_every fits train.eval_every."""
  if not config.eval.math:
    return
  # pylint: disable-next=import-outside-toplevel
  from jaxplay.evaluation import math_data  # Imports tfds.
  for name in config.eval.math:
    path = name.removeprefix(math_data.JSONL_PREFIX)
    if name in math_data.PACKAGE_SETS:
      if importlib.util.find_spec(math_data.PACKAGE) is None:
        _fail("eval.math", config.eval.math,
              f"{name!r} needs `pip install {math_data.PACKAGE_PIN}`.")
    elif path == name:
      _fail("eval.math", config.eval.math, f"unknown math set {name!r}; valid: "
            f"{', '.join(math_data.PACKAGE_SETS)} or {math_data.JSONL_PREFIX}<path to a JSONL "
            "file>.")
    elif not os.path.isfile(path):
      _fail("eval.math", config.eval.math, f"no file {path!r}.")
  _positive(config, "eval.math_every", "eval.math_max_response_len", "eval.math_batch_size")
  if config.eval.math_every % config.train.eval_every:
    _fail("eval.math_every", config.eval.math_every,
          f"must be a multiple of train.eval_every={config.train.eval_every} (math runs at "
          "evaluation steps).")
  if config.eval.math_limit < 0:
    _fail("eval.math_limit", config.eval.math_limit, "must be >= 0 (0 = every question).")


def _check_mesh(config: spec_lib.RunSpec, num_devices: int) -> None:
  """The mesh fits the devices, its rules name mesh axes, and batches split over its batch axes."""
  try:
    sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(config.mesh, num_devices)))
    rules = sharding.make_rules(config.mesh.rules)
  except ValueError as error:
    raise ConfigError(f"config.mesh: {error}") from None
  axes = sharding.batch_axes(rules)
  parts = math.prod(sizes[a] for a in axes)
  split = " x ".join(f"{a}={sizes[a]}" for a in axes) or "no mesh axis"
  for field in ("rollout.samples_per_step", "rollout.games_per_batch", "rl.micro_batch_size"):
    if _get(config, field) % parts:
      _fail(field, _get(config, field), f"must be a multiple of {parts}: batches split over "
            f"the mesh's batch axes {split} ({num_devices} devices); change it or config.mesh.")


def _check_model(config: spec_lib.RunSpec) -> None:
  """Overrides fit the model; model.path is a package model or passes `loading.check`."""
  path = config.model.path
  overrides = config.model.overrides
  if overrides and path != "games_bpe":
    _fail("model.overrides", overrides, "only a from-scratch model (model.path='games_bpe') can "
          "change its architecture; a checkpoint's comes from its files.")
  fields = {f.name for f in dataclasses.fields(model_configs.ModelConfig)} - {"vocab_size"}
  for name in overrides:
    if name not in fields:
      _fail(f"model.overrides.{name}", overrides[name],
            f"not a ModelConfig field; valid: {', '.join(sorted(fields))}.")
  if path in PACKAGE_MODELS:
    return
  if not path:
    _fail("model.path", path, "no checkpoint given. Download the weights for "
          f"model.preset={config.model.preset!r} (an HF directory with config.json and "
          "*.safetensors, or a .gguf file) and pass --config.model.path=/path/to/it.")
  if not os.path.exists(path):
    _fail("model.path", path, "does not exist; pass an HF checkpoint directory or a .gguf file.")
  if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
    _fail("model.path", path, "is a directory without config.json (not an HF checkpoint).")
  try:
    loading.check(path)
  except weight_files.ModelFileError as error:  # It names the file: model.path or one inside it.
    raise ConfigError(f"config.model.path: {error}") from None
