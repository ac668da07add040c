"""Start-up checks of an experiment config: every error is one line naming the field and the fix."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os

import jax
import ml_collections

import games
from games import opponents
from jaxplay import advantages, losses, sharding
from jaxplay.models import configs as model_configs

ROLLOUT_MODES = ("text", "action_scoring")
SCHEDULES = ("constant", "cosine")
PACKAGE_MODELS = ("gemma3_270m_package", "games_bpe")


class ConfigError(ValueError):
  """A config field is wrong; the message names it."""


def _names(spec: str) -> tuple[str, ...]:
  return tuple(name.strip() for name in spec.split(",") if name.strip())


def game_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  return _names(config.games)


def heldout_game_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """eval.heldout_games less the training games (those are evaluated once, as training games)."""
  return tuple(n for n in _names(config.eval.heldout_games) if n not in game_names(config))


def math_eval_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  return _names(config.eval.math)


def _make(config: ml_collections.ConfigDict, names: tuple[str, ...],
          invalid_rewards: tuple[float, float] | None) -> tuple[games.Game, ...]:
  rewards = tuple(invalid_rewards or config.invalid_rewards)
  return tuple(games.make(name, invalid_rewards=rewards, **dict(config.game_options.get(name, {})))
               for name in names)


def make_games(config: ml_collections.ConfigDict,
               invalid_rewards: tuple[float, float] | None = None) -> tuple[games.Game, ...]:
  """The training games with their options and invalid-move rewards."""
  return _make(config, game_names(config), invalid_rewards)


def make_heldout_games(config: ml_collections.ConfigDict) -> tuple[games.Game, ...]:
  """The held-out games (evaluated, never trained on) with their options."""
  return _make(config, heldout_game_names(config), None)


def collected_rows(config: ml_collections.ConfigDict) -> int:
  """Rows of a step's train batch: every turn slot of rollout.games_per_batch games of each
  training game (the train step draws rollout.samples_per_step of them)."""
  return sum(g.max_turns for g in make_games(config)) * config.rollout.games_per_batch


def seat_opponent(config: ml_collections.ConfigDict) -> str | None:
  """The fixed opponent's name for `rollout.seats = 'opponent:<name>'`, else None."""
  seats = config.rollout.seats
  return seats.split(":", 1)[1] if seats.startswith("opponent:") else None


def _fail(field: str, value, problem: str) -> None:
  raise ConfigError(f"config.{field}={value!r}: {problem}")


def _one_of(config, field: str, valid) -> None:
  value = config
  for part in field.split("."):
    value = value[part]
  if value not in valid:
    _fail(field, value, f"unknown; valid: {', '.join(map(str, valid))}.")


