"""Matrix games: one-shot and repeated two-player simultaneous-move games on a payoff table.

Each round Player 0 (the row player) answers, then Player 1 (the column player) answers without
seeing Player 0's choice of this round, then the round's payoffs apply. In a repeated game
(`rounds > 1`) the observation shows every finished round (both choices and both payoffs) and the
running totals.

Rewards, at the end only: player p's total payoff T_p is mapped linearly to [-1, 1] from the
lowest total it can get, the sum over rounds of p's smallest payoff in that round's table, to the
highest (the sum of its largest): reward_p = 2 (T_p - lo_p) / (hi_p - lo_p) - 1 (0 when
hi_p == lo_p). Constant-sum tables therefore give zero-sum rewards (`zero_sum` is True only for
those).

`payoffs` is one of:
- an explicit table: a tuple of n rows of m (row player's payoff, column player's payoff) pairs;
- the name of a known game (`KNOWN_GAMES`; their ordinal tables are given below);
- "rg000".."rg143": one of the 144 strict ordinal 2x2 games (`ordinal_2x2`);
- "family:<name>": each game draws a strict ordinal 2x2 table from the family (`FAMILIES`)
  uniformly from the init key: a uniform type of the family in a uniform one of its layouts; the
  table lives in the state and the prompt shows that game's payoffs (ranks 1-4, 4 = best).

`sequential=True` (a family and `rounds > 1`: TMGBench's sequential form) draws a new table for
every round, so one game is a sequence of different matrix games played one after another; the
prompt shows the current round's table and the history shows each finished round's outcome with
its payoffs.

`parallel=P` (2-4, with a family: TMGBench's parallel form) plays P tables of the family side by
side in every round: each player answers one move per table, joined by '/' in table order
(action "A/B" = A in game 1, B in game 2; action id = the moves read as a binary number, game 1
the most significant bit), and gets the sum of the P payoffs. With `sequential`, every round
draws P new tables.

Move names are shared by both players: the row player chooses among the first n names, the
column player among the first m.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api, ordinal_2x2

NO_CHOICE = -1
FAMILY_PREFIX = "family:"
MAX_TOTALS = 2000  # Distinct running totals (each a phrase) a game may show.
MIXED_NASH_MIN_MOVES = 2  # Moves a (table, seat) group needs to count in mixed_nash_gap.
MAX_PARALLEL = 4
PARALLEL_SEPARATOR = "/"


def _xp(table):
  """jax.numpy for jax arrays (inside compiled opponents), numpy otherwise."""
  return jnp if isinstance(table, jax.Array) else np


def pure_nash(table):
  """bool [..., n, m]: the cells that are pure Nash equilibria (each player's payoff is a best
  response to the other's move; ties count) of tables [..., n, m, 2] (numpy or jax)."""
  table = _xp(table).asarray(table)
  row, col = table[..., 0], table[..., 1]
  return (row >= row.max(-2, keepdims=True)) & (col >= col.max(-1, keepdims=True))


def mixed_nash(table):
  """float [..., 2]: each player's probability of its first move in the fully mixed equilibrium
  of 2x2 tables [..., 2, 2, 2] without a pure one (each mixes so that the other is indifferent);
  NaN for tables with a pure equilibrium. numpy (float64) or jax."""
  xp = _xp(table)
  table = xp.asarray(table, np.float64 if xp is np else jnp.float32)
  a, b = table[..., 0], table[..., 1]  # Row and column player's payoffs [..., 2, 2].
  with np.errstate(divide="ignore", invalid="ignore"):
    row = (b[..., 1, 1] - b[..., 1, 0]) / (b[..., 0, 0] - b[..., 1, 0] - b[..., 0, 1] + b[..., 1, 1])
    col = (a[..., 1, 1] - a[..., 0, 1]) / (a[..., 0, 0] - a[..., 0, 1] - a[..., 1, 0] + a[..., 1, 1])
  has_pure = pure_nash(table).any((-2, -1))
  return xp.where(has_pure[..., None], np.nan, xp.stack([row, col], -1))


# --- Families of the 144 strict ordinal 2x2 types ("family:<name>"). ---

FAMILIES = {
    "all": "all 144 types",
    "one_pure_ne": "the 108 types with exactly one pure Nash equilibrium",
    "two_pure_ne": "the 18 types with two pure equilibria (and a mixed one)",
    "no_pure_ne": "the 18 cyclic types: no pure equilibrium, one fully mixed",
    "win_win": "the 36 types with an outcome both players rank best",
    "symmetric": "the 12 types that have a symmetric layout (the column player's ranks are the "
                 "transpose of the row player's), drawn in those layouts only",
}
EQUILIBRIUM_FAMILIES = {1: "one_pure_ne", 2: "two_pure_ne", 0: "no_pure_ne"}  # By pure count.


@functools.cache
def family_pairs(family: str) -> np.ndarray:
  """int32 [k]: the indices into `ordinal_2x2.ordinal_types().pairs` (ordered pairs of rankings)
  that `family` draws from, uniformly; every type of a family has equally many of them."""
  pairs = ordinal_2x2.flat_to_table(ordinal_2x2.ordinal_types().pairs)  # [576, 2, 2, 2]
  row, col = pairs[..., 0], pairs[..., 1]
  equilibria = pure_nash(pairs).sum((1, 2))
  keep = {
      "all": np.ones(len(pairs), bool),
      **{name: equilibria == count for count, name in EQUILIBRIUM_FAMILIES.items()},
      "win_win": ((row == 4) & (col == 4)).any((1, 2)),
      "symmetric": (row == np.swapaxes(col, 1, 2)).all((1, 2)),
  }[family]
  return np.flatnonzero(keep).astype(np.int32)


# --- Known games. ---


def _symmetric(r, s, t, p):
  """Symmetric 2x2 table, moves (cooperate, defect): R both cooperate, S cooperating against a
  defector, T defecting against a cooperator, P both defect."""
  return (((r, r), (s, t)), ((t, s), (p, p)))


# Ordinal tables (4 = best). The symmetric social dilemmas have moves (cooperate, defect); the
# row player's ranks are [[R, S], [T, P]] and the column player's their transpose:
#   prisoners_dilemma   T > R > P > S   [[3, 1], [4, 2]]   one pure NE: (defect, defect)
#   chicken             T > R > S > P   [[3, 2], [4, 1]]   two: (cooperate, defect), (defect, coop.)
#   stag_hunt           R > T > P > S   [[4, 1], [3, 2]]   two: (cooperate, cooperate), (defect, d.)
#   deadlock            T > P > R > S   [[2, 1], [4, 3]]   one: (defect, defect)
#   harmony             R > T > S > P   [[4, 2], [3, 1]]   one: (cooperate, cooperate); several
#                                                          orderings go by this name, this is one.
# battle_of_the_sexes, moves (opera, football); the row player prefers opera, the column player
# football. Each ranks coordinating on its favourite 4, on the other's 3, each at its own
# favourite (opera, football) 2, each at the other's (football, opera) 1:
#   row [[4, 2], [1, 3]], column [[3, 2], [1, 4]]          two: (opera, opera), (football, football)
# matching_pennies is not ordinal (it has ties): +1 / -1 for the row player when the coins match
# / differ, the column player gets the negative (zero-sum, no pure NE).
KNOWN_GAMES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "prisoners_dilemma": (_symmetric(3, 1, 4, 2), ("cooperate", "defect")),
    "chicken": (_symmetric(3, 2, 4, 1), ("cooperate", "defect")),
    "stag_hunt": (_symmetric(4, 1, 3, 2), ("cooperate", "defect")),
    "deadlock": (_symmetric(2, 1, 4, 3), ("cooperate", "defect")),
    "harmony": (_symmetric(4, 2, 3, 1), ("cooperate", "defect")),
    "battle_of_the_sexes": ((((4, 3), (2, 2)), ((1, 1), (3, 4))), ("opera", "football")),
    "matching_pennies": ((((1, -1), (-1, 1)), ((-1, 1), (1, -1))), ("heads", "tails")),
}

