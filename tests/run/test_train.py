"""The training program end to end on a tiny from-scratch model: resume after a hard kill is
bit-identical, metrics/transcripts/plots are written, a foreign workdir is refused."""

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import game as game_config
from jaxplay.models import transformer
from jaxplay.run import configuration, metrics, store, train
from jaxplay.run import workdir as workdir_lib
from tests import stand_ins
from tests.run.test_metrics import wandb_history

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _params(workdir):
  config, _, state, step = store.load_run(workdir)
  del config
  return step, jax.device_get(state.params), jax.device_get(state.opt_state)


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_resume_after_hard_kill_is_bit_identical(tmp_path):
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  summary = train.train(stand_ins.tiny_kuhn_config(), straight)
  assert summary["final_step"] == 4 and os.path.exists(summary["transcripts"])
  assert [r["step"] for r in metrics.read_jsonl(summary["metrics"]) if "loss" in r] == [1, 2, 3, 4]

  command = [sys.executable, "-m", "jaxplay.main", "--config=configs/kuhn_nash.py",
             f"--workdir={killed}"] + stand_ins.tiny_kuhn_flags()
  child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  finished_two = os.path.join(killed, "checkpoints", "2", "_CHECKPOINT_METADATA")
  deadline = time.time() + 600
  while not os.path.exists(finished_two) and child.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  child.send_signal(signal.SIGKILL)
  child.wait()
  assert os.path.exists(finished_two), "the child never wrote its step-2 checkpoint"
  assert not os.path.exists(os.path.join(killed, "checkpoints", "4"))

  resumed = train.train(stand_ins.tiny_kuhn_config(), killed)
  assert resumed["start_step"] in (2, 3) and resumed["final_step"] == 4
  step_a, params_a, opt_a = _params(straight)
  step_b, params_b, opt_b = _params(killed)
  assert step_a == step_b == 4
  _assert_trees_equal(params_a, params_b)
  _assert_trees_equal(opt_a, opt_b)


def test_load_run_takes_a_mesh_for_fewer_devices(tmp_path):
  """A run whose config names more devices than this process has loads with a mesh override."""
  config = stand_ins.tiny_kuhn_config()
  _, state = stand_ins.saved_run(tmp_path, config, step=2)
  config.mesh.data = 2  # As if it had trained on two devices.
  (tmp_path / "config.json").write_text(config.to_json_best_effort(sort_keys=True))
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r"mesh data=2 .* has 2 devices, but there are 1.*--mesh=-1,1,1"):
    store.load_run(str(tmp_path))
  loaded, _, restored, step = store.load_run(str(tmp_path), mesh={"data": -1, "fsdp": 1, "tensor": 1})
  assert step == 2 and loaded.mesh.data == -1
  _assert_trees_equal(jax.device_get(restored.params), jax.device_get(state.params))


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_before_exiting(tmp_path):
  """SIGINT mid-run (no checkpoint due for 100 steps): the step reached is saved and loadable."""
  workdir = str(tmp_path / "interrupted")
  command = [sys.executable, "-m", "jaxplay.main", "--config=configs/kuhn_nash.py",
             f"--workdir={workdir}"] + stand_ins.tiny_kuhn_flags(
                 **{"train.steps": 100, "train.checkpoint_every": 100})
  child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 600
  while time.time() < deadline and child.poll() is None and not any(
      "loss" in r for r in (metrics.read_jsonl(metrics_path)
                            if os.path.exists(metrics_path) else [])):
    time.sleep(0.1)
  child.send_signal(signal.SIGINT)
  output, _ = child.communicate(timeout=300)
  assert child.returncode == 128 + signal.SIGINT and "Traceback" not in output, output[-2000:]
  saved = [int(line.split("after step ")[1].split(";")[0]) for line in output.splitlines()
           if line.startswith("Stopped by SIGINT after step")]
  assert len(saved) == 1 and 1 <= saved[0] < 100, output[-2000:]
  _, _, _, step = store.load_run(workdir)
  assert step == saved[0]
  losses = [r["step"] for r in metrics.read_jsonl(metrics_path) if "loss" in r]
  assert losses == list(range(1, step + 1))


@pytest.mark.slow
def test_a_second_start_compiles_nothing(tmp_path):
  """With train.compilation_cache set, a second start of the same config (another workdir) finds
  every program in the cache, compiled and traced: it adds no entry to either."""
  cache = tmp_path / "cache"
  flags = stand_ins.tiny_kuhn_flags(**{"train.steps": 2, "train.compilation_cache": cache})
  entries = []
  for run in ("first", "second"):
    command = [sys.executable, "-m", "jaxplay.main", "--config=configs/kuhn_nash.py",
               f"--workdir={tmp_path / run}"] + flags
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    entries.append(sorted(os.listdir(cache)) + sorted(os.listdir(cache / "programs")))
  assert len(entries[0]) > 10 and entries[1] == entries[0]
  assert any(name.startswith("collect-") for name in entries[1])


