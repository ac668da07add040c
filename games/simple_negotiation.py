"""Simple Negotiation (TextArena's two-resource game): trade Wood and Gold for 10 turns.

Both players start with 10 Wood and 10 Gold; player 0 values Wood 5 and Gold 15, player 1 the
reverse, and each sees only its own values. Players alternate, player 0 first. A move is an offer
`Offer: X Wood -> Y Gold` (the proposer gives X Wood and receives Y Gold) or
`Offer: X Gold -> Y Wood`, X, Y in 1..10, or `Accept` / `Deny` of the other player's standing offer.
An offer stands until it is accepted, denied or replaced by a new offer (a counter-offer).

Legality (as in TextArena): an offer needs only the proposer to hold what it gives; the receiver's
holdings are checked at acceptance: `Accept` is legal only when the receiver holds what the offer
asks of it (the proposer still holds its side: nothing changes between proposal and reply).
After 10 turns a standing offer lapses; each player's gain is its inventory value now minus at the
start, by its own values, and the larger gain wins (+1/-1), equal gains draw (0). With these values
gain0 - gain1 = 20 * (goods player 0 gained), so whoever ends with more units wins.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api

RESOURCES = ("Wood", "Gold")
VALUES = np.array([[5, 15], [15, 5]], np.int32)  # [player, resource]
START_GOODS = 10
MAX_QUANTITY = 10  # X and Y range over 1..MAX_QUANTITY.
NUM_TURNS = 10
ACCEPT, DENY, FIRST_OFFER = 0, 1, 2
NO_ACTION = -1  # No standing offer / history slot not played yet.

# Offers in id order: (resource the proposer gives, quantity given X, quantity received Y).
_OFFERS = [(give, x, y) for give in range(2)
           for x in range(1, MAX_QUANTITY + 1) for y in range(1, MAX_QUANTITY + 1)]
ACTIONS = ("Accept", "Deny",
           *(f"Offer: {x} {RESOURCES[g]} -> {y} {RESOURCES[1 - g]}" for g, x, y in _OFFERS))
# Per action id (zeros for Accept/Deny): int32 [num_actions] each.
OFFER_GIVE, OFFER_X, OFFER_Y = np.array([(0, 0, 0)] * FIRST_OFFER + _OFFERS, np.int32).T
# The proposer's change of (Wood, Gold) when the offer is traded: int32 [num_actions, resource].
TRADES = np.where(np.arange(2) == OFFER_GIVE[:, None], -OFFER_X[:, None], OFFER_Y[:, None])


@struct.dataclass
class Market:
  goods: jax.Array  # int32 [player, resource]
  offer: jax.Array  # int32 [], the standing offer's action id or NO_ACTION (by the last mover).
  history: jax.Array  # int32 [NUM_TURNS], action ids in turn order, NO_ACTION once past the last.


def _intro(player: int) -> str:
  return (f"You are Player {player} in the Negotiation Game (Player 0 moves first).\n"
          f"Both players start with {START_GOODS} Wood and {START_GOODS} Gold; each player has its "
          "own values for the resources and sees only its own.\n"
          f"Players take turns; the game lasts {NUM_TURNS} turns in total. On your turn, make a "
          "trade offer, or accept or deny the other player's standing offer.\n"
          "[Offer: X Wood -> Y Gold] means you give X Wood and receive Y Gold, and "
          "[Offer: X Gold -> Y Wood] means you give X Gold and receive Y Wood "
          f"(X and Y from 1 to {MAX_QUANTITY}); you must hold what you give. A new offer replaces "
          "the standing one. An accepted offer is traded at once; you can accept only if you hold "
          "what it asks of you.\n"
          "At the end, the player whose inventory value grew more wins.\n"
          "Your resources:\n\t+ [Wood]  Qty: ")


def _wood_value(player: int) -> str:
  return f"  Value: {VALUES[player, 0]}\n\t+ [Gold]  Qty: "


def _gold_value(player: int) -> str:
  return f"  Value: {VALUES[player, 1]}\nYour inventory value: "


_START_VALUE = f" (it was {START_GOODS * VALUES[0].sum()} at the start).\nHistory:"
_NO_HISTORY = " none"
_OFFER_NONE = "\nStanding offer: none."
# Indexed [viewer is the receiver, viewer is the proposer]: the offer text, then X, Y and resources.
_OFFER_HEAD = ("\nStanding offer from the other player: ", "\nYour standing offer: ")
_OFFER_IF = (" (if you accept, you receive ", " (if the other player accepts, you give ")
_OFFER_AND = (tuple(f" {r} and give " for r in RESOURCES),
              tuple(f" {r} and receive " for r in RESOURCES))
_CLOSE = tuple(f" {r})." for r in RESOURCES)
_TURNS_LEFT = "\nTurns left (this one included): "
_AVAILABLE = "\nAvailable moves: "
_WAITING = "\nIt is the other player's turn."
_GAME_OVER = "\nThe game is over."
_OFFER_ITEM = tuple(f"[Offer: X {r} -> Y {RESOURCES[1 - i]}] with X from 1 to "
                    for i, r in enumerate(RESOURCES))
_Y_RANGE = f" and Y from 1 to {MAX_QUANTITY}"
_MAX_NUMBER = 2 * START_GOODS * int(VALUES.sum(-1).max())  # Largest inventory value (all goods).

_PHRASES = ("", _intro(0), _intro(1), _wood_value(0), _wood_value(1), _gold_value(0),
            _gold_value(1), _START_VALUE, _NO_HISTORY,
            *(f"\nTurn {t + 1}, Player {t % 2}: " for t in range(NUM_TURNS)),
            *(f"[{a}]" for a in ACTIONS), *(str(n) for n in range(_MAX_NUMBER + 1)),
            _OFFER_NONE, *_OFFER_HEAD, *_OFFER_IF, *_OFFER_AND[0], *_OFFER_AND[1], *_CLOSE,
            _TURNS_LEFT, _AVAILABLE, _WAITING, _GAME_OVER,
            ", [Deny]", *_OFFER_ITEM, *(", " + item for item in _OFFER_ITEM), _Y_RANGE)
_IDS = {p: i for i, p in enumerate(_PHRASES)}


def _legal_actions(data: Market, player: jax.Array) -> jax.Array:
  """bool[num_actions]: offers the player can pay for; Accept/Deny of a standing offer."""
  goods = data.goods[player]
  trades = jnp.asarray(TRADES)
  can_pay = (goods + trades >= 0).all(-1)
  has_offer = data.offer != NO_ACTION
  can_accept = has_offer & (goods - trades[jnp.maximum(data.offer, 0)] >= 0).all()
  return can_pay.at[ACCEPT].set(can_accept).at[DENY].set(has_offer)


@api.register
@dataclasses.dataclass(frozen=True)
class SimpleNegotiation(api.Game):
  name = "simple_negotiation"

  @property
  def actions(self) -> tuple[str, ...]:
    return ACTIONS

  @property
  def max_turns(self) -> int:
    return NUM_TURNS

  @property
  def phrases(self) -> tuple[str, ...]:
    return _PHRASES

  @property
  def max_observation_phrases(self) -> int:
    # Resources and value (7), history (1 + 2 per turn), standing offer (7), turns left (2),
    # available moves (1 + Accept, Deny, 3 per offer kind).
    return 7 + 1 + 2 * NUM_TURNS + 7 + 2 + 1 + 2 + 3 * len(RESOURCES)

  def _init(self, key: jax.Array) -> api.State:
    del key
    data = Market(goods=jnp.full((2, 2), START_GOODS, jnp.int32), offer=jnp.int32(NO_ACTION),
                  history=jnp.full((NUM_TURNS,), NO_ACTION, jnp.int32))
    return api.new_state(self, data, _legal_actions(data, jnp.int32(0)))

  def _step(self, state: api.State, action: jax.Array, key: jax.Array) -> api.State:
    del key
    data = state.data
    player = state.current_player
    proposer = 1 - player
    trade = jnp.where(action == ACCEPT, jnp.asarray(TRADES)[jnp.maximum(data.offer, 0)], 0)
    goods = data.goods.at[proposer].add(trade).at[player].add(-trade)
    data = Market(goods=goods, offer=jnp.where(action >= FIRST_OFFER, action, NO_ACTION),
                  history=data.history.at[state.turn].set(action))
    done = state.turn + 1 >= NUM_TURNS
    gains = ((goods - START_GOODS) * jnp.asarray(VALUES)).sum(-1)  # [player]
    rewards = jnp.where(done, jnp.sign(gains - gains[::-1]), 0).astype(jnp.float32)
    return state.replace(data=data, current_player=proposer, rewards=rewards, terminated=done,
                         legal_action_mask=_legal_actions(data, proposer) & ~done)

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    ids, data = _IDS, state.data
    number = lambda n: ids["0"] + n
    pick = lambda cond, phrase_id: jnp.where(cond, phrase_id, api.PAD_PHRASE)
    goods = data.goods[player]
    head = [ids[self.intro(0)] + player, number(goods[0]), ids[_wood_value(0)] + player,
            number(goods[1]), ids[_gold_value(0)] + player,
            number(goods @ jnp.asarray(VALUES)[player]), ids[_START_VALUE]]
    played = data.history != NO_ACTION
    lines = jnp.stack([ids["\nTurn 1, Player 0: "] + jnp.arange(NUM_TURNS),
                       ids["[Accept]"] + data.history], -1)  # [turn, 2]
    history = [pick(~played.any(), ids[_NO_HISTORY]), *pick(played[:, None], lines).reshape(-1)]
    # The standing offer is always by the player who moved last.
    has_offer, offer = data.offer != NO_ACTION, jnp.maximum(data.offer, 0)
    view = (player != state.current_player).astype(jnp.int32)  # 1: the viewer made the offer.
    give = jnp.asarray(OFFER_GIVE)[offer]
    standing = [jnp.where(has_offer, ids[_OFFER_HEAD[0]] + view, ids[_OFFER_NONE]),
                pick(has_offer, ids["[Accept]"] + offer), pick(has_offer, ids[_OFFER_IF[0]] + view),
                pick(has_offer, number(jnp.asarray(OFFER_X)[offer])),
                pick(has_offer, ids[_OFFER_AND[0][0]] + len(RESOURCES) * view + give),
                pick(has_offer, number(jnp.asarray(OFFER_Y)[offer])),
                pick(has_offer, ids[_CLOSE[0]] + 1 - give)]
    to_move = (view == 0) & ~state.terminated
    moves_head = jnp.where(state.terminated, ids[_GAME_OVER],
                           jnp.where(to_move, ids[_AVAILABLE], ids[_WAITING]))
    tail = [ids[_TURNS_LEFT], number(NUM_TURNS - state.turn), moves_head]
    legal = state.legal_action_mask & to_move
    moves = [pick(legal[ACCEPT], ids["[Accept]"]),
             pick(legal[DENY], jnp.where(legal[ACCEPT], ids[", [Deny]"], ids["[Deny]"]))]
    listed = legal[DENY]  # Accept is legal only when Deny is.
    offer_x = jnp.where(legal, jnp.asarray(OFFER_X), 0)
    for resource in range(len(RESOURCES)):
      kind = jnp.asarray(OFFER_GIVE == resource) & (jnp.arange(len(ACTIONS)) >= FIRST_OFFER)
      shown = (legal & kind).any()
      item = jnp.where(listed, ids[", " + _OFFER_ITEM[resource]], ids[_OFFER_ITEM[resource]])
      moves += [pick(shown, item), pick(shown, number(jnp.where(kind, offer_x, 0).max())),
                pick(shown, ids[_Y_RANGE])]
      listed = listed | shown
    return jnp.stack(head + history + standing + tail + moves).astype(jnp.int32)

  def intro(self, player: int) -> str:
    return _intro(player)

  def render_text(self, state: api.State, player: int) -> str:
    goods = np.asarray(state.data.goods)[player]
    values = VALUES[player]
    text = self.intro(player) + f"{goods[0]}  Value: {values[0]}\n\t+ [Gold]  Qty: {goods[1]}"
    text += f"  Value: {values[1]}\nYour inventory value: {int(goods @ values)}"
    text += f" (it was {START_GOODS * values.sum()} at the start).\nHistory:"
    played = [int(a) for a in state.data.history if a != NO_ACTION]
    text += "".join(f"\nTurn {t + 1}, Player {t % 2}: [{ACTIONS[a]}]"
                    for t, a in enumerate(played)) or " none"
    offer, mover = int(state.data.offer), int(state.current_player)
    if offer == NO_ACTION:
      text += "\nStanding offer: none."
    else:
      pattern = r"Offer: (\d+) (\w+) -> (\d+) (\w+)"
      x, given, y, asked = re.fullmatch(pattern, ACTIONS[offer]).groups()
      if player == mover:
        text += (f"\nStanding offer from the other player: [{ACTIONS[offer]}] "
                 f"(if you accept, you receive {x} {given} and give {y} {asked}).")
      else:
        text += (f"\nYour standing offer: [{ACTIONS[offer]}] "
                 f"(if the other player accepts, you give {x} {given} and receive {y} {asked}).")
    text += f"\nTurns left (this one included): {NUM_TURNS - int(state.turn)}"
    if state.terminated:
      return text + "\nThe game is over."
    if player != mover:
      return text + "\nIt is the other player's turn."
    legal = np.asarray(state.legal_action_mask)
    moves = [f"[{ACTIONS[a]}]" for a in (ACCEPT, DENY) if legal[a]]
    for resource in RESOURCES:
      quantities = [int(re.match(r"Offer: (\d+) (\w+)", ACTIONS[a]).group(1))
                    for a in range(FIRST_OFFER, len(ACTIONS))
                    if legal[a] and ACTIONS[a].split()[2] == resource]
      if quantities:
        other = RESOURCES[1 - RESOURCES.index(resource)]
        moves.append(f"[Offer: X {resource} -> Y {other}] with X from 1 to {max(quantities)} "
                     f"and Y from 1 to {MAX_QUANTITY}")
    return text + "\nAvailable moves: " + ", ".join(moves)
