"""Verifiable single-player tasks: one-turn games whose answer is checked, not matched.

A task is a `Game` with one player and one turn. `init(key)` draws an instance (a problem with a
known answer); the model's answer, the normalised content of its last `\\boxed{}` (the rules of
jaxplay/text/answers.py, up to `max_answer_bytes` bytes), is read by `read_answer`, which returns
the verdict the rollout then plays as the action: CORRECT, WRONG, or api.INVALID_ACTION for an
answer that cannot be read (not a number; an expression that breaks the task's rules). Rewards:
1 for a correct answer, 0 for a wrong one, `invalid_rewards[0]` for an unreadable one.

Generation is keyed and unbounded. The instances are split in two halves by a fixed hash of the
instance (`heldout_bit`): `split="train"` draws only from one half and `split="heldout"` only
from the other, so held-out problems are never trained on whatever keys either side uses. Each
task places the split bit on one number of the instance (`place_split_bit`): the pair of values
(2m, 2m + 1) that number is drawn from holds one value of each split.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from typing import ClassVar

import jax
import jax.numpy as jnp

from games import api

WRONG, CORRECT = 0, 1  # Verdicts: the action ids of a task.
SPLITS = ("train", "heldout")
DIGITS = tuple(str(d) for d in range(10))
MINUS = "-"


@dataclasses.dataclass(frozen=True)
class Task(api.Game):
  """Base class of the verifiable tasks: options `difficulty` and `split`, one turn."""

  difficulty: int = 1
  split: str = "train"

  num_players = 1
  zero_sum = False
  free_answer = True
  difficulties: ClassVar[tuple[int, ...]] = (1,)  # The valid values of `difficulty`.
  max_answer_bytes: ClassVar[int] = 32  # Longer normalised answers are unreadable.

  def __post_init__(self):
    if self.difficulty not in self.difficulties:
      raise ValueError(f"{self.name}: difficulty must be one of {self.difficulties}, "
                       f"got {self.difficulty}.")
    if self.split not in SPLITS:
      raise ValueError(f"{self.name}: split must be one of {SPLITS}, got {self.split!r}.")

  @property
  def actions(self) -> tuple[str, ...]:
    return ("wrong", "correct")  # The verdicts' names; answers are read, not matched.

  @property
  def max_turns(self) -> int:
    return 1

  # --- What each task provides. ---

  @abc.abstractmethod
  def _generate(self, key: jax.Array, heldout: bool):
    """The task's data pytree of an instance in the given split."""

  @abc.abstractmethod
  def heldout_bit(self, data) -> jax.Array:
    """bool []: the instance belongs to the held-out split."""

  @abc.abstractmethod
  def read_answer(self, state: api.State, answer: jax.Array, length: jax.Array) -> jax.Array:
    """Verdict (int32 []) of a normalised answer: uint8 [max_answer_bytes], its first `length`
    bytes (more than max_answer_bytes, or -1 when no closed box: INVALID_ACTION)."""

  @abc.abstractmethod
  def verdict_text(self, state: api.State, answer: str) -> int:
    """Plain-Python reference of `read_answer` on the normalised answer text."""

  @abc.abstractmethod
  def solution_text(self, state: api.State) -> str:
    """A correct answer of an unbatched state (worked examples, tests)."""

  # --- The rules layer, shared. ---

  def _init(self, key: jax.Array) -> api.State:
    data = self._generate(key, self.split == "heldout")
    return api.new_state(self, data, jnp.ones((2,), jnp.bool_))

  def _step(self, state: api.State, action: jax.Array, key: jax.Array) -> api.State:
    del key
    reward = (action == CORRECT).astype(jnp.float32)
    return state.replace(rewards=reward[None], terminated=jnp.bool_(True),
                         legal_action_mask=jnp.zeros_like(state.legal_action_mask))


