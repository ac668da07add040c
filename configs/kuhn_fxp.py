"""The tiny Kuhn Poker model of configs/kuhn_nash.py trained by fictitious cross-play (FXP).

Fictitious self-play as in configs/kuhn_fsp.py (a pool of 8 snapshots of the learner, one every
20 steps, drawn alike), plus a counter policy: a second model, trained in the same steps only
against the learner's snapshots (a best response to its past versions), whose own snapshots (4,
one every 20 steps) join the population. Half of the learner's games are against a counter policy
once one is held (population.cross_play), the rest against its own snapshots. No magnet.
`--config=configs/kuhn_fxp.py`.
"""

import ml_collections

from configs import kuhn_fsp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg is not None:
    raise ValueError(f"configs/kuhn_fxp.py takes no argument; got {arg!r}.")
  config = kuhn_fsp.get_config()
  config.population.update(counters=4, cross_play=0.5)
  return config
