"""Plots: one PNG per panel with data, from a metrics.jsonl file."""

import os

from jaxplay import metrics, plot


def test_plot_writes_pngs_for_present_panels(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path))
  for step in range(1, 4):
    writer.write(step, {"loss": 1.0 / step, "eval": {"kuhn_poker": {"random": {"win_rate": 0.1 * step}}}})
  writer.close()
  paths = plot.plot_workdir(str(tmp_path))
  names = sorted(os.path.basename(p) for p in paths)
  assert names == ["loss.png", "win_rate.png"]
  for path in paths:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
