"""The shared game API: State, the Game base class, the registry and the generic checks.

A game is a frozen dataclass of static options with pure, jittable, vmappable functions:
`init(key) -> State`, `step(state, action, key) -> State` and `render(state, player) -> phrase ids`.
Games implement the rules layer (`_init`, `_step`, `_render`) and inherit the generic behaviour:
a step on a terminal state is a no-op, and an illegal or unparseable action (any id outside the legal
mask, including -1) ends the game with the `invalid_rewards` penalty.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

# (offender, other player) rewards for an illegal or unparseable action.
TRAIN_INVALID_REWARDS = (-1.5, 0.5)  # SPIRAL's training penalty.
EVAL_INVALID_REWARDS = (-1.0, 1.0)  # Counted as a plain loss in evaluation.

INVALID_ACTION = -1  # What a parser returns for an unparseable answer.
PAD_PHRASE = 0  # Phrase id 0 is the empty string; observations are padded with it.


@struct.dataclass
class State:
  """Common fields of every game; the game's own fields live in `data`."""

  current_player: jax.Array  # int32 [], the player to move.
  legal_action_mask: jax.Array  # bool [num_actions]
  rewards: jax.Array  # float32 [num_players], the final returns, set at the terminal step.
  terminated: jax.Array  # bool []
  invalid: jax.Array  # bool [], the game ended on an illegal or unparseable action.
  turn: jax.Array  # int32 [], number of actions taken.
  data: Any  # The game's own pytree (cards, board, inventories, history).


@dataclasses.dataclass(frozen=True)
class Game(abc.ABC):
  """Base class: subclasses are frozen dataclasses of static options."""

  invalid_rewards: tuple[float, float] = TRAIN_INVALID_REWARDS

  name: ClassVar[str]
  num_players: ClassVar[int] = 2
  zero_sum: ClassVar[bool] = True  # Rewards of every legal terminal state sum to 0.
  # The answer is read by `read_answer(state, answer, length)` (games/task.py), not matched
  # against `actions`.
  free_answer: ClassVar[bool] = False

  # --- The static description each game provides. ---

  @property
  @abc.abstractmethod
  def actions(self) -> tuple[str, ...]:
    """Canonical text of each action id (the answer a model writes in \\boxed{}; a task's
    verdicts)."""

  @property
  @abc.abstractmethod
  def max_turns(self) -> int:
    """Upper bound on the number of actions in one game."""

  @property
  @abc.abstractmethod
  def phrases(self) -> tuple[str, ...]:
    """Static phrase list; phrases[0] must be '' (padding). Observations index into it."""

  @property
  @abc.abstractmethod
  def max_observation_phrases(self) -> int:
    """Length of the phrase-id array that `render` returns."""

  # --- The rules layer each game implements (called only for legal actions). ---

  @abc.abstractmethod
  def _init(self, key: jax.Array) -> State:
    ...

  @abc.abstractmethod
  def _step(self, state: State, action: jax.Array, key: jax.Array) -> State:
    """Applies a legal action to a live state; sets rewards/terminated at the end."""

  @abc.abstractmethod
  def _render(self, state: State, player: jax.Array) -> jax.Array:
    """Phrase ids int32[max_observation_phrases] of `player`'s observation, PAD-padded."""

  @abc.abstractmethod
  def render_text(self, state: State, player: int) -> str:
    """Plain-Python reference of the observation text (unbatched state)."""

  # --- The generic API. ---

  @property
  def num_actions(self) -> int:
    return len(self.actions)

  def init(self, key: jax.Array) -> State:
    return self._init(key)

  def step(self, state: State, action: jax.Array, key: jax.Array) -> State:
    """One action by the player to move; no-op on a terminal state."""
    action = jnp.asarray(action, jnp.int32)
    in_range = (action >= 0) & (action < self.num_actions)
    safe_action = jnp.clip(action, 0, self.num_actions - 1)
    legal = in_range & state.legal_action_mask[safe_action]
    played = self._step(state, safe_action, key)
    played = played.replace(turn=state.turn + 1)
    forfeited = self._forfeit(state)
    next_state = _select(legal, played, forfeited)
    return _select(state.terminated, state, next_state)

  def render(self, state: State, player: jax.Array | None = None) -> jax.Array:
    """Phrase ids of `player`'s observation (default: the player to move)."""
    player = state.current_player if player is None else jnp.asarray(player, jnp.int32)
    return self._render(state, player)

  def intro(self, player: int) -> str:
    """The text every observation of `player` starts with, whatever the state: a phrase, and
    render's first slot in every state ("" = none, the default). Prompts put it in the start the
    player's rows share (prompts.PromptTable.starts), run once per call instead of in each row."""
    del player
    return ""

  def phrase_text(self, phrase_ids) -> str:
    """Concatenated text of a phrase-id sequence."""
    return "".join(self.phrases[int(i)] for i in phrase_ids)

  def eval_stats(self, final_states: State, learner_seat) -> dict[str, float]:
    """The game's own statistics of finished evaluation games (host arrays with a batch axis;
    learner_seat int [B]), reported as eval/<game>/<opponent>/<stat>. None by default."""
    del final_states, learner_seat
    return {}

  def _forfeit(self, state: State) -> State:
    """The current player loses by an illegal or unparseable action."""
    offender_reward, other_reward = self.invalid_rewards
    rewards = jnp.full((self.num_players,), other_reward, jnp.float32)
    rewards = rewards.at[state.current_player].set(offender_reward)
    return state.replace(
        rewards=rewards,
        terminated=jnp.bool_(True),
        invalid=jnp.bool_(True),
        turn=state.turn + 1,
        legal_action_mask=jnp.zeros_like(state.legal_action_mask),
    )


