"""Evaluation statistics and games against fixed opponents."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import games
from games import opponents
from jaxplay import evaluate
from tests import stand_ins

# Game, policies, renderer, opponent and games per seat are static.
_play = jax.jit(evaluate.play_against, static_argnames=(
    "game", "policy", "render_prompt", "opponent", "games_per_seat"))


def test_wilson_interval_hand_computed():
  low, high = evaluate.wilson_interval(5, 10)
  # p=0.5, n=10, z=1.96: centre 0.5, half-width 1.96*sqrt(0.025+0.0096)/1.38416 = 0.26336.
  assert low == pytest.approx(0.23659, abs=1e-4) and high == pytest.approx(0.76341, abs=1e-4)
  assert evaluate.wilson_interval(0, 20)[0] == 0.0
  assert evaluate.wilson_interval(20, 20)[1] == pytest.approx(1.0)


def test_random_learner_never_beats_minimax_and_seats_balance():
  game = games.make("tic_tac_toe")
  episodes = _play(game=game, policy=stand_ins.random_policy,
                   render_prompt=stand_ins.render_phrase_ids, params={"p_invalid": 0.0},
                   opponent=opponents.tic_tac_toe_minimax, key=jax.random.key(0),
                   games_per_seat=64)
  np.testing.assert_array_equal(np.bincount(np.asarray(episodes.learner_seat)), [64, 64])
  stats = evaluate.outcome_stats(episodes)
  assert stats["wins"] == 0 and stats["games"] == 128
  assert stats["wins"] + stats["draws"] + stats["losses"] == 128
  assert stats["losses"] > 64  # Minimax beats random play most of the time.


def test_invalid_answers_count_as_eval_losses():
  game = games.make("tic_tac_toe")
  episodes = _play(game=game, policy=stand_ins.random_policy,
                   render_prompt=stand_ins.render_phrase_ids, params={"p_invalid": 1.0},
                   opponent=opponents.uniform_random, key=jax.random.key(1), games_per_seat=8)
  stats = evaluate.outcome_stats(episodes)
  assert stats["invalid_rate"] == 1.0 and stats["losses"] == 16
  # Evaluation penalty is -1/+1, whoever moves first.
  rows = jnp.arange(16)
  np.testing.assert_allclose(episodes.returns[rows, episodes.learner_seat], -1.0)


def test_opponents_by_name():
  assert opponents.get("tic_tac_toe", "optimal") is opponents.tic_tac_toe_minimax
  assert opponents.names("simple_negotiation") == ("random", "scripted")
  with pytest.raises(ValueError, match="valid: random, optimal"):
    opponents.get("kuhn_poker", "scripted")
