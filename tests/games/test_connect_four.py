"""Connect Four against OpenSpiel (random playouts, hand cases), its text, and its opponents."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pyspiel
import pytest

import games
from games import api
from games import connect_four
from games import opponents

GAME = games.make("connect_four")
SPIEL_MARKS = {".": -1, "x": 0, "o": 1}
KEY = jax.random.key(0)
# A full board without four in a row (found by a search on OpenSpiel; checked below).
DRAW = (4, 1, 6, 2, 1, 0, 1, 4, 4, 2, 4, 1, 3, 6, 3, 3, 1, 0, 4, 6, 6, 1, 2, 3, 2, 3, 2, 2, 6, 5,
        5, 0, 5, 4, 6, 5, 5, 5, 0, 0, 3, 0)


def _spiel_cells(state) -> list[list[int]]:
  """OpenSpiel's board, top row first (its string prints the top row first)."""
  return [[SPIEL_MARKS[c] for c in row] for row in str(state).split()]


@functools.cache
def _step(game):
  return jax.jit(game.step)


def _play(game, moves):
  state = game.init(KEY)
  for move in moves:
    state = _step(game)(state, move, KEY)
  return state


def _spiel_play(moves, **params):
  state = pyspiel.load_game("connect_four", params).new_initial_state()
  for move in moves:
    state.apply_action(move)
  return state


@pytest.mark.parametrize("rows,columns,batch", [(6, 7, 1000), (4, 5, 200)])
def test_random_playouts_match_open_spiel(rows, columns, batch):
  game = games.make("connect_four", rows=rows, columns=columns)
  trajectory = jax.device_get(opponents.random_playouts(game, jax.random.key(rows), batch))
  cells = trajectory.data.cells  # [max_turns + 2, batch, rows, columns]
  spiel_game = pyspiel.load_game("connect_four", {"rows": rows, "columns": columns})
  lengths, outcomes = [], set()
  for b in range(batch):
    spiel = spiel_game.new_initial_state()
    for t in range(game.max_turns + 2):
      assert trajectory.terminated[t, b] == spiel.is_terminal(), (b, t)
      assert cells[t, b].tolist() == _spiel_cells(spiel), (b, t)
      np.testing.assert_array_equal(trajectory.rewards[t, b], spiel.returns(), err_msg=(b, t))
      legal = np.flatnonzero(trajectory.legal_action_mask[t, b]).tolist()
      if spiel.is_terminal():
        assert legal == [] and trajectory.turn[t, b] == spiel.move_number(), (b, t)
        lengths.append(t)
        outcomes.add(tuple(spiel.returns()))
        break
      assert legal == spiel.legal_actions(), (b, t)
      assert trajectory.current_player[t, b] == spiel.current_player(), (b, t)
      column = np.flatnonzero((cells[t + 1, b] != cells[t, b]).any(0))
      assert len(column) == 1, (b, t)
      spiel.apply_action(int(column[0]))
    else:
      pytest.fail(f"game {b} did not end")
  assert {(1.0, -1.0), (-1.0, 1.0)} <= outcomes  # Both players won some games.
  assert min(lengths) == 7 and max(lengths) > 14  # The quickest win, and long games.


@pytest.mark.parametrize("name,moves,winner", [
    ("vertical", (3, 4, 3, 4, 3, 4, 3), 0),
    ("horizontal", (0, 0, 1, 1, 2, 2, 3), 0),
    ("horizontal, player 1", (6, 0, 6, 1, 5, 2, 6, 3), 1),
    ("diagonal /", (0, 1, 1, 2, 2, 3, 2, 3, 3, 6, 3), 0),
    ("diagonal \\", (6, 5, 5, 4, 4, 3, 4, 3, 3, 0, 3), 0),
    ("diagonal \\ from the top row, player 1",
     (4, 0, 2, 0, 4, 3, 5, 5, 4, 4, 3, 5, 3, 2, 4, 4, 2, 0, 0, 2, 3, 1, 6, 3, 2, 2), 1),
])
def test_hand_wins(name, moves, winner):
  state = GAME.init(KEY)
  for i, move in enumerate(moves):
    assert not state.terminated, (name, i)
    state = _step(GAME)(state, move, KEY)
  spiel = _spiel_play(moves)
  assert spiel.is_terminal() and state.terminated and not state.invalid, name
  expected = [1.0, -1.0] if winner == 0 else [-1.0, 1.0]
  assert spiel.returns() == expected, name
  np.testing.assert_array_equal(state.rewards, expected, err_msg=name)
  assert not state.legal_action_mask.any() and int(state.turn) == len(moves)


