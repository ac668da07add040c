"""The skeleton game of README.md's "Adding a game" is a complete game: it passes every generic
check and plays as its rules say (kept true: the code is read from the README)."""

import pathlib
import re

import jax
import jax.numpy as jnp
import pytest

from games import api, checks

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def race_to_n():
  section = README.read_text().split("## Adding a game", 1)[1]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  namespace = {}
  registered = []
  original = api.register
  api.register = lambda cls: registered.append(cls) or cls  # Kept out of the global registry.
  try:
    exec(compile(code, str(README), "exec"), namespace)  # pylint: disable=exec-used
  finally:
    api.register = original
  assert [cls.name for cls in registered] == ["race_to_n"]
  return registered[0]


def test_readme_game_passes_every_generic_check(race_to_n):
  checks.check_game(race_to_n(target=7))


def test_readme_game_plays_by_its_rules(race_to_n):
  game = race_to_n(target=5)
  state = game.init(jax.random.key(0))
  for action in (2, 0):  # Player 0 brings the total to 3, player 1 to 4.
    state = game.step(state, jnp.int32(action), jax.random.key(0))
  assert int(state.current_player) == 0 and not bool(state.terminated)
  assert state.legal_action_mask.tolist() == [True, False, False]
  assert game.render_text(state, 0).endswith("Total: 4.\nYour legal moves: [1]")
  state = game.step(state, jnp.int32(0), jax.random.key(0))
  assert bool(state.terminated) and state.rewards.tolist() == [1.0, -1.0]
