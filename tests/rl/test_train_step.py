"""The compiled train step on a tiny model: ratio at the first epoch, determinism, NaN skip, errors."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxplay.rl import advantages, losses
from jaxplay.rl import train_step as ts


class TinyLM(nn.Module):
  """Embedding + causal running mean + MLP: a cheap causal LM for tests."""

  vocab: int = 11
  dim: int = 16
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, positions_BT):
    x = nn.Embed(self.vocab, self.dim, dtype=self.dtype, param_dtype=self.dtype)(tokens_BT)
    x = x + nn.Embed(64, self.dim, dtype=self.dtype, param_dtype=self.dtype)(positions_BT)
    x = jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1, dtype=self.dtype)[:, None]
    x = jnp.tanh(nn.Dense(self.dim, dtype=self.dtype, param_dtype=self.dtype)(x))
    return nn.Dense(self.vocab, dtype=self.dtype, param_dtype=self.dtype)(x)


B, T, PROMPT = 8, 6, 3
MODEL = TinyLM()


def forward(params, tokens, positions):
  return MODEL.apply(params, tokens, positions)


def init_params(seed=0):
  return MODEL.init(jax.random.key(seed), jnp.zeros((1, T), jnp.int32), jnp.zeros((1, T), jnp.int32))


def make_batch(seed=0, old_log_probs=None, rows=B):
  """`rows` turn-samples: game g = row // 2, its two players' single turns."""
  rng = np.random.default_rng(seed)
  tokens = jnp.asarray(rng.integers(MODEL.vocab, size=(rows, T)), jnp.int32)
  response_mask = np.zeros((rows, T), bool)
  lengths = rng.integers(1, T - PROMPT + 1, size=rows)
  for b, n in enumerate(lengths):
    response_mask[b, PROMPT:PROMPT + n] = True
  games = np.arange(rows) // 2
  reward = np.where(np.arange(rows) % 2, -1.0, 1.0) * rng.choice([1, 2], rows)
  samples = advantages.Outcomes(
      reward=jnp.asarray(reward, jnp.float32),
      game_kind=jnp.zeros(rows, jnp.int32), role=jnp.asarray(np.arange(rows) % 2, jnp.int32),
      group=jnp.asarray(games // 2, jnp.int32), game_index=jnp.asarray(games, jnp.int32),
      turn_index=jnp.asarray(np.arange(rows) % 2, jnp.int32), mask=jnp.ones(rows, bool))
  positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (rows, T))
  return ts.Batch(tokens=tokens, positions=positions, response_mask=jnp.asarray(response_mask),
                  old_log_probs=old_log_probs, outcomes=samples,
                  invalid_action=jnp.asarray(rng.random(rows) < 0.25))


@jax.jit
def sampler_log_probs(params, batch):
  """What a sampler would report: log-prob of tokens[:, t] at t >= 1, 0 elsewhere."""
  logits = forward(params, batch.tokens, batch.positions)[:, :-1]
  log_probs, _ = losses.log_probs_and_entropy(logits, batch.tokens[:, 1:])
  return jnp.pad(log_probs, ((0, 0), (1, 0))) * batch.response_mask


def config(**overrides):
  base = dict(batch_size=B, seq_len=T, estimator="rae", num_epochs=2, num_minibatches=2,
              num_microbatches=2, loss=losses.LossConfig(max_response_len=T - PROMPT))
  return ts.TrainStepConfig(**{**base, **overrides})


OPTIMIZER = ts.make_optimizer(learning_rate=1e-2)
_COMPILED = {}


def compiled_step(cfg, optimizer=OPTIMIZER):
  """One jitted step per (config, optimizer), so tests share compilations."""
  key = (cfg, id(optimizer))
  if key not in _COMPILED:
    _COMPILED[key] = ts.make_train_step(cfg, forward, optimizer)
  return _COMPILED[key]


def run_steps(cfg, num_steps=1, seed=0, optimizer=OPTIMIZER, batch_fn=None, reference=False):
  step = compiled_step(cfg, optimizer)
  state = ts.init_state(init_params(), optimizer, num_kinds=1, num_roles=2, seed=seed,
                        reference=reference)
  history = []
  for i in range(num_steps):
    batch = make_batch(i) if batch_fn is None else batch_fn(state, i)
    if batch.old_log_probs is None and not cfg.recompute_old_log_probs:
      batch = batch.replace(old_log_probs=sampler_log_probs(state.params, batch))
    state, metrics = step(state, batch)
    history.append(jax.device_get(metrics))
  return state, history


