"""Model policies: action scoring against a naive teacher-forced reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxplay.models import configs, transformer
from jaxplay.rl import advantages, losses, policies
from jaxplay.rl import train_step as ts
from jaxplay.text import answers

MODEL = configs.tiny(vocab_size=64)
PARAMS = transformer.init_params(MODEL, jax.random.key(0))
# A tenth of the (tied) embedding scales the logits down: policies far from one-hot, whose
# log-probs change with the temperature.
SOFT_PARAMS = {**PARAMS, "embedding": PARAMS["embedding"] * 0.1}


def _naive_answer_log_likelihoods(prompts, answer_ids, params=PARAMS):
  """log p(answer | prompt) for every pair, from one causal forward pass over the unpadded
  concatenations (right-padded to a common length, which cannot affect earlier positions)."""
  rows = [p + a for p in prompts for a in answer_ids]
  width = max(map(len, rows))
  tokens = jnp.asarray([r + [0] * (width - len(r)) for r in rows], jnp.int32)
  logits, _ = jax.jit(lambda t: transformer.apply(MODEL, params, t, jnp.arange(width)[None]))(
      tokens)
  log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  scores = [sum(log_probs[i, len(p) - 1 + j, t] for j, t in enumerate(a))
            for i, (p, a) in enumerate((p, a) for p in prompts for a in answer_ids)]
  return np.asarray(scores).reshape(len(prompts), len(answer_ids))


EVEN = (2, 2, 2, 2)  # Answers of one length: their scores are comparable.


@functools.cache
def _soft_scores():
  """_naive_answer_log_likelihoods of _batch(EVEN) under SOFT_PARAMS, computed once."""
  prompts, answer_ids, *_ = _batch(EVEN)
  return _naive_answer_log_likelihoods(prompts, answer_ids, SOFT_PARAMS)


def _batch(answer_sizes=(1, 3, 2, 4)):
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(1, 64, size=n)) for n in (5, 9, 3)]
  answer_ids = [list(rng.integers(1, 64, size=n)) for n in answer_sizes]
  width = 9
  prompt_tokens = np.zeros((3, width), np.int32)
  for i, p in enumerate(prompts):
    prompt_tokens[i, width - len(p):] = p  # Left padding.
  table, lengths = answers.padded(answer_ids)
  return prompts, answer_ids, prompt_tokens, np.array([len(p) for p in prompts]), table, lengths


def test_answer_log_likelihoods_match_naive_forward():
  prompts, answer_ids, prompt_tokens, prompt_lengths, table, lengths = _batch()
  got = policies.answer_log_likelihoods(
      MODEL, PARAMS, jnp.asarray(prompt_tokens), jnp.asarray(prompt_lengths),
      jnp.broadcast_to(table, (3,) + table.shape), jnp.broadcast_to(lengths, (3, 4)))
  expected = _naive_answer_log_likelihoods(prompts, answer_ids)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)


def test_scoring_policy_samples_legal_actions_and_train_log_prob_agrees():
  _, _, prompt_tokens, prompt_lengths, table, lengths = _batch()
  scoring = answers.ScoringTable(jnp.asarray(table), jnp.asarray(lengths), prefix_len=0)
  legal = jnp.asarray([[True, False, True, True], [False, True, False, False],
                       [True, True, True, True]])
  policy = policies.scoring_policy(MODEL, scoring, pad_id=0)
  act = policy(PARAMS, jnp.asarray(prompt_tokens), jnp.asarray(prompt_lengths), legal,
               jax.random.key(1))
  assert bool(legal[jnp.arange(3), act.action].all())
  assert int(act.action[1]) == 1  # The only legal action.
  np.testing.assert_allclose(float(act.response_logprobs[1, 0]), 0.0, atol=1e-6)
  # The train step's log-prob of the chosen action equals the sampler's.
  response = act.response_tokens
  tokens = jnp.concatenate([jnp.asarray(prompt_tokens), response], axis=1)
  positions = jnp.arange(tokens.shape[1])[None] - (9 - jnp.asarray(prompt_lengths))[:, None]
  stacked = jax.tree.map(lambda x: x[None], scoring)
  fn = policies.scoring_log_probs_fn(MODEL, stacked, prompt_len=9)
  log_probs, entropy = fn(PARAMS, ts.Rows(tokens, positions, jnp.zeros(3, jnp.int32), legal,
                                            act.action))
  np.testing.assert_allclose(np.asarray(log_probs[:, 8]), np.asarray(act.response_logprobs[:, 0]),
                             rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(log_probs).sum()) == float(jnp.abs(log_probs[:, 8]).sum())
  log_pi, expected_entropy = policies.action_log_probs(
      MODEL, PARAMS, jnp.asarray(prompt_tokens), jnp.asarray(prompt_lengths), legal,
      jnp.broadcast_to(scoring.tokens, (3,) + table.shape), jnp.broadcast_to(scoring.lengths, (3, 4)))
  np.testing.assert_allclose(np.asarray(entropy[:, 8]), np.asarray(expected_entropy), atol=1e-6)
  assert float(entropy[1, 8]) < 1e-6  # One legal action: no uncertainty.
  np.testing.assert_allclose(np.exp(np.asarray(log_pi)).sum(-1), 1.0, rtol=1e-5)


def _log_softmax_over_legal(scores, legal):
  """numpy float64 log_softmax of `scores` [B, A] over the legal actions, -inf elsewhere."""
  logits = np.where(legal, scores.astype(np.float64), -np.inf)
  top = logits.max(-1, keepdims=True)
  return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


LEGAL = np.array([[True, False, True, True], [True, True, False, False], [True] * 4])


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_scoring_at_a_temperature_is_the_softmax_of_scores_over_it(temperature):
  """The sampler's and the learner's log pi(a | s) are log_softmax(scores / T) over the legal
  actions, with the scores of a naive forward pass."""
  _, _, prompt_tokens, prompt_lengths, table, lengths = _batch(EVEN)
  expected = _log_softmax_over_legal(_soft_scores() / temperature, LEGAL)
  scoring = answers.ScoringTable(jnp.asarray(table), jnp.asarray(lengths), prefix_len=0)
  policy = jax.jit(policies.scoring_policy(MODEL, scoring, pad_id=0, temperature=temperature))
  act = policy(SOFT_PARAMS, jnp.asarray(prompt_tokens), jnp.asarray(prompt_lengths),
               jnp.asarray(LEGAL), jax.random.key(3))
  action = np.asarray(act.action)
  assert LEGAL[np.arange(3), action].all()
  np.testing.assert_allclose(np.asarray(act.response_logprobs[:, 0]),
                             expected[np.arange(3), action], rtol=1e-5, atol=1e-4)
  tokens = jnp.concatenate([jnp.asarray(prompt_tokens), act.response_tokens], axis=1)
  positions = jnp.arange(tokens.shape[1])[None] - (9 - jnp.asarray(prompt_lengths))[:, None]
  fn = jax.jit(policies.scoring_log_probs_fn(MODEL, jax.tree.map(lambda x: x[None], scoring), 9,
                                             temperature))
  entropy = -(np.exp(expected) * np.where(LEGAL, expected, 0.0)).sum(-1)
  for a in range(4):  # Every action, in the rows where it is legal.
    log_probs, entropies = fn(SOFT_PARAMS, ts.Rows(tokens, positions, jnp.zeros(3, jnp.int32),
                                                   jnp.asarray(LEGAL), jnp.full(3, a)))
    rows = LEGAL[:, a]
    np.testing.assert_allclose(np.asarray(log_probs[rows, 8]), expected[rows, a], rtol=1e-5,
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(entropies[:, 8]), entropy, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("int8", [{}, dict(int8_logits=True), dict(int8_weights=True)],
                         ids=["float", "int8_logits", "int8_weights"])
def test_text_sampler_and_learner_agree_at_a_temperature(int8):
  """Free text sampled at T = 0.5: in the real train step the first epoch's importance ratio is 1,
  as the learner's log_probs_fn recomputes the sampler's log-probs at the same temperature.
  With `int8_logits` or `int8_weights` the sampler's model is the int8 one and the learner's
  float: the train step's sampler metrics report the gap, small but not zero.
  (tests/run/test_experiment.py checks the same of action scoring, in the whole pipeline.)"""
  temperature, response_len = 0.5, 5
  _, _, prompt_tokens, prompt_lengths, _, _ = _batch()
  byte_table = (np.stack([np.arange(32, 96), np.full(64, 32)], 1).astype(np.uint8),
                np.full(64, 2, np.int32))  # Two bytes per token: the parse is beside the point.
  policy = policies.text_policy(MODEL, answers.parse_table(("a", "b"), byte_table), (-1,),
                                response_len, 0, temperature, **int8)
  act = jax.jit(policy)(SOFT_PARAMS, jnp.asarray(prompt_tokens), jnp.asarray(prompt_lengths),
                        jnp.asarray(LEGAL), jax.random.key(4))
  rows, prompt_len = prompt_tokens.shape
  columns = jnp.arange(prompt_len + response_len)[None]
  response = (columns >= prompt_len) & (columns < prompt_len + act.response_lengths[:, None])
  batch = ts.Batch(
      tokens=jnp.concatenate([jnp.asarray(prompt_tokens), act.response_tokens], axis=1),
      positions=columns - (prompt_len - jnp.asarray(prompt_lengths))[:, None],
      response_mask=response, old_log_probs=jnp.pad(act.response_logprobs,
                                                    ((0, 0), (prompt_len, 0))),
      outcomes=advantages.Outcomes(
          reward=jnp.asarray([1.0, -1.0, 0.5]), game_kind=jnp.zeros(rows, jnp.int32),
          role=jnp.zeros(rows, jnp.int32), group=jnp.arange(rows), game_index=jnp.arange(rows),
          turn_index=jnp.zeros(rows, jnp.int32), mask=jnp.ones(rows, bool)),
      invalid_action=jnp.zeros(rows, bool))
  config = ts.TrainStepConfig(
      batch_size=rows, seq_len=prompt_len + response_len, estimator="reinforce",
      drop_zero_advantage=False, num_epochs=1,
      loss=losses.LossConfig(max_response_len=response_len, temperature=temperature))
  optimizer = ts.make_optimizer(1e-3)
  step = ts.make_train_step(config, None, optimizer,
                            policies.response_log_probs_fn(MODEL, prompt_len, temperature))
  state = ts.init_state(jax.tree.map(jnp.copy, SOFT_PARAMS), optimizer, 1, 1, seed=0)
  _, metrics = step(state, batch)
  assert int(metrics["num_samples"]) == 3 and int(response.sum()) == 3 * response_len
  if int8:  # int8 weights: ~9e-6 on these small logits, int8 logits ~3e-5 (float: ~1e-7).
    assert 2e-6 < float(metrics["sampler_logprob_abs_diff"]) < 0.05
    assert float(metrics["ratio_min"]) < 1 < float(metrics["ratio_max"])
    return
  assert float(metrics["sampler_logprob_abs_diff"]) < 1e-6
  assert float(metrics["ratio_min"]) == pytest.approx(1.0, abs=1e-5)
  assert float(metrics["ratio_max"]) == pytest.approx(1.0, abs=1e-5)


def test_gradients_stay_finite_with_illegal_actions():
  _, _, prompt_tokens, prompt_lengths, table, lengths = _batch()
  legal = jnp.asarray([[True, False, True, False]] * 3)

  def objective(params):
    log_pi, entropy = policies.action_log_probs(
        MODEL, params, jnp.asarray(prompt_tokens), jnp.asarray(prompt_lengths), legal,
        jnp.broadcast_to(table, (3,) + table.shape), jnp.broadcast_to(lengths, (3, 4)))
    return log_pi[:, 0].sum() + entropy.sum()

  grads = jax.grad(objective)(PARAMS)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_response_log_probs_equal_full_logits_on_response_columns():
  rng = np.random.default_rng(1)
  prompt_len, response_len = 6, 4
  tokens = jnp.asarray(rng.integers(1, 64, size=(2, prompt_len + response_len)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(prompt_len + response_len), tokens.shape) - jnp.asarray(
      [[0], [2]])  # The second row has two padding slots on the left.
  rows = ts.Rows(tokens, positions, jnp.zeros(2, jnp.int32))
  fast, fast_entropy = policies.response_log_probs_fn(MODEL, prompt_len, 0.7)(PARAMS, rows)
  logits, _ = transformer.apply(MODEL, PARAMS, tokens, positions)
  full, full_entropy = losses.log_probs_and_entropy(logits[:, :-1], tokens[:, 1:], 0.7)
  response = slice(prompt_len - 1, None)
  np.testing.assert_allclose(np.asarray(fast[:, response]), np.asarray(full[:, response]),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(fast_entropy[:, response]),
                             np.asarray(full_entropy[:, response]), rtol=1e-5, atol=1e-5)
  assert not np.asarray(fast[:, :prompt_len - 1]).any()


def test_response_log_probs_skip_the_padding_of_narrow_game_kinds():
  """With per-kind prompt widths the log-probs are those of the whole row, whichever width the
  rows' kinds select (kind 1's prompts take at most 4 of the 6 prompt columns)."""
  rng = np.random.default_rng(2)
  prompt_len, response_len = 6, 4
  tokens = jnp.asarray(rng.integers(1, 64, size=(2, prompt_len + response_len)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(prompt_len + response_len), tokens.shape) - jnp.asarray(
      [[0], [2]])
  full_fn = policies.response_log_probs_fn(MODEL, prompt_len, 0.7)
  trimmed_fn = policies.response_log_probs_fn(MODEL, prompt_len, 0.7, prompt_widths=(6, 4))
  for rows in (ts.Rows(tokens, positions, jnp.asarray([0, 1])),
               ts.Rows(tokens[1:], positions[1:], jnp.asarray([1]))):
    expected = full_fn(PARAMS, rows)
    got = jax.jit(trimmed_fn)(PARAMS, rows)
    for a, b in zip(got, expected):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [2, 6])
def test_text_policy_sharing_the_seats_starts_samples_as_the_whole_prompts(batch):
  """Prompts that begin with a prefix and then one of two seats' intros: the policy given the
  prefix and the starts samples what it samples from the whole prompts, both when the call is
  large enough to prefill each seat's start once (6 rows) and when it prefills the prefix (2)."""
  rng = np.random.default_rng(5)
  prefix = list(rng.integers(1, 64, 3))
  starts = np.asarray([prefix + [7, 8], prefix + [9, 10]], np.int32)
  width = 11
  tokens = np.zeros((batch, width), np.int32)
  lengths = rng.integers(6, width + 1, batch)
  for row, length in enumerate(lengths):
    tokens[row, width - length:] = list(starts[row % 2]) + list(rng.integers(1, 64, length - 5))
  byte_table = (np.stack([np.arange(32, 96), np.full(64, 32)], 1).astype(np.uint8),
                np.full(64, 2, np.int32))
  make = lambda **shared: jax.jit(policies.text_policy(
      MODEL, answers.parse_table(("a", "b"), byte_table), (-1,), 4, 0, 1.0, **shared))
  args = (SOFT_PARAMS, jnp.asarray(tokens), jnp.asarray(lengths), jnp.ones((batch, 2), bool),
          jax.random.key(8))
  expected = make()(*args)
  got = make(prompt_prefix=jnp.asarray(prefix), prompt_starts=jnp.asarray(starts))(*args)
  np.testing.assert_array_equal(got.response_tokens, expected.response_tokens)
  np.testing.assert_allclose(got.response_logprobs, expected.response_logprobs, atol=1e-5)
  chosen = policies.shared_starts(jnp.asarray(prefix), jnp.asarray(starts), batch, width)
  assert chosen.shape == ((2, 5) if batch == 6 else (1, 3))


