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
A pool may also hold a fixed opponent (games/opponents.py) as one more member, after the
snapshots (the last member): drawn by the same rule, scored like the others (AlphaStar's mix of
past selves and fixed exploiters).

Fictitious cross-play (FXP; Xu et al. 2023) adds `counters` slots after the snapshots: snapshots of
a second learner, the counter policy, trained only against the learner's snapshots (a best
response to its past versions, drawn alike or only the newest: `counter_opponents`). The learner then draws a counter with probability `cross_play`
(by the same rule, among the counters held) and a snapshot or the fixed opponent otherwise.
Member indices: snapshots [0, capacity), counters [capacity, capacity + counters), the fixed
opponent last. Every function is pure and jittable; the pool is part of the train state (so it is
checkpointed).
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
  # The learner's snapshots, then the counter policies' (FXP), stacked [capacity + counters, ...]
  # per leaf, in the pool's dtype.
  params: Any
  size: jax.Array  # int32 [], snapshots held (1..capacity).
  newest: jax.Array  # int32 [], the slot of the newest snapshot (the ring's head).
  step: jax.Array  # int32 [capacity], the train step each snapshot was taken at; -1 if empty.
  # float32 [members]: the learner's recent score against each member, in member order.
  score: jax.Array
  # int32 [counters]: the train step each counter policy was taken at, -1 if empty; None when
  # the pool has no counter slots (no FXP).
  counter_step: jax.Array | None = None

  @property
  def capacity(self) -> int:
    """Snapshot slots."""
    return self.step.shape[0]

  @property
  def counters(self) -> int:
    """Counter-policy slots (FXP), after the snapshots."""
    return 0 if self.counter_step is None else self.counter_step.shape[0]

  @property
  def members(self) -> int:
    """Snapshot and counter slots and the fixed opponent, if any: the range of `draw`'s
    indices."""
    return self.score.shape[0]


def new_pool(params, capacity: int, dtype: str | None = None, fixed_opponent: bool = False,
             counters: int = 0) -> Pool:
  """A pool of `capacity` snapshot slots holding `params` (the step-0 learner) as its only
  snapshot, `counters` empty counter-policy slots (FXP), and with `fixed_opponent` a fixed
  opponent as its last member; `dtype` ('bfloat16', ...) stores the snapshots in that dtype, None
  keeps theirs."""
  if capacity < 1:
    raise ValueError(f"capacity={capacity} must be >= 1.")
  if counters < 0:
    raise ValueError(f"counters={counters} must be >= 0.")
  slots = capacity + counters
  stored = jax.tree.map(lambda x: jnp.zeros((slots,) + x.shape, dtype or x.dtype), params)
  empty = Pool(params=stored, size=jnp.int32(0), newest=jnp.int32(capacity - 1),
               step=jnp.full((capacity,), -1, jnp.int32),
               score=jnp.full((slots + fixed_opponent,), 0.5, jnp.float32),
               counter_step=jnp.full((counters,), -1, jnp.int32) if counters else None)
  return add(empty, params, 0)


def add(pool: Pool, params, step) -> Pool:
  """The pool with `params` (taken at train step `step`) in the next slot: an empty one, or the
  oldest member's once the pool is full; its score starts at 1/2."""
  slot = (pool.newest + 1) % pool.capacity
  stored = jax.tree.map(lambda s, x: s.at[slot].set(x.astype(s.dtype)), pool.params, params)
  return pool.replace(params=stored, size=jnp.minimum(pool.size + 1, pool.capacity),
                      newest=slot, step=pool.step.at[slot].set(jnp.int32(step)),
                      score=pool.score.at[slot].set(0.5))


