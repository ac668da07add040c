"""Params -> an HF checkpoint directory that `transformers` loads (the inverse of loading).

`export_hf` writes config.json (qwen3, llama or gemma3_text), model.safetensors with HF names and
[out, in] layouts (the per-layer tensors unstacked from our scanned `layers`), and the tokenizer
files when given one. Tensor names come from the tables of `jaxplay.models.loading`, so a directory
written here loads back with `loading.load_hf` to the same params. A LoRA run exports either its
adapters merged into the weights (`export_hf` of `transformer.merge_adapters`) or, with
`export_peft`, a PEFT adapter directory that `peft.PeftModel.from_pretrained` puts on the base.

  python -m jaxplay.cli.export --workdir=DIR --out=OUT_DIR [--lora=merged|peft]  # latest checkpoint
"""

from __future__ import annotations

import json
import math
import pathlib

import jax
import numpy as np

from jaxplay import errors, sharding
from jaxplay.models import loading, transformer, weight_files
from jaxplay.models.configs import ModelConfig
from jaxplay.run import store
from jaxplay.run import workdir as workdir_lib

LORA_FORMATS = ("merged", "peft")  # How a LoRA run exports (export_run's `lora`).

_DTYPE_NAMES = {np.dtype(v): k for k, v in weight_files.SAFETENSORS_DTYPES.items()}
_ARCHITECTURES = {"qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM",
                  "gemma3_text": "Gemma3ForCausalLM"}


def model_type(config: ModelConfig) -> str:
  """The transformers model_type that computes exactly what `config` describes."""
  gemma = (config.activation, config.qk_norm, config.sandwich_norm, config.norm_plus_one,
           config.scale_embeddings) == ("gelu_tanh", True, True, True, True)
  plain = (config.activation, config.sandwich_norm, config.norm_plus_one,
           config.scale_embeddings) == ("silu", False, False, False)
  if not (gemma or plain):
    raise ValueError("config matches none of qwen3, llama, gemma3_text (activation, norms and "
                     "embedding scaling must be those of one of them)")
  if config.attn_softcap is not None:
    raise ValueError("attn_softcap has no transformers equivalent (its Gemma 3 ignores it)")
  if not gemma and (any(config.is_local) or config.final_softcap is not None
                    or config.query_scale not in (None, config.head_dim)):
    raise ValueError("sliding-window layers, final_softcap and query_scale need Gemma 3")
  return "gemma3_text" if gemma else "qwen3" if config.qk_norm else "llama"


def _rope_parameters(base: float, scaling) -> dict:
  rope = {"rope_type": "default", "rope_theta": base}
  if scaling is not None:
    rope.update(rope_type=scaling.kind, factor=scaling.factor)
    if scaling.kind == "llama3":
      rope.update(low_freq_factor=scaling.low_freq_factor,
                  high_freq_factor=scaling.high_freq_factor,
                  original_max_position_embeddings=scaling.original_max_position)
  return rope


def hf_config(config: ModelConfig, tokenizer=None) -> dict:
  """The config.json dict (transformers 5 layout) that rebuilds `config` in transformers."""
  kind = model_type(config)
  hf = dict(
      model_type=kind, architectures=[_ARCHITECTURES[kind]], vocab_size=config.vocab_size,
      hidden_size=config.d_model, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
      head_dim=config.head_dim, intermediate_size=config.mlp_dim, rms_norm_eps=config.norm_eps,
      tie_word_embeddings=config.tie_embeddings, attention_bias=False,
      torch_dtype=config.param_dtype, dtype=config.param_dtype)
  global_rope = _rope_parameters(config.rope_base, config.rope_scaling)
  if kind == "gemma3_text":
    scalar = config.query_scale or config.head_dim  # transformers wants an int when it is one.
    hf.update(
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=int(scalar) if float(scalar).is_integer() else scalar,
        final_logit_softcapping=config.final_softcap,
        attn_logit_softcapping=None, sliding_window=config.sliding_window or None,
        layer_types=["sliding_attention" if local else "full_attention"
                     for local in config.is_local],
        rope_parameters={"full_attention": global_rope,
                         "sliding_attention": _rope_parameters(config.local_rope_base, None)})
  else:
    hf.update(hidden_act="silu", mlp_bias=False, rope_parameters=global_rope)
  if tokenizer is not None:
    for name in ("bos", "eos", "pad"):
      hf[f"{name}_token_id"] = getattr(tokenizer, f"{name}_token_id")
  return hf


