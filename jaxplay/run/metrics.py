"""Metrics: `workdir/metrics.jsonl`, TensorBoard event files (tensorboardX, no TF), optionally
Weights & Biases (`WandbSink`), and console lines.

The workdir may be local or a bucket (jaxplay/run/workdir.py); TensorBoard files in `gs://` need
google-cloud-storage (a dependency of gcsfs).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from typing import Any, Mapping, Sequence

import numpy as np
import tensorboardX
from etils import epath

from jaxplay.run import workdir as workdir_lib


def _scalar(value: Any) -> float | None:
  array = np.asarray(value)
  if array.size != 1 or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
    return None
  return float(array.reshape(()))


def scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """Flattens nested mappings into {"a/b": float}, dropping non-scalar entries."""
  flat = {}
  for key, value in metrics.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(scalars(value, prefix=f"{name}/"))
    elif (number := _scalar(value)) is not None:
      flat[name] = number
  return flat


# Columns of the evaluation table, one row per (game, opponent) (evaluate.outcome_stats).
EVAL_TABLE_COLUMNS = ("games", "win_rate", "win_rate_low", "win_rate_high", "draw_rate",
                      "loss_rate", "invalid_rate", "response_length_mean")


def eval_table_rows(results: Mapping[str, float]) -> list[list[Any]]:
  """[game, opponent, *EVAL_TABLE_COLUMNS] per pair in flat `eval/<game>/<opponent>/<stat>`
  results (None where a stat is missing), in the results' order."""
  stats = {}
  for name, value in results.items():
    parts = name.split("/")
    if len(parts) == 4 and parts[0] == "eval":
      stats.setdefault((parts[1], parts[2]), {})[parts[3]] = value
  return [[game, opponent, *(pair.get(column) for column in EVAL_TABLE_COLUMNS)]
          for (game, opponent), pair in stats.items()]


class WandbSink:
  """Sends a run's metrics to Weights & Biases: the scalars as logged, and at each evaluation a
  table of the results (`eval/table`) and one of the transcripts (`eval/transcripts`).

  `mode="offline"` needs no network or account: wandb writes `<workdir>/wandb/offline-run-*`
  (a `gs://` workdir: `./wandb`), which `wandb sync` uploads later. The wandb run id is kept in
  `<workdir>/wandb/run_id`, so a resumed run logs to the same wandb run (its offline folders sync
  into one); `--overwrite` removes the folder and a fresh run gets a new id.
  """

  def __init__(self, workdir: str, project: str, mode: str, config: Mapping[str, Any]):
    import wandb  # pylint: disable=import-outside-toplevel  (optional and heavy: only when used)
    self._wandb = wandb
    folder = epath.Path(workdir) / "wandb"
    folder.mkdir(parents=True, exist_ok=True)
    id_file = folder / "run_id"
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
    id_file.write_text(run_id)
    local_dir = None if workdir_lib.is_remote(workdir) else os.fspath(workdir)
    self.run = wandb.init(project=project, mode=mode, id=run_id, resume="allow", dir=local_dir,
                          name=epath.Path(workdir).name, config=dict(config))
    self.folder = os.path.dirname(self.run.dir)  # The run's own folder (offline-run-*, run-*).

  def log(self, step: int, flat: Mapping[str, float]) -> None:
    self.run.log(dict(flat), step=step)

  def log_eval(self, step: int, results: Mapping[str, float], transcripts: Sequence[str]) -> None:
    table = self._wandb.Table(columns=["game", "opponent", *EVAL_TABLE_COLUMNS],
                              data=eval_table_rows(results))
    texts = self._wandb.Table(columns=["transcript"], data=[[t] for t in transcripts])
    self.run.log({"eval/table": table, "eval/transcripts": texts}, step=step)

  def close(self) -> None:
    self.run.finish()


