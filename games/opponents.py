"""Fixed opponents: jittable policies `(state, key) -> action` over a single (unbatched) state."""

import jax
import jax.numpy as jnp

from games import api


def uniform_random(state: api.State, key: jax.Array) -> jax.Array:
  """Uniform over the legal actions (action 0 when none is legal, i.e. at the end)."""
  logits = jnp.where(state.legal_action_mask, 0.0, -jnp.inf)
  any_legal = state.legal_action_mask.any()
  action = jax.random.categorical(key, jnp.where(any_legal, logits, 0.0))
  return jnp.where(any_legal, action, 0).astype(jnp.int32)


# --- Kuhn Poker ---


# --- TicTacToe ---


# --- Simple Negotiation ---
