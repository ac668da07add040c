"""Matrix games: the 144 ordinal 2x2 types, named tables, rules, prompts, opponents, statistics."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import games
from games import checks
from games import matrix_game
from games import opponents
from games import ordinal_2x2

C, D = 0, 1  # cooperate, defect
KEY = jax.random.key(0)


@functools.partial(jax.jit, static_argnums=0)
def _step(game, state, action):
  return game.step(state, action, KEY)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _render(game, state, player):
  return game.render(state, player)


def _play(game, moves, state=None):
  """Steps `moves` (action ids, Player 0 first in each round) from the initial state."""
  state = game.init(KEY) if state is None else state
  for move in moves:
    state = _step(game, state, jnp.int32(move))
  return state


def _stack(states):
  return jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *states))


# --- The 144 types. ---


def test_576_pairs_fall_into_144_classes_of_4():
  types = ordinal_2x2.ordinal_types()
  assert types.pairs.shape == (576, 8) and len({tuple(p) for p in types.pairs}) == 576
  assert types.canonical.shape == (144, 8)
  np.testing.assert_array_equal(np.bincount(types.type_of, minlength=144), 4)
  for index, canonical in enumerate(types.canonical):
    # Each class is exactly the orbit of its canonical member under swapping rows / columns.
    orbit = {tuple(np.concatenate([canonical[:4][s], canonical[4:][s]]))
             for s in ordinal_2x2._SYMMETRIES}
    members = {tuple(p) for p in types.pairs[types.type_of == index]}
    assert orbit == members and len(orbit) == 4
    assert canonical[0] == 4  # The row player's best outcome is top-left.
  # Numbered in lexicographic order of the canonical members.
  assert [tuple(c) for c in types.canonical] == sorted(tuple(c) for c in types.canonical)
  assert tuple(types.canonical[0]) == (4, 1, 2, 3, 1, 2, 3, 4)
  assert tuple(types.canonical[143]) == (4, 3, 2, 1, 4, 3, 2, 1)


def test_every_ordered_pair_lands_in_exactly_one_class():
  types = ordinal_2x2.ordinal_types()
  orbits = [{tuple(int(x) for x in np.concatenate([c[:4][s], c[4:][s]]))
             for s in ordinal_2x2._SYMMETRIES} for c in types.canonical]
  perms = list(itertools.permutations((1, 2, 3, 4)))
  for a, b in itertools.product(perms, perms):
    found = [k for k, orbit in enumerate(orbits) if a + b in orbit]
    assert found == [ordinal_2x2.ordinal_type(ordinal_2x2.flat_to_table(np.array(a + b)))]


def test_nash_equilibrium_counts_over_the_144_types():
  tables = ordinal_2x2.flat_to_table(ordinal_2x2.ordinal_types().canonical)
  counts = matrix_game.pure_nash(tables).sum((1, 2))
  # 108 types with one pure equilibrium, 18 with two, 18 cyclic ones with none.
  np.testing.assert_array_equal(np.bincount(counts), [18, 108, 18])


def test_named_games_map_to_one_class_each():
  ordinal = ("prisoners_dilemma", "chicken", "stag_hunt", "deadlock", "harmony",
             "battle_of_the_sexes")
  kinds = {name: ordinal_2x2.ordinal_type(matrix_game.KNOWN_GAMES[name][0]) for name in ordinal}
  assert None not in kinds.values() and len(set(kinds.values())) == len(ordinal)
  # Cardinal tables with the same orders are the same type; the rg name gives that class.
  assert ordinal_2x2.ordinal_type(matrix_game.PRISONERS_DILEMMA_5310) == kinds["prisoners_dilemma"]
  for name, kind in kinds.items():
    rg = games.make("matrix_game", payoffs=f"rg{kind:03d}")
    assert ordinal_2x2.ordinal_type(rg.table) == kind
    assert int(games.make("matrix_game", payoffs=name).init(KEY).data.kind[0, 0]) == kind
  assert ordinal_2x2.ordinal_type(matrix_game.KNOWN_GAMES["matching_pennies"][0]) is None
  assert ordinal_2x2.ordinal_type(matrix_game.BATTLE_OF_THE_SEXES_210) is None  # ties


def _nash_cells(table):
  return sorted(map(tuple, np.argwhere(matrix_game.pure_nash(np.asarray(table)))))


def test_pure_nash_equilibria_by_hand():
  known = {name: table for name, (table, _) in matrix_game.KNOWN_GAMES.items()}
  assert _nash_cells(known["prisoners_dilemma"]) == [(D, D)]
  assert _nash_cells(matrix_game.PRISONERS_DILEMMA_5310) == [(D, D)]
  assert _nash_cells(known["stag_hunt"]) == [(C, C), (D, D)]
  assert _nash_cells(known["chicken"]) == [(C, D), (D, C)]
  assert _nash_cells(known["deadlock"]) == [(D, D)]
  assert _nash_cells(known["harmony"]) == [(C, C)]
  assert _nash_cells(known["battle_of_the_sexes"]) == [(0, 0), (1, 1)]
  assert _nash_cells(known["matching_pennies"]) == []
  # An ordinal matching-pennies: the row player wants to match, the column player to differ.
  cyclic = ordinal_2x2.flat_to_table(np.array([4, 1, 2, 3, 1, 4, 3, 2]))
  assert _nash_cells(cyclic) == []
  kind = ordinal_2x2.ordinal_type(cyclic)
  assert _nash_cells(ordinal_2x2.flat_to_table(ordinal_2x2.ordinal_types().canonical[kind])) == []


# --- Options. ---


@pytest.mark.parametrize("options, message", [
    ({"payoffs": "poker"}, "payoffs='poker' is unknown"),
    ({"payoffs": "rg144"}, "payoffs='rg144' is unknown"),
    ({"payoffs": (((1, 2), (3, 4)), ((5, 6),))}, "payoffs must be"),
    ({"payoffs": (((1, 2), (3, "x")),)}, "payoffs must be"),
    ({"payoffs": (((1, 2, 3),),)}, "payoffs must be"),
    ({"payoffs": (((1, float("nan")),),)}, "payoffs must be"),
    ({"action_names": ("a",)}, "action_names must be 2 strings"),
    ({"action_names": ("Up", "up")}, "action_names must be non-empty, distinct"),
    ({"rounds": 0}, "rounds must be"),
    ({"hidden_rounds": True}, "hidden_rounds=True needs rounds > 1"),
    ({"payoffs": "family:cyclic"}, "family:no_pure_ne"),  # The message lists the families.
    ({"payoffs": "family:all", "sequential": True}, "sequential=True needs"),
    ({"payoffs": "stag_hunt", "rounds": 3, "sequential": True}, "sequential=True needs"),
    ({"payoffs": "family:all", "rounds": 3, "sequential": 1}, "sequential must be a bool"),
    ({"payoffs": "family:all", "parallel": 5}, "parallel must be an integer in"),
    ({"payoffs": "stag_hunt", "parallel": 2}, "parallel=2 needs"),
    ({"payoffs": "family:all", "parallel": 2, "action_names": ("x/y", "z")}, "must not contain"),
    ({"payoffs": (tuple((j ** 0.5, j) for j in range(20)),), "rounds": 10}, "running totals"),
])
def test_options_are_validated(options, message):
  with pytest.raises(ValueError, match=message):
    games.make("matrix_game", **options)


def test_repeated_games_validate_their_tables():
  with pytest.raises(ValueError, match="Prisoner's Dilemma"):
    games.make("iterated_prisoners_dilemma", payoffs="stag_hunt")
  with pytest.raises(ValueError, match="2x2"):
    games.make("repeated_battle_of_the_sexes", payoffs=(((1, 1), (0, 0), (2, 2)),))
  lists = games.make("matrix_game", payoffs=[[[1, 0], [0, 1]], [[0, 1], [1, 0]]])
  assert hash(lists) == hash(games.make("matrix_game", payoffs=(((1, 0), (0, 1)),
                                                                ((0, 1), (1, 0)))))


def test_defaults_and_zero_sum():
  ipd = games.make("iterated_prisoners_dilemma")
  assert ipd.rounds == 5 and ipd.actions == ("cooperate", "defect") and not ipd.zero_sum
  bos = games.make("repeated_battle_of_the_sexes")
  assert bos.rounds == 5 and bos.actions == ("opera", "football")
  pennies = games.make("matrix_game", payoffs="matching_pennies", rounds=2)
  assert pennies.zero_sum
  np.testing.assert_allclose(_play(pennies, (0, 0, 0, 1)).rewards, [0, 0], atol=1e-6)
  np.testing.assert_allclose(_play(pennies, (0, 0, 1, 1)).rewards, [1, -1], atol=1e-6)
  assert games.make("matrix_game", payoffs="rg007").actions == ("A", "B")
  assert not games.make("matrix_game", payoffs="family:all").zero_sum


# --- Rules and rewards. ---


def test_prisoners_dilemma_payoffs_and_reward_scaling_over_3_rounds():
  game = games.make("iterated_prisoners_dilemma", rounds=3)
  state, previous = game.init(KEY), (0, 0)
  for moves, totals in [((C, C), (3, 3)), ((C, D), (3, 8)), ((D, D), (4, 9))]:
    assert not state.terminated and (np.asarray(state.rewards) == 0).all()
    state = _play(game, moves[:1], state)
    assert int(state.current_player) == 1
    np.testing.assert_array_equal(state.data.totals, previous)  # Paid once both have moved.
    state = _play(game, moves[1:], state)
    np.testing.assert_array_equal(state.data.totals, totals)
    previous = totals
  assert state.terminated and int(state.turn) == 6
  # Totals range over [3 * 0, 3 * 5] = [0, 15]: 2 * 4 / 15 - 1 and 2 * 9 / 15 - 1.
  np.testing.assert_allclose(state.rewards, [-7 / 15, 3 / 15], rtol=1e-6)


def test_family_draws_every_type_and_shows_its_table():
  game = games.make("matrix_game", payoffs="family:all")
  states = jax.vmap(game.init)(jax.random.split(KEY, 4000))
  kinds = np.asarray(states.data.kind)[:, 0, 0]
  assert set(kinds.tolist()) == set(range(144))
  table = np.asarray(states.data.payoffs[0, 0, 0]).astype(int)
  assert ordinal_2x2.ordinal_type(table) == kinds[0]
  text = game.render_text(jax.tree.map(lambda x: x[0], states), 1)
  assert (f"If you play A and they play B: you get {table[1, 0, 1]}, "
          f"they get {table[1, 0, 0]}.\n") in text
  # Ranks 1-4 in every type: the rewards of 4 and 1 are +1 and -1.
  state = _play(game, (0, 0), jax.tree.map(lambda x: x[0], states))
  np.testing.assert_allclose(state.rewards, (table[0, 0] - 1) / 1.5 - 1, rtol=1e-6)


@pytest.mark.parametrize("family, pairs, kinds", [
    ("all", 576, 144), ("one_pure_ne", 432, 108), ("two_pure_ne", 72, 18),
    ("no_pure_ne", 72, 18), ("win_win", 144, 36), ("symmetric", 24, 12)])
def test_families_draw_their_types_uniformly(family, pairs, kinds):
  types = ordinal_2x2.ordinal_types()
  members = matrix_game.family_pairs(family)
  assert len(members) == pairs and len(set(types.type_of[members].tolist())) == kinds
  # Equally many layouts of each type, so a uniform pair is a uniform type.
  assert len(set(np.bincount(types.type_of[members]).tolist()) - {0}) == 1
  tables = ordinal_2x2.flat_to_table(types.pairs[members])
  equilibria = matrix_game.pure_nash(tables).sum((1, 2))
  expected = {"one_pure_ne": 1, "two_pure_ne": 2, "no_pure_ne": 0}.get(family)
  if expected is not None:
    assert (equilibria == expected).all()
  if family == "win_win":
    assert ((tables[..., 0] == 4) & (tables[..., 1] == 4)).any((1, 2)).all()
  if family == "symmetric":
    np.testing.assert_array_equal(tables[..., 0], np.swapaxes(tables[..., 1], 1, 2))
  game = games.make("matrix_game", payoffs=f"family:{family}")
  states = jax.vmap(game.init)(jax.random.split(KEY, 3000))
  drawn = np.asarray(states.data.payoffs)[:, 0, 0].astype(int)  # [B, 2, 2, 2]
  flat = np.concatenate([drawn[..., 0].reshape(-1, 4), drawn[..., 1].reshape(-1, 4)], 1)
  allowed = {tuple(p) for p in types.pairs[members]}
  assert {tuple(f) for f in flat} <= allowed
  assert set(np.asarray(states.data.kind)[:, 0, 0].tolist()) == set(
      types.type_of[members].tolist())


def test_sequential_games_draw_a_table_per_round():
  game = games.make("matrix_game", payoffs="family:all", rounds=3, sequential=True)
  states = jax.vmap(game.init)(jax.random.split(KEY, 200))
  kinds = np.asarray(states.data.kind)[..., 0]
  assert (kinds[:, 0] != kinds[:, 1]).mean() > 0.9  # 143/144 expected to differ.
  state = jax.tree.map(lambda x: x[0], states)
  tables = np.asarray(state.data.payoffs)[:, 0].astype(int)  # [3, 2, 2, 2]
  for round_index, moves in enumerate([(), (0, 1), (1, 1)]):
    state = _play(game, moves, state)
    text = game.render_text(state, 0)
    current = tables[round_index]
    assert "You are Player 0 in a sequence of two-player matrix games of 3 rounds." in text
    assert (f"If you play B and they play A: you get {current[1, 0, 0]}, they get "
            f"{current[1, 0, 1]}.\n") in text
    assert game.phrase_text(_render(game, state, 0)) == text
  assert ("Round 2: you played B, they played B; you got "
          f"{tables[1, 1, 1, 0]}, they got {tables[1, 1, 1, 1]}.\n") in text
  state = _play(game, (0, 0), state)
  total = tables[0, 0, 1, 0] + tables[1, 1, 1, 0] + tables[2, 0, 0, 0]
  # Ranks 1-4 in each round: totals range over [3, 12].
  np.testing.assert_allclose(state.rewards[0], 2 * (total - 3) / 9 - 1, rtol=1e-6)
  np.testing.assert_array_equal(state.data.totals[0], total)


def test_parallel_games_answer_one_move_per_table():
  game = games.make("matrix_game", payoffs="family:all", parallel=2, rounds=2)
  assert game.actions == ("A/A", "A/B", "B/A", "B/B") and game.num_actions == 4
  np.testing.assert_array_equal(game.table_moves(np.array([0, 1, 2, 3, -1])),
                                [[0, 0], [0, 1], [1, 0], [1, 1], [-1, -1]])
  state = game.init(jax.random.key(3))
  tables = np.asarray(state.data.payoffs).astype(int)  # [2 rounds, 2 tables, 2, 2, 2]
  np.testing.assert_array_equal(tables[0], tables[1])  # Not sequential: the same two tables.
  assert int(state.data.kind[0, 0]) != int(state.data.kind[0, 1])  # Different with this key.
  np.testing.assert_array_equal(state.legal_action_mask, [True] * 4)
  state = _play(game, (2, 1), state)  # Row: B in game 1, A in game 2; column: A, then B.
  gains = tables[0, 0, 1, 0] + tables[0, 1, 0, 1]
  np.testing.assert_array_equal(state.data.totals, gains)
  text = game.render_text(state, 1)
  assert text.startswith("You are Player 1 in 2 two-player matrix games played side by side for "
                         "2 rounds.\n")
  assert "joined by '/'" in text and "Game 2: If you play" in text
  assert ("Round 1:\nGame 1: you played A, they played B; you got "
          f"{tables[0, 0, 1, 0, 1]}, they got {tables[0, 0, 1, 0, 0]}.\n"
          "Game 2: you played B, they played A; you got "
          f"{tables[0, 1, 0, 1, 1]}, they got {tables[0, 1, 0, 1, 0]}.\n") in text
  assert text.endswith("Your legal moves: [A/A], [A/B], [B/A], [B/B]")
  assert game.phrase_text(_render(game, state, 1)) == text
  state = _play(game, (3, 3), state)
  total = gains + tables[1, 0, 1, 1] + tables[1, 1, 1, 1]
  # Each round pays the sum of two ranks (2-8); two rounds range over [4, 16].
  np.testing.assert_allclose(state.rewards, 2 * (total - 4) / 12 - 1, rtol=1e-6)
  # Each table counts on its own in the statistics: the Prisoner's Dilemma (equilibrium move:
  # defect) beside the Stag Hunt (both moves in an equilibrium), the same moves as above.
  known = [np.asarray(matrix_game.KNOWN_GAMES[name][0], np.float32)
           for name in ("prisoners_dilemma", "stag_hunt")]
  state = game.init(KEY)
  state = _play(game, (2, 1, 3, 3), state.replace(data=state.data.replace(
      payoffs=jnp.broadcast_to(jnp.asarray(known), (2, 2, 2, 2, 2)))))
  finals = _stack([state, state])
  # Seat 0 played (D, C) then (D, D): all equilibrium moves; seat 1 (C, D) then (D, D): 3 of 4.
  assert game.eval_stats(finals, np.array([0, -1]))["nash_action_rate"] == 1.0
  assert game.eval_stats(finals, np.array([1, -1]))["nash_action_rate"] == pytest.approx(3 / 4)


def test_non_square_tables_give_each_player_its_moves():
  game = games.make("matrix_game", payoffs=(((1, 0), (0, 2)), ((3, 1), (2, 2)), ((0, 0), (1, 1))),
                    action_names=("up", "mid", "down"))
  state = game.init(KEY)
  np.testing.assert_array_equal(state.legal_action_mask, [True, True, True])
  state = _play(game, (2,), state)
  np.testing.assert_array_equal(state.legal_action_mask, [True, True, False])
  assert game.render_text(state, 1).endswith("Your legal moves: [up], [mid]")
  state = _play(game, (1,), state)
  np.testing.assert_allclose(state.rewards, [-1 / 3, 0], atol=1e-6)  # 1 in [0, 3], 1 in [0, 2]


# --- Prompts. ---


def test_one_shot_prompt():
  game = games.make("matrix_game")
  assert game.render_text(game.init(KEY), 1) == (
      "You are Player 1 in a one-shot two-player matrix game.\n"
      "Both players choose a move at the same time: neither sees the other's choice before "
      "choosing. Your goal is the highest payoff for yourself.\n"
      "The payoffs:\n"
      "If you play cooperate and they play cooperate: you get 3, they get 3.\n"
      "If you play cooperate and they play defect: you get 1, they get 4.\n"
      "If you play defect and they play cooperate: you get 4, they get 1.\n"
      "If you play defect and they play defect: you get 2, they get 2.\n"
      "Your legal moves: [cooperate], [defect]")
  assert game.render_text(_play(game, (C, D)), 0).endswith(
      "Result: you played cooperate, they played defect; you got 1, they got 4.\n"
      "The game is over.")


@pytest.mark.parametrize("hidden", [False, True])
def test_known_and_hidden_rounds(hidden):
  game = games.make("iterated_prisoners_dilemma", hidden_rounds=hidden)
  state = _play(game, (C, D, D, D))
  text = game.render_text(state, 0)
  assert ("of an unknown number of rounds" in text) == hidden
  assert ("of 5 rounds" in text) == (not hidden)
  assert text.endswith(
      "Round 1: you played cooperate, they played defect; you got 0, they got 5.\n"
      "Round 2: you played defect, they played defect; you got 1, they got 1.\n"
      "Total so far: you 1, they 6.\n"
      + ("This is round 3.\n" if hidden else "This is round 3 of 5.\n")
      + "Your legal moves: [cooperate], [defect]")
  assert ("5" not in text.split("\n", 1)[0]) == hidden


def test_player_1_does_not_see_the_current_choice():
  game = games.make("iterated_prisoners_dilemma")
  after = [_play(game, (C, D, move)) for move in (C, D)]
  for player in (0, 1):
    ids = [np.asarray(_render(game, s, player)) for s in after]
    np.testing.assert_array_equal(ids[0], ids[1])
  assert game.phrase_text(_render(game, after[0], 1)) == game.render_text(after[0], 1)


def test_extra_configurations_pass_the_render_and_playout_checks():
  for options in ({"payoffs": "family:all", "rounds": 3},
                  {"payoffs": "family:no_pure_ne", "rounds": 3, "sequential": True,
                   "hidden_rounds": True},
                  {"payoffs": "family:all", "parallel": 3},
                  {"payoffs": "family:two_pure_ne", "parallel": 2, "rounds": 2,
                   "sequential": True, "action_names": ("up", "down")},
                  {"payoffs": (((1, 0), (0, 2.5)), ((3, 1), (2, 2)), ((0, 0), (1.5, 1))),
                   "action_names": ("up", "mid", "down"), "rounds": 2, "hidden_rounds": True}):
    game = games.make("matrix_game", **options)
    checks.check_random_playouts(game, batch=16)  # One compiled playout serves both checks.
    checks.check_render(game, batch=16)


# --- Opponents. ---

_IPD = "iterated_prisoners_dilemma"


@functools.cache
def _jitted_opponent(game_name, opponent):
  return jax.jit(opponents.get(game_name, opponent))


def _opponent_moves(game_name, opponent, moves, seat):
  """The opponent's move in each round as `seat`, the other seat playing `moves`."""
  game = games.make(game_name, rounds=8)
  policy = _jitted_opponent(game_name, opponent)
  state, played = game.init(KEY), []
  for move in moves + [0]:
    if seat == 1:
      state = _play(game, (move,), state)
    mine = int(policy(state, KEY))
    played.append(mine)
    state = _play(game, (mine, move) if seat == 0 else (mine,), state)
  return played


