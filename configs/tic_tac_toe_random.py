"""The tiny from-scratch setup of configs/kuhn_nash.py, trained against the random opponent in
TicTacToe (the learner's seat random per game). `--config=configs/tic_tac_toe_random.py`."""

import ml_collections

from configs import kuhn_nash


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg is not None:
    raise ValueError(f"configs/tic_tac_toe_random.py takes no argument; got {arg!r}.")
  config = kuhn_nash.get_config()
  config.games = "tic_tac_toe"
  config.game_options = ml_collections.ConfigDict()
  config.rollout.update(seats="opponent:random", max_prompt_len=208)
  # A fixed opponent does not cycle: no moving-magnet KL (measured without it, BENCHMARKS.md).
  config.rl.update(entropy_coef=0.05, kl_coef=0.0)
  config.eval.update(opponents="random,optimal", games_per_seat=128)
  return config
