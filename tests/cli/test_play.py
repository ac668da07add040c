"""jaxplay.cli.play: a scripted person plays a checkpoint through stdin; the model watched against a
fixed opponent; mistakes are one line."""

import io
import types

import jax
import pytest

import games
from games import kuhn_poker
from jaxplay import errors
from jaxplay.cli import play
from tests import stand_ins


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, experiment): a run directory holding the tiny Kuhn model's initial params as the
  checkpoint of step 3."""
  folder = tmp_path_factory.mktemp("run")
  exp, _ = stand_ins.saved_run(folder, stand_ins.tiny_kuhn_config(), step=3)
  return str(folder), exp


def test_a_person_plays_through_stdin(run):
  """Player 0 writes nonsense, then bets: the model must answer call or fold, ending the game."""
  workdir, _ = run
  out = io.StringIO()
  finals = play.main(["--workdir", workdir, "--game", "kuhn_poker", "--seat", "0"],
                     read=io.StringIO("raise\n\\boxed{bet}\n"), out=out)
  shown = out.getvalue()
  assert "step-3 checkpoint" in shown and "You are Player 0" in shown
  assert "Not a legal move; write one of: check, bet" in shown
  assert "Model (Player 1) answers:" in shown
  (final,) = finals
  assert int(final.turn) == 2 and bool(final.terminated)
  history = final.data.history.tolist()[:2]
  assert history[0] == kuhn_poker.BET and history[1] in (kuhn_poker.CALL, kuhn_poker.FOLD)
  reward = float(final.rewards[0])  # A fold gives the bettor 1; a call, 2 to the higher card.
  assert reward == 1.0 if history[1] == kuhn_poker.FOLD else abs(reward) == 2.0
  assert f"Game 1: You (Player 0) {play.outcome(final, 0)}." in shown


def test_watching_the_model_play_a_fixed_opponent(run):
  workdir, _ = run
  out = io.StringIO()
  finals = play.main(["--workdir", workdir, "--game", "kuhn_poker", "--watch", "random",
                      "--games", "2"], out=out)
  shown = out.getvalue()
  assert len(finals) == 2 and all(bool(f.terminated) for f in finals)
  assert "Game 1: random (Player 0)" in shown and "Game 2: random (Player 1)" in shown
  assert "random (Player 0) plays" in shown and "random (Player 1) plays" in shown
  assert shown.count("answers:") >= 2  # The model moves in every game.


def test_mistakes_are_named(run):
  _, exp = run
  with pytest.raises(errors.UserError, match="--game=chess: not a game of this run; valid: kuhn"):
    play.find_kit(exp, "chess")
  game = play.find_kit(exp, "kuhn_poker").game
  with pytest.raises(errors.UserError, match="--watch=grandmaster: Unknown opponent"):
    play.opponent_player(game, "grandmaster", io.StringIO())
  person = play.human_player(game, io.StringIO("check"), io.StringIO())
  state = game.init(jax.random.key(0))
  assert person(state, jax.random.key(0)) == kuhn_poker.CHECK  # A last line without "\n".
  with pytest.raises(errors.UserError, match="input ended before the game did"):
    person(state, jax.random.key(0))


def test_a_task_is_not_played():
  kit = types.SimpleNamespace(game=games.make("arithmetic"))
  exp = types.SimpleNamespace(kits=(kit,), heldout_kits=())
  with pytest.raises(errors.UserError, match="--game=arithmetic: a one-player task"):
    play.find_kit(exp, "arithmetic")