def test_first_epoch_ratio_is_one_and_nothing_clipped():
  """At ratio 1 the loss is -sum_b A_b * (response tokens of b) / (max_response_len * B), the
  dr_grpo aggregation of -A, with RAE's advantages of the batch from zero baselines."""
  batch = make_batch(0)
  adv, _, _ = advantages.compute("rae", batch.outcomes, jnp.zeros((1, 2)))
  tokens = np.asarray(batch.response_mask).sum(-1)
  expected = -(np.asarray(adv) * tokens).sum() / ((T - PROMPT) * B)
  for recompute in (False, True):
    _, (metrics,) = run_steps(config(num_epochs=1, num_minibatches=1, num_microbatches=2,
                                     recompute_old_log_probs=recompute))
    assert metrics["ratio_min"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["ratio_max"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["clip_fraction"] == 0.0
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["grad_norm"] > 0


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_sampler_metrics_are_the_first_epochs(shift):
  """Old log-probs `shift` above the learner's on every response token: in the first epoch
  d = log p_learner - log p_sampler = -shift on every trained token; the second epoch moves the
  learner (ratio_mean, over both epochs, leaves e^-shift) but not the sampler_* metrics."""

  def shifted(state, i):
    batch = make_batch(i)
    return batch.replace(old_log_probs=sampler_log_probs(state.params, batch)
                         + shift * batch.response_mask)

  _, (metrics,) = run_steps(config(num_minibatches=1), batch_fn=shifted)
  assert metrics["ratio_mean"] != pytest.approx(math.exp(-shift), abs=1e-4)
  assert metrics["sampler_logprob_abs_diff"] == pytest.approx(shift, abs=1e-5)
  assert metrics["sampler_ratio_outside_0.9_1.1"] == float(shift > 0)
  assert metrics["sampler_kl_k3"] == pytest.approx(math.exp(-shift) - 1 + shift, abs=1e-5)


def test_metrics_are_finite_and_describe_the_batch():
  state, (metrics,) = run_steps(config())
  batch = make_batch(0)
  for key, value in metrics.items():
    assert np.isfinite(value), key
  assert metrics["skipped_updates"] == 0 and int(state.skipped_updates) == 0
  assert int(state.step) == 1
  assert metrics["invalid_rate"] == pytest.approx(np.mean(batch.invalid_action))
  assert metrics["response_length_mean"] == pytest.approx(np.mean(batch.response_mask.sum(-1)))
  assert metrics["reward_mean"] == pytest.approx(np.mean(batch.outcomes.reward))
  assert metrics["ratio_max"] > 1.0 or metrics["ratio_min"] < 1.0  # The second update moved.


def test_same_seed_is_bit_identical():
  a, hist_a = run_steps(config(), num_steps=3, seed=7)
  b, hist_b = run_steps(config(), num_steps=3, seed=7)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)
  for ma, mb in zip(hist_a, hist_b):
    for key in ma:
      np.testing.assert_array_equal(ma[key], mb[key], err_msg=key)
  c, _ = run_steps(config(), num_steps=3, seed=8)  # Another shuffle seed gives other params.
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.params),
                                                      jax.tree.leaves(c.params)))


def test_micro_batch_count_does_not_change_the_update():
  optimizer = optax.sgd(0.1)  # Linear in the gradient: compares the accumulated gradients.
  a, _ = run_steps(config(num_microbatches=1, num_minibatches=1), optimizer=optimizer)
  b, _ = run_steps(config(num_microbatches=4, num_minibatches=1), optimizer=optimizer)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_rae_baselines_are_carried_across_steps():
  state, _ = run_steps(config(), num_steps=3)
  ema = {0: 0.0, 1: 0.0}
  for i in range(3):
    rewards = np.asarray(make_batch(i).outcomes.reward)
    for b in range(B):  # Sample b is game b // 2, role b % 2: one update per trajectory.
      ema[b % 2] = 0.95 * ema[b % 2] + 0.05 * rewards[b]
  np.testing.assert_allclose(state.baselines, [[ema[0], ema[1]]], rtol=1e-5)


