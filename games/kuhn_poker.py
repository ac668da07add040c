"""Kuhn Poker: J < Q < K, ante 1, one card each, check/bet then call/fold.

`rounds=1` pays the chips won (+-1, +-2). `rounds=N>1` deals afresh each round, alternates the first
player (Player 0 opens round 1), sums the chips and pays +1/-1/0 by the sign of the chip total.
`payoff` chooses explicitly: "chips" (the chip total) or "win" (its sign: +1 to the winner, SPIRAL's
KuhnPoker-v1); "" = chips for one round, win for several. Exploitability (games/exploitability.py)
is always in chips, the standard game's measure of a policy.
`rules=False` leaves the rules paragraph out of the prompt (for models trained from scratch, which
learn the game from rewards and gain nothing from reading its rules).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api

CARDS = ("J", "Q", "K")
CHECK, BET, CALL, FOLD = range(4)
PAYOFFS = ("", "chips", "win")
ACTIONS = ("check", "bet", "call", "fold")
NO_ACTION = -1
# Betting nodes of one round in OpenSpiel's history notation (p = check/fold, b = bet/call):
# the first player acts at "" and "pb", the second player at "p" and "b".
NODES = ("", "p", "b", "pb")
# How a round ended; a result id is winner * 3 + outcome.
SHOWDOWN_1, SHOWDOWN_2, FOLDED = range(3)
_OUTCOME_CHIPS = np.array([1, 2, 1], np.int32)


@struct.dataclass
class Table:
  cards: jax.Array  # int32 [2]: each player's card this round (0=J, 1=Q, 2=K).
  history: jax.Array  # int32 [3]: actions this round, NO_ACTION-padded.
  num_moves: jax.Array  # int32 []: actions taken this round.
  rounds_done: jax.Array  # int32 []
  results: jax.Array  # int32 [rounds]: result id of each finished round.
  chips: jax.Array  # int32 []: Player 0's net chips over the finished rounds (Player 1 has -chips).


def first_player(data: Table, rounds: int) -> jax.Array:
  """The player who opens the current (or, after the end, the last) round."""
  return jnp.minimum(data.rounds_done, rounds - 1) % 2


def information_set(state: api.State) -> tuple[jax.Array, jax.Array]:
  """(card, node) of the player to move: indices into CARDS and NODES."""
  data = state.data
  opened_with_bet = data.history[0] == BET
  node = jnp.where(data.num_moves == 0, 0, jnp.where(data.num_moves == 2, 3, 1 + opened_with_bet))
  return data.cards[state.current_player], node.astype(jnp.int32)


_DEALS = np.array([[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]], np.int32)  # (card0, card1)


def _deal(key: jax.Array) -> jax.Array:
  """One of the 6 ordered deals, uniformly (a lookup: cheaper than a permutation's sort)."""
  return jnp.asarray(_DEALS)[jax.random.randint(key, (), 0, len(_DEALS))]


def _intro(player: int, rounds: int, rules: bool = True) -> str:
  game = "a game of Kuhn Poker" if rounds == 1 else f"a {rounds}-round game of Kuhn Poker"
  return f"You are Player {player} in {game}.\n" + (_rules_text(rounds) if rules else "")


def _rules_text(rounds: int) -> str:
  if rounds == 1:
    opener, goal = "Player 0 acts first.", ""
  else:
    opener = "Player 0 acts first in round 1, and the first player alternates each round."
    goal = ("- The player with more chips after all rounds wins the game; equal chips is a "
            "draw.\n")
  return ("Rules:\n"
          "- The deck has three cards: J, Q and K (J is lowest, K is highest).\n"
          "- Each round both players ante 1 chip and are dealt one card; the third card is not "
          "used.\n"
          f"- {opener}\n"
          "- With no bet on the table you may [check] (pass) or [bet] (add 1 chip).\n"
          "- Facing a bet you may [call] (add 1 chip to match it) or [fold] (give up the pot).\n"
          "- After check-check or bet-call the higher card wins the pot; after a fold the bettor "
          "wins it.\n" + goal)


def _result_text(round_number: int, result: int) -> str:
  winner, outcome = divmod(result, 3)
  chips = _OUTCOME_CHIPS[outcome]
  how = f"because Player {1 - winner} folded" if outcome == FOLDED else "at showdown"
  return (f"Round {round_number} result: Player {winner} won {chips} "
          f"chip{'s' if chips > 1 else ''} {how}.\n")


def _round_text(round_number: int, rounds: int) -> str:
  return f"Round {round_number} of {rounds}; Player {(round_number - 1) % 2} acts first.\n"


def _chips_text(chips: int) -> str:
  return f"Chips so far: you {chips:+d}, opponent {-chips:+d}.\n"


def _move_text(player: int, action: int) -> str:
  return f"Player {player}: {ACTIONS[action]}"


_HISTORY = "Actions this round: "
_NONE = "none"
_LEGAL = "\nYour legal actions: "
_GAME_OVER = "\nThe game is over."


@api.register
@dataclasses.dataclass(frozen=True)
class KuhnPoker(api.WithRules):
  rounds: int = 1
  payoff: str = ""  # chips | win | "" (chips for one round, win for several)

  name = "kuhn_poker"

  def __post_init__(self):
    if self.rounds < 1:
      raise ValueError(f"kuhn_poker: rounds must be >= 1, got {self.rounds}.")
    if self.payoff not in PAYOFFS:
      raise ValueError(f"kuhn_poker: payoff must be one of {', '.join(map(repr, PAYOFFS))}, "
                       f"got {self.payoff!r}.")

  @property
  def pays_chips(self) -> bool:
    """Whether the returns are the chip totals (else their sign: +1 to the winner)."""
    return self.payoff == "chips" or (self.payoff == "" and self.rounds == 1)

  def intro(self, player: int) -> str:
    return _intro(player, self.rounds, self.rules)

  @property
  def rules_text(self) -> str:
    return _rules_text(self.rounds)

  @property
  def actions(self) -> tuple[str, ...]:
    return ACTIONS

  @property
  def max_turns(self) -> int:
    return 3 * self.rounds

  @property
  def phrases(self) -> tuple[str, ...]:
    multi = ()
    if self.rounds > 1:
      multi = (*(_result_text(r + 1, x) for r in range(self.rounds) for x in range(6)),
               *(_round_text(r + 1, self.rounds) for r in range(self.rounds)),
               *(_chips_text(c) for c in range(-2 * self.rounds, 2 * self.rounds + 1)))
    moves = tuple(_move_text(p, a) for p in range(2) for a in range(4))
    return ("", self.intro(0), self.intro(1), *multi,
            *(f"Your card: {c}\n" for c in CARDS), _HISTORY, _NONE, *moves,
            *(", " + m for m in moves), _LEGAL, _GAME_OVER,
            *(f"[{a}]" for a in ACTIONS), *(f", [{a}]" for a in ACTIONS))

  @property
  def max_observation_phrases(self) -> int:
    multi = self.rounds + 2 if self.rounds > 1 else 0  # results, round header, chips
    return 1 + multi + 1 + 4 + 1 + 4  # intro, card, history, legal header, legal actions

  def _init(self, key: jax.Array) -> api.State:
    data = Table(cards=_deal(key), history=jnp.full((3,), NO_ACTION, jnp.int32),
                 num_moves=jnp.int32(0), rounds_done=jnp.int32(0),
                 results=jnp.zeros((self.rounds,), jnp.int32), chips=jnp.int32(0))
    return api.new_state(self, data, _legal_mask(jnp.bool_(False)))

  def _step(self, state: api.State, action: jax.Array, key: jax.Array) -> api.State:
    data, player = state.data, state.current_player
    history = data.history.at[data.num_moves].set(action)
    num_moves = data.num_moves + 1
    round_over = (action == CALL) | (action == FOLD) | ((action == CHECK) & (num_moves == 2))
    showdown_winner = (data.cards[1] > data.cards[0]).astype(jnp.int32)
    winner = jnp.where(action == FOLD, 1 - player, showdown_winner)
    outcome = jnp.where(action == FOLD, FOLDED, jnp.where(action == CALL, SHOWDOWN_2, SHOWDOWN_1))
    won_by_0 = jnp.asarray(_OUTCOME_CHIPS)[outcome] * (1 - 2 * winner)
    results = jnp.where(round_over, data.results.at[data.rounds_done].set(winner * 3 + outcome),
                        data.results)
    rounds_done = data.rounds_done + round_over
    chips = data.chips + jnp.where(round_over, won_by_0, 0)
    game_over = rounds_done == self.rounds
    next_round = round_over & ~game_over
    if self.rounds > 1:
      cards = jnp.where(next_round, _deal(key), data.cards)
    else:
      cards = data.cards
    data = Table(cards=cards,
                 history=jnp.where(next_round, NO_ACTION, history),
                 num_moves=jnp.where(next_round, 0, num_moves), rounds_done=rounds_done,
                 results=results, chips=chips)
    rewards = (chips if self.pays_chips else jnp.sign(chips)).astype(jnp.float32)
    return state.replace(
        data=data,
        current_player=(first_player(data, self.rounds) + data.num_moves) % 2,
        legal_action_mask=_legal_mask(action == BET) & ~game_over,
        rewards=jnp.where(game_over, jnp.stack([rewards, -rewards]), 0.0),
        terminated=game_over,
    )

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    ids = {p: i for i, p in enumerate(self.phrases)}
    data = state.data
    parts = [ids[self.intro(0)] + player]
    if self.rounds > 1:
      results = ids[_result_text(1, 0)] + 6 * jnp.arange(self.rounds) + data.results
      parts += [jnp.where(jnp.arange(self.rounds) < data.rounds_done, results, api.PAD_PHRASE),
                ids[_round_text(1, self.rounds)] + jnp.minimum(data.rounds_done, self.rounds - 1),
                ids[_chips_text(0)] + jnp.where(player == 0, data.chips, -data.chips)]
    first = first_player(data, self.rounds)
    movers = (first + jnp.arange(3)) % 2
    moves = ids[_move_text(0, 0)] + 4 * movers + data.history
    moves = jnp.where(jnp.arange(3) > 0, moves + 8, moves)  # ", Player ..." after the first.
    moves = jnp.where(jnp.arange(3) < data.num_moves, moves, api.PAD_PHRASE)
    moves = moves.at[0].set(jnp.where(data.num_moves == 0, ids[_NONE], moves[0]))
    legal = state.legal_action_mask
    legal_ids = jnp.where(jnp.arange(4) == jnp.argmax(legal), ids["[check]"], ids[", [check]"])
    legal_ids = jnp.where(legal, legal_ids + jnp.arange(4), api.PAD_PHRASE)
    parts += [ids["Your card: J\n"] + data.cards[player], ids[_HISTORY], moves,
              jnp.where(state.terminated, ids[_GAME_OVER], ids[_LEGAL]), legal_ids]
    return jnp.concatenate([jnp.atleast_1d(p) for p in parts]).astype(jnp.int32)

  def render_text(self, state: api.State, player: int) -> str:
    data = state.data
    text = self.intro(player)
    rounds_done = int(data.rounds_done)
    if self.rounds > 1:
      text += "".join(_result_text(r + 1, int(data.results[r])) for r in range(rounds_done))
      text += _round_text(min(rounds_done, self.rounds - 1) + 1, self.rounds)
      text += _chips_text(int(data.chips) if player == 0 else -int(data.chips))
    first = min(rounds_done, self.rounds - 1) % 2
    moves = [_move_text((first + i) % 2, int(data.history[i])) for i in range(int(data.num_moves))]
    text += f"Your card: {CARDS[int(data.cards[player])]}\n{_HISTORY}{', '.join(moves) or _NONE}"
    if state.terminated:
      return text + _GAME_OVER
    legal = ", ".join(f"[{a}]" for a, ok in zip(ACTIONS, state.legal_action_mask) if ok)
    return text + _LEGAL + legal


def _legal_mask(facing_bet: jax.Array) -> jax.Array:
  return jnp.stack([~facing_bet, ~facing_bet, facing_bet, facing_bet])


def information_set_states(game) -> api.State:
  """The 12 single-round Kuhn Poker information sets as states, [card * 4 + node] (batched).

  The acting player holds `card`; the other card is the lowest other one (it is never shown).
  """
  histories = {"": [], "p": [CHECK], "b": [BET],
               "pb": [CHECK, BET]}
  states = []
  for card in range(3):
    other = min(c for c in range(3) if c != card)
    for node in NODES:
      actor = len(histories[node]) % 2
      cards = (card, other) if actor == 0 else (other, card)
      state = game.init(jax.random.key(0))
      state = state.replace(data=state.data.replace(cards=jnp.asarray(cards, jnp.int32)))
      for action in histories[node]:
        state = game.step(state, action, jax.random.key(0))
      states.append(state)
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)
