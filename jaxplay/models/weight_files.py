"""Checkpoint files as tensor sources: an HF safetensors directory or a GGUF file, read as
name -> numpy array in HF's [out, in] layout (GGUF dequantised, llama.cpp's conventions undone).

Only headers are read on opening; a file that is not one we read (not safetensors or GGUF, a header
that does not parse, truncated, an unsupported dtype) raises one ModelFileError naming the file.
`loading` maps these tensors onto the model's parameters.
"""

from __future__ import annotations

import json
import math
import pathlib
import struct

import gguf
import ml_dtypes
import numpy as np

from jaxplay import errors
from jaxplay.models.configs import ModelConfig

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
                       "F64": np.float64}


class ModelFileError(errors.UserError, ValueError):
  """A model path or file is not a checkpoint we can load; the message names it and the problem."""


def fail(path, problem: str):
  raise ModelFileError(f"{path}: {problem}")


def read_json(path: pathlib.Path) -> dict:
  try:
    value = json.loads(path.read_text())
  except ValueError as error:  # Also bytes that are not UTF-8.
    fail(path, f"not valid JSON ({error}).")
  if not isinstance(value, dict):
    fail(path, f"not a JSON object (a {type(value).__name__}).")
  return value




class Safetensors:
  """All *.safetensors of a directory (or those its index lists), read through memory maps.

  Reads only the headers; ModelFileError when a file is not safetensors or is too short for its
  tensors.
  """

  def __init__(self, directory: pathlib.Path):
    self.path = directory
    index = directory / "model.safetensors.index.json"
    if index.exists():
      weight_map = read_json(index).get("weight_map")
      if not isinstance(weight_map, dict):
        fail(index, "has no weight_map object.")
      files = sorted(set(weight_map.values()))
    else:
      files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
      fail(directory, "has no *.safetensors files (an HF checkpoint directory holds config.json "
            "and *.safetensors).")
    self.entries = {}
    for name in files:
      if not (directory / name).is_file():
        fail(directory / name, f"does not exist ({index.name} lists it).")
      self._add(directory / name)

  def _add(self, path: pathlib.Path):
    size = path.stat().st_size
    if size < 8:
      fail(path, f"not a safetensors file ({size} bytes, less than its 8-byte header length).")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    header_len = struct.unpack("<Q", bytes(data[:8]))[0]
    if 8 + header_len > size:
      fail(path, f"not a safetensors file, or truncated: its header needs {8 + header_len} "
            f"bytes, the file has {size}.")
    try:
      header = json.loads(bytes(data[8:8 + header_len]))
      header.pop("__metadata__", None)
      tensors = {}
      for key, info in header.items():
        start, end = (int(o) for o in info["data_offsets"])
        tensors[key] = (info["dtype"], tuple(int(d) for d in info["shape"]), (start, end))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
      fail(path, f"not a safetensors file (its header is not safetensors JSON: "
            f"{type(error).__name__}: {error}).")
    need = 8 + header_len
    for key, (dtype, shape, (start, end)) in tensors.items():
      if dtype not in SAFETENSORS_DTYPES:
        fail(path, f"tensor {key} has unsupported dtype {dtype}; supported: "
              f"{', '.join(SAFETENSORS_DTYPES)}.")
      nbytes = math.prod(shape) * np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize
      if end - start != nbytes:
        fail(path, f"tensor {key} spans {end - start} bytes; its {dtype} shape {shape} needs "
              f"{nbytes}.")
      need = max(need, 8 + header_len + end)
      self.entries[key] = (data, 8 + header_len + start, 8 + header_len + end, dtype, shape)
    if need > size:
      fail(path, f"truncated: the file has {size} bytes, its tensors need {need}.")

  def shape(self, name):
    return self.entries[name][4]

  def read(self, name):
    data, start, end, dtype, shape = self.entries[name]
    return np.asarray(data[start:end]).view(SAFETENSORS_DTYPES[dtype]).reshape(shape)


class _Truncated(Exception):
  """A GGUF file shorter than its tensors: args = (bytes it needs,)."""


