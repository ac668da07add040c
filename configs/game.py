"""The tiny from-scratch setup of configs/kuhn_nash.py in self-play on any two-player game.

`--config=configs/game.py:<name>` (e.g. `configs/game.py:connect_four`) derives the rest from the
game: its options at their defaults (the prompt without its rules paragraph where the game has
one), every
fixed opponent registered for it (games/opponents.py) in the evaluation, and the prompt length
its prompts need (`rollout.max_prompt_len=0`, found at start-up). Options go on the command line
as usual: `--config.game_options.<name>.<field>=...` (e.g. `matrix_game.payoffs=family:all`).
"""

import dataclasses

import ml_collections

import games
from configs import kuhn_nash
from games import opponents


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  two_player = [n for n in games.registered_names() if games.make(n).num_players == 2]
  if arg not in two_player:
    raise ValueError(f"configs/game.py needs a two-player game: --config=configs/game.py:<name>, "
                     f"got {arg!r}; valid: {', '.join(two_player)} (tasks train with "
                     "configs/rlvr_arithmetic.py).")
  config = kuhn_nash.get_config()
  config.games = arg
  game = games.make(arg)
  options = {f.name: getattr(game, f.name) for f in dataclasses.fields(game)
             if f.name != "invalid_rewards"}  # Every option, so the command line can set it.
  if "rules" in options:
    options["rules"] = False
  config.game_options = ml_collections.ConfigDict({arg: options})
  config.rollout.max_prompt_len = 0
  config.train.update(steps=200, eval_every=20, checkpoint_every=50)
  config.eval.update(opponents=",".join(opponents.names(arg)))
  return config
