"""The Bradley-Terry Elo fit against hand-computed cases."""

import math

import numpy as np
import pytest

from jaxplay.evaluation import ratings


def table(results):
  """(points, games) [P, P] from {(i, j): (points of i, games)}."""
  size = 1 + max(max(pair) for pair in results)
  points, games = np.zeros((size, size)), np.zeros((size, size))
  for (i, j), (won, played) in results.items():
    points[i, j], points[j, i] = won, played - won
    games[i, j] = games[j, i] = played
  return points, games


def test_three_wins_in_four_games_is_400_log10_3_elo():
  elo = ratings.fit_elo(*table({(0, 1): (3, 4)}), anchor=1, alpha=1e-6)
  assert elo[1] == 0
  assert elo[0] == pytest.approx(400 * math.log10(3), abs=0.5)  # 190.8


def test_draws_count_half_and_even_results_rate_alike():
  elo = ratings.fit_elo(*table({(0, 1): (2, 4)}), alpha=1e-6)  # e.g. four draws
  np.testing.assert_allclose(elo, [0, 0], atol=1e-3)
  elo = ratings.fit_elo(*table({(0, 1): (2.5, 4)}), anchor=1, alpha=1e-6)
  assert elo[0] == pytest.approx(400 * math.log10(2.5 / 1.5), abs=0.5)


def test_players_who_never_met_are_rated_through_a_common_opponent():
  # 1 beats 0 three times in four, 0 beats 2 three times in four; 1 and 2 never play.
  elo = ratings.fit_elo(*table({(0, 1): (1, 4), (0, 2): (3, 4)}), alpha=1e-6)
  step = 400 * math.log10(3)
  np.testing.assert_allclose(elo, [0, step, -step], atol=0.5)


def test_a_player_that_wins_everything_stays_finite():
  elo = ratings.fit_elo(*table({(0, 1): (8, 8)}), anchor=1)
  assert math.isfinite(elo[0]) and elo[0] > 400


def test_tables_that_do_not_add_up_are_refused():
  points, games = table({(0, 1): (3, 4)})
  points[1, 0] = 2
  with pytest.raises(ValueError, match="must add up to its games"):
    ratings.fit_elo(points, games)


def test_elo_against_one_opponent_by_hand():
  # 3 wins in 4 against a player rated 0: 400 log10(3); 1 win and 2 draws in 4: 2 points, even.
  # The default prior shrinks a 4-game record a little (189.6).
  assert ratings.elo_against(3.0, 4) == pytest.approx(400 * math.log10(3), abs=2.0)
  assert ratings.elo_against(2.0, 4) == pytest.approx(0.0, abs=1e-6)
  assert ratings.elo_against(1.0, 4) == pytest.approx(-400 * math.log10(3), abs=2.0)
  assert 0 < ratings.elo_against(4.0, 4) < 5000  # All wins: bounded by the prior.
