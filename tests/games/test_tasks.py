"""The verifiable tasks (games/task.py): generators, splits, answers and the answer readers."""

import dataclasses
import functools
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import games
from games import api, arithmetic, countdown, linear_equation, task
from jaxplay.rl import rollout
from jaxplay.text import answers
from jaxplay.text import tokenizer as tokenizers
from tests import fixtures_text

TASKS = [(name, difficulty) for name in ("arithmetic", "countdown", "linear_equation")
         for difficulty in games.make(name).difficulties]
# The easiest and the hardest difficulty of each task.
EDGE_TASKS = [(name, d) for name, d in TASKS
              if d in (games.make(name).difficulties[0], games.make(name).difficulties[-1])]


@functools.lru_cache(maxsize=None)
def _batched_init(game):
  return jax.jit(jax.vmap(game.init))


def _instances(game, count=512, seed=0):
  keys = jax.random.split(jax.random.key(seed), count)
  return jax.device_get(_batched_init(game)(keys))


def _row(states, i):
  return jax.tree.map(lambda x: x[i], states)


def _problem(game, data) -> tuple:
  """The math of an instance (arithmetic's name and item are wording)."""
  if isinstance(game, arithmetic.Arithmetic):
    data = (data.start, data.operations, data.operands)
  return tuple(tuple(np.ravel(x).tolist()) for x in jax.tree.leaves(data))


def _encoded(text: str, width: int) -> tuple[np.ndarray, int]:
  """A normalised answer as the parser hands it over: uint8 [width] and its length."""
  data = answers.normalise(text).encode()
  row = np.zeros(width, np.uint8)
  row[:min(len(data), width)] = list(data[:width])
  return row, len(data)


@pytest.mark.parametrize("name,difficulty", EDGE_TASKS)
def test_generation_is_keyed_and_splits_never_meet(name, difficulty):
  train = games.make(name, difficulty=difficulty)
  heldout = dataclasses.replace(train, split="heldout")
  first, again = _instances(train), _instances(train)
  assert jax.tree.all(jax.tree.map(np.array_equal, first, again))
  other = _instances(train, seed=1)
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, first.data, other.data)))
  held = _instances(heldout)
  bits = jax.vmap(train.heldout_bit)
  assert not np.asarray(bits(first.data)).any() and np.asarray(bits(held.data)).all()
  train_set = {_problem(train, _row(first.data, i)) for i in range(512)}
  held_set = {_problem(train, _row(held.data, i)) for i in range(512)}
  assert not train_set & held_set
  assert len(train_set) > 1 and len(held_set) > 1


@pytest.mark.parametrize("name,difficulty", TASKS)
def test_every_instance_has_the_answer_the_python_reference_gives(name, difficulty):
  game = games.make(name, difficulty=difficulty)
  states = _instances(game, count=64, seed=2)
  for i in range(64):
    state, data = _row(states, i), _row(states, i).data
    if name == "arithmetic":
      count = int(data.start)
      for operation, operand in zip(data.operations.tolist(), data.operands.tolist()):
        assert operation != arithmetic.GIVE or operand < count
        assert operation != arithmetic.SPLIT or count % operand == 0
        count = arithmetic.apply(operation, count, operand)
        assert 1 <= count <= arithmetic.MAX_COUNT
      assert count == int(data.answer)
    elif name == "countdown":
      assert len(data.numbers) == difficulty + 1 and data.numbers.min() >= 1
      value, used = countdown.evaluate_text(game.solution_text(state))
      assert value == int(data.target) and sorted(used) == sorted(data.numbers.tolist())
    else:
      assert int(data.coefficient) * int(data.unknown) + int(data.constant) == int(data.right)
    assert game.verdict_text(state, answers.normalise(game.solution_text(state))) == task.CORRECT