def test_continued_start_finds_each_rows_start_among_its_kinds():
  starts = jnp.asarray([[4, 5, 6], [4, 5, 7], [4, 5, 0]])  # The third is 2 tokens long.
  tokens = jnp.asarray([[0, 4, 5, 7, 1], [4, 5, 6, 2, 2], [0, 0, 4, 5, 9]])
  first = jnp.asarray([1, 0, 2])
  lengths = jnp.asarray([3, 3, 2])
  np.testing.assert_array_equal(policies.continued_start(tokens, first, starts, lengths), [1, 0, 2])
  allowed = jnp.asarray([[True, True, False], [False, True, True], [True, True, True]])
  np.testing.assert_array_equal(
      policies.continued_start(tokens, first, starts, lengths, allowed), [1, 2, 2])


def _prefixed_rows(prompt_len=8, response_len=3):
  """Rows of two game kinds whose prompts begin with one of their kind's starts (kind 0: two
  seats' starts of 3 tokens, the first 2 alike; kind 1: one of 2 tokens), left-padded to
  prompt_len, then a response: (starts, prompt widths, rows)."""
  rng = np.random.default_rng(3)
  common = list(rng.integers(1, 64, 2))
  prefixes = (np.asarray([common + [5], common + [6]]), rng.integers(1, 64, (1, 2)))
  widths = (8, 6)
  rows, positions, kinds = [], [], []
  for kind, seat, own in ((0, 1, 3), (1, 0, 4), (0, 0, 5), (1, 0, 1)):
    prompt = list(prefixes[kind][seat]) + list(rng.integers(1, 64, own))
    pad = prompt_len - len(prompt)
    rows.append([0] * pad + prompt + list(rng.integers(1, 64, response_len)))
    positions.append(np.arange(prompt_len + response_len) - pad)
    kinds.append(kind)
  rows = ts.Rows(jnp.asarray(rows, jnp.int32), jnp.asarray(positions, jnp.int32),
                 jnp.asarray(kinds, jnp.int32))
  return tuple(jnp.asarray(p, jnp.int32) for p in prefixes), widths, rows


