"""Iterative-SPO's schedule (jaxplay/run/schedule.py): the cadence and plateau rules by hand."""

import pytest

import games
from configs import rlvr_arithmetic
from jaxplay.run import configuration, schedule, spec

GAMES = [games.make("kuhn_poker"), games.make("arithmetic"), games.make("tic_tac_toe")]


def _spec(**fields):
  values = dict(mode="iterative_spo", switch="plateau", cadence=3, patience=2, tolerance=0.05,
                min_steps=0, opponent="random")
  return spec.ScheduleSpec(**{**values, **fields})


def _results(win_rates, accuracies):
  """Evaluation results with Kuhn's and TicTacToe's win rates and arithmetic's accuracies."""
  kuhn, tic_tac_toe = win_rates
  results = {"eval/kuhn_poker/random/win_rate": kuhn,
             "eval/tic_tac_toe/random/win_rate": tic_tac_toe,
             "eval/kuhn_poker/random/invalid_rate": 0.9}
  results.update({f"eval/arithmetic/difficulty_{d}/accuracy": a
                  for d, a in enumerate(accuracies, 1)})
  results["eval/arithmetic/difficulty_1/accuracy_high"] = 1.0
  return results


def test_phases_split_games_from_tasks():
  assert schedule.phase_kinds(GAMES) == ((0, 2), (1,))


def test_the_tracked_metric_is_the_phase_mean():
  results = _results((0.4, 0.6), (0.2, 0.4))
  assert schedule.tracked(_spec(), 0, results, GAMES) == pytest.approx(0.5)
  assert schedule.tracked(_spec(), 1, results, GAMES) == pytest.approx(0.3)


def test_cadence_switches_every_n_steps():
  config, state = _spec(switch="cadence"), schedule.initial()
  phases = []
  for step in range(1, 8):
    phases.append(int(state.phase))
    state = schedule.after_step(config, state, step)
  assert phases == [0, 0, 0, 1, 1, 1, 0]
  assert schedule.after_eval(config, state, 7, _results((0, 0), (0,)), GAMES) == state


def test_plateau_switches_after_patience_evaluations_without_gain():
  config, state = _spec(), schedule.initial()
  # Win rates 0.30, 0.40 (gain), 0.42, 0.44 (no gain > 0.05 over 0.40 twice): switch at step 30.
  for step, win_rate in [(0, 0.30), (10, 0.40), (20, 0.42)]:
    state = schedule.after_eval(config, state, step, _results((win_rate, win_rate), (0.1,)),
                                GAMES)
    assert int(state.phase) == 0
  assert float(state.best) == pytest.approx(0.40) and int(state.stale) == 1
  state = schedule.after_eval(config, state, 30, _results((0.44, 0.44), (0.1,)), GAMES)
  assert int(state.phase) == 1 and int(state.since) == 30 and int(state.stale) == 0
  assert float(state.best) == pytest.approx(0.1)  # The tasks' accuracy in the same results.
  assert schedule.after_step(config, state, 31) == state  # No cadence under plateau.


def test_plateau_waits_for_min_steps():
  config, state = _spec(patience=1, min_steps=25), schedule.initial()
  for step in (0, 10, 20):
    state = schedule.after_eval(config, state, step, _results((0.5, 0.5), (0.0,)), GAMES)
  assert int(state.phase) == 0 and int(state.stale) == 2
  state = schedule.after_eval(config, state, 30, _results((0.5, 0.5), (0.0,)), GAMES)
  assert int(state.phase) == 1


@pytest.mark.parametrize("field, value, message", [
    ("mode", "spo", "config.schedule.mode='spo': unknown; valid: , iterative_spo"),
    ("switch", "epochs", "config.schedule.switch='epochs': unknown"),
    ("cadence", 0, "config.schedule.cadence=0: must be positive"),
    ("tolerance", -0.1, "config.schedule.tolerance=-0.1: must be >= 0"),
    ("opponent", "optimal", "config.schedule.opponent='optimal': the games' phase tracks"),
])
def test_schedule_fields_are_checked_by_name(field, value, message):
  config = rlvr_arithmetic.get_config("local")
  config.games = "kuhn_poker,arithmetic"
  config.eval.opponents = "random"
  config.schedule.update(**{"mode": "iterative_spo", field: value})
  with pytest.raises(configuration.ConfigError, match=message):
    configuration.validate(config)


def test_iterative_spo_needs_games_and_tasks():
  config = rlvr_arithmetic.get_config("local")
  config.schedule.mode = "iterative_spo"
  with pytest.raises(configuration.ConfigError, match="config.schedule.mode='iterative_spo': "
                                                      "alternates games and tasks"):
    configuration.validate(config)
  config.games, config.eval.opponents = "kuhn_poker,arithmetic", "random"
  assert configuration.validate(config).schedule.mode == "iterative_spo"
