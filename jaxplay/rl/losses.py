"""Policy loss: PPO clipped surrogate (optional dual clip), k3 KL, entropy bonus, aggregation modes.

Aggregation is expressed as per-token weights (`loss_weights`) computed over the whole update
batch, so the loss of a micro-batch is `sum(per_token_loss * weights)` and micro-batch losses add
up exactly to the batch loss, whatever the micro-batch size.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

AGGREGATIONS = ("dr_grpo", "token_mean", "sequence_mean")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Static options of the policy loss (SPIRAL's values by default)."""

  clip_eps: float = 0.2  # Lower clip: ratio >= 1 - clip_eps.
  clip_eps_high: float | None = None  # Upper clip: ratio <= 1 + clip_eps_high (default clip_eps).
  dual_clip: float | None = None  # c > 1: for A < 0 the loss is at most -c * A (MARS).
  # dr_grpo: token sum / max_response_len, then mean over sequences (SPIRAL, Oat);
  # token_mean: mean over all tokens; sequence_mean: mean over tokens, then over sequences.
  aggregation: str = "dr_grpo"
  max_response_len: int | None = None  # The dr_grpo normaliser (SPIRAL: generate_max_length).
  kl_coef: float = 0.0  # k3 KL to reference log-probs.
  entropy_coef: float = 0.0  # Entropy bonus (subtracted from the loss).
  temperature: float = 1.0  # Logits are divided by the sampling temperature.

  def __post_init__(self):
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"Unknown aggregation {self.aggregation!r}; valid aggregations: "
                       f"{', '.join(AGGREGATIONS)}.")
    if self.aggregation == "dr_grpo" and not (self.max_response_len or 0) > 0:
      raise ValueError("aggregation='dr_grpo' needs max_response_len > 0 (the constant "
                       "normaliser, SPIRAL's generate_max_length).")
    if self.dual_clip is not None and self.dual_clip <= 1.0:
      raise ValueError(f"dual_clip={self.dual_clip} must be > 1.")
    if self.clip_eps <= 0 or (self.clip_eps_high is not None and self.clip_eps_high <= 0):
      raise ValueError("clip_eps and clip_eps_high must be positive.")
    if self.temperature <= 0:
      raise ValueError(f"temperature={self.temperature} must be positive.")


def log_probs_and_entropy(logits_BTV, targets_BT, temperature: float = 1.0):
  """Log-prob of each target token and the entropy of each position, both [B, T], >= float32."""
  logits = logits_BTV.astype(jnp.promote_types(logits_BTV.dtype, jnp.float32)) / temperature
  log_z = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets_BT[..., None], axis=-1)[..., 0]
  probs = jax.nn.softmax(logits, axis=-1)
  entropy = log_z - (probs * logits).sum(-1)
  return picked - log_z, entropy


def loss_weights(mask_BT, aggregation: str, max_response_len: int | None = None):
  """Per-token weights whose weighted sum is the aggregated loss, [B, T]."""
  mask = mask_BT.astype(jnp.float32)
  if aggregation == "token_mean":
    return mask / jnp.maximum(mask.sum(), 1.0)
  num_sequences = jnp.maximum((mask.sum(-1) > 0).sum(), 1.0)
  if aggregation == "sequence_mean":
    return mask / jnp.maximum(mask.sum(-1, keepdims=True), 1.0) / num_sequences
  if aggregation == "dr_grpo":
    return mask / (max_response_len * num_sequences)
  raise ValueError(f"Unknown aggregation {aggregation!r}; valid aggregations: "
                   f"{', '.join(AGGREGATIONS)}.")


def ppo_loss(log_probs_BT, old_log_probs_BT, advantages_B, weights_BT, config: LossConfig, *,
             ref_log_probs_BT=None, entropy_BT=None, metric_weights_BT=None):
  """PPO clipped surrogate plus optional k3 KL and entropy bonus; returns (loss, metrics).

  `weights_BT` come from `loss_weights` (0 off the trained tokens). Metrics are sums weighted by
  `metric_weights_BT` (default: token mean over weights > 0), so they add over micro-batches;
  `ratio_min`/`ratio_max` are over the trained tokens. With d = log_probs - old_log_probs and
  ratio = exp(d), the `sampler_*` metrics measure how far the learner is from the policy that
  produced `old_log_probs` (the sampler, in the train step): `sampler_logprob_abs_diff` = |d|,
  `sampler_ratio_outside_0.9_1.1` = [ratio < 0.9 or ratio > 1.1], and `sampler_kl_k3` =
  ratio - 1 - d, the k3 estimate of KL(sampler || learner) on the sampler's tokens.
  """
  on = weights_BT > 0
  if metric_weights_BT is None:
    metric_weights_BT = on / jnp.maximum(on.sum(), 1)
  advantages = advantages_B[:, None]
  log_ratio = jnp.where(on, log_probs_BT - old_log_probs_BT, 0.0)
  ratio = jnp.exp(log_ratio)
  high = config.clip_eps if config.clip_eps_high is None else config.clip_eps_high
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + high)
  per_token = jnp.maximum(unclipped, clipped)
  metrics = {"clip_fraction": (clipped > unclipped) * metric_weights_BT,
             "sampler_logprob_abs_diff": jnp.abs(log_ratio) * metric_weights_BT,
             "sampler_ratio_outside_0.9_1.1": ((ratio < 0.9) | (ratio > 1.1)) * metric_weights_BT,
             "sampler_kl_k3": (ratio - 1.0 - log_ratio) * metric_weights_BT}
  if config.dual_clip is not None:
    bound = -advantages * config.dual_clip
    dual = (advantages < 0) & (per_token > bound)
    per_token = jnp.where(dual, bound, per_token)
    metrics["dual_clip_fraction"] = dual * metric_weights_BT
  metrics["pg_loss"] = per_token * weights_BT
  if ref_log_probs_BT is not None:
    log_ref_ratio = jnp.where(on, ref_log_probs_BT - log_probs_BT, 0.0)
    kl = jnp.exp(log_ref_ratio) - log_ref_ratio - 1.0
    metrics["kl"] = kl * metric_weights_BT
    if config.kl_coef:
      per_token = per_token + config.kl_coef * kl
  if entropy_BT is not None:
    entropy = entropy_BT if config.entropy_coef else jax.lax.stop_gradient(entropy_BT)
    metrics["entropy"] = entropy * metric_weights_BT
    if config.entropy_coef:
      per_token = per_token - config.entropy_coef * entropy
  loss = jnp.where(on, per_token * weights_BT, 0.0).sum()
  metrics = {k: jnp.where(on, v, 0.0).sum() for k, v in metrics.items()}
  metrics["loss"] = loss
  metrics["ratio_mean"] = jnp.where(on, ratio * metric_weights_BT, 0.0).sum()
  metrics["ratio_min"] = jnp.where(on, ratio, jnp.inf).min()
  metrics["ratio_max"] = jnp.where(on, ratio, -jnp.inf).max()
  return loss, metrics
