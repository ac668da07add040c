"""Nim: rules against OpenSpiel (normal play), hand-solved positions, the xor-rule opponent."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyspiel
import pytest

import games
from games import nim, opponents
from jaxplay.text import answers


def _openspiel(piles):
  return pyspiel.load_game("nim", {"pile_sizes": ";".join(map(str, piles)), "is_misere": False})


def _to_openspiel(piles):
  """OpenSpiel's id of each of our actions: (amount - 1) * num_piles + pile."""
  return [(k - 1) * len(piles) + p for p, k in nim.moves(piles)]


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _play(game, key, batch, seats):
  """`batch` games; seats[p] is 'random' or 'optimal'. Returns (states [T, B], actions [T, B])."""
  policies = [opponents.get("nim", seat) for seat in seats]
  states = jax.vmap(game.init)(jax.random.split(key, batch))

  def turn(states, key):
    keys = jax.random.split(key, (2, batch))
    moves = [jax.vmap(p)(states, k) for p, k in zip(policies, keys)]
    actions = jnp.where(states.current_player == 0, moves[0], moves[1])
    return jax.vmap(game.step)(states, actions, keys[0]), (states, actions)

  _, out = jax.lax.scan(turn, states, jax.random.split(key, game.max_turns + 1))
  return out


@pytest.mark.parametrize("piles", [(3, 4, 5), (1, 3, 5, 7)])
def test_matches_openspiel_on_random_playouts(piles):
  game = games.make("nim", piles=piles)
  spiel_game = _openspiel(piles)
  to_spiel = _to_openspiel(piles)
  batch = 512
  states, actions = jax.device_get(_play(game, jax.random.key(0), batch, ("random", "random")))
  for b in range(batch):
    spiel = spiel_game.new_initial_state()
    for t in range(game.max_turns + 1):
      if states.terminated[t, b]:
        assert spiel.is_terminal(), (b, t)
        np.testing.assert_array_equal(states.rewards[t, b], spiel.returns())
        break
      assert int(states.current_player[t, b]) == spiel.current_player(), (b, t)
      legal = sorted(to_spiel[a] for a in np.flatnonzero(states.legal_action_mask[t, b]))
      assert legal == spiel.legal_actions(), (b, t)
      spiel.apply_action(to_spiel[int(actions[t, b])])
    else:
      pytest.fail(f"game {b} did not end")


def _after(game, actions):
  state = game.init(jax.random.key(0))
  for a in actions:
    state = game.step(state, game.actions.index(a), jax.random.key(0))
  return state


@pytest.mark.parametrize("played,position,winning", [
    ([], (3, 4, 5), {"0 2"}),  # 3 ^ 4 ^ 5 = 2: only pile 0 (3 -> 1) can be reduced.
    (["1 1", "2 4"], (3, 3, 1), {"0 1", "1 1", "2 1"}),  # nim-sum 1: any pile loses one.
    (["1 4"], (3, 0, 5), {"2 2"}),  # nim-sum 6: pile 2 goes 5 -> 3.
    (["0 2", "1 2", "2 2"], (1, 2, 3), None),  # nim-sum 0: a losing position, any move.
])
def test_optimal_moves_in_hand_solved_positions(played, position, winning):
  game = games.make("nim")
  state = _after(game, played)
  np.testing.assert_array_equal(state.data.sizes, position)
  policy = jax.jit(jax.vmap(opponents.nim_optimal, in_axes=(None, 0)))
  chosen = np.asarray(policy(state, jax.random.split(jax.random.key(1), 200)))
  chosen = {game.actions[a] for a in chosen}
  legal = {a for a, ok in zip(game.actions, state.legal_action_mask) if ok}
  assert chosen == (winning if winning else legal)


def test_last_object_wins_and_render():
  game = games.make("nim")
  state = _after(game, ["0 3", "1 4", "2 4"])
  assert int(state.current_player) == 1 and not state.terminated
  text_1 = game.render_text(state, 1)
  assert "pile 0: 0\npile 1: 0\npile 2: 1\nYour legal moves: [2 1]" in text_1
  state = game.step(state, game.actions.index("2 1"), jax.random.key(0))
  assert state.terminated and not state.invalid
  np.testing.assert_array_equal(state.rewards, [-1.0, 1.0])  # Player 1 took the last object.
  assert game.render_text(state, 0).endswith("The game is over.")


def test_answer_format_parses():
  game = games.make("nim")
  for answer in ("\\boxed{[0 3]}", "\\boxed{0 3}", "\\boxed{ 0   3 }"):
    assert answers.parse_text(answer, game.actions) == game.actions.index("0 3")
  for answer in ("\\boxed{0, 3}", "\\boxed{03}", "\\boxed{3 0 1}"):
    assert answers.parse_text(answer, game.actions) == games.INVALID_ACTION


@pytest.mark.parametrize("piles,winner", [((3, 4, 5), 0), ((1, 3, 5, 7), 1)])
def test_optimal_never_loses_a_won_position_to_random(piles, winner):
  """From a non-zero nim-sum the mover wins; from zero, the second player does (1,000 games)."""
  game = games.make("nim", piles=piles)
  seats = ["random", "random"]
  seats[winner] = "optimal"
  states, _ = jax.device_get(_play(game, jax.random.key(2), 1000, tuple(seats)))
  final = jax.tree.map(lambda x: x[-1], states)
  assert final.terminated.all() and not final.invalid.any()
  assert (final.rewards[:, winner] == 1).all()
  # Both seats optimal: the winner is decided by the start.
  states, _ = jax.device_get(_play(game, jax.random.key(3), 200, ("optimal", "optimal")))
  assert (states.rewards[-1][:, winner] == 1).all()


def test_optimal_from_a_lost_position_still_beats_random_mostly():
  game = games.make("nim")
  states, _ = jax.device_get(_play(game, jax.random.key(4), 1000, ("random", "optimal")))
  wins = int((states.rewards[-1][:, 1] == 1).sum())
  assert wins > 900, wins  # Random play hands back a winning position almost surely.
