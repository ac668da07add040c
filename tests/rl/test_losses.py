"""Policy loss: hand-computed values, aggregation modes, and a finite-difference gradient check."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplay.rl import losses
from tests.rl.test_train_step import TinyLM

MASK = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
VALUES = np.array([[1.0, 2.0, 3.0, 50.0], [4.0, 60.0, 70.0, 80.0], [90.0, 9.0, 9.0, 9.0]])


@pytest.mark.parametrize("mode, expected", [
    ("token_mean", (1 + 2 + 3 + 4) / 4),
    ("sequence_mean", ((1 + 2 + 3) / 3 + 4) / 2),
    ("dr_grpo", ((1 + 2 + 3) / 4 + 4 / 4) / 2),  # sum / max_response_len, mean over 2 sequences.
])
def test_aggregation_modes_by_hand(mode, expected):
  weights = losses.loss_weights(jnp.asarray(MASK), mode, max_response_len=4)
  assert float((weights * VALUES).sum()) == pytest.approx(expected, rel=1e-6)
  # Split into micro-batches by rows, the weighted sums add up to the same value.
  parts = [(weights[i:i + 1] * VALUES[i:i + 1]).sum() for i in range(3)]
  assert float(sum(parts)) == pytest.approx(expected, rel=1e-6)


def test_bad_loss_config():
  with pytest.raises(ValueError, match="valid aggregations: dr_grpo, token_mean, sequence_mean"):
    losses.LossConfig(aggregation="sum")
  with pytest.raises(ValueError, match="max_response_len"):
    losses.LossConfig(aggregation="dr_grpo")
  with pytest.raises(ValueError, match="dual_clip"):
    losses.LossConfig(aggregation="token_mean", dual_clip=0.5)
  with pytest.raises(ValueError, match="valid aggregations"):
    losses.loss_weights(jnp.ones((1, 2)), "mean")


def test_log_probs_and_entropy_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
  targets = rng.integers(5, size=(2, 3))
  log_probs, entropy = losses.log_probs_and_entropy(jnp.asarray(logits), jnp.asarray(targets), 0.7)
  scaled = logits.astype(np.float64) / 0.7
  logp_all = scaled - np.log(np.exp(scaled).sum(-1, keepdims=True))
  np.testing.assert_allclose(log_probs, np.take_along_axis(logp_all, targets[..., None], -1)[..., 0],
                             rtol=1e-5)
  np.testing.assert_allclose(entropy, -(np.exp(logp_all) * logp_all).sum(-1), rtol=1e-5)


def one_token_loss(advantage, ratio, **config):
  config = losses.LossConfig(aggregation="token_mean", **config)
  ones = jnp.ones((1, 1))
  return losses.ppo_loss(jnp.log(ratio) * ones, 0 * ones, jnp.array([advantage]), ones, config)


@pytest.mark.parametrize("advantage, ratio, loss, clipped", [
    (1.0, 1.5, -1.2, True),  # Gain capped at 1 + eps.
    (1.0, 0.5, -0.5, False),  # Pessimistic branch is the unclipped one.
    (-1.0, 1.5, 1.5, False),
    (-1.0, 0.5, 0.8, True),
    (2.0, 1.1, -2.2, False),  # Inside the trust region.
])
def test_ppo_clip_by_hand(advantage, ratio, loss, clipped):
  value, metrics = one_token_loss(advantage, ratio)
  assert float(value) == pytest.approx(loss, rel=1e-6)
  assert float(metrics["clip_fraction"]) == float(clipped)
  assert float(metrics["ratio_mean"]) == pytest.approx(ratio, rel=1e-6)


def test_upper_clip_and_dual_clip_by_hand():
  value, _ = one_token_loss(1.0, 1.5, clip_eps_high=0.28)
  assert float(value) == pytest.approx(-1.28, rel=1e-6)
  value, _ = one_token_loss(1.0, 0.7, clip_eps_high=0.28)  # Lower clip still 0.8.
  assert float(value) == pytest.approx(-0.7, rel=1e-6)
  value, metrics = one_token_loss(-1.0, 5.0, dual_clip=3.0)  # max(5, 1.2) = 5, capped at 3.
  assert float(value) == pytest.approx(3.0, rel=1e-6)
  assert float(metrics["dual_clip_fraction"]) == 1.0
  value, _ = one_token_loss(1.0, 5.0, dual_clip=3.0)  # Dual clip only acts for A < 0.
  assert float(value) == pytest.approx(-1.2, rel=1e-6)


def test_ratio_one_gives_no_clipping_and_minus_mean_advantage():
  rng = np.random.default_rng(0)
  log_probs = jnp.asarray(rng.normal(size=(3, 4)))
  advantages = jnp.array([1.0, -2.0, 0.5])
  config = losses.LossConfig(aggregation="sequence_mean")
  weights = losses.loss_weights(jnp.asarray(MASK), "sequence_mean")
  loss, metrics = losses.ppo_loss(log_probs, log_probs, advantages, weights, config)
  assert float(loss) == pytest.approx(-(1.0 - 2.0) / 2, rel=1e-6)  # Mean of -A over sequences.
  assert float(metrics["clip_fraction"]) == 0.0
  assert float(metrics["ratio_min"]) == float(metrics["ratio_max"]) == 1.0


def test_k3_kl_and_entropy_bonus_by_hand():
  log_probs, ref = math.log(0.5), math.log(0.25)
  config = losses.LossConfig(aggregation="token_mean", kl_coef=0.2, entropy_coef=0.01)
  ones = jnp.ones((1, 1))
  loss, metrics = losses.ppo_loss(log_probs * ones, log_probs * ones, jnp.array([1.0]), ones,
                                  config, ref_log_probs_BT=ref * ones, entropy_BT=2.0 * ones)
  kl = 0.5 - math.log(0.5) - 1  # exp(ref - logp) - (ref - logp) - 1 with ref - logp = log 0.5.
  assert float(metrics["kl"]) == pytest.approx(kl, rel=1e-6)
  assert float(metrics["entropy"]) == pytest.approx(2.0)
  assert float(loss) == pytest.approx(-1.0 + 0.2 * kl - 0.01 * 2.0, rel=1e-6)


def test_sampler_mismatch_metrics_by_hand():
  """d = log p_learner - log p_sampler on the 4 trained tokens of MASK: 0, 0.2, -0.2 and 0.05
  (ratios 1, 1.22, 0.82, 1.05); the untrained tokens' d = 5 is ignored."""
  diff = np.array([[0.0, 0.2, -0.2, 5.0], [0.05, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]])
  old = jnp.asarray(-np.arange(12.0).reshape(3, 4))
  weights = losses.loss_weights(jnp.asarray(MASK), "dr_grpo", 4)
  _, metrics = losses.ppo_loss(old + diff, old, jnp.array([1.0, -1.0, 0.0]), weights,
                               losses.LossConfig(max_response_len=4))
  assert float(metrics["sampler_logprob_abs_diff"]) == pytest.approx((0.2 + 0.2 + 0.05) / 4)
  assert float(metrics["sampler_ratio_outside_0.9_1.1"]) == 2 / 4
  k3 = sum(math.exp(d) - 1 - d for d in (0.0, 0.2, -0.2, 0.05)) / 4
  assert float(metrics["sampler_kl_k3"]) == pytest.approx(k3, rel=1e-5)


