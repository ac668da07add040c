"""An opponent population: a bounded pool of the learner's past params and who plays against whom.

The pool holds up to `capacity` snapshots stacked on a leading axis (of the leaves the learner
trains: with LoRA only the adapters), optionally in bfloat16. It starts with the initial params,
gains a snapshot every few steps (the oldest is overwritten once full) and keeps, per member, the
learner's recent score against it (win 1, draw 1/2, loss 0; an exponential moving average, 1/2 for
a new member). Who sits in the other seat (`draw`):
- `latest`: the newest snapshot;
- `uniform`: any member alike (fictitious self-play);
- `pfsp`: prioritised fictitious self-play (AlphaStar), weights f(p) of the learner's score p
  against each member: `pfsp_hard` f = (1 - p) ** power, the members it loses to most;
  `pfsp_variance` f = p (1 - p), the members it is even with.
Every function is pure and jittable; the pool is part of the train state (so it is checkpointed).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxplay.rl import train_step

SAMPLINGS = ("latest", "uniform", "pfsp_hard", "pfsp_variance")


@struct.dataclass
class Pool:
  params: Any  # Snapshots stacked [capacity, ...] per leaf, in the pool's dtype.
  size: jax.Array  # int32 [], members held (1..capacity).
  newest: jax.Array  # int32 [], the slot of the newest snapshot (the ring's head).
  step: jax.Array  # int32 [capacity], the train step each member was taken at; -1 if empty.
  score: jax.Array  # float32 [capacity], the learner's recent score against each member.

  @property
  def capacity(self) -> int:
    return self.step.shape[0]


def new_pool(params, capacity: int, dtype: str | None = None) -> Pool:
  """A pool of `capacity` slots holding `params` (the step-0 learner) as its only member; `dtype`
  ('bfloat16', ...) stores the snapshots in that dtype, None keeps theirs."""
  if capacity < 1:
    raise ValueError(f"capacity={capacity} must be >= 1.")
  stored = jax.tree.map(lambda x: jnp.zeros((capacity,) + x.shape, dtype or x.dtype), params)
  empty = Pool(params=stored, size=jnp.int32(0), newest=jnp.int32(capacity - 1),
               step=jnp.full((capacity,), -1, jnp.int32),
               score=jnp.full((capacity,), 0.5, jnp.float32))
  return add(empty, params, 0)


def add(pool: Pool, params, step) -> Pool:
  """The pool with `params` (taken at train step `step`) in the next slot: an empty one, or the
  oldest member's once the pool is full; its score starts at 1/2."""
  slot = (pool.newest + 1) % pool.capacity
  stored = jax.tree.map(lambda s, x: s.at[slot].set(x.astype(s.dtype)), pool.params, params)
  return pool.replace(params=stored, size=jnp.minimum(pool.size + 1, pool.capacity),
                      newest=slot, step=pool.step.at[slot].set(jnp.int32(step)),
                      score=pool.score.at[slot].set(0.5))


def member(pool: Pool, index) -> Any:
  """Member `index`'s snapshot as stored (traced index allowed)."""
  return jax.tree.map(lambda s: s[index], pool.params)


def member_params(snapshot, params, trainable=None):
  """A snapshot (`member`, or one slice of Pool.params) as full params: its leaves in the dtypes
  of `params`' trained leaves, with `params`' other leaves (with LoRA, the base weights);
  `trainable` as in train_step.init_state."""
  learner = train_step.select(params, trainable)
  snapshot = jax.tree.map(lambda m, p: m.astype(p.dtype), snapshot, learner)
  return train_step.merge(snapshot, params, trainable)


def weights(pool: Pool, sampling: str, power: float = 2.0) -> jax.Array:
  """float32 [capacity]: the unnormalised probability of drawing each member (0 for empty slots)."""
  held = jnp.arange(pool.capacity) < pool.size
  p = pool.score
  if sampling == "latest":
    w = (jnp.arange(pool.capacity) == pool.newest).astype(jnp.float32)
  elif sampling == "uniform":
    w = jnp.ones_like(p)
  elif sampling == "pfsp_hard":
    w = (1.0 - p) ** power
  elif sampling == "pfsp_variance":
    w = p * (1.0 - p)
  else:
    raise ValueError(f"Unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}.")
  w = jnp.where(held, w, 0.0)
  # A learner that beats (or is even with) every member still draws them, uniformly.
  return jnp.where(w.sum() > 0, w, held.astype(jnp.float32))


def draw(pool: Pool, key: jax.Array, count: int, sampling: str, power: float = 2.0) -> jax.Array:
  """int32 [count]: members drawn independently by `sampling`'s weights."""
  logits = jnp.log(weights(pool, sampling, power))
  return jax.random.categorical(key, logits, shape=(count,)).astype(jnp.int32)


def learner_scores(returns_BP: jax.Array, learner_seat_B: jax.Array) -> jax.Array:
  """float32 [B]: the learner's score per game, 1 for a win, 1/2 for a draw, 0 for a loss (its
  return against the other seat's)."""
  mine = jnp.take_along_axis(returns_BP, learner_seat_B[:, None], axis=1)[:, 0]
  theirs = jnp.take_along_axis(returns_BP, 1 - learner_seat_B[:, None], axis=1)[:, 0]
  return jnp.where(mine > theirs, 1.0, jnp.where(mine == theirs, 0.5, 0.0))


def results(members_B: jax.Array, scores_B: jax.Array, counted_B: jax.Array, capacity: int
            ) -> tuple[jax.Array, jax.Array]:
  """(games, summed scores), float32 [capacity] each: the games in `counted_B` per member."""
  counted = counted_B.astype(jnp.float32)
  games = jax.ops.segment_sum(counted, members_B, capacity)
  return games, jax.ops.segment_sum(scores_B * counted, members_B, capacity)


def record(pool: Pool, games_K: jax.Array, score_sums_K: jax.Array, decay: float) -> Pool:
  """Moves each member's score towards its mean score over this step's games against it:
  score <- decay * score + (1 - decay) * mean (members that played no game keep theirs)."""
  played = games_K > 0
  mean = score_sums_K / jnp.maximum(games_K, 1.0)
  return pool.replace(score=jnp.where(played, decay * pool.score + (1.0 - decay) * mean,
                                      pool.score))
