"""Team Zero-One (the FXP counter-example): payoffs and exploitability by hand, turn order, the
simultaneous answers, and its fixed teams."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import games
from games import opponents, team_zero_one


def test_payoffs_are_the_papers_table_by_hand():
  # agents 3, bonus 1.5, eps 0.1: rows k (my team's ones), columns k' (theirs).
  expected = [[0.0, 0.1, 0.2, 1.5],
              [-0.1, 0.0, -1.0, -2.0],
              [-0.2, 1.0, 0.0, -1.0],
              [-1.5, 2.0, 1.0, 0.0]]
  u = games.make("team_zero_one").payoffs()
  np.testing.assert_allclose(u, expected, atol=1e-6)
  np.testing.assert_allclose(u, -u.T)  # Zero-sum and symmetric.
  # All zeros never loses; all ones loses only to all zeros; one agent leaving all ones loses.
  assert (u[0] >= 0).all() and u[3, 0] < 0 and u[2, 3] < u[3, 3]


def play(game, answers_by_team):
  state = game.init(jax.random.key(0))
  for turn in range(2 * game.agents):
    team, agent = turn % 2, turn // 2
    assert int(state.current_player) == team and not state.terminated
    state = game.step(state, jnp.int32(answers_by_team[team][agent]), jax.random.key(turn))
  return state


@pytest.mark.parametrize("agents", [1, 2, 3])
def test_every_joint_answer_pays_its_counts_payoff(agents):
  game = games.make("team_zero_one", agents=agents)
  u = game.payoffs()
  for team0 in itertools.product((0, 1), repeat=agents):
    for team1 in itertools.product((0, 1), repeat=agents):
      state = play(game, (team0, team1))
      assert state.terminated
      expected = u[sum(team0), sum(team1)]
      np.testing.assert_allclose(state.rewards, [expected, -expected], atol=1e-6)


def test_an_agent_sees_only_its_team_and_index():
  game = games.make("team_zero_one")
  state = play(game, ((1, 0, 1), (0, 0, 0)))
  before = game.init(jax.random.key(0))
  after_one = game.step(before, jnp.int32(1), jax.random.key(1))
  after_zero = game.step(before, jnp.int32(0), jax.random.key(1))
  # Team 1's first agent sees the same whatever team 0's first agent answered.
  assert game.render_text(after_one, 1) == game.render_text(after_zero, 1)
  assert "agent 0" in game.render_text(after_one, 1) and "Team 1" in game.render_text(after_one, 1)
  assert game.render_text(state, 0).endswith("The game is over.")


def test_exploitability_by_hand():
  game = games.make("team_zero_one")
  assert float(team_zero_one.exploitability(game, jnp.zeros((2, 3)))) == pytest.approx(0.0)
  # All ones: the all-zero team earns the bonus, 1.5.
  assert float(team_zero_one.exploitability(game, jnp.ones((2, 3)))) == pytest.approx(1.5)
  # Uniform agents: ones ~ Binomial(3, 1/2); all ones earns (-1.5 + 3*2 + 3*1 + 0) / 8.
  assert float(team_zero_one.exploitability(game, jnp.full((2, 3), 0.5))) == pytest.approx(
      7.5 / 8)
  # Team 1 all zeros, team 0 all ones: team 0 is exploited by 1.5, team 1 not at all.
  mixed = jnp.asarray([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
  np.testing.assert_allclose(
      team_zero_one.best_response_values(game, mixed[None], jnp.ones(1)), [0.0, 1.5])
  # A half-half mixture of all ones and all zeros is not the all-halves policy: its counts are
  # 0 or 3, never 1 or 2 (best reply all zeros: (0 + 1.5) / 2).
  both = jnp.stack([jnp.ones((2, 3)), jnp.zeros((2, 3))])
  assert float(team_zero_one.exploitability(game, both, jnp.ones(2))) == pytest.approx(0.75)


def test_information_set_states_are_each_agents_turn():
  game = games.make("team_zero_one", agents=2)
  states = team_zero_one.information_set_states(game)
  texts = [game.render_text(jax.tree.map(lambda x: x[i], states), t)
           for i, t in enumerate((0, 0, 1, 1))]
  assert ["Team 0" in texts[0], "agent 1" in texts[1], "Team 1" in texts[2],
          "agent 1" in texts[3]] == [True] * 4
  np.testing.assert_array_equal(states.current_player, [0, 0, 1, 1])


def test_fixed_teams_answer_their_constant():
  game = games.make("team_zero_one")
  state = game.init(jax.random.key(0))
  assert int(opponents.get("team_zero_one", "all_zero")(state, jax.random.key(0))) == 0
  assert int(opponents.get("team_zero_one", "all_one")(state, jax.random.key(0))) == 1


def test_bad_options_name_themselves():
  with pytest.raises(ValueError, match="agents=0"):
    games.make("team_zero_one", agents=0)
  with pytest.raises(ValueError, match="eps=-1"):
    games.make("team_zero_one", eps=-1.0)


def test_best_response_is_each_teams_coordinated_best_count_by_hand():
  game = games.make("team_zero_one")
  best = lambda members, weights=(1.0,): np.asarray(team_zero_one.best_response(
      game, jnp.asarray(members, jnp.float32), jnp.asarray(weights)))
  ones, zeros = np.ones((2, 3)), np.zeros((2, 3))
  # Against all ones the whole team answering 0 earns the bonus (1.5, every other count <= 0),
  # although any single agent loses by switching alone: the coordinated response.
  np.testing.assert_array_equal(best([ones]), zeros)
  np.testing.assert_array_equal(best([zeros]), zeros)  # Each 1 costs 0.1 against all zeros.
  # Uniform agents: 3 ones earn 7.5/8, no ones (0.1 * 1.5 + 1.2 / 8) = 0.3.
  np.testing.assert_array_equal(best([np.full((2, 3), 0.5)]), ones)
  # Team 0 all ones, team 1 all zeros: each team answers the other team's play.
  np.testing.assert_array_equal(best([[[1, 1, 1], [0, 0, 0]]]), zeros)
  # Half all ones, half all zeros: all zeros earns (0 + 1.5) / 2, all ones (-1.5 + 0) / 2.
  np.testing.assert_array_equal(best([ones, zeros], (1.0, 1.0)), zeros)
  # A count between 0 and agents: against team 1's count of 1 for sure, u(k, 1) = k - 1 for
  # k > 0 and 0.1 for k = 0, so 3 ones; the first k agents answer 1.
  np.testing.assert_array_equal(best([[[0, 0, 0], [1, 0, 0]]])[0], [1, 1, 1])
  # The best response earns best_response_values.
  members = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 2, 3)), jnp.float32)
  weights = jnp.asarray([0.2, 0.3, 0.5])
  response = team_zero_one.best_response(game, members, weights)
  u = game.payoffs()
  for team in (0, 1):
    k = int(response[team].sum())
    counts = sum(w * np.asarray(team_zero_one._count_distribution(m[1 - team]))
                 for w, m in zip(weights, members))
    assert float(u[k] @ counts) == pytest.approx(
        float(team_zero_one.best_response_values(game, members, weights)[team]), abs=1e-5)