def test_a_run_logs_to_wandb_offline(tmp_path):
  """config.train.wandb_project: the run's scalars and evaluations reach an offline wandb run in
  the workdir, step by step as in metrics.jsonl (in a child process: wandb leaves service
  threads in the process that logs)."""
  command = [sys.executable, "-m", "jaxplay.main", "--config=configs/kuhn_nash.py",
             f"--workdir={tmp_path / 'run'}"] + stand_ins.tiny_kuhn_flags(
                 **{"train.steps": 1, "train.eval_every": 1, "train.wandb_project": "jaxplay-test"})
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "WANDB_SILENT": "true"}, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  [folder] = [line.split(": ", 1)[1] for line in result.stdout.splitlines()
              if line.startswith("  wandb: ")]
  assert folder.startswith(str(tmp_path / "run" / "wandb" / "offline-run-"))
  history = dict(wandb_history(folder))
  records = {r["step"]: r for r in metrics.read_jsonl(str(tmp_path / "run" / "metrics.jsonl"))}
  assert sorted(history) == [0, 1]
  for step, logged in history.items():
    scalars = {k: v for k, v in logged.items() if k in records[step]}
    assert scalars == {k: v for k, v in records[step].items() if k not in ("step", "time")}
    assert logged["eval/table/nrows"] == 2  # Kuhn Poker against random and optimal.


@pytest.mark.slow
def test_a_lora_run_trains_and_checkpoints_only_its_adapters(tmp_path):
  """model.lora_rank: the base weights stay bit for bit as loaded, the adapters move, the
  checkpoints hold the adapters and optimizer state only, and a resumed run continues exactly."""
  def lora_config(steps):
    config = stand_ins.tiny_kuhn_config()
    config.model.update(lora_rank=4, lora_alpha=8.0, lora_targets="q,v,down")
    config.optimizer.update(learning_rate=1e-2, schedule="constant")  # train.steps may grow.
    config.train.update(steps=steps, checkpoint_every=1)
    return config

  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train.train(lora_config(2), straight)
  train.train(lora_config(1), resumed)
  train.train(lora_config(2), resumed)  # Resumes from step 1 (only train.steps changed).
  _, initial, _, _ = store.setup(configuration.validate(lora_config(2)))
  _, _, state, step = store.load_run(straight)
  assert step == 2
  moved = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(state.params)):
    before = np.asarray(functools.reduce(lambda t, k: t[k.key], path, initial.params))
    if transformer.is_adapter(path):
      moved += not np.array_equal(leaf, before)
    else:
      np.testing.assert_array_equal(leaf, before, err_msg=jax.tree_util.keystr(path))
  assert moved == 6  # Every A and B of q, v and down.
  _assert_trees_equal(_params(straight), _params(resumed))
  index = json.loads((tmp_path / "straight" / "checkpoints" / "2" / "state" / "_METADATA"
                      ).read_text())["tree_metadata"]
  saved = {k for k, v in index.items() if v["value_metadata"]["value_type"] != "None"}
  assert any("q_lora_a" in k for k in saved) and not any("embedding" in k for k in saved)


def population_config(steps):
  return stand_ins.tiny_kuhn_config(**{
      "rollout.seats": "population", "population.size": 2, "population.snapshot_every": 1,
      "population.counters": 2, "population.cross_play": 0.5,
      "population.sampling": "pfsp_hard", "train.steps": steps, "train.checkpoint_every": 1,
      "optimizer.schedule": "constant"})


