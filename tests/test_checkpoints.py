"""Orbax checkpoints: round trip, keep-last-n, and corruption detection with fallback."""

import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplay import checkpoints


def _state(seed):
  k = jax.random.key(seed)
  return {"params": {"w": jax.random.normal(k, (64, 32)), "b": jnp.arange(5, dtype=jnp.int32)},
          "step": jnp.int32(seed), "baseline": jnp.full((3, 2), 0.5 * seed, jnp.float32),
          "flag": jnp.bool_(seed % 2), "rng": jax.random.key(seed)}


def _assert_equal(a, b):
  as_data = lambda t: jax.tree.map(
      lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
      else x, t)
  for x, y in zip(jax.tree.leaves(as_data(a)), jax.tree.leaves(as_data(b))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_and_keep_last(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, _state(step))
  ckpt.wait()
  assert ckpt.steps() == [2, 3]
  step, restored = ckpt.restore_latest(checkpoints.abstract_like(_state(0)))
  assert step == 3
  _assert_equal(restored, _state(3))
  ckpt.close()


def test_checksum_changes_with_any_bit():
  state = _state(1)
  flipped = dict(state, params={"w": state["params"]["w"].at[7, 3].add(1e-6),
                                "b": state["params"]["b"]})
  a, b = checkpoints.checksums(state), checkpoints.checksums(flipped)
  assert int(a["params"]["w"]) != int(b["params"]["w"])
  assert int(a["params"]["b"]) == int(b["params"]["b"])


def _largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in step_dir.rglob("*") if p.is_file() and "state" in p.parts]
  return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["flip_bytes", "truncate", "delete_state"])
def test_corrupt_latest_falls_back_to_previous(tmp_path, damage, capsys):
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=3)
  ckpt.save(1, _state(1))
  ckpt.save(2, _state(2))
  ckpt.wait()
  ckpt.close()
  step_dir = tmp_path / "2"
  if damage == "delete_state":
    shutil.rmtree(step_dir / "state")
  else:
    target = _largest_data_file(step_dir)
    data = bytearray(target.read_bytes())
    if damage == "flip_bytes":
      for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    else:
      data = data[: len(data) // 3]
    target.write_bytes(bytes(data))
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=3)
  with pytest.raises(checkpoints.CorruptCheckpointError):
    ckpt.restore(2, checkpoints.abstract_like(_state(0)))
  step, restored = ckpt.restore_latest(checkpoints.abstract_like(_state(0)))
  assert step == 1
  _assert_equal(restored, _state(1))
  assert "checkpoint 2" in capsys.readouterr().out
