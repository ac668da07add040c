"""Advantage estimators over flat turn-samples: RAE, GRPO, Dr.GRPO, RLOO, SPO, MARS, REINFORCE.

Input contract: `Outcomes`, every field shaped [N] with one entry per turn-sample (a prompt and the
response of the player to move). A *trajectory* is one (game_index, role) pair: all the turns one
player took in one game. Every estimator is a pure, jittable function

  estimator(samples, baselines, options) -> (advantages float32 [N], baselines)

where `baselines` float32 [num_kinds, num_roles] is RAE's state (the other estimators return it
unchanged; its shape also tells them num_roles). Masked-out samples get advantage 0.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Outcomes:
  """Per turn-sample inputs of the estimators (all [N])."""

  reward: jax.Array  # float32, the acting player's final game return (same on all its turns).
  game_kind: jax.Array  # int32 in [0, num_kinds).
  role: jax.Array  # int32 in [0, num_roles), the acting player.
  group: jax.Array  # int32 in [0, N), games sharing a seed (GRPO/RLOO groups).
  game_index: jax.Array  # int32 in [0, N), the game the turn belongs to.
  turn_index: jax.Array  # int32, the turn's position in its game (orders a player's turns).
  mask: jax.Array  # bool, a real training sample.
  # float32 or None: MARS's per-turn reward (shaping included). None puts `reward` on each
  # player's last turn and 0 on its earlier turns.
  turn_reward: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class Options:
  """Static options of the estimators."""

  rae_decay: float = 0.95
  # "released": A = R - b_old, then b <- decay*b + (1-decay)*R (SPIRAL's code);
  # "paper": update b first, then A = R - b_new.
  rae_order: str = "released"
  group_eps: float = 1e-6  # GRPO: (r - mean) / (std + eps).
  group_ddof: int = 1  # GRPO std: 1 = unbiased (torch.std, TRL, verl); 0 = population.
  whiten_eps: float = 1e-8  # MARS whitening: (x - mean) / sqrt(var_unbiased + eps).

  def __post_init__(self):
    if self.rae_order not in ("released", "paper"):
      raise ValueError(f"rae_order={self.rae_order!r}; valid: 'released', 'paper'.")
    if not 0.0 <= self.rae_decay < 1.0:
      raise ValueError(f"rae_decay={self.rae_decay} must lie in [0, 1).")
    if self.group_ddof not in (0, 1):
      raise ValueError(f"group_ddof={self.group_ddof}; valid: 0, 1.")


# --- Helpers over trajectories and segments. ---


def _segment_mean(values, segment_ids, weights, num_segments):
  """Weighted mean per segment (0 for empty segments) and the weight per segment."""
  total = jax.ops.segment_sum(values * weights, segment_ids, num_segments)
  count = jax.ops.segment_sum(weights, segment_ids, num_segments)
  return total / jnp.maximum(count, 1.0), count


def _trajectory_ids(s: Outcomes, num_roles: int) -> jax.Array:
  return s.game_index * num_roles + s.role  # in [0, N * num_roles)


def _trajectory_returns(s: Outcomes, num_roles: int):
  """Return and presence of each trajectory slot, both [N * num_roles]."""
  weights = s.mask.astype(jnp.float32)
  num_slots = s.reward.shape[0] * num_roles
  returns, count = _segment_mean(s.reward, _trajectory_ids(s, num_roles), weights, num_slots)
  return returns, count > 0


def _per_game(values, s: Outcomes):
  """A per-sample int field (constant within a game) gathered per game slot, [N]."""
  per_game = jax.ops.segment_max(jnp.where(s.mask, values, 0), s.game_index, s.reward.shape[0])
  return jnp.maximum(per_game, 0)  # Empty slots give the dtype's minimum.


def _whiten(x, weights, eps):
  """(x - mean) / sqrt(var + eps) over the weighted entries, unbiased variance."""
  n = weights.sum()
  mean = (x * weights).sum() / jnp.maximum(n, 1.0)
  var = (jnp.square(x - mean) * weights).sum() / jnp.maximum(n - 1.0, 1.0)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def _reward_to_go(rewards, trajectory_ids, turn_index, num_slots):
  """Sum of each trajectory's rewards from this turn on (gamma = 1)."""
  order = jnp.lexsort((-turn_index, trajectory_ids))  # By trajectory, latest turn first.
  rewards_sorted, ids_sorted = rewards[order], trajectory_ids[order]
  running = jnp.cumsum(rewards_sorted)
  positions = jnp.arange(rewards.shape[0])
  first = jax.ops.segment_min(positions, ids_sorted, num_slots)[ids_sorted]
  to_go_sorted = running - running[first] + rewards_sorted[first]
  return jnp.zeros_like(rewards).at[order].set(to_go_sorted)


