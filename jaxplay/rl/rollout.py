"""Compiled multi-turn self-play: one `lax.scan` over turns renders, acts, parses and steps games.

The rollout is game- and policy-agnostic. A `Policy` turns a batch of rendered prompts into actions
(free-text sampling + parsing, or action scoring); seats are filled by the learner, a frozen copy of
earlier params, members of a population of past params (rl/population.py), or a fixed opponent
from games/opponents.py. `to_samples` flattens the turns to
rows and `concat` joins the game kinds: the train step takes every row and draws its own uniform
subsample of the ones with a nonzero advantage (train_step.subsample), never a fixed cut.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from games import api
from jaxplay import sharding
from jaxplay.rl import advantages


class Act(NamedTuple):
  """A policy's output for a batch of B prompts (R = max response length)."""

  action: jax.Array  # int32 [B], api.INVALID_ACTION when unparseable.
  response_tokens: jax.Array  # int32 [B, R]
  response_logprobs: jax.Array  # float32 [B, R], log-probs of the sampled tokens.
  response_lengths: jax.Array  # int32 [B]
  # Free text only: the normalised \boxed{} content, uint8 [B, W], and its length int32 [B]
  # (-1 without a closed box), which a task (games/task.py) reads with the game state.
  answer: jax.Array | None = None
  answer_length: jax.Array | None = None


# policy(params, prompt_tokens_BP, prompt_lengths_B, legal_mask_BA, key) -> Act
Policy = Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array], Act]
# render_prompt(phrase_ids_K) -> (tokens_P, length), left-padded.
RenderPrompt = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
Opponent = Callable[[api.State, jax.Array], jax.Array]


@struct.dataclass
class Episodes:
  """Per turn-sample fields have leading [T, B] (turns, games); per game fields [B]."""

  prompt_tokens: jax.Array  # int32 [T, B, P]
  prompt_lengths: jax.Array  # int32 [T, B]
  response_tokens: jax.Array  # int32 [T, B, R]
  response_logprobs: jax.Array  # float32 [T, B, R]
  response_lengths: jax.Array  # int32 [T, B]
  player: jax.Array  # int32 [T, B], the acting player.
  active: jax.Array  # bool [T, B], the game was live at this turn.
  learner: jax.Array  # bool [T, B], the learner acted (a training sample).
  valid: jax.Array  # bool [T, B], the answer parsed to a legal action.
  action: jax.Array  # int32 [T, B], the action played (INVALID_ACTION when unparseable).
  legal_action_mask: jax.Array  # bool [T, B, A]
  returns: jax.Array  # float32 [B, num_players]
  invalid: jax.Array  # bool [B], the game ended on an invalid answer.
  num_turns: jax.Array  # int32 [B]
  learner_seat: jax.Array  # int32 [B], -1 in self-play (both seats).
  final_state: api.State