def test_gradient_matches_finite_differences():
  """PPO + KL + entropy loss through a tiny model, float64, with clipped and unclipped tokens."""
  with jax.enable_x64(True):
    model = TinyLM(vocab=7, dim=6, dtype=jnp.float64)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(7, size=(3, 6)))
    positions = jnp.broadcast_to(jnp.arange(6), (3, 6))
    params = model.init(jax.random.key(0), tokens, positions)
    mask = jnp.asarray(rng.random((3, 5)) < 0.8)
    advantages = jnp.array([1.0, -0.7, 0.4])
    config = losses.LossConfig(aggregation="dr_grpo", max_response_len=5, kl_coef=0.1,
                               entropy_coef=0.01, temperature=0.8)
    weights = losses.loss_weights(mask, "dr_grpo", 5)

    def token_terms(p):
      logits = model.apply(p, tokens, positions)[:, :-1]
      return losses.log_probs_and_entropy(logits, tokens[:, 1:], config.temperature)

    current, _ = token_terms(params)
    # Old log-probs 0.5 away from the current ones: ratios 0.61 or 1.65, far from the clip kinks,
    # so both clipped (zero-gradient) and unclipped tokens occur.
    old = current + jnp.asarray(rng.choice([-0.5, 0.5], size=current.shape))
    ref = current + jnp.asarray(rng.normal(size=current.shape))

    @jax.jit
    def loss_fn(p):
      log_probs, entropy = token_terms(p)
      return losses.ppo_loss(log_probs, old, advantages, weights, config,
                             ref_log_probs_BT=ref, entropy_BT=entropy)[0]

    _, metrics = losses.ppo_loss(current, old, advantages, weights, config)
    assert 0 < float(metrics["clip_fraction"]) < 1
    grads = jax.jit(jax.grad(loss_fn))(params)
    leaves, treedef = jax.tree.flatten(params)
    for seed in range(3):
      direction = jax.tree.unflatten(treedef, [
          jnp.asarray(np.random.default_rng(seed).normal(size=x.shape)) for x in leaves])
      h = 1e-6
      shifted = lambda sign: jax.tree.map(lambda x, d: x + sign * h * d, params, direction)
      numeric = (loss_fn(shifted(1)) - loss_fn(shifted(-1))) / (2 * h)
      analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads),
                                                   jax.tree.leaves(direction)))
      assert float(analytic) == pytest.approx(float(numeric), rel=1e-6, abs=1e-9)
