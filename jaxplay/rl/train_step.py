"""One compiled policy update: advantages, the trained subsample, PPO epochs over micro-batches,
the optax step, metrics.

`make_train_step(config, forward_fn, optimizer)` returns a jitted `train_step(state, batch) ->
(state, metrics)` with the state donated. `forward_fn(params, tokens_BT, positions_BT) -> logits_BTV`
is any model. The batch holds every turn-sample of the step's games (N rows, N >= batch_size):
advantages are computed over all of them (RAE's baselines take every finished game), rows with
zero advantage are dropped (`drop_zero_advantage`, SPIRAL's filter_zero_adv), and `batch_size` of
the rest are drawn uniformly at random without replacement (`subsample`, keyed by state.rng, so a
resumed run draws the same rows); when fewer survive, the remaining rows are padding. Each PPO
epoch shuffles that subsample (state.rng), splits it into `num_minibatches` optimizer updates, and
each update accumulates gradients over `num_microbatches` in `lax.scan` (rows sorted by prompt
padding within the mini-batch, so micro-batches hold prompts of similar width).
The loss is normalised over the whole mini-batch (`losses.loss_weights`), so the micro-batch size
does not change the update. An update whose loss or gradient is not finite is skipped (params and
optimizer state unchanged) and counted; the RAE baselines still take the batch's rewards.
The KL term's reference log-probs come from the batch (`ref_log_probs`) or, when the batch has
none, from `state.ref_params` (kept by `init_state(..., reference=True)`).
Metrics are `losses.ppo_loss`'s averaged over the updates (its `sampler_*` ones over the first
epoch's only), plus grad norm, skipped updates, and advantage, reward and batch statistics.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxplay import sharding
from jaxplay.rl import advantages as advantages_lib
from jaxplay.rl import losses

ForwardFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
# log_probs_fn(params, rows: Rows[, shared]) -> (log-probs [b, T-1] of rows.tokens[:, 1:],
# entropy [b, T-1]); `shared` is shared_fn(params) when make_train_step is given a shared_fn.
LogProbsFn = Callable[..., tuple[jax.Array, jax.Array]]


@struct.dataclass
class Rows:
  """The model inputs of b turn-samples: what a LogProbsFn reads."""

  tokens: jax.Array  # int32 [b, T], prompt (left-padded) + response.
  positions: jax.Array  # int32 [b, T], negative on padding.
  kind: jax.Array  # int32 [b], the game kind (index into the run's games).
  # Action scoring only: the legal actions and the chosen one.
  legal: jax.Array | None = None  # bool [b, A]
  action: jax.Array | None = None  # int32 [b]


@struct.dataclass
class Batch:
  """Turn-samples for one update; tokens are prompt + response concatenated per sample.

  B is the batch's own row count (every collected turn-sample, at least
  TrainStepConfig.batch_size): the step trains a subsample of batch_size of its rows.
  """

  tokens: jax.Array  # int32 [B, T]
  positions: jax.Array  # int32 [B, T]
  response_mask: jax.Array  # bool [B, T], True on the response tokens (the ones trained).
  old_log_probs: jax.Array | None  # float32 [B, T], sampler log-prob of tokens[:, t]; None to recompute.
  outcomes: advantages_lib.Outcomes  # [B] each.
  invalid_action: jax.Array  # bool [B], the sample's answer was illegal or unparseable.
  ref_log_probs: jax.Array | None = None  # float32 [B, T], reference policy (for the KL term).
  # Action-scoring policies score the legal actions again: bool [B, A] and int32 [B].
  legal_action_mask: jax.Array | None = None
  action: jax.Array | None = None


@struct.dataclass
class TrainState:
  step: jax.Array  # int32 [], train steps taken.
  params: Any
  opt_state: Any
  baselines: jax.Array  # float32 [num_kinds, num_roles], RAE's EMA baselines.
  rng: jax.Array  # key, for the per-epoch shuffles.
  skipped_updates: jax.Array  # int32 [], optimizer updates skipped for a non-finite loss/gradient.
  # The KL term's reference policy (None without one): the initial params, or their moving
  # average when TrainStepConfig.reference_decay < 1.
  ref_params: Any = None
  # The opponent population (rl/population.Pool) of population play, else None; the step
  # carries it unchanged (the run loop adds snapshots), so checkpoints keep it.
  pool: Any = None
  # Fictitious cross-play's counter policy: its own TrainState (no pool, no counter), carried
  # unchanged by this step (the run trains it on its own batch), else None.
  counter: Any = None
  # The trained leaves a counter policy restarts from after each of its snapshots (FXP with
  # resets: the initial params'), else None.
  counter_start: Any = None
  # Iterative-SPO's phase (jaxplay/run/schedule.Schedule), carried unchanged by this step (the
  # run loop switches it), else None.
  schedule: Any = None


@dataclasses.dataclass(frozen=True)
class TrainStepConfig:
  batch_size: int  # B, turn-samples trained per step: a subsample of the batch's rows.
  seq_len: int  # T, prompt + response tokens per sample.
  estimator: str = "rae"
  advantage: advantages_lib.Options = advantages_lib.Options()
  drop_zero_advantage: bool = True  # SPIRAL's filter_zero_adv.
  # "game": every turn gets its game's return (SPIRAL) | "answer": a forfeited game trains only
  # its invalid answers (advantages.credit_forfeits_to_their_answers).
  forfeit_credit: str = "game"
  loss: losses.LossConfig = losses.LossConfig(max_response_len=4096)
  num_epochs: int = 2
  num_minibatches: int = 1  # Optimizer updates per epoch.
  num_microbatches: int = 1  # Gradient accumulation steps per update.
  recompute_old_log_probs: bool = False  # Old log-probs from the current params, not the sampler.
  # After each step ref_params <- decay * ref_params + (1 - decay) * params: 1.0 keeps the initial
  # params; < 1 makes the KL a pull towards a moving average of the policy (MMD's moving magnet).
  reference_decay: float = 1.0
  # > 0: the subsample gives each of this many game kinds an equal share of the batch (`subsample`);
  # 0: uniform over every kept row (SPIRAL).
  balanced_kinds: int = 0

  def __post_init__(self):
    advantages_lib.get(self.estimator)
    advantages_lib.check_forfeit_credit(self.forfeit_credit)
    chunks = self.num_minibatches * self.num_microbatches
    if min(self.num_epochs, self.num_minibatches, self.num_microbatches) < 1:
      raise ValueError("num_epochs, num_minibatches and num_microbatches must be >= 1.")
    if self.batch_size % chunks:
      raise ValueError(f"batch_size={self.batch_size} is not divisible by num_minibatches * "
                       f"num_microbatches = {chunks}.")
    if self.seq_len < 2:
      raise ValueError(f"seq_len={self.seq_len} must be >= 2.")
    if not 0.0 <= self.reference_decay <= 1.0:
      raise ValueError(f"reference_decay={self.reference_decay} must be in [0, 1].")
    if self.balanced_kinds < 0:
      raise ValueError(f"balanced_kinds={self.balanced_kinds} must be >= 0.")


def make_optimizer(learning_rate: float = 1e-6, b1: float = 0.9, b2: float = 0.95,
                   eps: float = 1e-8, weight_decay: float = 0.0, max_grad_norm: float = 1.0,
                   schedule: str = "constant", warmup_steps: int = 0,
                   decay_steps: int = 0) -> optax.GradientTransformation:
  """AdamW after clipping by global norm; schedules count optimizer updates."""
  if schedule == "constant":
    lr = optax.linear_schedule(0.0, learning_rate, warmup_steps) if warmup_steps else learning_rate
  elif schedule == "cosine":
    if decay_steps <= warmup_steps:
      raise ValueError("schedule='cosine' needs decay_steps > warmup_steps.")
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, decay_steps)
  else:
    raise ValueError(f"Unknown schedule {schedule!r}; valid schedules: constant, cosine.")
  return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                     optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))


def select(params, trainable):
  """The leaves of `params` where `trainable` (a bool tree like params; None = all) is True, the
  others None: the tree the gradient and the optimizer see."""
  if trainable is None:
    return params
  return jax.tree.map(lambda x, keep: x if keep else None, params, trainable)


def merge(selected, params, trainable):
  """`params` with its trainable leaves taken from `selected` (the inverse of `select`)."""
  if trainable is None:
    return selected
  return jax.tree.map(lambda new, old, keep: new if keep else old, selected, params, trainable,
                      is_leaf=lambda x: x is None)


def init_state(params, optimizer: optax.GradientTransformation, num_kinds: int, num_roles: int,
               seed: int, reference: bool = False, trainable=None) -> TrainState:
  """The state before the first step; `reference` keeps a copy of `params` as the KL reference.
  `trainable` (bool tree like params, e.g. only the LoRA adapters; None = all) limits the
  optimizer state to those leaves."""
  ref_params = jax.tree.map(jnp.copy, params) if reference else None
  return TrainState(step=jnp.int32(0), params=params,
                    opt_state=optimizer.init(select(params, trainable)),
                    baselines=jnp.zeros((num_kinds, num_roles), jnp.float32),
                    rng=jax.random.key(seed), skipped_updates=jnp.int32(0),
                    ref_params=ref_params)


def _check_shapes(batch: Batch, config: TrainStepConfig, has_ref_params: bool) -> None:
  """Raises ValueError at trace time when the batch does not match the config or itself (every
  field has the rows of batch.tokens, at least batch_size of them)."""
  size, length = batch.tokens.shape[0], config.seq_len
  if size < config.batch_size:
    raise ValueError(f"batch has {size} rows, fewer than the batch_size={config.batch_size} "
                     "trained per step.")
  expected = {"tokens": (size, length), "positions": (size, length),
              "response_mask": (size, length), "invalid_action": (size,)}
  if not config.recompute_old_log_probs or batch.old_log_probs is not None:
    expected["old_log_probs"] = (size, length)
  if (config.loss.kl_coef and not has_ref_params) or batch.ref_log_probs is not None:
    expected["ref_log_probs"] = (size, length)
  fields = {name: getattr(batch, name) for name in expected}
  fields.update({f"outcomes.{f.name}": getattr(batch.outcomes, f.name)
                 for f in dataclasses.fields(batch.outcomes)})
  for name, value in fields.items():
    want = expected.get(name, (size,))
    if name == "outcomes.turn_reward" and value is None:
      continue
    if value is None:
      hint = (" (or a train state with ref_params: init_state(..., reference=True))"
              if name == "ref_log_probs" else "")
      raise ValueError(f"batch.{name} is missing; the config needs it with shape {want}{hint}.")
    if tuple(value.shape) != want:
      raise ValueError(f"batch.{name} has shape {tuple(value.shape)}; the batch's {size} rows "
                       f"and the config's seq_len={length} expect {want}.")


def _combine(metrics, reducers):
  """Reduces stacked metrics along axis 0: '_min'/'_max' keys by min/max, the rest by `reducers`."""
  def reduce(key, value):
    if key.endswith("_min"):
      return value.min(0)
    if key.endswith("_max"):
      return value.max(0)
    return reducers(value)
  return {k: reduce(k, v) for k, v in metrics.items()}


def _masked_stats(name, values, mask):
  weights = mask.astype(jnp.float32)
  n = jnp.maximum(weights.sum(), 1.0)
  mean = (values * weights).sum() / n
  std = jnp.sqrt((jnp.square(values - mean) * weights).sum() / n)
  return {f"{name}_mean": mean, f"{name}_std": std,
          f"{name}_min": jnp.where(mask, values, jnp.inf).min(),
          f"{name}_max": jnp.where(mask, values, -jnp.inf).max()}


def subsample(key: jax.Array, keep: jax.Array, size: int, kinds: jax.Array | None = None,
              num_kinds: int = 0) -> jax.Array:
  """int32 [size]: the rows of a uniform random draw without replacement of `size` of the rows
  where `keep` (bool [N]) is True, in random order. When fewer are kept, all of them come first,
  then rows where `keep` is False (padding).

  With `num_kinds` > 0 the draw is balanced over `kinds` (int32 [N], each row's game kind in
  [0, num_kinds)): each kind gets an equal share (one more for some when `size` does not divide),
  uniform within the kind, and a kind with fewer kept rows than its share leaves the rest to the
  others."""
  permuted = jax.random.permutation(key, keep.shape[0])
  kept = keep[permuted]
  if num_kinds:
    member = (kinds[permuted][:, None] == jnp.arange(num_kinds)) & kept[:, None]  # [N, kinds]
    rank = (jnp.cumsum(member, axis=0) * member).sum(1)  # 1 = a kind's first kept row drawn.
    # Round robin: every kind's first row, then every kind's second, ...
    priority = jnp.where(kept, rank, keep.shape[0] + 1)
  else:
    priority = ~kept
  return permuted[jnp.argsort(priority, stable=True)[:size]]


def make_train_step(config: TrainStepConfig, forward_fn: ForwardFn | None,
                    optimizer: optax.GradientTransformation,
                    log_probs_fn: LogProbsFn | None = None,
                    rows_sharding: jax.sharding.Sharding | None = None,
                    shared_fn: Callable[[Any], Any] | None = None, trainable=None):
  """Builds the jitted, state-donating `train_step(state, batch) -> (state, metrics)`.

  `trainable` (bool tree like the params, as given to `init_state`; None = all) names the leaves
  the step differentiates and updates (LoRA: the adapters); the others are held fixed, and no
  gradient is computed for them.

  The policy's log-probs come from `forward_fn` logits (token level) unless `log_probs_fn` is given.
  `shared_fn(params)` computes what every row's log-probs share (e.g. the keys and values of the
  prompts' common start, policies.prefix_kv_fn) once per update, for `log_probs_fn`'s third
  argument; the gradient through it is taken once per update, not once per row (same update).
  `rows_sharding` lays out [chunks, rows, ...] micro-batches so each device computes its rows
  (e.g. NamedSharding(mesh, P(None, ("data", "fsdp")))); None leaves the layout to XLA.
  """
  split_rows = lambda tree: sharding.constrain(tree, rows_sharding)
  loss_config = config.loss
  micro_size = config.batch_size // (config.num_minibatches * config.num_microbatches)

  def token_log_probs(params, rows: Rows):
    logits = forward_fn(params, rows.tokens, rows.positions)[:, :-1]
    return losses.log_probs_and_entropy(logits, rows.tokens[:, 1:], loss_config.temperature)

  log_probs_fn = log_probs_fn or token_log_probs

  def rows_log_probs(params, shared, rows):
    return log_probs_fn(params, rows) if shared_fn is None else log_probs_fn(params, rows, shared)

  def micro_loss(train_params, shared, micro, params):
    params = merge(train_params, params, trainable)
    log_probs, entropy = rows_log_probs(params, shared, micro["rows"])
    return losses.ppo_loss(log_probs, micro["old"], micro["advantages"], micro["weights"],
                           loss_config, ref_log_probs_BT=micro.get("ref"), entropy_BT=entropy,
                           metric_weights_BT=micro["metric_weights"])

  grad_fn = jax.value_and_grad(micro_loss, argnums=(0, 1), has_aux=True)

  def update(carry, indices, data):
    """One optimizer update on the mini-batch `indices` (int32 [num_microbatches, micro_size])."""
    params, opt_state = carry
    mini = jax.tree.map(lambda x: x[indices.reshape(-1)], data)
    mini["weights"] = losses.loss_weights(mini.pop("mask"), loss_config.aggregation,
                                          loss_config.max_response_len)
    on = mini["weights"] > 0
    mini["metric_weights"] = on / jnp.maximum(on.sum(), 1)
    micros = jax.tree.map(lambda x: x.reshape((config.num_microbatches, micro_size) + x.shape[1:]),
                          mini)
    micros = split_rows(micros)

    train_params = select(params, trainable)
    # The shared part's pullback is rematerialised: only params are kept for it meanwhile.
    shared, pullback = (None, None) if shared_fn is None else jax.vjp(
        jax.checkpoint(lambda p: shared_fn(merge(p, params, trainable))), train_params)

    def accumulate(grads, micro):
      (_, metrics), micro_grads = grad_fn(train_params, shared, micro, params)
      return jax.tree.map(jnp.add, grads, micro_grads), metrics

    zeros = jax.tree.map(jnp.zeros_like, (train_params, shared))
    (grads, shared_grads), metrics = jax.lax.scan(accumulate, zeros, micros)
    if pullback is not None:
      grads = jax.tree.map(jnp.add, grads, pullback(shared_grads)[0])
    metrics = _combine(metrics, lambda v: v.sum(0))
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    updates, new_opt_state = optimizer.update(grads, opt_state, train_params)
    new_params = merge(optax.apply_updates(train_params, updates), params, trainable)
    apply = finite & on.any()
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)
    metrics.update(grad_norm=grad_norm, skipped_updates=(~finite).astype(jnp.int32))
    return (keep(new_params, params), keep(new_opt_state, opt_state)), metrics

  def batch_log_probs(params, data):
    """float32 [B, T-1]: log-probs of the whole batch under `params`, micro-batch by micro-batch."""
    chunks = split_rows(jax.tree.map(lambda x: x.reshape((-1, micro_size) + x.shape[1:]),
                                     data["rows"]))
    shared = None if shared_fn is None else shared_fn(params)
    log_probs = jax.lax.map(lambda c: rows_log_probs(params, shared, c)[0], chunks)
    return jax.lax.stop_gradient(log_probs.reshape(config.batch_size, -1))

  def train_step(state: TrainState, batch: Batch):
    _check_shapes(batch, config, state.ref_params is not None)
    rng, subsample_key, shuffle_key = jax.random.split(state.rng, 3)
    collected = batch.outcomes
    advantages, baselines, kept = advantages_lib.compute(
        config.estimator, collected, state.baselines, config.advantage,
        config.drop_zero_advantage, config.forfeit_credit, batch.invalid_action)
    rows = subsample(subsample_key, kept, config.batch_size, collected.game_kind,
                     config.balanced_kinds)
    trained, advantages, train_mask = jax.tree.map(lambda x: x[rows],
                                                   (batch, advantages, kept))
    data = {"rows": Rows(trained.tokens, trained.positions, trained.outcomes.game_kind,
                         trained.legal_action_mask, trained.action),
            "advantages": advantages.astype(jnp.float32),
            "mask": trained.response_mask[:, 1:] & train_mask[:, None]}
    if trained.ref_log_probs is not None:
      data["ref"] = trained.ref_log_probs[:, 1:]
    elif loss_config.kl_coef:
      data["ref"] = batch_log_probs(state.ref_params, data)
    if config.recompute_old_log_probs:
      data["old"] = batch_log_probs(state.params, data)
    else:
      data["old"] = trained.old_log_probs[:, 1:].astype(jnp.float32)

    keys = jax.random.split(shuffle_key, config.num_epochs)
    order = jax.vmap(lambda k: jax.random.permutation(k, config.batch_size))(keys)
    # Within a mini-batch the order does not change the update: rows of similar prompt width
    # share micro-batches, so a log_probs_fn can skip the padding they share.
    order = order.reshape(config.num_epochs, config.num_minibatches, -1)
    padding = (trained.positions < 0).sum(1)
    order = jnp.take_along_axis(order, jnp.argsort(padding[order], axis=-1, stable=True), -1)
    (params, opt_state), metrics = jax.lax.scan(
        lambda carry, indices: update(carry, indices, data), (state.params, state.opt_state),
        order.reshape(-1, config.num_microbatches, micro_size))
    skipped = metrics["skipped_updates"].sum()
    # The sampler_* metrics (learner vs sampler log-probs) are the first epoch's, before this
    # step's updates move the learner away (with one mini-batch: exactly the sampler's params).
    first_epoch = {k: v[:config.num_minibatches].mean(0) for k, v in metrics.items()
                   if k.startswith("sampler_")}
    metrics = _combine(metrics, lambda v: v.mean(0))
    metrics.update(first_epoch, skipped_updates=skipped)

    # The rollout's figures over every collected sample; the advantages' over the trained ones.
    valid = collected.mask
    metrics.update(_masked_stats("advantage", advantages, train_mask))
    metrics.update(_masked_stats("reward", collected.reward, valid))
    lengths = batch.response_mask.sum(-1).astype(jnp.float32)
    num_valid = jnp.maximum(valid.sum(), 1)
    metrics["response_length_mean"] = jnp.where(valid, lengths, 0.0).sum() / num_valid
    metrics["invalid_rate"] = (batch.invalid_action & valid).sum() / num_valid
    metrics["samples_collected"] = valid.sum()
    metrics["samples_after_filter"] = kept.sum()
    metrics["num_samples"] = train_mask.sum()  # Trained: the subsample of the filtered ones.
    metrics["kept_fraction"] = kept.sum() / num_valid
    ref_params = state.ref_params
    if ref_params is not None and config.reference_decay < 1.0:
      decay = config.reference_decay  # Frozen leaves stay as they are (not rounded each step).
      moved = jax.tree.map(lambda r, p: decay * r + (1.0 - decay) * p,
                           select(ref_params, trainable), select(params, trainable))
      ref_params = merge(moved, ref_params, trainable)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              baselines=baselines, rng=rng,
                              skipped_updates=state.skipped_updates + skipped,
                              ref_params=ref_params)
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0)