def test_response_log_probs_from_the_starts_keys_and_values_equal_the_whole_rows():
  """Running each start once and each row after the start it begins with gives the whole rows'
  log-probs, for rows of both kinds (and both seats' starts) together and of the narrower kind
  alone."""
  prompt_len = 8
  prefixes, widths, rows = _prefixed_rows(prompt_len)
  whole_fn = policies.response_log_probs_fn(MODEL, prompt_len, 0.7)
  shared_fn = policies.response_log_probs_fn(MODEL, prompt_len, 0.7, widths,
                                             starts=prefixes)
  prefix_kv = policies.prefix_kv_fn(MODEL, prefixes)(PARAMS)
  for subset in ([0, 1, 2, 3], [1, 3]):
    some = jax.tree.map(lambda x: x[jnp.asarray(subset)], rows)
    expected = whole_fn(PARAMS, some)
    got = jax.jit(shared_fn)(PARAMS, some, prefix_kv)
    for a, b in zip(got, expected):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="pass prefix_kv"):
    shared_fn(PARAMS, rows)


def test_bfloat16_gradient_through_the_starts_is_the_whole_rows_up_to_rounding():
  """In bfloat16 (its layers' own backward pass, residuals held as bits) the gradient taken
  through the starts' keys and values is the whole rows' gradient up to bfloat16 rounding."""
  model = configs.tiny(vocab_size=64, dtype="bfloat16")
  prefixes, widths, rows = _prefixed_rows(8)
  whole_fn = policies.response_log_probs_fn(model, 8, 0.7)
  shared_fn = policies.response_log_probs_fn(model, 8, 0.7, widths, starts=prefixes)
  kv_fn = policies.prefix_kv_fn(model, prefixes)
  total = lambda fn, params, *kv: fn(params, rows, *kv)[0].sum()
  whole = jax.jit(jax.grad(functools.partial(total, whole_fn)))(SOFT_PARAMS)
  shared = jax.jit(jax.grad(lambda p: total(shared_fn, p, kv_fn(p))))(SOFT_PARAMS)
  norm = lambda tree: float(optax.global_norm(tree))
  assert norm(whole) > 1.0
  assert norm(jax.tree.map(jnp.subtract, shared, whole)) < 1e-2 * norm(whole)


