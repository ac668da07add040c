"""The jittable CFR/CFR+ and tree best response against OpenSpiel, on Kuhn and Leduc Poker."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyspiel
import pytest
from open_spiel.python import policy as os_policy
from open_spiel.python.algorithms import cfr as os_cfr
from open_spiel.python.algorithms import expected_game_score
from open_spiel.python.algorithms import exploitability as os_exploitability

import games
from games import cfr, opponents
from games import exploitability as kuhn_exploitability
from games import kuhn_poker as kp
from games import leduc_poker as lp

KUHN = pyspiel.load_game("kuhn_poker")
LEDUC = pyspiel.load_game("leduc_poker")
LEDUC_VALUE = -0.0856  # Player 0's equilibrium value of Leduc Poker (published, 4 digits).


def _kuhn_to_openspiel(table):
  """Our Kuhn table [12, 4 actions] as an OpenSpiel TabularPolicy (0 = pass, 1 = bet)."""
  table = np.asarray(table)
  tabular = os_policy.TabularPolicy(KUHN)
  for info, row in tabular.state_lookup.items():
    probs = table[int(info[0]) * 4 + kp.NODES.index(info[1:])]
    tabular.action_probability_array[row] = [probs[kp.CHECK] + probs[kp.FOLD],
                                             probs[kp.BET] + probs[kp.CALL]]
  return tabular


def _kuhn_pass_bet(table):
  """Our Kuhn table as games.exploitability's probs [card, node, (pass, bet)]."""
  table = np.asarray(table).reshape(3, 4, 4)
  return np.stack([table[..., kp.CHECK] + table[..., kp.FOLD],
                   table[..., kp.BET] + table[..., kp.CALL]], -1)


@functools.cache
def _leduc_rows():
  """Our Leduc table row of each state of OpenSpiel's TabularPolicy, found by replaying it."""
  tabular = os_policy.TabularPolicy(LEDUC)
  deals, moves = [], []
  for state in tabular.states:
    replay, cards, actions = LEDUC.new_initial_state(), [], []
    for a in state.history():
      (cards if replay.is_chance_node() else actions).append(a)
      replay.apply_action(a)
    cards += [c for c in range(6) if c not in cards][:3 - len(cards)]  # Any unseen public card.
    deals.append(cards)
    moves.append(actions + [-1] * (8 - len(actions)))
  game = games.make("leduc_poker")
  to_ours = jnp.asarray(lp.TO_OPENSPIEL)

  @jax.jit
  @jax.vmap
  def information_set(deal, spiel_actions):
    state = game.init(jax.random.key(0))
    state = state.replace(data=state.data.replace(cards=deal))

    def replay(state, a):
      ours = jnp.argmax(state.legal_action_mask & (to_ours == a))
      played = game.step(state, ours, jax.random.key(0))
      return jax.tree.map(lambda x, y: jnp.where(a >= 0, x, y), played, state), None

    return lp.information_set(jax.lax.scan(replay, state, spiel_actions)[0])

  keys = np.asarray(information_set(jnp.asarray(deals, jnp.int32), jnp.asarray(moves, jnp.int32)))
  tree_keys = np.asarray(cfr.leduc_tree().keys)
  rows = np.searchsorted(tree_keys, keys)
  assert (tree_keys[rows] == keys).all()
  return rows


def _leduc_to_openspiel(table):
  table = np.asarray(table)[_leduc_rows()]
  tabular = os_policy.TabularPolicy(LEDUC)
  tabular.action_probability_array[:] = np.stack(
      [table[:, lp.FOLD], table[:, lp.CALL] + table[:, lp.CHECK],
       table[:, lp.RAISE] + table[:, lp.BET]], -1)
  return tabular


def _random_table(tree, seed):
  rng = np.random.default_rng(seed)
  table = rng.dirichlet(np.ones(tree.legal.shape[1]), tree.num_infosets) * np.asarray(tree.legal)
  return jnp.asarray(table / table.sum(-1, keepdims=True), jnp.float32)


def test_kuhn_tree_exploitability_matches_references():
  tree = cfr.kuhn_tree()
  assert tree.num_infosets == 12 and [e - s for s, e in tree.levels] == [6, 12, 24, 12]
  uniform = cfr.regret_matching(jnp.zeros(tree.legal.shape), tree.legal)
  np.testing.assert_allclose(cfr.exploitability(tree, uniform), 0.458333, atol=1e-5)
  for seed in range(3):
    table = _random_table(tree, seed)
    ours = float(cfr.exploitability(tree, table))
    np.testing.assert_allclose(ours, kuhn_exploitability.exploitability(_kuhn_pass_bet(table)),
                               rtol=1e-5)
    np.testing.assert_allclose(
        ours, os_exploitability.exploitability(KUHN, _kuhn_to_openspiel(table)), rtol=1e-5)