def _from_ours(x, n_in):
  """Our [in dims..., out dims...] array -> HF's [out, in] (a copy when n_in is None)."""
  x = np.asarray(x)
  if n_in is None:
    return x
  return x.reshape(math.prod(x.shape[:n_in]), -1).T


def _tensors(config: ModelConfig, params):
  """[(HF name, shape, dtype, thunk giving the numpy array)], sorted by name."""
  names = loading._names(config, 0, "model.layers.{i}.")
  out = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    template, n_in = names["/".join(k.key for k in path)]
    layered = path[0].key == "layers"
    one_shape = leaf.shape[1:] if layered else leaf.shape
    shape = loading._expected_source_shape(one_shape, n_in)
    if layered:
      out += [(template.format(i=i), shape, leaf.dtype,
               lambda leaf=leaf, i=i, n_in=n_in: _from_ours(leaf[i], n_in))
              for i in range(config.num_layers)]
    else:
      out.append((template, shape, leaf.dtype, lambda leaf=leaf, n_in=n_in: _from_ours(leaf, n_in)))
  return sorted(out, key=lambda item: item[0])


def _write_safetensors(path: pathlib.Path, tensors) -> None:
  """Streams tensors into one safetensors file, one tensor in host memory at a time."""
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for name, shape, dtype, _ in tensors:
    size = math.prod(shape) * np.dtype(dtype).itemsize
    header[name] = {"dtype": _DTYPE_NAMES[np.dtype(dtype)], "shape": list(shape),
                    "data_offsets": [offset, offset + size]}
    offset += size
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # The data starts 8-byte aligned.
  with open(path, "wb") as f:
    f.write(len(blob).to_bytes(8, "little") + blob)
    for *_, thunk in tensors:
      f.write(np.ascontiguousarray(thunk()).tobytes())


