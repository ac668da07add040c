"""A tiny transformer trained from scratch by self-play on single-round Kuhn Poker.

Action-scoring mode (the policy is the softmax over the legal actions' answer likelihoods), so the
exact exploitability of the learned policy is measured at every evaluation. The settings are the
best of a sweep (BENCHMARKS.md, "Learning"): a prompt without the rules paragraph, an untied,
small-init output head (a near-uniform first policy), no QK-norm, an entropy bonus of 0.2 (a
quantal-response target), lr 5e-4 with cosine decay over 700 steps, and a KL of 0.5 to a moving
average of the params (decay 0.95): MMD's moving magnet, which stops the last iterate of
self-play from cycling.
`--config=configs/kuhn_nash.py`.
"""

import ml_collections

from configs import spiral


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg is not None:
    raise ValueError(f"configs/kuhn_nash.py takes no argument; got {arg!r}.")
  config = spiral.get_config()
  config.model.update(preset="tiny", path="games_bpe", dtype="float32", remat=False,
                      chat_format="chatml", vocab_size=512)
  config.model.overrides.update(tie_embeddings=False, qk_norm=False)
  config.games = "kuhn_poker"
  config.game_options.kuhn_poker.update(rounds=1, rules=False)
  config.rollout.update(mode="action_scoring", samples_per_step=256, games_per_batch=128,
                        max_prompt_len=112, temperature=1.0)
  config.rl.update(estimator="rae", micro_batch_size=256, aggregation="sequence_mean",
                   drop_zero_advantage=True, entropy_coef=0.2, kl_coef=0.5,
                   kl_reference_decay=0.95)
  config.optimizer.update(learning_rate=5e-4, schedule="cosine", b2=0.999, grad_clip=1.0)
  config.train.update(steps=700, eval_every=20, checkpoint_every=100)
  # No held-out games: the games BPE is fit to Kuhn Poker only (Nim and Leduc prompts would take
  # hundreds of its tokens, more than max_prompt_len).
  config.eval.update(opponents="random,optimal", games_per_seat=64, temperature=1.0,
                     heldout_games="")
  return config