def add_counter(pool: Pool, params, step) -> Pool:
  """The pool with the counter policy's `params` (taken at train step `step`) in an empty counter
  slot, or the oldest counter's once all are held; its score starts at 1/2."""
  if not pool.counters:
    raise ValueError("This pool has no counter slots (new_pool(..., counters=0)).")
  index = jnp.argmin(pool.counter_step)  # An empty slot (-1) first, else the oldest.
  slot = pool.capacity + index
  stored = jax.tree.map(lambda s, x: s.at[slot].set(x.astype(s.dtype)), pool.params, params)
  return pool.replace(params=stored, counter_step=pool.counter_step.at[index].set(step),
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


def snapshots(pool: Pool) -> jax.Array:
  """bool [members]: the learner's snapshots held."""
  return jnp.arange(pool.members) < pool.size


def counters_held(pool: Pool) -> jax.Array:
  """bool [members]: the counter policies held (FXP)."""
  index = jnp.arange(pool.members) - pool.capacity
  if not pool.counters:
    return jnp.zeros((pool.members,), bool)
  in_range = (index >= 0) & (index < pool.counters)
  return in_range & (pool.counter_step[jnp.clip(index, 0, pool.counters - 1)] >= 0)


def held(pool: Pool) -> jax.Array:
  """bool [members]: the members that can be drawn (filled slots and the fixed opponent)."""
  fixed = jnp.arange(pool.members) >= pool.capacity + pool.counters
  return snapshots(pool) | counters_held(pool) | fixed


def _rule(pool: Pool, candidates: jax.Array, newest: jax.Array, sampling: str, power: float
          ) -> jax.Array:
  """`sampling`'s unnormalised weights over `candidates` (bool [members]); `latest` takes the
  member `newest`. All-zero weights fall back to the candidates alike."""
  p = pool.score
  if sampling == "latest":
    w = (jnp.arange(pool.members) == newest).astype(jnp.float32)
  elif sampling == "uniform":
    w = jnp.ones_like(p)
  elif sampling == "pfsp_hard":
    w = (1.0 - p) ** power
  elif sampling == "pfsp_variance":
    w = p * (1.0 - p)
  else:
    raise ValueError(f"Unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}.")
  w = jnp.where(candidates, w, 0.0)
  # A learner that beats (or is even with) every member still draws them, uniformly.
  return jnp.where(w.sum() > 0, w, candidates.astype(jnp.float32))


def weights(pool: Pool, sampling: str, power: float = 2.0, cross_play: float = 0.0
            ) -> jax.Array:
  """float32 [members]: the unnormalised probability of drawing each member for the learner (0
  for empty slots; `latest` draws the newest snapshot, never the fixed opponent). Once a counter
  policy is held, the counters (weighted by the same rule among themselves) share `cross_play` of
  the mass and the other members the rest."""
  others = held(pool) & ~counters_held(pool)
  w = _rule(pool, others, pool.newest, sampling, power)
  if not pool.counters or not cross_play:
    return w
  newest_counter = pool.capacity + jnp.argmax(pool.counter_step)
  w_counters = _rule(pool, counters_held(pool), newest_counter, sampling, power)
  mixed = ((1.0 - cross_play) * w / w.sum()
           + cross_play * w_counters / jnp.maximum(w_counters.sum(), 1e-30))
  return jnp.where(counters_held(pool).any(), mixed, w)


def draw(pool: Pool, key: jax.Array, count: int, sampling: str, power: float = 2.0,
         cross_play: float = 0.0) -> jax.Array:
  """int32 [count]: the learner's opponents, drawn independently by `weights`."""
  return draw_from(weights(pool, sampling, power, cross_play), key, count)


COUNTER_SAMPLINGS = ("uniform", "latest")
# How the counter policy learns (the run's train loop does it): policy gradient on its own games,
# or distilling an exact best response (jaxplay.run.experiment.make_best_response_update).
COUNTER_ORACLES = ("games", "exact")


def counter_opponents(pool: Pool, sampling: str) -> jax.Array:
  """float32 [members]: the counter policy's draw weights over the learner's snapshots, alike
  (`uniform`) or only the newest (`latest`); never a counter or the fixed opponent."""
  if sampling == "uniform":
    return snapshots(pool).astype(jnp.float32)
  if sampling == "latest":
    return (jnp.arange(pool.members) == pool.newest).astype(jnp.float32)
  raise ValueError(f"Unknown counter sampling {sampling!r}; valid: "
                   f"{', '.join(COUNTER_SAMPLINGS)}.")


def draw_from(weights_K: jax.Array, key: jax.Array, count: int) -> jax.Array:
  """int32 [count]: members drawn independently with probabilities proportional to
  `weights_K` (e.g. `counter_opponents`)."""
  logits = jnp.log(weights_K.astype(jnp.float32))
  return jax.random.categorical(key, logits, shape=(count,)).astype(jnp.int32)


def learner_scores(returns_BP: jax.Array, learner_seat_B: jax.Array) -> jax.Array:
  """float32 [B]: the learner's score per game, 1 for a win, 1/2 for a draw, 0 for a loss (its
  return against the other seat's)."""
  mine = jnp.take_along_axis(returns_BP, learner_seat_B[:, None], axis=1)[:, 0]
  theirs = jnp.take_along_axis(returns_BP, 1 - learner_seat_B[:, None], axis=1)[:, 0]
  return jnp.where(mine > theirs, 1.0, jnp.where(mine == theirs, 0.5, 0.0))


def results(members_B: jax.Array, scores_B: jax.Array, counted_B: jax.Array, members: int
            ) -> tuple[jax.Array, jax.Array]:
  """(games, summed scores), float32 [members] each: the games in `counted_B` per member."""
  counted = counted_B.astype(jnp.float32)
  games = jax.ops.segment_sum(counted, members_B, members)
  return games, jax.ops.segment_sum(scores_B * counted, members_B, members)


def record(pool: Pool, games_K: jax.Array, score_sums_K: jax.Array, decay: float) -> Pool:
  """Moves each member's score towards its mean score over this step's games against it:
  score <- decay * score + (1 - decay) * mean (members that played no game keep theirs)."""
  played = games_K > 0
  mean = score_sums_K / jnp.maximum(games_K, 1.0)
  return pool.replace(score=jnp.where(played, decay * pool.score + (1.0 - decay) * mean,
                                      pool.score))