def test_a_population_run_with_counter_policies_snapshots_both(tmp_path):
  """rollout.seats=population with population.counters (FXP): the pool gains a snapshot of the
  learner every snapshot_every steps (the oldest replaced once full) and one of the counter
  policy, a second train state trained in the same step on its own games against the learner's
  snapshots; the learner plays the pool's members. Pool and counter policy are in the
  checkpoint."""
  summary = train.train(population_config(3), str(tmp_path))
  _, _, state, step = store.load_run(str(tmp_path))
  assert step == 3 and int(state.counter.step) == 3
  pool = jax.device_get(state.pool)
  assert int(pool.size) == 2
  assert sorted(np.asarray(pool.step).tolist()) == [2, 3]  # Steps 0 and 1 were replaced.
  newest = jax.tree.map(lambda x: x[int(pool.newest)], pool.params)
  _assert_trees_equal(newest, jax.device_get(state.params))  # The last snapshot: step 3's.
  assert sorted(np.asarray(pool.counter_step).tolist()) == [2, 3]  # Step 1's replaced.
  newest_counter = int(np.argmax(pool.counter_step)) + pool.capacity
  _assert_trees_equal(jax.tree.map(lambda x: x[newest_counter], pool.params),
                      jax.device_get(state.counter.params))
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.counter.params),
                                                      jax.tree.leaves(state.params)))
  rows = [r for r in metrics.read_jsonl(summary["metrics"]) if "population/size" in r]
  assert [r["population/size"] for r in rows] == [2, 2, 2]
  assert [r["population/counter_size"] for r in rows] == [1, 2, 2]
  assert all(0 <= r["population/learner_score"] <= 1 and 0 <= r["population/counter_score"] <= 1
             for r in rows)
  assert all("counter/loss" in r and "rollout/counter/kuhn_poker/invalid_rate" in r
             for r in rows)
  evals = [r for r in metrics.read_jsonl(summary["metrics"])
           if "eval/kuhn_poker/population_exploitability" in r]
  assert [r["step"] for r in evals] == [0, 3]
  # At step 0 the pool is the initial params alone: its average is the learner.
  assert evals[0]["eval/kuhn_poker/population_exploitability"] == pytest.approx(
      evals[0]["eval/kuhn_poker/exploitability"], abs=1e-6)


@pytest.mark.slow
def test_a_population_run_resumed_from_its_checkpoint_ends_as_one_that_did_not_stop(tmp_path):
  """The pool, the counter policy and the learner of a run resumed from step 2 equal those of the
  run that did not stop."""
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train.train(population_config(3), straight)
  train.train(population_config(2), resumed)
  train.train(population_config(3), resumed)
  _, _, state, _ = store.load_run(straight)
  _, _, resumed_state, _ = store.load_run(resumed)
  _assert_trees_equal(jax.device_get(resumed_state.pool), jax.device_get(state.pool))
  _assert_trees_equal(_params(straight), _params(resumed))
  counters = [jax.device_get(s.counter.replace(rng=jax.random.key_data(s.counter.rng)))
              for s in (state, resumed_state)]
  _assert_trees_equal(*counters)


def test_an_exact_counter_oracle_run_plays_no_counter_games(tmp_path):
  """population.counter_oracle=exact: the counter policy learns by distilling the exact best
  response to the learner's snapshots (no games of its own), and its snapshots join the pool."""
  config = stand_ins.tiny_kuhn_config(**{
      "rollout.seats": "population", "population.size": 2, "population.snapshot_every": 1,
      "population.counters": 2, "population.cross_play": 0.5,
      "population.counter_oracle": "exact", "population.counter_updates": 2, "train.steps": 2,
      "train.eval_every": 2, "optimizer.schedule": "constant"})
  summary = train.train(config, str(tmp_path))
  _, _, state, step = store.load_run(str(tmp_path))
  assert step == 2 and int(state.counter.step) == 2
  pool = jax.device_get(state.pool)
  assert sorted(np.asarray(pool.counter_step).tolist()) == [1, 2]
  newest_counter = int(np.argmax(pool.counter_step)) + pool.capacity
  _assert_trees_equal(jax.tree.map(lambda x: x[newest_counter], pool.params),
                      jax.device_get(state.counter.params))
  rows = [r for r in metrics.read_jsonl(summary["metrics"]) if "population/size" in r]
  assert [r["population/counter_size"] for r in rows] == [1, 2]
  for row in rows:
    assert row["counter/best_response_cross_entropy"] < row[
        "counter/best_response_cross_entropy_start"]
    assert 0 < row["counter/snapshots_exploitability"] < 1
    assert not any(k.startswith("rollout/counter/") or k == "population/counter_score"
                   for k in row)


def rlvr_config():
  """Two GRPO steps on one-digit arithmetic; held-out accuracy at difficulties 1 and 2."""
  config = stand_ins.tiny_kuhn_config(**{
      "rollout.mode": "text", "rollout.seats": "self_play", "rollout.max_response_len": 6,
      "rollout.games_per_batch": 8, "rollout.samples_per_step": 8, "rl.estimator": "grpo",
      "rl.group_size": 4, "train.steps": 2, "train.eval_every": 2, "eval.opponents": "",
      "eval.heldout_games": "", "eval.task_difficulties": "1,2", "eval.games_per_seat": 4})
  config.games = "arithmetic"
  config.game_options = {"arithmetic": {"difficulty": 1, "digits": 1}}
  return config