def test_opponent_names():
  assert opponents.names(_IPD) == ("random", "always_cooperate", "always_defect", "tit_for_tat",
                                   "grim_trigger", "alternate")
  assert set(opponents.names("repeated_battle_of_the_sexes")) == {
      "random", "always_first", "always_second", "stubborn", "tit_for_tat", "alternate"}
  assert "tit_for_tat" in opponents.names("matrix_game")


@pytest.mark.parametrize("seat", [0, 1])
def test_scripted_opponents(seat):
  other = [C, D, D, C, C, D]
  assert _opponent_moves(_IPD, "tit_for_tat", other, seat) == [C] + other
  assert _opponent_moves(_IPD, "grim_trigger", other, seat) == [C, C] + [D] * 5
  assert _opponent_moves(_IPD, "grim_trigger", [C, C, C], seat) == [C] * 4
  assert _opponent_moves(_IPD, "alternate", other, seat) == [C, D, C, D, C, D, C]
  assert _opponent_moves(_IPD, "always_defect", other, seat) == [D] * 7
  assert _opponent_moves(_IPD, "always_cooperate", other, seat) == [C] * 7
  bos = "repeated_battle_of_the_sexes"
  assert _opponent_moves(bos, "stubborn", [0, 1], seat) == [seat] * 3
  assert _opponent_moves(bos, "tit_for_tat", [1, 0], seat) == [seat, 1, 0]