def subsample_draws(keep, size, num_draws, seed=0, kinds=None, num_kinds=0):
  """int32 [num_draws, size]: `ts.subsample` with num_draws keys split from `seed`."""
  draw = jax.jit(jax.vmap(ts.subsample, in_axes=(0, None, None, None, None)),
                 static_argnums=(2, 4))
  keys = jax.random.split(jax.random.key(seed), num_draws)
  kinds = None if kinds is None else jnp.asarray(kinds)
  return np.asarray(draw(keys, jnp.asarray(keep), size, kinds, num_kinds))


def collected_layout():
  """(kind, turn, keep) per row of a batch laid out as collect lays it out: kind after kind, each
  turn by turn ([turns, games] flattened): 9 turns x 8 games, 3 x 8, and, listed last, a kind of
  2 turns x 4 games with few rows. About 70% of the rows are kept (the rest stand for turns after
  the end and zero advantages)."""
  kinds, turns = [], []
  for kind, (num_turns, num_games) in enumerate([(9, 8), (3, 8), (2, 4)]):
    kinds += [kind] * (num_turns * num_games)
    turns += [turn for turn in range(num_turns) for _ in range(num_games)]
  keep = np.random.default_rng(0).random(len(kinds)) < 0.7
  return np.array(kinds), np.array(turns), keep


def test_subsample_is_uniform_over_rows_games_and_turns():
  kinds, turns, keep = collected_layout()
  size, num_draws = 16, 4000
  rows = subsample_draws(keep, size, num_draws)
  assert (np.diff(np.sort(rows, axis=1), axis=1) > 0).all()  # Without replacement.
  assert keep[rows].all()  # Enough rows survive: no padding, no dropped row drawn.
  # Each kept row is drawn with probability size / kept (binomial sd 0.007 here; tolerance ~6 sd).
  frequency = np.bincount(rows.ravel(), minlength=len(keep)) / num_draws
  np.testing.assert_allclose(frequency[keep], size / keep.sum(), atol=0.04)
  # Composition by game kind and by turn: the kept rows' shares (sd <= 0.002; tolerance 0.01).
  # A cut of the first 16 kept rows would give kind 0's first three turns only.
  for labels in (kinds, turns):
    drawn = np.bincount(labels[rows].ravel(), minlength=labels.max() + 1) / rows.size
    expected = np.bincount(labels[keep], minlength=labels.max() + 1) / keep.sum()
    assert (expected > 0).all()
    np.testing.assert_allclose(drawn, expected, atol=0.01)


def test_subsample_of_fewer_survivors_takes_them_all_then_padding():
  keep = np.zeros(20, bool)
  keep[[0, 3, 7, 11, 19]] = True
  rows = subsample_draws(keep, 8, 200)
  assert (np.sort(rows[:, :5], axis=1) == np.flatnonzero(keep)).all()
  assert not keep[rows[:, 5:]].any()
  assert (np.diff(np.sort(rows, axis=1), axis=1) > 0).all()


