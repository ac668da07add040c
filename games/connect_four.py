"""Connect Four: 6 rows x 7 columns, player 0 ('X') moves first; actions are the columns 0-6.

A piece dropped into a column that is not full falls to the lowest empty cell. Four pieces of one
player in a row (horizontally, vertically or diagonally) win (+1/-1); a full board is a draw (0/0).
The rules are OpenSpiel's `connect_four` (its `rows` and `columns` parameters too; `x_in_row` is 4).

The observation shows the board top row first under a line of column numbers, one phrase per cell
(the last cell of a row carries the newline), then the legal moves. `rules=False` leaves the rules
paragraph out of the prompt (as in Kuhn Poker).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api

MARKS = ("X", "O")
EMPTY = -1
IN_ROW = 4  # Pieces in a row that win.


@struct.dataclass
class Board:
  cells: jax.Array  # int32 [rows, columns], row 0 at the top: EMPTY, or the player (0/1) there.


@functools.cache
def lines(rows: int, columns: int) -> np.ndarray:
  """Flat cell indices (row * columns + column) of every line of four, int32 [num_lines, 4]."""
  found = []
  for row in range(rows):
    for column in range(columns):
      for d_row, d_column in ((0, 1), (1, 0), (1, 1), (1, -1)):
        end_row, end_column = row + (IN_ROW - 1) * d_row, column + (IN_ROW - 1) * d_column
        if 0 <= end_row < rows and 0 <= end_column < columns:
          found.append([(row + k * d_row) * columns + column + k * d_column
                        for k in range(IN_ROW)])
  return np.array(found, np.int32).reshape(-1, IN_ROW)


@functools.cache
def cell_lines(rows: int, columns: int) -> np.ndarray:
  """Lines through each cell, int32 [rows * columns, max_lines, 4]; padding rows point at the
  extra cell rows * columns (past the board), which never holds a piece."""
  all_lines = lines(rows, columns)
  through = [[line for line in all_lines if cell in line] for cell in range(rows * columns)]
  width = max(1, max(len(t) for t in through))
  table = np.full((rows * columns, width, IN_ROW), rows * columns, np.int32)
  for cell, cell_through in enumerate(through):
    if cell_through:
      table[cell, :len(cell_through)] = cell_through
  return table


def drop(cells: jax.Array, column: jax.Array, player: jax.Array
         ) -> tuple[jax.Array, jax.Array]:
  """Drops `player`'s piece into a non-full `column`: (new cells, whether the piece wins)."""
  rows, columns = cells.shape
  row = jnp.sum(cells[:, column] == EMPTY) - 1  # the lowest empty cell
  cells = cells.at[row, column].set(player)
  padded = jnp.append(cells.reshape(-1), EMPTY)
  through = jnp.asarray(cell_lines(rows, columns))[row * columns + column]
  won = (padded[through] == player).all(-1).any()
  return cells, won


def _intro(player: int, rows: int, columns: int, rules: bool) -> str:
  text = (f"You are Player {player} in Connect Four, playing '{MARKS[player]}' "
          "(Player 0 moves first).\n")
  if rules:
    text += _rules_text(rows, columns)
  return (text + "Current board (top row first; X = Player 0, O = Player 1, . = empty):\n"
          + "".join(f" {c}" for c in range(columns)) + "\n")


def _rules_text(rows: int, columns: int) -> str:
  return ("Rules:\n"
          f"- The board has {rows} rows and {columns} columns; the columns are numbered "
          f"0-{columns - 1} from left to right.\n"
          "- On your turn, drop one of your pieces into a column that is not full: it falls "
          "to the lowest empty cell of that column.\n"
          "- The first player with four pieces in a row (horizontally, vertically or "
          "diagonally) wins; a full board is a draw.\n"
          f"- Write a move as the column number, for example [{columns // 2}].\n")


_CELLS = tuple(f" {m}" for m in (".", *MARKS))  # EMPTY, X, O
_ROW_ENDS = tuple(f"{c}\n" for c in _CELLS)
_LEGAL = "Your legal moves: "
_GAME_OVER = "The game is over."


@api.register
@dataclasses.dataclass(frozen=True)
class ConnectFour(api.WithRules):
  rows: int = 6
  columns: int = 7

  name = "connect_four"

  def __post_init__(self):
    if not (IN_ROW <= self.rows <= 10 and IN_ROW <= self.columns <= 10):
      raise ValueError(f"connect_four: rows and columns must be in [{IN_ROW}, 10], got "
                       f"rows={self.rows}, columns={self.columns}.")

  @property
  def rules_text(self) -> str:
    return _rules_text(self.rows, self.columns)

  @property
  def actions(self) -> tuple[str, ...]:
    return tuple(str(c) for c in range(self.columns))

  @property
  def max_turns(self) -> int:
    return self.rows * self.columns

  @property
  def phrases(self) -> tuple[str, ...]:
    intros = (_intro(p, self.rows, self.columns, self.rules) for p in range(2))
    return ("", *intros, *_CELLS, *_ROW_ENDS, _LEGAL, _GAME_OVER,
            *(f"[{a}]" for a in self.actions), *(f", [{a}]" for a in self.actions))

  @property
  def max_observation_phrases(self) -> int:
    return 1 + self.rows * self.columns + 1 + self.columns  # intro, cells, legal header, moves

  def _init(self, key: jax.Array) -> api.State:
    del key
    cells = jnp.full((self.rows, self.columns), EMPTY, jnp.int32)
    return api.new_state(self, Board(cells), jnp.ones(self.columns, bool))

  def _step(self, state: api.State, action: jax.Array, key: jax.Array) -> api.State:
    del key
    player = state.current_player
    cells, won = drop(state.data.cells, action, player)
    open_columns = cells[0] == EMPTY
    winner_rewards = jnp.where(jnp.arange(2) == player, 1.0, -1.0)
    return state.replace(
        data=Board(cells),
        current_player=1 - player,
        legal_action_mask=open_columns & ~won,
        rewards=jnp.where(won, winner_rewards, 0.0).astype(jnp.float32),
        terminated=won | ~open_columns.any(),
    )

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    ids = {p: i for i, p in enumerate(self.phrases)}
    row_end = (jnp.arange(self.columns) == self.columns - 1)[None, :]
    cell_ids = jnp.where(row_end, ids[_ROW_ENDS[0]], ids[_CELLS[0]]) + state.data.cells + 1
    legal = state.legal_action_mask
    action_ids = jnp.arange(self.columns)
    move_ids = jnp.where(action_ids == jnp.argmax(legal), ids["[0]"], ids[", [0]"]) + action_ids
    move_ids = jnp.where(legal, move_ids, api.PAD_PHRASE)
    head = jnp.stack([ids[self.intro(0)] + player])
    tail = jnp.stack([jnp.where(state.terminated, ids[_GAME_OVER], ids[_LEGAL])])
    return jnp.concatenate([head, cell_ids.reshape(-1), tail, move_ids]).astype(jnp.int32)

  def intro(self, player: int) -> str:
    return _intro(player, self.rows, self.columns, self.rules)

  def render_text(self, state: api.State, player: int) -> str:
    cells = np.asarray(state.data.cells)
    board = "".join("".join(f" {'.XO'[c + 1]}" for c in row) + "\n" for row in cells)
    text = self.intro(player) + board
    if state.terminated:
      return text + _GAME_OVER
    legal = ", ".join(f"[{a}]" for a, ok in zip(self.actions, state.legal_action_mask) if ok)
    return text + _LEGAL + legal