# Classic cardinal tables of the repeated games below.
PRISONERS_DILEMMA_5310 = _symmetric(3, 0, 5, 1)  # T=5, R=3, P=1, S=0.
BATTLE_OF_THE_SEXES_210 = (((2, 1), (0, 0)), ((0, 0), (1, 2)))
_LETTERS = tuple(chr(ord("A") + i) for i in range(26))
COOPERATE = "cooperate"  # Games with a move of this name report cooperation statistics.


def _tuples(value):
  """Lists (from configs) as tuples, recursively, so the game stays hashable."""
  return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _fmt(value) -> str:
  value = float(value)
  return str(int(value)) if value == int(value) else f"{value:g}"


# --- Phrases. ---


def _intro(player: int, rounds: int, hidden: bool, sequential: bool, parallel: int) -> str:
  if parallel > 1:
    length = ("" if rounds == 1 else " for an unknown number of rounds" if hidden else
              f" for {rounds} rounds")
    over = "all games and rounds" if rounds > 1 else "all games"
    table = ("The payoffs of this round's games (each round has its own):\n" if sequential else
             "The payoffs of each game:\n")
    return (f"You are Player {player} in {parallel} two-player matrix games played side by "
            f"side{length}.\nIn each round both players choose a move in every game at the same "
            "time: neither sees the other's choices before choosing. Answer with your move in "
            f"each game, in game order, joined by '{PARALLEL_SEPARATOR}'. Your goal is the highest "
            f"total payoff for yourself over {over}.\n{table}")
  if rounds == 1:
    return (f"You are Player {player} in a one-shot two-player matrix game.\n"
            "Both players choose a move at the same time: neither sees the other's choice "
            "before choosing. Your goal is the highest payoff for yourself.\n"
            "The payoffs:\n")
  length = "an unknown number of rounds" if hidden else f"{rounds} rounds"
  kind, table = (("sequence of two-player matrix games", "The payoffs of this round (each round "
                  "has its own):\n") if sequential else
                 ("repeated two-player matrix game", "The payoffs of each round:\n"))
  return (f"You are Player {player} in a {kind} of {length}.\n"
          "In each round both players choose a move at the same time: neither sees the other's "
          "choice before choosing. Your goal is the highest total payoff for yourself over all "
          f"rounds.\n{table}")


