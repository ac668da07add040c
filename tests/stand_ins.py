"""Stand-ins for a model policy in rollout and evaluation tests."""

import jax
import jax.numpy as jnp

import games
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