def test_an_rlvr_run_trains_on_a_task_and_evaluates_its_heldout_split(tmp_path):
  """A verifiable task through the same loop: groups of answers to one problem, GRPO, the
  task's rollout accuracy, and held-out accuracy per difficulty with its interval."""
  summary = train.train(rlvr_config(), str(tmp_path))
  rows = metrics.read_jsonl(summary["metrics"])
  steps = [r for r in rows if "loss" in r]
  assert [r["step"] for r in steps] == [1, 2]
  assert all(0 <= r["rollout/arithmetic/accuracy"] <= 1 for r in steps)
  evals = [r for r in rows if "eval/arithmetic/difficulty_1/accuracy" in r]
  assert [r["step"] for r in evals] == [0, 2]
  for row in evals:
    for difficulty in (1, 2):
      prefix = f"eval/arithmetic/difficulty_{difficulty}/"
      assert row[prefix + "games"] == 8
      low, high = row[prefix + "accuracy_low"], row[prefix + "accuracy_high"]
      assert low <= row[prefix + "accuracy"] <= high
      assert 0 <= row[prefix + "invalid_rate"] <= 1
  transcript = open(summary["transcripts"]).read()
  assert "=== arithmetic: learner, held-out difficulty_2 ===" in transcript
  assert "How many" in transcript and ">>> response:" in transcript


def iterative_spo_config(steps, switch="cadence"):
  config = stand_ins.tiny_kuhn_config(**{
      "rollout.mode": "text", "rollout.seats": "self_play", "rollout.max_response_len": 6,
      "rollout.games_per_batch": 4, "rollout.samples_per_step": 4, "rollout.max_prompt_len": 320,
      "rl.estimator": "grpo",
      "rl.group_size": 2, "train.steps": steps, "train.eval_every": 100,
      "train.checkpoint_every": 1, "eval.opponents": "random", "eval.heldout_games": "",
      "eval.games_per_seat": 2, "eval.kuhn_samples": 0, "optimizer.schedule": "constant",
      "schedule.mode": "iterative_spo", "schedule.switch": switch, "schedule.cadence": 2,
      "schedule.patience": 1, "schedule.tolerance": 1.0})
  config.games = "kuhn_poker,arithmetic"
  config.game_options = {"arithmetic": {"difficulty": 1, "digits": 1}}
  return config


def test_iterative_spo_alternates_phases_and_checkpoints_them(tmp_path):
  """schedule.mode=iterative_spo: each step trains one phase's games (Kuhn self-play, then the
  arithmetic task, two steps each), the phase is logged per step and checkpointed."""
  summary = train.train(iterative_spo_config(3), str(tmp_path))
  rows = [r for r in metrics.read_jsonl(summary["metrics"]) if "loss" in r]
  assert [r["schedule/phase"] for r in rows] == [0, 0, 1]
  assert [r["schedule/phase_steps"] for r in rows] == [1, 2, 1]
  assert ["rollout/kuhn_poker/invalid_rate" in r for r in rows] == [True, True, False]
  assert ["rollout/arithmetic/accuracy" in r for r in rows] == [False, False, True]
  _, _, final, _ = store.load_run(str(tmp_path))
  assert int(final.schedule.phase) == 1 and int(final.schedule.since) == 2


@pytest.mark.slow
def test_iterative_spo_resumed_inside_a_phase_ends_as_one_that_did_not_stop(tmp_path):
  """A run resumed after step 1 (inside the games phase) ends as one that did not stop."""
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train.train(iterative_spo_config(3), straight)
  train.train(iterative_spo_config(1), resumed)
  _, _, state, step = store.load_run(resumed)
  assert step == 1 and int(state.schedule.phase) == 0 and int(state.schedule.since) == 0
  train.train(iterative_spo_config(3), resumed)
  _assert_trees_equal(_params(straight), _params(resumed))
  _, _, final, _ = store.load_run(straight)
  _, _, final_resumed, _ = store.load_run(resumed)
  _assert_trees_equal(jax.device_get(final.schedule), jax.device_get(final_resumed.schedule))


def test_the_game_config_trains_any_game_at_the_prompt_length_it_needs(tmp_path, capsys):
  """configs/game.py:matrix_game with a parallel family: rollout.max_prompt_len=0 resolves to the
  game's longest prompt, and the run evaluates against every registered opponent."""
  config = game_config.get_config("matrix_game")
  config.game_options.matrix_game.update(payoffs="family:all", parallel=2)
  for field, value in {**stand_ins.TINY_KUHN_RUN, "rollout.max_prompt_len": 0,
                       "train.steps": 1, "train.eval_every": 1}.items():
    section, name = field.split(".")
    config[section][name] = value
  summary = train.train(config, str(tmp_path))
  found = re.search(r"rollout.max_prompt_len=0: the longest prompt of the run's games takes "
                    r"(\d+) tokens", capsys.readouterr().out)
  assert found and int(found.group(1)) > 0
  rows = metrics.read_jsonl(summary["metrics"])
  evals = [r for r in rows if "eval/matrix_game/tit_for_tat/win_rate" in r]
  assert [r["step"] for r in evals] == [0, 1]
  assert "eval/matrix_game/always_second/nash_action_rate" in evals[0]