def test_full_board_is_a_draw():
  spiel = _spiel_play(DRAW)
  assert spiel.is_terminal() and spiel.returns() == [0.0, 0.0]
  state = _play(GAME, DRAW[:-1])
  assert not state.terminated and state.legal_action_mask.tolist() == [True] + [False] * 6
  state = _step(GAME)(state, DRAW[-1], KEY)
  assert state.terminated and not state.invalid and int(state.turn) == 42
  np.testing.assert_array_equal(state.rewards, [0.0, 0.0])
  assert np.asarray(state.data.cells).tolist() == _spiel_cells(spiel)


def test_full_column_is_illegal_and_forfeits():
  state = _play(GAME, (2,) * 6)
  assert not state.legal_action_mask[2] and state.legal_action_mask.sum() == 6
  after = _step(GAME)(state, 2, KEY)
  assert after.terminated and after.invalid
  np.testing.assert_array_equal(after.rewards, [api.TRAIN_INVALID_REWARDS[0],
                                                api.TRAIN_INVALID_REWARDS[1]])


def test_options_are_checked():
  with pytest.raises(ValueError, match="rows and columns"):
    games.make("connect_four", rows=3)
  with pytest.raises(ValueError, match="rows and columns"):
    games.make("connect_four", columns=11)


INTRO_0 = """\
You are Player 0 in Connect Four, playing 'X' (Player 0 moves first).
Rules:
- The board has 6 rows and 7 columns; the columns are numbered 0-6 from left to right.
- On your turn, drop one of your pieces into a column that is not full: it falls to the lowest \
empty cell of that column.
- The first player with four pieces in a row (horizontally, vertically or diagonally) wins; \
a full board is a draw.
- Write a move as the column number, for example [3].
Current board (top row first; X = Player 0, O = Player 1, . = empty):
 0 1 2 3 4 5 6
"""


def test_render_text_examples():
  empty_rows = " . . . . . . .\n" * 6
  initial = GAME.init(KEY)
  moves = "Your legal moves: [0], [1], [2], [3], [4], [5], [6]"
  assert GAME.render_text(initial, 0) == INTRO_0 + empty_rows + moves
  assert GAME.render_text(initial, 1).startswith(
      "You are Player 1 in Connect Four, playing 'O' (Player 0 moves first).\nRules:\n")

  state = _play(GAME, (3, 3, 4, 2, 0) + (6,) * 6)
  board = (" . . . . . . X\n"
           " . . . . . . O\n"
           " . . . . . . X\n"
           " . . . . . . O\n"
           " . . . O . . X\n"
           " X . O X X . O\n")
  text = GAME.render_text(state, 1)
  assert text.endswith("Current board (top row first; X = Player 0, O = Player 1, . = empty):\n"
                       " 0 1 2 3 4 5 6\n" + board
                       + "Your legal moves: [0], [1], [2], [3], [4], [5]")
  assert GAME.phrase_text(GAME.render(state)) == text  # Player 1 is to move.

  won = _play(GAME, (3, 4, 3, 4, 3, 4, 3))
  assert GAME.render_text(won, 0).endswith(" . . . X . . .\n" + " . . . X O . .\n" * 3
                                           + "The game is over.")
  assert GAME.phrase_text(GAME.render(won, 1)) == GAME.render_text(won, 1)


def test_rules_false_keeps_the_board_and_legend():
  game = games.make("connect_four", rules=False, rows=4, columns=5)
  text = game.render_text(game.init(KEY), 1)
  assert text == ("You are Player 1 in Connect Four, playing 'O' (Player 0 moves first).\n"
                  "Current board (top row first; X = Player 0, O = Player 1, . = empty):\n"
                  " 0 1 2 3 4\n" + " . . . . .\n" * 4
                  + "Your legal moves: [0], [1], [2], [3], [4]")
  state = _play(game, (2, 2, 4))
  assert game.phrase_text(game.render(state)) == game.render_text(state, 1)
  assert game.render_text(state, 1).endswith(" . . O . .\n . . X . X\nYour legal moves: [0], "
                                             "[1], [2], [3], [4]")


