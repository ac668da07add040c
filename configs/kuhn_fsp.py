"""The tiny Kuhn Poker model of configs/kuhn_nash.py trained by fictitious self-play.

The other seat is a past version of the learner, drawn uniformly per group of games from a pool of
8 snapshots taken every 20 steps (the initial params first; rl/population.py), instead of the
learner itself held back by a moving-magnet KL: fictitious play answers the whole history of the
learner rather than its last iterate, whose cycling the magnet otherwise damps.
`--config=configs/kuhn_fsp.py`; `--config.population.sampling=pfsp_hard` prioritises the members
the learner loses to.
"""

import ml_collections

from configs import kuhn_nash


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg is not None:
    raise ValueError(f"configs/kuhn_fsp.py takes no argument; got {arg!r}.")
  config = kuhn_nash.get_config()
  config.rollout.seats = "population"
  config.population.update(size=8, snapshot_every=20, sampling="uniform")
  config.rl.update(kl_coef=0.0, kl_reference_decay=1.0)
  return config
