"""`python -m jaxplay.benchmarks.update_size` on the tiny from-scratch Kuhn model."""

import numpy as np

from configs import kuhn_nash
from games import exploitability
from jaxplay.benchmarks import update_size


def test_one_update_per_learning_rate_from_the_same_params():
  config = kuhn_nash.get_config()
  config.rollout.update(samples_per_step=32, games_per_batch=32)
  config.rl.micro_batch_size = 32
  before, after = update_size.measure(config, [1e-9, 1e-2])
  assert before.shape == (3, 4, 2)
  np.testing.assert_allclose(before.sum(-1), 1.0, atol=1e-5)
  (tiny_lr, barely, _), (big_lr, changed, metrics) = after
  assert (tiny_lr, big_lr) == (1e-9, 1e-2)
  np.testing.assert_allclose(barely, before, atol=1e-4)  # Both start from the same params.
  assert np.abs(changed - before).max() > 1e-2
  assert float(metrics["grad_norm"]) > 0
  assert 0 <= float(exploitability.exploitability(changed)) <= 1
