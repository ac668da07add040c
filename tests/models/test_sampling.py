"""The compiled sampler against transformers generate and a teacher-forced forward pass."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats

from jaxplay import compiling
from jaxplay.models import configs, loading, sampling, transformer
from tests.models import hf_reference as ref

R = 12  # max_response_len
LENGTHS = [7, 4, 1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  hf_model = ref.make_model("gemma3", seed=3)
  config, params = loading.load_hf(ref.save(hf_model, tmp_path_factory.mktemp("gemma3")))
  tokens, mask = ref.left_padded_batch(LENGTHS, 7, config.vocab_size, seed=4)
  return hf_model, config, params, tokens, mask


def _generate(model, key=0, width=7, temperature=1.0, top_p=1.0, top_k=0, stop=(-1,), **int8):
  _, config, params, tokens, mask = model
  pad = width - tokens.shape[1]
  tokens = np.pad(tokens, ((0, 0), (pad, 0)))
  return sampling.generate(config, params, tokens, mask.sum(1), jax.random.key(key),
                           jnp.asarray(temperature), jnp.asarray(top_p), jnp.asarray(top_k),
                           jnp.asarray(stop), max_response_len=R, **int8)


# Compiled as the train step's pass is (a bfloat16 model's numerics depend on the options).
_compiled_apply = compiling.jit(transformer.apply, static_argnums=0,
                                static_argnames="return_hidden")


def _teacher_forced_hidden(model, samples):
  """Final hidden states [B, R, D] that predicted each response token, from one uncached pass."""
  _, config, params, tokens, mask = model
  full = np.concatenate([tokens, np.asarray(samples.tokens)], axis=1)
  positions = np.concatenate([ref.positions(mask), mask.sum(1)[:, None] + np.arange(R)], 1)
  hidden, _ = _compiled_apply(config, params, jnp.asarray(full), jnp.asarray(positions),
                              return_hidden=True)
  return hidden[:, tokens.shape[1] - 1:-1]


def _teacher_forced_logits(model, samples):
  """Logits [B, R, V] that predicted each response token, from one uncached forward pass."""
  _, config, params, _, _ = model
  return np.asarray(transformer.unembed(config, params, _teacher_forced_hidden(model, samples)))


def test_greedy_matches_transformers_generate(model):
  hf_model, _, _, tokens, mask = model
  samples = _generate(model, temperature=0.0)
  with torch.no_grad():
    expected = hf_model.generate(
        input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask),
        max_new_tokens=R, do_sample=False, pad_token_id=0, eos_token_id=None)
  np.testing.assert_array_equal(samples.tokens, expected[:, tokens.shape[1]:].numpy())
  np.testing.assert_array_equal(samples.lengths, R)


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 1.0, 0), (0.7, 0.8, 5)])
def test_logprobs_match_teacher_forcing(model, temperature, top_p, top_k):
  samples = _generate(model, temperature=temperature, top_p=top_p, top_k=top_k)
  logits = _teacher_forced_logits(model, samples) / temperature
  expected = jax.nn.log_softmax(logits, axis=-1)
  tokens = np.asarray(samples.tokens)
  chosen = np.take_along_axis(np.asarray(expected), tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(samples.logprobs, chosen, atol=1e-4)
  if top_k:  # Every drawn token lies inside the top-k set and the top-p nucleus.
    rank = (logits > np.take_along_axis(logits, tokens[..., None], -1)).sum(-1)
    assert rank.max() < top_k
    probs = np.exp(np.asarray(expected))
    mass_above = np.where(logits > np.take_along_axis(logits, tokens[..., None], -1),
                          probs, 0).sum(-1)
    assert mass_above.max() < top_p
    assert len(np.unique(tokens)) > 3  # Not greedy in disguise.


def test_stop_tokens_end_rows_and_pad(model):
  greedy = np.asarray(_generate(model, temperature=0.0).tokens)
  stop = [greedy[0, 2], greedy[1, 5]]
  samples = _generate(model, temperature=0.0, stop=stop)
  for row in range(len(LENGTHS)):
    hits = np.flatnonzero(np.isin(greedy[row], stop))
    length = hits[0] + 1 if hits.size else R
    assert samples.lengths[row] == length
    np.testing.assert_array_equal(samples.tokens[row, :length], greedy[row, :length])
    assert (np.asarray(samples.tokens[row, length:]) == 0).all()
    assert (np.asarray(samples.logprobs[row, length:]) == 0).all()
  assert samples.lengths[0] <= 3


def test_padding_does_not_change_rows(model):
  narrow = _generate(model, key=5, top_p=0.9)
  wide = _generate(model, key=5, top_p=0.9, width=13)
  np.testing.assert_array_equal(narrow.tokens, wide.tokens)
  np.testing.assert_array_equal(narrow.lengths, wide.lengths)
  np.testing.assert_allclose(narrow.logprobs, wide.logprobs, atol=1e-5)


def _sample_in_passes(model, chunk: int, monkeypatch, width: int = 13):
  """`_generate`'s rows at key 5, top-p 0.9, their prompts prefilled in passes of `chunk` columns
  (traced afresh, so the patched constant is read)."""
  monkeypatch.setattr(sampling, "PREFILL_CHUNK", chunk)
  _, config, params, tokens, mask = model
  tokens = np.pad(tokens, ((0, 0), (width - tokens.shape[1], 0)))
  run = compiling.jit(lambda params, tokens, lengths: sampling.sample(
      config, params, tokens, lengths, jax.random.key(5), 1.0, 0.9, 0, jnp.asarray([-1]),
      max_response_len=R))
  return run(params, tokens, mask.sum(1))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_prefill_passes_give_the_samples_of_one_pass(model, monkeypatch, dtype):
  """Prompts 13 wide prefilled in passes of 3 columns (5 passes over 15 columns; the longest
  row's 7 tokens fill the last 2, so 3 passes of padding are left out): one pass's samples."""
  hf_model, config, params, tokens, mask = model
  model = (hf_model, dataclasses.replace(config, dtype=dtype, param_dtype=dtype),
           jax.tree.map(lambda x: x.astype(dtype), params), tokens, mask)
  one_pass = _sample_in_passes(model, 128, monkeypatch)
  passes = _sample_in_passes(model, 3, monkeypatch)
  np.testing.assert_array_equal(passes.tokens, one_pass.tokens)
  np.testing.assert_array_equal(passes.lengths, one_pass.lengths)
  np.testing.assert_allclose(passes.logprobs, one_pass.logprobs, atol=1e-5)


def test_changing_sampling_arrays_does_not_recompile(model):
  _generate(model, temperature=1.0, top_p=1.0, top_k=0)
  size = sampling.generate._cache_size()
  for t, p, k in [(0.0, 1.0, 0), (0.5, 0.9, 3), (1.3, 0.5, 50)]:
    _generate(model, temperature=t, top_p=p, top_k=k)
  per_row = jnp.asarray([0.0, 0.6, 1.0])
  _generate(model, temperature=per_row, top_p=jnp.full(3, 0.95), top_k=jnp.asarray([0, 2, 9]))
  assert sampling.generate._cache_size() == size + 1  # Only the [B]-shaped arrays are new.


def test_usable_inside_scan(model):
  _, config, params, tokens, mask = model

  def turn(carry, key):
    out = sampling.sample(config, params, tokens, mask.sum(1), key, 1.0, 1.0, 0,
                          jnp.asarray([-1]), max_response_len=R)
    return carry, out.tokens

  keys = jnp.stack([jax.random.key(1), jax.random.key(2)])
  _, scanned = jax.jit(lambda k: jax.lax.scan(turn, 0, k))(keys)
  np.testing.assert_array_equal(scanned[1], _generate(model, key=2).tokens)


def test_shared_prefix_gives_the_samples_of_the_whole_prompt(model):
  """Rows that share their first tokens sample the same with them prefilled once (prefixes_NL)."""
  _, config, params, tokens, mask = model
  prefix = np.asarray(tokens[0, :3])  # Row 0's first 3 tokens start every row below.
  lengths = np.asarray(mask.sum(1))
  rest = np.zeros_like(tokens)
  for row, length in enumerate(lengths):
    rest[row, tokens.shape[1] - length:] = tokens[row, tokens.shape[1] - length:]
  whole = np.concatenate([np.zeros((3, 3), tokens.dtype), rest], axis=1)
  for row, length in enumerate(lengths):
    whole[row, whole.shape[1] - length - 3:whole.shape[1] - length] = prefix
  run = lambda *args, **kw: sampling.generate(config, params, *args, jax.random.key(6), 1.0,
                                              0.9, 0, jnp.asarray([-1]), max_response_len=R, **kw)
  expected = run(jnp.asarray(whole), jnp.asarray(lengths + 3))
  shared = run(jnp.asarray(rest), jnp.asarray(lengths), prefixes_NL=jnp.asarray(prefix)[None])
  np.testing.assert_array_equal(shared.tokens, expected.tokens)
  np.testing.assert_array_equal(shared.lengths, expected.lengths)
  np.testing.assert_allclose(shared.logprobs, expected.logprobs, atol=1e-5)


def test_rows_continuing_different_prefixes_give_the_samples_of_their_whole_prompts(model):
  """Two prefixes prefilled once each (prefixes_NL), rows 0 and 2 continuing the second, row 1
  the first: the samples of prompts that hold each row's own prefix."""
  _, config, params, tokens, mask = model
  prefixes = np.asarray([[5, 9, 2, 7], [3, 3, 8, 1]], tokens.dtype)
  index = np.asarray([1, 0, 1])
  lengths = np.asarray(mask.sum(1))
  whole = np.zeros((3, tokens.shape[1] + 4), tokens.dtype)
  for row, length in enumerate(lengths):
    whole[row, -length - 4:] = np.concatenate([prefixes[index[row]], tokens[row, -length:]])
  run = lambda *args, **kw: sampling.generate(config, params, *args, jax.random.key(6), 1.0,
                                              1.0, 0, jnp.asarray([-1]), max_response_len=R, **kw)
  expected = run(jnp.asarray(whole), jnp.asarray(lengths + 4))
  shared = run(jnp.asarray(tokens), jnp.asarray(lengths), prefixes_NL=jnp.asarray(prefixes),
               prefix_index_B=jnp.asarray(index))
  np.testing.assert_array_equal(shared.tokens, expected.tokens)
  np.testing.assert_allclose(shared.logprobs, expected.logprobs, atol=1e-5)
  swapped = run(jnp.asarray(tokens), jnp.asarray(lengths), prefixes_NL=jnp.asarray(prefixes),
                prefix_index_B=jnp.asarray(1 - index))
  assert not np.allclose(swapped.logprobs, expected.logprobs, atol=1e-3)


def test_skipped_rows_end_after_one_token(model):
  _, config, params, tokens, mask = model
  run = lambda skip: sampling.generate(config, params, jnp.asarray(tokens), mask.sum(1),
                                       jax.random.key(7), 1.0, 1.0, 0, jnp.asarray([-1]),
                                       max_response_len=R, skip_B=skip)
  full, skipped = run(None), run(jnp.asarray([False, True, False]))
  full, skipped = jax.device_get((full, skipped))
  np.testing.assert_array_equal(skipped.lengths, [R, 1, R])
  np.testing.assert_array_equal(skipped.tokens[[0, 2]], full.tokens[[0, 2]])
  np.testing.assert_array_equal(skipped.tokens[1, :1], full.tokens[1, :1])


def _kept_reference(logits, top_k, top_p):
  """Tokens a top-k then top-p filter keeps (HF order): walk the tokens by falling logit, within
  the first top_k (all when top_k <= 0), until the mass of the walked tokens, renormalised over
  those top_k, reaches top_p; then keep every token tied with the last one walked."""
  ranked = sorted(range(len(logits)), key=lambda i: -logits[i])
  if top_k > 0:
    ranked = ranked[:top_k]
  weights = np.exp(np.asarray([logits[i] for i in ranked], np.float64) - logits[ranked[0]])
  walked, mass = [], 0.0
  for token, weight in zip(ranked, weights / weights.sum()):
    walked.append(token)
    mass += weight
    if mass >= top_p:
      break
  floor = min(logits[i] for i in walked)
  return {i for i, x in enumerate(logits) if x >= floor}


# Probabilities (sorted: .30 .22 .16 .12 .09 .06 .03 .02) in a shuffled vocabulary order, and
# logits with ties: 2 > 1 = 1 = 1 > 0 ...
PROBS = np.array([0.09, 0.30, 0.02, 0.16, 0.06, 0.22, 0.03, 0.12])
TIED = np.array([0.0, 1.0, -1.0, 1.0, 2.0, -2.0, 1.0, -3.0])


@pytest.mark.parametrize("logits,top_k,top_p,size", [
    (np.log(PROBS), 3, 1.0, 3),  # Top-k alone.
    (np.log(PROBS), 1, 1.0, 1),
    (np.log(PROBS), 20, 1.0, 8),  # k beyond the vocabulary: all.
    (np.log(PROBS), 0, 1.0, 8),  # Both off: every token.
    (np.log(PROBS), 0, 0.5, 2),  # .30 < .5, then .52: the token crossing top_p stays.
    (np.log(PROBS), 0, 0.75, 4),  # .30 .52 .68, then .80.
    (np.log(PROBS), 0, 0.1, 1),  # The most likely token alone.
    (np.log(PROBS), 4, 0.8, 3),  # Renormalised over the top 4 (.80): .375 .65, then .85.
    (np.log(PROBS), 3, 0.5, 2),  # Over the top 3 (.68): .44, then .76.
    (TIED, 2, 1.0, 4),  # The 2nd logit is tied with two more: all three stay.
    (TIED, 0, 0.3, 1),  # softmax: .43 for the 2, which alone crosses 0.3.
    (TIED, 0, 0.5, 4),  # .43, then a 1 (.16) crosses .5: its ties stay too.
])
@pytest.mark.parametrize("candidates", [(2,), (4,), (2, 4), sampling.TRUNCATION_CANDIDATES])
def test_truncation_keeps_exactly_the_top_k_and_nucleus_tokens(logits, top_k, top_p, size,
                                                              candidates):
  """`_truncate` on rows of crafted logits, each row with its own top_k and top_p, against a
  plain-Python walk over the sorted tokens; the other rows of the batch are left untruncated.
  With 2 or 4 candidates some cases settle among the largest logits, others sort all 8; with
  (2, 4) some settle among the 4 after the 2 failed them."""
  logits = np.asarray(logits, np.float32)
  rows = np.stack([logits, logits[::-1], logits])
  top_k_B, top_p_B = np.array([top_k, 0, top_k]), np.array([top_p, 1.0, top_p], np.float32)
  out = np.asarray(sampling._truncate(  # pylint: disable=protected-access
      jnp.asarray(rows.T), jnp.asarray(top_k_B), jnp.asarray(top_p_B), candidates)).T
  expected = _kept_reference(logits.tolist(), top_k, top_p)
  assert len(expected) == size
  for row in (0, 2):
    assert set(np.flatnonzero(np.isfinite(out[row]))) == expected
    np.testing.assert_array_equal(out[row][list(expected)], logits[list(expected)])
  np.testing.assert_array_equal(out[1], logits[::-1])


def test_top_p_one_keeps_every_token_of_a_large_vocabulary():
  """float32 mass reaches 1 before the last of 50k tokens: top_p = 1 must still keep them all
  (else a row's kept set would depend on whether another row needs truncation)."""
  logits = jax.random.normal(jax.random.key(0), (2, 50_000)).at[:, 0].set(20.0)  # A peak.
  out = sampling._truncate(  # pylint: disable=protected-access
      logits.T, jnp.array([0, 0]), jnp.array([1.0, 0.9], jnp.float32)).T
  assert bool(jnp.isfinite(out[0]).all())
  assert 0 < int(jnp.isfinite(out[1]).sum()) < 50_000


def test_truncation_sorts_the_vocabulary_only_for_rows_beyond_the_candidates():
  """Among the 1,024 largest of 50,000 logits: a peaked row's nucleus and a top-50 row settle
  there, a flat row's 0.95 nucleus and a top-2000 row do not; `_truncate` gives the full sort's
  kept tokens whether a batch holds only the first kind or both, with the default counts too."""
  key_flat, key_peaked = jax.random.split(jax.random.key(3))
  flat = jax.random.normal(key_flat, (50_000,))
  peaked = (jax.random.normal(key_peaked, (50_000,)) * 3).at[7].set(40.0)
  rows = jnp.stack([peaked, flat, flat, flat])
  top_k_B, top_p_B = jnp.array([0, 50, 0, 2000]), jnp.array([0.9, 1.0, 0.95, 1.0])
  top_BK = jax.lax.top_k(rows, 1024)[0]
  log_total = jnp.where(top_k_B > 0, jax.nn.logsumexp(top_BK[:, :50], axis=-1),
                        jax.nn.logsumexp(rows, axis=-1))
  _, settled = sampling._walk(  # pylint: disable=protected-access
      top_BK, jnp.where(top_k_B > 0, top_k_B, 50_000), top_p_B, log_total)
  assert settled.tolist() == [True, True, False, False]
  for batch in (slice(0, 2), slice(0, 4)):
    *fast, full = (np.isfinite(sampling._truncate(  # pylint: disable=protected-access
        rows[batch].T, top_k_B[batch], top_p_B[batch], candidates).T)
                   for candidates in ((1024,), sampling.TRUNCATION_CANDIDATES, ()))
    for kept in fast:
      np.testing.assert_array_equal(kept, full)
  assert full[2].sum() > 1024
  assert full[3].sum() == 2000 and full[0].sum() == 1


@pytest.mark.parametrize("tied,softcap", [(True, None), (False, 5.0)])
@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_vocab_major_logits_are_unembeds_transposed(tied, softcap, rows, dtype):
  """`transformer.logits_vocab_major` (the sampler's [V, B] logits; one row is padded to two)
  gives `unembed`'s logits transposed, from the float params and from `as_bits`' uint16 ones."""
  config = configs.tiny(tie_embeddings=tied, final_softcap=softcap, dtype=dtype,
                        param_dtype=dtype)
  params = transformer.init_params(config, jax.random.key(1))
  h = jax.random.normal(jax.random.key(2), (rows, config.d_model)).astype(config.jnp_dtype)
  expected = np.asarray(transformer.unembed(config, params, h[:, None]))[:, 0].T
  for given in (params, transformer.as_bits(params)):
    got = jax.jit(transformer.logits_vocab_major, static_argnums=0)(config, given, h)
    assert got.dtype == jnp.float32 and got.shape == (config.vocab_size, rows)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tied,softcap", [(True, None), (False, 5.0)])
@pytest.mark.parametrize("rows", [1, 5])
def test_int8_logits_stay_within_the_rounding_of_their_two_parts(tied, softcap, rows):
  """`transformer.int8_logits` against the float `unembed` on hidden states with an outlier
  dimension (as real models have). The table holds each weight to half its row's scale; each logit
  then differs by at most what the two roundings allow: |h|_1 * s_v / 2 for the table's, and
  |w_v|_1 * max|h| / (2 * 127 * 254) for the remainder's (its scale is at most the first part's
  / 254). Soft-capping only shrinks a difference. Without the remainder the error is larger."""
  config = configs.tiny(tie_embeddings=tied, final_softcap=softcap)
  params = transformer.init_params(config, jax.random.key(1))
  h = jax.random.normal(jax.random.key(2), (rows, config.d_model)).at[:, 3].multiply(30.0)
  table = transformer.int8_unembedding(config, params)
  values, scales = np.asarray(table[0]), np.asarray(table[1], np.float64)
  weights = np.asarray(params["embedding"] if tied else params["lm_head"].T, np.float64)
  assert values.dtype == np.int8 and values.shape == weights.shape
  assert (np.abs(values).max(1) == 127).all()
  dequantised = values * scales[:, None]
  assert (np.abs(dequantised - weights) <= scales[:, None] * (0.5 + 1e-4)).all()  # float32 division
  got = np.asarray(transformer.int8_logits(config, table, h)).T
  exact = np.asarray(transformer.unembed(config, params, h[:, None]))[:, 0]
  h64 = np.asarray(h, np.float64)
  bound = (np.abs(h64).sum(1)[:, None] * scales[None] / 2
           + np.abs(dequantised).sum(1)[None] * np.abs(h64).max(1)[:, None] / (2 * 127 * 254))
  error = np.abs(got - exact)
  assert got.shape == exact.shape and (error <= bound + 1e-5 * (1 + np.abs(exact))).all()
  h_scales = np.abs(h64).max(1, keepdims=True) / 127
  one_part = (h64 / h_scales).round() * h_scales
  capped = transformer._soft_cap(one_part @ dequantised.T, softcap)  # pylint: disable=protected-access
  one_part_error = np.abs(capped - exact)
  assert 0 < error.max() < one_part_error.max()


def test_int8_logits_sample_from_and_report_the_int8_logits(model):
  """With `int8_logits` the sampler's log-probs are those of `transformer.int8_logits` on the
  states that predicted each token (teacher-forced), not those of the float logits."""
  _, config, params, _, _ = model
  samples = _generate(model, int8_logits=True)
  hidden = _teacher_forced_hidden(model, samples)
  B, _, D = hidden.shape
  logits = transformer.int8_logits(config, transformer.int8_unembedding(config, params),
                                   hidden.reshape(B * R, D)).T.reshape(B, R, -1)
  tokens = np.asarray(samples.tokens)
  chosen = lambda logits: np.take_along_axis(
      np.asarray(jax.nn.log_softmax(logits, axis=-1)), tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(samples.logprobs, chosen(logits), atol=2e-4)
  float_logprobs = chosen(_teacher_forced_logits(model, samples))
  assert np.abs(np.asarray(samples.logprobs) - float_logprobs).max() > 1e-3


def _channel_scales(quantised, module: str, target: str, n_in: int):
  """A projection's scales [L, out dims...] as [L, 1 per input dim, out dims...], to broadcast."""
  scales = quantised["layers"][module][f"{target}_scale"]
  return scales.reshape(scales.shape[:1] + (1,) * n_in + scales.shape[1:])


def _dequantised(params, quantised):
  """`int8_weights`' tree with each projection back in float32 (values * scales), the scales out."""
  layers = {name: dict(module) for name, module in quantised["layers"].items()}
  for target, (module, n_in) in transformer.PROJECTIONS.items():
    scales = _channel_scales(quantised, module, target, n_in)
    del layers[module][f"{target}_scale"]
    layers[module][target] = layers[module][target].astype(jnp.float32) * scales
  return {**params, "layers": layers}


@pytest.mark.parametrize("lora", [False, True])
def test_int8_weights_are_the_dequantised_model_up_to_the_activations_rounding(lora):
  """`transformer.int8_weights`: every projection int8 with each output channel's largest |value|
  127 and each weight within half its channel's scale; nothing else changes (LoRA factors
  included). Applied, the int8 tree computes the model whose weights are the dequantised ones: a
  prefill (more than INT8_DOT_MAX_ROWS rows, the dequantising dot) to float32 rounding, a decode
  step (the int8 x int8 dot) to the activations' two-part rounding, far closer than the float
  model it approximates."""
  config = configs.tiny(lora_rank=4 if lora else 0, lora_targets=("q", "down") if lora else ())
  params = transformer.init_params(config, jax.random.key(1))
  if lora:  # Nonzero B, so the adapters take part.
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.05 if str(path[-1].key).endswith("_lora_b") else x, params)
  quantised = transformer.int8_weights(params)
  for target, (module, n_in) in transformer.PROJECTIONS.items():
    values = np.asarray(quantised["layers"][module][target])
    weights = np.asarray(params["layers"][module][target], np.float64)
    scales = np.asarray(_channel_scales(quantised, module, target, n_in), np.float64)
    assert values.dtype == np.int8 and values.shape == weights.shape
    assert (np.abs(values).max(axis=tuple(range(1, 1 + n_in))) == 127).all()
    assert (np.abs(values * scales - weights) <= scales * (0.5 + 1e-4)).all()
  dequantised = _dequantised(params, quantised)
  same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, dequantised)
  changed = {f"{m}/{t}" for t, (m, _) in transformer.PROJECTIONS.items()
             if not same["layers"][m][t]}
  assert changed == {"attn/q", "attn/k", "attn/v", "attn/o", "mlp/gate", "mlp/up", "mlp/down"}
  assert sum(not leaf for leaf in jax.tree.leaves(same)) == len(changed)

  rows = transformer.INT8_DOT_MAX_ROWS
  tokens = jax.random.randint(jax.random.key(2), (2, rows), 0, config.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(rows), (2, rows))
  logits = lambda p, t, pos: np.asarray(transformer.apply(config, p, t, pos)[0])
  exact = logits(dequantised, tokens, positions)  # 2 x 8 rows: the dequantising dot.
  np.testing.assert_allclose(logits(quantised, tokens, positions), exact, atol=2e-5, rtol=1e-5)
  float_error = np.abs(logits(params, tokens, positions) - exact).max()
  assert float_error > 1e-3
  step = lambda p: np.asarray(transformer.apply(  # 2 rows of one token: the int8 x int8 dot.
      config, p, tokens[:, :1], positions[:, :1])[0])
  int8_dot_error = np.abs(step(quantised) - step(dequantised)).max()
  assert 0 < int8_dot_error < float_error / 10


