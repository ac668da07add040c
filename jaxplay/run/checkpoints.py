"""Orbax checkpoints of the train state, with a checksum that detects corruption.

Everything is saved but the leaves a run marks `frozen` (a LoRA run's base weights, which every
start loads again from the model's path): they are left out of the files and filled back in on
restore.

Each checkpoint holds the state pytree (StandardSave) and a JSON record with a per-leaf checksum
computed on device. Restoring verifies the checksums; a checkpoint that fails to load or to verify
is reported in one line and the previous good one is used instead. A training run moves such a
checkpoint aside (`corrupt_<step>` in the same directory, kept for inspection, ignored by Orbax) so
that the step can be saved again.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from jaxplay import errors
from jaxplay.run import workdir


class CorruptCheckpointError(errors.UserError):
  """A checkpoint's files are unreadable or fail their checksums."""


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_as_data(tree: Any) -> Any:
  """Typed PRNG keys -> their uint32 data (what Orbax can store)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_key_data(abstract: Any) -> Any:
  def leaf(x):
    if not _is_key(x):
      return x
    data = jax.eval_shape(jax.random.key_data, x)
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=getattr(x, "sharding", None))
  return jax.tree.map(leaf, abstract)


def _data_as_keys(tree: Any, abstract: Any) -> Any:
  return jax.tree.map(lambda x, a: jax.random.wrap_key_data(x, impl=jax.random.key_impl(
      jax.random.key(0))) if _is_key(a) else x, tree, abstract)


def _leaf_checksum(x: jax.Array) -> jax.Array:
  """Order-sensitive 32-bit checksum of a leaf's bits (wrapping arithmetic, works when sharded)."""
  x = jnp.asarray(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  bits = x.reshape(-1)
  width = bits.dtype.itemsize
  if width not in (1, 2, 4, 8):
    raise TypeError(f"Cannot checksum dtype {x.dtype}")
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[width]
  words = jax.lax.bitcast_convert_type(bits, unsigned).reshape(-1).astype(jnp.uint32)
  weights = jnp.arange(words.shape[0], dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
  return jnp.sum(words * weights, dtype=jnp.uint32) ^ jnp.uint32(words.shape[0])


@jax.jit
def checksums(tree: Any) -> Any:
  """Per-leaf checksums of a pytree (uint32 scalars); PRNG keys are summed as their data."""
  return jax.tree.map(_leaf_checksum, _keys_as_data(tree))


def _flat_checksums(tree: Any) -> dict[str, int]:
  leaves = jax.tree_util.tree_leaves_with_path(checksums(tree))
  return {jax.tree_util.keystr(path): int(value) for path, value in leaves}


def _is_none(x) -> bool:
  return x is None


def _without(tree: Any, frozen: Any) -> Any:
  """`tree` with None where `frozen` (a tree like it: arrays or None) holds an array."""
  if frozen is None:
    return tree
  return jax.tree.map(lambda f, x: x if f is None else None, frozen, tree, is_leaf=_is_none)


def _filled(tree: Any, frozen: Any) -> Any:
  """`tree` (from `_without`) with `frozen`'s arrays put back."""
  if frozen is None:
    return tree
  return jax.tree.map(lambda f, x: x if f is None else f, frozen, tree, is_leaf=_is_none)


class Checkpointer:
  """Saves and restores the train state under `directory`, keeping the last `max_to_keep`.

  `frozen`: a tree like the train state holding, where a leaf is not to be saved, the array to
  restore it with, and None elsewhere (None: save every leaf)."""

  def __init__(self, directory: str, max_to_keep: int = 3, frozen: Any = None):
    self.directory = workdir.absolute(directory)
    self._frozen = frozen
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state: Any, force: bool = False) -> None:
    """Starts saving `step` (asynchronously; `wait` for it); raises if Orbax declines."""
    state = _keys_as_data(_without(state, self._frozen))
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        checksums=ocp.args.JsonSave(_flat_checksums(state)))
    if not self._manager.save(step, args=args, force=force):
      raise RuntimeError(f"Orbax declined to save step {step} in {self.directory} (it holds "
                         f"steps {self.steps()}).")

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores `step` into the structure/shardings of `abstract_state`; verifies checksums."""
    target = _abstract_key_data(_without(abstract_state, self._frozen))
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), checksums=ocp.args.JsonRestore()))
    except Exception as error:  # Orbax raises many types for unreadable files.
      reason = (str(error).strip().splitlines() or [""])[0][:200]
      raise CorruptCheckpointError(f"checkpoint {step} in {self.directory} is unreadable "
                                   f"({type(error).__name__}: {reason})") from error
    expected, state = restored.checksums, restored.state
    got = _flat_checksums(state)
    bad = sorted(k for k in expected if got.get(k) != expected[k])
    if bad or set(got) != set(expected):
      raise CorruptCheckpointError(f"checkpoint {step} in {self.directory} fails its checksum "
                                   f"for {bad or sorted(set(got) ^ set(expected))}")
    return _filled(_data_as_keys(state, _without(abstract_state, self._frozen)), self._frozen)

  def restore_latest(self, abstract_state: Any, move_aside: bool = False
                     ) -> tuple[int, Any] | None:
    """The newest checkpoint that loads and verifies, or None; bad ones are reported in one line
    each and, with `move_aside`, renamed `corrupt_<step>` so their steps can be saved again."""
    steps = self.steps()
    for step in reversed(steps):
      try:
        return step, self.restore(step, abstract_state)
      except CorruptCheckpointError as error:
        where = f"; moved to {self._move_aside(step)}" if move_aside else ""
        print(f"WARNING: {error}{where}; trying the previous checkpoint.", flush=True)
    if steps:
      print(f"WARNING: no readable checkpoint in {self.directory}; starting from scratch.",
            flush=True)
    return None

  def _move_aside(self, step: int) -> str:
    """Renames checkpoint `step` to a free `corrupt_<step>[_n]` name (on the first process)."""
    folder = epath.Path(self.directory)
    target, n = folder / f"corrupt_{step}", 1
    while target.exists():
      target, n = folder / f"corrupt_{step}_{n}", n + 1
    if jax.process_index() == 0:
      (folder / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
    self._manager.reload()
    return workdir.absolute(target)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree, the target structure for `restore`."""
  def leaf(x):
    x = jnp.asarray(x) if not isinstance(x, jax.Array) else x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return jax.tree.map(leaf, tree)
