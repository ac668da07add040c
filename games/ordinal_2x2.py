"""The 144 strict ordinal 2x2 games: Robinson & Goforth's topology, generated from its definition.

Robinson & Goforth, "The Topology of the 2x2 Games: A New Periodic Table" (Routledge, 2005):
in a strict ordinal 2x2 game each player ranks the four outcomes 1 (worst) to 4 (best). The
24 x 24 = 576 ordered pairs of rankings fall into 144 classes under relabelling the row
player's moves (swapping rows) and/or the column player's (swapping columns): the swaps form a
group of 4 that moves the row player's 4 to a different cell each time, so every class has
exactly 4 members. Players are not swapped (that would give 78 classes).

Our indexing (NOT Robinson & Goforth's numbering): write a table row-major as
(a00, a01, a10, a11, b00, b01, b10, b11), a the row player's ranks, b the column player's.
A class's canonical member is the one with the row player's 4 in the top-left cell (a00 = 4;
exactly one member has it). Classes are numbered 0-143 in the lexicographic order of their
canonical members' 8-tuples, and named "rg000".."rg143" by `matrix_game`: rg000 is
a = (4, 1, 2, 3), b = (1, 2, 3, 4); rg143 is a = (4, 3, 2, 1), b = (4, 3, 2, 1).
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import numpy as np

# Swapping rows maps the row-major cell k to k ^ 2, swapping columns to k ^ 1.
_SYMMETRIES = np.array([[k ^ s for k in range(4)] for s in range(4)], np.int32)


class OrdinalTypes(NamedTuple):
  canonical: np.ndarray  # int32 [144, 8]: each class's canonical member, row-major (a, b).
  pairs: np.ndarray  # int32 [576, 8]: every ordered pair of rankings.
  type_of: np.ndarray  # int32 [576]: the class of each pair.


@functools.cache
def ordinal_types() -> OrdinalTypes:
  """The 144 classes, generated from the definition above."""
  perms = np.array(list(itertools.permutations((1, 2, 3, 4))), np.int32)  # [24, 4]
  row, col = np.repeat(perms, 24, axis=0), np.tile(perms, (24, 1))
  pairs = np.concatenate([row, col], axis=1)
  members = np.stack([np.concatenate([row[:, s], col[:, s]], 1) for s in _SYMMETRIES], 1)
  canonical_member = np.argmax(members[:, :, 0] == 4, axis=1)
  canonical = members[np.arange(len(pairs)), canonical_member]
  reps, type_of = np.unique(canonical, axis=0, return_inverse=True)
  return OrdinalTypes(reps.astype(np.int32), pairs, type_of.reshape(-1).astype(np.int32))


def flat_to_table(flat) -> np.ndarray:
  """A row-major (a00, a01, a10, a11, b00, b01, b10, b11) tuple as a table [2, 2, 2]."""
  flat = np.asarray(flat)
  return np.stack([flat[..., :4], flat[..., 4:]], -1).reshape(flat.shape[:-1] + (2, 2, 2))


def ordinal_type(table) -> int | None:
  """The class index of a 2x2 table whose players each rank the 4 outcomes strictly (payoffs
  may be cardinal: only their order counts); None for other tables."""
  table = np.asarray(table, np.float64)
  if table.shape != (2, 2, 2):
    return None
  flat = []
  for player in range(2):
    values = table[..., player].reshape(-1)
    if len(set(values.tolist())) != 4:
      return None
    flat += list(np.argsort(np.argsort(values)) + 1)
  return _pair_index()[tuple(int(x) for x in flat)]


@functools.cache
def _pair_index() -> dict[tuple[int, ...], int]:
  types = ordinal_types()
  return {tuple(int(x) for x in pair): int(t) for pair, t in zip(types.pairs, types.type_of)}
