"""Evaluation statistics and games against fixed opponents."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import games
from games import exploitability, kuhn_poker, opponents
from jaxplay.evaluation import matches, statistics
from tests import stand_ins

# Game, policies, renderer, opponent and games per seat are static.
_play = jax.jit(matches.play_against, static_argnames=(
    "game", "policy", "render_prompt", "opponent", "games_per_seat", "batch_halvings"))


def test_wilson_interval_hand_computed():
  low, high = statistics.wilson_interval(5, 10)
  # p=0.5, n=10, z=1.96: centre 0.5, half-width 1.96*sqrt(0.025+0.0096)/1.38416 = 0.26336.
  assert low == pytest.approx(0.23659, abs=1e-4) and high == pytest.approx(0.76341, abs=1e-4)
  assert statistics.wilson_interval(0, 20)[0] == 0.0
  assert statistics.wilson_interval(20, 20)[1] == pytest.approx(1.0)


def test_random_learner_never_beats_minimax_and_seats_balance():
  game = games.make("tic_tac_toe")
  episodes = _play(game=game, policy=stand_ins.random_policy,
                   render_prompt=stand_ins.render_phrase_ids, params={"p_invalid": 0.0},
                   opponent=opponents.tic_tac_toe_minimax, key=jax.random.key(0),
                   games_per_seat=64)
  # The seats are played one after the other and joined game by game: per-turn records line up
  # with each game's seat and length.
  np.testing.assert_array_equal(episodes.learner_seat, np.repeat([0, 1], 64))
  np.testing.assert_array_equal(np.asarray(episodes.active).sum(0), episodes.num_turns)
  np.testing.assert_array_equal(episodes.learner, np.asarray(episodes.active) & (
      np.asarray(episodes.player) == np.asarray(episodes.learner_seat)[None]))
  assert episodes.prompt_tokens.shape[:2] == (game.max_turns, 128)
  stats = matches.outcome_stats(episodes)
  assert stats["wins"] == 0 and stats["games"] == 128
  assert stats["wins"] + stats["draws"] + stats["losses"] == 128
  assert stats["losses"] > 64  # Minimax beats random play most of the time.


def test_the_model_plays_on_fewer_rows_as_games_end():
  """With batch_halvings, each learner turn runs the policy on the smallest of 32, 16, 8 rows
  that holds its live games; with none, on all 32 (the seats' games one after the other)."""
  game = games.make("tic_tac_toe")
  for halvings, sizes in ((0, {32}), (2, {32, 16, 8})):
    episodes = _play(game=game, policy=stand_ins.marking_policy,
                     render_prompt=stand_ins.render_phrase_ids, params={"p_invalid": 0.2},
                     opponent=opponents.uniform_random, key=jax.random.key(2), games_per_seat=32,
                     batch_halvings=halvings)
    learner = np.asarray(episodes.learner).reshape(game.max_turns, 2, 32)  # [T, seat, game]
    ran_on = np.asarray(episodes.response_logprobs)[..., 0].reshape(game.max_turns, 2, 32)
    played = learner.any(-1)
    assert set(ran_on.max(-1)[played].tolist()) == sizes
    np.testing.assert_array_equal(  # Each turn on the fewest rows that hold its games.
        ran_on.max(-1)[played],
        [min(s for s in sizes if s >= count) for count in learner.sum(-1)[played]])


def test_invalid_answers_count_as_eval_losses():
  game = games.make("tic_tac_toe")
  episodes = _play(game=game, policy=stand_ins.random_policy,
                   render_prompt=stand_ins.render_phrase_ids, params={"p_invalid": 1.0},
                   opponent=opponents.uniform_random, key=jax.random.key(1), games_per_seat=8)
  stats = matches.outcome_stats(episodes)
  assert stats["invalid_rate"] == 1.0 and stats["losses"] == 16
  # Evaluation penalty is -1/+1, whoever moves first.
  rows = jnp.arange(16)
  np.testing.assert_allclose(episodes.returns[rows, episodes.learner_seat], -1.0)


def test_opponents_by_name():
  assert opponents.get("tic_tac_toe", "optimal") is opponents.tic_tac_toe_minimax
  assert opponents.names("simple_negotiation") == ("random", "scripted")
  with pytest.raises(ValueError, match="valid: random, optimal"):
    opponents.get("kuhn_poker", "scripted")


def test_games_add_their_own_statistics():
  game = games.make("iterated_prisoners_dilemma", rounds=3)
  episodes = _play(game=game, policy=stand_ins.random_policy,
                   render_prompt=stand_ins.render_phrase_ids, params={"p_invalid": 0.0},
                   opponent=opponents.get(game.name, "tit_for_tat"), key=jax.random.key(2),
                   games_per_seat=16)
  stats = matches.game_stats(game, episodes)
  assert stats.items() >= matches.outcome_stats(episodes).items()
  learner_actions = np.asarray(episodes.action)[np.asarray(episodes.learner)]
  assert learner_actions.size == 96
  assert stats["cooperation_rate"] == pytest.approx((learner_actions == 0).mean())
  assert stats["nash_action_rate"] == pytest.approx((learner_actions == 1).mean())
  assert 0 <= stats["forgiveness_rate"] <= 1
  # Games without statistics of their own (the default hook) report the outcomes only.
  ttt = games.make("tic_tac_toe")
  episodes = _play(game=ttt, policy=stand_ins.random_policy,
                   render_prompt=stand_ins.render_phrase_ids, params={"p_invalid": 0.0},
                   opponent=opponents.uniform_random, key=jax.random.key(3), games_per_seat=8)
  assert matches.game_stats(ttt, episodes) == matches.outcome_stats(episodes)


# --- Kuhn Poker exploitability estimated from sampled answers (free-text mode). ---

_estimate = jax.jit(matches.estimate_kuhn_exploitability, static_argnames=(
    "game", "policy", "render_prompt", "samples", "batch_size"))
UNIFORM_EXPLOITABILITY = 0.4583333  # Of the uniform table (DESIGN.md: about 0.458).


def _kuhn_estimate(bet_I, invalid_I, samples, batch_size=1000, seed=0):
  game = games.make("kuhn_poker")
  prompts = jax.vmap(game.render)(kuhn_poker.information_set_states(game))
  assert len({tuple(p) for p in np.asarray(prompts)}) == 12  # The stand-in tells them apart.
  policy = stand_ins.kuhn_table_policy(prompts, jnp.asarray(bet_I, jnp.float32),
                                       jnp.asarray(invalid_I, jnp.float32))
  return _estimate(game=game, policy=policy, render_prompt=stand_ins.render_phrase_ids,
                   params=None, key=jax.random.key(seed), samples=samples,
                   batch_size=batch_size)


def _hoeffding(samples, failure=1e-6, events=12):
  """Half-width that all `events` means of `samples` draws in [0, 1] respect w.p. 1 - failure."""
  return np.sqrt(np.log(2 * events / failure) / (2 * samples))


def _exact(bet_I):
  bet = jnp.asarray(bet_I, jnp.float32).reshape(3, 4)
  return float(exploitability.exploitability(jnp.stack([1 - bet, bet], -1)))


def test_pure_policy_is_estimated_exactly_whatever_the_batching():
  bet = np.array([0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1], np.float32)  # Bluff-free, calls with K.
  estimate = _kuhn_estimate(bet, np.zeros(12), samples=5, batch_size=7)  # 60 rows, 9 calls.
  np.testing.assert_array_equal(estimate.table[..., 1].reshape(12), bet)
  np.testing.assert_allclose(estimate.table.sum(-1), 1.0)
  assert float(estimate.exploitability) == pytest.approx(_exact(bet))
  assert float(estimate.invalid_rate) == 0.0


@pytest.mark.parametrize("samples", [256, 8192])
def test_estimate_converges_to_the_exact_exploitability(samples):
  bet = np.random.default_rng(0).uniform(size=12).astype(np.float32)
  estimate = _kuhn_estimate(bet, np.zeros(12), samples)
  error = np.abs(np.asarray(estimate.table[..., 1]).reshape(12) - bet)
  epsilon = _hoeffding(samples)
  assert error.max() <= epsilon
  # Exploitability moves by at most 2/3 per unit change of one bet probability, so the estimate
  # is within 2/3 * sum(errors) <= 8 * epsilon of the exact value.
  gap = abs(float(estimate.exploitability) - _exact(bet))
  assert gap <= 2 / 3 * error.sum() + 1e-6 and gap <= 8 * epsilon
  assert float(estimate.invalid_rate) == 0.0


def test_invalid_answers_are_left_out_and_counted():
  bet = np.random.default_rng(1).uniform(size=12).astype(np.float32)
  invalid = np.full(12, 0.5)
  invalid[0] = 1.0  # No valid answer at J, opening: falls back to uniform.
  samples = 2048
  estimate = _kuhn_estimate(bet, invalid, samples)
  table = np.asarray(estimate.table).reshape(12, 2)
  np.testing.assert_array_equal(table[0], [0.5, 0.5])
  # Valid answers keep their probabilities (about 1024 per set).
  assert np.abs(table[1:, 1] - bet[1:]).max() <= _hoeffding(samples // 2 - 100)
  expected_rate = invalid.mean()
  assert abs(float(estimate.invalid_rate) - expected_rate) <= _hoeffding(12 * samples, events=1)
  everything_invalid = _kuhn_estimate(bet, np.ones(12), samples=4)
  assert float(everything_invalid.invalid_rate) == 1.0
  assert float(everything_invalid.exploitability) == pytest.approx(UNIFORM_EXPLOITABILITY)
