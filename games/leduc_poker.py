"""Leduc Hold'em, as OpenSpiel's "leduc_poker": six cards (J, Q, K in two suits), ante 1 each.

Each player gets one private card; two betting rounds follow, player 0 acting first in both, and
one public card is revealed between them. A bet or raise is 2 chips in round 1 and 4 in round 2
(a raise first matches the bet); each round allows at most two of them (a bet and one raise). A
fold loses the chips put in; at showdown a private card pairing the public card wins, else the
higher rank wins, and equal ranks split the pot. Rewards are the chips won (at most +-13).

Actions: fold, call, raise when facing a bet; check, bet otherwise. OpenSpiel's ids are
fold = 0, call = 1, raise = 2, and its call/raise also stand for our check/bet: TO_OPENSPIEL.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api

RANKS = ("J", "Q", "K")  # Card c (0..5) has rank c // 2; the suit never matters.
FOLD, CALL, RAISE, CHECK, BET = range(5)
ACTIONS = ("fold", "call", "raise", "check", "bet")
TO_OPENSPIEL = (0, 1, 2, 1, 2)
NO_ACTION = -1
RAISE_SIZES = (2, 4)  # per round
MAX_RAISES = 2  # bets and raises per round
MAX_MOVES = 4  # per round: check, bet, raise, call
_DEALS = np.array(list(itertools.permutations(range(6), 3)), np.int32)  # [120, 3]


@struct.dataclass
class Table:
  cards: jax.Array  # int32 [3]: player 0's card, player 1's card, the public card (0..5).
  history: jax.Array  # int32 [2, MAX_MOVES]: actions of each round, NO_ACTION-padded.
  num_moves: jax.Array  # int32 []: actions taken in the current round.
  round: jax.Array  # int32 []: 0 or 1; the public card is shown in round 1.
  contributions: jax.Array  # int32 [2]: chips each player has put in the pot, ante included.


def hand_strength(cards):
  """Showdown strength int[..., 2] of both players from cards int[..., 3] (numpy or jax)."""
  ranks = cards // 2
  return (ranks[..., :2] == ranks[..., 2:]) * 3 + ranks[..., :2]


def information_set(state: api.State) -> jax.Array:
  """int32 id of the mover's information set: own rank, public rank once shown, both histories.

  Digits: rank (3) x public (4: hidden, J, Q, K) x 8 history slots in base 6 (action + 1).
  """
  data = state.data
  ranks = data.cards // 2
  public = jnp.where(data.round == 1, ranks[2] + 1, 0)
  slots = (data.history.reshape(-1) + 1) * 6 ** jnp.arange(2 * MAX_MOVES)
  return ((ranks[state.current_player] * 4 + public) * 6 ** (2 * MAX_MOVES)
          + slots.sum()).astype(jnp.int32)


def _intro(player: int) -> str:
  return (f"You are Player {player} in a game of Leduc Hold'em poker.\n"
          "Rules:\n"
          "- The deck has six cards: two each of J, Q and K (J is lowest, K is highest).\n"
          "- Both players ante 1 chip and get one private card. There are two betting rounds; "
          "one public card is revealed after the first. Player 0 acts first in each round.\n"
          "- With no bet to match you may [check] or [bet]; facing a bet you may [fold], [call] "
          "or [raise].\n"
          "- A bet or raise is 2 chips in round 1 and 4 chips in round 2 (a raise first matches "
          "the bet). Each round allows one bet and one raise.\n"
          "- At showdown a private card of the same rank as the public card wins; otherwise the "
          "higher card wins, and equal ranks split the pot. A fold gives the pot to the other "
          "player.\n")


def _chips_text(mine: int, theirs: int) -> str:
  return f"Chips in the pot: you {mine}, opponent {theirs}.\n"


def _move_text(player: int, action: int) -> str:
  return f"Player {player}: {ACTIONS[action]}"


_CHIPS = tuple(range(1, 14, 2))  # Every possible contribution: 1 + 2 * bets of 1 or 2 units.
_HIDDEN = "Public card: not revealed yet\n"
_ROUND_1 = "Round 1 actions: "
_ROUND_2 = "\nRound 2 actions: "
_NONE = "none"
_LEGAL = "\nYour legal actions: "
_GAME_OVER = "\nThe game is over."


@api.register
@dataclasses.dataclass(frozen=True)
class LeducPoker(api.Game):
  name = "leduc_poker"

  @property
  def actions(self) -> tuple[str, ...]:
    return ACTIONS

  @property
  def max_turns(self) -> int:
    return 2 * MAX_MOVES

  @property
  def phrases(self) -> tuple[str, ...]:
    moves = tuple(_move_text(p, a) for p in range(2) for a in range(len(ACTIONS)))
    return ("", _intro(0), _intro(1), *(f"Your card: {r}\n" for r in RANKS), _HIDDEN,
            *(f"Public card: {r}\n" for r in RANKS),
            *(_chips_text(a, b) for a in _CHIPS for b in _CHIPS), _ROUND_1, _ROUND_2, _NONE,
            *moves, *(", " + m for m in moves), _LEGAL, _GAME_OVER,
            *(f"[{a}]" for a in ACTIONS), *(f", [{a}]" for a in ACTIONS))

  @property
  def max_observation_phrases(self) -> int:
    # intro, card, public card, chips, two rounds (header + moves), legal header, legal actions
    return 4 + 2 * (1 + MAX_MOVES) + 1 + len(ACTIONS)

  def _init(self, key: jax.Array) -> api.State:
    cards = jnp.asarray(_DEALS)[jax.random.randint(key, (), 0, len(_DEALS))]
    data = Table(cards=cards, history=jnp.full((2, MAX_MOVES), NO_ACTION, jnp.int32),
                 num_moves=jnp.int32(0), round=jnp.int32(0),
                 contributions=jnp.ones((2,), jnp.int32))
    return api.new_state(self, data, _legal_mask(jnp.bool_(False), jnp.bool_(True)))

  def _step(self, state: api.State, action: jax.Array, key: jax.Array) -> api.State:
    del key
    data, player = state.data, state.current_player
    history = data.history.at[data.round, data.num_moves].set(action)
    to_call = data.contributions[1 - player] - data.contributions[player]
    raising = (action == RAISE) | (action == BET)
    added = jnp.where(action == CALL, to_call, 0)
    added += jnp.where(raising, to_call + jnp.asarray(RAISE_SIZES)[data.round], 0)
    contributions = data.contributions.at[player].add(added)
    round_over = (action == CALL) | ((action == CHECK) & (data.num_moves > 0))
    next_round = round_over & (data.round == 0)
    game_over = (action == FOLD) | (round_over & (data.round == 1))
    strength = hand_strength(data.cards)
    showdown = jnp.sign(strength[0] - strength[1]) * contributions[1]
    folder_sign = jnp.where(player == 0, -1, 1)  # Player 0's sign of the folder's chips.
    won_by_0 = jnp.where(action == FOLD, folder_sign * contributions[player], showdown)
    rounds = data.round + next_round
    num_moves = jnp.where(next_round, 0, data.num_moves + 1)
    raises = ((history[rounds] == RAISE) | (history[rounds] == BET)).sum()
    next_player = jnp.where(next_round, 0, 1 - player)
    facing_bet = contributions[1 - next_player] > contributions[next_player]
    rewards = jnp.stack([won_by_0, -won_by_0]).astype(jnp.float32)
    return state.replace(
        data=Table(cards=data.cards, history=history, num_moves=num_moves, round=rounds,
                   contributions=contributions),
        current_player=next_player.astype(jnp.int32),
        legal_action_mask=_legal_mask(facing_bet, raises < MAX_RAISES) & ~game_over,
        rewards=jnp.where(game_over, rewards, 0.0),
        terminated=game_over,
    )

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    ids = {p: i for i, p in enumerate(self.phrases)}
    data = state.data
    num_actions = len(ACTIONS)
    chips = (data.contributions - 1) // 2
    chips_id = ids[_chips_text(1, 1)] + chips[player] * len(_CHIPS) + chips[1 - player]
    public_id = jnp.where(data.round == 1, ids["Public card: J\n"] + data.cards[2] // 2,
                          ids[_HIDDEN])
    movers = jnp.arange(MAX_MOVES) % 2
    moves = ids[_move_text(0, 0)] + num_actions * movers[None] + data.history  # [round, move]
    moves = jnp.where(jnp.arange(MAX_MOVES) > 0, moves + 2 * num_actions, moves)
    moves = jnp.where(data.history == NO_ACTION, api.PAD_PHRASE, moves)
    moves = moves.at[:, 0].set(jnp.where(data.history[:, 0] == NO_ACTION, ids[_NONE], moves[:, 0]))
    round_2 = jnp.concatenate([jnp.atleast_1d(ids[_ROUND_2]), moves[1]])
    round_2 = jnp.where(data.round == 1, round_2, api.PAD_PHRASE)
    legal = state.legal_action_mask
    legal_ids = jnp.where(jnp.arange(num_actions) == jnp.argmax(legal), ids["[fold]"],
                          ids[", [fold]"])
    legal_ids = jnp.where(legal, legal_ids + jnp.arange(num_actions), api.PAD_PHRASE)
    parts = [ids[self.intro(0)] + player, ids["Your card: J\n"] + data.cards[player] // 2,
             public_id, chips_id, ids[_ROUND_1], moves[0], round_2,
             jnp.where(state.terminated, ids[_GAME_OVER], ids[_LEGAL]), legal_ids]
    return jnp.concatenate([jnp.atleast_1d(p) for p in parts]).astype(jnp.int32)

  def intro(self, player: int) -> str:
    return _intro(player)

  def render_text(self, state: api.State, player: int) -> str:
    data = state.data
    cards, contributions = np.asarray(data.cards), np.asarray(data.contributions)
    text = self.intro(player) + f"Your card: {RANKS[cards[player] // 2]}\n"
    text += f"Public card: {RANKS[cards[2] // 2]}\n" if int(data.round) == 1 else _HIDDEN
    text += _chips_text(int(contributions[player]), int(contributions[1 - player]))
    for r, header in enumerate((_ROUND_1, _ROUND_2)[:int(data.round) + 1]):
      played = [int(a) for a in data.history[r] if a != NO_ACTION]
      text += header + (", ".join(_move_text(i % 2, a) for i, a in enumerate(played)) or _NONE)
    if state.terminated:
      return text + _GAME_OVER
    legal = ", ".join(f"[{a}]" for a, ok in zip(ACTIONS, state.legal_action_mask) if ok)
    return text + _LEGAL + legal


def _legal_mask(facing_bet: jax.Array, can_raise: jax.Array) -> jax.Array:
  return jnp.stack([facing_bet, facing_bet, facing_bet & can_raise, ~facing_bet, ~facing_bet])
