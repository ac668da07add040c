"""Rollout mechanics with a stand-in policy (uniform legal actions); the model policies are tested
in their own modules."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import games
from games import opponents
from jaxplay.rl import rollout
from tests import stand_ins


@functools.partial(jax.jit, static_argnames=("game", "batch", "opponent", "frozen", "group_size"))
def _play(game, params, key, batch, opponent=None, frozen=False, group_size=1):
  return rollout.rollout(game, stand_ins.random_policy, stand_ins.render_phrase_ids, params, key,
                         batch, opponent_params=params if frozen else None, opponent=opponent,
                         group_size=group_size)


@pytest.mark.parametrize("name", ["tic_tac_toe", "kuhn_poker"])
def test_self_play_records_every_turn(name):
  if name not in games.registered_names():
    pytest.skip(f"{name} not registered")
  game = games.make(name)
  episodes = _play(game, {"p_invalid": 0.0}, jax.random.key(0), 64)
  assert episodes.final_state.terminated.all()
  np.testing.assert_array_equal(episodes.active.sum(0), episodes.num_turns)
  np.testing.assert_array_equal(episodes.learner, episodes.active)
  assert episodes.valid[episodes.active].all() and not episodes.invalid.any()
  np.testing.assert_allclose(episodes.returns.sum(-1), 0.0)
  # The acting player alternates in TicTacToe; its reward is its game's return.
  samples = rollout.to_samples(episodes, game_kind=2)
  outcome = samples.outcomes
  rows = np.asarray(outcome.mask)
  expected = np.asarray(episodes.returns)[np.asarray(outcome.game_index), np.asarray(outcome.role)]
  np.testing.assert_allclose(np.asarray(outcome.reward)[rows], expected[rows])
  assert (np.asarray(outcome.game_kind) == 2).all()


def test_invalid_answers_end_games_with_penalty():
  game = games.make("tic_tac_toe")
  episodes = _play(game, {"p_invalid": 1.0}, jax.random.key(1), 16)
  assert episodes.invalid.all() and (episodes.num_turns == 1).all()
  np.testing.assert_allclose(episodes.returns, np.tile(games.TRAIN_INVALID_REWARDS, (16, 1)))
  assert not episodes.valid.any()


def test_fixed_opponent_only_learner_turns_are_samples():
  game = games.make("tic_tac_toe")
  episodes = _play(game, {"p_invalid": 0.0}, jax.random.key(2), 256,
                   opponent=opponents.uniform_random)
  seats = np.asarray(episodes.learner_seat)
  assert set(np.unique(seats)) == {0, 1}
  learner, active = np.asarray(episodes.learner), np.asarray(episodes.active)
  player = np.asarray(episodes.player)
  np.testing.assert_array_equal(learner, active & (player == seats[None]))
  # The opponent's turns are played (games still finish) but are not samples.
  assert (active & ~learner).any() and episodes.final_state.terminated.all()


@pytest.mark.parametrize("halvings", [0, 1, 2])
def test_the_model_runs_only_for_the_learners_turns(halvings):
  """Against a fixed opponent the policy is asked only for the learner's live rows (others get
  no legal action), a turn with no such row does not run the model at all, and the model runs on
  the smallest of 64, 32, ..., 64 / 2**halvings rows that holds those rows, each answer going back
  to its row."""

  game = games.make("tic_tac_toe")
  sizes = 64 >> np.arange(halvings + 1)  # Descending: 64, 32, ...
  used = set()
  for seats in (np.arange(64) % 2, np.zeros(64)):  # Mixed seats, then the learner always X.
    episodes = jax.jit(lambda key, seats: rollout.rollout(
        game, stand_ins.marking_policy, stand_ins.render_phrase_ids, {"p_invalid": 0.0}, key, 64,
        opponent=opponents.uniform_random, seats=seats, batch_halvings=halvings))(
            jax.random.key(5), jnp.asarray(seats, jnp.int32))
    tokens = np.asarray(episodes.response_tokens)
    learner = np.asarray(episodes.learner)
    np.testing.assert_array_equal(tokens[..., 1] == 1, learner)
    assert np.asarray(episodes.valid)[learner].all()  # Each row got the answer to its own board.
    ran = tokens[..., 2].any(-1)  # [T]: the model ran at this turn.
    live = np.asarray(episodes.active).any(-1)
    expected = live if seats.any() else live & (np.arange(game.max_turns) % 2 == 0)
    np.testing.assert_array_equal(ran, expected)
    batch = np.asarray(episodes.response_logprobs)[..., 0].max(-1)[ran]  # Rows it ran on.
    playing = learner.sum(-1)[ran]
    np.testing.assert_array_equal(
        batch, [sizes[sizes >= count].min() for count in playing])
    used.update(batch.tolist())
  assert used == set(sizes.tolist())  # Every size served some turn.


def test_a_mix_plays_the_first_games_in_self_play():
  game = games.make("tic_tac_toe")
  episodes = jax.jit(lambda key: rollout.rollout(
      game, stand_ins.random_policy, stand_ins.render_phrase_ids, {"p_invalid": 0.0}, key, 64,
      opponent=opponents.uniform_random, self_play_games=32))(jax.random.key(6))
  seats = np.asarray(episodes.learner_seat)
  assert (seats[:32] == -1).all() and set(np.unique(seats[32:])) == {0, 1}
  learner, active = np.asarray(episodes.learner), np.asarray(episodes.active)
  np.testing.assert_array_equal(learner[:, :32], active[:, :32])  # Both seats are the learner's.
  np.testing.assert_array_equal(learner[:, 32:], active[:, 32:] & (
      np.asarray(episodes.player)[:, 32:] == seats[None, 32:]))


def test_frozen_opponent_seats_and_groups():
  game = games.make("tic_tac_toe")
  episodes = _play(game, {"p_invalid": 0.0}, jax.random.key(3), 32, frozen=True, group_size=4)
  seats = np.asarray(episodes.learner_seat)
  assert set(np.unique(seats)) == {0, 1}  # Drawn, not -1 (self-play)...
  assert (seats.reshape(-1, 4) == seats[::4, None]).all()  # ...once per group.
  learner, active = np.asarray(episodes.learner), np.asarray(episodes.active)
  np.testing.assert_array_equal(learner, active & (np.asarray(episodes.player) == seats[None]))
  samples = rollout.to_samples(episodes, game_kind=0, group_size=4)
  np.testing.assert_array_equal(samples.outcomes.group, samples.outcomes.game_index // 4)


def test_each_population_member_plays_its_own_games():
  # Member 0 always answers legally, member 1 never: the games member 1 sits in end on its first
  # turn with its invalid answer, member 0's go on; the learner's games are played by `params`.
  game = games.make("tic_tac_toe")
  pool = {"p_invalid": jnp.asarray([0.0, 1.0])}
  members = jnp.asarray([0, 1] * 16)
  episodes = jax.jit(lambda key: rollout.rollout(
      game, stand_ins.random_policy, stand_ins.render_phrase_ids, {"p_invalid": 0.0}, key, 32,
      opponent_params=pool, opponent_members=members))(jax.random.key(5))
  seats = np.asarray(episodes.learner_seat)
  assert set(np.unique(seats)) == {0, 1}
  player, active, valid = (np.asarray(x) for x in (episodes.player, episodes.active,
                                                   episodes.valid))
  opponent_turns = active & (player != seats[None])
  by_member_1 = opponent_turns & (np.asarray(members) == 1)[None]
  assert by_member_1.any() and not valid[by_member_1].any()
  assert valid[opponent_turns & (np.asarray(members) == 0)[None]].all()
  assert valid[active & (player == seats[None])].all()  # The learner never answers invalidly.
  forfeited = np.asarray(episodes.invalid)
  np.testing.assert_array_equal(forfeited, np.asarray(members) == 1)
  # With a fixed opponent too, member 2 (after the two snapshots) is the fixed opponent: its
  # games are played by `opponent` (here one that always answers an illegal move).
  always_illegal = lambda state, key: jnp.int32(games.INVALID_ACTION)
  members = jnp.asarray([0, 2] * 16)
  episodes = jax.jit(lambda key: rollout.rollout(
      game, stand_ins.random_policy, stand_ins.render_phrase_ids, {"p_invalid": 0.0}, key, 32,
      opponent_params=pool, opponent_members=members, opponent=always_illegal))(
          jax.random.key(5))
  np.testing.assert_array_equal(np.asarray(episodes.invalid), np.asarray(members) == 2)
  learner = np.asarray(episodes.learner)
  np.testing.assert_array_equal(np.asarray(episodes.valid)[learner], True)
  with pytest.raises(ValueError, match="give its stacked opponent_params"):
    rollout.rollout(game, stand_ins.random_policy, stand_ins.render_phrase_ids, {},
                    jax.random.key(0), 2, opponent_members=members[:2])


def test_groups_share_initial_state():
  if "kuhn_poker" not in games.registered_names():
    pytest.skip("kuhn_poker not registered")
  game = games.make("kuhn_poker")
  episodes = _play(game, {"p_invalid": 0.0}, jax.random.key(4), 32, group_size=4)
  first_prompts = np.asarray(episodes.prompt_tokens[0]).reshape(8, 4, -1)
  assert (first_prompts == first_prompts[:, :1]).all()


def test_concat_keeps_every_row_and_keeps_games_apart():
  game = games.make("tic_tac_toe")
  a = rollout.to_samples(_play(game, {"p_invalid": 0.3}, jax.random.key(5), 8), 0, group_size=2)
  b = rollout.to_samples(_play(game, {"p_invalid": 0.3}, jax.random.key(6), 8), 1, group_size=2)
  merged = rollout.concat([a, b])
  rows = a.outcomes.mask.shape[0]
  joined = lambda x, y: np.concatenate([np.asarray(x), np.asarray(y)])
  for name in ("prompt_tokens", "response_tokens", "response_logprobs", "valid", "action"):
    np.testing.assert_array_equal(getattr(merged, name), joined(getattr(a, name), getattr(b, name)))
  for name in ("reward", "role", "game_kind", "turn_index", "mask"):
    np.testing.assert_array_equal(getattr(merged.outcomes, name),
                                  joined(getattr(a.outcomes, name), getattr(b.outcomes, name)))
  # Ids are shifted by the rows before each set: unique across sets, in [0, total rows).
  for name in ("game_index", "group"):
    np.testing.assert_array_equal(getattr(merged.outcomes, name),
                                  joined(getattr(a.outcomes, name), getattr(b.outcomes, name) + rows))
    assert np.asarray(getattr(merged.outcomes, name)).max() < 2 * rows