def terminal_turn_rewards(s: Outcomes, num_roles: int) -> jax.Array:
  """`reward` on each trajectory's last turn, 0 on its earlier turns, [N]."""
  ids = _trajectory_ids(s, num_roles)
  last = jax.ops.segment_max(jnp.where(s.mask, s.turn_index, -1), ids,
                             s.reward.shape[0] * num_roles)
  return jnp.where(s.mask & (s.turn_index == last[ids]), s.reward, 0.0)


# --- Estimators. ---


def reinforce(s: Outcomes, baselines: jax.Array, options: Options):
  """A = R, no baseline."""
  del options
  return jnp.where(s.mask, s.reward, 0.0), baselines


def rae(s: Outcomes, baselines: jax.Array, options: Options):
  """Role-conditioned advantage (SPIRAL): an EMA baseline per (game kind, role).

  Games are visited in game_index order, one EMA update per trajectory, as the released code
  does game by game; every turn of a trajectory shares its advantage.
  """
  num_games, num_roles = s.reward.shape[0], baselines.shape[1]
  returns, present = _trajectory_returns(s, num_roles)
  kinds = _per_game(s.game_kind, s)
  decay = options.rae_decay

  def visit(b_KP, game):
    kind, returns_P, present_P = game
    old_P = b_KP[kind]
    new_P = jnp.where(present_P, decay * old_P + (1.0 - decay) * returns_P, old_P)
    baseline_P = old_P if options.rae_order == "released" else new_P
    return b_KP.at[kind].set(new_P), returns_P - baseline_P

  baselines, advantages_GP = jax.lax.scan(
      visit, baselines, (kinds, returns.reshape(num_games, num_roles),
                         present.reshape(num_games, num_roles)))
  advantages = advantages_GP.reshape(-1)[_trajectory_ids(s, num_roles)]
  return jnp.where(s.mask, advantages, 0.0), baselines


def _slot_groups(s: Outcomes, num_roles: int) -> jax.Array:
  """int32 [N * num_roles]: the (group, role) of each trajectory slot."""
  return jnp.repeat(_per_game(s.group, s), num_roles) * num_roles + jnp.tile(
      jnp.arange(num_roles), s.reward.shape[0])


def _group_baseline(s: Outcomes, num_roles: int):
  """Per trajectory slot: return, group size n, group mean, squared deviations sum ([N*P] each).

  Groups are (group, role): a player is compared with the same seat in the games of its seed.
  Each trajectory counts once, whatever its number of turns.
  """
  num_slots = s.reward.shape[0] * num_roles
  returns, present = _trajectory_returns(s, num_roles)
  groups = _slot_groups(s, num_roles)
  weights = present.astype(jnp.float32)
  mean, n = _segment_mean(returns, groups, weights, num_slots)
  deviation = returns - mean[groups]
  squares = jax.ops.segment_sum(jnp.square(deviation) * weights, groups, num_slots)
  return returns, n[groups], deviation, squares[groups]


def _per_sample(values_slots, s: Outcomes, num_roles: int):
  return jnp.where(s.mask, values_slots[_trajectory_ids(s, num_roles)], 0.0)


def grpo(s: Outcomes, baselines: jax.Array, options: Options):
  """(r - mean_g) / (std_g + eps), std with `group_ddof`; groups too small for a std give 0."""
  num_roles = baselines.shape[1]
  _, n, deviation, squares = _group_baseline(s, num_roles)
  std = jnp.sqrt(squares / jnp.maximum(n - options.group_ddof, 1.0))
  advantages = jnp.where(n > options.group_ddof, deviation / (std + options.group_eps), 0.0)
  return _per_sample(advantages, s, num_roles), baselines


def dr_grpo(s: Outcomes, baselines: jax.Array, options: Options):
  """r - mean_g (Dr.GRPO: no std division)."""
  del options
  num_roles = baselines.shape[1]
  _, _, deviation, _ = _group_baseline(s, num_roles)
  return _per_sample(deviation, s, num_roles), baselines


def rloo(s: Outcomes, baselines: jax.Array, options: Options):
  """r - mean of the other members of the group (0 for a group of one)."""
  del options
  num_roles = baselines.shape[1]
  _, n, deviation, _ = _group_baseline(s, num_roles)
  advantages = jnp.where(n > 1, deviation * n / jnp.maximum(n - 1.0, 1.0), 0.0)
  return _per_sample(advantages, s, num_roles), baselines