def test_arithmetic_text_and_options():
  game = games.make("arithmetic", difficulty=2, digits=1)
  state = _row(_instances(game, 8), 0)
  text = game.render_text(state, 0)
  assert text.count(" Then ") == 2 and text.endswith("have now?")
  with pytest.raises(ValueError, match="digits"):
    games.make("arithmetic", digits=5)
  with pytest.raises(ValueError, match="difficulty"):
    games.make("arithmetic", difficulty=7)
  with pytest.raises(ValueError, match="split"):
    games.make("countdown", split="test")


INTEGER_CASES = [("42", 42), ("-7", -7), ("1,234", 1234), ("1 234", 1234), ("042", 42),
                 ("4.2", None), ("", None), ("-", None), ("42 apples", None), ("x = 3", None),
                 ("1234567890", None), ("123456789", 123456789), ("--3", None), ("3-", None)]


@pytest.mark.parametrize("text,value", INTEGER_CASES)
def test_integer_reader_matches_hand_cases_on_device(text, value):
  assert task.read_integer_text(text) == value
  row, length = _encoded(text, 16)
  got, readable = jax.jit(task.read_integer)(jnp.asarray(row), jnp.int32(length))
  assert bool(readable) == (value is not None)
  if value is not None:
    assert int(got) == value


def test_an_answer_too_long_or_without_a_box_is_unreadable():
  row, _ = _encoded("42", 16)
  for length in (-1, 17):
    assert not bool(task.read_integer(jnp.asarray(row), jnp.int32(length))[1])


COUNTDOWN = countdown.Countdown(difficulty=2)


def _countdown_state(numbers, target):
  data = countdown.Numbers(jnp.asarray(numbers, jnp.int32), jnp.int32(target))
  return api.new_state(COUNTDOWN, data, jnp.ones(2, bool))


COUNTDOWN_CASES = [  # numbers 25, 7, 3 -> 46
    ("25+7*3", task.CORRECT), ("7*3+25", task.CORRECT), ("(25 + 7*3)", task.CORRECT),
    ("25+7+3", task.WRONG), ("25*7-3", task.WRONG), ("25+21", task.WRONG),
    ("25+7*3+0", task.WRONG), ("(25-7)/3+40", task.WRONG), ("25+7/3", task.WRONG),
    ("25+7*", api.INVALID_ACTION), ("25+7x3", api.INVALID_ACTION), ("-25+7*3", api.INVALID_ACTION),
    ("25(7*3)", api.INVALID_ACTION), ("(25+7*3", api.INVALID_ACTION), ("", api.INVALID_ACTION),
    ("25+7*3=46", api.INVALID_ACTION), ("25 7 3", api.INVALID_ACTION)]


@pytest.mark.parametrize("text,verdict", COUNTDOWN_CASES)
def test_countdown_checker_matches_hand_cases_on_device(text, verdict):
  state = _countdown_state([25, 7, 3], 46)
  assert COUNTDOWN.verdict_text(state, answers.normalise(text)) == verdict
  row, length = _encoded(text, COUNTDOWN.max_answer_bytes)
  got = jax.jit(COUNTDOWN.read_answer)(state, jnp.asarray(row), jnp.int32(length))
  assert int(got) == verdict


def test_countdown_checker_agrees_with_the_python_reference_on_random_strings():
  rng = random.Random(0)
  pieces = list("0123456789+-*/() ") + ["12", "7", "100", "x", "=", "999999999", "2147483647"]
  texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 14))) for _ in range(3000)]
  texts += ["32768*32768*2", "8/(3-5)", "7/(3-5)", "1/0", "(((2)))"]
  width = COUNTDOWN.max_answer_bytes
  rows, lengths = zip(*(_encoded(t, width) for t in texts))
  value, used, count, readable, in_rules = jax.jit(jax.vmap(countdown.evaluate))(
      jnp.asarray(np.stack(rows)), jnp.asarray(lengths))
  readable_count = 0
  for i, text in enumerate(texts):
    reference = countdown.evaluate_text(answers.normalise(text)) if lengths[i] <= width else None
    assert bool(readable[i]) == (reference is not None), text
    if reference is not None:
      readable_count += 1
      expected_value, expected_used = reference
      assert np.asarray(used[i][:int(count[i])]).tolist() == expected_used, text
      assert bool(in_rules[i]) == (expected_value is not None), text
      if expected_value is not None:
        assert int(value[i]) == expected_value, text
  assert readable_count > 300  # The strings exercise both sides.


