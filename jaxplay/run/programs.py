"""Traced programs kept across starts, so a second start of a run traces nothing it traced before.

`ProgramCache.jit(fn, name, ...)` is `compiling.jit(fn, ...)`, except that, once `save_in` names a
folder (main.py does, under train.compilation_cache), the first call with each input signature
loads the program `jax.export` saved there at an earlier start, or traces, exports and saves it;
every call runs the exported program. With XLA's persistent compilation cache beside it, a
second start neither traces, lowers nor compiles the program: it reads both from disk.

A saved program is found by a sha256 of everything its tracing depends on: `name` (the caller
puts in it whatever of the closure the run's config does not fix), the run's `context` (its
config record and model files), the source of the `jaxplay` and `games` packages and of every
other loaded module outside the Python installation, the library versions in `LIBRARIES`, JAX's
flags, the devices, the call's input structure, shapes, dtypes and shardings, and the jit
options. A file is `<name>-<sha256 prefix>.jaxprogram`: a JSON line holding the output's pytree
structure, then the serialized `jax.export.Exported`. The newest `MAX_SAVED` files are kept.

A program that cannot be exported (an effect or custom call `jax.export` refuses, an output
type it cannot name) is reported in one stderr line and traced at each start with `compiling.jit`;
an unreadable file is reported, removed and saved again. Single-process runs only (several
processes trace as before).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import json
import os
import site
import sys
import tempfile
from typing import Any, Callable

import jax
from jax import export

from jaxplay import compiling

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml_dtypes", "transformers", "tokenizers")

MAX_SAVED = 64  # Programs kept in the folder; the least recently used beyond it are removed.

SUFFIX = ".jaxprogram"


class NotSavable(ValueError):
  """The program's outputs have a pytree node that cannot be written down and read back."""


_folder = ""  # Where programs are saved: set by `save_in` (main.py, from the run's config).


def save_in(folder: str) -> None:
  """Saves and reads the programs of this process's runs in `folder` ('' = off, the default:
  a run made in-process, e.g. under patched code in tests, traces as before)."""
  global _folder
  _folder = os.path.expanduser(folder) if folder else ""


class ProgramCache:
  """The saved programs of a run described by `context` (a string that changes whenever
  anything its traced programs close over does; None = never saved: `jit` is `compiling.jit`)."""

  def __init__(self, context: str | None):
    self._context = context

  def jit(self, fn: Callable, name: str, *, in_shardings=None, out_shardings=None,
          donate_argnums: int | tuple[int, ...] = ()) -> Callable:
    """`compiling.jit(fn, in_shardings, out_shardings, donate_argnums)`, its programs saved under
    `name` (unique among the run's programs that close over different values) while `save_in`
    names a folder."""
    options = {"donate_argnums": donate_argnums}
    if in_shardings is not None:
      options["in_shardings"] = in_shardings
    if out_shardings is not None:
      options["out_shardings"] = out_shardings
    if self._context is None or not _folder or jax.process_count() > 1:
      return compiling.jit(fn, **options)
    return _SavedJit(self, fn, name, options)

  def path(self, name: str, key: str) -> str:
    return os.path.join(_folder, f"{name}-{key[:24]}{SUFFIX}")

  def key(self, name: str, signature: str) -> str:
    return hashlib.sha256("\n".join(
        (name, self._context, environment_digest(), signature)).encode()).hexdigest()


