"""TicTacToe: cells 0-8, player 0 ('X') moves first; win +1, loss -1, draw 0.

`rules=False` leaves the goal and move-format lines out of the prompt (as in Kuhn Poker).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api

LINES = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8],
                  [0, 4, 8], [2, 4, 6]], np.int32)
MARKS = ("X", "O")
EMPTY = -1


@struct.dataclass
class Board:
  cells: jax.Array  # int32 [9]: EMPTY, or the player (0/1) whose mark is there.


def _intro(player: int, rules: bool = True) -> str:
  return (f"You are Player {player} in Tic Tac Toe, playing '{MARKS[player]}' "
          f"(Player 0 moves first).\n" + (_RULES if rules else "") + "Current board:\n")


_RULES = ("Your goal is to get three of your marks in a row: horizontally, vertically or "
          "diagonally.\n"
          "On your turn, choose the number of an empty square (0-8) to place your mark, "
          "for example [4] for the centre square.\n")

_ROW_SEPARATOR = "\n---+---+---\n"
_AVAILABLE = "\nAvailable moves: "
_CELL_TEXT = tuple(f" {c} " for c in range(9)) + tuple(f" {m} " for m in MARKS)


@api.register
@dataclasses.dataclass(frozen=True)
class TicTacToe(api.WithRules):
  name = "tic_tac_toe"

  @property
  def rules_text(self) -> str:
    return _RULES

  @property
  def actions(self) -> tuple[str, ...]:
    return tuple(str(c) for c in range(9))

  @property
  def max_turns(self) -> int:
    return 9

  @property
  def phrases(self) -> tuple[str, ...]:
    return ("", _intro(0, self.rules), _intro(1, self.rules), *_CELL_TEXT, "|", _ROW_SEPARATOR,
            _AVAILABLE, *(f"[{c}]" for c in range(9)), *(f", [{c}]" for c in range(9)))

  @property
  def max_observation_phrases(self) -> int:
    return 1 + 17 + 1 + 9  # intro, grid (9 cells, 8 separators), "available", moves

  def _init(self, key: jax.Array) -> api.State:
    del key
    return api.new_state(self, Board(jnp.full((9,), EMPTY, jnp.int32)), jnp.ones(9, bool))

  def _step(self, state: api.State, action: jax.Array, key: jax.Array) -> api.State:
    del key
    player = state.current_player
    cells = state.data.cells.at[action].set(player)
    won = (cells[LINES] == player).all(-1).any()
    full = (cells != EMPTY).all()
    winner_rewards = jnp.where(jnp.arange(2) == player, 1.0, -1.0)
    return state.replace(
        data=Board(cells),
        current_player=1 - player,
        legal_action_mask=(cells == EMPTY) & ~won,
        rewards=jnp.where(won, winner_rewards, 0.0).astype(jnp.float32),
        terminated=won | full,
    )

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    ids = {p: i for i, p in enumerate(self.phrases)}
    cells = state.data.cells
    cell_ids = jnp.where(cells == EMPTY, ids[_CELL_TEXT[0]] + jnp.arange(9),
                         ids[_CELL_TEXT[9]] + cells)
    bar, row_sep = ids["|"], ids[_ROW_SEPARATOR]
    grid = [cell_ids[0], bar, cell_ids[1], bar, cell_ids[2], row_sep,
            cell_ids[3], bar, cell_ids[4], bar, cell_ids[5], row_sep,
            cell_ids[6], bar, cell_ids[7], bar, cell_ids[8]]
    legal = state.legal_action_mask
    first_legal = jnp.argmax(legal)
    moves = jnp.where(jnp.arange(9) == first_legal, ids["[0]"], ids[", [0]"]) + jnp.arange(9)
    moves = jnp.where(legal, moves, api.PAD_PHRASE)
    head = jnp.stack([ids[self.intro(0)] + player, *grid, ids[_AVAILABLE]])
    return jnp.concatenate([head, moves]).astype(jnp.int32)

  def intro(self, player: int) -> str:
    return _intro(player, self.rules)

  def render_text(self, state: api.State, player: int) -> str:
    cells = np.asarray(state.data.cells)
    shown = [str(c) if cells[c] == EMPTY else MARKS[cells[c]] for c in range(9)]
    rows = ["|".join(f" {s} " for s in shown[r * 3:r * 3 + 3]) for r in range(3)]
    moves = ", ".join(f"[{c}]" for c in range(9) if state.legal_action_mask[c])
    return self.intro(player) + _ROW_SEPARATOR.join(rows) + _AVAILABLE + moves