def spo(s: Outcomes, baselines: jax.Array, options: Options):
  """SPO's minimax-winner reward: a trajectory's share of wins against the other members of its
  (group, role), ties counting half, less the group's mean share 1/2; 0 for a group of one.

  A = (wins - losses) / (2 (n - 1)): only the order of the returns matters, not their scale.
  """
  del options
  num_roles = baselines.shape[1]
  returns, present = _trajectory_returns(s, num_roles)
  groups = _slot_groups(s, num_roles)
  peers = (groups[:, None] == groups[None, :]) & present[:, None] & present[None, :]
  net_wins = jnp.where(peers, jnp.sign(returns[:, None] - returns[None, :]), 0.0).sum(1)
  n = peers.sum(1)
  advantages = jnp.where(n > 1, net_wins / (2.0 * jnp.maximum(n - 1, 1)), 0.0)
  return _per_sample(advantages, s, num_roles), baselines


def mars(s: Outcomes, baselines: jax.Array, options: Options):
  """MARS turn-level advantage, one value per turn.

  Per-player normalisation (subtract the mean turn reward of the player's (game kind, role)),
  whitening, reward-to-go with gamma = 1 over the player's turns in its game, per-player
  mean-centring of the turn values, global whitening. Statistics are over valid turns.
  """
  num_kinds, num_roles = baselines.shape
  weights = s.mask.astype(jnp.float32)
  rewards = terminal_turn_rewards(s, num_roles) if s.turn_reward is None else s.turn_reward
  players = s.game_kind * num_roles + s.role

  def centre_per_player(x):
    mean, _ = _segment_mean(x, players, weights, num_kinds * num_roles)
    return x - mean[players]

  rewards = _whiten(centre_per_player(rewards), weights, options.whiten_eps) * weights
  num_slots = s.reward.shape[0] * num_roles
  to_go = _reward_to_go(rewards, _trajectory_ids(s, num_roles), s.turn_index, num_slots)
  advantages = _whiten(centre_per_player(to_go), weights, options.whiten_eps)
  return jnp.where(s.mask, advantages, 0.0), baselines


Estimator = Callable[[Outcomes, jax.Array, Options], tuple[jax.Array, jax.Array]]

ESTIMATORS: dict[str, Estimator] = {
    "rae": rae,
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
    "spo": spo,
    "mars": mars,
    "reinforce": reinforce,
}


def get(name: str) -> Estimator:
  if name not in ESTIMATORS:
    raise ValueError(f"Unknown advantage estimator {name!r}; valid estimators: "
                     f"{', '.join(ESTIMATORS)}.")
  return ESTIMATORS[name]


FORFEIT_CREDITS = ("game", "answer")


def check_forfeit_credit(forfeit_credit: str) -> None:
  if forfeit_credit not in FORFEIT_CREDITS:
    raise ValueError(f"forfeit_credit={forfeit_credit!r}; valid: {', '.join(FORFEIT_CREDITS)}.")


def credit_forfeits_to_their_answers(advantages: jax.Array, s: Outcomes,
                                     invalid: jax.Array) -> jax.Array:
  """`advantages` [N] with every legal answer of a game that a trained invalid answer ended set
  to 0 (`invalid` bool [N]: the sample's answer was illegal or unparseable).

  The game's return then says nothing of those answers (the game was cut short by another one),
  so only the answer that forfeited is trained on the forfeit; a group's baseline still counts the
  forfeited game.
  """
  forfeit = (s.mask & invalid).astype(jnp.int32)
  forfeited = jax.ops.segment_max(forfeit, s.game_index, s.reward.shape[0]) > 0
  return jnp.where(forfeited[s.game_index] & ~invalid, 0.0, advantages)


def compute(name: str, samples: Outcomes, baselines: jax.Array, options: Options = Options(),
            drop_zero: bool = False, forfeit_credit: str = "game",
            invalid: jax.Array | None = None):
  """Runs estimator `name`; returns (advantages [N], new baselines, training mask [N]).

  `forfeit_credit`: "game" (SPIRAL) gives every turn of a player its game's return; "answer"
  trains a forfeited game only on its invalid answers (`credit_forfeits_to_their_answers`; needs
  `invalid`). `drop_zero` removes samples whose advantage is exactly 0 from the mask (SPIRAL's
  filter_zero_adv).
  """
  check_forfeit_credit(forfeit_credit)
  if forfeit_credit == "answer" and invalid is None:
    raise ValueError("forfeit_credit='answer' needs `invalid`, the samples' invalid answers.")
  advantages, baselines = get(name)(samples, baselines, options)
  if forfeit_credit == "answer":
    advantages = credit_forfeits_to_their_answers(advantages, samples, invalid)
  mask = samples.mask & (advantages != 0) if drop_zero else samples.mask
  return advantages, baselines, mask