def test_scripted_opponents_play_every_table_of_a_parallel_game():
  game = games.make("matrix_game", payoffs="family:all", parallel=2, rounds=3)
  move = lambda name, moves: int(_jitted_opponent("matrix_game", name)(_play(game, moves), KEY))
  assert move("always_second", ()) == 3 and move("always_first", (3, 3)) == 0  # B/B, A/A
  assert move("tit_for_tat", ()) == 0 and move("tit_for_tat", (1, 2, 3)) == 1  # Copies A/B.
  assert move("grim_trigger", (0, 0)) == 0 and move("grim_trigger", (0, 2, 0, 0)) == 3
  assert move("alternate", ()) == 0 and move("alternate", (0, 0)) == 3


def test_the_equilibrium_opponent_by_hand():
  def moves(payoffs, history=(), keys=1, **options):
    game = games.make("matrix_game", payoffs=payoffs, **options)
    policy = _jitted_opponent("matrix_game", "equilibrium")
    state = _play(game, history)
    return np.array([int(policy(state, k)) for k in jax.random.split(KEY, keys)])
  assert moves("prisoners_dilemma").tolist() == [D] and moves("prisoners_dilemma", (C,)) == [D]
  # Stag Hunt: (C, C) pays both most. Chicken: each takes the equilibrium where it defects.
  assert moves("stag_hunt") == [C] and moves("stag_hunt", (D,)) == [C]
  assert moves("chicken") == [D] and moves("chicken", (C,)) == [D]
  # No pure equilibrium: the mixed one (1/2 for the row player, 1/3 for the column player's
  # first move in this table; 400 draws each, 4 standard deviations apart).
  cyclic = (((2, 0), (0, 1)), ((0, 1), (1, 0)))
  assert abs((moves(cyclic, keys=400) == 0).mean() - 1 / 2) < 0.1
  assert abs((moves(cyclic, (0,), keys=400) == 0).mean() - 1 / 3) < 0.1
  # Parallel tables: one equilibrium move each (Prisoner's Dilemma D, Stag Hunt C) -> "B/A".
  game = games.make("matrix_game", payoffs="family:all", parallel=2)
  state = game.init(KEY)
  known = [np.asarray(matrix_game.KNOWN_GAMES[name][0], np.float32)
           for name in ("prisoners_dilemma", "stag_hunt")]
  state = state.replace(data=state.data.replace(payoffs=jnp.asarray(known)[None]))
  assert int(_jitted_opponent("matrix_game", "equilibrium")(state, KEY)) == 2


