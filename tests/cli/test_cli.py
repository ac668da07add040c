"""Console scripts (pyproject [project.scripts]) and configs found from outside the repository."""

import os
import subprocess
import sys

import pytest

from jaxplay.run import configuration

BIN = os.path.dirname(sys.executable)


def _run(args, cwd):
  result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
  return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("script, args, error", [
    ("jaxplay-eval", ["--workdir={tmp}/missing"], r"missing holds no run"),
    ("jaxplay-export", ["--workdir={tmp}/missing", "--out={tmp}/hf"], r"missing holds no run"),
    ("jaxplay-play", ["--workdir={tmp}/missing", "--game=kuhn_poker"], r"missing holds no run"),
    ("jaxplay-plot", ["--workdir={tmp}/missing"], r"missing holds no metrics.jsonl"),
    ("jaxplay-report", ["--workdir={tmp}/missing"], r"missing holds no metrics.jsonl"),
    ("jaxplay-ratings", ["--workdir={tmp}/missing"], r"missing holds no run"),
])
def test_console_scripts_run_their_entry_points(tmp_path, script, args, error):
  code, output = _run([os.path.join(BIN, script), *(a.format(tmp=tmp_path) for a in args)],
                      cwd=tmp_path)
  assert code == 2 and "Traceback" not in output, output[-2000:]
  assert any(error in line and "error" in line.lower() for line in output.splitlines()), output


def test_train_script_finds_the_shipped_configs_outside_the_repository(tmp_path):
  """From a folder without configs/, `--config=configs/kuhn_nash.py` loads the installed copy
  (which imports configs/spiral.py in turn): the config's own check then names the bad field."""
  code, output = _run([os.path.join(BIN, "jaxplay-train"), "--config=configs/kuhn_nash.py",
                       f"--workdir={tmp_path / 'run'}", "--config.rl.clip_eps=-1"], cwd=tmp_path)
  assert code == 2 and "config.rl.clip_eps=-1" in output and "Traceback" not in output, output
  assert not (tmp_path / "run").exists()


def test_installed_config_prefers_a_file_under_the_current_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  shipped = configuration.installed_config("--config=configs/spiral.py:local")
  assert shipped.endswith(os.path.join("configs", "spiral.py:local")) and os.path.isabs(
      shipped.removeprefix("--config=").removesuffix(":local"))
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "spiral.py").write_text("# the user's own")
  assert configuration.installed_config("--config=configs/spiral.py:local") == (
      "--config=configs/spiral.py:local")
  assert configuration.installed_config("--config=configs/nope.py") == "--config=configs/nope.py"
  assert configuration.installed_config("--workdir=configs/spiral.py") == "--workdir=configs/spiral.py"
