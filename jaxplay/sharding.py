"""Device mesh from the config, logical-axis rules, and the placement of params, state and batches.

The mesh has three axes: `data` (pure data parallelism), `fsdp` (data parallelism with params and
optimizer state split over it) and `tensor` (heads, MLP and vocab split over it). Params carry
logical axis names (`embed`, `heads`, ...); a rules table maps each name to mesh axes. Training uses
`TRAIN_RULES`; the sampler uses `SAMPLER_RULES` (no fsdp: params split over `tensor` only and
replicated over the batch axes, as inference engines do, so decoding gathers no weights), and
`reshard` moves params between the two inside a jitted program. Batches are split along their
leading axis over the mesh axes of `batch`; on several hosts each feeds its own rows. A run's
`Layout` (from `config.mesh`: the sizes and an optional `rules` table overriding both tables)
holds the mesh and both tables.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxplay import compiling

MESH_AXES = ("data", "fsdp", "tensor")

# (logical axis, mesh axis or axes or None), in order of precedence (flax's convention).
Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]
TRAIN_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("head_dim", None),
    ("length", None),
)
SAMPLER_RULES: Rules = tuple((name, None if name == "embed" else axes)
                             for name, axes in TRAIN_RULES)

# Logical axes of the KV cache fields (jaxplay.models.transformer.KVCache).
CACHE_AXES = {
    "k": ("layers", "batch", "length", "kv_heads", "head_dim"),
    "v": ("layers", "batch", "length", "kv_heads", "head_dim"),
    "positions": ("batch", "length"),
    "index": (),
}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh axis sizes; one of them may be -1, meaning all the devices the others leave."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """Resolves -1 and checks that the sizes multiply to `num_devices`."""
  sizes = [int(getattr(mesh_config, name)) for name in MESH_AXES]
  described = " x ".join(f"{name}={size}" for name, size in zip(MESH_AXES, sizes))
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh {described}: sizes must be positive, with at most one -1.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"mesh {described}: {num_devices} devices are not divisible by {known}.")
    sizes[sizes.index(-1)] = num_devices // known
  elif known != num_devices:
    raise ValueError(f"mesh {described} has {known} devices, but there are {num_devices}; "
                     "set one axis to -1 to use the rest.")
  return tuple(sizes)


def parse_mesh_sizes(text: str) -> dict[str, int]:
  """Command-line mesh sizes 'data,fsdp,tensor' (e.g. '-1,1,1' or '2,4,1') -> {axis: size}."""
  parts = [part.strip() for part in text.split(",")]
  if len(parts) != len(MESH_AXES) or not all(p.lstrip("-").isdigit() for p in parts):
    raise ValueError(f"mesh {text!r}: expected data,fsdp,tensor sizes such as -1,1,1 or 2,4,1 "
                     "(-1 = the devices the others leave).")
  return dict(zip(MESH_AXES, map(int, parts)))


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over all (global) devices with axes (data, fsdp, tensor), sharding propagated by XLA."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=devices)


def make_rules(table: Mapping[str, Any] | None = None, base: Rules = TRAIN_RULES) -> Rules:
  """`base` with entries replaced or added from a config table {logical: mesh axis/axes/None}."""
  rules = dict(base)
  for name, axes in (table or {}).items():
    if isinstance(axes, (list, tuple)):
      axes = tuple(axes)
    for axis in axes if isinstance(axes, tuple) else (axes,):
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f"rule {name!r} -> {axes!r}: unknown mesh axis {axis!r}; "
                         f"expected one of {MESH_AXES} or None.")
    rules[name] = axes
  return tuple(rules.items())


@dataclasses.dataclass(frozen=True)
class Layout:
  """A run's mesh with its train and sampler rules."""

  mesh: Mesh
  train_rules: Rules = TRAIN_RULES
  sampler_rules: Rules = SAMPLER_RULES

  @classmethod
  def from_config(cls, mesh_config, devices: Sequence[jax.Device] | None = None,
                  mesh: Mesh | None = None) -> Layout:
    """`mesh_config` has data/fsdp/tensor sizes (unless `mesh` is given) and optionally `rules`,
    a table (see `make_rules`) applied to both the train and the sampler rules."""
    table = getattr(mesh_config, "rules", None)
    return cls(make_mesh(mesh_config, devices) if mesh is None else mesh,
               make_rules(table, TRAIN_RULES), make_rules(table, SAMPLER_RULES))

  def params(self, logical_axes, sampler: bool = False):
    """NamedShardings of params in the train (or sampler) layout."""
    return param_shardings(logical_axes, self.mesh,
                           self.sampler_rules if sampler else self.train_rules)

  def logical(self, axes: tuple[str | None, ...]) -> NamedSharding:
    """The train-layout sharding of one array with logical `axes` (e.g. for loading weights)."""
    return NamedSharding(self.mesh, nn.logical_to_mesh_axes(axes, self.train_rules))

  def rows(self, sampler: bool = False, leading: int = 0) -> NamedSharding:
    """Batch rows split over the `batch` mesh axes, after `leading` unsplit axes."""
    spec = batch_spec(self.sampler_rules if sampler else self.train_rules)
    return NamedSharding(self.mesh, PartitionSpec(*(None,) * leading, *spec))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())


