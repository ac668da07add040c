"""Checkpoint validation, logical axis names, remat and dtypes of the decoder."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxplay.models import configs
from jaxplay.models import loading
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


def test_bad_checkpoint_names_every_problem(qwen3_dir, tmp_path):
  def edit(tensors):
    del tensors["model.layers.1.mlp.up_proj.weight"]
    tensors["model.layers.0.self_attn.q_proj.weight"] = np.zeros((3, 48), np.float32)
    tensors["model.extra.weight"] = np.zeros(2, np.float32)
    return tensors

  with pytest.raises(ValueError) as error:
    loading.load_hf(_rewrite(qwen3_dir, tmp_path / "bad", edit))
  message = str(error.value)
  assert "missing tensor model.layers.1.mlp.up_proj.weight" in message
  assert "model.layers.0.self_attn.q_proj.weight has shape (3, 48), expected (64, 48)" in message
  assert "unexpected tensor model.extra.weight" in message


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


def test_remat_gives_the_same_gradients():
  config = configs.tiny()
  params = transformer.init_params(config, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, config.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(8), (2, 8))

  def loss(p, cfg):
    logits, _ = transformer.apply(cfg, p, tokens, positions)
    return jax.nn.log_softmax(logits).mean()

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  plain = grad(params, config)
  remat = grad(params, configs.tiny(remat=True))
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


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
