"""Faults and mistakes an operator makes: nothing the user had is lost, every mistake is one line.

The bad-input table runs every entry point (`main`, `evaluate`, `export`, `plot`) in a child
process and asserts a non-zero exit, no traceback, and an `error` line naming the field, flag or
file; the fault tests corrupt checkpoints, overwrite with a config that fails set-up, start two
runs on one workdir, export into a run, and stop a real run with SIGTERM.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxplay import errors
from jaxplay.cli import export
from jaxplay.run import configuration, metrics, store, train
from jaxplay.run import spec as spec_lib
from jaxplay.run import workdir as workdir_lib
from tests import stand_ins

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The tiny Kuhn run, 2 steps, with a constant schedule so train.steps may grow.
RUN = {"train.steps": 2, "optimizer.schedule": "constant"}


def _config(**changes):
  return stand_ins.tiny_kuhn_config(**{**RUN, **changes})


def _record(config) -> dict:
  """The config.json record of a config."""
  return store.config_record(spec_lib.from_mapping(config))


def _main_args(workdir, **changes) -> list[str]:
  return ["-m", "jaxplay.main", "--config=configs/kuhn_nash.py", f"--workdir={workdir}",
          *stand_ins.tiny_kuhn_flags(**{**RUN, **changes})]


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
  return {os.fspath(p.relative_to(folder)): p.read_bytes()
          for p in sorted(folder.rglob("*")) if p.is_file()}


def _fake_run(folder: pathlib.Path, config) -> dict[str, bytes]:
  """A workdir as a run leaves it (config, a checkpoint folder, metrics); returns its files."""
  (folder / "checkpoints" / "2").mkdir(parents=True)
  (folder / "checkpoints" / "2" / "state").write_bytes(b"weights")
  (folder / "config.json").write_text(json.dumps(_record(config)))
  (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
  return _snapshot(folder)


# --- Bad inputs: one line, non-zero exit, no traceback. ---

MAIN = ["-m", "jaxplay.main", "--workdir={tmp}/run"]
KUHN = "--config=configs/kuhn_nash.py"
SPIRAL = "--config=configs/spiral.py"
# name -> (python arguments with {tmp} for the test's folder, regex an error line must match).
BAD_INPUTS = {
    "main_no_config": (MAIN, r"--config"),
    "main_missing_config_file": (MAIN + ["--config=configs/nope.py"], r"configs/nope.py.*No such"),
    "main_config_argument": (MAIN + [KUHN + ":bogus"], r"kuhn_nash.py.*no argument.*bogus"),
    "main_unknown_field": (MAIN + [KUHN, "--config.rl.clipeps=0.1"], r"rl.clipeps.*clip_eps"),
    "main_mistyped_value": (MAIN + [KUHN, "--config.rl.clip_eps=abc"], r"rl.clip_eps.*abc"),
    "main_negative_clip": (MAIN + [KUHN, "--config.rl.clip_eps=-1"], r"config.rl.clip_eps=-1"),
    "main_rae_decay": (MAIN + [KUHN, "--config.rl.rae_decay=5"], r"config.rl.rae_decay=5"),
    "main_eval_temperature": (MAIN + [KUHN, "--config.eval.temperature=-1"],
                              r"config.eval.temperature=-1"),
    "main_top_p_zero": (MAIN + [KUHN, "--config.rollout.top_p=0"], r"config.rollout.top_p=0"),
    "main_warmup": (MAIN + [KUHN, "--config.optimizer.warmup_steps=-1"],
                    r"config.optimizer.warmup_steps=-1"),
    "main_train_temperature_zero": (MAIN + [KUHN, "--config.rollout.temperature=0"],
                                    r"config.rollout.temperature=0"),
    "main_group_of_one": (MAIN + [KUHN, "--config.rl.estimator=grpo", "--config.rl.group_size=1"],
                          r"config.rl.group_size=1"),
    "main_positional": (MAIN + [KUHN, "extra"], r"extra"),
    "main_empty_workdir": (["-m", "jaxplay.main", KUHN, "--workdir="], r"--workdir is empty"),
    "main_workdir_is_a_file": (["-m", "jaxplay.main", KUHN, "--workdir={tmp}/a_file"],
                               r"a_file is a file"),
    "main_bucket_without_gcsfs": (["-m", "jaxplay.main", KUHN, "--workdir=gs://bucket/run"],
                                  r"gcsfs"),
    "main_model_text_file": (MAIN + [SPIRAL, "--config.model.path={tmp}/notes.txt"], r"notes.txt"),
    "main_model_garbage_gguf": (MAIN + [SPIRAL, "--config.model.path={tmp}/model.gguf"],
                                r"model.gguf.*not a GGUF"),
    "evaluate_missing_workdir": (["-m", "jaxplay.cli.evaluate", "--workdir={tmp}/missing"],
                                 r"missing holds no run"),
    "evaluate_truncated_config": (["-m", "jaxplay.cli.evaluate", "--workdir={tmp}/torn"],
                                  r"config.json is not valid JSON"),
    "evaluate_unknown_eval": (["-m", "jaxplay.cli.evaluate", "--workdir={tmp}/missing",
                               "--evals=bogus"], r"bogus"),
    "evaluate_bad_mesh": (["-m", "jaxplay.cli.evaluate", "--workdir={tmp}/missing", "--mesh=a,b"],
                          r"mesh"),
    "export_missing_workdir": (["-m", "jaxplay.cli.export", "--workdir={tmp}/missing",
                                "--out={tmp}/hf"], r"missing holds no run"),
    "export_into_workdir": (["-m", "jaxplay.cli.export", "--workdir={tmp}/torn",
                             "--out={tmp}/torn/hf"],
                            r"--out=.*inside a run's workdir"),
    "export_no_out": (["-m", "jaxplay.cli.export", "--workdir={tmp}/missing"], r"--out"),
    "plot_missing_workdir": (["-m", "jaxplay.cli.plot", "--workdir={tmp}/missing"],
                             r"missing holds no metrics.jsonl"),
}
FAST_BAD_INPUTS = ("main_unknown_field", "main_missing_config_file", "main_workdir_is_a_file",
                   "evaluate_truncated_config")


@pytest.mark.parametrize("name", [
    name if name in FAST_BAD_INPUTS else pytest.param(name, marks=pytest.mark.slow)
    for name in BAD_INPUTS])
def test_bad_input_is_one_line_naming_it(tmp_path, name):
  (tmp_path / "a_file").write_text("not a directory")
  (tmp_path / "model.gguf").write_text("Hello, I am not a GGUF file.")
  (tmp_path / "notes.txt").write_text("weights?")
  (tmp_path / "torn").mkdir()
  (tmp_path / "torn" / "config.json").write_text('{"games": "kuhn_po')
  args, pattern = BAD_INPUTS[name]
  result = subprocess.run([sys.executable, *(a.format(tmp=tmp_path) for a in args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
  output = result.stdout + result.stderr
  assert result.returncode != 0, output[-2000:]
  assert "Traceback" not in output, output[-3000:]
  assert any(re.search(pattern, line) for line in output.splitlines()
             if "error" in line.lower()), output[-2000:]
  assert not (tmp_path / "run").exists()  # A refused start leaves nothing behind.


# --- Workdir: checked before it is touched, locked while a run trains. ---


def test_changed_fields_are_named_and_a_run_may_be_extended(tmp_path):
  config = _config()
  _fake_run(tmp_path, config)
  ours = _record(_config(**{"rl.clip_eps": 0.3, "train.steps": 8}))
  with pytest.raises(workdir_lib.WorkdirError, match=r"differs in rl.clip_eps\)"):
    workdir_lib.check_resumable(tmp_path, ours, has_checkpoints=True)
  workdir_lib.check_resumable(tmp_path, ours, has_checkpoints=False)  # Nothing to continue.
  longer = _record(_config(**{"train.steps": 8, "train.eval_every": 4}))
  workdir_lib.check_resumable(tmp_path, longer, has_checkpoints=True)
  # A run recorded before a field with a default existed resumes when ours keeps that default,
  # and not when ours changes it.
  older = _record(config)
  older["rl"].pop("forfeit_credit")
  (tmp_path / "config.json").write_text(json.dumps(older))
  workdir_lib.check_resumable(tmp_path, _record(config), has_checkpoints=True)
  changed = _record(_config(**{"rl.forfeit_credit": "answer"}))
  with pytest.raises(workdir_lib.WorkdirError, match=r"differs in rl.forfeit_credit\)"):
    workdir_lib.check_resumable(tmp_path, changed, has_checkpoints=True)
  # The same for a game option added later (kuhn_poker's payoff): kept at its default, the run
  # resumes; another value is refused by name.
  ours = _record(config)
  assert ours["game_options"]["kuhn_poker"]["payoff"] == ""
  older = _record(config)
  del older["game_options"]["kuhn_poker"]["payoff"]
  (tmp_path / "config.json").write_text(json.dumps(older))
  workdir_lib.check_resumable(tmp_path, ours, has_checkpoints=True)
  ours["game_options"]["kuhn_poker"]["payoff"] = "win"
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r"differs in game_options.kuhn_poker.payoff\)"):
    workdir_lib.check_resumable(tmp_path, ours, has_checkpoints=True)
  cosine = _config(**{"optimizer.schedule": "cosine"})
  (tmp_path / "config.json").write_text(json.dumps(_record(cosine)))
  with pytest.raises(workdir_lib.WorkdirError, match=r"differs in train.steps\)"):
    workdir_lib.check_resumable(
        tmp_path, _record(_config(**{"optimizer.schedule": "cosine",
                                                 "train.steps": 8})), has_checkpoints=True)


def test_overwrite_with_a_config_that_fails_setup_keeps_the_old_run(tmp_path):
  """Prompt lengths are checked in set-up, after validation: the old run must survive that, and a
  failed start in a new folder leaves nothing behind (so the corrected command is accepted)."""
  old = tmp_path / "old"
  old.mkdir()
  before = _fake_run(old, _config())
  failing = _config(**{"rollout.max_prompt_len": 20})
  configuration.validate(failing)
  with pytest.raises(configuration.ConfigError, match="max_prompt_len=20"):
    train.train(failing, os.fspath(old), overwrite=True)
  assert _snapshot(old) == before
  with pytest.raises(configuration.ConfigError, match="max_prompt_len=20"):
    train.train(failing, os.fspath(tmp_path / "new"))
  assert not (tmp_path / "new").exists()


def test_overwrite_removes_the_whole_old_run_and_nothing_else(tmp_path):
  for name in ("tensorboard", "wandb", "transcripts", "plots", "eval_samples", "checkpoints"):
    (tmp_path / name).mkdir()
    (tmp_path / name / "file").write_text("old")
  for name in ("config.json", "metrics.jsonl", "report.html", "evals.jsonl", "notes.txt"):
    (tmp_path / name).write_text("old")
  removed = workdir_lib.remove_run(tmp_path)
  assert sorted(removed) == sorted(workdir_lib.RUN_ENTRIES)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # Not the run's: kept.


def test_run_lock_refuses_a_live_holder_and_takes_over_a_gone_one(tmp_path, capsys):
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (tmp_path / "lock.json").write_text(json.dumps(
        {"host": workdir_lib.socket.gethostname(), "pid": holder.pid, "started": "earlier"}))
    with pytest.raises(workdir_lib.WorkdirError, match=f"in use by process {holder.pid}"):
      workdir_lib.RunLock(tmp_path).check()
    with pytest.raises(workdir_lib.WorkdirError, match=f"in use by process {holder.pid}"):
      workdir_lib.RunLock(tmp_path).acquire()
    # A process on another host cannot be checked from here: refused too.
    (tmp_path / "lock.json").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(workdir_lib.WorkdirError, match="on elsewhere"):
      workdir_lib.RunLock(tmp_path).acquire()
  finally:
    holder.kill()
    holder.wait()
  for gone in (json.dumps({"host": workdir_lib.socket.gethostname(), "pid": holder.pid}),
               '{"host": "vm", "pi'):  # A dead process's lock, and one torn while written.
    (tmp_path / "lock.json").write_text(gone)
    with workdir_lib.RunLock(tmp_path) as lock:
      assert json.loads(lock.file.read_text())["pid"] == os.getpid()
      with pytest.raises(workdir_lib.WorkdirError, match=f"in use by process {os.getpid()}"):
        workdir_lib.RunLock(tmp_path).acquire()
    assert not (tmp_path / "lock.json").exists()
    assert "stale lock" in capsys.readouterr().out


def test_export_into_a_run_is_refused(tmp_path):
  before = _fake_run(tmp_path, _config())
  for out in (tmp_path, tmp_path / "hf"):
    with pytest.raises(workdir_lib.WorkdirError, match="inside a run's workdir"):
      export.export_run(os.fspath(tmp_path), os.fspath(out))
  assert _snapshot(tmp_path) == before


def test_user_errors_print_one_line_and_exit_2(capsys):
  @errors.user_facing
  def main():
    raise workdir_lib.WorkdirError("--workdir=x is a file, not a directory.")
  with pytest.raises(SystemExit) as exit_info:
    main()
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == "error: --workdir=x is a file, not a directory.\n"


# --- Whole runs: extension, corrupt checkpoints, signals, concurrent starts. ---


def _records(workdir) -> list[tuple[int, bool]]:
  """(step, is an evaluation) of each metrics record."""
  return [(r["step"], any(k.startswith("eval/") for k in r))
          for r in metrics.read_jsonl(os.fspath(workdir / "metrics.jsonl"))]


@pytest.mark.slow
def test_extend_then_recover_from_corrupt_checkpoints(tmp_path, capsys):
  workdir = tmp_path / "run"
  train.train(_config(), os.fspath(workdir))
  summary = train.train(_config(**{"train.steps": 4}), os.fspath(workdir))  # Extended.
  assert summary["start_step"] == 2 and summary["final_step"] == 4
  assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == 4
  expected = [(0, True), (1, False), (2, False), (2, True), (3, False), (4, False), (4, True)]
  assert _records(workdir) == expected
  _, _, state, _ = store.load_run(os.fspath(workdir))
  params = jax.device_get(state.params)

  checkpoints_dir = workdir / "checkpoints"
  target = max((p for p in (checkpoints_dir / "4").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
  target.write_bytes(target.read_bytes()[:100])
  capsys.readouterr()
  summary = train.train(_config(**{"train.steps": 4}), os.fspath(workdir))
  assert summary["start_step"] == 2 and "corrupt_4" in capsys.readouterr().out
  assert sorted(p.name for p in checkpoints_dir.iterdir()) == ["2", "4", "corrupt_4"]
  assert _records(workdir) == expected
  _, _, state, step = store.load_run(os.fspath(workdir))
  assert step == 4  # The redone step is saved again, and equal (the run is deterministic).
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(jax.device_get(state.params))):
    np.testing.assert_array_equal(a, b)

  for step in (2, 4):
    target = max((p for p in (checkpoints_dir / str(step)).rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    target.write_bytes(target.read_bytes()[:100])
  summary = train.train(_config(**{"train.steps": 4}), os.fspath(workdir))
  assert summary["start_step"] == 0 and "starting from scratch" in capsys.readouterr().out
  assert (checkpoints_dir / "4").is_dir()  # Retrained: no eval at 2, which ended the 2-step run.
  assert _records(workdir) == [r for r in expected if r != (2, True)]


@pytest.mark.slow
def test_sigterm_stops_with_a_checkpoint_and_a_second_run_is_refused(tmp_path):
  """SIGTERM (what schedulers send) stops at a step boundary with a checkpoint, exit 143; while
  the run holds the workdir a second one is refused in one line; the same command resumes."""
  workdir = tmp_path / "run"
  args = _main_args(workdir, **{"train.steps": 100, "train.checkpoint_every": 100})
  child = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 600
  while time.time() < deadline and child.poll() is None and not any(
      not evaluation for _, evaluation in (_records(workdir) if (
          workdir / "metrics.jsonl").exists() else [])):
    time.sleep(0.1)
  second = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
  assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
  assert f"in use by process {child.pid}" in second.stderr
  child.send_signal(signal.SIGTERM)
  output, _ = child.communicate(timeout=300)
  assert child.returncode == 128 + signal.SIGTERM, output[-2000:]
  assert "Traceback" not in output, output[-2000:]
  stopped = [line for line in output.splitlines() if line.startswith("Stopped by SIGTERM")]
  assert len(stopped) == 1, output[-2000:]
  step = int(stopped[0].split("after step ")[1].split(";")[0])
  assert 1 <= step < 100 and not (workdir / "lock.json").exists()
  _, _, _, restored = store.load_run(os.fspath(workdir))
  assert restored == step
  assert [s for s, evaluation in _records(workdir) if not evaluation] == list(range(1, step + 1))


def test_unwritable_workdir_is_refused_before_anything_is_written(tmp_path, monkeypatch):
  monkeypatch.setattr(os, "access", lambda path, mode: False)  # As for a non-root user.
  with pytest.raises(workdir_lib.WorkdirError, match=r"is not writable"):
    workdir_lib.check_writable(tmp_path / "run" / "nested")
  assert not (tmp_path / "run").exists()