def test_a_balanced_subsample_gives_each_game_kind_an_equal_share():
  """Kinds 0 and 1 have 72 and 24 rows, kind 2 has 8 (fewer kept than its share of 24): kind 2's
  kept rows are all drawn and kinds 0 and 1 share the rest equally, each uniformly."""
  kinds, _, keep = collected_layout()
  kept_per_kind = np.bincount(kinds[keep])
  size, num_draws = 24, 2000
  assert kept_per_kind[2] < size // 3 < kept_per_kind[:2].min()
  rows = subsample_draws(keep, size, num_draws, kinds=kinds, num_kinds=3)
  assert (np.diff(np.sort(rows, axis=1), axis=1) > 0).all() and keep[rows].all()
  rest = size - kept_per_kind[2]
  shares = np.stack([np.bincount(kinds[r], minlength=3) for r in rows])
  assert (shares[:, 2] == kept_per_kind[2]).all()
  assert set(shares[:, 0]) <= {rest // 2, (rest + 1) // 2} and (shares[:, :2].sum(1) == rest).all()
  # Uniform within a kind: each kept row of kind 0 drawn with probability share / kept (sd 0.01).
  frequency = np.bincount(rows.ravel(), minlength=len(keep)) / num_draws
  np.testing.assert_allclose(frequency[keep & (kinds == 0)], rest / 2 / kept_per_kind[0],
                             atol=0.05)
  # Fewer kept rows than the batch: all of them first, then padding, as without balancing.
  few = keep & (kinds == 2)
  rows = subsample_draws(few, 8, 50, kinds=kinds, num_kinds=3)
  assert (np.sort(rows[:, :few.sum()], axis=1) == np.flatnonzero(few)).all()
  assert not few[rows[:, few.sum():]].any()


def test_subsample_is_keyed():
  _, _, keep = collected_layout()
  draws = [subsample_draws(keep, 16, 1, seed) for seed in (0, 0, 1)]
  np.testing.assert_array_equal(draws[0], draws[1])
  assert set(draws[0].ravel()) != set(draws[2].ravel())


# A step's batch holds every collected turn-sample (N rows); it trains a uniform subsample of B.
N = 32


def zero_reward_batch(state, i):
  """N rows whose first N - 4 (games 0-13) have reward 0, hence RAE advantage 0 at the start."""
  del i
  batch = make_batch(0, rows=N)
  reward = batch.outcomes.reward.at[:N - 4].set(0.0)
  batch = batch.replace(outcomes=batch.outcomes.replace(reward=reward))
  return batch.replace(old_log_probs=sampler_log_probs(state.params, batch))


def test_zero_advantage_rows_are_filtered_before_subsampling():
  """The 4 nonzero rows are listed last: a fixed cut of 8 rows would train none of them."""
  _, (metrics,) = run_steps(config(), batch_fn=zero_reward_batch)
  assert metrics["samples_collected"] == N
  assert metrics["samples_after_filter"] == 4 == metrics["num_samples"]
  assert metrics["kept_fraction"] == pytest.approx(4 / N)
  assert metrics["advantage_min"] != 0 and metrics["advantage_max"] != 0
  _, (unfiltered,) = run_steps(config(drop_zero_advantage=False), batch_fn=zero_reward_batch)
  assert unfiltered["samples_after_filter"] == N and unfiltered["num_samples"] == B


def test_forfeit_credit_answer_filters_the_legal_answers_of_forfeited_games():
  """Each game here is two single-turn rows; a quarter of the answers are invalid."""
  def batch_fn(state, i):
    del i
    batch = make_batch(1, rows=N)
    return batch.replace(old_log_probs=sampler_log_probs(state.params, batch))

  batch = make_batch(1, rows=N)
  invalid = np.asarray(batch.invalid_action)
  games = np.asarray(batch.outcomes.game_index)
  forfeited = np.bincount(games, weights=invalid)[games] > 0
  assert 0 < invalid.sum() < forfeited.sum() < N  # Some legal answers sit in forfeited games.
  _, (metrics,) = run_steps(config(forfeit_credit="answer"), batch_fn=batch_fn)
  assert metrics["samples_after_filter"] == np.sum(~forfeited | invalid)
  _, (metrics,) = run_steps(config(), batch_fn=batch_fn)
  assert metrics["samples_after_filter"] == N  # RAE from a zero baseline: every advantage != 0.
  with pytest.raises(ValueError, match="forfeit_credit='turn'; valid: game, answer"):
    config(forfeit_credit="turn")


def test_rae_baselines_update_from_every_collected_game():
  """N rows (16 games), B = 8 trained: the baselines take all 16 games whichever rows are drawn;
  the draw follows the state's rng (same seed, same rows)."""
  def full(state, i):
    del i
    batch = make_batch(0, rows=N)
    return batch.replace(old_log_probs=sampler_log_probs(state.params, batch))

  ema = {0: 0.0, 1: 0.0}
  rewards = np.asarray(make_batch(0, rows=N).outcomes.reward)
  for b in range(N):  # Sample b is game b // 2, role b % 2: one update per trajectory.
    ema[b % 2] = 0.95 * ema[b % 2] + 0.05 * rewards[b]
  draws = [run_steps(config(), seed=seed, batch_fn=full) for seed in (0, 0, 1)]
  for state, (metrics,) in draws:
    np.testing.assert_allclose(state.baselines, [[ema[0], ema[1]]], rtol=1e-5)
    assert metrics["samples_after_filter"] == N and metrics["num_samples"] == B
  advantage = [metrics["advantage_mean"] for _, (metrics,) in draws]
  assert advantage[0] == advantage[1] != advantage[2]


def test_nan_loss_skips_the_update():
  params = init_params()
  batch = make_batch(0)
  old = sampler_log_probs(params, batch).at[0, PROMPT].set(jnp.nan)
  optimizer = OPTIMIZER
  step = compiled_step(config(num_minibatches=1), optimizer)
  state = ts.init_state(params, optimizer, num_kinds=1, num_roles=2, seed=0)
  expected_opt = jax.device_get(state.opt_state)
  expected_params = jax.device_get(params)
  state, metrics = step(state, batch.replace(old_log_probs=old))
  assert int(metrics["skipped_updates"]) == 2 == int(state.skipped_updates)  # One per epoch.
  for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected_params)):
    np.testing.assert_array_equal(x, y)
  for x, y in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(expected_opt)):
    np.testing.assert_array_equal(x, y)
  assert np.abs(np.asarray(state.baselines)).sum() > 0  # The baselines still saw the rewards.


