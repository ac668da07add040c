"""RLVR on verifiable tasks: GRPO on multi-step arithmetic word problems (games/arithmetic.py).

Each group of `rl.group_size` answers shares one problem; the reward is 1 for the right number,
0 for a wrong one, the invalid penalty for no readable answer. Evaluation answers problems of the
held-out split (never trained on) at each of eval.task_difficulties.

`--config=configs/rlvr_arithmetic.py` is GPU-sized (Qwen3-4B-Base as in configs/spiral.py: set
model.path; 128 answers a step in groups of 8); `--config=configs/rlvr_arithmetic.py:local` is
the offline preset: Gemma 3 270M from its PyPI package with LoRA adapters, sized for a 2-core CPU
(BENCHMARKS.md "RLVR").
"""

import ml_collections

from configs import spiral


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "local"):
    raise ValueError(f"Unknown config argument {arg!r} for configs/rlvr_arithmetic.py; "
                     "valid: 'local'.")
  config = spiral.get_config(arg)
  config.games = "arithmetic"
  config.game_options = ml_collections.ConfigDict({"arithmetic": {"difficulty": 2, "digits": 2}})
  config.rollout.update(seats="self_play", games_per_batch=128, samples_per_step=128,
                        max_response_len=1024)
  config.rl.update(estimator="grpo", group_size=8, ppo_epochs=1)
  config.train.update(steps=200, eval_every=20, checkpoint_every=20)
  config.eval.update(opponents="", heldout_games="", task_difficulties="1,2,3,4",
                     games_per_seat=64, kuhn_samples=0)
  if arg == "local":
    # One operation on one-digit numbers: the base model with two worked examples answers some
    # of these at step 0 (BENCHMARKS.md "RLVR"), so groups hold both right and wrong answers.
    config.game_options.arithmetic.update(difficulty=1, digits=1)
    config.rollout.update(games_per_batch=32, samples_per_step=32, max_response_len=16,
                          stop_at_answer=True)
    config.rl.update(micro_batch_size=8)
    config.train.update(steps=20, eval_every=20, checkpoint_every=20)
    config.eval.update(task_difficulties="1,2", games_per_seat=64)
  return config
