"""The tiny from-scratch setup of configs/kuhn_nash.py, trained against the random opponent in
TicTacToe (the learner's seat random per game). `--config=configs/tic_tac_toe_random.py`."""

import ml_collections

from configs import kuhn_nash


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = kuhn_nash.get_config()
  config.games = "tic_tac_toe"
  config.game_options = ml_collections.ConfigDict()
  config.rollout.update(seats="opponent:random", max_prompt_len=208)
  config.rl.update(entropy_coef=0.05)
  config.eval.update(opponents="random,optimal", games_per_seat=128)
  return config