def test_prompt_size():
  assert GAME.max_observation_phrases == 1 + 42 + 1 + 7
  assert len(GAME.phrases) == 1 + 2 + 6 + 2 + 14
  assert max(len(p) for p in GAME.phrases) == len(INTRO_0)


def test_lines():
  lines = connect_four.lines(6, 7)
  assert lines.shape == (69, 4)  # 24 horizontal, 21 vertical, 12 + 12 diagonal.
  assert len({tuple(sorted(line)) for line in lines.tolist()}) == 69
  assert connect_four.cell_lines(6, 7).shape == (42, 13, 4)  # 4 + 3 + 3 + 3 at most.


# --- Opponents. ---

SEARCH = opponents.get("connect_four", "scripted")
GREEDY = opponents.get("connect_four", "greedy")
RANDOM = opponents.uniform_random
GAMES_PER_SEAT = 200
# (player 0, player 1) of each block of GAMES_PER_SEAT games in `_matches`; ordered so that the
# search's blocks are contiguous for each player (it is traced once per half-move).
PAIRINGS = ((RANDOM, SEARCH), (GREEDY, SEARCH), (SEARCH, RANDOM), (SEARCH, GREEDY),
            (GREEDY, RANDOM), (RANDOM, GREEDY))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _matches(pairings, key, games_per_pairing):
  """Final states of games_per_pairing games of each (player 0, player 1) pairing, in blocks.

  Players alternate strictly and a step after the end is a no-op, so each half-move applies the
  policy of the player to move to each block (one call per run of blocks with the same policy): a
  policy runs only on its own turns.
  """
  n, blocks = games_per_pairing, len(pairings)
  init_key, play_key = jax.random.split(key)
  states = jax.vmap(GAME.init)(jax.random.split(init_key, blocks * n))

  def half_move(states, key, player):
    keys = jax.random.split(key, blocks * n)
    runs = [(policy, len(list(run))) for policy, run in
            itertools.groupby(pairing[player] for pairing in pairings)]
    starts = np.cumsum([0] + [size for _, size in runs]) * n
    actions = [jax.vmap(policy)(jax.tree.map(lambda x: x[start:start + size * n], states),
                                keys[start:start + size * n])
               for (policy, size), start in zip(runs, starts)]
    return jax.vmap(GAME.step)(states, jnp.concatenate(actions), keys)

  def round_(states, key):
    key_0, key_1 = jax.random.split(key)
    return half_move(half_move(states, key_0, 0), key_1, 1), None

  rounds = (GAME.max_turns + 1) // 2
  states, _ = jax.lax.scan(round_, states, jax.random.split(play_key, rounds))
  return states


@functools.cache
def _match_results():
  """(wins, draws, losses) of player 0 in each block of PAIRINGS, and distinct final boards."""
  final = jax.device_get(_matches(PAIRINGS, jax.random.key(0), GAMES_PER_SEAT))
  assert final.terminated.all() and not final.invalid.any()
  results = []
  for b in range(len(PAIRINGS)):
    rewards = final.rewards[b * GAMES_PER_SEAT:(b + 1) * GAMES_PER_SEAT, 0]
    results.append((int((rewards > 0).sum()), int((rewards == 0).sum()),
                    int((rewards < 0).sum())))
  boards = final.data.cells.reshape(len(PAIRINGS), GAMES_PER_SEAT, -1)
  return results, [len({c.tobytes() for c in block}) for block in boards]


def test_opponent_names():
  assert opponents.names("connect_four") == ("random", "scripted", "greedy")
  assert opponents.get("connect_four", "random") is opponents.uniform_random
  assert GREEDY is opponents.connect_four_greedy


@pytest.mark.parametrize("policy,other,min_win_rate", [
    ("search", "random", 0.97), ("search", "greedy", 0.95), ("greedy", "random", 0.9)])
