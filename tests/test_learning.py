"""It learns: tiny from-scratch models trained with the real loop (slow; minutes on a CPU).

The Kuhn Poker demonstration (configs/kuhn_nash.py) is measured by its own run, not here: its
exploitability curves are in BENCHMARKS.md.
"""

import pytest

from configs import tic_tac_toe_random
from jaxplay import train


@pytest.mark.slow
def test_tic_tac_toe_win_rate_against_random_rises(tmp_path):
  config = tic_tac_toe_random.get_config()
  config.rollout.update(samples_per_step=64, games_per_batch=32)
  config.rl.micro_batch_size = 64
  config.train.update(steps=60, eval_every=60, checkpoint_every=60)
  config.eval.update(opponents="random", games_per_seat=128)
  summary = train.train(config, str(tmp_path))
  before, after = summary["first_eval"], summary["last_eval"]
  key = "eval/tic_tac_toe/random/win_rate"
  print(f"win rate vs random: {before[key]:.3f} -> {after[key]:.3f}")
  assert after[key] >= before[key] + 0.1
  assert after[key + "_low"] > before[key + "_high"]  # The 95% intervals do not overlap.
  assert after["eval/tic_tac_toe/random/invalid_rate"] == 0.0
