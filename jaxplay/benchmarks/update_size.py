"""How far one policy update moves a model's Kuhn Poker policy, per learning rate.

python -m jaxplay.benchmarks.update_size --config=configs/spiral.py:local [--config.x=...]
    [--learning_rates=1e-5,1e-6,1e-7] [--label=TEXT]

The config's model plays single-round Kuhn Poker in action-scoring mode (its policy is exact at
the 12 information sets, `matches.kuhn_policy_table`): one self-play batch is collected with the
initial params, then for each learning rate one train step (the config's rl and optimizer
settings, that learning rate, no warm-up) is taken from the same initial params on that same
batch. Prints the bet/call probability at every information set before and after, and appends
one row per learning rate to BENCHMARKS.md ("One update's size") with the largest and mean change
of those probabilities, the policy entropy, the gradient norm and the exact exploitability.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from games import exploitability
from jaxplay import benchmarks, compiling
from jaxplay.evaluation import matches
from jaxplay.run import configuration, experiment, store
from jaxplay.run import spec as spec_lib

HEADER = ("date", "model", "learning rate", "turn-samples", "largest / mean change of P(bet or "
          "call)", "exploitability before -> after", "entropy", "grad norm", "machine")


def kuhn_scoring_config(config, learning_rate: float) -> spec_lib.RunSpec:
  """The spec of `config` playing single-round Kuhn Poker by action scoring, at `learning_rate`
  (no warm-up, no held-out games)."""
  config = config.copy_and_resolve_references()
  config.games = "kuhn_poker"
  config.game_options.kuhn_poker.rounds = 1
  config.rollout.mode = "action_scoring"
  config.optimizer.update(learning_rate=learning_rate, warmup_steps=0)
  config.eval.heldout_games = ""
  return configuration.validate(config)


def measure(config, learning_rates: list[float]):
  """(initial table, [(learning rate, table after, step metrics)]); tables are float32
  [3 cards, 4 nodes, (pass, bet)] as in exploitability.py."""
  spec = kuhn_scoring_config(config, learning_rates[0])
  exp, state, _, layout = store.setup(spec)
  params = state.params
  table = compiling.jit(functools.partial(matches.kuhn_policy_table, exp.model, exp.kits[0],
                                          spec.eval.temperature))
  batch, _ = experiment.make_collect(exp, layout)(params, None, jax.random.key(spec.seed))
  before = np.asarray(table(params))
  after = []
  for learning_rate in learning_rates:
    exp_lr = experiment.build(kuhn_scoring_config(config, learning_rate), exp.tokenizer,
                              exp.model)
    step, optimizer = experiment.build_train_step(exp_lr, layout)
    step = compiling.jit(step, donate_argnums=0)  # Outermost, with the run's options.
    start = experiment.init_state(exp_lr, jax.tree.map(jnp.copy, params), optimizer)
    updated, metrics = step(start, batch)
    after.append((learning_rate, np.asarray(table(updated.params)), jax.device_get(metrics)))
  return before, after


def main(argv):
  del argv
  config = _CONFIG.value
  learning_rates = [float(x) for x in _LEARNING_RATES.value]
  start = time.perf_counter()
  before, after = measure(config, learning_rates)
  print(f"{time.perf_counter() - start:.0f} s; P(bet or call) [card J/Q/K, node ''/p/b/pb]:")
  print(f"before:\n{before[..., 1].round(3)}")
  label = _LABEL.value or config.model.path or config.model.preset
  rows = []
  for learning_rate, table, metrics in after:
    change = np.abs(table[..., 1] - before[..., 1])
    print(f"lr {learning_rate:g}:\n{table[..., 1].round(3)}")
    rows.append((time.strftime("%Y-%m-%d"), label, f"{learning_rate:g}",
                 str(config.rollout.samples_per_step),
                 f"{change.max():.3f} / {change.mean():.3f}",
                 f"{float(exploitability.exploitability(before)):.3f} -> "
                 f"{float(exploitability.exploitability(table)):.3f}",
                 f"{float(metrics['entropy']):.3f}", f"{float(metrics['grad_norm']):.2f}",
                 benchmarks.machine()))
  benchmarks.report("One update's size", HEADER, rows, _OUTPUT.value)


if __name__ == "__main__":
  # Defined here, not at import: the tests import `measure` beside modules with a --config flag.
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                            lock_config=False)
  _LEARNING_RATES = flags.DEFINE_list("learning_rates", ["1e-5", "1e-6", "1e-7"],
                                      "Learning rates, one update each from the same params.")
  _LABEL = flags.DEFINE_string("label", "", "Model name in the table (default: model.path).")
  _OUTPUT = flags.DEFINE_string("output", str(benchmarks.BENCHMARKS_MD), "Markdown file to append "
                                "to ('' = print only).")
  app.run(main)