def _mean_reward_against_random(game, name, games_per_seat):
  """The mean reward of opponent `name` against the uniform random one, over both seats."""
  policy, other = opponents.get("matrix_game", name), opponents.uniform_random

  def one(key, seat):
    init_key, key = jax.random.split(key)

    def turn(carry, _):
      state, key = carry
      key, act_key, step_key = jax.random.split(key, 3)
      mine = state.current_player == seat
      action = jnp.where(mine, policy(state, act_key), other(state, act_key))
      return (game.step(state, action, step_key), key), None

    (state, _), _ = jax.lax.scan(turn, (game.init(init_key), key), None, length=game.max_turns)
    return state.rewards[seat]

  keys = jax.random.split(KEY, 2 * games_per_seat)
  seats = jnp.repeat(jnp.arange(2), games_per_seat)
  return float(jax.jit(jax.vmap(one))(keys, seats).mean())


def test_the_equilibrium_opponent_beats_random_over_all_144_types():
  # Rewards map ranks 1-4 to -1, -1/3, 1/3, 1; measured: 0.30 for it, -0.01 for random itself
  # (2,000 games per seat each).
  game = games.make("matrix_game", payoffs="family:all")
  assert _mean_reward_against_random(game, "equilibrium", 1000) > 0.2
  assert abs(_mean_reward_against_random(game, "always_first", 1000)) < 0.1