def test_learns_a_bandit():
  """Reward 1 for answering token 3 after any prompt: its probability must rise."""
  target = 3

  def batch_fn(state, i):
    batch = make_batch(i)
    key = jax.random.key(100 + i)
    logits = forward(state.params, batch.tokens, batch.positions)[:, PROMPT - 1]
    answer = jax.random.categorical(key, logits)
    tokens = batch.tokens.at[:, PROMPT].set(answer)
    response_mask = jnp.zeros((B, T), bool).at[:, PROMPT].set(True)
    reward = jnp.where(answer == target, 1.0, -1.0)
    games = jnp.arange(B)
    samples = batch.outcomes.replace(reward=reward, role=jnp.zeros(B, jnp.int32), game_index=games,
                                    turn_index=jnp.zeros(B, jnp.int32))
    batch = batch.replace(tokens=tokens, response_mask=response_mask, outcomes=samples)
    return batch.replace(old_log_probs=sampler_log_probs(state.params, batch))

  def target_prob(params):
    batch = make_batch(99)
    logits = forward(params, batch.tokens, batch.positions)[:, PROMPT - 1]
    return float(jax.nn.softmax(logits)[:, target].mean())

  cfg = config(estimator="reinforce", drop_zero_advantage=False)
  optimizer = ts.make_optimizer(learning_rate=3e-2)
  before = target_prob(init_params())
  state, _ = run_steps(cfg, num_steps=25, optimizer=optimizer, batch_fn=batch_fn)
  after = target_prob(state.params)
  assert after > max(0.5, 3 * before), (before, after)


def test_shape_mismatch_is_reported_at_trace_time():
  step = compiled_step(config())
  state = ts.init_state(init_params(), OPTIMIZER, num_kinds=1, num_roles=2, seed=0)
  batch = make_batch(0)
  batch = batch.replace(old_log_probs=sampler_log_probs(state.params, batch))
  short = batch.replace(tokens=batch.tokens[:, :-1])
  with pytest.raises(ValueError, match=r"batch.tokens has shape \(8, 5\).*expect \(8, 6\)"):
    step(state, short)
  with pytest.raises(ValueError, match=r"batch has 4 rows, fewer than the batch_size=8"):
    step(state, jax.tree.map(lambda x: x[:4], batch))
  with pytest.raises(ValueError, match="batch.old_log_probs is missing"):
    step(state, batch.replace(old_log_probs=None))
  bad_samples = batch.outcomes.replace(reward=batch.outcomes.reward[:4])
  with pytest.raises(ValueError, match=r"batch.outcomes.reward has shape \(4,\)"):
    step(state, batch.replace(outcomes=bad_samples))
  with pytest.raises(ValueError, match="batch.ref_log_probs is missing"):
    kl_config = config(loss=losses.LossConfig(max_response_len=3, kl_coef=0.1))
    ts.make_train_step(kl_config, forward, OPTIMIZER)(state, batch)


def test_bad_config_is_reported():
  with pytest.raises(ValueError, match="not divisible"):
    config(num_minibatches=3)
  with pytest.raises(ValueError, match="valid estimators"):
    config(estimator="a2c")
  with pytest.raises(ValueError, match="valid schedules"):
    ts.make_optimizer(schedule="step")