class IntegerTask(Task):
  """A task whose answer is one integer (`read_integer_text`'s rules): `_answer(data)` gives it."""

  @abc.abstractmethod
  def _answer(self, data) -> jax.Array:
    """int32 []: the correct answer of an instance."""

  def read_answer(self, state, answer, length):
    value, readable = read_integer(answer, length)
    correct = (value == self._answer(state.data)).astype(jnp.int32)
    return jnp.where(readable, correct, api.INVALID_ACTION)

  def verdict_text(self, state, answer: str) -> int:
    value = read_integer_text(answer)
    return api.INVALID_ACTION if value is None else int(value == int(self._answer(state.data)))

  def solution_text(self, state) -> str:
    return str(int(self._answer(state.data)))


# --- The split. ---

def mix(*values: jax.Array) -> jax.Array:
  """uint32 hash of int32 values (a fixed integer mixer; equal inputs, equal hash)."""
  h = jnp.uint32(0x9E3779B9)
  for value in values:
    for v in jnp.ravel(jnp.asarray(value, jnp.int32)):
      h = (h ^ v.astype(jnp.uint32)) * jnp.uint32(0x85EBCA6B)
      h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
      h = h ^ (h >> 16)
  return h


def split_bit(offset: jax.Array, *context: jax.Array) -> jax.Array:
  """bool []: the held-out bit of an instance whose split-carrying number is `offset` (>= 0, its
  distance from the low end of its range) and whose other numbers are `context`."""
  return ((mix(offset >> 1, *context) ^ offset.astype(jnp.uint32)) & 1).astype(jnp.bool_)


def place_split_bit(offset: jax.Array, heldout: bool, *context: jax.Array) -> jax.Array:
  """`offset` or its pair partner (offset ^ 1), whichever `split_bit` puts in the split."""
  return jnp.where(split_bit(offset, *context) == heldout, offset, offset ^ 1)


# --- Reading integers. ---

INTEGER = re.compile(r"-?[0-9]{1,9}")


def read_integer_text(answer: str) -> int | None:
  """The integer of a normalised answer: commas and spaces are ignored, then an optional '-' and
  1 to 9 digits; None otherwise."""
  text = answer.replace(",", "").replace(" ", "")
  return int(text) if INTEGER.fullmatch(text) else None


def read_integer(answer: jax.Array, length: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Jittable `read_integer_text`: (value int32 [], readable bool [])."""
  width = answer.shape[0]
  index = jnp.arange(width)
  keep = (index < length) & (answer != ord(",")) & (answer != ord(" "))
  position = jnp.where(keep, jnp.cumsum(keep) - 1, width)
  chars = jnp.zeros((width,), jnp.uint8).at[position].set(answer, mode="drop")
  count = keep.sum()
  negative = chars[0] == ord(MINUS)
  body = (index >= negative) & (index < count)
  is_digit = (chars >= ord("0")) & (chars <= ord("9"))
  digits = count - negative
  readable = ((length >= 0) & (length <= width) & (digits >= 1) & (digits <= 9)
              & (is_digit | ~body).all())
  place = jnp.where(body, count - 1 - index, 0)
  value = jnp.where(body, (chars.astype(jnp.int32) - ord("0")) * 10 ** place, 0).sum()
  return jnp.where(negative, -value, value).astype(jnp.int32), readable


# --- Rendering numbers as digit phrases. ---

def digit_ids(value: jax.Array, slots: int, first_digit_id: int, minus_id: int | None = None
              ) -> jax.Array:
  """Phrase ids int32 [slots (+ 1 with `minus_id`)] spelling `value`, PAD-padded at the end."""
  magnitude = jnp.abs(value)
  count = 1 + (magnitude >= 10 ** jnp.arange(1, slots)).sum()
  index = jnp.arange(slots)
  digit = (magnitude // 10 ** jnp.maximum(count - 1 - index, 0)) % 10
  ids = jnp.where(index < count, first_digit_id + digit, api.PAD_PHRASE)
  if minus_id is None:
    return ids.astype(jnp.int32)
  sign = jnp.where(value < 0, minus_id, api.PAD_PHRASE)
  return jnp.concatenate([sign[None], ids]).astype(jnp.int32)