class _SavedJit:
  """A jitted function whose programs are exported and saved (see the module's docstring)."""

  def __init__(self, cache: ProgramCache, fn: Callable, name: str, options: dict):
    self._cache, self._fn, self._name, self._options = cache, fn, name, options
    self._programs: dict[Any, Callable] = {}  # Input signature -> jitted call of the program.

  def __call__(self, *args):
    leaves, in_tree = jax.tree.flatten(args)
    signature = (in_tree, tuple((jax.typeof(x), getattr(x, "sharding", None)) for x in leaves))
    program = self._programs.get(signature)
    if program is None:
      program = self._programs[signature] = self._program(args, f"{signature}{self._options}")
    return program(*args)

  def _program(self, args, signature: str) -> Callable:
    path = self._cache.path(self._name, self._cache.key(self._name, signature))
    loaded = _read(path)
    if loaded is None:
      jitted = compiling.jit(self._fn, **self._options)
      try:
        exported = export.export(jitted)(*args)
        loaded = _write(path, exported)
      except (NotSavable, ValueError, TypeError, NotImplementedError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"saved programs: {self._name} is traced at each start ({reason})",
              file=sys.stderr, flush=True)
        return jitted
    exported, out_tree = loaded

    def call(*args):
      return jax.tree.unflatten(out_tree, exported.call(*jax.tree.leaves(args)))
    call.__name__ = f"saved_{self._name}"  # In JAX's logs and profiles.
    return compiling.jit(call, **self._options)


def _write(path: str, exported: export.Exported) -> tuple[export.Exported, Any]:
  """Saves `exported` at `path` (atomically) with its pytrees flattened; returns what `_read`
  would read back."""
  out_tree = exported.out_tree
  encoded = encode_tree(out_tree)
  try:
    same = decode_tree(encoded) == out_tree
  except (ImportError, AttributeError) as error:
    raise NotSavable(f"its output has a pytree node that cannot be imported: {error}") from None
  if not same:
    raise NotSavable(f"its output structure {out_tree} does not read back the same")
  flat = _flattened(exported)
  blob = json.dumps({"out_tree": encoded}).encode() + b"\n" + flat.serialize()
  folder = os.path.dirname(path)
  os.makedirs(folder, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
  try:
    with os.fdopen(handle, "wb") as file:
      file.write(blob)
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise
  _evict(folder)
  return export.deserialize(bytearray(blob[blob.index(b"\n") + 1:])), out_tree


def _flattened(exported: export.Exported) -> export.Exported:
  """The same program taking and returning flat lists (serializable without pytree names)."""
  flat = lambda count: jax.tree.structure(((0,) * count, {}))
  return export.Exported(**{
      **{field: getattr(exported, field) for field in exported.__dataclass_fields__},
      "in_tree": flat(len(exported.in_avals)),
      "out_tree": jax.tree.structure([0] * len(exported.out_avals))})


def _read(path: str) -> tuple[export.Exported, Any] | None:
  """(program, output pytree structure) saved at `path`, or None when there is none or it does
  not read (then the file is removed, for the caller to save it again)."""
  try:
    with open(path, "rb") as file:
      blob = file.read()
  except OSError:  # None saved (or no folder to read: `_write` reports it).
    return None
  try:
    header, _, serialized = blob.partition(b"\n")
    out_tree = decode_tree(json.loads(header)["out_tree"])
    exported = export.deserialize(bytearray(serialized))
    if exported.out_tree.num_leaves != out_tree.num_leaves:
      raise ValueError("its output structure does not match the program")
  except Exception as error:  # Whatever a damaged or foreign file raises: save it again.
    print(f"saved programs: {path}: unreadable, tracing again ({error})".splitlines()[0],
          file=sys.stderr, flush=True)
    with contextlib.suppress(FileNotFoundError):
      os.unlink(path)
    return None
  with contextlib.suppress(OSError):  # Another run may have removed it meanwhile.
    os.utime(path)  # Recently used: kept by `_evict`.
  return exported, out_tree


def _evict(folder: str) -> None:
  """Removes all but the `MAX_SAVED` most recently used programs in `folder`."""
  used = {}
  for name in os.listdir(folder):
    with contextlib.suppress(FileNotFoundError):  # Runs sharing the folder evict it too.
      if name.endswith(SUFFIX):
        used[name] = os.stat(os.path.join(folder, name)).st_mtime_ns
  for stale in sorted(used, key=used.get, reverse=True)[MAX_SAVED:]:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(os.path.join(folder, stale))


# --- What a program's tracing depends on beyond its inputs. ---


@functools.cache
def environment_digest() -> str:
  """sha256 of the sources, library versions, JAX flags and devices of this process (computed
  once: the modules a run uses are imported before its first program)."""
  digest = hashlib.sha256()
  for path in source_files():
    with open(path, "rb") as file:
      digest.update(path.encode() + b"\0" + file.read() + b"\0")
  for library in LIBRARIES:
    digest.update(f"{library}={importlib.metadata.version(library)}\n".encode())
  digest.update(repr(sorted((k, repr(v)) for k, v in jax.config.values.items())).encode())
  digest.update(repr([(d.platform, d.device_kind, d.id) for d in jax.devices()]).encode())
  return digest.hexdigest()


def source_files() -> list[str]:
  """Every .py file of the `jaxplay` and `games` packages and of the loaded modules that live
  outside the Python installation (a user's game module), sorted."""
  installed = tuple(os.path.join(os.path.realpath(p), "") for p in (
      sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()))
  files = set()
  for package in ("jaxplay", "games"):
    for root in importlib.import_module(package).__path__:
      for folder, _, names in os.walk(root):
        files.update(os.path.join(folder, n) for n in names if n.endswith(".py"))
  for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None)
    if (path and path.endswith(".py") and os.path.isabs(path) and os.path.isfile(path)
        and not os.path.realpath(path).startswith(installed)):
      files.add(path)
  return sorted(os.path.realpath(f) for f in files)