class _GgufReader(gguf.GGUFReader):
  """gguf's reader, refusing a file too short for its tensors before it maps them (gguf 0.19
  then fails in a reshape that does not say so), and holding each metadata array in one part.

  gguf makes a numpy view of every array item: ~12 s for Gemma 3's 262,144-token vocabulary (its
  strings, scores and types), most of a model's loading time. Here a numeric array's items are
  one array and a string array's are its raw bytes (each item: a uint64 length, then UTF-8), so an
  array field's `contents()` is not item by item; the loader reads scalars and strings only.
  """

  def _get_field_parts(self, orig_offs, raw_type):
    if raw_type != gguf.GGUFValueType.ARRAY:
      return super()._get_field_parts(orig_offs, raw_type)
    raw_item_type = self._get(orig_offs, np.uint32)
    length = self._get(orig_offs + 4, np.uint64)
    offs = orig_offs + 12
    item_type = gguf.GGUFValueType(int(raw_item_type[0]))
    item_dtype = self.gguf_scalar_to_np.get(item_type)
    if item_dtype is not None:
      items = self._get(offs, item_dtype, int(length[0]))
    elif item_type == gguf.GGUFValueType.STRING:
      end, order = offs, "<" if self.byte_order == "I" else ">"
      for _ in range(int(length[0])):
        end += 8 + struct.unpack_from(order + "Q", self.data, end)[0]
      items = self.data[offs:end]
    else:  # Arrays of arrays: gguf's own way.
      return super()._get_field_parts(orig_offs, raw_type)
    return 12 + int(items.nbytes), [raw_item_type, length, items], [2], [
        gguf.GGUFValueType.ARRAY, item_type]

  def _build_tensors(self, start_offs, fields):
    need = start_offs
    for field in fields:
      dims, raw_type, offset = field.parts[3:6]
      block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(raw_type[0]))]
      need = max(need, start_offs + int(offset[0]) + math.prod(map(int, dims)) * size // block)
    if need > len(self.data):
      raise _Truncated(need)
    super()._build_tensors(start_offs, fields)


def check_gguf_magic(path: pathlib.Path) -> None:
  with open(path, "rb") as file:
    magic = file.read(4)
  if magic != b"GGUF":
    fail(path, f"not a GGUF file (it starts with {magic!r}, not b'GGUF').")


def read_gguf(path: pathlib.Path) -> gguf.GGUFReader:
  """The reader of a GGUF file; ModelFileError when it is not GGUF, corrupt or truncated."""
  check_gguf_magic(path)
  try:
    return _GgufReader(str(path))
  except _Truncated as error:
    fail(path, f"truncated: the file has {path.stat().st_size} bytes, its tensors need "
          f"{error.args[0]}.")
  except (ValueError, IndexError, KeyError, struct.error) as error:
    fail(path, f"unreadable GGUF header, truncated or corrupt ({type(error).__name__}: {error}).")


class Gguf:
  """Tensors of a GGUF file, dequantised to float32 and undoing llama.cpp's conventions."""

  def __init__(self, path: pathlib.Path, reader: gguf.GGUFReader, config: ModelConfig, arch: str):
    self.path = path
    self.tensors = {t.name: t for t in reader.tensors}
    self.entries = self.tensors  # Names, for the missing/extra check.
    self.config, self.arch = config, arch

  def shape(self, name):
    return tuple(int(d) for d in reversed(self.tensors[name].shape))

  def read(self, name):
    t = self.tensors[name]
    x = gguf.quants.dequantize(t.data, t.tensor_type).reshape(self.shape(name))
    if self.arch == "gemma3" and name.endswith("norm.weight"):
      x = x - 1.0  # llama.cpp stores Gemma norms as (1 + w).
    if self.arch == "llama" and (".attn_q." in name or ".attn_k." in name):
      heads = self.config.num_heads if ".attn_q." in name else self.config.num_kv_heads
      x = _unpermute_rope_rows(x, heads)
    return x


def _unpermute_rope_rows(w_OI: np.ndarray, heads: int) -> np.ndarray:
  """llama.cpp interleaves each head's rows (pairs for its RoPE); restore HF's two halves."""
  out, rest = w_OI.shape[0], w_OI.shape[1:]
  return w_OI.reshape(heads, out // heads // 2, 2, *rest).swapaxes(1, 2).reshape(w_OI.shape)