def _cell_text(own: str, other: str, u, v) -> str:
  return f"If you play {own} and they play {other}: you get {_fmt(u)}, they get {_fmt(v)}.\n"


def _label_text(round_number: int, rounds: int, parallel: int) -> str:
  label = "Result:" if rounds == 1 else f"Round {round_number}:"
  return label + ("\n" if parallel > 1 else " ")


def _game_text(table: int) -> str:
  """The label of table `table` (0-based) of a parallel game, before its payoffs or outcome."""
  return f"Game {table + 1}: "


def _outcome_text(own: str, other: str, u, v) -> str:
  return f"you played {own}, they played {other}; you got {_fmt(u)}, they got {_fmt(v)}.\n"


def _you_total_text(total) -> str:
  return f"Total so far: you {_fmt(total)}"


def _they_total_text(total) -> str:
  return f", they {_fmt(total)}.\n"


def _round_text(round_number: int, rounds: int, hidden: bool) -> str:
  total = "" if hidden else f" of {rounds}"
  return f"This is round {round_number}{total}.\n"


_LEGAL = "Your legal moves: "
_GAME_OVER = "The game is over."


class _Interner:
  """Builds the phrase list; equal texts share one id."""

  def __init__(self):
    self.texts, self._ids = [""], {"": 0}

  def __call__(self, text: str) -> int:
    if text not in self._ids:
      self._ids[text] = len(self.texts)
      self.texts.append(text)
    return self._ids[text]


class _Layout(NamedTuple):
  phrases: tuple[str, ...]
  intro: np.ndarray  # int32 [2]
  values: np.ndarray  # float32 [V]: every payoff value a cell can show, sorted.
  cells: np.ndarray  # int32 [K, K, V, V]: (own move, other's move, own payoff, other's) phrases.
  outcomes: np.ndarray  # int32 [K, K, V, V]: the same outcome in a history line.
  labels: np.ndarray  # int32 [rounds]
  game_labels: np.ndarray  # int32 [parallel]: "Game t: " (unused when parallel == 1).
  totals: np.ndarray  # float32 [T]: every running total, sorted.
  you_totals: np.ndarray  # int32 [T]
  they_totals: np.ndarray  # int32 [T]
  round_headers: np.ndarray  # int32 [rounds]
  legal: int
  game_over: int
  first_moves: np.ndarray  # int32 [K]: "[X]"
  more_moves: np.ndarray  # int32 [K]: ", [X]"
  cell_rows: np.ndarray  # int32 [2, n*m]: the row move of each table line, per viewer.
  cell_cols: np.ndarray  # int32 [2, n*m]


@struct.dataclass
class Rounds:
  payoffs: jax.Array  # float32 [rounds, n, m, 2]: each round's table (drawn for a family).
  kind: jax.Array  # int32 [rounds]: each table's ordinal class (0-143), -1 if it has none.
  choices: jax.Array  # int32 [rounds, 2]: each round's (row, column) moves, NO_CHOICE if not made.
  rounds_done: jax.Array  # int32 []: finished rounds.
  totals: jax.Array  # float32 [2]: each player's payoff so far.