def test_int8_weights_sample_from_and_report_the_int8_model(model):
  """With `int8_weights` the sampler's log-probs are those of the int8 model teacher-forced (to
  the decode steps' activation rounding), not those of the float model."""
  _, config, params, tokens, mask = model
  samples = _generate(model, int8_weights=True)
  quantised = (model[0], config, transformer.int8_weights(params), tokens, mask)
  chosen = lambda logits: np.take_along_axis(
      np.asarray(jax.nn.log_softmax(logits, axis=-1)), np.asarray(samples.tokens)[..., None],
      -1)[..., 0]
  np.testing.assert_allclose(samples.logprobs, chosen(_teacher_forced_logits(quantised, samples)),
                             atol=2e-4)
  float_logprobs = chosen(_teacher_forced_logits(model, samples))
  assert np.abs(np.asarray(samples.logprobs) - float_logprobs).max() > 1e-3


def test_bfloat16_samples_report_the_bfloat16_model(model):
  """A bfloat16 model samples through `as_bits` params and cache: its log-probs are the bfloat16
  model's teacher-forced ones, not the float32 model's."""
  hf_model, config, params, tokens, mask = model
  half = (hf_model, dataclasses.replace(config, dtype="bfloat16", param_dtype="bfloat16"),
          jax.tree.map(lambda x: x.astype(jnp.bfloat16), params), tokens, mask)
  samples = _generate(half)
  chosen = lambda logits: np.take_along_axis(
      np.asarray(jax.nn.log_softmax(logits, axis=-1)), np.asarray(samples.tokens)[..., None],
      -1)[..., 0]
  half_error = np.abs(samples.logprobs - chosen(_teacher_forced_logits(half, samples))).max()
  float_error = np.abs(samples.logprobs - chosen(_teacher_forced_logits(model, samples))).max()
  assert half_error < 1e-4 < 1e-3 < float_error  # Measured 4.8e-7 and 0.013.



