"""Countdown (a verifiable task, games/task.py): reach a target from given numbers.

"Numbers: 25, 7, 3. Target: 46." The answer is an expression in `\\boxed{}`, e.g. `(25-7)*3-8`
is unreadable here (8 is not given) and `25+7*3` is correct. The expression is read by a jittable
shunting-yard parser of the grammar

    expression := term (('+' | '-') term)*    term := factor (('*' | '/') factor)*
    factor := number | '(' expression ')'       (spaces anywhere between tokens)

No other character, no unary minus, no implicit product: otherwise the answer is unreadable
(INVALID). A readable expression is CORRECT when it uses every given number exactly once, every
division is exact (a nonzero divisor, no remainder), no intermediate value exceeds 2**30 in size,
and its value is the target; WRONG otherwise.

Options: `difficulty` = the operations needed (1-5; difficulty + 1 numbers, each 1-100). The
target is the value of a random expression over all the numbers (pairs combined in a random
order by +, -, * or exact /, keeping every value a whole number from 1 to 10**4; a step that
cannot becomes +), so every instance has a solution. The last number carries the split bit.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api, task

MAX_NUMBER = 100
MAX_VALUE = 10**4  # Largest value while generating a target.
LIMIT = 2**30  # Largest intermediate value in a readable answer.
OPERATORS = "+-*/"
_OPEN = len(OPERATORS)  # Operator-stack code of '('.
RULES = ("Write an arithmetic expression that uses each number exactly once, with +, -, *, / and "
         "parentheses, and equals the target. Every division must leave no remainder.\n")


@struct.dataclass
class Numbers:
  numbers: jax.Array  # int32 [difficulty + 1]
  target: jax.Array  # int32 []


def _combine(a, b, operation):
  return jnp.stack([a + b, a - b, a * b, a // jnp.where(b == 0, 1, b)])[operation]


@api.register
@dataclasses.dataclass(frozen=True)
class Countdown(task.Task):
  name = "countdown"
  difficulties = (1, 2, 3, 4, 5)
  max_answer_bytes = 48

  @property
  def count(self) -> int:
    return self.difficulty + 1

  @property
  def phrases(self) -> tuple[str, ...]:
    return ("", *task.DIGITS, RULES + "Numbers: ", ", ", ". Target: ", ".")

  @property
  def max_observation_phrases(self) -> int:
    return 1 + 4 * self.count - 1 + 1 + 5 + 1  # intro, numbers and commas, target

  def _generate(self, key: jax.Array, heldout: bool) -> Numbers:
    numbers_key, *step_keys = jax.random.split(key, 1 + self.difficulty)
    offsets = jax.random.randint(numbers_key, (self.count,), 0, MAX_NUMBER)
    offsets = offsets.at[-1].set(task.place_split_bit(offsets[-1], heldout, offsets[:-1]))
    numbers = (offsets + 1).astype(jnp.int32)
    pool = numbers
    for alive, step_key in zip(range(self.count, 1, -1), step_keys):
      pick_key, operation_key = jax.random.split(step_key)
      order = jnp.argsort(jnp.where(jnp.arange(self.count) < alive,
                                    jax.random.uniform(pick_key, (self.count,)), 2.0))
      i, j = jnp.minimum(order[0], order[1]), jnp.maximum(order[0], order[1])
      a, b = jnp.maximum(pool[i], pool[j]), jnp.minimum(pool[i], pool[j])
      operation = jax.random.randint(operation_key, (), 0, 4)
      allowed = jnp.stack([True, a > b, a * b <= MAX_VALUE, (b > 1) & (a % b == 0)])
      value = _combine(a, b, jnp.where(allowed[operation], operation, 0))
      pool = pool.at[i].set(value).at[j].set(pool[alive - 1])
    return Numbers(numbers, pool[0].astype(jnp.int32))

  def heldout_bit(self, data: Numbers) -> jax.Array:
    offsets = data.numbers - 1
    return task.split_bit(offsets[-1], offsets[:-1])

  def read_answer(self, state, answer, length):
    value, used, count, readable, in_rules = evaluate(answer, length)
    sentinel = jnp.iinfo(jnp.int32).max
    given = jnp.full(used.shape, sentinel).at[:self.count].set(state.data.numbers)
    same_numbers = (count == self.count) & (jnp.sort(jnp.where(
        jnp.arange(used.shape[0]) < count, used, sentinel)) == jnp.sort(given)).all()
    correct = in_rules & same_numbers & (value == state.data.target)
    return jnp.where(readable, correct.astype(jnp.int32), api.INVALID_ACTION)

  def verdict_text(self, state, answer: str) -> int:
    result = evaluate_text(answer)
    if result is None:
      return api.INVALID_ACTION
    value, used = result
    numbers = sorted(np.asarray(state.data.numbers).tolist())
    return int(value is not None and sorted(used) == numbers
               and value == int(state.data.target))

  def solution_text(self, state) -> str:
    return solve(np.asarray(state.data.numbers).tolist(), int(state.data.target))

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    del player
    ids = {p: i for i, p in enumerate(self.phrases)}
    number = lambda value, slots: task.digit_ids(value, slots, ids["0"])
    parts = [jnp.asarray([ids[RULES + "Numbers: "]])]
    for k in range(self.count):
      if k:
        parts.append(jnp.asarray([ids[", "]]))
      parts.append(number(state.data.numbers[k], 3))
    parts += [jnp.asarray([ids[". Target: "]]), number(state.data.target, 5),
              jnp.asarray([ids["."]])]
    return jnp.concatenate(parts).astype(jnp.int32)

  def render_text(self, state: api.State, player: int) -> str:
    del player
    numbers = ", ".join(str(n) for n in np.asarray(state.data.numbers).tolist())
    return f"{RULES}Numbers: {numbers}. Target: {int(state.data.target)}."


# --- Reading expressions: the plain-Python reference. ---

_TOKEN = re.compile(r"\s*(?:([0-9]+)|(.))")


def evaluate_text(answer: str) -> tuple[int | None, list[int]] | None:
  """(value, numbers used) of a readable expression, value None when it breaks a rule (inexact
  or zero division, an intermediate beyond LIMIT); None when unreadable (outside the grammar, or
  a number of 10**9 or more)."""
  tokens = [m.group(1) or m.group(2) for m in _TOKEN.finditer(answer) if m.group(0).strip()]
  used, position = [], 0

  def peek():
    return tokens[position] if position < len(tokens) else None

  def take():
    nonlocal position
    position += 1
    return tokens[position - 1]

  def factor():
    token = peek()
    if token is None:
      raise SyntaxError
    if token.isascii() and token.isdigit():
      if int(token) >= 10**9:
        raise SyntaxError
      used.append(int(take()))
      return int(token)
    if token == "(":
      take()
      value = expression()
      if peek() != ")":
        raise SyntaxError
      take()
      return value
    raise SyntaxError

  def binary(operand, operators):
    value = operand()
    while peek() is not None and peek() in operators:
      operator, right = take(), operand()
      value = _apply_text(operator, value, right)
    return value

  def term():
    return binary(factor, "*/")

  def expression():
    return binary(term, "+-")

  try:
    value = expression()
  except SyntaxError:
    return None
  if position != len(tokens):
    return None
  return value, used


def _apply_text(operator: str, a: int | None, b: int | None) -> int | None:
  if a is None or b is None:
    return None
  if operator == "/" and (b == 0 or a % b):
    return None
  value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[operator]
  return value if abs(value) <= LIMIT else None


def solve(numbers: list[int], target: int) -> str:
  """An expression reaching `target` with every number once (exhaustive search, remembering the
  value sets that fail; instances always have one)."""
  found = _search(tuple((n, str(n)) for n in numbers), target, set())
  if found is None:
    raise ValueError(f"countdown: no solution for {numbers} -> {target}.")
  return found


def _search(items: tuple[tuple[int, str], ...], target: int, failed: set) -> str | None:
  values = tuple(sorted(value for value, _ in items))
  if values in failed:
    return None
  if len(items) == 1:
    return items[0][1] if items[0][0] == target else None
  for i in range(len(items)):
    for j in range(len(items)):
      if i == j:
        continue
      (a, x), (b, y) = items[i], items[j]
      rest = tuple(item for k, item in enumerate(items) if k not in (i, j))
      options = [(a + b, f"({x}+{y})"), (a - b, f"({x}-{y})"), (a * b, f"{x}*{y}")]
      if b and a % b == 0:
        options.append((a // b, f"{x}/({y})"))
      for value, text in options:
        found = _search(rest + ((value, text),), target, failed)
        if found is not None:
          return found
  failed.add(values)
  return None


# --- Reading expressions inside the compiled program. ---

def evaluate(answer: jax.Array, length: jax.Array):
  """Jittable `evaluate_text` by shunting-yard over the answer's bytes.

  Returns (value int32 [], used int32 [W] (the numbers in order of appearance), count int32 []
  (how many), readable bool [], in_rules bool [] (every division exact, every value within
  LIMIT)); W = answer's width.
  """
  width = answer.shape[0]
  precedence = jnp.asarray([1, 1, 2, 2, 0])  # + - * / (

  def reduce(state):
    values, depth, operators, top, in_rules, readable = state
    ok = (depth >= 2) & (top >= 1)
    a, b = values[jnp.maximum(depth - 2, 0)], values[jnp.maximum(depth - 1, 0)]
    operator = jnp.minimum(operators[jnp.maximum(top - 1, 0)], 3)
    fa, fb = a.astype(jnp.float32), b.astype(jnp.float32)
    size = jnp.abs(jnp.stack([fa + fb, fa - fb, fa * fb, fa]))[operator]
    exact = (operator != 3) | ((b != 0) & (a % jnp.where(b == 0, 1, b) == 0))
    in_rules &= ~ok | (exact & (size <= LIMIT))
    value = jnp.where(size <= LIMIT, _combine(a, b, operator), 0)
    values = values.at[jnp.maximum(depth - 2, 0)].set(jnp.where(ok, value, a))
    return (values, jnp.where(ok, depth - 1, depth), operators, jnp.where(ok, top - 1, top),
            in_rules, readable & ok)

  def reduce_while(state, condition):
    def cond(s):
      _, _, operators, top, _, readable = s
      return readable & (top > 0) & condition(operators[jnp.maximum(top - 1, 0)])
    return jax.lax.while_loop(cond, reduce, state)

  def step(carry, index):
    (values, depth, operators, top, in_rules, readable, number, in_number, expect, used,
     count) = carry
    end = index == length
    char = jnp.where(end, 0, answer[jnp.minimum(index, width - 1)]).astype(jnp.int32)
    live = index <= length
    digit = (char >= ord("0")) & (char <= ord("9"))
    # A number ends at any other character (or the end).
    flush = live & in_number & ~digit
    values = jnp.where(flush, values.at[depth].set(number, mode="drop"), values)
    used = jnp.where(flush, used.at[count].set(number, mode="drop"), used)
    depth, count = depth + flush, count + flush
    in_number &= ~flush
    # Digits.
    readable &= ~(live & digit & ((~in_number & ~expect) | (in_number & (number >= 10**8))))
    shifted = jnp.where(in_number, number * 10 % 10**9, 0)
    number = jnp.where(live & digit, shifted + char - ord("0"), number)
    expect &= ~(live & digit)
    in_number |= live & digit
    # Brackets and operators.
    operator = jnp.argmax(jnp.asarray([ord(c) for c in OPERATORS]) == char)
    is_operator = live & (jnp.asarray([ord(c) for c in OPERATORS]) == char).any()
    opening, closing = live & (char == ord("(")), live & (char == ord(")"))
    known = digit | (char == ord(" ")) | is_operator | opening | closing | end
    readable &= ~live | known
    readable &= ~((opening & ~expect) | ((closing | is_operator | end) & expect & live))
    state = (values, depth, operators, top, in_rules, readable)
    state = jax.lax.cond(
        is_operator,
        lambda s: reduce_while(s, lambda o: (o != _OPEN) & (precedence[o] >= precedence[operator])),
        lambda s: s, state)
    state = jax.lax.cond(closing | (live & end), lambda s: reduce_while(s, lambda o: o != _OPEN),
                         lambda s: s, state)
    values, depth, operators, top, in_rules, readable = state
    top_is_open = (top > 0) & (operators[jnp.maximum(top - 1, 0)] == _OPEN)
    readable &= ~(closing & ~top_is_open) & ~(live & end & ((top > 0) | (depth != 1)))
    top = jnp.where(closing & top_is_open, top - 1, top)
    push = is_operator | opening
    operators = jnp.where(push, operators.at[top].set(jnp.where(opening, _OPEN, operator),
                                                       mode="drop"), operators)
    top = top + push
    expect = jnp.where(push, True, expect)
    return (values, depth, operators, top, in_rules, readable, number, in_number, expect, used,
            count), None

  zeros = jnp.zeros((width,), jnp.int32)
  carry = (zeros, jnp.int32(0), zeros, jnp.int32(0), jnp.bool_(True),
           (length >= 0) & (length <= width), jnp.int32(0), jnp.bool_(False), jnp.bool_(True),
           zeros, jnp.int32(0))
  carry, _ = jax.lax.scan(step, carry, jnp.arange(width + 1))
  values, _, _, _, in_rules, readable, *_, used, count = carry
  return values[0], used, count, readable, in_rules
