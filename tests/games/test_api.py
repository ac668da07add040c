"""Generic API checks, run on every registered game (a new game gets them for free)."""

import jax
import pytest

import games
from games import api, checks

ALL_GAMES = [(name, {}) for name in games.registered_names()]
if "kuhn_poker" in games.registered_names():
  ALL_GAMES += [("kuhn_poker", {"rounds": 3}), ("kuhn_poker", {"rounds": 2, "rules": False})]


@pytest.fixture(params=ALL_GAMES, ids=lambda p: p[0] + "".join(f"-{k}{v}" for k, v in p[1].items()))
def game(request):
  name, options = request.param
  return games.make(name, **options)


@pytest.mark.parametrize("batch", [1, 1024])
def test_jit_vmap(game, batch):
  checks.check_jit_vmap(game, batch)


def test_random_playouts(game):
  checks.check_random_playouts(game)


def test_terminal_noop(game):
  checks.check_terminal_noop(game)


def test_invalid_actions(game):
  checks.check_invalid_actions(game)


def test_render_matches_reference(game):
  checks.check_render(game)


def test_unknown_game_lists_valid_ones():
  with pytest.raises(ValueError, match="valid games: .*tic_tac_toe"):
    games.make("chess")


def test_unknown_option_lists_valid_ones():
  with pytest.raises(ValueError, match="valid options: invalid_rewards"):
    games.make("tic_tac_toe", board_size=4)
  with pytest.raises(ValueError, match=r"`rules` belongs to games with a rules paragraph: "
                                       r"connect_four, kuhn_poker, pig, tic_tac_toe\)"):
    games.make("nim", rules=False)


def test_games_with_a_rules_paragraph_leave_it_out_on_request():
  with_rules = [n for n in games.registered_names()
                if isinstance(games.make(n), api.WithRules)]
  assert with_rules == ["connect_four", "kuhn_poker", "pig", "tic_tac_toe"]
  for name in with_rules:
    long, short = games.make(name), games.make(name, rules=False)
    state = long.init(jax.random.key(0))
    assert long.rules_text == short.rules_text and len(long.rules_text) > 100
    for player in (0, 1):  # The paragraph is the same for both players.
      assert long.rules_text in long.render_text(state, player)
      assert long.rules_text not in short.render_text(state, player)