def export_hf(model_config: ModelConfig, params, out_dir, tokenizer=None) -> str:
  """Writes config.json, model.safetensors and (when given) the tokenizer files; returns out_dir."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(hf_config(model_config, tokenizer), indent=2) + "\n")
  _write_safetensors(out / "model.safetensors", _tensors(model_config, params))
  if tokenizer is not None:
    tokenizer.save_pretrained(str(out))
  return str(out)


PEFT_PREFIX = "base_model.model."  # What peft's LoRA model adds before the base model's names.


def export_peft(model_config: ModelConfig, params, out_dir, base_model: str = "") -> str:
  """Writes a LoRA run's adapters as a PEFT directory (adapter_config.json,
  adapter_model.safetensors: lora_A [r, in] and lora_B [out, r] per layer and target, scale
  lora_alpha / r as ours); `base_model` is recorded as base_model_name_or_path."""
  if not model_config.lora_rank:
    raise ValueError("the model has no LoRA adapters (model lora_rank is 0)")
  names = loading._names(model_config, 0, "model.layers.{i}.")
  tensors, modules = [], set()
  for target in model_config.lora_targets:
    module = "attn" if target in ("q", "k", "v", "o") else "mlp"
    template, n_in = names[f"layers/{module}/{target}"]
    prefix = PEFT_PREFIX + template.removesuffix(".weight")
    modules.add(template.removesuffix(".weight").rsplit(".", 1)[-1])
    a, b = (params["layers"][module][f"{target}_lora_{x}"] for x in "ab")
    rank = model_config.lora_rank
    for i in range(model_config.num_layers):
      a_hf = lambda a=a, i=i: np.asarray(a[i]).reshape(-1, rank).T  # [r, in]
      b_hf = lambda b=b, i=i: np.asarray(b[i]).reshape(rank, -1).T  # [out, r]
      tensors += [(f"{prefix.format(i=i)}.lora_A.weight", (rank, math.prod(a.shape[1:-1])),
                   a.dtype, a_hf),
                  (f"{prefix.format(i=i)}.lora_B.weight", (math.prod(b.shape[2:]), rank),
                   b.dtype, b_hf)]
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  adapter_config = dict(
      peft_type="LORA", task_type="CAUSAL_LM", r=model_config.lora_rank,
      lora_alpha=model_config.lora_alpha, target_modules=sorted(modules), lora_dropout=0.0,
      bias="none", fan_in_fan_out=False, use_rslora=False, use_dora=False,
      init_lora_weights=True, inference_mode=True, base_model_name_or_path=base_model or None)
  (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
  _write_safetensors(out / "adapter_model.safetensors", sorted(tensors, key=lambda t: t[0]))
  return str(out)


def export_run(workdir: str, out_dir: str, mesh: dict[str, int] | None = None,
               lora: str = "merged") -> tuple[str, int]:
  """Exports the latest checkpoint of a run with its tokenizer; returns (out_dir, step).

  A LoRA run exports with `lora="merged"` an HF model with the adapters merged into the weights,
  with `lora="peft"` a PEFT adapter directory (and the tokenizer) for the run's base model.
  `mesh` replaces the run's mesh sizes (see `store.load_run`). Refuses (WorkdirError) an `out_dir`
  inside the run's workdir or holding a run, whose files the export would overwrite."""
  out, run = pathlib.Path(out_dir).resolve(), pathlib.Path(workdir).resolve()
  if out == run or run in out.parents or workdir_lib.read_config(out) is not None and (
      out / "checkpoints").exists():
    raise workdir_lib.WorkdirError(f"--out={out_dir} is inside a run's workdir ({workdir}); the "
                                   "export would overwrite its files. Choose another directory.")
  if lora not in LORA_FORMATS:
    raise errors.UserError(f"--lora={lora}: unknown; valid: {', '.join(LORA_FORMATS)}.")
  config, exp, state, step = store.load_run(workdir, mesh)
  try:
    model_type(exp.model)
  except ValueError as error:
    raise workdir_lib.WorkdirError(f"{workdir}: its model cannot be exported: {error}.") from None
  model, params = exp.model, state.params
  if model.lora_rank and lora == "peft":
    written = export_peft(model, params, out_dir, base_model=config.model.path)
    exp.tokenizer.save_pretrained(written)
    return written, step
  if model.lora_rank:
    model, params = transformer.merge_adapters(model, params)
  return export_hf(model, params, out_dir, exp.tokenizer), step


@errors.user_facing
def main(argv):
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel
  try:
    mesh = None if flags.FLAGS.mesh is None else sharding.parse_mesh_sizes(flags.FLAGS.mesh)
  except ValueError as error:
    raise errors.UserError(f"--mesh: {error}") from None
  out, step = export_run(flags.FLAGS.workdir, flags.FLAGS.out, mesh, flags.FLAGS.lora)
  print(f"Exported the step-{step} params of {flags.FLAGS.workdir} to {out}.")


def run() -> None:
  """`python -m jaxplay.cli.export` and the `jaxplay-export` console script (the flags are defined
  here, not at import: other entry points import this module and have their own --workdir)."""
  from absl import app, flags  # pylint: disable=ungrouped-imports,import-outside-toplevel
  flags.DEFINE_string("workdir", None, "Run directory holding checkpoints.", required=True)
  flags.DEFINE_string("out", None, "Directory to write the HF checkpoint into.", required=True)
  flags.DEFINE_string("mesh", None, "data,fsdp,tensor sizes replacing the run's mesh, e.g. "
                      "-1,1,1 (all devices here) to export on other devices than the run used.")
  flags.DEFINE_string("lora", "merged", "A LoRA run: 'merged' (an HF model with the adapters "
                      "merged in) or 'peft' (a PEFT adapter directory for the run's base model).")
  app.run(main)


if __name__ == "__main__":
  run()
