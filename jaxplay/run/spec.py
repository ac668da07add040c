"""The typed run spec: a config's sections as frozen dataclasses, built once from the ConfigDict.

`configuration.validate(config)` builds it (`from_mapping`) and checks it; the run reads only the
spec. Field names are the config's (`spec.rollout.samples_per_step` is
`config.rollout.samples_per_step`); comma-separated names become tuples (`Names`), "name:count"
lists dicts (`Counts`); option tables (game options, model overrides, mesh rules) become plain
dicts. What each field means is written beside it in configs/spiral.py. `as_record` gives the
config.json record, in the config's shape.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

from jaxplay import errors

Names = tuple[str, ...]  # Written "a,b" in a config.
Counts = dict[str, int]  # Written "a:2,b:3" in a config.


class SpecError(errors.UserError, ValueError):
  """A config field is missing, unknown or of the wrong type; the message names it."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  preset: str
  path: str
  dtype: str
  param_dtype: str
  remat: bool
  chat_format: str
  vocab_size: int
  overrides: dict
  lora_rank: int
  lora_alpha: float
  lora_targets: Names
  tokenizer_cache: str = ""  # Default: run records from before the option load.


@dataclasses.dataclass(frozen=True)
class PromptSpec:
  instruction: str
  examples: int
  shared_rules: Names = ()  # Default: run records from before the option load.


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
  mode: str
  seats: Names
  samples_per_step: int
  games_per_batch: int
  max_prompt_len: int
  max_response_len: int
  temperature: float
  top_p: float
  top_k: int
  stop_at_answer: bool
  balance_games: bool = False
  batch_halvings: int = 1
  int8_logits: bool = False
  int8_weights: bool = False


@dataclasses.dataclass(frozen=True)
class RLSpec:
  estimator: str
  rae_decay: float
  rae_order: str
  group_size: int
  drop_zero_advantage: bool
  ppo_epochs: int
  num_minibatches: int
  micro_batch_size: int
  recompute_old_log_probs: bool
  clip_eps: float
  clip_eps_high: float
  dual_clip: float
  aggregation: str
  kl_coef: float
  kl_reference_decay: float
  entropy_coef: float
  forfeit_credit: str = "game"


@dataclasses.dataclass(frozen=True)
class PopulationSpec:
  size: int
  snapshot_every: int
  sampling: str
  pfsp_power: float
  score_decay: float
  dtype: str
  counters: int
  cross_play: float
  counter_reset: bool
  counter_sampling: str
  counter_oracle: str = "games"
  counter_updates: int = 8


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  learning_rate: float
  schedule: str
  warmup_steps: int
  b1: float
  b2: float
  weight_decay: float
  grad_clip: float


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  steps: int
  eval_every: int
  checkpoint_every: int
  keep_checkpoints: int
  compilation_cache: str
  wandb_project: str
  wandb_mode: str


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  opponents: Names
  games_per_seat: int
  temperature: float
  top_p: float
  invalid_rewards: tuple[float, ...]
  transcripts: int
  heldout_games: Names
  task_difficulties: Names
  kuhn_samples: int
  math: Names
  math_every: int
  math_limit: int
  math_max_response_len: int
  math_batch_size: int
  math_data_dir: str
  games_per_seat_by_game: Counts = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
  mode: str
  switch: str
  cadence: int
  patience: int
  tolerance: float
  min_steps: int
  opponent: str


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  data: int
  fsdp: int
  tensor: int
  rules: dict


@dataclasses.dataclass(frozen=True)
class RunSpec:
  seed: int
  model: ModelSpec
  games: Names
  game_options: dict  # {game name: {option: value}}
  invalid_rewards: tuple[float, ...]  # (offender, other)
  prompt: PromptSpec
  rollout: RolloutSpec
  rl: RLSpec
  population: PopulationSpec
  schedule: ScheduleSpec
  optimizer: OptimizerSpec
  train: TrainSpec
  eval: EvalSpec
  mesh: MeshSpec

  def replace(self, **sections) -> RunSpec:
    """A copy with fields of sections replaced: `spec.replace(rollout=dict(mode="text"))`."""
    changed = {name: dataclasses.replace(getattr(self, name), **fields)
               if isinstance(fields, dict) and dataclasses.is_dataclass(getattr(self, name))
               else fields for name, fields in sections.items()}
    return dataclasses.replace(self, **changed)


