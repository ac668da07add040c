"""Pig, the dice game, for two players: the rules of OpenSpiel's `pig` (six-sided die).

On a turn the player to move chooses [roll] or [stop] until the turn ends. A roll of 1 loses the
turn total and passes the turn; 2-6 adds to the turn total; [stop] banks the turn total into the
player's score and passes the turn. Once score + turn total reaches `win_score`, [stop] is the only
legal move, and it wins (+1/-1). Player 0 moves first.

The game ends as a draw (0/0) after `horizon` moves (rolls and stops of both players; die rolls are
not moves) without a winner, as OpenSpiel's `horizon` parameter does. A winning [stop] that is the
horizon-th move still wins. OpenSpiel ends the game before the die of a horizon-th [roll] is drawn;
here it is drawn (and shown) but changes nothing: the game is a draw either way. The die is drawn
in `_step` with its key.

Defaults: `win_score=30`, `horizon=60` (OpenSpiel's are 100 and 1000), for short text games. With
optimal play on both sides a game takes 20 moves on average (random play: 33); at win score 40 it
takes 28, at 50 38. Below about 40 the optimal policy (exact backward induction, games/opponents.py)
is to roll until the win is in reach, bar the last few moves before the horizon. At win score 20
the classic "hold at 20" rule plays exactly those moves; at 30 it stops too early and loses to
optimal play (0.43 vs 0.56 wins over both seats), so a learner can do better than the classic rule.
With `horizon=60` about 2% of games between two optimal players and 3-4% of optimal-vs-random games
reach the horizon (0.4% / 0.6% at 80); a rollout scans `max_turns = horizon` turns.

`rules=False` leaves the rules paragraph out of the prompt (as in Kuhn Poker); the short intro still
names the win score, and the moves line names the horizon.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api

ROLL, STOP = range(2)  # OpenSpiel's action ids too.
ACTIONS = ("roll", "stop")
NO_MOVE = -1
FACES = 6
# A move code (State.data.last_move): 0-5 for a roll of 1-6, STOPPED + k for a stop banking k.
STOPPED = FACES


@struct.dataclass
class Dice:
  scores: jax.Array  # int32 [2]: banked points of each player.
  turn_total: jax.Array  # int32 []: points at stake in the current turn (the mover's).
  last_player: jax.Array  # int32 []: who made the last move (NO_MOVE at the start).
  last_move: jax.Array  # int32 []: the last move's code (see STOPPED), NO_MOVE at the start.
  win_score: int = struct.field(pytree_node=False)  # The game's options (static), for opponents.
  horizon: int = struct.field(pytree_node=False)


def _intro(player: int, win_score: int, horizon: int, rules: bool) -> str:
  head = f"You are Player {player} in a game of Pig to {win_score} points.\n"
  return head + (_rules_text(win_score, horizon) if rules else "")


def _rules_text(win_score: int, horizon: int) -> str:
  return ("Rules:\n"
          "- Player 0 goes first.\n"
          "- On your turn, you [roll] a six-sided die as many times as you like, or [stop].\n"
          "- A roll of 2-6 adds to your turn total; a roll of 1 loses your turn total and ends "
          "your turn.\n"
          "- [stop] adds your turn total to your score and ends your turn.\n"
          f"- The first player to reach {win_score} points wins: once your score plus your turn "
          "total reaches it, [stop] is your only move, and it wins.\n"
          f"- After {horizon} moves (rolls and stops of both players) without a winner, the game "
          "is a draw.\n")


def _owner(mine: bool) -> str:
  return "Your" if mine else "Opponent's"


def _score_text(mine: bool, score: int) -> str:
  return f"{_owner(mine)} score: {score}\n"


def _last_move_text(mine: bool, code: int) -> str:
  who = "you" if mine else "your opponent"
  if code == NO_MOVE:
    return "Last move: none.\n"
  if code == 0:
    return f"Last move: {who} rolled a 1 and lost {'your' if mine else 'their'} turn total.\n"
  if code < STOPPED:
    return f"Last move: {who} rolled a {code + 1}.\n"
  banked = code - STOPPED
  return f"Last move: {who} stopped and banked {banked} point{'' if banked == 1 else 's'}.\n"


def _turn_total_text(mine: bool, total: int) -> str:
  return f"{_owner(mine)} turn total: {total}\n"


def _moves_text(moves: int, horizon: int) -> str:
  return f"Moves played: {moves} of {horizon}\n"


_LEGAL = "Your legal moves: "
_GAME_OVER = "The game is over."


@api.register
@dataclasses.dataclass(frozen=True)
class Pig(api.WithRules):
  win_score: int = 30
  horizon: int = 60

  name = "pig"

  def __post_init__(self):
    if self.win_score < 1:
      raise ValueError(f"pig: win_score must be >= 1, got {self.win_score}.")
    if self.horizon < 1:
      raise ValueError(f"pig: horizon must be >= 1, got {self.horizon}.")

  @property
  def max_points(self) -> int:
    """The largest score or turn total: a roll is legal only below win_score, and adds <= 6."""
    return self.win_score - 1 + FACES

  def intro(self, player: int) -> str:
    return _intro(player, self.win_score, self.horizon, self.rules)

  @property
  def rules_text(self) -> str:
    return _rules_text(self.win_score, self.horizon)

  @property
  def actions(self) -> tuple[str, ...]:
    return ACTIONS

  @property
  def max_turns(self) -> int:
    return self.horizon

  @property
  def phrases(self) -> tuple[str, ...]:
    points = range(self.max_points + 1)
    codes = range(STOPPED + self.max_points + 1)
    return ("", self.intro(0), self.intro(1),
            *(_score_text(mine, s) for mine in (True, False) for s in points),
            _last_move_text(True, NO_MOVE),
            *(_last_move_text(mine, c) for mine in (True, False) for c in codes),
            *(_turn_total_text(mine, t) for mine in (True, False) for t in points),
            *(_moves_text(m, self.horizon) for m in range(self.horizon + 1)),
            _LEGAL, _GAME_OVER, *(f"[{a}]" for a in ACTIONS), *(f", [{a}]" for a in ACTIONS))

  @property
  def max_observation_phrases(self) -> int:
    # intro, 2 scores, last move, turn total, moves played, legal header, 2 moves.
    return 1 + 2 + 1 + 1 + 1 + 1 + 2

  def _legal_mask(self, score: jax.Array, turn_total: jax.Array) -> jax.Array:
    return jnp.stack([score + turn_total < self.win_score, jnp.bool_(True)])

  def _init(self, key: jax.Array) -> api.State:
    del key
    data = Dice(scores=jnp.zeros((2,), jnp.int32), turn_total=jnp.int32(0),
                last_player=jnp.int32(NO_MOVE), last_move=jnp.int32(NO_MOVE),
                win_score=self.win_score, horizon=self.horizon)
    return api.new_state(self, data, self._legal_mask(jnp.int32(0), jnp.int32(0)))

  def _step(self, state: api.State, action: jax.Array, key: jax.Array) -> api.State:
    data, player = state.data, state.current_player
    die = jax.random.randint(key, (), 1, FACES + 1, jnp.int32)
    roll = action == ROLL
    bust = roll & (die == 1)
    banked = data.scores[player] + data.turn_total
    scores = jnp.where(roll, data.scores, data.scores.at[player].set(banked))
    won = ~roll & (banked >= self.win_score)
    turn_total = jnp.where(roll & ~bust, data.turn_total + die, 0)
    next_player = jnp.where(roll & ~bust, player, 1 - player)
    terminated = won | (state.turn + 1 >= self.horizon)
    winner_rewards = jnp.where(jnp.arange(2) == player, 1.0, -1.0)
    data = data.replace(scores=scores, turn_total=turn_total, last_player=player,
                        last_move=jnp.where(roll, die - 1, STOPPED + data.turn_total))
    return state.replace(
        data=data,
        current_player=next_player,
        legal_action_mask=self._legal_mask(scores[next_player], turn_total) & ~terminated,
        rewards=jnp.where(won, winner_rewards, 0.0).astype(jnp.float32),
        terminated=terminated,
    )

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    ids = {p: i for i, p in enumerate(self.phrases)}
    data = state.data
    top = self.max_points
    score_ids = [ids[_score_text(True, 0)] + jnp.clip(data.scores[player], 0, top),
                 ids[_score_text(False, 0)] + jnp.clip(data.scores[1 - player], 0, top)]
    last_base = jnp.where(data.last_player == player, ids[_last_move_text(True, 0)],
                          ids[_last_move_text(False, 0)])
    last_id = jnp.where(data.last_move == NO_MOVE, ids[_last_move_text(True, NO_MOVE)],
                        last_base + jnp.clip(data.last_move, 0, STOPPED + top))
    total_base = jnp.where(state.current_player == player, ids[_turn_total_text(True, 0)],
                           ids[_turn_total_text(False, 0)])
    total_id = total_base + jnp.clip(data.turn_total, 0, top)
    moves_id = ids[_moves_text(0, self.horizon)] + jnp.clip(state.turn, 0, self.horizon)
    header = jnp.where(state.terminated, ids[_GAME_OVER], ids[_LEGAL])
    legal = state.legal_action_mask
    action_ids = jnp.arange(self.num_actions)
    move_ids = jnp.where(action_ids == jnp.argmax(legal), ids[f"[{ACTIONS[0]}]"],
                         ids[f", [{ACTIONS[0]}]"]) + action_ids
    move_ids = jnp.where(legal, move_ids, api.PAD_PHRASE)
    head = jnp.stack([ids[self.intro(0)] + player, *score_ids, last_id, total_id, moves_id,
                      header])
    return jnp.concatenate([head, move_ids]).astype(jnp.int32)

  def render_text(self, state: api.State, player: int) -> str:
    data = state.data
    scores = np.asarray(data.scores)
    last_move = int(data.last_move)
    text = (self.intro(player) + _score_text(True, int(scores[player]))
            + _score_text(False, int(scores[1 - player]))
            + _last_move_text(int(data.last_player) == player, last_move)
            + _turn_total_text(int(state.current_player) == player, int(data.turn_total))
            + _moves_text(int(state.turn), self.horizon))
    if state.terminated:
      return text + _GAME_OVER
    legal = ", ".join(f"[{a}]" for a, ok in zip(ACTIONS, state.legal_action_mask) if ok)
    return text + _LEGAL + legal
