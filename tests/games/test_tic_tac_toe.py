"""TicTacToe against OpenSpiel, and the minimax player against random play and brute force."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyspiel
import pytest

import games
from games import opponents

GAME = games.make("tic_tac_toe")
SPIEL_MARKS = {".": -1, "x": 0, "o": 1}


def _spiel_cells(state) -> list[int]:
  return [SPIEL_MARKS[c] for c in str(state).replace("\n", "")]


def test_random_playouts_match_open_spiel():
  batch = 2000
  trajectory = jax.device_get(opponents.random_playouts(GAME, jax.random.key(7), batch))
  cells = trajectory.data.cells  # [max_turns + 2, batch, 9]
  spiel_game = pyspiel.load_game("tic_tac_toe")
  for b in range(batch):
    spiel = spiel_game.new_initial_state()
    for t in range(GAME.max_turns + 2):
      assert trajectory.terminated[t, b] == spiel.is_terminal(), (b, t)
      assert list(cells[t, b]) == _spiel_cells(spiel), (b, t)
      legal = np.flatnonzero(trajectory.legal_action_mask[t, b]).tolist()
      if spiel.is_terminal():
        assert legal == [] and trajectory.turn[t, b] == spiel.move_number(), (b, t)
        np.testing.assert_array_equal(trajectory.rewards[t, b], spiel.returns())
        break
      assert legal == spiel.legal_actions(), (b, t)
      assert trajectory.current_player[t, b] == spiel.current_player(), (b, t)
      spiel.apply_action(int(np.flatnonzero(cells[t + 1, b] != cells[t, b])[0]))
    else:
      pytest.fail(f"game {b} did not end")


@functools.cache
def _spiel_values() -> dict[str, float]:
  """Game value for the player to move of each reachable live board, brute force on OpenSpiel."""
  values = {}

  def solve(state) -> float:
    key = str(state)
    if key not in values:
      player = state.current_player()
      values[key] = max(
          child.returns()[player] if child.is_terminal() else -solve(child)
          for child in (state.child(a) for a in state.legal_actions()))
    return values[key]

  solve(pyspiel.load_game("tic_tac_toe").new_initial_state())
  return values


def _live_spiel_states():
  spiel_game = pyspiel.load_game("tic_tac_toe")
  frontier, seen = [spiel_game.new_initial_state()], set()
  while frontier:
    state = frontier.pop()
    if state.is_terminal() or str(state) in seen:
      continue
    seen.add(str(state))
    yield state
    frontier.extend(state.child(a) for a in state.legal_actions())


def test_minimax_table_agrees_with_open_spiel_brute_force():
  values, best = opponents.tic_tac_toe_tables()
  spiel_values = _spiel_values()
  count = 0
  for state in _live_spiel_states():
    count += 1
    index = opponents.tic_tac_toe_index(np.array(_spiel_cells(state)))
    assert np.sign(values[index]) == spiel_values[str(state)], str(state)
    moves = np.flatnonzero(best[index]).tolist()
    assert moves and set(moves) <= set(state.legal_actions()), str(state)
    player = state.current_player()
    winning_now = [a for a in state.legal_actions()
                   if state.child(a).is_terminal() and state.child(a).returns()[player] == 1]
    for move in moves:  # Every chosen move keeps the game value; an immediate win is never delayed.
      child = state.child(move)
      child_value = child.returns()[player] if child.is_terminal() else -spiel_values[str(child)]
      assert child_value == spiel_values[str(state)], (str(state), move)
      assert not winning_now or move in winning_now, (str(state), move)
  assert count == 4520  # Live positions reachable in TicTacToe.


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _play(policy_0, policy_1, key, batch):
  """Final states of `batch` games between two policies (policy_0 is player 0)."""
  init_key, play_key = jax.random.split(key)
  states = jax.vmap(GAME.init)(jax.random.split(init_key, batch))

  def turn(states, key):
    keys = jax.random.split(key, (2, batch))
    actions = jnp.where(states.current_player == 0, jax.vmap(policy_0)(states, keys[0]),
                        jax.vmap(policy_1)(states, keys[1]))
    return jax.vmap(GAME.step)(states, actions, keys[0]), None

  states, _ = jax.lax.scan(turn, states, jax.random.split(play_key, GAME.max_turns))
  return states


def _win_draw_loss(rewards):
  return int((rewards > 0).sum()), int((rewards == 0).sum()), int((rewards < 0).sum())


def _expected_win_rate(seat: int) -> float:
  """Exact win probability of the table's player (uniform over its best moves) vs uniform random."""
  _, best = opponents.tic_tac_toe_tables()

  def win_rate(state) -> float:
    if state.is_terminal():
      return float(state.returns()[seat] > 0)
    if state.current_player() == seat:
      moves = np.flatnonzero(best[opponents.tic_tac_toe_index(np.array(_spiel_cells(state)))])
    else:
      moves = state.legal_actions()
    return float(np.mean([win_rate(state.child(a)) for a in moves]))

  return win_rate(pyspiel.load_game("tic_tac_toe").new_initial_state())


@pytest.mark.parametrize("seat", [0, 1])
def test_minimax_never_loses_to_random(seat):
  policies = [opponents.uniform_random, opponents.uniform_random]
  policies[seat] = opponents.tic_tac_toe_minimax
  final = _play(*policies, jax.random.key(seat), 1000)
  assert final.terminated.all() and not final.invalid.any()
  wins, draws, losses = _win_draw_loss(np.asarray(final.rewards[:, seat]))
  print(f"minimax as player {seat} vs random: W/D/L = {wins}/{draws}/{losses}")
  assert losses == 0
  expected = _expected_win_rate(seat)
  assert abs(wins / 1000 - expected) < 5 * np.sqrt(expected * (1 - expected) / 1000), expected


def test_minimax_self_play_always_draws():
  final = _play(opponents.tic_tac_toe_minimax, opponents.tic_tac_toe_minimax, jax.random.key(3),
                1000)
  assert final.terminated.all() and not final.invalid.any()
  np.testing.assert_array_equal(final.rewards, 0.0)
  assert (final.turn == 9).all()
  # Random tie-breaking: the games differ.
  assert len({tuple(c) for c in np.asarray(final.data.cells)}) > 10


def test_minimax_terminal_board_returns_zero():
  final = _play(opponents.tic_tac_toe_minimax, opponents.uniform_random, jax.random.key(4), 8)
  actions = jax.vmap(opponents.tic_tac_toe_minimax)(final, jax.random.split(jax.random.key(5), 8))
  np.testing.assert_array_equal(actions, 0)
