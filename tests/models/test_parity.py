"""Logits parity with transformers (PyTorch, CPU, float32) on tiny random Qwen3, Llama, Gemma 3."""

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


def test_cached_decoding_matches_full_forward(checkpoint):
  """Prefill 5 tokens into the cache, then feed the rest one by one: logits equal transformers'."""
  _, model, config, params = checkpoint
  tokens, mask = ref.left_padded_batch([12, 8], 12, config.vocab_size, seed=1)
  expected = ref.logits(model, tokens, mask)
  positions = ref.positions(mask)
  cache = transformer.init_cache(config, 2, 16)
  apply = jax.jit(transformer.apply, static_argnums=0)
  logits, cache = apply(config, params, jnp.asarray(tokens[:, :5]),
                        jnp.asarray(positions[:, :5]), cache)
  steps = [np.asarray(logits)]
  for t in range(5, 12):
    logits, cache = apply(config, params, jnp.asarray(tokens[:, t:t + 1]),
                          jnp.asarray(positions[:, t:t + 1]), cache)
    steps.append(np.asarray(logits))
  diff = np.abs(np.concatenate(steps, axis=1) - expected)[mask > 0]
  assert diff.max() <= TOL, diff.max()
  assert int(cache.index) == 12
