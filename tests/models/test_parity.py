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


def _prefill_then_decode(config, params, cache, tokens, positions, shared=None):
  """(logits [B, T, V], cache): 5 tokens prefilled into `cache`, then the rest fed one by one."""
  apply = jax.jit(transformer.apply, static_argnums=0)
  logits, cache = apply(config, params, jnp.asarray(tokens[:, :5]),
                        jnp.asarray(positions[:, :5]), cache, shared=shared)
  steps = [np.asarray(logits)]
  for t in range(5, tokens.shape[1]):
    logits, cache = apply(config, params, jnp.asarray(tokens[:, t:t + 1]),
                          jnp.asarray(positions[:, t:t + 1]), cache, shared=shared)
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


def test_shared_starts_give_the_logits_of_whole_prompts(checkpoint):
  """Two prompt starts held once (SharedKV; the second a token shorter, its last slot empty),
  rows 0 and 2 continuing the second and row 1 the first, prefilled then decoded one token at a
  time: transformers' logits of the whole prompts (start, then the row's own tokens)."""
  _, model, config, params = checkpoint
  starts = np.asarray([[5, 9, 2, 7], [3, 8, 1, 0]])
  start_positions = np.asarray([[0, 1, 2, 3], [0, 1, 2, -1]])
  start_of_row = np.asarray([1, 0, 1])
  own, own_mask = ref.left_padded_batch([8, 6, 3], 8, config.vocab_size, seed=2)
  start_lengths = (start_positions >= 0).sum(1)[start_of_row]
  whole = np.zeros((3, 12), own.dtype)
  whole_mask = np.zeros_like(whole)
  for row, length in enumerate(own_mask.sum(1)):
    prompt = np.concatenate([starts[start_of_row[row], :start_lengths[row]], own[row, -length:]])
    whole[row, -len(prompt):], whole_mask[row, -len(prompt):] = prompt, 1
  expected = ref.logits(model, whole, whole_mask)[:, -8:]

  _, start_cache = transformer.apply(config, params, jnp.asarray(starts),
                                     jnp.asarray(start_positions),
                                     transformer.init_cache(config, 2, 4))
  shared = transformer.SharedKV(k=start_cache.k, v=start_cache.v,
                                positions=start_cache.positions, start=jnp.asarray(start_of_row))
  own_positions = np.where(own_mask > 0, start_lengths[:, None] + ref.positions(own_mask), -1)
  logits, _ = _prefill_then_decode(config, params, transformer.init_cache(config, 3, 8), own,
                                   own_positions, shared=shared)
  diff = np.abs(logits - expected)[own_mask > 0]
  assert diff.max() <= TOL, diff.max()
  swapped = shared.replace(start=jnp.asarray(1 - start_of_row))
  logits, _ = _prefill_then_decode(config, params, transformer.init_cache(config, 3, 8), own,
                                   own_positions, shared=swapped)
  assert np.abs(logits - expected)[own_mask > 0].max() > 1e-2  # Each row reads its own start.


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