@api.register
@dataclasses.dataclass(frozen=True)
class MatrixGame(api.Game):
  """A one-shot or repeated matrix game; see the module docstring."""

  payoffs: Any = "prisoners_dilemma"
  action_names: tuple[str, ...] | None = None
  rounds: int = 1
  hidden_rounds: bool = False
  sequential: bool = False
  parallel: int = 1

  name = "matrix_game"
  default_action_names: ClassVar[tuple[str, ...] | None] = None  # For explicit tables.

  def __post_init__(self):
    object.__setattr__(self, "payoffs", _tuples(self.payoffs))
    object.__setattr__(self, "action_names", _tuples(self.action_names))
    prefix = f"{self.name}:"
    if isinstance(self.payoffs, str):
      if not (self.payoffs in KNOWN_GAMES or self.family in FAMILIES
              or (re.fullmatch(r"rg\d{3}", self.payoffs) and int(self.payoffs[2:]) < 144)):
        families = ", ".join(FAMILY_PREFIX + f for f in FAMILIES)
        raise ValueError(f"{prefix} payoffs={self.payoffs!r} is unknown; valid names: "
                         f"{', '.join(KNOWN_GAMES)}, rg000-rg143, {families}, or a table.")
    else:
      _check_table(self.payoffs, prefix)
    if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
      raise ValueError(f"{prefix} rounds must be an integer >= 1, got {self.rounds!r}.")
    if not isinstance(self.hidden_rounds, bool):
      raise ValueError(f"{prefix} hidden_rounds must be a bool, got {self.hidden_rounds!r}.")
    if self.hidden_rounds and self.rounds == 1:
      raise ValueError(f"{prefix} hidden_rounds=True needs rounds > 1.")
    if not isinstance(self.sequential, bool):
      raise ValueError(f"{prefix} sequential must be a bool, got {self.sequential!r}.")
    if self.sequential and (self.family is None or self.rounds == 1):
      raise ValueError(f"{prefix} sequential=True needs payoffs='{FAMILY_PREFIX}<name>' and "
                       f"rounds > 1, got payoffs={self.payoffs!r}, rounds={self.rounds}.")
    if (isinstance(self.parallel, bool) or not isinstance(self.parallel, int)
        or not 1 <= self.parallel <= MAX_PARALLEL):
      raise ValueError(f"{prefix} parallel must be an integer in [1, {MAX_PARALLEL}], got "
                       f"{self.parallel!r}.")
    if self.parallel > 1 and self.family is None:
      raise ValueError(f"{prefix} parallel={self.parallel} needs payoffs="
                       f"'{FAMILY_PREFIX}<name>', got payoffs={self.payoffs!r}.")
    n, m = self.shape
    names = self.move_names
    if self.action_names is None and max(n, m) > len(_LETTERS):
      raise ValueError(f"{prefix} action_names: give names for tables over {len(_LETTERS)} moves.")
    if (not isinstance(names, tuple) or not all(isinstance(a, str) for a in names)
        or len(names) != max(n, m)):
      raise ValueError(f"{prefix} action_names must be {max(n, m)} strings (the larger of the "
                       f"table's {n} rows and {m} columns), got {self.action_names!r}.")
    normalised = [" ".join(a.lower().replace("[", "").replace("]", "").split()) for a in names]
    if not all(normalised) or len(set(normalised)) != len(normalised) or any(
        "," in a for a in names):
      raise ValueError(f"{prefix} action_names must be non-empty, distinct ignoring case and "
                       f"brackets, without commas; got {names!r}.")
    if self.parallel > 1 and any(PARALLEL_SEPARATOR in a for a in names):
      raise ValueError(f"{prefix} action_names must not contain '{PARALLEL_SEPARATOR}' with "
                       f"parallel > 1; got {names!r}.")
    self._layout  # Fails early on too many running totals.  # pylint: disable=pointless-statement

  # --- The table. ---

  @property
  def family(self) -> str | None:
    """The family's name for payoffs="family:<name>", else None."""
    if isinstance(self.payoffs, str) and self.payoffs.startswith(FAMILY_PREFIX):
      return self.payoffs[len(FAMILY_PREFIX):]
    return None

  @functools.cached_property
  def table(self) -> np.ndarray | None:
    """float64 [n, m, 2], or None for a family (the tables are in the state)."""
    if self.family is not None:
      return None
    if isinstance(self.payoffs, str) and self.payoffs in KNOWN_GAMES:
      return np.asarray(KNOWN_GAMES[self.payoffs][0], np.float64)
    if isinstance(self.payoffs, str):
      return ordinal_2x2.flat_to_table(ordinal_2x2.ordinal_types().canonical[int(self.payoffs[2:])]).astype(np.float64)
    return np.asarray(self.payoffs, np.float64)

  @property
  def shape(self) -> tuple[int, int]:
    return (2, 2) if self.table is None else self.table.shape[:2]

  @property
  def zero_sum(self) -> bool:  # Constant-sum tables give zero-sum rewards (module docstring).
    sums = None if self.table is None else self.table.sum(-1)
    return sums is not None and bool(np.allclose(sums, sums.flat[0]))

  @property
  def cooperate(self) -> int | None:
    """The id of the move named 'cooperate', if any (cooperation statistics use it)."""
    return self.move_names.index(COOPERATE) if COOPERATE in self.move_names else None

  # --- The static description. ---

  @property
  def actions(self) -> tuple[str, ...]:
    """The move names, or with `parallel` > 1 every combination of one move per table."""
    if self.parallel == 1:
      return self.move_names
    return tuple(PARALLEL_SEPARATOR.join(combo)
                 for combo in itertools.product(self.move_names, repeat=self.parallel))

  @property
  def move_names(self) -> tuple[str, ...]:
    """The names of one table's moves."""
    if self.action_names is not None:
      return self.action_names
    if isinstance(self.payoffs, str) and self.payoffs in KNOWN_GAMES:
      return KNOWN_GAMES[self.payoffs][1]
    k = max(self.shape)
    if self.default_action_names is not None and len(self.default_action_names) == k:
      return self.default_action_names
    return _LETTERS[:k]

  @property
  def max_turns(self) -> int:
    return 2 * self.rounds

  @property
  def phrases(self) -> tuple[str, ...]:
    return self._layout.phrases

  @property
  def max_observation_phrases(self) -> int:
    n, m = self.shape
    parallel = self.parallel
    labelled = 2 if parallel > 1 else 1  # A table's outcome has a "Game t: " label in parallel.
    table = parallel * n * m + (parallel if parallel > 1 else 0)
    history = self.rounds * (1 + labelled * parallel)
    repeated = 3 if self.rounds > 1 else 0  # two totals and the round header
    return 1 + table + history + repeated + 1 + self.num_actions

  @functools.cached_property
  def _layout(self) -> _Layout:
    n, m = self.shape
    k = max(n, m)
    names = self.move_names
    phrase = _Interner()
    intro = np.array([phrase(_intro(p, self.rounds, self.hidden_rounds, self.sequential,
                                    self.parallel)) for p in (0, 1)])
    if self.table is None:
      values = np.arange(1.0, 5.0)
      seen = set(itertools.product(range(k), range(k), values, values))
      round_gains = np.unique([sum(c) for c in itertools.product(values, repeat=self.parallel)])
      own_values = [round_gains, round_gains]
    else:
      values = np.unique(self.table)
      seen = set()
      for i, j in itertools.product(range(n), range(m)):
        seen.add((i, j, self.table[i, j, 0], self.table[i, j, 1]))
        seen.add((j, i, self.table[i, j, 1], self.table[i, j, 0]))
      own_values = [np.unique(self.table[..., p]) for p in (0, 1)]
    values = np.unique(values.astype(np.float32))
    cells = np.zeros((k, k, len(values), len(values)), np.int32)
    outcomes = np.zeros_like(cells)
    for own, other, u, v in sorted(seen):
      u, v = np.float32(u), np.float32(v)
      index = (own, other, np.searchsorted(values, u), np.searchsorted(values, v))
      cells[index] = phrase(_cell_text(names[own], names[other], u, v))
      outcomes[index] = phrase(_outcome_text(names[own], names[other], u, v))
    labels = np.array([phrase(_label_text(r + 1, self.rounds, self.parallel))
                       for r in range(self.rounds)])
    game_labels = (np.array([phrase(_game_text(t)) for t in range(self.parallel)])
                   if self.parallel > 1 else np.zeros((1,), np.int32))
    totals = np.zeros((1,), np.float32)
    you_totals = they_totals = np.zeros((1,), np.int32)
    if self.rounds > 1:
      totals = _reachable_totals(own_values, self.rounds, self.name)
      you_totals = np.array([phrase(_you_total_text(t)) for t in totals])
      they_totals = np.array([phrase(_they_total_text(t)) for t in totals])
    headers = np.array([phrase(_round_text(r + 1, self.rounds, self.hidden_rounds))
                        for r in range(self.rounds)])
    legal, game_over = phrase(_LEGAL), phrase(_GAME_OVER)
    first_moves = np.array([phrase(f"[{a}]") for a in self.actions])
    more_moves = np.array([phrase(f", [{a}]") for a in self.actions])
    # Table lines: own move major, then the other's move; Player 1's own moves are the columns.
    cell_rows = np.stack([np.repeat(np.arange(n), m), np.tile(np.arange(n), m)])
    cell_cols = np.stack([np.tile(np.arange(m), n), np.repeat(np.arange(m), n)])
    as_int = lambda x: np.asarray(x, np.int32)
    return _Layout(tuple(phrase.texts), as_int(intro), values, cells, outcomes, as_int(labels),
                   as_int(game_labels),
                   totals, as_int(you_totals), as_int(they_totals), as_int(headers), legal,
                   game_over, as_int(first_moves), as_int(more_moves), as_int(cell_rows),
                   as_int(cell_cols))

  # --- Rules. ---

  def _legal_mask(self, player: jax.Array) -> jax.Array:
    if self.parallel > 1:  # 2x2 tables: every combination is legal for both.
      return jnp.ones((self.num_actions,), bool)
    n, m = self.shape
    return jnp.arange(max(n, m)) < jnp.where(player == 0, n, m)

  def table_moves(self, actions):
    """int [..., parallel]: each table's move of actions [...] (numpy or jax; NO_CHOICE stays)."""
    xp = jnp if isinstance(actions, jax.Array) else np
    actions = actions[..., None]
    if self.parallel == 1:
      return actions
    shifts = xp.arange(self.parallel - 1, -1, -1)
    return xp.where(actions < 0, NO_CHOICE, (actions >> shifts) & 1)

  def _init(self, key: jax.Array) -> api.State:
    if self.table is None:
      types, members = ordinal_2x2.ordinal_types(), family_pairs(self.family)
      draws = (self.rounds if self.sequential else 1, self.parallel)
      pair = jnp.asarray(members)[jax.random.randint(key, draws, 0, len(members))]
      pair = jnp.broadcast_to(pair, (self.rounds, self.parallel))
      payoffs = jnp.asarray(ordinal_2x2.flat_to_table(types.pairs), jnp.float32)[pair]
      kind = jnp.asarray(types.type_of)[pair]
    else:
      payoffs = jnp.broadcast_to(jnp.asarray(self.table, jnp.float32),
                                 (self.rounds, 1, *self.table.shape))
      kind = jnp.full((self.rounds, 1),
                      -1 if (t := ordinal_2x2.ordinal_type(self.table)) is None else t)
    data = Rounds(payoffs=payoffs, kind=kind.astype(jnp.int32),
                  choices=jnp.full((self.rounds, 2), NO_CHOICE, jnp.int32),
                  rounds_done=jnp.int32(0), totals=jnp.zeros((2,), jnp.float32))
    return api.new_state(self, data, self._legal_mask(jnp.int32(0)))

  def _step(self, state: api.State, action: jax.Array, key: jax.Array) -> api.State:
    del key
    data, player = state.data, state.current_player
    current = data.rounds_done
    choices = data.choices.at[current, player].set(action)
    round_over = player == 1
    # The round's payoffs summed over its tables, used only when Player 1 has moved.
    rows, cols = self.table_moves(choices[current, 0]), self.table_moves(action)  # [parallel]
    gains = data.payoffs[current, jnp.arange(self.parallel), rows, cols].sum(0)  # [2]
    totals = data.totals + jnp.where(round_over, gains, 0.0)
    rounds_done = current + round_over.astype(jnp.int32)
    game_over = rounds_done == self.rounds
    low = data.payoffs.min((2, 3)).sum((0, 1))  # [2]
    high = data.payoffs.max((2, 3)).sum((0, 1))
    spread = high - low
    scaled = jnp.where(spread > 0, 2 * (totals - low) / jnp.where(spread > 0, spread, 1) - 1, 0)
    next_player = 1 - player
    return state.replace(
        data=data.replace(choices=choices, rounds_done=rounds_done, totals=totals),
        current_player=next_player,
        legal_action_mask=self._legal_mask(next_player) & ~game_over,
        rewards=jnp.where(game_over, scaled, 0.0).astype(jnp.float32),
        terminated=game_over,
    )

  # --- Observations. ---

  def _outcome_ids(self, lookup: np.ndarray, payoffs: jax.Array, player: jax.Array,
                   rows: jax.Array, cols: jax.Array) -> jax.Array:
    """Phrase ids [K] of outcomes (rows[k], cols[k]) of tables payoffs[k] as `player` sees them."""
    values = jnp.asarray(self._layout.values)
    cell = payoffs[jnp.arange(rows.shape[0]), rows, cols]  # [K, 2]
    mine = jnp.where(player == 0, cell[..., 0], cell[..., 1])
    theirs = jnp.where(player == 0, cell[..., 1], cell[..., 0])
    own = jnp.where(player == 0, rows, cols)
    other = jnp.where(player == 0, cols, rows)
    index = lambda x: jnp.clip(jnp.searchsorted(values, x), 0, values.shape[0] - 1)
    return jnp.asarray(lookup)[own, other, index(mine), index(theirs)]

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    layout, data = self._layout, state.data
    rows = jnp.where(player == 0, layout.cell_rows[0], layout.cell_rows[1])
    cols = jnp.where(player == 0, layout.cell_cols[0], layout.cell_cols[1])
    parallel, lines = self.parallel, rows.shape[0]
    game_labels = jnp.asarray(layout.game_labels)
    # This round's tables [parallel, n, m, 2], each shown as its `lines` payoff lines.
    current = data.payoffs[jnp.minimum(data.rounds_done, self.rounds - 1)]
    cells = self._outcome_ids(layout.cells, jnp.repeat(current, lines, axis=0), player,
                              jnp.tile(rows, parallel), jnp.tile(cols, parallel))
    cells = cells.reshape(parallel, lines)
    if parallel > 1:
      cells = jnp.concatenate([game_labels[:, None], cells], 1)
    parts = [jnp.asarray(layout.intro)[player], cells.reshape(-1)]
    done = jnp.arange(self.rounds) < data.rounds_done
    moves = self.table_moves(jnp.maximum(data.choices, 0))  # [rounds, 2, parallel]
    outcomes = self._outcome_ids(
        layout.outcomes, data.payoffs.reshape(-1, *data.payoffs.shape[2:]), player,
        moves[:, 0].reshape(-1), moves[:, 1].reshape(-1)).reshape(self.rounds, parallel)
    if parallel > 1:
      labelled = jnp.broadcast_to(game_labels, outcomes.shape)
      outcomes = jnp.stack([labelled, outcomes], 2).reshape(self.rounds, 2 * parallel)
    history = jnp.concatenate([jnp.asarray(layout.labels)[:, None], outcomes], 1)
    parts.append(jnp.where(done[:, None], history, api.PAD_PHRASE).reshape(-1))
    if self.rounds > 1:
      totals = jnp.asarray(layout.totals)
      nearest = jnp.argmin(jnp.abs(totals[None, :] - data.totals[:, None]), axis=1)
      mine, theirs = nearest[player], nearest[1 - player]
      shown = jnp.stack([jnp.asarray(layout.you_totals)[mine],
                         jnp.asarray(layout.they_totals)[theirs]])
      parts.append(jnp.where(data.rounds_done > 0, shown, api.PAD_PHRASE))
      header = jnp.asarray(layout.round_headers)[jnp.minimum(data.rounds_done, self.rounds - 1)]
      parts.append(jnp.where(state.terminated, api.PAD_PHRASE, header))
    parts.append(jnp.where(state.terminated, layout.game_over, layout.legal))
    legal = state.legal_action_mask
    first = jnp.arange(self.num_actions) == jnp.argmax(legal)
    move_ids = jnp.where(first, jnp.asarray(layout.first_moves), jnp.asarray(layout.more_moves))
    parts.append(jnp.where(legal, move_ids, api.PAD_PHRASE))
    return jnp.concatenate([jnp.atleast_1d(p) for p in parts]).astype(jnp.int32)

  def intro(self, player: int) -> str:
    return _intro(player, self.rounds, self.hidden_rounds, self.sequential, self.parallel)

  def render_text(self, state: api.State, player: int) -> str:
    data, names = state.data, self.move_names
    payoffs = np.asarray(data.payoffs)  # [rounds, parallel, n, m, 2]
    n, m = self.shape
    other = 1 - player
    rounds_done = int(data.rounds_done)
    labelled = lambda t: _game_text(t) if self.parallel > 1 else ""
    text = self.intro(player)
    seen_as = lambda i, j: ((i, j) if player == 0 else (j, i))  # (own move, other's move)
    lines = sorted((seen_as(i, j), (i, j)) for i in range(n) for j in range(m))
    for t, table in enumerate(payoffs[min(rounds_done, self.rounds - 1)]):
      text += labelled(t)
      for (own, theirs), (i, j) in lines:
        text += _cell_text(names[own], names[theirs], table[i, j, player], table[i, j, other])
    moves = self.table_moves(np.asarray(data.choices))  # [rounds, 2, parallel]
    for r in range(rounds_done):
      text += _label_text(r + 1, self.rounds, self.parallel)
      for t in range(self.parallel):
        i, j = (int(x) for x in moves[r, :, t])
        own, theirs = seen_as(i, j)
        text += labelled(t) + _outcome_text(names[own], names[theirs],
                                            payoffs[r, t, i, j, player], payoffs[r, t, i, j, other])
    if self.rounds > 1:
      if rounds_done > 0:
        text += (_you_total_text(float(data.totals[player]))
                 + _they_total_text(float(data.totals[other])))
      if not state.terminated:
        text += _round_text(min(rounds_done, self.rounds - 1) + 1, self.rounds,
                            self.hidden_rounds)
    if state.terminated:
      return text + _GAME_OVER
    names = self.actions
    legal = ", ".join(f"[{a}]" for a, ok in zip(names, state.legal_action_mask) if ok)
    return text + _LEGAL + legal

  # --- Evaluation. ---

  def eval_stats(self, final_states: api.State, learner_seat) -> dict[str, float]:
    """Over the learner's moves in finished games (host arrays, batch [B]; self-play rows, seat
    -1, are skipped), each move judged against its round's table (each table of a parallel
    game on its own):
    - nash_action_rate: share of its moves that belong to a pure Nash equilibrium of the table
      (counted over tables that have one);
    - nash_outcome_rate: share of finished rounds whose outcome is a pure Nash equilibrium (same
      tables);
    - for a family, TMGBench-style per equilibrium family: nash_action_rate_one_pure_ne and
      nash_action_rate_two_pure_ne (the same rate over tables with one / two pure equilibria);
    - mixed_nash_gap (2x2 tables without a pure equilibrium): how far the learner's frequency of
      its first move is from its mixed-equilibrium probability p*, as a root mean square over
      groups of moves with the same table and seat (each group of n >= MIXED_NASH_MIN_MOVES
      moves, frequency f, weighs n): sqrt(max(0, mean of (f - p*)^2 - f (1 - f) / (n - 1))),
      the second term removing the sampling noise (f's variance) from each group's squared gap;
    - cooperation_rate (games with a 'cooperate' move): share of its moves that cooperate;
    - forgiveness_rate (repeated such games): share of games where it cooperated in the round
      after the opponent's first non-cooperative move, over games with such a round (and a move
      of the learner in it).
    A statistic with nothing to count is left out.
    """
    data = final_states.data
    # Each table of a parallel game counts as a game of its own: rows [B * parallel].
    choices = self.table_moves(np.asarray(data.choices))  # [B, R, 2, parallel]
    choices = np.moveaxis(choices, 3, 1).reshape(-1, *choices.shape[1:3])  # [B', R, 2]
    payoffs = np.asarray(data.payoffs)  # [B, R, parallel, n, m, 2]
    payoffs = np.moveaxis(payoffs, 2, 1).reshape(-1, *payoffs.shape[1:2], *payoffs.shape[3:])
    seat = np.repeat(np.asarray(learner_seat).astype(np.int64), self.parallel)
    learner = seat >= 0
    seat = np.maximum(seat, 0)
    rows = np.arange(choices.shape[0])
    mine, theirs = choices[rows, :, seat], choices[rows, :, 1 - seat]  # [B, R]
    made = (mine >= 0) & learner[:, None]
    finished = (choices[..., 1] >= 0) & learner[:, None]  # Player 1 moves last in a round.
    nash = pure_nash(payoffs)  # [B, R, n, m]
    equilibria = nash.sum((2, 3))  # [B, R]
    own_nash = np.where(seat[:, None, None] == 0, nash.any(3), nash.any(2))  # [B, R, k]
    in_nash = np.take_along_axis(own_nash, mine.clip(0)[..., None], 2)[..., 0]
    outcome_nash = nash[rows[:, None], np.arange(choices.shape[1]), choices[..., 0].clip(0),
                        choices[..., 1].clip(0)]
    stats = {}
    _rate(stats, "nash_action_rate", in_nash, made & (equilibria > 0))
    _rate(stats, "nash_outcome_rate", outcome_nash, finished & (equilibria > 0))
    if self.family is not None:
      for count in (1, 2):
        _rate(stats, f"nash_action_rate_{EQUILIBRIUM_FAMILIES[count]}", in_nash,
              made & (equilibria == count))
    if self.shape == (2, 2):
      gap = _mixed_nash_gap(payoffs, mine, seat, made & (equilibria == 0))
      if gap is not None:
        stats["mixed_nash_gap"] = gap
    cooperate = self.cooperate
    if cooperate is not None:
      _rate(stats, "cooperation_rate", mine == cooperate, made)
      if self.rounds > 1:
        defected = finished & (theirs != cooperate)
        first = np.argmax(defected, axis=1)
        after = np.minimum(first + 1, self.rounds - 1)
        next_move = mine[rows, after]
        counted = defected.any(1) & (first + 1 < self.rounds) & (next_move >= 0)
        _rate(stats, "forgiveness_rate", next_move == cooperate, counted)
    return stats


