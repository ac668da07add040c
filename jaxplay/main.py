"""Entry point: `python -m jaxplay.main --config=configs/spiral.py[:local] --workdir=DIR`.

Config fields are overridden with `--config.a.b=value`. On multi-host platforms (TPU pods)
`jax.distributed.initialize()` runs first. The loop lives in jaxplay/run/train.py. Mistakes in
flags, config or workdir print one `error:` line and exit 2; a run stopped by SIGINT or SIGTERM
saves a checkpoint and exits 128 + the signal's number (130, 143).
"""

import json
import os
import re
import signal
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxplay import errors
from jaxplay.cli import plot, report
from jaxplay.run import configuration, programs, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, plots); "
                               "default: workdir/<config name>.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Start afresh in a workdir that holds another run.")
flags.mark_flag_as_required("config")


def _flag_naming(argv: list[str], message: str) -> str:
  """The `--config.` override an error names (by its field), else '--config'."""
  names = re.findall(r"'(\w+)'", message)
  for arg in argv[1:]:
    if arg.startswith("--config.") and any(re.search(rf"\.{n}(=|$)", arg) for n in names):
      return arg
  return "--config"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with every failure (a config file whose get_config raises, an unknown or
  mistyped `--config.` field, a flag's bad value) reported in one line instead of a traceback."""
  argv = [configuration.installed_config(arg) for arg in argv]
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
    text = str(error)
    if isinstance(error, (AttributeError, KeyError)):  # A repr'd message: 'key'\nDid you mean..
      text = text.strip("'\"").replace("\\n", "\n").replace("\\'", "'").replace('\\"', '"')
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Error whilst parsing config file" in text:  # get_config raised: its last line says why.
      errors.fail(f"--config: {lines[-1]}")
    if isinstance(error, flags.Error):
      errors.fail(lines[0])
    message = " ".join(lines)
    errors.fail(f"{_flag_naming(argv, message)}: no such config field or bad value ({message}).")


def _load_config():
  """The --config value; a config file that failed to load is a one-line error."""
  config = _CONFIG.value
  try:
    config.keys()  # ml_collections defers a load failure to the first use of the config.
  except OSError as error:
    reason = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
    raise errors.UserError(f"--config={flags.FLAGS['config'].config_filename}: cannot load it: "
                           f"{reason}") from None
  return config


CACHE_MAX_BYTES = 8 * 2**30  # JAX evicts the least recently used programs beyond this.


def use_compilation_cache(path: str) -> None:
  """Keeps every compiled program (even quick ones) in `path` ('' = off) for later starts, and
  the traced ones in its folder `programs` (jaxplay/run/programs.py)."""
  if not path:
    return
  programs.save_in(os.path.join(os.path.expanduser(path), "programs"))
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)


@errors.user_facing
def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f"unexpected arguments {argv[1:]}; every option is a --flag.")
  # Multi-host: a TPU pod lists its workers; elsewhere the launcher sets the coordinator.
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", "") or os.environ.get(
      "JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
  logging.set_verbosity(logging.WARNING)  # Orbax logs every step at INFO.
  config = _load_config()
  workdir = _WORKDIR.value
  if workdir is None:
    workdir = os.path.join("workdir", os.path.basename(
        flags.FLAGS["config"].config_filename).removesuffix(".py"))
  use_compilation_cache(config.train.compilation_cache)
  summary = train.train(config, workdir, overwrite=_OVERWRITE.value)
  if "stopped_by" in summary:
    print(f"Stopped by {summary['stopped_by']} after step {summary['final_step']}; its "
          "checkpoint is saved. Run the same command to continue.", flush=True)
    number = getattr(signal.Signals, summary["stopped_by"], signal.SIGTERM)
    sys.exit(128 + int(number))
  if jax.process_index() != 0:  # The first process wrote the metrics, plots and transcripts.
    return
  summary["plots"] = plot.plot_workdir(workdir)
  summary["report"] = report.write_report(workdir, summary["plots"])
  print("\nDone. Where everything is:")
  for key in ("workdir", "checkpoints", "metrics", "tensorboard", "wandb", "transcripts", "plots",
              "report"):
    if key in summary or key != "wandb":
      print(f"  {key}: {summary.get(key)}")
  for when in ("first_eval", "last_eval"):
    if when in summary:
      print(f"  {when}: " + json.dumps({k.removeprefix("eval/"): round(v, 3)
                                        for k, v in summary[when].items()
                                        if k.endswith(("/win_rate", "/invalid_rate"))}))


def run() -> None:
  """The `jaxplay-train` console script."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
