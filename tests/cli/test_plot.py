"""Plots: one PNG per panel with data, from a metrics.jsonl file."""

import os
import re

import jax

from jaxplay.cli import plot
from jaxplay.run import experiment, metrics
from tests import stand_ins


def test_plot_writes_pngs_for_present_panels(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path))
  for step in range(1, 4):
    writer.write(step, {"loss": 1.0 / step, "eval": {"kuhn_poker": {"random": {
        "win_rate": 0.1 * step, "elo": 50.0 * step}}}})
  writer.close()
  paths = plot.plot_workdir(str(tmp_path))
  names = sorted(os.path.basename(p) for p in paths)
  assert names == ["elo.png", "loss.png", "win_rate.png"]
  for path in paths:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_draws_the_learning_diagnostics_per_game_and_seat(tmp_path):
  """Records as the train loop writes them: train step diagnostics and two games' rollout stats."""
  episodes = stand_ins.synthetic_episodes(-1)
  stats = jax.device_get(experiment.game_stats(episodes, (stand_ins.STOP_ID,)))
  step_metrics = {"entropy": 1.5, "clip_fraction": 0.1, "kl": 0.01, "kept_fraction": 0.9,
                  "sampler_logprob_abs_diff": 0.02, "sampler_ratio_outside_0.9_1.1": 0.01,
                  "sampler_kl_k3": 0.001, "invalid_rate": 0.5, "response_length_mean": 3.0, "num_samples": 8}
  writer = metrics.MetricsWriter(str(tmp_path))
  for step in range(1, 4):
    writer.write(step, {**step_metrics, "rollout": {"kuhn_poker": stats, "tic_tac_toe": stats}})
  writer.close()
  names = sorted(os.path.basename(p) for p in plot.plot_workdir(str(tmp_path)))
  assert names == sorted(["invalid_rate.png", "response_length.png", "rollout_outcomes.png",
                          "rollout_invalid.png", "rollout_response_length.png",
                          "rollout_truncation.png", "kl.png", "policy.png",
                          "sampler_mismatch.png", "kept_fraction.png", "samples.png"])
  records = metrics.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
  series = lambda panel: plot.facet_series(records, re.compile(plot.PANELS[panel]))
  outcomes = series("rollout_outcomes")
  assert sorted(outcomes) == ["kuhn_poker", "tic_tac_toe"]  # One plot per game.
  assert sorted(outcomes["kuhn_poker"]) == [f"seat{k}/{o}_rate" for k in (0, 1)
                                            for o in ("draw", "loss", "win")]
  assert outcomes["kuhn_poker"]["seat0/win_rate"] == ([1, 2, 3], [0.5] * 3)
  assert sorted(series("rollout_invalid")["tic_tac_toe"]) == [
      "forfeit_rate", "invalid_rate", "seat0/forfeit_rate", "seat0/invalid_rate",
      "seat1/forfeit_rate", "seat1/invalid_rate"]
  assert sorted(series("sampler_mismatch")[""]) == [
      "sampler_kl_k3", "sampler_logprob_abs_diff", "sampler_ratio_outside_0.9_1.1"]
  assert sorted(series("invalid_rate")[""]) == ["invalid_rate"]  # The rollout's are apart.
