"""Iterative-SPO (Vision-Zero): phases of game self-play alternating with RLVR on a task.

The games of configs/spiral.py in self-play and the arithmetic task of configs/rlvr_arithmetic.py
in one run, GRPO for both; jaxplay/run/schedule.py switches phase once the current one's tracked
metric stops improving (win rate against the random opponent, held-out accuracy), at evaluations.
`--config=configs/iterative_spo.py` is GPU-sized (Qwen3-4B-Base: set model.path);
`:local` is the offline preset (Gemma 3 270M with LoRA; Kuhn Poker and one-digit arithmetic).
"""

import ml_collections

from configs import rlvr_arithmetic


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "local"):
    raise ValueError(f"Unknown config argument {arg!r} for configs/iterative_spo.py; "
                     "valid: 'local'.")
  config = rlvr_arithmetic.get_config(arg)
  config.games = "kuhn_poker,tic_tac_toe,simple_negotiation,arithmetic"
  config.rl.update(estimator="grpo", group_size=8)
  config.schedule.update(mode="iterative_spo", switch="plateau", patience=2, tolerance=0.02,
                         min_steps=40, opponent="random")
  config.eval.update(opponents="random")
  if arg == "local":
    config.games = "kuhn_poker,arithmetic"
    config.rl.update(group_size=4)
    config.rollout.max_prompt_len = 704  # Kuhn Poker's prompts with two worked examples.
    config.schedule.update(min_steps=4)
    config.train.update(steps=24, eval_every=4, checkpoint_every=4)
    config.eval.update(task_difficulties="1", games_per_seat=32)
  return config
