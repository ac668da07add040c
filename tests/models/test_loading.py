"""Checkpoint validation, GGUF loading, logical axis names, remat, gradients and dtypes of the
decoder."""

import dataclasses
import json
import pathlib
import re
import shutil

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxplay import errors
from jaxplay.models import configs
from jaxplay.models import loading
from jaxplay.models import weight_files
from jaxplay.models import transformer
from tests.models import hf_reference as ref


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
  return ref.save(ref.make_model("qwen3"), tmp_path_factory.mktemp("qwen3"))


def _rewrite(src, dst, edit):
  """Copies a float32 HF checkpoint, passing its tensors (as numpy) through `edit`."""
  dst.mkdir()
  shutil.copy(f"{src}/config.json", dst / "config.json")
  save_file(edit(load_file(f"{src}/model.safetensors")), str(dst / "model.safetensors"))
  return dst


def _gguf_copy(hf_dir, path):
  """The float32 HF checkpoint `hf_dir` (Qwen3) as a GGUF file with llama.cpp's names and keys."""
  config = loading.config_from_hf(json.loads(pathlib.Path(hf_dir, "config.json").read_text()))
  hf_names = loading._names(config, 0, "model.layers.{i}.")
  gguf_names = loading._names(config, 1, "blk.{i}.")
  tensors = load_file(f"{hf_dir}/model.safetensors")
  writer = gguf.GGUFWriter(str(path), "qwen3")
  writer.add_block_count(config.num_layers)
  writer.add_embedding_length(config.d_model)
  writer.add_feed_forward_length(config.mlp_dim)
  writer.add_head_count(config.num_heads)
  writer.add_head_count_kv(config.num_kv_heads)
  writer.add_key_length(config.head_dim)
  writer.add_layer_norm_rms_eps(config.norm_eps)
  writer.add_rope_freq_base(config.rope_base)
  for keys, _ in jax.tree_util.tree_leaves_with_path(transformer.param_shapes(config)):
    name = "/".join(k.key for k in keys)
    for i in range(config.num_layers) if name.startswith("layers/") else [0]:
      writer.add_tensor(gguf_names[name][0].format(i=i), tensors[hf_names[name][0].format(i=i)])
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


@pytest.fixture(scope="module")
def qwen3_gguf(qwen3_dir, tmp_path_factory):
  return _gguf_copy(qwen3_dir, tmp_path_factory.mktemp("gguf") / "qwen3.gguf")