def rollout(game: api.Game, policy: Policy, render_prompt: RenderPrompt, params: Any,
            key: jax.Array, batch: int, opponent_params: Any = None,
            opponent: Opponent | None = None, group_size: int = 1,
            seats: jax.Array | None = None, self_play_games: int = 0,
            rows_sharding: jax.sharding.Sharding | None = None,
            opponent_members: jax.Array | None = None,
            opponent_policy: Policy | None = None, batch_halvings: int = 1) -> Episodes:
  """Plays `batch` games of `game` to the end (jit it with game/policy/... static).

  Self-play when neither `opponent_params` (a frozen learner copy) nor `opponent` is given;
  otherwise the learner's seat is drawn per group (or given as `seats`, int32 [batch]) and only
  its turns are training samples, except in the first `self_play_games` games, played in
  self-play. With `opponent_members` (int32 [batch], each game's member), `opponent_params` is a
  population: its leaves stacked [K, ...], member k playing the games where opponent_members == k
  through `opponent_policy(member_params, ...)` (default `policy`; e.g. one that merges a LoRA
  snapshot into the base weights), and `opponent`, if given, the games of member K; a member
  without games costs nothing.
  Consecutive blocks of `group_size` games share their initial state and the learner's seat
  (GRPO/RLOO groups: each compares games that start alike).
  `rows_sharding` splits the games over devices (each plays its own); None leaves it to XLA.
  The model runs on the live rows gathered into the smallest of batch, batch / 2, ...,
  batch / 2**`batch_halvings` that holds them (each size compiles the policy once more).
  """
  if opponent_params is not None and opponent is not None and opponent_members is None:
    raise ValueError("Give either opponent_params (frozen copy) or opponent (fixed policy).")
  if opponent_members is not None and opponent_params is None:
    raise ValueError("opponent_members index a population: give its stacked opponent_params.")
  if batch % group_size:
    raise ValueError(f"batch {batch} is not a multiple of group_size {group_size}.")
  init_key, seat_key, play_key = jax.random.split(key, 3)
  init_keys = jnp.repeat(jax.random.split(init_key, batch // group_size), group_size, axis=0)
  states = sharding.constrain(jax.vmap(game.init)(init_keys), rows_sharding)
  self_play = opponent_params is None and opponent is None
  if seats is None:
    seats = jnp.repeat(jax.random.randint(seat_key, (batch // group_size,), 0, game.num_players),
                       group_size)
  self_play_B = self_play | (jnp.arange(batch) < self_play_games)
  learner_seat = jnp.where(self_play_B, -1, seats).astype(jnp.int32)

  def turn(states: api.State, key: jax.Array):
    policy_key, opponent_key, step_key = jax.random.split(key, 3)
    phrase_ids = jax.vmap(game.render)(states)
    prompt_tokens, prompt_lengths = jax.vmap(render_prompt)(phrase_ids)
    learner_turn = self_play_B | (states.current_player == learner_seat)
    act_with = lambda pi, p, rows, k: _act_on_rows(pi, p, prompt_tokens, prompt_lengths, states,
                                                   rows, k, batch_halvings)
    act = act_with(policy, params, learner_turn, policy_key)
    if opponent_members is not None:
      def member_act(act, index_and_params):
        index, member_params = index_and_params
        rows = ~learner_turn & (opponent_members == index)
        other = act_with(opponent_policy or policy, member_params, rows,
                         jax.random.fold_in(opponent_key, index))
        return jax.tree.map(lambda a, b: _rows_where(rows, b, a), act, other), None
      size = jax.tree.leaves(opponent_params)[0].shape[0]
      act, _ = jax.lax.scan(member_act, act, (jnp.arange(size), opponent_params))
      if opponent is not None:
        fixed = jax.vmap(opponent)(states, jax.random.split(opponent_key, batch))
        rows = ~learner_turn & (opponent_members == size)
        act = act._replace(action=jnp.where(rows, fixed, act.action))
    elif opponent_params is not None:
      other = act_with(policy, opponent_params, ~learner_turn, opponent_key)
      act = jax.tree.map(lambda a, b: _rows_where(learner_turn, a, b), act, other)
    elif opponent is not None:
      fixed = jax.vmap(opponent)(states, jax.random.split(opponent_key, batch))
      act = act._replace(action=jnp.where(learner_turn, act.action, fixed))
    if game.free_answer:  # A task: the verdict of the answer is the action.
      if act.answer is None:
        raise ValueError(f"{game.name} reads free-text answers: it needs a text policy.")
      act = act._replace(action=jax.vmap(game.read_answer)(states, act.answer,
                                                           act.answer_length))
    active = ~states.terminated
    next_states = jax.vmap(game.step)(states, act.action, jax.random.split(step_key, batch))
    record = dict(prompt_tokens=prompt_tokens, prompt_lengths=prompt_lengths,
                  response_tokens=act.response_tokens, response_logprobs=act.response_logprobs,
                  response_lengths=act.response_lengths, player=states.current_player,
                  active=active, learner=active & learner_turn,
                  valid=active & ~next_states.invalid, action=act.action,
                  legal_action_mask=states.legal_action_mask)
    return sharding.constrain(next_states, rows_sharding), record

  final, per_turn = jax.lax.scan(turn, states, jax.random.split(play_key, game.max_turns))
  return Episodes(**per_turn, returns=final.rewards, invalid=final.invalid,
                  num_turns=final.turn, learner_seat=learner_seat, final_state=final)


def _act_on_rows(policy: Policy, params, prompt_tokens, prompt_lengths, states: api.State,
                 rows_B: jax.Array, key: jax.Array, halvings: int) -> Act:
  """The policy's Act where `rows_B` (bool [B]) and the game goes on; other rows get no legal
  action (free text then stops them after one token). The model runs on as few rows as it can:
  none when no row plays (an all-padding Act: the turns of finished games, and a fixed opponent's
  turns when every game seats the learner alike, cost nothing), else the playing rows gathered
  into the smallest of B, B // 2, ..., B // 2**halvings rows that holds them (the learner's turns
  against a fixed opponent in half of the games, the last turns of games that end at different
  times)."""
  legal = states.legal_action_mask & (rows_B & ~states.terminated)[:, None]
  playing = legal.any(-1)
  run = lambda rows: policy(params, prompt_tokens[rows], prompt_lengths[rows], legal[rows], key)
  every = lambda: run(slice(None))
  skip = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(every))
  batch = playing.shape[0]
  sizes = sorted({batch >> k for k in range(1, halvings + 1)} - {0})  # Ascending, below B.

  def gathered(size: int):
    def act():
      rows = jnp.argsort(~playing, stable=True)[:size]  # The playing rows first, in order.
      return jax.tree.map(lambda empty, part: empty.at[rows].set(part), skip(), run(rows))
    return act

  count = playing.sum()
  branch = jnp.where(count > 0, 1 + (count > jnp.asarray(sizes, jnp.int32)).sum(), 0)
  return jax.lax.switch(branch, (skip, *map(gathered, sizes), every))


def join_games(stacked: Episodes) -> Episodes:
  """Episodes stacked on a leading axis (e.g. by `lax.map`: [S, T, B, ...] per turn, [S, B, ...]
  per game) as one batch of S * B games."""
  per_game = lambda x: x.reshape((-1,) + x.shape[2:])
  per_turn = lambda x: jnp.moveaxis(x, 0, 1).reshape((x.shape[1], -1) + x.shape[3:])
  turn_fields = {f.name for f in dataclasses.fields(Episodes)} - {
      "returns", "invalid", "num_turns", "learner_seat", "final_state"}
  return Episodes(**{f.name: jax.tree.map(per_turn if f.name in turn_fields else per_game,
                                          getattr(stacked, f.name))
                     for f in dataclasses.fields(Episodes)})


def _rows_where(rows: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.where(rows.reshape(rows.shape + (1,) * (a.ndim - 1)), a, b)


@struct.dataclass
class TurnSamples:
  """Flat turn-samples [N] for the train step; rows with mask False are padding."""

  prompt_tokens: jax.Array  # int32 [N, P]
  prompt_lengths: jax.Array  # int32 [N]
  response_tokens: jax.Array  # int32 [N, R]
  response_logprobs: jax.Array  # float32 [N, R]
  response_lengths: jax.Array  # int32 [N]
  valid: jax.Array  # bool [N]
  action: jax.Array  # int32 [N]
  legal_action_mask: jax.Array  # bool [N, A], padded with False to the mix's largest A.
  # reward, role, game kind, game and group ids, turn index and the sample mask, as the
  # advantage estimators take them.
  outcomes: advantages.Outcomes


def to_samples(episodes: Episodes, game_kind: int, group_size: int = 1,
               num_actions: int | None = None) -> TurnSamples:
  """Flattens [T, B] turn records to [T * B] samples; the learner's live turns are unmasked.

  Legal masks are padded with False to `num_actions` (so several games concatenate).
  """
  num_turns, batch = episodes.active.shape
  flat = lambda x: x.reshape((num_turns * batch,) + x.shape[2:])
  game_index = jnp.broadcast_to(jnp.arange(batch), (num_turns, batch))
  turn_index = jnp.broadcast_to(jnp.arange(num_turns)[:, None], (num_turns, batch))
  reward = jnp.take_along_axis(episodes.returns[None], episodes.player[..., None], axis=-1)[..., 0]
  legal = episodes.legal_action_mask
  if num_actions is not None:
    legal = jnp.pad(legal, ((0, 0), (0, 0), (0, num_actions - legal.shape[-1])))
  return TurnSamples(
      prompt_tokens=flat(episodes.prompt_tokens), prompt_lengths=flat(episodes.prompt_lengths),
      response_tokens=flat(episodes.response_tokens),
      response_logprobs=flat(episodes.response_logprobs),
      response_lengths=flat(episodes.response_lengths),
      valid=flat(episodes.valid), action=flat(episodes.action), legal_action_mask=flat(legal),
      outcomes=advantages.Outcomes(
          reward=flat(reward), role=flat(episodes.player),
          game_kind=jnp.full((num_turns * batch,), game_kind, jnp.int32),
          game_index=flat(game_index).astype(jnp.int32),
          group=flat(game_index // group_size).astype(jnp.int32),
          turn_index=flat(turn_index).astype(jnp.int32), mask=flat(episodes.learner)))


def pad_prompts(samples: TurnSamples, width: int, pad_id: int) -> TurnSamples:
  """Left-pads the (left-padded) prompts to `width` tokens, so several games concatenate."""
  extra = width - samples.prompt_tokens.shape[1]
  return samples.replace(prompt_tokens=jnp.pad(samples.prompt_tokens, ((0, 0), (extra, 0)),
                                               constant_values=pad_id))


def concat(samples: list[TurnSamples]) -> TurnSamples:
  """Concatenates the sample sets of several game kinds into one train batch, every row kept.

  Each set's game and group ids are shifted by the rows before it, so they stay unique across
  the sets and lie in [0, total rows), the range the advantage estimators expect.
  """
  shifted, offset = [], 0
  for part in samples:
    outcomes = part.outcomes
    shifted.append(part.replace(outcomes=outcomes.replace(game_index=outcomes.game_index + offset,
                                                          group=outcomes.group + offset)))
    offset += outcomes.mask.shape[0]
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *shifted)
