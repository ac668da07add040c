"""Model policies: action scoring against a naive teacher-forced reference."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxplay import policies, text
from jaxplay.models import configs, transformer

MODEL = configs.tiny(vocab_size=64)
PARAMS = transformer.init_params(MODEL, jax.random.key(0))


def _naive_answer_log_likelihoods(prompts, answers):
  """log p(answer | prompt) for every pair, from one causal forward pass over the unpadded
  concatenations (right-padded to a common length, which cannot affect earlier positions)."""
  rows = [p + a for p in prompts for a in answers]
  width = max(map(len, rows))
  tokens = jnp.asarray([r + [0] * (width - len(r)) for r in rows], jnp.int32)
  logits, _ = jax.jit(lambda t: transformer.apply(MODEL, PARAMS, t, jnp.arange(width)[None]))(
      tokens)
  log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  scores = [sum(log_probs[i, len(p) - 1 + j, t] for j, t in enumerate(a))
            for i, (p, a) in enumerate((p, a) for p in prompts for a in answers)]
  return np.asarray(scores).reshape(len(prompts), len(answers))


def _batch():
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(1, 64, size=n)) for n in (5, 9, 3)]
  answers = [list(rng.integers(1, 64, size=n)) for n in (1, 3, 2, 4)]
  width = 9
  prompt_tokens = np.zeros((3, width), np.int32)
  for i, p in enumerate(prompts):
    prompt_tokens[i, width - len(p):] = p  # Left padding.
  table, lengths = text._padded(answers)  # pylint: disable=protected-access
  return prompts, answers, prompt_tokens, np.array([len(p) for p in prompts]), table, lengths


def test_answer_log_likelihoods_match_naive_forward():
  prompts, answers, prompt_tokens, prompt_lengths, table, lengths = _batch()
  got = policies.answer_log_likelihoods(
      MODEL, PARAMS, jnp.asarray(prompt_tokens), jnp.asarray(prompt_lengths),
      jnp.broadcast_to(table, (3,) + table.shape), jnp.broadcast_to(lengths, (3, 4)))
  expected = _naive_answer_log_likelihoods(prompts, answers)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)


def test_scoring_policy_samples_legal_actions_and_train_log_prob_agrees():
  _, _, prompt_tokens, prompt_lengths, table, lengths = _batch()
  scoring = text.ScoringTable(jnp.asarray(table), jnp.asarray(lengths), prefix_len=0)
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
  log_probs, entropy = fn(PARAMS, {"tokens": tokens, "positions": positions, "legal": legal,
                                   "action": act.action, "kind": jnp.zeros(3, jnp.int32)})
  np.testing.assert_allclose(np.asarray(log_probs[:, 8]), np.asarray(act.response_logprobs[:, 0]),
                             rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(log_probs).sum()) == float(jnp.abs(log_probs[:, 8]).sum())
  log_pi, expected_entropy = policies.action_log_probs(
      MODEL, PARAMS, jnp.asarray(prompt_tokens), jnp.asarray(prompt_lengths), legal,
      jnp.broadcast_to(scoring.tokens, (3,) + table.shape), jnp.broadcast_to(scoring.lengths, (3, 4)))
  np.testing.assert_allclose(np.asarray(entropy[:, 8]), np.asarray(expected_entropy), atol=1e-6)
  assert float(entropy[1, 8]) < 1e-6  # One legal action: no uncertainty.
  np.testing.assert_allclose(np.exp(np.asarray(log_pi)).sum(-1), 1.0, rtol=1e-5)


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
  rows = {"tokens": tokens, "positions": positions}
  fast, fast_entropy = policies.response_log_probs_fn(MODEL, prompt_len, 0.7)(PARAMS, rows)
  logits, _ = transformer.apply(MODEL, PARAMS, tokens, positions)
  full, full_entropy = policies.losses.log_probs_and_entropy(logits[:, :-1], tokens[:, 1:], 0.7)
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
  for rows in ({"tokens": tokens, "positions": positions, "kind": jnp.asarray([0, 1])},
               {"tokens": tokens[1:], "positions": positions[1:], "kind": jnp.asarray([1])}):
    expected = full_fn(PARAMS, rows)
    got = jax.jit(trimmed_fn)(PARAMS, rows)
    for a, b in zip(got, expected):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
