"""Metrics writers: JSONL records, TensorBoard events, torn lines, console progress."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from jaxplay.run import metrics, workdir


def test_scalars_flattens_and_drops_non_scalars():
  flat = metrics.scalars({"loss": jnp.float32(0.5), "eval": {"kuhn": {"win": np.array([0.25])}},
                          "hist": np.zeros(3), "name": "x", "ok": True})
  assert flat == {"loss": 0.5, "eval/kuhn/win": 0.25, "ok": 1.0}


def _tensorboard_scalars(logdir):
  values = {}
  for name in os.listdir(logdir):
    with open(os.path.join(logdir, name), "rb") as f:
      data = f.read()
    offset = 0
    while offset < len(data):  # TFRecord framing: u64 length, u32 crc, data, u32 crc.
      length = int.from_bytes(data[offset:offset + 8], "little")
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 16 + length
      for v in event.summary.value:
        values[(v.tag, event.step)] = v.simple_value
  return values


def test_writer_jsonl_and_tensorboard(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path))
  writer.write(1, {"loss": 2.0, "kl": float("nan")})
  writer.write(2, {"loss": 1.5})
  writer.close()
  records = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert [(r["step"], r["loss"]) for r in records] == [(1, 2.0), (2, 1.5)]
  assert records[0]["kl"] == "nan"
  tb = _tensorboard_scalars(str(tmp_path / "tensorboard"))
  assert tb[("loss", 1)] == 2.0 and tb[("loss", 2)] == 1.5 and ("kl", 1) not in tb


@pytest.mark.parametrize("remote", [False, True])
def test_writer_appends_locally_and_rewrites_in_buckets(tmp_path, monkeypatch, remote):
  """Bucket objects cannot be appended to: there each record rewrites the file (here on a local
  path taken for a bucket one); a reopened writer continues the same file."""
  monkeypatch.setattr(workdir, "is_remote", lambda path: remote)
  for step in (1, 2):
    writer = metrics.MetricsWriter(str(tmp_path / "run"), keep_through=step - 1)
    writer.write(step, {"loss": 1.0 / step})
    writer.close()
  records = metrics.read_jsonl(str(tmp_path / "run" / "metrics.jsonl"))
  assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 0.5)]


def test_writer_of_other_processes_writes_nothing(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path / "run"), write_files=False)
  assert writer.write(1, {"loss": jnp.float32(0.5)}) == {"loss": 0.5}
  writer.close()
  assert not (tmp_path / "run").exists()


def test_absolute_keeps_bucket_uris(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert workdir.absolute("runs/a") == str(tmp_path / "runs" / "a")
  assert workdir.absolute("gs://bucket/runs/a") == "gs://bucket/runs/a"


def test_reopening_drops_later_records_and_rebuilds_tensorboard(tmp_path):
  """A resumed run (keep_through=2) and a fresh start (-1) leave no step twice in either file; a
  torn last line (killed writer) is skipped."""
  path = tmp_path / "metrics.jsonl"
  writer = metrics.MetricsWriter(str(tmp_path))
  for step in (1, 2, 3):
    writer.write(step, {"loss": float(step)})
  writer.close()
  with path.open("a") as f:
    f.write('{"step": 4, "lo')
  assert [r["step"] for r in metrics.read_jsonl(str(path))] == [1, 2, 3]
  writer = metrics.MetricsWriter(str(tmp_path), keep_through=2)
  writer.write(3, {"loss": 30.0})
  writer.close()
  assert [(r["step"], r["loss"]) for r in metrics.read_jsonl(str(path))] == [
      (1, 1.0), (2, 2.0), (3, 30.0)]
  assert _tensorboard_scalars(str(tmp_path / "tensorboard")) == {
      ("loss", 1): 1.0, ("loss", 2): 2.0, ("loss", 3): 30.0}
  metrics.MetricsWriter(str(tmp_path), keep_through=-1).close()
  assert metrics.read_jsonl(str(path)) == []
  assert _tensorboard_scalars(str(tmp_path / "tensorboard")) == {}


def test_progress_line_mentions_rates_and_eta():
  progress = metrics.Progress(total_steps=10)
  line = progress.line(1, {"reward_mean": 0.25, "invalid_rate": 0.5}, samples=8, tokens=800)
  assert "step 1/10" in line and "reward 0.250" in line and "invalid 0.500" in line
  assert "samples/s" in line and "ETA" in line


def wandb_history(run_folder):
  """(step, {key: value}) of each history record in a wandb run's `run-*.wandb` file."""
  from wandb.proto import wandb_internal_pb2  # pylint: disable=import-outside-toplevel
  [name] = [n for n in os.listdir(run_folder) if n.endswith(".wandb")]
  with open(os.path.join(run_folder, name), "rb") as f:
    data = f.read()
  assert data[:4] == b":W&B"
  # LevelDB log framing after a 7-byte header: 32 KiB blocks of (crc u32, length u16, type u8,
  # data) chunks; type 1 = a whole record, 2/3/4 = its first/middle/last part.
  block, offset, chunks, history = 32768, 7, b"", []
  while offset + 7 <= len(data):
    if block - offset % block < 7:
      offset += block - offset % block
      continue
    length, kind = int.from_bytes(data[offset + 4:offset + 6], "little"), data[offset + 6]
    chunks += data[offset + 7:offset + 7 + length]
    offset += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record.FromString(chunks)
      chunks = b""
      if record.WhichOneof("record_type") == "history":
        items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                 for i in record.history.item}
        history.append((items["_step"], {k: v for k, v in items.items() if k[0] != "_"}))
  return history