def _positive(config, *fields: str) -> None:
  for field in fields:
    value = config
    for part in field.split("."):
      value = value[part]
    if not value > 0:
      _fail(field, value, "must be positive.")


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ConfigError naming the first wrong field; the mesh must fit `num_devices` (default:
  all devices, of every process)."""
  names = game_names(config)
  if not names:
    _fail("games", config.games, "name at least one game.")
  for name in names:
    if name not in games.registered_names():
      _fail("games", config.games, f"unknown game {name!r}; valid: "
            f"{', '.join(games.registered_names())}.")
  for name in _names(config.eval.heldout_games):
    if name not in games.registered_names():
      _fail("eval.heldout_games", config.eval.heldout_games, f"unknown game {name!r}; valid: "
            f"{', '.join(games.registered_names())} (or '' for none).")
  heldout = heldout_game_names(config)
  for name in config.game_options:
    if name not in names + heldout:
      _fail(f"game_options.{name}", dict(config.game_options[name]),
            f"{name!r} is not in config.games or config.eval.heldout_games.")
  try:
    make_games(config)
    make_heldout_games(config)
  except ValueError as error:
    raise ConfigError(f"config.game_options: {error}") from None

  _one_of(config, "rollout.mode", ROLLOUT_MODES)
  seats = config.rollout.seats
  if seats not in ("self_play", "frozen") and not seats.startswith("opponent:"):
    _fail("rollout.seats", seats, "valid: self_play, frozen, opponent:<name>.")
  if (opponent := seat_opponent(config)) is not None:
    for name in names:
      if opponent not in opponents.names(name):
        _fail("rollout.seats", seats, f"no opponent {opponent!r} for {name}; valid: "
              f"{', '.join(opponents.names(name))}.")
  for opponent in config.eval.opponents.split(","):
    if not any(opponent in opponents.names(name) for name in names + heldout):
      _fail("eval.opponents", config.eval.opponents, f"no game has opponent {opponent!r}.")
  _positive(config, "rollout.samples_per_step", "rollout.games_per_batch",
            "rollout.max_prompt_len", "rollout.max_response_len", "rl.ppo_epochs",
            "rl.micro_batch_size", "rl.group_size", "train.steps", "train.eval_every",
            "train.checkpoint_every", "train.keep_checkpoints", "eval.games_per_seat",
            "optimizer.learning_rate")
  if config.eval.kuhn_samples < 0:
    _fail("eval.kuhn_samples", config.eval.kuhn_samples, "must be >= 0 (0 = no estimate).")
  if config.rl.kl_coef < 0:
    _fail("rl.kl_coef", config.rl.kl_coef, "must be >= 0 (0 = no KL term).")
  if not 0 <= config.rl.kl_reference_decay <= 1:
    _fail("rl.kl_reference_decay", config.rl.kl_reference_decay,
          "must be in [0, 1] (1 = the initial params).")
  if config.prompt.examples < 0:
    _fail("prompt.examples", config.prompt.examples, "must be >= 0 (0 = no worked examples).")
  if config.prompt.instruction and "\\boxed{}" not in config.prompt.instruction:
    _fail("prompt.instruction", config.prompt.instruction,
          "must ask for the answer in \\boxed{} (answers are parsed from it); '' = SPIRAL's line.")
  if config.rollout.temperature < 0:
    _fail("rollout.temperature", config.rollout.temperature, "must be >= 0.")
  if config.rollout.samples_per_step % config.rl.micro_batch_size:
    _fail("rl.micro_batch_size", config.rl.micro_batch_size,
          f"must divide rollout.samples_per_step={config.rollout.samples_per_step}.")
  if config.rollout.games_per_batch % config.rl.group_size:
    _fail("rl.group_size", config.rl.group_size,
          f"must divide rollout.games_per_batch={config.rollout.games_per_batch}.")
  most_samples = collected_rows(config)
  if config.rollout.samples_per_step > most_samples:
    _fail("rollout.samples_per_step", config.rollout.samples_per_step,
          f"more than the {most_samples} turns that rollout.games_per_batch="
          f"{config.rollout.games_per_batch} games of each kind can give; raise games_per_batch.")

  _one_of(config, "rl.estimator", tuple(advantages.ESTIMATORS))
  _one_of(config, "rl.aggregation", losses.AGGREGATIONS)
  _one_of(config, "rl.rae_order", ("released", "paper"))
  _one_of(config, "optimizer.schedule", SCHEDULES)
  _check_math(config)
  _check_mesh(config, jax.device_count() if num_devices is None else num_devices)
  _check_model(config)


def _check_math(config: ml_collections.ConfigDict) -> None:
  """eval.math names installed sets or existing JSONL files; math_every fits train.eval_every."""
  if not math_eval_names(config):
    return
  from jaxplay import math_data  # pylint: disable=import-outside-toplevel  (imports tfds)
  for name in math_eval_names(config):
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


def _check_mesh(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """The mesh fits the devices, its rules name mesh axes, and batches split over its batch axes."""
  try:
    sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(config.mesh, num_devices)))
    rules = sharding.make_rules(config.mesh.get("rules"))
  except ValueError as error:
    raise ConfigError(f"config.mesh: {error}") from None
  axes = sharding.batch_axes(rules)
  parts = math.prod(sizes[a] for a in axes)
  split = " x ".join(f"{a}={sizes[a]}" for a in axes) or "no mesh axis"
  for field in ("rollout.samples_per_step", "rollout.games_per_batch", "rl.micro_batch_size"):
    section, name = field.split(".")
    if config[section][name] % parts:
      _fail(field, config[section][name], f"must be a multiple of {parts}: batches split over "
            f"the mesh's batch axes {split} ({num_devices} devices); change it or config.mesh.")


def _check_model(config: ml_collections.ConfigDict) -> None:
  path = config.model.path
  overrides = config.model.overrides.to_dict()
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
