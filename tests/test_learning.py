"""It learns: a tabular Kuhn Poker policy through the real rollout and train step (seconds), tiny
from-scratch models trained with the real loop, and Gemma 3 270M in the README's local preset
(slow; minutes on a CPU).

Full-length curves of configs/kuhn_nash.py over several seeds are in BENCHMARKS.md, "Learning".
"""

import json
import os
import pathlib
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import pytest

import games
from configs import kuhn_nash, spiral, tic_tac_toe_random
from games import exploitability, kuhn_poker
from jaxplay.rl import losses, rollout
from jaxplay.rl import train_step as ts
from jaxplay.run import experiment, train
from tests import conftest, stand_ins

ROOT = pathlib.Path(__file__).resolve().parent.parent

KUHN = games.make("kuhn_poker", rounds=1)
# The 12 information sets' prompts (stand_ins.render_phrase_ids: the phrase ids themselves), in
# the [card * 4 + node] order of exploitability.py's tables.
INFORMATION_SETS = jax.vmap(KUHN.render)(kuhn_poker.information_set_states(KUHN)).astype(
    jnp.int32)


def _log_pi(logits_I2, prompt_tokens):
  """log (pass, bet) [b, 2] of a tabular policy (logits per information set) at each prompt."""
  index = jnp.argmax((prompt_tokens[:, None] == INFORMATION_SETS[None]).all(-1), -1)
  return jax.nn.log_softmax(logits_I2[index], -1)


def _table_policy(logits_I2, prompt_tokens, prompt_lengths, legal_mask, key):
  """rollout.Policy: draws pass or bet; the response is one token, its log-prob on it."""
  del prompt_lengths
  log_pi = _log_pi(logits_I2, prompt_tokens)
  bet = jax.random.categorical(key, log_pi)
  opening = legal_mask[:, kuhn_poker.BET]
  action = jnp.where(opening, jnp.where(bet == 1, kuhn_poker.BET, kuhn_poker.CHECK),
                     jnp.where(bet == 1, kuhn_poker.CALL, kuhn_poker.FOLD)).astype(jnp.int32)
  chosen = jnp.take_along_axis(log_pi, bet[:, None], -1)
  return rollout.Act(action, bet[:, None].astype(jnp.int32) + 1, chosen, jnp.ones_like(action))


def _table_log_probs(logits_I2, rows):
  """train_step log_probs_fn of the tabular policy: log pi and entropy at the response token."""
  width = INFORMATION_SETS.shape[1]
  log_pi = _log_pi(logits_I2, rows.tokens[:, :width])
  bet = (rows.action == kuhn_poker.BET) | (rows.action == kuhn_poker.CALL)
  chosen = jnp.take_along_axis(log_pi, bet[:, None].astype(jnp.int32), -1)
  entropy = -(jnp.exp(log_pi) * log_pi).sum(-1, keepdims=True)
  column = jnp.arange(rows.tokens.shape[1] - 1)[None] == width - 1
  return jnp.where(column, chosen, 0.0), jnp.where(column, entropy, 0.0)


def test_a_few_self_play_steps_cut_kuhn_exploitability():
  """8 steps of RAE self-play (128 games each, PPO, Adam at lr 0.1) from the uniform table: the
  exact exploitability falls from 0.458 to about 0.20 (an update that does nothing leaves 0.458,
  one of the wrong sign climbs to about 1.15), and facing a bet the K calls and the J folds
  more often than not, as at every Nash equilibrium."""
  num_games = 128
  config = ts.TrainStepConfig(batch_size=KUHN.max_turns * num_games,
                              seq_len=INFORMATION_SETS.shape[1] + 1, estimator="rae",
                              loss=losses.LossConfig(aggregation="sequence_mean"))
  optimizer = ts.make_optimizer(learning_rate=0.1)
  step = ts.make_train_step(config, None, optimizer, _table_log_probs)
  scoring = types.SimpleNamespace(scoring=True)  # experiment.to_batch's action-scoring rows.

  @jax.jit
  def collect(logits_I2, key):
    episodes = rollout.rollout(KUHN, _table_policy, stand_ins.render_phrase_ids, logits_I2, key,
                               num_games)
    return experiment.to_batch(scoring, rollout.to_samples(episodes, game_kind=0))

  table = lambda logits_I2: jax.nn.softmax(logits_I2, -1).reshape(3, 4, 2)
  state = ts.init_state(jnp.zeros((12, 2)), optimizer, num_kinds=1, num_roles=2, seed=0)
  before = float(exploitability.exploitability(table(state.params)))
  for i in range(8):
    state, _ = step(state, collect(state.params, jax.random.key(i)))
  after = table(state.params)
  assert before == pytest.approx(0.4583333)
  assert float(exploitability.exploitability(after)) < 0.3
  facing_bet = after[:, kuhn_poker.NODES.index("b"), 1]  # P(call) with J, Q, K.
  assert facing_bet[2] > 0.5 > facing_bet[0]


