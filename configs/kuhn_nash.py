"""A tiny transformer trained from scratch by self-play on single-round Kuhn Poker.

Action-scoring mode (the policy is the softmax over the legal actions' answer likelihoods), so the
exact exploitability of the learned policy is measured at every evaluation. A fast demonstration
that the RL stack learns: exploitability falls from about 0.46 (uniform) towards 0.
`--config=configs/kuhn_nash.py`.
"""

import ml_collections

from configs import spiral


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = spiral.get_config()
  config.model.update(preset="tiny", path="games_bpe", dtype="float32", remat=False,
                      chat_format="chatml", vocab_size=512)
  config.games = "kuhn_poker"
  config.rollout.update(mode="action_scoring", samples_per_step=128, games_per_batch=64,
                        max_prompt_len=256, temperature=1.0)
  config.rl.update(estimator="rae", micro_batch_size=128, aggregation="sequence_mean",
                   drop_zero_advantage=True)
  config.optimizer.update(learning_rate=3e-3, grad_clip=1.0)
  config.train.update(steps=150, eval_every=25, checkpoint_every=50)
  config.eval.update(opponents="random,optimal", games_per_seat=64, temperature=1.0)
  return config