def path_identity(path: str) -> str:
  """The real path, size and modification time of a file, or of every file under a folder."""
  real = os.path.realpath(os.path.expanduser(path))
  if not os.path.exists(real):
    return f"{real} (absent)"
  paths = [real] if os.path.isfile(real) else sorted(
      os.path.join(folder, name) for folder, _, names in os.walk(real) for name in names)
  return "\n".join(f"{p} {os.stat(p).st_size} {os.stat(p).st_mtime_ns}" for p in paths)


# --- Pytree structures as JSON. ---


def encode_tree(treedef) -> Any:
  """A pytree structure as JSON: None for a leaf, else [type, its auxiliary data, children]."""
  node = treedef.node_data()
  if node is None:
    return None
  kind, aux = node
  return [f"{kind.__module__}:{kind.__qualname__}", _encode_value(aux),
          [encode_tree(child) for child in treedef.children()]]


def decode_tree(encoded) -> Any:
  """The pytree structure `encode_tree` wrote (its node types imported by name)."""
  if encoded is None:
    return jax.tree.structure(0)
  kind, aux, children = encoded
  module, _, qualname = kind.partition(":")
  if "<locals>" in qualname:
    raise NotSavable(f"the pytree node {kind} is defined inside a function")
  node_type = importlib.import_module(module)
  for part in qualname.split("."):
    node_type = type(None) if (module, part) == ("builtins", "NoneType") else getattr(
        node_type, part)
  return jax.tree_util.PyTreeDef.from_node_data_and_children(
      jax.tree_util.default_registry, (node_type, _decode_value(aux)),
      [decode_tree(child) for child in children])


def _encode_value(value) -> Any:
  """A pytree node's auxiliary data as tagged JSON (tuples stay tuples)."""
  if value is None or isinstance(value, (bool, int, float, str)):
    return [type(value).__name__, value]
  if isinstance(value, (tuple, list)):
    return [type(value).__name__, [_encode_value(v) for v in value]]
  raise NotSavable(f"a pytree node holds {type(value).__name__} {value!r:.60}")


def _decode_value(encoded) -> Any:
  kind, value = encoded
  if kind in ("tuple", "list"):
    return {"tuple": tuple, "list": list}[kind](_decode_value(v) for v in value)
  return {"NoneType": lambda _: None, "bool": bool, "int": int, "float": float,
          "str": str}[kind](value)
