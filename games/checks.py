"""Generic checks that every registered game must pass (run by tests/games/test_api.py).

Each check raises AssertionError with a message naming the game and the broken property.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from games import api, opponents


def _flatten_batch(states: api.State) -> api.State:
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), states)


def check_jit_vmap(game: api.Game, batch: int) -> None:
  """init/step compile under jit+vmap at this batch size, and shapes/dtypes are stable."""
  keys = jax.random.split(jax.random.key(0), batch)
  states = jax.jit(jax.vmap(game.init))(keys)
  actions = jnp.argmax(states.legal_action_mask, axis=-1).astype(jnp.int32)
  next_states = jax.jit(jax.vmap(game.step))(states, actions, keys)
  spec = lambda s: jax.tree.map(lambda x: (x.shape, x.dtype), s)
  assert spec(states) == spec(next_states), f"{game.name}: step changed shapes/dtypes"
  assert states.legal_action_mask.shape == (batch, game.num_actions), game.name
  assert states.rewards.shape == (batch, game.num_players), game.name
  assert states.rewards.dtype == jnp.float32, game.name
  for field in ("current_player", "turn"):
    assert getattr(states, field).dtype == jnp.int32, f"{game.name}: {field} not int32"
  for field in ("terminated", "invalid"):
    assert getattr(states, field).dtype == jnp.bool_, f"{game.name}: {field} not bool"


def check_random_playouts(game: api.Game, batch: int = 1024, seed: int = 0) -> None:
  """Random legal play ends within max_turns, masks are non-empty while live, rewards add up."""
  states = _flatten_batch(opponents.random_playouts(game, jax.random.key(seed), batch))
  states = jax.device_get(states)
  final = jax.tree.map(lambda x: x[-batch:], states)
  assert final.terminated.all(), f"{game.name}: a random playout exceeded max_turns"
  assert (final.turn <= game.max_turns).all(), f"{game.name}: turn counter beyond max_turns"
  assert not final.invalid.any(), f"{game.name}: a legal playout was marked invalid"
  live = ~states.terminated
  assert states.legal_action_mask[live].any(-1).all(), f"{game.name}: empty legal mask"
  assert (states.current_player[live] >= 0).all(), game.name
  assert (states.current_player[live] < game.num_players).all(), game.name
  assert (states.rewards[live] == 0).all(), f"{game.name}: rewards before the end"
  if game.zero_sum:
    np.testing.assert_allclose(final.rewards.sum(-1), 0.0, atol=1e-6,
                               err_msg=f"{game.name}: not zero-sum")


def check_terminal_noop(game: api.Game, batch: int = 256, seed: int = 1) -> None:
  """Any action on a terminal state returns it unchanged."""
  trajectory = opponents.random_playouts(game, jax.random.key(seed), batch)
  final = jax.tree.map(lambda x: x[-1], trajectory)
  keys = jax.random.split(jax.random.key(seed + 1), batch)
  for action in (-1, 0, game.num_actions - 1, game.num_actions):
    actions = jnp.full((batch,), action, jnp.int32)
    after = jax.jit(jax.vmap(game.step))(final, actions, keys)
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), final, after)
    assert all(jax.tree.leaves(same)), f"{game.name}: step on a terminal state changed {same}"


def check_invalid_actions(game: api.Game, batch: int = 256, seed: int = 2) -> None:
  """An illegal or unparseable action ends a live game with the configured penalty."""
  trajectory = _flatten_batch(opponents.random_playouts(game, jax.random.key(seed), batch))
  live = ~np.asarray(trajectory.terminated)
  states = jax.tree.map(lambda x: x[live][:batch], trajectory)
  n = states.turn.shape[0]
  # An illegal id where one exists, else -1; out-of-range ids are tried too.
  illegal = jnp.argmin(states.legal_action_mask, axis=-1).astype(jnp.int32)
  illegal = jnp.where(states.legal_action_mask.all(-1), api.INVALID_ACTION, illegal)
  keys = jax.random.split(jax.random.key(seed + 1), n)
  for bad_actions in (illegal, jnp.full((n,), api.INVALID_ACTION), jnp.full((n,), 10**6)):
    for rewards in (api.TRAIN_INVALID_REWARDS, api.EVAL_INVALID_REWARDS):
      variant = dataclasses.replace(game, invalid_rewards=rewards)
      after = jax.jit(jax.vmap(variant.step))(states, bad_actions.astype(jnp.int32), keys)
      assert after.terminated.all() and after.invalid.all(), f"{game.name}: illegal move ignored"
      offender = np.asarray(states.current_player)
      got = np.asarray(after.rewards)
      rows = np.arange(n)
      np.testing.assert_allclose(got[rows, offender], rewards[0], err_msg=game.name)
      if game.num_players == 2:
        np.testing.assert_allclose(got[rows, 1 - offender], rewards[1], err_msg=game.name)


def check_render(game: api.Game, batch: int = 64, seed: int = 3) -> None:
  """Phrase ids are in range and spell the plain-Python reference text, for both players; a
  game's intro (`Game.intro`) is the first phrase of every observation."""
  assert game.phrases[api.PAD_PHRASE] == "", f"{game.name}: phrase 0 must be ''"
  assert len(set(game.phrases)) == len(game.phrases), f"{game.name}: duplicate phrases"
  states = _flatten_batch(opponents.random_playouts(game, jax.random.key(seed), batch))
  render = jax.jit(jax.vmap(game.render, in_axes=(0, None)))
  for player in range(game.num_players):
    ids = np.asarray(render(states, player))
    assert ids.shape[-1] == game.max_observation_phrases, game.name
    assert ((ids >= 0) & (ids < len(game.phrases))).all(), f"{game.name}: phrase id out of range"
    if game.intro(player):  # The intro is a phrase and starts every observation.
      assert game.intro(player) in game.phrases, f"{game.name}: intro({player}) is no phrase"
      first = game.phrases.index(game.intro(player))
      assert (ids[:, 0] == first).all(), f"{game.name}: render's first slot is not intro({player})"
    host_states = jax.device_get(states)
    for i in range(ids.shape[0]):
      state = jax.tree.map(lambda x: x[i], host_states)
      expected = game.render_text(state, player)
      got = game.phrase_text(ids[i])
      assert got == expected, f"{game.name} player {player}:\n{got!r}\n!=\n{expected!r}"


def check_game(game: api.Game) -> None:
  """Runs every generic check."""
  for batch in (1, 1024):
    check_jit_vmap(game, batch)
  check_random_playouts(game)
  check_terminal_noop(game)
  check_invalid_actions(game)
  check_render(game)