def _mixed_nash_gap(payoffs: np.ndarray, mine: np.ndarray, seat: np.ndarray,
                    counted: np.ndarray) -> float | None:
  """The eval_stats `mixed_nash_gap` of moves mine[b, r] where counted (tables payoffs[b, r]
  without a pure equilibrium, the learner in seat[b]); None with no group to count."""
  groups: dict[tuple[bytes, int], list[int]] = {}
  targets: dict[tuple[bytes, int], float] = {}
  for b, r in zip(*np.nonzero(counted)):
    key = (payoffs[b, r].tobytes(), int(seat[b]))
    groups.setdefault(key, []).append(int(mine[b, r] == 0))
    targets[key] = float(mixed_nash(payoffs[b, r])[seat[b]])
  total = weight = 0.0
  for key, firsts in groups.items():
    n = len(firsts)
    if n < MIXED_NASH_MIN_MOVES:
      continue
    f = float(np.mean(firsts))
    total += n * ((f - targets[key]) ** 2 - f * (1 - f) / (n - 1))
    weight += n
  return None if weight == 0 else math.sqrt(max(0.0, total / weight))


def _rate(stats: dict[str, float], name: str, hits: np.ndarray, counted: np.ndarray) -> None:
  if counted.any():
    stats[name] = float(hits[counted].mean())


