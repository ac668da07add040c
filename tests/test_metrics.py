"""Metrics writers: JSONL records, TensorBoard events, torn lines, console progress."""

import os

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from jaxplay import metrics, workdir


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
  assert tb[("loss", 1)] == 2.0 and tb[("loss", 2)] == 1.5


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