def _is_spec(x) -> bool:
  return isinstance(x, PartitionSpec)


def mesh_specs(logical_axes, rules: Rules):
  """Tree of PartitionSpecs of logical names -> tree of PartitionSpecs of mesh axes."""
  return nn.logical_to_mesh(logical_axes, rules)


def _mesh_axes(entry) -> tuple[str, ...]:
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _describe(axes, mesh) -> str:
  """'fsdp=4', or 'data=2 x fsdp=4 = 8' for several axes."""
  sizes = " x ".join(f"{a}={mesh.shape[a]}" for a in axes)
  return sizes if len(axes) == 1 else f"{sizes} = {math.prod(mesh.shape[a] for a in axes)}"


def _path_name(path) -> str:
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


class IndivisibleError(ValueError):
  """An array dimension does not split evenly over its mesh axes; the message names both."""


def check_divisible(shapes, shardings, what: str = "param") -> None:
  """Raises IndivisibleError naming the leaf, dim and mesh axes where a dim does not split."""
  def check(path, shape, sharding):
    shape = tuple(getattr(shape, "shape", shape))
    spec = tuple(sharding.spec)
    if len(spec) > len(shape):
      raise ValueError(f"{what} {_path_name(path)} has shape {shape} but sharding {spec} "
                       f"names {len(spec)} dims.")
    for dim, (size, entry) in enumerate(zip(shape, spec)):
      axes = _mesh_axes(entry)
      parts = math.prod(sharding.mesh.shape[a] for a in axes)
      if size % parts:
        raise IndivisibleError(
            f"{what} {_path_name(path)} dim {dim} of size {size} (shape {shape}) does not split "
            f"over mesh axes {_describe(axes, sharding.mesh)}; change the mesh or map that "
            "logical axis to None in the rules.")
  jax.tree_util.tree_map_with_path(check, shapes, shardings)


def param_shardings(logical_axes, mesh: Mesh, rules: Rules):
  """Tree of NamedShardings from a tree of logical PartitionSpecs (nn.get_partition_spec)."""
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), mesh_specs(logical_axes, rules),
                      is_leaf=_is_spec)


def shard_params(params, mesh: Mesh, rules: Rules, logical_axes=None):
  """Places params (boxed with logical names, or plain with `logical_axes`) on the mesh."""
  if logical_axes is None:
    logical_axes = nn.get_partition_spec(params)
  params = nn.unbox(params)
  shardings = param_shardings(logical_axes, mesh, rules)
  check_divisible(params, shardings)
  return jax.device_put(params, shardings)


def like_params(tree, params, shardings):
  """Shardings for any tree holding param-shaped leaves (optimizer state, a train state).

  A leaf whose tree path ends with a param's path and has that param's shape gets the param's
  sharding; one with an extra leading axis (snapshots stacked, e.g. a population) gets it over
  the other axes; every other leaf is replicated.
  """
  by_path = {}
  for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(params),
                                    jax.tree.leaves(shardings)):
    by_path[tuple(path)] = (np.shape(leaf), sharding)
  mesh = jax.tree.leaves(shardings)[0].mesh
  replicated = NamedSharding(mesh, PartitionSpec())

  def pick(path, leaf):
    for start in range(len(path)):
      shape, sharding = by_path.get(tuple(path[start:]), (None, None))
      if sharding is not None and shape == np.shape(leaf):
        return sharding
      if sharding is not None and shape == np.shape(leaf)[1:]:
        return NamedSharding(mesh, PartitionSpec(None, *sharding.spec))
    return replicated
  return jax.tree_util.tree_map_with_path(pick, tree)