def _assert_trees_close(a, b, atol=0.0):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


def test_kl_reference_from_the_state_is_zero_at_the_start_and_grows():
  kl_loss = losses.LossConfig(max_response_len=T - PROMPT, kl_coef=0.5)
  cfg = config(num_epochs=1, num_minibatches=1, loss=kl_loss)
  state, history = run_steps(cfg, num_steps=3, reference=True)
  assert history[0]["kl"] == pytest.approx(0.0, abs=1e-7)  # ref_params == params at step 0.
  assert 0 < history[1]["kl"] < history[2]["kl"]
  _assert_trees_close(state.ref_params, init_params())  # decay 1.0: the initial params stay.


def test_kl_reference_in_the_state_matches_reference_log_probs_in_the_batch():
  kl_loss = losses.LossConfig(max_response_len=T - PROMPT, kl_coef=0.5)
  cfg = config(loss=kl_loss)
  ref = init_params(seed=7)
  with_ref = lambda state, i: make_batch(i).replace(
      ref_log_probs=sampler_log_probs(ref, make_batch(i)))
  from_batch, batch_history = run_steps(cfg, num_steps=2, batch_fn=with_ref)
  step = compiled_step(cfg)
  state = ts.init_state(init_params(), OPTIMIZER, num_kinds=1, num_roles=2, seed=0).replace(
      ref_params=ref)
  for i in range(2):
    batch = make_batch(i)
    state, metrics = step(state, batch.replace(old_log_probs=sampler_log_probs(state.params,
                                                                                batch)))
    assert metrics["kl"] == pytest.approx(batch_history[i]["kl"], rel=1e-5)
  _assert_trees_close(state.params, from_batch.params, atol=1e-6)


def test_moving_reference_is_the_moving_average_of_the_params():
  decay = 0.75
  kl_loss = losses.LossConfig(max_response_len=T - PROMPT, kl_coef=0.5)
  cfg = config(loss=kl_loss, reference_decay=decay)
  one, _ = run_steps(cfg, num_steps=1, reference=True)
  expected = jax.tree.map(lambda p0, p1: decay * p0 + (1 - decay) * p1, init_params(),
                          one.params)
  _assert_trees_close(one.ref_params, expected, atol=1e-7)
  two, _ = run_steps(cfg, num_steps=2, reference=True)
  expected = jax.tree.map(lambda r, p: decay * r + (1 - decay) * p, one.ref_params, two.params)
  _assert_trees_close(two.ref_params, expected, atol=1e-7)
  with pytest.raises(ValueError, match=r"reference_decay=1.5 must be in \[0, 1\]"):
    config(reference_decay=1.5)


def test_zero_advantage_filter_equals_removing_the_rows():
  """16 rows, 12 of them with reward (REINFORCE advantage) 0, batch_size 8: the filtered step
  trains the 4 others plus 4 padding rows, and must update exactly as a step given those 4 rows
  alone (batch_size 4): same loss, same SGD update."""
  optimizer = optax.sgd(0.5)
  rows = 16
  zero = np.arange(rows) < 12

  def batch_of(state, keep):
    batch = make_batch(3, rows=rows)
    batch = batch.replace(outcomes=batch.outcomes.replace(
        reward=jnp.where(zero, 0.0, batch.outcomes.reward)))
    batch = jax.tree.map(lambda x: x[keep], batch)
    return batch.replace(old_log_probs=sampler_log_probs(state.params, batch))

  one = dict(num_epochs=1, num_minibatches=1, num_microbatches=1, estimator="reinforce")
  filtered, (metrics,) = run_steps(config(**one), optimizer=optimizer,
                                   batch_fn=lambda s, i: batch_of(s, np.arange(rows)))
  removed, (expected,) = run_steps(config(batch_size=4, drop_zero_advantage=False, **one),
                                   optimizer=optimizer, batch_fn=lambda s, i: batch_of(s, ~zero))
  assert metrics["samples_after_filter"] == 4 == metrics["num_samples"]
  assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-5)
  assert abs(expected["loss"]) > 1e-3
  _assert_trees_close(filtered.params, removed.params, atol=1e-6)
  moved = [np.abs(np.asarray(x) - np.asarray(y)).max()
           for x, y in zip(jax.tree.leaves(removed.params), jax.tree.leaves(init_params()))]
  assert max(moved) > 1e-3