def test_strength(policy, other, min_win_rate):
  """Win rates from both seats over GAMES_PER_SEAT games each (measured: search wins 200/200
  against random and 200/200 against greedy as either player; greedy wins 197/200 as Player 0
  and 193/200 as Player 1 against random)."""
  results, distinct = _match_results()
  names = ("search", "random", "greedy")
  block = {(PAIRINGS[b][0], PAIRINGS[b][1]): b for b in range(len(PAIRINGS))}
  named = dict(zip(names, (SEARCH, RANDOM, GREEDY)))
  for seat in (0, 1):
    pair = (named[policy], named[other]) if seat == 0 else (named[other], named[policy])
    b = block[pair]
    wins, draws, losses = results[b] if seat == 0 else results[b][::-1]
    print(f"{policy} as Player {seat} vs {other}: W/D/L = {wins}/{draws}/{losses} "
          f"of {GAMES_PER_SEAT}")
    assert wins >= min_win_rate * GAMES_PER_SEAT, (seat, wins, draws, losses)
    assert distinct[b] > GAMES_PER_SEAT // 2  # Random tie-breaking: the games differ.


@functools.cache
def _batched(policy):
  return jax.jit(jax.vmap(policy, in_axes=(None, 0)))


def _actions(policy, moves, count=32, game=GAME):
  keys = jax.random.split(jax.random.key(1), count)
  return set(np.asarray(_batched(policy)(_play(game, moves), keys)).tolist())


@pytest.mark.parametrize("policy", [SEARCH, GREEDY], ids=["search", "greedy"])
def test_takes_a_win_and_blocks_a_loss(policy):
  # Player 0 to move wins in column 3 rather than block player 1's three in column 2.
  assert _actions(policy, (3, 2, 3, 2, 3, 2)) == {3}
  # Player 1 must block player 0's three on the bottom row, open at 3 only.
  assert _actions(policy, (0, 6, 1, 6, 2)) == {3}
  # Player 1 must block the vertical three in column 5.
  assert _actions(policy, (5, 0, 5, 1, 5)) == {5}
  # The end of the game: action 0 (as the random opponent).
  assert _actions(policy, (3, 4, 3, 4, 3, 4, 3)) == {0}


def test_search_makes_and_stops_forks():
  # Player 0 to move: 2 and 3 on the bottom; 1 or 4 makes a three open at both ends.
  assert _actions(SEARCH, (2, 2, 3, 3)) == {1, 4}
  # Player 1 to move must stop that by playing next to the pair.
  assert _actions(SEARCH, (2, 6, 3)) == {1, 4}
  # On another board: player 1 must block at 3.
  assert _actions(SEARCH, (0, 4, 1, 4, 2), game=games.make("connect_four", rows=4, columns=5)
                  ) == {3}


def test_search_is_safe_on_random_positions():
  """On every live position of random games, checked on OpenSpiel: the search wins at once when
  it can, and otherwise never leaves the other player an immediate win when a move avoids it."""
  batch = 16
  trajectory = jax.device_get(opponents.random_playouts(GAME, jax.random.key(11), batch))
  flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), trajectory)
  keys = jax.random.split(jax.random.key(12), flat.turn.shape[0])
  actions = np.asarray(jax.jit(jax.vmap(SEARCH))(flat, keys)).reshape(-1, batch)
  cells = trajectory.data.cells
  spiel_game = pyspiel.load_game("connect_four")
  counts = {"win": 0, "avoid a loss": 0}
  for b in range(batch):
    spiel = spiel_game.new_initial_state()
    for t in range(GAME.max_turns):
      if spiel.is_terminal():
        break
      player = spiel.current_player()
      children = {a: spiel.child(a) for a in spiel.legal_actions()}
      wins = [a for a, child in children.items()
              if child.is_terminal() and child.returns()[player] == 1]
      safe = [a for a, child in children.items() if child.is_terminal() or not any(
          child.child(c).is_terminal() and child.child(c).returns()[player] == -1
          for c in child.legal_actions())]
      if wins:
        counts["win"] += 1
        assert actions[t, b] in wins, (str(spiel), wins, actions[t, b])
      elif safe:
        counts["avoid a loss"] += len(safe) < len(children)
        assert actions[t, b] in safe, (str(spiel), safe, actions[t, b])
      spiel.apply_action(int(np.flatnonzero((cells[t + 1, b] != cells[t, b]).any(0))[0]))
  assert counts["win"] >= 10 and counts["avoid a loss"] >= 10, counts