def _check_table(table, prefix: str) -> None:
  problem = f"{prefix} payoffs must be a known name or a table: a tuple of rows, each a tuple " \
            "of (row player payoff, column player payoff) pairs, all rows of one length"
  if not isinstance(table, tuple) or not table or not all(
      isinstance(r, tuple) and r and len(r) == len(table[0]) for r in table):
    raise ValueError(f"{problem}; got {table!r}.")
  for row in table:
    for pair in row:
      if not (isinstance(pair, tuple) and len(pair) == 2 and all(
          isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
          for x in pair)):
        raise ValueError(f"{problem} of finite numbers; got the cell {pair!r}.")


def _reachable_totals(own_values: list[np.ndarray], rounds: int, game: str) -> np.ndarray:
  """float32: every running total either player can have after 0..rounds rounds."""
  seen = set()
  for values in own_values:
    reach = {0.0}
    seen |= reach
    for _ in range(rounds):
      reach = {round(s + float(v), 9) for s in reach for v in values}
      seen |= reach
      if len(seen) > MAX_TOTALS:
        raise ValueError(f"{game}: payoffs and rounds={rounds} give more than {MAX_TOTALS} "
                         "distinct running totals; use fewer rounds or fewer distinct payoffs.")
  return np.unique(np.asarray(sorted(seen), np.float32))


