"""Logits parity with transformers (PyTorch, CPU, float32) on tiny random Qwen3, Llama, Gemma 3."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplay.models import loading
from jaxplay.models import transformer
from tests.models import hf_reference as ref

ARCHS = sorted(ref.ARCHS)
TOL = 1e-4


@pytest.fixture(scope="module", params=ARCHS)
def checkpoint(request, tmp_path_factory):
  model = ref.make_model(request.param)
  # Qwen3 is saved in several shards with an index json; the others as one file.
  kwargs = {"max_shard_size": "40KB"} if request.param == "qwen3" else {}
  directory = ref.save(model, tmp_path_factory.mktemp(request.param), **kwargs)
  config, params = loading.load_hf(directory)
  return request.param, model, config, params


def test_config_matches(checkpoint):
  arch, model, config, _ = checkpoint
  hf = model.config
  assert (config.num_layers, config.d_model, config.num_heads, config.num_kv_heads) == (
      hf.num_hidden_layers, hf.hidden_size, hf.num_attention_heads, hf.num_key_value_heads)
  assert config.tie_embeddings == hf.tie_word_embeddings
  assert config.qk_norm == (arch != "llama")
  assert any(config.is_local) == (arch == "gemma3")


def test_logits_left_padded_batch(checkpoint):
  _, model, config, params = checkpoint
  tokens, mask = ref.left_padded_batch([12, 9, 5, 1], 12, config.vocab_size)
  expected = ref.logits(model, tokens, mask)
  logits, _ = transformer.apply(config, params, jnp.asarray(tokens),
                                jnp.asarray(ref.positions(mask)))
  diff = np.abs(np.asarray(logits) - expected)[mask > 0]
  assert diff.max() <= TOL, diff.max()


def _prefill_then_decode(config, params, cache, tokens, positions):
  """(logits [B, T, V], cache): 5 tokens prefilled into `cache`, then the rest fed one by one."""
  apply = jax.jit(transformer.apply, static_argnums=0)
  logits, cache = apply(config, params, jnp.asarray(tokens[:, :5]),
                        jnp.asarray(positions[:, :5]), cache)
  steps = [np.asarray(logits)]
  for t in range(5, tokens.shape[1]):
    logits, cache = apply(config, params, jnp.asarray(tokens[:, t:t + 1]),
                          jnp.asarray(positions[:, t:t + 1]), cache)
    steps.append(np.asarray(logits))
  return np.concatenate(steps, axis=1), cache


def test_cached_decoding_matches_full_forward(checkpoint):
  """Prefill 5 tokens into the cache, then feed the rest one by one: logits equal transformers'."""
  _, model, config, params = checkpoint
  tokens, mask = ref.left_padded_batch([12, 8], 12, config.vocab_size, seed=1)
  expected = ref.logits(model, tokens, mask)
  logits, cache = _prefill_then_decode(config, params, transformer.init_cache(config, 2, 16),
                                       tokens, ref.positions(mask))
  diff = np.abs(logits - expected)[mask > 0]
  assert diff.max() <= TOL, diff.max()
  assert int(cache.index) == 12


def test_bfloat16_held_as_bits_is_the_same_model(checkpoint):
  """`as_bits` params and an `as_bits` cache (uint16 bits of bfloat16) give exactly the logits of
  the bfloat16 params and cache, prefill and decode steps alike; float32 leaves are left as is."""
  _, _, config, params = checkpoint
  config = dataclasses.replace(config, dtype="bfloat16", param_dtype="bfloat16")
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  bits = transformer.as_bits(params)
  assert {x.dtype for x in jax.tree.leaves(bits)} == {jnp.dtype(jnp.uint16)}
  assert transformer.as_bits({"w": jnp.ones(2)})["w"].dtype == jnp.float32
  tokens, mask = ref.left_padded_batch([12, 8], 12, config.vocab_size, seed=1)
  positions = ref.positions(mask)

  def decode(params, as_bits):
    cache = transformer.init_cache(config, 2, 16, as_bits=as_bits)
    assert cache.k.dtype == (jnp.uint16 if as_bits else jnp.bfloat16)
    return _prefill_then_decode(config, params, cache, tokens, positions)[0][mask > 0]

  reference = decode(params, as_bits=False)
  np.testing.assert_array_equal(decode(bits, as_bits=True), reference)
  float32_logits, _ = transformer.apply(checkpoint[2], checkpoint[3], jnp.asarray(tokens),
                                        jnp.asarray(positions))
  assert np.abs(reference - np.asarray(float32_logits)[mask > 0]).max() > 0  # Really bfloat16.