@pytest.mark.slow
def test_kuhn_self_play_drives_exploitability_under_0_10(tmp_path):
  """configs/kuhn_nash.py (RAE self-play, moving-magnet KL) with its cosine schedule cut to 300
  steps: exact exploitability from the near-uniform start to <= 0.10 (measured 0.333 -> 0.046;
  21 min on 2 busy CPU cores, about 14 alone)."""
  config = kuhn_nash.get_config()
  config.train.update(steps=300, eval_every=300, checkpoint_every=300)
  summary = train.train(config, str(tmp_path))
  key = "eval/kuhn_poker/exploitability"
  before, after = summary["first_eval"][key], summary["last_eval"][key]
  print(f"Kuhn Poker exploitability: {before:.3f} -> {after:.3f}")
  assert before > 0.3
  assert after <= 0.10


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


def _evaluations(workdir) -> dict[int, dict]:
  """The evaluation records of a run's metrics.jsonl by step."""
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r for r in records if any(k.startswith("eval/") for k in r)}


@pytest.mark.slow
def test_the_main_command_learns_both_games(tmp_path):
  """README's first command (configs/spiral.py:local as shipped: Gemma 3 270M from its PyPI
  package, LoRA, Kuhn Poker and TicTacToe, 12 steps, seed 0), run as a user runs it: its own
  process at XLA's default optimisation (not the suite's level 0) and a fresh compilation cache.
  In both games the step-12 win rate vs random rises above the step-0 95% interval and the
  invalid rate falls. Measured 2026-12-07 (Intel Xeon, alone): Kuhn Poker 0.19 [0.11, 0.30] ->
  0.56 [0.44, 0.68], TicTacToe 0.00 [0.00, 0.11] -> 0.62 [0.45, 0.77], invalid 0.26 / 0.33 ->
  0.00; the command 6.3 min and 8.1 GB peak RSS, this test 6.1 min and 8.0 GB."""
  flags = os.environ.get("XLA_FLAGS", "").replace(conftest.BACKEND_OPTIMIZATION_FLAG, "")
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "jaxplay.main", "--config=configs/spiral.py:local",
             f"--workdir={workdir}", f"--config.train.compilation_cache={tmp_path / 'xla'}"]
  result = subprocess.run(command, cwd=ROOT, env={**os.environ, "XLA_FLAGS": flags.strip()},
                          capture_output=True, text=True, timeout=3600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  evaluations = _evaluations(workdir)
  before, after = evaluations[0], evaluations[max(evaluations)]
  assert max(evaluations) == spiral.get_config("local").train.steps
  for game in ("kuhn_poker", "tic_tac_toe"):  # Both games' figures first, then the checks.
    key = f"eval/{game}/random/"
    print(f"{game}: win {before[key + 'win_rate']:.2f} [{before[key + 'win_rate_low']:.2f}, "
          f"{before[key + 'win_rate_high']:.2f}] -> {after[key + 'win_rate']:.2f} "
          f"[{after[key + 'win_rate_low']:.2f}, {after[key + 'win_rate_high']:.2f}], invalid "
          f"{before[key + 'invalid_rate']:.2f} -> {after[key + 'invalid_rate']:.2f}")
  for game in ("kuhn_poker", "tic_tac_toe"):
    key = f"eval/{game}/random/"
    assert after[key + "win_rate_low"] > before[key + "win_rate_high"], game
    assert after[key + "invalid_rate"] < before[key + "invalid_rate"], game