def test_gguf_loads_like_its_safetensors(qwen3_dir, qwen3_gguf):
  config, params = loading.load(qwen3_gguf)
  hf_config, hf_params = loading.load(qwen3_dir)
  # GGUF keeps the norm epsilon as a float32.
  assert config == dataclasses.replace(hf_config, norm_eps=float(np.float32(hf_config.norm_eps)))
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(hf_params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _model_file_error(path) -> str:
  """The message of the ModelFileError that load(path) raises, checked to be one line."""
  with pytest.raises(weight_files.ModelFileError) as error:
    loading.load(path)
  assert isinstance(error.value, errors.UserError) and isinstance(error.value, ValueError)
  message = str(error.value)
  assert "\n" not in message
  return message


def test_truncated_gguf_says_how_many_bytes_are_missing(qwen3_gguf, tmp_path):
  reader = gguf.GGUFReader(str(qwen3_gguf))
  need = max(t.data_offset + t.n_bytes for t in reader.tensors)
  data = qwen3_gguf.read_bytes()
  cut = tmp_path / "cut.gguf"
  cut.write_bytes(data[:-100])
  assert _model_file_error(cut) == (
      f"{cut}: truncated: the file has {len(data) - 100} bytes, its tensors need {need}.")
  cut.write_bytes(data[:100])  # Inside the metadata.
  assert _model_file_error(cut).startswith(
      f"{cut}: unreadable GGUF header, truncated or corrupt (")


def test_gguf_reader_holds_what_ggufs_own_reads(tmp_path):
  """Our reader (arrays in one part each) gives gguf's own reader's fields, items and tensors."""
  path = tmp_path / "arrays.gguf"
  writer = gguf.GGUFWriter(str(path), "qwen3")
  writer.add_array("test.strings", ["a", "", "äöü ▁x", "<0x0A>"])
  writer.add_array("test.floats", [1.5, -2.0, 3.25])
  writer.add_array("test.ints", [7, -1, 2**20])
  writer.add_array("test.empty", [])
  writer.add_array("test.nested", [[1, 2], [3]])
  writer.add_uint32("test.scalar", 5)
  writer.add_tensor("token_embd.weight", np.arange(8, dtype=np.float32).reshape(4, 2))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  ours, theirs = weight_files.read_gguf(path), gguf.GGUFReader(str(path))

  def items(field):  # Ours: one part; strings as [length uint64, UTF-8] per item.
    part = field.parts[field.data[0]]
    if field.types[1] != gguf.GGUFValueType.STRING:
      return part.tolist()
    data, strings, offset = bytes(part), [], 0
    while offset < len(data):
      length = int.from_bytes(data[offset:offset + 8], "little")
      strings.append(data[offset + 8:offset + 8 + length].decode())
      offset += 8 + length
    return strings

  assert list(ours.fields) == list(theirs.fields)
  for name, field in theirs.fields.items():
    assert ours.fields[name].types == field.types, name
    flat = field.types[0] == gguf.GGUFValueType.ARRAY and field.types[1:2] != [
        gguf.GGUFValueType.ARRAY]
    got = items(ours.fields[name]) if flat and field.data else ours.fields[name].contents()
    assert got == field.contents(), name
  assert items(ours.fields["test.strings"]) == ["a", "", "äöü ▁x", "<0x0A>"]
  assert [(t.name, t.data.tolist()) for t in ours.tensors] == [
      (t.name, t.data.tolist()) for t in theirs.tensors]
  cut = tmp_path / "cut.gguf"
  data = path.read_bytes()
  cut.write_bytes(data[:data.index("äöü".encode()) + 2])  # Inside the string array's items.
  assert _model_file_error(cut).startswith(
      f"{cut}: unreadable GGUF header, truncated or corrupt (")


def test_gguf_of_another_architecture(tmp_path):
  path = tmp_path / "mamba.gguf"
  writer = gguf.GGUFWriter(str(path), "mamba")
  writer.add_tensor("token_embd.weight", np.zeros((4, 2), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  assert _model_file_error(path) == (
      f"{path}: unsupported GGUF architecture 'mamba'; expected qwen3, llama or gemma3.")


@pytest.mark.parametrize("name, content, problem", [
    ("model.gguf", b"Hello, not weights", "not a GGUF file (it starts with b'Hell', not b'GGUF')."),
    ("model.gguf", b"", "not a GGUF file (it starts with b'', not b'GGUF')."),
    ("model.gguf", b"GGUF\x07\x00\x00\x00" + bytes(16), "unreadable GGUF header, truncated or "
     "corrupt (ValueError: Sorry, file appears to be version 7 which we cannot handle)."),
    ("weights.bin", b"\x00" * 64, "is neither a .gguf file nor an HF checkpoint directory "
     "(config.json and *.safetensors)."),
    ("missing.gguf", None, "does not exist; pass an HF checkpoint directory or a .gguf file."),
])
def test_bad_model_path_is_named(tmp_path, name, content, problem):
  path = tmp_path / name
  if content is not None:
    path.write_bytes(content)
  assert _model_file_error(path) == f"{path}: {problem}"


def _hf_copy(qwen3_dir, tmp_path, edits):
  """A copy of the checkpoint with files replaced: {file name: bytes, or a function of them}."""
  directory = tmp_path / "hf"
  shutil.copytree(qwen3_dir, directory)
  for name, edit in edits.items():
    path = directory / name
    path.write_bytes(edit(path.read_bytes()) if callable(edit) else edit)
  return directory


@pytest.mark.parametrize("edits, file, problem", [
    ({"model.safetensors": b"Hello, these are not weights at all"}, "model.safetensors",
     # 8 + b"Hello, t" read as the little-endian length of the header.
     r"not a safetensors file, or truncated: its header needs 8367736964726416720 bytes, the file "
     r"has 35\."),
    ({"model.safetensors": b"\x04" + bytes(7) + b"[1, "}, "model.safetensors",
     r"not a safetensors file \(its header is not safetensors JSON: JSONDecodeError: .*\)\."),
    ({"model.safetensors": b"\x02" + bytes(7) + b"{}"}, "",  # No tensors.
     r"does not match its model config: missing tensor model.embed_tokens.weight \(for "
     r"embedding\); .*; and \d+ more\."),
    ({"config.json": b"{\"model_type\": \"qwen3\","}, "config.json", r"not valid JSON \(.*\)\."),
    ({"config.json": lambda b: b.replace(b'"qwen3"', b'"xyz"')}, "config.json",
     r"unsupported model_type 'xyz'; expected qwen3, llama or gemma3_text\."),
    ({"model.safetensors.index.json": b'{"weight_map": {"x": "model-2.safetensors"}}'},
     "model-2.safetensors", r"does not exist \(model.safetensors.index.json lists it\)\."),
])
def test_bad_hf_file_is_named(qwen3_dir, tmp_path, edits, file, problem):
  directory = _hf_copy(qwen3_dir, tmp_path, edits)
  assert re.fullmatch(re.escape(f"{directory / file}: ") + problem, _model_file_error(directory))


def test_truncated_safetensors_says_how_many_bytes_are_missing(qwen3_dir, tmp_path):
  size = pathlib.Path(qwen3_dir, "model.safetensors").stat().st_size
  directory = _hf_copy(qwen3_dir, tmp_path, {"model.safetensors": lambda b: b[:-1000]})
  assert _model_file_error(directory) == (f"{directory / 'model.safetensors'}: truncated: the file "
                                          f"has {size - 1000} bytes, its tensors need {size}.")


def test_bad_checkpoint_names_every_problem(qwen3_dir, tmp_path):
  def edit(tensors):
    del tensors["model.layers.1.mlp.up_proj.weight"]
    tensors["model.layers.0.self_attn.q_proj.weight"] = np.zeros((3, 48), np.float32)
    tensors["model.extra.weight"] = np.zeros(2, np.float32)
    return tensors

  bad = _rewrite(qwen3_dir, tmp_path / "bad", edit)
  with pytest.raises(ValueError) as error:
    loading.load_hf(bad)
  message = str(error.value)
  assert message.startswith(f"{bad}: does not match its model config: ") and "\n" not in message
  assert "missing tensor model.layers.1.mlp.up_proj.weight" in message
  assert "model.layers.0.self_attn.q_proj.weight has shape (3, 48), expected (64, 48)" in message
  assert "unexpected tensor model.extra.weight" in message


def test_a_long_mismatch_lists_ten_problems_and_counts_the_rest(qwen3_dir, tmp_path):
  renamed = _rewrite(qwen3_dir, tmp_path / "renamed",
                     lambda tensors: {"x." + k: v for k, v in tensors.items()})
  count = len(load_file(f"{qwen3_dir}/model.safetensors"))
  message = _model_file_error(renamed)
  assert message.count("; ") == 10 and message.endswith(f"; and {2 * count - 10} more.")


def test_param_dtype_and_sharding_fn(qwen3_dir):
  seen = []

  def sharding_fn(axes):
    seen.append(axes)
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])

  config, params = loading.load_hf(qwen3_dir, sharding_fn, param_dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  assert ("layers", "embed", "heads", "head_dim") in seen
  assert ("embed", "vocab") in seen  # The untied lm_head.
  assert config.param_dtype == "bfloat16"


def test_logical_axis_names():
  axes = transformer.param_axes(configs.gemma3_270m())
  names = {name for spec in jax.tree.leaves(
      axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) for name in spec}
  assert names == {"embed", "heads", "kv_heads", "head_dim", "mlp", "vocab", "layers"}
  assert axes["layers"]["attn"]["q"] == jax.sharding.PartitionSpec(
      "layers", "embed", "heads", "head_dim")
  shapes = transformer.param_shapes(configs.gemma3_270m())
  count = sum(x.size for x in jax.tree.leaves(shapes))
  assert 265e6 < count < 270e6  # Gemma 3 270M: 268,098,176 parameters.


def _log_softmax_grad(config, params):
  """A jitted grad(params) of the mean log-softmax of a fixed [2, 8] token batch under `config`."""
  tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, config.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(8), (2, 8))

  def loss(p):
    logits, _ = transformer.apply(config, p, tokens, positions)
    return jax.nn.log_softmax(logits).mean()
  return jax.jit(jax.grad(loss))


def test_remat_gives_the_same_gradients():
  config = configs.tiny()
  params = transformer.init_params(config, jax.random.key(0))
  plain = _log_softmax_grad(config, params)(params)
  remat = _log_softmax_grad(configs.tiny(remat=True), params)(params)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bfloat16_layers_hold_their_residuals_as_bits(monkeypatch):
  """A bfloat16 model's backward pass reads each layer's residuals from uint16 stacks (no stack of
  the layers' residuals is widened to float32, as XLA's CPU backend widens a bfloat16 one to write
  or slice it), with exactly the gradients of residuals held as bfloat16."""
  config = configs.tiny(num_layers=5, dtype="bfloat16")  # 5: a leading dim no other array has.
  params = transformer.init_params(config, jax.random.key(0))
  grad = _log_softmax_grad(config, params)
  hlo = grad.lower(params).compile().as_text()
  assert not re.findall(r"= f32\[5,[^\]]*\]\S* convert\(", hlo)
  assert "= u16[5," in hlo
  held_as_bits = grad(params)
  monkeypatch.setattr(transformer, "_residuals_as_bits", lambda vjp_fn: vjp_fn)
  monkeypatch.setattr(transformer, "_residuals_from_bits", lambda held: held)
  held_as_bfloat16 = _log_softmax_grad(config, params)(params)
  for a, b in zip(jax.tree.leaves(held_as_bits), jax.tree.leaves(held_as_bfloat16)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("spec, x_shape, w_shape, out_dtype", [
    ("bte,ef->btf", (2, 3, 4), (4, 5), None),  # MLP gate / up
    ("btf,fe->bte", (2, 3, 5), (5, 4), None),  # MLP down
    ("bte,ehd->bthd", (2, 3, 4), (4, 2, 3), None),  # attention q / k / v
    ("bthd,hde->bte", (2, 3, 2, 3), (2, 3, 4), None),  # attention o
    ("btd,vd->btv", (2, 3, 4), (6, 4), "float32"),  # the logits of a tied embedding
    ("bte,er->btr", (2, 3, 4), (4, 2), None),  # a LoRA A
    ("bthd,hdr->btr", (2, 3, 2, 3), (2, 3, 2), None),  # the o projection's LoRA A
    ("btr,rhd->bthd", (2, 3, 2), (2, 2, 3), None),  # a LoRA B
])
def test_projection_gradients_are_autodiffs(spec, x_shape, w_shape, out_dtype, dtype):
  x = jax.random.normal(jax.random.key(0), x_shape, dtype)
  w = jax.random.normal(jax.random.key(1), w_shape, dtype)
  einsum = lambda spec, x, w: jnp.einsum(spec, x, w, preferred_element_type=out_dtype)
  # The output's cotangent: values of x's dtype (ours rounds a float32 one to it).
  probe = jax.random.normal(jax.random.key(2), einsum(spec, x, w).shape, dtype)
  probe = probe.astype(out_dtype or dtype)
  loss = lambda f: lambda x, w: jnp.sum(f(spec, x, w) * probe).astype(jnp.float32)
  plain_grads = lambda spec, x, w: transformer.einsum_with_plain_grads(spec, x, w, out_dtype)
  assert plain_grads(spec, x, w).dtype == (out_dtype or dtype)
  ours = jax.grad(loss(plain_grads), argnums=(0, 1))(x, w)
  autodiff = jax.grad(loss(einsum), argnums=(0, 1))(x, w)
  for a, b in zip(ours, autodiff):
    assert a.dtype == b.dtype == dtype
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               rtol=1e-6 if dtype == "float32" else 1e-2, atol=1e-6)


def test_the_down_projections_gradient_reads_its_saved_input_untransposed():
  """The backward pass never copies the down projection's saved input [B, T, F] transposed
  ([F, B * T]): XLA's CPU backend copies a residual sliced out of the layers' stack slowly, so its
  weight gradient transposes the narrower output gradient instead (`transformer._weight_grad`;
  BENCHMARKS.md, train step, stop 57). mlp_dim 176 and 3 x 7 tokens: shapes no other array has."""
  config = configs.tiny(dtype="bfloat16", mlp_dim=176)
  params = transformer.init_params(config, jax.random.key(0))
  tokens = np.ones((3, 7), np.int32)
  loss = lambda p: jnp.sum(transformer.apply(config, p, tokens, np.broadcast_to(np.arange(7),
                                                                              (3, 7)))[0])
  hlo = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
  assert "bf16[2,176,64]" in hlo or "f32[2,176,64]" in hlo  # The stacked down weights' gradient.
  assert not re.findall(r"= bf16\[176,(21|3,7)\]", hlo)


@pytest.mark.parametrize("activation, op", [("gelu", "tanh"), ("silu", "exponential")])
def test_the_mlp_activation_runs_in_float32(activation, op):
  """In bfloat16 compute the MLP's activation and product take float32 (XLA's CPU backend runs
  bfloat16 elementwise math op by op, ~3x slower, and rounds each step): the traced program
  applies the nonlinearity to float32 [B, T, F] only. mlp_dim 176: a width no other array has."""
  config = configs.tiny(dtype="bfloat16", mlp_dim=176, activation=activation)
  params = transformer.init_params(config, jax.random.key(0))
  tokens = np.ones((3, 7), np.int32)
  apply = lambda p: transformer.apply(config, p, tokens, np.broadcast_to(np.arange(7), (3, 7)))
  program = jax.jit(apply).lower(params).as_text()
  widths = re.findall(rf"stablehlo\.{op} .*tensor<3x7x176x(\w+)>", program)
  assert widths and set(widths) == {"f32"}, widths


def test_the_mlp_activations_gradient_recomputes_its_float32_steps():
  """Under a gradient the MLP's activation (`transformer._gated`) holds only its bfloat16 inputs
  and recomputes its float32 steps (a `jax.checkpoint`; `jaxplay.cli.memory` on the local preset:
  its train step's temporaries 3.80 GiB, 6.12 with them held), with autodiff's gradient of the
  same float32 formula."""
  gate = jax.random.normal(jax.random.key(0), (3, 7, 176), jnp.bfloat16)
  up = jax.random.normal(jax.random.key(1), (3, 7, 176), jnp.bfloat16)
  ours = lambda g, u: transformer._gated(g, u, "gelu").astype(jnp.float32).sum()
  plain = lambda g, u: (jax.nn.gelu(g.astype(jnp.float32), approximate=True) * u.astype(
      jnp.float32)).astype(jnp.bfloat16).astype(jnp.float32).sum()
  grad = jax.grad(ours, argnums=(0, 1))
  assert "remat2" in {eqn.primitive.name for eqn in jax.make_jaxpr(grad)(gate, up).eqns}
  for got, want in zip(grad(gate, up), jax.grad(plain, argnums=(0, 1))(gate, up)):
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_projection_dots_round_a_float32_sum_to_their_dtype(dtype):
  """`transformer.dot` (which takes XLA's fast bfloat16 kernels on CPU) returns the input dtype,
  within one of its units in the last place of the exact sum: summed in float32, then rounded."""
  spec = "bte,ehd->bthd"
  x = jax.random.normal(jax.random.key(0), (2, 16, 640), dtype)
  w = jax.random.normal(jax.random.key(1), (640, 4, 64), dtype)
  exact = jnp.einsum(spec, x.astype(jnp.float32), w.astype(jnp.float32), precision="highest")
  ours = transformer.dot(spec, x, w)
  assert ours.dtype == dtype
  ulp = 2.0 ** (-7 if dtype == "bfloat16" else -23)
  error = np.abs(np.asarray(ours, np.float32) - exact) / np.maximum(np.abs(exact), 1e-3)
  assert error.max() <= ulp * (1 if dtype == "bfloat16" else 64)
  rounded = np.asarray(exact.astype(dtype), np.float32)
  assert np.mean(np.asarray(ours, np.float32) == rounded) > 0.99  # Not a bfloat16 running sum.


def test_bfloat16_compute_stays_close(qwen3_dir):
  tokens, mask = ref.left_padded_batch([10, 4], 10, 97)
  positions = jnp.asarray(ref.positions(mask))
  config, params = loading.load_hf(qwen3_dir)
  full, _ = transformer.apply(config, params, jnp.asarray(tokens), positions)
  config16, params16 = loading.load_hf(qwen3_dir, param_dtype="bfloat16", dtype="bfloat16")
  half, _ = transformer.apply(config16, params16, jnp.asarray(tokens), positions)
  assert half.dtype == jnp.float32
  diff = np.abs(np.asarray(half) - np.asarray(full))[mask > 0]
  assert 0 < diff.max() < 0.05
