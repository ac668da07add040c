"""The opponent pool: snapshots in a ring, draws by each rule's weights, scores by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplay.rl import population


def params(value: float):
  return {"w": jnp.full((2, 3), value), "adapter": None, "b": jnp.full((3,), -value)}


def test_a_new_pool_holds_the_initial_params_and_snapshots_replace_the_oldest():
  pool = population.new_pool(params(0.0), capacity=3)
  assert int(pool.size) == 1 and pool.params["adapter"] is None
  np.testing.assert_array_equal(pool.step, [0, -1, -1])
  for step in (4, 8, 12):
    pool = population.add(pool, params(float(step)), step)
  # Ring of 3: step 12 overwrote the oldest (step 0); slot order 12, 4, 8.
  assert int(pool.size) == 3 and int(pool.newest) == 0
  np.testing.assert_array_equal(pool.step, [12, 4, 8])
  np.testing.assert_array_equal(population.member(pool, 1)["w"], np.full((2, 3), 4.0))
  np.testing.assert_array_equal(population.member(pool, 0)["b"], np.full((3,), -12.0))


def test_snapshots_can_be_kept_in_bfloat16_and_come_back_in_the_learner_dtype():
  pool = population.new_pool(params(1.0 / 3.0), capacity=2, dtype="bfloat16")
  assert pool.params["w"].dtype == jnp.bfloat16
  learner = params(5.0)
  back = population.member_params(population.member(pool, 0), learner)
  assert back["w"].dtype == jnp.float32
  np.testing.assert_allclose(back["w"], np.full((2, 3), 1.0 / 3.0), rtol=4e-3)
  # With a trainable mask only the trained leaves come from the snapshot (LoRA: the adapters).
  trainable = {"w": False, "adapter": None, "b": True}
  pool = population.new_pool({"w": None, "adapter": None, "b": jnp.full((3,), 2.0)}, capacity=2)
  merged = population.member_params(population.member(pool, 0), learner, trainable)
  np.testing.assert_array_equal(merged["w"], learner["w"])
  np.testing.assert_array_equal(merged["b"], np.full((3,), 2.0))


def scored(scores, size):
  pool = population.new_pool(params(0.0), capacity=len(scores))
  for step in range(1, size):
    pool = population.add(pool, params(float(step)), step)
  return pool.replace(score=jnp.asarray(scores, jnp.float32))


def test_weights_of_each_rule_by_hand():
  pool = scored([0.25, 0.5, 0.9, 0.0], size=3)  # Slot 3 is empty; slot 2 is the newest.
  np.testing.assert_allclose(population.weights(pool, "uniform"), [1, 1, 1, 0])
  np.testing.assert_allclose(population.weights(pool, "latest"), [0, 0, 1, 0])
  np.testing.assert_allclose(population.weights(pool, "pfsp_hard", power=2.0),
                             [0.5625, 0.25, 0.01, 0], rtol=1e-5)
  np.testing.assert_allclose(population.weights(pool, "pfsp_variance"),
                             [0.1875, 0.25, 0.09, 0], rtol=1e-5)
  with pytest.raises(ValueError, match="valid: latest, uniform, pfsp_hard, pfsp_variance"):
    population.weights(pool, "elo")


def test_a_learner_that_beats_every_member_still_draws_them_uniformly():
  pool = scored([1.0, 1.0, 0.3], size=2)
  np.testing.assert_allclose(population.weights(pool, "pfsp_hard"), [1, 1, 0])


def test_draws_follow_the_weights():
  pool = scored([0.25, 0.5, 0.9, 0.0], size=3)
  members = np.asarray(population.draw(pool, jax.random.key(0), 20_000, "pfsp_hard"))
  counts = np.bincount(members, minlength=4) / members.size
  expected = np.array([0.5625, 0.25, 0.01, 0]) / 0.8225
  np.testing.assert_allclose(counts, expected, atol=0.015)
  assert counts[3] == 0


def test_learner_scores_results_and_the_moving_score_by_hand():
  returns = jnp.asarray([[1.0, -1.0], [1.0, -1.0], [0.0, 0.0], [-2.0, 2.0]])
  seats = jnp.asarray([0, 1, 1, 0])
  scores = population.learner_scores(returns, seats)
  np.testing.assert_array_equal(scores, [1.0, 0.0, 0.5, 0.0])
  members = jnp.asarray([0, 0, 2, 2])
  counted = jnp.asarray([True, True, True, False])  # The last game was self-play.
  games, sums = population.results(members, scores, counted, members=3)
  np.testing.assert_array_equal(games, [2, 0, 1])
  np.testing.assert_array_equal(sums, [1.0, 0.0, 0.5])
  pool = scored([0.2, 0.6, 0.8], size=3)
  pool = population.record(pool, games, sums, decay=0.75)
  # Member 0: 0.75 * 0.2 + 0.25 * 0.5; member 1 kept; member 2: 0.75 * 0.8 + 0.25 * 0.5.
  np.testing.assert_allclose(pool.score, [0.275, 0.6, 0.725], rtol=1e-6)
  # A new snapshot's score starts at 1/2 whatever the slot held.
  np.testing.assert_allclose(population.add(pool, params(9.0), 9).score, [0.5, 0.6, 0.725])


def test_the_pool_functions_jit():
  pool = population.new_pool(params(0.0), capacity=2)
  pool = jax.jit(population.add)(pool, params(1.0), 3)
  members = jax.jit(population.draw, static_argnums=(2, 3))(pool, jax.random.key(1), 5, "uniform")
  assert members.shape == (5,) and set(np.asarray(members).tolist()) <= {0, 1}


def test_a_fixed_opponent_is_the_member_after_the_snapshots():
  pool = population.new_pool(params(0.0), capacity=3, fixed_opponent=True)
  assert pool.capacity == 3 and pool.members == 4
  pool = pool.replace(score=jnp.asarray([0.25, 0.5, 0.5, 0.75]))  # Slots 1 and 2 empty.
  np.testing.assert_array_equal(population.held(pool), [True, False, False, True])
  np.testing.assert_allclose(population.weights(pool, "pfsp_hard"), [0.5625, 0, 0, 0.0625])
  np.testing.assert_allclose(population.weights(pool, "latest"), [1, 0, 0, 0])
  # Snapshots never take the fixed opponent's place; its score is recorded like theirs.
  for step in (1, 2, 3):
    pool = population.add(pool, params(float(step)), step)
  np.testing.assert_array_equal(pool.step, [3, 1, 2])
  games, sums = population.results(jnp.asarray([3, 3, 0]), jnp.asarray([1.0, 0.0, 1.0]),
                                   jnp.ones(3, bool), pool.members)
  np.testing.assert_array_equal(games, [1, 0, 0, 2])
  np.testing.assert_allclose(population.record(pool, games, sums, 0.5).score[3], 0.625)


def test_counter_slots_follow_the_snapshots_and_replace_their_oldest():
  pool = population.new_pool(params(0.0), capacity=2, fixed_opponent=True, counters=2)
  assert (pool.capacity, pool.counters, pool.members) == (2, 2, 5)
  np.testing.assert_array_equal(population.held(pool), [True, False, False, False, True])
  for step in (4, 8, 12):
    pool = population.add_counter(pool, params(float(step)), step)
  np.testing.assert_array_equal(pool.counter_step, [12, 8])  # Step 4's was the oldest.
  np.testing.assert_array_equal(pool.params["w"][2:, 0, 0], [12.0, 8.0])
  np.testing.assert_array_equal(population.counters_held(pool), [False, False, True, True, False])
  np.testing.assert_array_equal(population.snapshots(pool), [True, False, False, False, False])
  with pytest.raises(ValueError, match="no counter slots"):
    population.add_counter(population.new_pool(params(0.0), capacity=2), params(1.0), 1)


def test_cross_play_gives_the_counters_their_share_once_one_is_held():
  pool = population.new_pool(params(0.0), capacity=2, counters=2)
  pool = population.add(pool, params(1.0), 1)
  # No counter yet: the snapshots take everything, cross_play or not.
  np.testing.assert_allclose(population.weights(pool, "uniform", cross_play=0.4), [1, 1, 0, 0])
  pool = population.add_counter(pool, params(2.0), 1)
  pool = population.add_counter(pool, params(3.0), 2)
  pool = pool.replace(score=jnp.asarray([0.5, 0.0, 0.5, 0.75]))
  # pfsp_hard within each group: snapshots (0.25, 1) -> (0.2, 0.8) of 0.6; counters
  # (0.25, 0.0625) -> (0.8, 0.2) of 0.4.
  np.testing.assert_allclose(population.weights(pool, "pfsp_hard", cross_play=0.4),
                             [0.12, 0.48, 0.32, 0.08], rtol=1e-6)
  # `latest` takes the newest of each group; without cross_play the counters are never drawn.
  np.testing.assert_allclose(population.weights(pool, "latest", cross_play=0.4),
                             [0, 0.6, 0, 0.4])
  np.testing.assert_allclose(population.weights(pool, "uniform"), [1, 1, 0, 0])
  members = np.asarray(population.draw(pool, jax.random.key(0), 20_000, "uniform",
                                       cross_play=0.4))
  assert abs(np.mean(members >= 2) - 0.4) < 0.015
  # The counter policy's opponents: the learner's snapshots alike or its newest, never a counter.
  drawn = np.asarray(population.draw_from(population.counter_opponents(pool, "uniform"),
                                          jax.random.key(1), 1000))
  assert set(drawn.tolist()) == {0, 1}
  np.testing.assert_array_equal(population.counter_opponents(pool, "latest"), [0, 1, 0, 0])
  with pytest.raises(ValueError, match="valid: uniform, latest"):
    population.counter_opponents(pool, "pfsp_hard")