@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_a_decode_step_reads_the_cached_keys_untransposed(num_kv_heads):
  """No decode step copies a layer's cached keys transposed ([B, K, D, S] from [B, S, K, D]):
  XLA's CPU backend did at every step when the scores were laid out [B, K, T, G, S]
  (BENCHMARKS.md, sampler, stop 56). Head dim 48 and 5 + 4 slots: shapes no other array has."""
  config = configs.tiny(dtype="bfloat16", param_dtype="bfloat16", head_dim=48,
                        num_kv_heads=num_kv_heads)
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16),
                        transformer.init_params(config, jax.random.key(0)))
  rows, width, new_tokens = 3, 5, 4
  hlo = sampling.generate.lower(
      config, params, np.ones((rows, width), np.int32), np.full(rows, width), jax.random.key(0),
      jnp.asarray(1.0), jnp.asarray(1.0), jnp.asarray(0), jnp.asarray([-1]),
      max_response_len=new_tokens).compile().as_text()
  slots = width + new_tokens
  assert f"u16[2,3,{slots},{num_kv_heads},48]" in hlo  # The cache: [layers, rows, slots, K, D].
  assert not re.findall(rf"= bf16\[3,({num_kv_heads},)?48,{slots}\]", hlo)


def test_a_single_columns_chunk_masses_equal_its_masses_in_a_batch():
  """`_chunk_masses` of a single column (its own reduction, see there) equals that column's masses
  in a batch of several, and each chunk's logsumexp by hand (300 tokens: chunks of 32)."""
  logits_VB = jax.random.normal(jax.random.key(5), (300, 3)) * 4
  batch = np.asarray(sampling._chunk_masses(logits_VB))  # pylint: disable=protected-access
  one = np.asarray(sampling._chunk_masses(logits_VB[:, 1:2]))  # pylint: disable=protected-access
  np.testing.assert_allclose(one, batch[1:2], rtol=1e-6)
  column = np.asarray(logits_VB[:, 1], np.float64)
  by_hand = [np.log(np.exp(column[i:i + 32]).sum()) for i in range(0, 300, 32)]
  np.testing.assert_allclose(one[0], by_hand, rtol=1e-5)


