"""The tiny from-scratch setup of configs/kuhn_nash.py in self-play on a mix of games: Kuhn Poker,
TicTacToe and a matrix game drawn per game from all 144 strict ordinal 2x2 types
(games/matrix_game.py), with the iterated Prisoner's Dilemma held out.
`--config=configs/game_mix.py`.
"""

import ml_collections

from configs import kuhn_nash


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg is not None:
    raise ValueError(f"configs/game_mix.py takes no argument; got {arg!r}.")
  config = kuhn_nash.get_config()
  config.games = "kuhn_poker,tic_tac_toe,matrix_game"
  config.game_options = ml_collections.ConfigDict(dict(
      kuhn_poker=dict(rounds=1, rules=False),
      matrix_game=dict(payoffs="family:all"),
  ))
  # Each game renders at its own prompt bound; the held-out game needs 509 tokens of the games BPE.
  config.rollout.update(games_per_batch=64, max_prompt_len=512)
  config.train.update(steps=200, eval_every=20, checkpoint_every=50)
  config.eval.update(opponents="random,optimal,tit_for_tat",
                     heldout_games="iterated_prisoners_dilemma", games_per_seat=64)
  return config
