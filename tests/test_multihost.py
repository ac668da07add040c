"""Two processes (2 simulated CPU devices each, gloo collectives) run one train step on a 4-device
mesh, each feeding only its own rows of the batch, and agree with the single-process result."""

import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import sharding_worker as worker

TIMEOUT_S = 300
# The query projection [layers, embed, heads, head_dim]: path in the state and expected shard.
Q_PATH = {"logical_lm": "state/params/params/q", "transformer": "state/params/layers/attn/q"}
Q_SHARD = {"logical_lm": [2, 16 // 2, 8 // 2, 4], "transformer": [2, 64 // 2, 8 // 2, 16]}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(tmp_path, model: str) -> list[dict[str, np.ndarray]]:
  port = free_port()
  procs, logs = [], []
  try:
    for i in range(2):
      logs.append(open(tmp_path / f"process{i}.log", "w+"))
      cmd = [sys.executable, "-m", "tests.sharding_worker", "multihost",
             str(tmp_path / f"process{i}.npz"), model, str(i), str(port)]
      procs.append(subprocess.Popen(cmd, cwd=worker.ROOT, env=worker.child_env(2),
                                    stdout=logs[-1], stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    for proc in procs:
      proc.wait(timeout=max(deadline - time.monotonic(), 1))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    for log in logs:
      log.close()
  for i, proc in enumerate(procs):
    assert proc.returncode == 0, (tmp_path / f"process{i}.log").read_text()[-5000:]
  results = []
  for i in range(2):
    with np.load(tmp_path / f"process{i}.npz") as data:
      results.append(dict(data))
  return results


@pytest.mark.parametrize("model", ["logical_lm",
                                   pytest.param("transformer", marks=pytest.mark.slow)])
def test_two_processes_agree_with_one(tmp_path, model):
  results = run_processes(tmp_path, model)
  reference = worker.run_train(model)
  rows = [r["process_rows"] for r in results]
  np.testing.assert_array_equal(np.sort(np.concatenate(rows)), np.arange(8))  # Disjoint, all.
  assert all(len(r) == 4 for r in rows)
  for result in results:
    np.testing.assert_array_equal(result["devices"], [4, 2])  # Global, local.
    worker.assert_close(result, reference)
    spec, shard = result[f"spec:{Q_PATH[model]}"], result[f"shard:{Q_PATH[model]}"]
    assert str(spec) == ",fsdp,tensor,"  # Mesh (data 1, fsdp 2, tensor 2).
    np.testing.assert_array_equal(shard, Q_SHARD[model])
