"""Multi-step arithmetic word problems (a verifiable task, games/task.py).

"Mia has 47 marbles. Then she gets 12 more. Then she multiplies her marbles by 3. How many
marbles does Mia have now?" The answer is the final count, an integer in `\\boxed{}`.

Options: `difficulty` = the number of operations (1-6); `digits` = the digits of the starting
number (2 .. 10**digits - 1) and of the numbers added or given away (1 .. 10**digits - 1).
Operations are drawn alike from add, give away, multiply and split (factors 2-9); the count stays
a whole number from 1 to 10**6: a give-away leaves at least one, a split divides exactly, a
product stays within 10**6, and a step that cannot keep that becomes an add. The starting number
carries the split bit: each starting number belongs to one split.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api, task

ADD, GIVE, MULTIPLY, SPLIT = range(4)
MAX_COUNT = 10**6
FACTORS = np.arange(2, 10)
NAMES = (("Mia", "she", "her"), ("Leo", "he", "his"), ("Ava", "she", "her"),
         ("Sam", "he", "his"))
ITEMS = ("marbles", "apples", "stickers", "coins")


@struct.dataclass
class Problem:
  name: jax.Array  # int32 [], index into NAMES.
  item: jax.Array  # int32 [], index into ITEMS.
  start: jax.Array  # int32 []
  operations: jax.Array  # int32 [difficulty]: ADD, GIVE, MULTIPLY or SPLIT.
  operands: jax.Array  # int32 [difficulty]
  answer: jax.Array  # int32 []


def _intro(name: int) -> str:
  return f"{NAMES[name][0]} has "


def _item_end(item: int) -> str:
  return f" {ITEMS[item]}."


def _head(operation: int, name: int, item: int) -> str:
  _, pronoun, possessive = NAMES[name]
  return (f" Then {pronoun} gets ", f" Then {pronoun} gives away ",
          f" Then {pronoun} multiplies {possessive} {ITEMS[item]} by ",
          f" Then {pronoun} splits {possessive} {ITEMS[item]} into ")[operation]


_TAILS = (" more.", ".", ".", " equal groups and keeps one group.")


def _question(name: int, item: int) -> str:
  return f" How many {ITEMS[item]} does {NAMES[name][0]} have now?"


def _every(make, *ranges) -> list[str]:
  return [make(*args) for args in np.ndindex(*ranges)]


def apply(operation: int, count: int, operand: int) -> int:
  """The count after one operation (plain Python)."""
  return (count + operand, count - operand, count * operand, count // operand)[operation]


@api.register
@dataclasses.dataclass(frozen=True)
class Arithmetic(task.IntegerTask):
  digits: int = 2

  name = "arithmetic"
  difficulties = (1, 2, 3, 4, 5, 6)
  max_answer_bytes = 16

  def __post_init__(self):
    super().__post_init__()
    if self.digits not in (1, 2, 3, 4):
      raise ValueError(f"arithmetic: digits must be 1 to 4, got {self.digits}.")

  @property
  def phrases(self) -> tuple[str, ...]:
    shape = (len(NAMES), len(ITEMS))
    listed = ["", *task.DIGITS, *_every(_intro, len(NAMES)), *_every(_item_end, len(ITEMS)),
              *_every(_head, 4, *shape), *_TAILS, *_every(_question, *shape)]
    return tuple(dict.fromkeys(listed))  # Distinct, in first-seen order.

  @property
  def max_observation_phrases(self) -> int:
    return 3 + self.digits + self.difficulty * (2 + self.digits)

  def _generate(self, key: jax.Array, heldout: bool) -> Problem:
    wording_key, start_key, *step_keys = jax.random.split(key, 2 + self.difficulty)
    name, item = jax.random.randint(wording_key, (2,), 0, jnp.array([len(NAMES), len(ITEMS)]))
    offset = jax.random.randint(start_key, (), 0, 10**self.digits - 2)
    start = 2 + task.place_split_bit(offset, heldout)
    count, operations, operands = start, [], []
    for step_key in step_keys:
      operation, operand = self._draw_step(step_key, count)
      count = jnp.stack([count + operand, count - operand, count * operand,
                         count // operand])[operation]
      operations.append(operation)
      operands.append(operand)
    return Problem(name.astype(jnp.int32), item.astype(jnp.int32), start.astype(jnp.int32),
                   jnp.stack(operations).astype(jnp.int32), jnp.stack(operands).astype(jnp.int32),
                   count.astype(jnp.int32))

  def _draw_step(self, key: jax.Array, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    kind_key, add_key, give_key, factor_key, divisor_key = jax.random.split(key, 5)
    largest = 10**self.digits - 1
    added = jax.random.randint(add_key, (), 1, largest + 1)
    given = jax.random.randint(give_key, (), 1, jnp.clip(count, 2, largest + 1))
    factor = jax.random.randint(factor_key, (), 2, 10)
    divides = count % jnp.asarray(FACTORS) == 0
    divisor = jnp.asarray(FACTORS)[jax.random.categorical(
        divisor_key, jnp.where(divides, 0.0, -jnp.inf))]
    operation = jax.random.randint(kind_key, (), 0, 4)
    allowed = jnp.stack([True, count >= 2, count * factor <= MAX_COUNT, divides.any()])
    operation = jnp.where(allowed[operation], operation, ADD)
    return operation, jnp.stack([added, given, factor, divisor])[operation]

  def heldout_bit(self, data: Problem) -> jax.Array:
    return task.split_bit(data.start - 2)

  def _answer(self, data):
    return data.answer

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    del player
    ids = {p: i for i, p in enumerate(self.phrases)}
    lookup = lambda make, *ranges: jnp.asarray(
        np.array([ids[make(*args)] for args in np.ndindex(*ranges)]).reshape(ranges))
    data, first_digit = state.data, ids["0"]
    number = lambda value: task.digit_ids(value, self.digits, first_digit)
    heads = lookup(_head, 4, len(NAMES), len(ITEMS))[data.operations, data.name, data.item]
    tails = jnp.asarray([ids[t] for t in _TAILS])[data.operations]
    steps = [jnp.concatenate([heads[k, None], number(data.operands[k]), tails[k, None]])
             for k in range(self.difficulty)]
    return jnp.concatenate([
        lookup(_intro, len(NAMES))[data.name, None], number(data.start),
        lookup(_item_end, len(ITEMS))[data.item, None], *steps,
        lookup(_question, len(NAMES), len(ITEMS))[data.name, data.item, None]]).astype(jnp.int32)

  def render_text(self, state: api.State, player: int) -> str:
    del player
    data = jax.tree.map(lambda x: np.asarray(x).tolist(), state.data)
    steps = "".join(_head(o, data.name, data.item) + str(n) + _TAILS[o]
                    for o, n in zip(data.operations, data.operands))
    return (_intro(data.name) + str(data.start) + _item_end(data.item) + steps
            + _question(data.name, data.item))