def _fail(field: str, problem: str) -> typing.NoReturn:
  raise SpecError(f"config.{field}: {problem}")


def _plain(value: Any) -> Any:
  """ConfigDicts and mappings as dicts, recursively (FieldReferences resolved by `to_dict`)."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {key: _plain(item) for key, item in value.items()}
  return value


def _convert(field: str, kind: Any, value: Any) -> Any:
  """`value` as the annotated `kind`, or SpecError naming `field`."""
  if dataclasses.is_dataclass(kind):
    return _section(field, kind, value)
  if kind == Names:
    if isinstance(value, str):
      return tuple(name.strip() for name in value.split(",") if name.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
      return tuple(value)
    _fail(field, f"{value!r} must be comma-separated names, e.g. 'a,b'.")
  if kind == Counts:
    return _counts(field, value)
  if typing.get_origin(kind) is tuple:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
      _fail(field, f"{value!r} must be a sequence of numbers.")
    return tuple(float(v) for v in value)
  if kind is dict:
    value = _plain(value)
    if not isinstance(value, dict):
      _fail(field, f"{value!r} must be a table of options.")
    return value
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    _fail(field, f"{value!r} must be of type {kind.__name__}.")
  return value


def _counts(field: str, value: Any) -> dict[str, int]:
  """{name: count} from "a:2,b:3" (or a mapping); SpecError naming `field` otherwise."""
  if isinstance(value, str):
    pairs = [pair.split(":") for pair in value.split(",") if pair.strip()]
    if all(len(p) == 2 and p[0].strip() and p[1].strip().lstrip("-").isdigit() for p in pairs):
      value = [(name.strip(), int(count)) for name, count in pairs]
      if len({name for name, _ in value}) == len(value):
        return dict(value)
  elif isinstance(value, Mapping) or hasattr(value, "to_dict"):
    value = _plain(value)
    if all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
           for k, v in value.items()):
      return dict(value)
  _fail(field, f"{value!r} must be name:count pairs, comma-separated, each name once "
        "(e.g. 'a:2,b:3'), or '' for none.")


def _section(prefix: str, cls: type, values: Any):
  """`cls` from a mapping (a ConfigDict or a dict) with exactly its fields."""
  if not hasattr(values, "keys"):
    _fail(prefix.rstrip("."), f"{values!r} must be a section of fields.")
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  dotted = lambda name: f"{prefix}.{name}" if prefix else name
  for key in values.keys():
    if key not in names:
      _fail(dotted(key), f"no such field; valid: {', '.join(names)}.")
  # A field with a default is newer than some records: runs written before it keep loading.
  missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
             and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
  if missing:
    _fail(dotted(missing[0]), "missing (a config or config.json written before this field "
          "existed; add it, as configs/spiral.py sets it).")
  return cls(**{name: _convert(dotted(name), hints[name], values[name])
                for name in names if name in values})


def from_mapping(config: Mapping[str, Any]) -> RunSpec:
  """The spec of a ConfigDict or of a config.json record; SpecError names a missing, unknown or
  mistyped field."""
  return _section("", RunSpec, config)


def as_record(spec: RunSpec) -> dict:
  """The spec as a JSON-ready dict in the config's shape (names joined by commas again)."""
  def record(value, kind):
    if dataclasses.is_dataclass(value):
      hints = typing.get_type_hints(type(value))
      return {f.name: record(getattr(value, f.name), hints[f.name])
              for f in dataclasses.fields(value)}
    if kind == Names:
      return ",".join(value)
    if kind == Counts:
      return ",".join(f"{name}:{count}" for name, count in value.items())
    if isinstance(value, tuple):
      return list(value)
    return value
  return record(spec, RunSpec)