class MetricsWriter:
  """Appends one JSON line per call and mirrors the scalars to TensorBoard.

  On opening, records after step `keep_through` are dropped (a resumed run rewrites them; -1 drops
  all, for a run starting from scratch) and the TensorBoard events are rebuilt from the kept
  records, so neither holds a step twice. With `write_files=False` (processes other than the first
  of a multi-host run) it writes nothing and only flattens the metrics. A `sink` (`WandbSink`)
  gets every record too, and closes with the writer.
  """

  def __init__(self, workdir: str, write_files: bool = True, keep_through: int = -1,
               sink: WandbSink | None = None):
    folder = epath.Path(workdir)
    self.path = os.fspath(folder / "metrics.jsonl")
    self._tensorboard = None
    self._sink = sink if write_files else None
    if not write_files:
      return
    folder.mkdir(parents=True, exist_ok=True)
    kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= keep_through] if (
        epath.Path(self.path).exists()) else []
    epath.Path(self.path).write_text("".join(json.dumps(r) + "\n" for r in kept))
    if (folder / "tensorboard").exists():
      (folder / "tensorboard").rmtree()
    self._tensorboard = tensorboardX.SummaryWriter(os.fspath(folder / "tensorboard"))
    for record in kept:
      for name, value in record.items():
        if name not in ("step", "time") and math.isfinite(float(value)):
          self._tensorboard.add_scalar(name, float(value), global_step=record["step"],
                                       walltime=record.get("time"))
    self._tensorboard.flush()

  def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    flat = scalars(metrics)
    if self._tensorboard is None:
      return flat
    record = {"step": int(step), "time": time.time(),
              **{k: (v if math.isfinite(v) else str(v)) for k, v in flat.items()}}
    workdir_lib.append_text(self.path, json.dumps(record) + "\n")
    for name, value in flat.items():
      if math.isfinite(value):  # NaN (a mean over no rows): a gap here, "nan" in metrics.jsonl.
        self._tensorboard.add_scalar(name, value, global_step=int(step))
    self._tensorboard.flush()
    if self._sink is not None:
      self._sink.log(int(step), flat)
    return flat

  def write_eval(self, step: int, results: Mapping[str, float],
                 transcripts: Sequence[str]) -> dict[str, float]:
    """`write` of an evaluation's results; the sink also gets them as tables."""
    flat = self.write(step, results)
    if self._sink is not None:
      self._sink.log_eval(int(step), flat, transcripts)
    return flat

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
    if self._sink is not None:
      self._sink.close()


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Records of a metrics.jsonl file; a torn last line (killed writer) is skipped."""
  records = []
  for line in epath.Path(path).read_text().splitlines():
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return records


class Progress:
  """One console line per step: rates from wall time, ETA from the mean step time so far."""

  def __init__(self, total_steps: int, first_step: int = 0):
    self.total_steps = total_steps
    self._first_step = first_step
    self._start = time.perf_counter()
    self._last = self._start

  def line(self, step: int, metrics: Mapping[str, float], samples: int, tokens: int,
           phases: Mapping[str, str] | None = None) -> str:
    """The step's line; `phases` ({name: duration text}) adds where the step's time went."""
    now = time.perf_counter()
    step_seconds, self._last = now - self._last, now
    done = step - self._first_step
    eta = (now - self._start) / max(done, 1) * (self.total_steps - step)
    fields = [f"step {step}/{self.total_steps}"]
    for label, key in (("reward", "reward_mean"), ("win", "win_rate"),
                       ("invalid", "invalid_rate"), ("resp_len", "response_length_mean"),
                       ("loss", "loss")):
      if key in metrics:
        fields.append(f"{label} {metrics[key]:.3f}")
    fields.append(f"{samples / step_seconds:.1f} samples/s")
    fields.append(f"{tokens / step_seconds:.0f} tok/s")
    fields.extend(f"{name} {text}" for name, text in (phases or {}).items())
    fields.append(f"ETA {_duration(eta)}")
    return " | ".join(fields)


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
