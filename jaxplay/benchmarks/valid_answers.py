"""Step-0 rate of answers that parse to a legal action, per training game, for one config
(for a task, answers its reader can read).

python -m jaxplay.benchmarks.valid_answers --config=configs/spiral.py:local [--config.x=...]
    [--prompts=64] [--label=TEXT]

The prompts are the player-to-move's observations at live states of random playouts (every turn
of `--prompts` games, then `--prompts` of those states drawn uniformly), rendered exactly as the
run renders them (chat format, config.prompt); one answer each is sampled with the training policy
(config.rollout: temperature, response length, stop rule) from the untrained model. Prints a
table and appends one row per game to BENCHMARKS.md ("Step-0 valid answers") with the 95% Wilson
interval, the mean response length and the most common answers.
"""

from __future__ import annotations

import collections
import functools
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from games import opponents
from jaxplay import benchmarks, compiling
from jaxplay.evaluation import matches, statistics
from jaxplay.run import configuration, experiment
from jaxplay.text import answers, prompts
from jaxplay.text import tokenizer as tokenizers

HEADER = ("date", "candidate", "game", "valid / prompts", "rate [95% CI]", "mean response tokens",
          "most common answers", "machine")

def live_states(game, key: jax.Array, count: int):
  """`count` live states drawn uniformly from the turns of `count` random playouts."""
  playouts = opponents.random_playouts(game, key, count)
  flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), playouts)
  live = np.flatnonzero(~np.asarray(flat.terminated))
  chosen = np.random.default_rng(0).choice(live, count, replace=False)
  return jax.tree.map(lambda x: x[chosen], flat)


def _answers(kit: experiment.GameKit, batch: int, params, states, key: jax.Array):
  """The training policy's rollout.Act at `states` (N rows), `batch` rows per call."""
  tokens, lengths = jax.vmap(functools.partial(prompts.render_tokens, kit.prompts))(
      jax.vmap(kit.game.render)(states))
  return matches.act_in_batches(kit.train_policy, params, tokens, lengths,
                                states.legal_action_mask, key, batch)


def measure(exp: experiment.Experiment, params, count: int, batch: int, key: jax.Array):
  """Per game: (name, valid count, mean response length, Counter of answer texts)."""
  results = []
  for kit, kit_key in zip(exp.kits, jax.random.split(key, len(exp.kits))):
    state_key, sample_key = jax.random.split(kit_key)
    states = live_states(kit.game, state_key, count)
    act = compiling.jit(functools.partial(_answers, kit, batch))(params, states, sample_key)
    actions = np.asarray(act.action)
    if kit.game.free_answer:  # A task: the verdict of its reader (readable = valid).
      actions = np.asarray(jax.vmap(kit.game.read_answer)(states, act.answer, act.answer_length))
    legal = np.asarray(states.legal_action_mask)
    valid = (actions >= 0) & legal[np.arange(count), np.maximum(actions, 0)]
    lengths = np.asarray(act.response_lengths)
    counts = collections.Counter(
        answers.boxed_content(tokenizers.decode(exp.tokenizer, list(map(int, row[:n])))) or "-"
        for row, n in zip(np.asarray(act.response_tokens), lengths))
    results.append((kit.game.name, int(valid.sum()), float(lengths.mean()), counts))
  return results


def main(argv):
  del argv
  config = configuration.validate(_CONFIG.value)
  key = jax.random.key(config.seed)
  model, params, tokenizer = experiment.load_model_and_tokenizer(config, key)
  exp = experiment.build(config, tokenizer, model)
  label = _LABEL.value or (f"{config.model.path or config.model.preset}, "
                           f"{config.prompt.examples} examples")
  start = time.perf_counter()
  results = measure(exp, params, _PROMPTS.value, _BATCH.value, jax.random.fold_in(key, 1))
  print(f"{label}: {time.perf_counter() - start:.0f} s")
  rows = []
  for name, valid, length, counts in results:
    low, high = statistics.wilson_interval(valid, _PROMPTS.value)
    common = ", ".join(f"{a!r} x{n}" for a, n in counts.most_common(3))
    rows.append((time.strftime("%Y-%m-%d"), label, name, f"{valid} / {_PROMPTS.value}",
                 f"{valid / _PROMPTS.value:.2f} [{low:.2f}, {high:.2f}]", f"{length:.1f}",
                 common.replace("|", "\\|"), benchmarks.machine()))
  benchmarks.report("Step-0 valid answers", HEADER, rows, _OUTPUT.value)


if __name__ == "__main__":
  # Defined here, not at import: the tests import `measure` beside modules with a --config flag.
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                            lock_config=True)
  _PROMPTS = flags.DEFINE_integer("prompts", 64, "Prompts per game.")
  _LABEL = flags.DEFINE_string("label", "", "Candidate name in the table (default: model and "
                               "prompt settings).")
  _BATCH = flags.DEFINE_integer("batch", 16, "Prompts sampled side by side.")
  _OUTPUT = flags.DEFINE_string("output", str(benchmarks.BENCHMARKS_MD), "Markdown file to "
                                "append to ('' = print only).")
  app.run(main)