@pytest.mark.parametrize("plus", [False, True])
def test_cfr_matches_openspiel_solvers_on_kuhn(plus):
  """Same updates as OpenSpiel's CFRSolver / CFRPlusSolver: same average policy every time."""
  tree = cfr.kuhn_tree()
  solver = (os_cfr.CFRPlusSolver if plus else os_cfr.CFRSolver)(KUHN)
  ours = cfr.init(tree)
  for iterations in (1, 10, 200):
    while solver._iteration < iterations:  # pylint: disable=protected-access
      solver.evaluate_and_update_policy()
    ours = cfr.iterate(tree, ours, iterations - int(ours.iteration), plus=plus)
    table = cfr.average_policy(tree, ours)
    expected = solver.average_policy().action_probability_array
    np.testing.assert_allclose(_kuhn_to_openspiel(table).action_probability_array, expected,
                               atol=2e-5)
  ours_exploitability = float(cfr.exploitability(tree, table))
  assert ours_exploitability < (0.0004 if plus else 0.0034), ours_exploitability
  np.testing.assert_allclose(ours_exploitability,
                             os_exploitability.exploitability(KUHN, solver.average_policy()),
                             rtol=1e-3)


def test_cfr_plus_matches_openspiel_on_leduc():
  """10 CFR+ iterations: ours (suits merged) equals OpenSpiel's (suits apart) on all 936 states."""
  tree = cfr.leduc_tree()
  assert tree.num_infosets == 288
  solver = os_cfr.CFRPlusSolver(LEDUC)
  for _ in range(10):
    solver.evaluate_and_update_policy()
  table = cfr.average_policy(tree, cfr.iterate(tree, cfr.init(tree), 10))
  np.testing.assert_allclose(_leduc_to_openspiel(table).action_probability_array,
                             solver.average_policy().action_probability_array, atol=2e-5)
  for policy in (table, _random_table(tree, 0)):
    np.testing.assert_allclose(
        cfr.exploitability(tree, policy),
        os_exploitability.exploitability(LEDUC, _leduc_to_openspiel(policy)), rtol=1e-4)


def test_leduc_equilibrium_exploitability_curve():
  """CFR+ exploitability (OpenSpiel's measure) falls with iterations; the cached table is small."""
  tree = cfr.leduc_tree()
  solver, curve = cfr.init(tree), []
  for iterations in (10, 100, 500, cfr.LEDUC_ITERATIONS):
    solver = cfr.iterate(tree, solver, iterations - int(solver.iteration))
    table = cfr.average_policy(tree, solver)
    curve.append(os_exploitability.exploitability(LEDUC, _leduc_to_openspiel(table)))
    np.testing.assert_allclose(cfr.exploitability(tree, table), curve[-1], rtol=1e-3, atol=1e-6)
  assert all(a > b for a, b in zip(curve, curve[1:])), curve
  assert curve[-1] < 1e-3, curve
  keys, probs = cfr.leduc_equilibrium()
  np.testing.assert_array_equal(keys, tree.keys)
  np.testing.assert_allclose(probs, table, atol=1e-6)
  value = expected_game_score.policy_value(LEDUC.new_initial_state(),
                                           [_leduc_to_openspiel(probs)] * 2)
  np.testing.assert_allclose(value, [LEDUC_VALUE, -LEDUC_VALUE], atol=2e-3)


def test_equilibrium_opponent_samples_the_table():
  """Self-play of the opponent policy in our game returns the table's value (and beats random)."""
  game = games.make("leduc_poker")
  policy = opponents.get("leduc_poker", "optimal")
  cfr.leduc_tree.cache_clear()
  cfr.leduc_equilibrium.cache_clear()  # The table is first computed while `play` is traced.

  @jax.jit
  @functools.partial(jax.vmap, in_axes=(0, None))
  def play(key, random_seat):
    def turn(state, key):
      action = jnp.where(state.current_player == random_seat, opponents.uniform_random(state, key),
                         policy(state, key))
      return game.step(state, action, key), None

    keys = jax.random.split(key, game.max_turns + 1)
    return jax.lax.scan(turn, game.init(keys[0]), keys[1:])[0]

  n = 40000
  final = play(jax.random.split(jax.random.key(0), n), -1)
  assert bool(final.terminated.all()) and not bool(final.invalid.any())
  mean, sd = float(final.rewards[:, 0].mean()), float(final.rewards[:, 0].std()) / n**0.5
  assert abs(mean - LEDUC_VALUE) < 4 * sd + 2e-3, (mean, sd)
  for seat in range(2):
    rewards = np.asarray(play(jax.random.split(jax.random.key(seat + 1), 4000), seat).rewards)
    assert rewards[:, 1 - seat].mean() > 0.5, rewards[:, 1 - seat].mean()