def _fixed_answer_policy(text: str, width: int):
  """A text policy stand-in that answers `text` every time (its normalised answer bytes)."""
  row, length = _encoded(text, width)

  def policy(params, prompt_tokens, prompt_lengths, legal_mask, key):
    del params, prompt_lengths, legal_mask, key
    batch = prompt_tokens.shape[0]
    return rollout.Act(jnp.full((batch,), api.INVALID_ACTION), jnp.ones((batch, 2), jnp.int32),
                       jnp.zeros((batch, 2)), jnp.full((batch,), 2, jnp.int32),
                       jnp.broadcast_to(jnp.asarray(row), (batch, width)),
                       jnp.full((batch,), length if text else -1, jnp.int32))

  return policy


@pytest.mark.parametrize("answer", ["7", "x", "", "12"])
def test_the_rollout_plays_the_verdict_of_each_answer(answer):
  game = linear_equation.LinearEquation(difficulty=1)
  render = lambda ids: (ids.astype(jnp.int32), jnp.int32(ids.shape[0]))
  episodes = jax.jit(lambda key: rollout.rollout(
      game, _fixed_answer_policy(answer, game.max_answer_bytes), render, None, key, 64,
      group_size=4))(jax.random.key(0))
  final = jax.device_get(episodes.final_state)
  for i in range(64):
    verdict = game.verdict_text(_row(final, i), answer) if answer else api.INVALID_ACTION
    assert int(episodes.action[0, i]) == verdict
    expected = {task.CORRECT: 1.0, task.WRONG: 0.0}.get(verdict, api.TRAIN_INVALID_REWARDS[0])
    assert float(episodes.returns[i, 0]) == expected
  assert (np.asarray(final.data.unknown).reshape(16, 4) == final.data.unknown[::4, None]).all()
  if answer == "7":
    assert 0 < (np.asarray(episodes.returns[:, 0]) == 1).sum() < 64


def test_a_task_needs_a_text_policy():
  game = games.make("arithmetic")
  policy = lambda params, tokens, lengths, legal, key: rollout.Act(
      jnp.zeros(tokens.shape[0], jnp.int32), jnp.ones((tokens.shape[0], 1), jnp.int32),
      jnp.zeros((tokens.shape[0], 1)), jnp.ones(tokens.shape[0], jnp.int32))
  render = lambda ids: (ids.astype(jnp.int32), jnp.int32(ids.shape[0]))
  with pytest.raises(ValueError, match="text policy"):
    rollout.rollout(game, policy, render, None, jax.random.key(0), 4)


def test_answers_read_from_tokens_reach_the_task():
  """The parser's normalised answer bytes, read by the task, give the reference verdicts."""
  game, bpe = COUNTDOWN, fixtures_text.bpe_tokenizer()
  state = _countdown_state([25, 7, 3], 46)
  table = answers.parse_table(game.actions, tokenizers.byte_table(bpe), game.max_answer_bytes)
  for response in ["So \\boxed{25 + 7 * 3}.", "I get \\boxed{ (25-7)*3 }", "\\boxed{\\text{46}}",
                   "no box", "\\boxed{25+7*3"]:
    ids = jnp.asarray(bpe.encode(response, add_special_tokens=False), jnp.int32)
    _, answer, length = answers.read_tokens(table, ids, jnp.int32(ids.shape[0]))
    content = answers.boxed_content(response)
    expected = (api.INVALID_ACTION if content is None
                else game.verdict_text(state, answers.normalise(content)))
    assert int(game.read_answer(state, answer, length)) == expected, response