@dataclasses.dataclass(frozen=True)
class WithRules(Game, abc.ABC):
  """A game whose prompt explains its rules in a paragraph: `rules=False` leaves the paragraph out
  (models trained from scratch learn the game from its rewards and gain nothing from reading it);
  the game's intro line stays. Subclasses honour `self.rules` in their phrases and render_text."""

  rules: bool = True

  @property
  @abc.abstractmethod
  def rules_text(self) -> str:
    """The rules paragraph, the same for every player, as `rules=True` shows it in each
    observation after the intro line. A prompt may show it once instead, before everything else,
    with the observations of `rules=False` (config `prompt.shared_rules`)."""


def _select(pred: jax.Array, on_true: State, on_false: State) -> State:
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def new_state(game: Game, data: Any, legal_action_mask: jax.Array,
              current_player=0) -> State:
  """A fresh, live state with the common fields at their start values."""
  return State(
      current_player=jnp.int32(current_player),
      legal_action_mask=jnp.asarray(legal_action_mask, jnp.bool_),
      rewards=jnp.zeros((game.num_players,), jnp.float32),
      terminated=jnp.bool_(False),
      invalid=jnp.bool_(False),
      turn=jnp.int32(0),
      data=data,
  )


# --- Registry. ---

_REGISTRY: dict[str, type[Game]] = {}


def register(cls: type[Game]) -> type[Game]:
  """Class decorator: makes a game available to `make` under `cls.name`."""
  _REGISTRY[cls.name] = cls
  return cls


def registered_names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def default_options(name: str) -> dict[str, Any]:
  """The options of registered game `name` that have a default, with their defaults."""
  return {f.name: f.default for f in dataclasses.fields(_REGISTRY[name])
          if f.default is not dataclasses.MISSING}


def make(name: str, **options) -> Game:
  """Builds a registered game, e.g. `make("kuhn_poker", rounds=3)`."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown game {name!r}; valid games: {', '.join(registered_names())}.")
  cls = _REGISTRY[name]
  valid = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(options) - valid)
  if unknown:
    with_rules = sorted(n for n, c in _REGISTRY.items() if issubclass(c, WithRules))
    hint = (f" (`rules` belongs to games with a rules paragraph: {', '.join(with_rules)})"
            if "rules" in unknown else "")
    raise ValueError(f"Unknown option(s) {unknown} for game {name!r}; "
                     f"valid options: {', '.join(sorted(valid))}{hint}.")
  return cls(**options)
