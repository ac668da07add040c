"""The FXP counter-example (games/team_zero_one.py): a tiny model plays both teams of 3 agents.

`--config=configs/team_zero_one.py` trains by self-play, which ends at the local equilibrium (all
answer 1; exploitability 1.5: the team answering all 0 earns the bonus); `:fxp` trains by
fictitious cross-play instead, which ends at the global one (all answer 0): fictitious self-play
over a pool of 8 snapshots (one every 5 steps) until the first counter policy is held, then only
cross-play against the counter policies (the 4 newest kept). The counter policy is the exact best
response to the learner's newest snapshot, distilled into the model
(population.counter_oracle=exact) and restarted from the initial params after each of its
snapshots. The exact exploitability of the learner is logged at every evaluation (action-scoring
mode: the policy is the softmax over the answers' likelihoods). BENCHMARKS.md "The FXP
counter-example" has the measured curves and the variants that stay at all ones.
"""

import ml_collections

from configs import kuhn_nash

VARIANTS = ("self_play", "fxp")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "self_play"
  if variant not in VARIANTS:
    raise ValueError(f"configs/team_zero_one.py:{arg}: unknown variant; valid: "
                     f"{', '.join(VARIANTS)}.")
  config = kuhn_nash.get_config()
  config.games = "team_zero_one"
  config.game_options = ml_collections.ConfigDict({"team_zero_one": {"agents": 3}})
  config.rollout.update(samples_per_step=256, games_per_batch=64, max_prompt_len=128)
  config.rl.update(entropy_coef=0.0, kl_coef=0.0, kl_reference_decay=1.0)
  config.optimizer.update(learning_rate=5e-4, schedule="constant")
  config.train.update(steps=120, eval_every=10, checkpoint_every=40)
  config.eval.update(opponents="random,all_zero,all_one", games_per_seat=32)
  if variant == "fxp":
    config.rollout.seats = "population"
    config.population.update(size=8, snapshot_every=5, sampling="uniform", counters=4,
                             cross_play=1.0, counter_reset=True, counter_sampling="latest",
                             counter_oracle="exact", counter_updates=8)
  return config
