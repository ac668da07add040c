"""Linear equations in one unknown (a verifiable task, games/task.py): "Solve for x: 7x + 12 = 47."

The answer is the integer x in `\\boxed{}`. Options: `difficulty` = the digits of the numbers
(1-3): the coefficient a is 2 .. 10**d - 1, the constant b is 1 .. 10**d - 1 added or taken
away, and x is -10**d .. 10**d - 1. The unknown x carries the split bit.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from games import api, task

_INTRO = "Solve for x: "
_PLUS, _MINUS, _EQUALS, _END = "x + ", "x - ", " = ", "."


@struct.dataclass
class Equation:
  coefficient: jax.Array  # int32 [], a.
  constant: jax.Array  # int32 [], b (negative: taken away).
  right: jax.Array  # int32 [], a * x + b.
  unknown: jax.Array  # int32 [], x.


@api.register
@dataclasses.dataclass(frozen=True)
class LinearEquation(task.IntegerTask):
  name = "linear_equation"
  difficulties = (1, 2, 3)
  max_answer_bytes = 16

  @property
  def phrases(self) -> tuple[str, ...]:
    return ("", *task.DIGITS, task.MINUS, _INTRO, _PLUS, _MINUS, _EQUALS, _END)

  @property
  def max_observation_phrases(self) -> int:
    return 1 + self.difficulty + 1 + self.difficulty + 1 + (2 * self.difficulty + 2) + 1

  def _generate(self, key: jax.Array, heldout: bool) -> Equation:
    a_key, b_key, sign_key, x_key = jax.random.split(key, 4)
    size = 10**self.difficulty
    a = jax.random.randint(a_key, (), 2, size)
    b = jax.random.randint(b_key, (), 1, size) * jnp.where(jax.random.bernoulli(sign_key), 1, -1)
    offset = task.place_split_bit(jax.random.randint(x_key, (), 0, 2 * size), heldout, a, b)
    x = offset - size
    return Equation(a.astype(jnp.int32), b.astype(jnp.int32), (a * x + b).astype(jnp.int32),
                    x.astype(jnp.int32))

  def heldout_bit(self, data: Equation) -> jax.Array:
    return task.split_bit(data.unknown + 10**self.difficulty, data.coefficient, data.constant)

  def _answer(self, data):
    return data.unknown

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    del player
    ids = {p: i for i, p in enumerate(self.phrases)}
    data, digits = state.data, self.difficulty
    number = lambda value, slots: task.digit_ids(value, slots, ids["0"], ids[task.MINUS])
    return jnp.concatenate([
        jnp.asarray([ids[_INTRO]]), number(data.coefficient, digits)[1:],
        jnp.where(data.constant < 0, ids[_MINUS], ids[_PLUS])[None],
        number(jnp.abs(data.constant), digits)[1:], jnp.asarray([ids[_EQUALS]]),
        number(data.right, 2 * digits + 1), jnp.asarray([ids[_END]])]).astype(jnp.int32)

  def render_text(self, state: api.State, player: int) -> str:
    del player
    a, b, right = (int(v) for v in (state.data.coefficient, state.data.constant,
                                    state.data.right))
    return f"{_INTRO}{a}{_PLUS if b >= 0 else _MINUS}{abs(b)}{_EQUALS}{right}{_END}"
