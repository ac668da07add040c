"""The step-0 valid-answer benchmark's count on scripted answers: a game's parsed legal actions,
a task's answers its reader can read (the benchmark itself samples Gemma 3 270M for minutes)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplay.benchmarks import valid_answers
from jaxplay.rl import rollout
from jaxplay.run import configuration, experiment
from tests import stand_ins

PROMPTS = 6


def _scripted(answer: bytes | None):
  """A policy playing the first legal action and, as its \\boxed{} content, `answer` (None: no
  closed box)."""

  def policy(params, tokens, lengths, legal, key):
    del params, lengths, key
    rows = tokens.shape[0]
    content = np.zeros((rows, 32), np.uint8)
    if answer is not None:
      content[:, :len(answer)] = np.frombuffer(answer, np.uint8)
    action = jnp.where(legal.any(-1), jnp.argmax(legal, -1), -1).astype(jnp.int32)
    if answer is None:
      action = jnp.full((rows,), -1, jnp.int32)
    return rollout.Act(action, jnp.zeros((rows, 2), jnp.int32), jnp.zeros((rows, 2)),
                       jnp.ones((rows,), jnp.int32), jnp.asarray(content),
                       jnp.full((rows,), -1 if answer is None else len(answer), jnp.int32))

  return policy


@pytest.fixture(scope="module")
def game_and_task():
  config = stand_ins.tiny_kuhn_config(**{"rollout.mode": "text", "rollout.max_response_len": 2,
                                         "rollout.max_prompt_len": 320})
  config.games = "kuhn_poker,arithmetic"
  config.game_options = {"arithmetic": {"difficulty": 1, "digits": 1}}
  spec = configuration.validate(config)
  model, params, tokenizer = experiment.load_model_and_tokenizer(spec, jax.random.key(0))
  return experiment.build(spec, tokenizer, model), params


@pytest.mark.parametrize("answer, valid", [(b"7", PROMPTS), (b"seven", 0), (None, 0)])
def test_tasks_count_the_answers_their_reader_can_read(game_and_task, answer, valid):
  exp, params = game_and_task
  kits = tuple(dataclasses.replace(kit, train_policy=_scripted(answer)) for kit in exp.kits)
  results = valid_answers.measure(dataclasses.replace(exp, kits=kits), params, PROMPTS, 4,
                                  jax.random.key(1))
  counts = {name: count for name, count, _, _ in results}
  assert counts["arithmetic"] == valid  # "7" is read (right or wrong), "seven" is not.
  # The game counts parsed legal actions (the first legal one here, none without a box).
  assert counts["kuhn_poker"] == (0 if answer is None else PROMPTS)