def test_eval_table_rows_group_results_by_game_and_opponent():
  results = {"eval/kuhn_poker/random/win_rate": 0.5, "eval/kuhn_poker/random/games": 64,
             "eval/tic_tac_toe/random/win_rate": 0.25, "eval/kuhn_poker/exploitability": 0.3}
  width = len(metrics.EVAL_TABLE_COLUMNS)
  rows = metrics.eval_table_rows(results)
  assert [row[:2] for row in rows] == [["kuhn_poker", "random"], ["tic_tac_toe", "random"]]
  assert rows[0][2:4] == [64, 0.5] and rows[1][2:4] == [None, 0.25]
  assert all(len(row) == 2 + width for row in rows)


# Run in a child process: wandb leaves service threads in the process that logs (here, pytest's).
_WANDB_SCRIPT = """
import sys
from jaxplay.run import metrics
run = sys.argv[1]
sink = metrics.WandbSink(run, "jaxplay-test", "offline", {"seed": 3})
writer = metrics.MetricsWriter(run, sink=sink)
writer.write(1, {"loss": 0.5, "rollout": {"invalid_rate": 0.25}})
results = {"eval/kuhn_poker/random/win_rate": 0.75, "eval/kuhn_poker/random/games": 4.0}
writer.write_eval(2, results, ["Kuhn Poker, seat 0: \\\\boxed{bet}"])
writer.close()
resumed = metrics.WandbSink(run, "jaxplay-test", "offline", {"seed": 3})
resumed.close()
print(sink.folder, resumed.run.id)
"""


def test_wandb_sink_logs_scalars_and_eval_tables_offline(tmp_path):
  """Offline mode: the records land in <workdir>/wandb/offline-run-*/run-<id>.wandb with the
  scalars by step and the tables as files; a resumed writer keeps the run id."""
  run = str(tmp_path / "run")
  result = subprocess.run([sys.executable, "-c", _WANDB_SCRIPT, run], capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, "WANDB_SILENT": "true"})
  assert result.returncode == 0, result.stderr[-2000:]
  folder, resumed_id = result.stdout.split()[-2:]
  run_id = (tmp_path / "run" / "wandb" / "run_id").read_text()
  assert os.path.basename(folder).endswith(run_id) and resumed_id == run_id
  history = dict(wandb_history(folder))
  assert history[1] == {"loss": 0.5, "rollout/invalid_rate": 0.25}
  assert history[2]["eval/kuhn_poker/random/win_rate"] == 0.75
  assert history[2]["eval/table/_type"] == "table-file"
  table_path = os.path.join(folder, "files", history[2]["eval/table/path"])
  with open(table_path) as f:
    table = json.load(f)
  assert table["columns"][:4] == ["game", "opponent", "games", "win_rate"]
  assert table["data"] == [["kuhn_poker", "random", 4.0, 0.75, *[None] * 6]]
  with open(os.path.join(folder, "files", history[2]["eval/transcripts/path"])) as f:
    assert json.load(f)["data"] == [["Kuhn Poker, seat 0: \\boxed{bet}"]]
