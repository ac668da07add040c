"""Entry point: `python -m jaxplay.main --config=configs/spiral.py[:local] --workdir=DIR`.

Config fields are overridden with `--config.a.b=value`. On multi-host platforms (TPU pods)
`jax.distributed.initialize()` runs first. The loop lives in jaxplay/train.py.
"""

import json
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxplay import configuration, plot, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, plots); "
                               "default: workdir/<config name>.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Start afresh in a workdir that holds another run.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Multi-host: a TPU pod lists its workers; elsewhere the launcher sets the coordinator.
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", "") or os.environ.get(
      "JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
  logging.set_verbosity(logging.WARNING)  # Orbax logs every step at INFO.
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("workdir", os.path.basename(
      flags.FLAGS["config"].config_filename).removesuffix(".py"))
  try:
    summary = train.train(config, workdir, overwrite=_OVERWRITE.value)
  except (configuration.ConfigError, train.WorkdirError) as error:
    raise SystemExit(f"error: {error}") from None
  if jax.process_index() != 0:  # The first process wrote the metrics, plots and transcripts.
    return
  summary["plots"] = plot.plot_workdir(workdir)
  print("\nDone. Where everything is:")
  for key in ("workdir", "checkpoints", "metrics", "tensorboard", "transcripts", "plots"):
    print(f"  {key}: {summary.get(key)}")
  for when in ("first_eval", "last_eval"):
    if when in summary:
      print(f"  {when}: " + json.dumps({k.removeprefix("eval/"): round(v, 3)
                                        for k, v in summary[when].items()
                                        if k.endswith(("/win_rate", "/invalid_rate"))}))


if __name__ == "__main__":
  app.run(main)