def test_second_mover_ignores_the_current_choice():
  game = games.make(_IPD)
  for name in opponents.names(_IPD)[1:]:
    policy = opponents.get(_IPD, name)
    moves = [int(policy(_play(game, (C, D, first)), KEY)) for first in (C, D)]
    assert moves[0] == moves[1], name


# --- Evaluation statistics. ---


def test_eval_stats_on_hand_built_games():
  game = games.make(_IPD, rounds=3)
  finals = _stack([
      _play(game, (C, C, C, D, C, C)),  # Learner (seat 0): C C C, forgives round 2's defection.
      _play(game, (D, C, D, D, D, D)),  # Learner (seat 1): C D D, does not forgive round 1's.
      _play(game, (C, C, C, C, D, D)),  # Learner (seat 0): C C D, no round after the defection.
      _play(game, (C, C, D, games.INVALID_ACTION)),  # Learner (seat 1): C, then forfeits.
  ])
  stats = game.eval_stats(finals, np.array([0, 1, 0, 1]))
  assert stats["cooperation_rate"] == pytest.approx(7 / 10)
  assert stats["nash_action_rate"] == pytest.approx(3 / 10)  # defect, the equilibrium move
  assert stats["nash_outcome_rate"] == pytest.approx(3 / 10)  # (D, D) in 3 of 10 rounds
  assert stats["forgiveness_rate"] == pytest.approx(1 / 2)  # games 0 and 1 count
  # Self-play rows are skipped; tables without pure equilibria give no Nash statistics.
  assert game.eval_stats(finals, np.full(4, -1)) == {}
  pennies = games.make("matrix_game", payoffs="matching_pennies")
  assert pennies.eval_stats(_stack([_play(pennies, (0, 1))]), np.array([0])) == {}
  stag = games.make("matrix_game", payoffs="stag_hunt")
  stats = stag.eval_stats(_stack([_play(stag, (C, D)), _play(stag, (D, D))]), np.array([1, 1]))
  assert stats == {"nash_action_rate": 1.0, "nash_outcome_rate": 0.5, "cooperation_rate": 0.0}