def test_projections_in_the_compute_dtype_are_the_same_model():
  """float32 params computing in bfloat16 (the full recipe's mix), LoRA on two targets: the cast
  params hold the projections and LoRA factors in bfloat16 and the rest in float32, and give the
  same hidden states, bit for bit, and the same samples."""
  config = configs.tiny(dtype="bfloat16", param_dtype="float32", lora_rank=4,
                        lora_targets=("q", "down"))
  params = transformer.with_adapters(config, transformer.init_params(
      dataclasses.replace(config, lora_rank=0), jax.random.key(1)), jax.random.key(2))
  params["layers"]["mlp"]["down_lora_b"] += 0.01  # B starts at 0: make the adapters count.
  cast = transformer.projections_in_compute_dtype(config, params)
  dtypes = {"/".join(str(getattr(k, "key", k)) for k in path): leaf.dtype
            for path, leaf in jax.tree_util.tree_leaves_with_path(cast)}
  bf16 = {name for name, dtype in dtypes.items() if dtype == jnp.bfloat16}
  projections = {f"layers/{module}/{name}" for name, (module, _) in transformer.PROJECTIONS.items()}
  adapters = {f"layers/{module}/{target}{suffix}"
              for module, target in (("attn", "q"), ("mlp", "down"))
              for suffix in transformer.LORA_SUFFIXES}
  assert bf16 == projections | adapters
  tokens = jax.random.randint(jax.random.key(3), (2, 9), 1, config.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
  hidden = [np.asarray(_compiled_apply(config, p, tokens, positions, return_hidden=True)[0])
            for p in (params, cast)]
  np.testing.assert_array_equal(hidden[0], hidden[1])
  samples = [sampling.generate(config, p, tokens, jnp.full((2,), 9), jax.random.key(4),
                               jnp.asarray(1.0), jnp.asarray(1.0), jnp.asarray(0),
                               jnp.asarray([-1]), max_response_len=6) for p in (params, cast)]
  np.testing.assert_array_equal(samples[0].tokens, samples[1].tokens)
  np.testing.assert_array_equal(samples[0].logprobs, samples[1].logprobs)


# 300 tokens: chunks of 32 (the last one padded), unequal in mass and in shape.
DRAW_LOGITS = np.random.default_rng(0).normal(size=300).astype(np.float32)
DRAWS = 40_000


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 40)])
def test_drawn_tokens_follow_the_policy_distribution(temperature, top_k):
  """`choose_tokens` over DRAWS rows of one logit vector: the sampled rows' tokens pass a
  chi-square test against softmax(logits / temperature) (restricted to the top_k), a greedy row
  takes the argmax, and every row's log-prob is the full policy's."""
  rows = np.broadcast_to(DRAW_LOGITS, (DRAWS, DRAW_LOGITS.size))
  temperature_B = np.full(DRAWS, temperature, np.float32)
  temperature_B[0] = 0.0  # One greedy row.
  tokens, logprobs = jax.jit(sampling.choose_tokens)(
      jnp.asarray(rows.T), jax.random.key(1), jnp.asarray(temperature_B),
      jnp.ones(DRAWS, jnp.float32), jnp.full(DRAWS, top_k, jnp.int32))
  tokens, logprobs = np.asarray(tokens), np.asarray(logprobs)
  assert tokens[0] == np.argmax(DRAW_LOGITS)
  policy = np.asarray(jax.nn.log_softmax(DRAW_LOGITS / temperature))
  np.testing.assert_allclose(logprobs[1:], policy[tokens[1:]], atol=1e-5)
  kept = np.argsort(-DRAW_LOGITS)[:top_k] if top_k else np.arange(DRAW_LOGITS.size)
  assert set(tokens[1:].tolist()) <= set(kept.tolist())
  expected = np.exp(policy[kept]) / np.exp(policy[kept]).sum() * (DRAWS - 1)
  observed = np.bincount(tokens[1:], minlength=DRAW_LOGITS.size)[kept]
  rare = expected < 5  # Pooled into one bin, as the chi-square test needs.
  if rare.any():
    observed = np.append(observed[~rare], observed[rare].sum())
    expected = np.append(expected[~rare], expected[rare].sum())
  assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_batch_indices_cover_every_row_in_fixed_size_calls():
  indices = sampling.batch_indices(5, 2)
  np.testing.assert_array_equal(indices, [[0, 1], [2, 3], [4, 0]])  # Topped up from the start.
  np.testing.assert_array_equal(sampling.batch_indices(4, 4), [[0, 1, 2, 3]])
  np.testing.assert_array_equal(sampling.batch_indices(2, 4), [[0, 1, 0, 1]])
