"""Stand-ins for a model policy in rollout and evaluation tests."""

import jax
import jax.numpy as jnp

import games
from games import kuhn_poker
from jaxplay import rollout

RESPONSE_LEN = 3


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