def test_a_train_step_through_the_shared_prefix_makes_the_same_update():
  """The prefixes' gradient, taken once per update through their keys and values, sums to the
  gradient of running every whole row (SGD with lr 1: the update is the gradient)."""
  prompt_len, response_len = 8, 3
  prefixes, widths, rows = _prefixed_rows(prompt_len, response_len)
  size = rows.tokens.shape[0]
  columns = jnp.arange(prompt_len + response_len)[None]
  batch = ts.Batch(
      tokens=rows.tokens, positions=rows.positions,
      response_mask=jnp.broadcast_to(columns >= prompt_len, rows.tokens.shape),
      old_log_probs=None,
      outcomes=advantages.Outcomes(
          reward=jnp.asarray([1.0, -1.0, 0.5, -0.5]), game_kind=rows.kind,
          role=jnp.zeros(size, jnp.int32), group=jnp.arange(size), game_index=jnp.arange(size),
          turn_index=jnp.zeros(size, jnp.int32), mask=jnp.ones(size, bool)),
      invalid_action=jnp.zeros(size, bool))
  config = ts.TrainStepConfig(
      batch_size=size, seq_len=prompt_len + response_len, estimator="reinforce",
      drop_zero_advantage=False, num_epochs=1, num_microbatches=2,
      recompute_old_log_probs=True,
      loss=losses.LossConfig(max_response_len=response_len, temperature=0.7))
  optimizer = optax.sgd(1.0)
  whole = ts.make_train_step(config, None, optimizer,
                             policies.response_log_probs_fn(MODEL, prompt_len, 0.7))
  shared = ts.make_train_step(
      config, None, optimizer,
      policies.response_log_probs_fn(MODEL, prompt_len, 0.7, widths, starts=prefixes),
      shared_fn=policies.prefix_kv_fn(MODEL, prefixes))
  results = [step(ts.init_state(jax.tree.map(jnp.copy, SOFT_PARAMS), optimizer, 2, 1, seed=0),
                  batch) for step in (whole, shared)]
  (whole_state, whole_metrics), (shared_state, shared_metrics) = results
  assert float(whole_metrics["grad_norm"]) > 1e-3
  np.testing.assert_allclose(float(shared_metrics["grad_norm"]), float(whole_metrics["grad_norm"]),
                             rtol=1e-4)
  for a, b in zip(jax.tree.leaves(shared_state.params), jax.tree.leaves(whole_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