def _entropy_and_kl(params, ref_params, batch):
  """Token means over the response tokens of `batch`: the policy's entropy, and the k3 KL to the
  `ref_params` policy on the batch's tokens (the loss's estimator)."""
  def terms(p):
    logits = forward(p, batch.tokens, batch.positions)[:, :-1]
    return losses.log_probs_and_entropy(logits, batch.tokens[:, 1:])
  (log_probs, entropy), (ref, _) = terms(params), terms(ref_params)
  mask = np.asarray(batch.response_mask[:, 1:])
  kl = np.exp(ref - log_probs) - (ref - log_probs) - 1
  return float(np.asarray(entropy)[mask].mean()), float(np.asarray(kl)[mask].mean())


@pytest.mark.parametrize("coef,value", [("entropy_coef", 2.0), ("kl_coef", 0.5)])
def test_one_sgd_step_raises_entropy_or_lowers_kl(coef, value):
  """Zero advantages leave the regulariser alone in the loss: one SGD step with entropy_coef > 0
  must raise the policy's entropy on the batch, one with kl_coef > 0 must lower the KL to the
  reference (another init)."""
  reference = init_params(seed=7)
  loss = losses.LossConfig(aggregation="token_mean", **{coef: value})
  cfg = config(loss=loss, estimator="reinforce", drop_zero_advantage=False, num_epochs=1,
               num_minibatches=1, num_microbatches=1)
  optimizer = optax.sgd(1.0)
  state = ts.init_state(init_params(), optimizer, 1, 2, seed=0).replace(
      ref_params=init_params(seed=7))  # A copy of `reference`: the step donates its state.
  batch = make_batch(4)
  batch = batch.replace(outcomes=batch.outcomes.replace(reward=jnp.zeros(B)))
  batch = batch.replace(old_log_probs=sampler_log_probs(state.params, batch))
  entropy, kl = _entropy_and_kl(state.params, reference, batch)
  state, _ = compiled_step(cfg, optimizer)(state, batch)
  new_entropy, new_kl = _entropy_and_kl(state.params, reference, batch)
  if coef == "entropy_coef":
    assert new_entropy > entropy + 1e-3
  else:
    assert new_kl < kl - 1e-3


def test_trainable_leaves_update_as_in_a_full_step_and_the_rest_stay_fixed():
  """With `trainable` marking some leaves (as LoRA marks its adapters), the step updates exactly
  those, as a step over every leaf would (Adam is per leaf; no clipping here), keeps the others
  bit for bit, and holds optimizer state for the trainable leaves only."""
  optimizer = ts.make_optimizer(learning_rate=1e-2, max_grad_norm=1e9)
  params = init_params()
  trainable = jax.tree_util.tree_map_with_path(lambda path, _: "Dense_1" in jax.tree_util.keystr(
      path), params)
  cfg = config(num_epochs=1, num_minibatches=1)  # One update: later ones see different params.
  batch = make_batch(0)
  batch = batch.replace(old_log_probs=sampler_log_probs(params, batch))
  copy = lambda: jax.tree.map(jnp.copy, params)  # The step donates its state.
  full_state = ts.init_state(copy(), optimizer, num_kinds=1, num_roles=2, seed=0)
  full, _ = ts.make_train_step(cfg, forward, optimizer)(full_state, batch)
  part_state = ts.init_state(copy(), optimizer, num_kinds=1, num_roles=2, seed=0,
                             trainable=trainable)
  assert len(jax.tree.leaves(part_state.opt_state)) < len(jax.tree.leaves(full_state.opt_state))
  part, _ = ts.make_train_step(cfg, forward, optimizer, trainable=trainable)(part_state, batch)
  for path, leaf in jax.tree_util.tree_leaves_with_path(part.params):
    name = jax.tree_util.keystr(path)
    before = _leaf_at(params, path)
    if "Dense_1" in name:
      np.testing.assert_allclose(leaf, _leaf_at(full.params, path), atol=1e-6, err_msg=name)
      assert np.abs(np.asarray(leaf) - np.asarray(before)).max() > 1e-4, name
    else:
      np.testing.assert_array_equal(leaf, before, err_msg=name)


def _leaf_at(tree, path):
  for entry in path:
    tree = tree[entry.key]
  return tree
