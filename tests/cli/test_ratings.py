"""`python -m jaxplay.cli.ratings` on a tiny population run: every checkpoint, pool member and
fixed opponent in one round robin, rated by the Bradley-Terry fit."""

import json

import numpy as np
import pytest

from jaxplay.cli import ratings as ratings_cli
from jaxplay.run import train
from tests import stand_ins


def test_a_population_run_is_rated_with_its_checkpoints_pool_and_fixed_opponents(tmp_path):
  config = stand_ins.tiny_kuhn_config(**{
      "rollout.seats": "population", "population.size": 3, "population.snapshot_every": 1,
      "population.counters": 1, "train.steps": 2, "train.checkpoint_every": 1})
  train.train(config, str(tmp_path))
  tables = ratings_cli.main([f"--workdir={tmp_path}", "--games_per_seat=4"])
  kuhn = tables["kuhn_poker"]
  # Checkpoints 1 and 2; the pool's step-0 member (its steps 1 and 2 are the checkpoints); the
  # one counter slot's latest policy (step 2's replaced step 1's).
  assert kuhn["players"] == ["step 1", "step 2", "pool step 0", "counter step 2", "random",
                             "optimal"]
  points, games = np.asarray(kuhn["points"]), np.asarray(kuhn["games"])
  expected = np.full((6, 6), 8.0)
  np.fill_diagonal(expected, 0)
  expected[4, 5] = expected[5, 4] = 0  # Fixed opponents do not play each other.
  np.testing.assert_array_equal(games, expected)
  np.testing.assert_allclose(points + points.T, games)
  assert kuhn["elo"][4] == 0  # The first fixed opponent is the anchor.
  assert json.loads((tmp_path / "ratings.json").read_text()) == tables
  assert (tmp_path / "ratings.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_flags_name_themselves(tmp_path, capsys):
  with pytest.raises(SystemExit):
    ratings_cli.main([f"--workdir={tmp_path}", "--games_per_seat=0"])
  assert "--games_per_seat=0 must be >= 1" in capsys.readouterr().err