@api.register
@dataclasses.dataclass(frozen=True)
class IteratedPrisonersDilemma(MatrixGame):
  """The repeated Prisoner's Dilemma, T=5, R=3, P=1, S=0 by default; moves (cooperate, defect)."""

  payoffs: Any = PRISONERS_DILEMMA_5310
  rounds: int = 5

  name = "iterated_prisoners_dilemma"
  default_action_names = ("cooperate", "defect")

  def __post_init__(self):
    super().__post_init__()
    table = self.table
    two_by_two = table is not None and table.shape == (2, 2, 2)
    # The row player's temptation, reward, punishment and sucker payoffs.
    t, r, p, s = (table[1, 0, 0], table[0, 0, 0], table[1, 1, 0], table[0, 1, 0]) if (
        two_by_two) else (0, 0, 0, 0)
    if not (two_by_two and np.array_equal(table[..., 0], table[..., 1].T) and t > r > p > s):
      raise ValueError(f"{self.name}: payoffs must be a symmetric 2x2 Prisoner's Dilemma "
                       f"(T > R > P > S), got {self.payoffs!r}.")


@api.register
@dataclasses.dataclass(frozen=True)
class RepeatedBattleOfTheSexes(MatrixGame):
  """The repeated Battle of the Sexes: (2, 1) both at opera, (1, 2) both at football, 0 else."""

  payoffs: Any = BATTLE_OF_THE_SEXES_210
  rounds: int = 5

  name = "repeated_battle_of_the_sexes"
  default_action_names = ("opera", "football")

  def __post_init__(self):
    super().__post_init__()
    if self.table is None or self.table.shape != (2, 2, 2):
      raise ValueError(f"{self.name}: payoffs must be a 2x2 table, got {self.payoffs!r}.")
