"""Orbax checkpoints: round trip, keep-last-n, and corruption detection with fallback."""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplay.run import checkpoints


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


def test_frozen_leaves_are_left_out_and_filled_back_in(tmp_path):
  """A LoRA run's base weights (`frozen`) are not written; restore takes them from `frozen`."""
  state = _state(4)
  frozen = jax.tree.map(lambda _: None, state)
  frozen["params"]["w"] = state["params"]["w"]
  ckpt = checkpoints.Checkpointer(str(tmp_path), frozen=frozen)
  ckpt.save(4, state)
  ckpt.wait()
  index = json.loads((tmp_path / "4" / "state" / "_METADATA").read_text())["tree_metadata"]
  saved = {k: v["value_metadata"]["value_type"] for k, v in index.items()}
  assert saved["('params', 'w')"] == "None" and saved["('params', 'b')"] == "jax.Array"
  _, restored = ckpt.restore_latest(checkpoints.abstract_like(_state(0)))
  _assert_equal(restored, state)
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


def _damage(step_dir: pathlib.Path) -> None:
  target = _largest_data_file(step_dir)
  target.write_bytes(target.read_bytes()[:100])


def test_corrupt_checkpoints_are_moved_aside_and_their_steps_saved_again(tmp_path, capsys):
  """A training run moves a bad checkpoint to corrupt_<step> (kept), so the step can be saved
  again; with every checkpoint bad it says it starts from scratch. Orbax's refusal to save a step
  at or below the latest one is an error, not a silent no-op."""
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=3)
  for step in (1, 2, 3):
    ckpt.save(step, _state(step))
  ckpt.wait()
  with pytest.raises(RuntimeError, match="declined to save step 2"):
    ckpt.save(2, _state(2))
  ckpt.close()
  _damage(tmp_path / "3")
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=3)
  step, restored = ckpt.restore_latest(checkpoints.abstract_like(_state(0)), move_aside=True)
  assert step == 2 and ckpt.steps() == [1, 2]
  _assert_equal(restored, _state(2))
  warning = capsys.readouterr().out
  assert warning.count("\n") == 1 and "checkpoint 3" in warning and "corrupt_3" in warning
  assert (tmp_path / "corrupt_3" / "state").is_dir()
  ckpt.save(3, _state(30))
  ckpt.wait()
  assert ckpt.steps() == [1, 2, 3]
  _assert_equal(ckpt.restore(3, checkpoints.abstract_like(_state(0))), _state(30))
  ckpt.close()

  for step in (1, 2, 3):
    _damage(tmp_path / str(step))
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=3)
  assert ckpt.restore_latest(checkpoints.abstract_like(_state(0)), move_aside=True) is None
  assert "starting from scratch" in capsys.readouterr().out
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "corrupt_1", "corrupt_2", "corrupt_3", "corrupt_3_1"]
  ckpt.save(3, _state(3))
  ckpt.wait()
  assert ckpt.steps() == [3]
  ckpt.close()


def test_a_save_killed_midway_is_ignored(tmp_path):
  """Orbax writes into a temporary folder and renames it when complete: the leftovers of a killed
  save are not a step, and the step is saved again."""
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=3)
  ckpt.save(1, _state(1))
  ckpt.wait()
  ckpt.close()
  shutil.copytree(tmp_path / "1", tmp_path / "2.orbax-checkpoint-tmp-1234")
  _damage(tmp_path / "2.orbax-checkpoint-tmp-1234")
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=3)
  assert ckpt.steps() == [1]
  step, _ = ckpt.restore_latest(checkpoints.abstract_like(_state(0)), move_aside=True)
  assert step == 1
  ckpt.save(2, _state(2))
  ckpt.wait()
  assert ckpt.steps() == [1, 2]
  ckpt.close()