def test_mixed_equilibria_by_hand():
  pennies = matrix_game.KNOWN_GAMES["matching_pennies"][0]
  np.testing.assert_allclose(matrix_game.mixed_nash(pennies), [0.5, 0.5])
  # Row payoffs [[2, 0], [0, 1]], column [[0, 1], [1, 0]]: the column player is indifferent when
  # the row player plays its first move with p: (1 - p) = p; the row player when 2 q = 1 - q.
  table = (((2, 0), (0, 1)), ((0, 1), (1, 0)))
  np.testing.assert_allclose(matrix_game.mixed_nash(table), [1 / 2, 1 / 3])
  assert np.isnan(matrix_game.mixed_nash(matrix_game.KNOWN_GAMES["stag_hunt"][0])).all()
  tables = ordinal_2x2.flat_to_table(ordinal_2x2.ordinal_types().pairs)
  probabilities = matrix_game.mixed_nash(tables)
  cyclic = ~matrix_game.pure_nash(tables).any((1, 2))
  assert ((probabilities[cyclic] > 0) & (probabilities[cyclic] < 1)).all()
  assert np.isnan(probabilities[~cyclic]).all()


def test_mixed_nash_gap_by_hand():
  pennies = games.make("matrix_game", payoffs="matching_pennies")
  heads, tails = 0, 1
  # Seat 0 plays heads in 4 of 4 games: f = 1, (1 - 1/2)^2 - 0 = 1/4. Seat 1 plays heads in 3 of
  # 4: (3/4 - 1/2)^2 - (3/4)(1/4)/3 = 0. Weighted: (4/4 + 4*0)/8 = 1/8.
  finals = _stack([_play(pennies, (heads, tails))] * 4
                  + [_play(pennies, (tails, heads))] * 3 + [_play(pennies, (heads, tails))])
  stats = pennies.eval_stats(finals, np.array([0] * 4 + [1] * 4))
  assert stats == {"mixed_nash_gap": pytest.approx(math.sqrt(1 / 8))}
  # One move of a group is not enough to count it.
  assert pennies.eval_stats(_stack([_play(pennies, (heads, tails))]), np.array([0])) == {}
  # The column player's equilibrium probability here is 1/3; it plays its first move twice.
  game = games.make("matrix_game", payoffs=(((2, 0), (0, 1)), ((0, 1), (1, 0))))
  stats = game.eval_stats(_stack([_play(game, (1, 0))] * 2), np.array([1, 1]))
  assert stats == {"mixed_nash_gap": pytest.approx(2 / 3)}


