"""Learning curves: `python -m jaxplay.cli.plot --workdir=DIR` writes PNGs next to metrics.jsonl
(DIR local or gs://, see jaxplay/run/workdir.py).

One figure per panel that has data; a panel draws every metric whose name matches its pattern.
A pattern with a `(?P<facet>...)` group draws one plot per facet value (e.g. per game), each line
labelled by the rest of the name after the facet (e.g. `seat0/win_rate`).
"""

from __future__ import annotations

import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import app, flags  # noqa: E402
from etils import epath  # noqa: E402

from jaxplay import errors  # noqa: E402
from jaxplay.run import metrics  # noqa: E402
from jaxplay.run import workdir as workdir_lib  # noqa: E402

_ROLLOUT = r"^rollout/(?P<facet>[^/]+)/(seat\d/)?"  # rollout/<game>/[seat<k>/]<name>
PANELS = {
    # Evaluation against fixed opponents, per game.
    "win_rate": r"^eval/(?P<facet>[^/]+)/.*win_rate",
    "invalid_rate": r"^(?!rollout/).*invalid_rate",
    "response_length": r"^(?!rollout/).*response_length",
    "exploitability": r"exploitability",
    "elo": r"^eval/(?P<facet>[^/]+)/.*/elo$",  # The learner's Elo against each fixed opponent.
    # Training rollouts (experiment.game_stats), per game and seat.
    "rollout_outcomes": _ROLLOUT + r"(win|draw|loss)_rate$",
    "rollout_invalid": _ROLLOUT + r"(invalid|forfeit)_rate$",
    "rollout_response_length": _ROLLOUT + r"response_length_mean$",
    "rollout_truncation": _ROLLOUT + r"truncation_rate$",
    # Train step (losses.ppo_loss, train_step).
    "loss": r"(^|/)loss$",
    "kl": r"(^|/)kl$",
    "policy": r"^(entropy|clip_fraction|dual_clip_fraction)$",
    "sampler_mismatch": r"^sampler_",
    "kept_fraction": r"^kept_fraction$",
    "samples": r"^(num_samples|samples_\w+)$",  # Sample counts of the train step's batch.
    "reward": r"reward_mean",
    # Population play: pool size, the learner's score against the pool, member scores.
    "population": r"^population/",
}

Series = dict[str, tuple[list[int], list[float]]]  # label -> (steps, values)


def plot_workdir(workdir: str) -> list[str]:
  """Writes `plots/<panel>.png` for each panel that has data; returns their paths. Raises
  WorkdirError when `workdir` has no metrics.jsonl."""
  path = epath.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    raise workdir_lib.WorkdirError(f"{workdir} holds no metrics.jsonl (not a run's workdir, or "
                                   "the run has not started).")
  records = metrics.read_jsonl(os.fspath(path))
  out_dir = epath.Path(workdir) / "plots"
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []
  for panel, pattern in PANELS.items():
    facets = facet_series(records, re.compile(pattern))
    if not facets:
      continue
    figure, axes = plt.subplots(len(facets), 1, figsize=(7, 1 + 3 * len(facets)), sharex=True,
                                squeeze=False)
    for ax, (facet, series) in zip(axes[:, 0], sorted(facets.items())):
      for label, (steps, values) in sorted(series.items()):
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, label=label)
      ax.set_title(panel.replace("_", " ") + (f": {facet}" if facet else ""))
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("step")
    png = out_dir / f"{panel}.png"
    figure.tight_layout()
    with png.open("wb") as f:
      figure.savefig(f, dpi=100, format="png")
    plt.close(figure)
    written.append(os.fspath(png))
  return written


def facet_series(records, pattern: re.Pattern) -> dict[str, Series]:
  """{facet: {label: (steps, values)}} of the numeric metrics matching `pattern`; without a facet
  group the one facet is "" and labels are the full names."""
  facets: dict[str, Series] = {}
  for record in records:
    for name, value in record.items():
      match = pattern.search(name)
      if name in ("step", "time") or not match or isinstance(value, str):
        continue
      faceted = "facet" in pattern.groupindex
      facet = match.group("facet") if faceted else ""
      label = name[match.end("facet"):].lstrip("/") if faceted else name
      steps, values = facets.setdefault(facet, {}).setdefault(label, ([], []))
      steps.append(record["step"])
      values.append(value)
  return facets


@errors.user_facing
def main(argv):
  del argv
  for path in plot_workdir(flags.FLAGS.workdir):
    print(path)


def run() -> None:
  """`python -m jaxplay.cli.plot` and the `jaxplay-plot` console script."""
  # Defined here, not at import: jaxplay.main imports this module and has its own --workdir.
  flags.DEFINE_string("workdir", None, "Run directory holding metrics.jsonl.", required=True)
  app.run(main)


if __name__ == "__main__":
  run()
