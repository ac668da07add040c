"""Stand-ins for a model policy in rollout and evaluation tests, hand-made episodes, and the tiny
Kuhn run the run and CLI tests train (configs/kuhn_nash.py shrunk to seconds per step)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import games
from configs import kuhn_nash
from games import kuhn_poker
from jaxplay.rl import rollout
from jaxplay.run import configuration, store

# The tiny Kuhn run: `--config.<field>=<value>` overrides of configs/kuhn_nash.py.
TINY_KUHN_RUN = {"rollout.samples_per_step": 8, "rollout.games_per_batch": 4,
                 "rollout.max_prompt_len": 256, "rl.micro_batch_size": 4, "train.steps": 4,
                 "train.checkpoint_every": 2, "train.eval_every": 100, "eval.games_per_seat": 2}


def tiny_kuhn_config(**changes):
  """configs/kuhn_nash.py with TINY_KUHN_RUN and then `changes` ({"section.field": value})."""
  config = kuhn_nash.get_config()
  for field, value in {**TINY_KUHN_RUN, **changes}.items():
    section, name = field.split(".")
    config[section][name] = value
  return config


def saved_run(folder: pathlib.Path, config, step: int):
  """Makes `folder` a run directory of `config` (its config.json) whose checkpoint of `step` is the
  initial train state; returns (experiment, state)."""
  spec = configuration.validate(config)
  exp, state, _, _ = store.setup(spec)
  saver = store.checkpointer(str(folder), spec)
  saver.save(step, state, force=True)
  saver.close()
  (folder / "config.json").write_text(config.to_json_best_effort(sort_keys=True))
  return exp, state


def tiny_kuhn_flags(**changes) -> list[str]:
  """The same run as `--config.` flags of `python -m jaxplay.main --config=configs/kuhn_nash.py`."""
  return [f"--config.{k}={v}" for k, v in {**TINY_KUHN_RUN, **changes}.items()]


RESPONSE_LEN = 3
STOP_ID = 9  # synthetic_episodes' stop token.


def random_policy(params, prompt_tokens, prompt_lengths, legal_mask, key):
  """Plays a uniform legal action, or INVALID_ACTION with probability params['p_invalid']."""
  batch = prompt_tokens.shape[0]
  action_key, invalid_key = jax.random.split(key)
  logits = jnp.where(legal_mask, 0.0, -jnp.inf)
  action = jax.random.categorical(action_key, logits).astype(jnp.int32)
  invalid = jax.random.uniform(invalid_key, (batch,)) < params["p_invalid"]
  action = jnp.where(invalid, games.INVALID_ACTION, action)
  tokens = jnp.zeros((batch, RESPONSE_LEN), jnp.int32).at[:, 0].set(action + 2)
  return rollout.Act(action, tokens, jnp.zeros((batch, RESPONSE_LEN)), jnp.ones(batch, jnp.int32))


def marking_policy(params, prompt_tokens, prompt_lengths, legal_mask, key):
  """random_policy's answers, marked: response token 1 is 1 where the row was asked (had a legal
  action), token 2 is 1 on every row, and log-prob 0 holds the batch the policy ran on."""
  act = random_policy(params, prompt_tokens, prompt_lengths, legal_mask, key)
  asked = legal_mask.any(-1).astype(jnp.int32)
  rows = prompt_tokens.shape[0]
  return act._replace(response_tokens=act.response_tokens.at[:, 1].set(asked).at[:, 2].set(1),
                      response_logprobs=act.response_logprobs.at[:, 0].set(rows))


def render_phrase_ids(phrase_ids):
  return phrase_ids.astype(jnp.int32), jnp.int32(phrase_ids.shape[0])


def kuhn_table_policy(prompts_IS, bet_probs_I, invalid_probs_I):
  """A Kuhn policy of known probabilities for prompts rendered by `render_phrase_ids`: at the
  information set whose phrase ids are prompts_IS[i], bets/calls with bet_probs_I[i], and answers
  invalidly with invalid_probs_I[i] (half unparseable, half an illegal action)."""

  def policy(params, prompt_tokens, prompt_lengths, legal_mask, key):
    del params, prompt_lengths
    batch = prompt_tokens.shape[0]
    row = jnp.argmax((prompt_tokens[:, None, :] == prompts_IS[None]).all(-1), -1)
    bet_key, invalid_key, kind_key = jax.random.split(key, 3)
    bet = jax.random.uniform(bet_key, (batch,)) < bet_probs_I[row]
    opening = legal_mask[:, kuhn_poker.BET]  # check/bet; otherwise fold/call
    action = jnp.where(opening, jnp.where(bet, kuhn_poker.BET, kuhn_poker.CHECK),
                       jnp.where(bet, kuhn_poker.CALL, kuhn_poker.FOLD))
    illegal = jnp.where(opening, kuhn_poker.CALL, kuhn_poker.CHECK)
    invalid = jax.random.uniform(invalid_key, (batch,)) < invalid_probs_I[row]
    wrong = jnp.where(jax.random.bernoulli(kind_key, 0.5, (batch,)), games.INVALID_ACTION, illegal)
    action = jnp.where(invalid, wrong, action).astype(jnp.int32)
    tokens = jnp.zeros((batch, RESPONSE_LEN), jnp.int32)
    return rollout.Act(action, tokens, jnp.zeros((batch, RESPONSE_LEN)), jnp.ones(batch, jnp.int32))

  return policy


def synthetic_episodes(learner_seat) -> rollout.Episodes:
  """Four finished games of 3 turns, responses of up to 4 tokens (truncated ones end in 5, not in
  STOP_ID); `learner_seat` as in Episodes (-1: self-play). Per turn (player, length, valid):
  game 0: (0, 2, ok) (1, 4 truncated, ok)                      returns (1, -1)
  game 1: (0, 4 ending in STOP_ID, ok) (1, 4 truncated, invalid) returns (0.5, -1.5)
  game 2: (0, 3, invalid)                                       returns (-1.5, 0.5)
  game 3: (0, 1, ok) (1, 2, ok) (0, 4 truncated, ok)           returns (0, 0)
  """
  player = np.array([[0, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0]])
  active = np.array([[1, 1, 1, 1], [1, 1, 0, 1], [0, 0, 0, 1]], bool)
  lengths = np.array([[2, 4, 3, 1], [4, 4, 0, 2], [0, 0, 0, 4]])
  valid = active & ~np.array([[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], bool)
  tokens = np.zeros((3, 4, 4), np.int32)
  tokens[0, 1, 3] = STOP_ID
  tokens[1, 0, 3] = tokens[1, 1, 3] = tokens[2, 3, 3] = 5
  seat = np.asarray(learner_seat)
  learner = active & ((seat < 0) | (player == seat))
  zeros = np.zeros((3, 4))
  return rollout.Episodes(
      prompt_tokens=jnp.zeros((3, 4, 1), jnp.int32), prompt_lengths=jnp.ones((3, 4), jnp.int32),
      response_tokens=jnp.asarray(tokens), response_logprobs=jnp.asarray(zeros[..., None]),
      response_lengths=jnp.asarray(lengths), player=jnp.asarray(player),
      active=jnp.asarray(active), learner=jnp.asarray(learner), valid=jnp.asarray(valid),
      action=jnp.zeros((3, 4), jnp.int32), legal_action_mask=jnp.ones((3, 4, 2), bool),
      returns=jnp.array([[1, -1], [0.5, -1.5], [-1.5, 0.5], [0, 0]]),
      invalid=jnp.array([False, True, True, False]), num_turns=jnp.array([2, 2, 1, 3]),
      learner_seat=jnp.asarray(np.broadcast_to(seat, (4,)), jnp.int32), final_state=None)
