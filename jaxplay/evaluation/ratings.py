"""Elo ratings of players (checkpoints, fixed opponents) from the games they played each other.

The ratings are the Bradley-Terry maximum-likelihood fit of the whole table of results, P(i beats
j) = 1 / (1 + 10 ** ((elo_j - elo_i) / 400)), computed by `choix` (a maintained library of
Luce-model estimators): unlike online Elo or TrueSkill updates, the fit does not depend on the
order the games were played in, and it uses every pairing at once, so players that never met
(two fixed opponents) are rated through the ones they both played. A draw counts half a win to
each side. A small L2 prior (`alpha`) keeps the fit finite when a player wins or loses all of its
games; such a player's rating is a bound set by the prior, not an estimate.
"""

from __future__ import annotations

import math

import choix
import numpy as np

ELO_PER_NAT = 400 / math.log(10)  # Elo points per unit of Bradley-Terry log-strength.


def fit_elo(points_PP: np.ndarray, games_PP: np.ndarray, anchor: int = 0,
            alpha: float = 0.01) -> np.ndarray:
  """float [P] Elo ratings, player `anchor` at 0.

  points_PP[i, j]: what player i scored against j (win 1, draw 1/2, loss 0) over games_PP[i, j]
  games (symmetric; points_PP[i, j] + points_PP[j, i] == games_PP[i, j]).
  """
  points, games = np.asarray(points_PP, float), np.asarray(games_PP, float)
  size = points.shape[0]
  if points.shape != (size, size) or games.shape != points.shape:
    raise ValueError(f"points {points.shape} and games {games.shape} must both be [P, P].")
  if not np.allclose(points + points.T, games) or not np.allclose(2 * points, np.round(2 * points)):
    raise ValueError("each pair's points must add up to its games, in halves (draws).")
  # Each game enters as two half-games: a win as two wins, a draw as one win each way.
  half_wins = np.round(2 * points).astype(int)
  comparisons = [(i, j) for i in range(size) for j in range(size) if i != j
                 for _ in range(half_wins[i, j])]
  if not comparisons:
    return np.zeros(size)
  strengths = choix.opt_pairwise(size, comparisons, alpha=alpha)
  return ELO_PER_NAT * (strengths - strengths[anchor])


def elo_against(points: float, games: int) -> float:
  """The Elo of a player that scored `points` (win 1, draw 1/2) in `games` games against an
  opponent rated 0: `fit_elo` of that one pairing (its prior bounds an all-win or all-loss
  record)."""
  table = np.asarray([[0.0, points], [games - points, 0.0]])
  return float(fit_elo(table, np.asarray([[0, games], [games, 0]]), anchor=1)[0])
