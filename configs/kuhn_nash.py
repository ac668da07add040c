"""A tiny transformer trained from scratch by self-play on single-round Kuhn Poker.

Action-scoring mode (the policy is the softmax over the legal actions' answer likelihoods), so the
exact exploitability of the learned policy is measured at every evaluation. Meant as a fast
demonstration that the RL stack learns; so far exploitability falls from 0.84 (the random model)
to about 0.35 and then the policy collapses to always bet/call (0.333), short of the target 0.10.
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
  config.rollout.update(mode="action_scoring", samples_per_step=64, games_per_batch=32,
                        max_prompt_len=256, temperature=1.0)
  # The best settings tried so far; exploitability still collapses to 1/3 (always bet/call).
  config.rl.update(estimator="rae", micro_batch_size=64, aggregation="sequence_mean",
                   drop_zero_advantage=True, entropy_coef=0.05)
  config.optimizer.update(learning_rate=1e-4, grad_clip=1.0)
  config.train.update(steps=200, eval_every=20, checkpoint_every=20)
  # No held-out games: the games BPE is fit to Kuhn Poker only (Nim and Leduc prompts would take
  # 344 and 521 of its tokens, more than max_prompt_len).
  config.eval.update(opponents="random,optimal", games_per_seat=16, temperature=1.0,
                     heldout_games="")
  return config
