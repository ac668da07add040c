"""Learning curves: `python -m jaxplay.plot --workdir=DIR` writes PNGs next to metrics.jsonl
(DIR local or gs://, see jaxplay/workdir.py).

One figure per panel (win rates by game and opponent, invalid rate, response length,
exploitability, loss, KL); each panel draws every metric whose name matches its pattern.
"""

from __future__ import annotations

import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import app, flags  # noqa: E402
from etils import epath  # noqa: E402

from jaxplay import metrics  # noqa: E402

PANELS = {
    "win_rate": r"win_rate",
    "invalid_rate": r"invalid_rate",
    "response_length": r"response_length",
    "exploitability": r"exploitability",
    "loss": r"(^|/)loss$",
    "kl": r"(^|/)kl$",
    "reward": r"reward_mean",
}


def plot_workdir(workdir: str) -> list[str]:
  """Writes one PNG per panel that has data; returns their paths."""
  records = metrics.read_jsonl(os.fspath(epath.Path(workdir) / "metrics.jsonl"))
  out_dir = epath.Path(workdir) / "plots"
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []
  for panel, pattern in PANELS.items():
    series = _series(records, re.compile(pattern))
    if not series:
      continue
    figure, axes = plt.subplots(figsize=(7, 4))
    for name, (steps, values) in sorted(series.items()):
      axes.plot(steps, values, marker="o" if len(steps) < 30 else None, label=name)
    axes.set_xlabel("step")
    axes.set_title(panel.replace("_", " "))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    path = out_dir / f"{panel}.png"
    figure.tight_layout()
    with path.open("wb") as f:
      figure.savefig(f, dpi=100, format="png")
    plt.close(figure)
    written.append(os.fspath(path))
  return written


def _series(records, pattern) -> dict[str, tuple[list[int], list[float]]]:
  series: dict[str, tuple[list[int], list[float]]] = {}
  for record in records:
    for name, value in record.items():
      if name in ("step", "time") or not pattern.search(name) or isinstance(value, str):
        continue
      steps, values = series.setdefault(name, ([], []))
      steps.append(record["step"])
      values.append(value)
  return series


def main(argv):
  del argv
  for path in plot_workdir(flags.FLAGS.workdir):
    print(path)


if __name__ == "__main__":
  # Defined here, not at import: jaxplay.main imports this module and has its own --workdir.
  flags.DEFINE_string("workdir", None, "Run directory holding metrics.jsonl.", required=True)
  app.run(main)