def test_family_stats_per_equilibrium_family():
  game = games.make("matrix_game", payoffs="family:all")
  known = lambda name: np.asarray(matrix_game.KNOWN_GAMES[name][0], np.float32)
  cyclic = ordinal_2x2.flat_to_table(np.array([4, 1, 2, 3, 1, 4, 3, 2])).astype(np.float32)

  def with_table(table, moves):
    state = game.init(KEY)
    state = state.replace(data=state.data.replace(payoffs=jnp.asarray(table)[None, None]))
    return _play(game, moves, state)

  finals = _stack([
      with_table(known("prisoners_dilemma"), (D, C)),  # Learner (seat 0) defects: an NE move.
      with_table(known("prisoners_dilemma"), (D, C)),  # Learner (seat 1) cooperates: not one.
      with_table(known("stag_hunt"), (C, D)),  # Learner (seat 0): C is in (C, C).
      with_table(cyclic, (0, 1)), with_table(cyclic, (0, 1)),  # Seat 0 plays its first move.
  ])
  stats = game.eval_stats(finals, np.array([0, 1, 0, 0, 0]))
  p = matrix_game.mixed_nash(cyclic)[0]
  assert stats == {
      "nash_action_rate": pytest.approx(2 / 3), "nash_outcome_rate": 0.0,
      "nash_action_rate_one_pure_ne": pytest.approx(1 / 2),
      "nash_action_rate_two_pure_ne": 1.0,
      "mixed_nash_gap": pytest.approx(abs(1 - p))}