def batch_spec(rules: Rules) -> PartitionSpec:
  """The PartitionSpec of a batch's leading axis."""
  return nn.logical_to_mesh_axes(("batch",), rules)


def batch_axes(rules: Rules) -> tuple[str, ...]:
  """The mesh axes a batch's leading axis is split over."""
  return _mesh_axes(batch_spec(rules)[0])


def batch_shardings(batch, mesh: Mesh, rules: Rules):
  """Leading axis of every leaf split over the `batch` mesh axes; scalars replicated."""
  leading = batch_spec(rules)
  axes = batch_axes(rules)
  parts = math.prod(mesh.shape[a] for a in axes)

  def sharding(path, leaf):
    if np.ndim(leaf) == 0:
      return NamedSharding(mesh, PartitionSpec())
    rows = np.shape(leaf)[0]
    if rows % parts:
      raise ValueError(f"batch {_path_name(path)} has {rows} rows, which do not split over "
                       f"{_describe(axes, mesh)} devices; use a batch size divisible by {parts}.")
    return NamedSharding(mesh, leading)
  return jax.tree_util.tree_map_with_path(sharding, batch)


def cache_shardings(cache, mesh: Mesh, rules: Rules):
  """Shardings of a KV cache (fields named as in `CACHE_AXES`), checked for divisibility."""
  def sharding(path, leaf):
    axes = CACHE_AXES[path[-1].name]
    return NamedSharding(mesh, nn.logical_to_mesh_axes(axes, rules))
  shardings = jax.tree_util.tree_map_with_path(sharding, cache)
  check_divisible(cache, shardings, what="cache")
  return shardings


def reshard(params, shardings):
  """Inside jit: constrains params to `shardings` (e.g. train -> sampler layout)."""
  return jax.lax.with_sharding_constraint(params, shardings)


def constrain(tree, sharding):
  """Inside jit: every leaf of `tree` laid out by `sharding` (e.g. rows); None leaves it to XLA."""
  return tree if sharding is None else jax.lax.with_sharding_constraint(tree, sharding)


def init_sharded(init_fn, params, shardings):
  """`init_fn(params)` (e.g. a train state) jitted, outputs placed by `like_params`."""
  out_shardings = like_params(jax.eval_shape(init_fn, params), params, shardings)
  return jax.jit(init_fn, out_shardings=out_shardings)(params)


def shard_step(step, state_shardings, batch_shardings, donate: bool = True, jit=compiling.jit):
  """Re-jits `step(state, batch) -> (state, metrics)` with fixed layouts; metrics replicated.

  The state keeps its layout across steps (out = in), so it can be donated; `step` may itself be
  jitted (the inner jit is inlined). `jit` takes jax.jit's layout and donation arguments (e.g. a
  run's saved programs, `functools.partial(ProgramCache.jit, name=...)`) and compiles the step
  as the outermost program (`compiling.jit` by default).
  """
  mesh = jax.tree.leaves(state_shardings)[0].mesh
  return jit(step, in_shardings=(state_shardings, batch_shardings),
             out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())),
             donate_argnums=0 if donate else ())


def process_rows(batch_size: int, mesh: Mesh, rules: Rules) -> np.ndarray:
  """Indices of the global batch rows this process feeds (see `global_batch`)."""
  sharding = NamedSharding(mesh, batch_spec(rules))
  slices = sharding.addressable_devices_indices_map((batch_size,)).values()
  return np.unique(np.concatenate([np.arange(batch_size)[s[0]] for s in slices]))


def global_batch(local_batch, batch_size: int, mesh: Mesh, rules: Rules):
  """A global batch from this process's rows (`process_rows`) of every leaf."""
  global_shape = lambda x: (batch_size,) + np.shape(x)[1:] if np.ndim(x) else ()
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(global_shape(x), np.asarray(x).dtype),
                        local_batch)
  return jax.tree.map(
      lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x), global_shape(x)),
      local_batch, batch_shardings(shapes, mesh, rules))
