"""Evaluation: win/draw/loss against fixed opponents in both seats, with 95% intervals."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from games import api
from jaxplay import rollout as rollout_lib


def wilson_interval(successes: float, trials: int, z: float = 1.96) -> tuple[float, float]:
  """95% Wilson score interval of a proportion."""
  if trials == 0:
    return (0.0, 1.0)
  p = successes / trials
  denominator = 1 + z * z / trials
  centre = (p + z * z / (2 * trials)) / denominator
  half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
  return (max(0.0, centre - half), min(1.0, centre + half))


def outcome_stats(episodes: rollout_lib.Episodes) -> dict[str, float]:
  """Learner's win/draw/loss counts and rates with intervals, invalid rate and response length."""
  episodes = jax.device_get(episodes)
  seats = np.asarray(episodes.learner_seat)
  rows = np.arange(seats.shape[0])
  learner_return = np.asarray(episodes.returns)[rows, seats]
  other_return = np.asarray(episodes.returns)[rows, 1 - seats]
  wins = int((learner_return > other_return).sum())
  losses = int((learner_return < other_return).sum())
  games_played = seats.shape[0]
  learner_turns = np.asarray(episodes.learner)
  learner_invalid = learner_turns & ~np.asarray(episodes.valid)
  stats = {"games": games_played, "wins": wins, "losses": losses,
           "draws": games_played - wins - losses,
           "win_rate": wins / games_played, "loss_rate": losses / games_played,
           "draw_rate": (games_played - wins - losses) / games_played,
           "invalid_rate": float(learner_invalid.sum() / max(learner_turns.sum(), 1)),
           "response_length_mean": float(
               np.asarray(episodes.response_lengths)[learner_turns].mean())
           if learner_turns.any() else 0.0,
           "return_mean": float(learner_return.mean())}
  stats["win_rate_low"], stats["win_rate_high"] = wilson_interval(wins, games_played)
  for seat in (0, 1):
    in_seat = seats == seat
    stats[f"win_rate_seat{seat}"] = float((learner_return > other_return)[in_seat].mean()
                                          if in_seat.any() else 0.0)
  return stats


def play_against(game: api.Game, policy: rollout_lib.Policy,
                 render_prompt: rollout_lib.RenderPrompt, params: Any,
                 opponent: rollout_lib.Opponent, key: jax.Array, games_per_seat: int,
                 invalid_rewards: tuple[float, float] = api.EVAL_INVALID_REWARDS
                 ) -> rollout_lib.Episodes:
  """Plays the learner against `opponent`, `games_per_seat` games in each seat."""
  game = dataclasses.replace(game, invalid_rewards=tuple(invalid_rewards))
  seats = jnp.repeat(jnp.arange(2, dtype=jnp.int32), games_per_seat)
  play = jax.jit(lambda params, key: rollout_lib.rollout(
      game, policy, render_prompt, params, key, 2 * games_per_seat, opponent=opponent,
      seats=seats))
  return play(params, key)
