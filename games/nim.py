"""Nim (normal play): players alternately remove one or more objects from one pile; whoever
takes the last object wins (+1/-1). Player 0 moves first.

Action text is "pile amount" with a 0-based pile index, e.g. "0 3" removes 3 objects from pile 0;
the observation shows legal moves as "[0 3]". After the parser's normalisation (brackets dropped,
runs of spaces collapsed) "[0 3]", "0 3" and "0  3" all match; "0, 3" or "3 from pile 0" do not.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api


@struct.dataclass
class Piles:
  sizes: jax.Array  # int32 [num_piles]: objects left in each pile.
  start: tuple[int, ...] = struct.field(pytree_node=False)  # The game's piles (static).


def moves(piles: tuple[int, ...]) -> np.ndarray:
  """(pile, amount) of each action id, int32 [num_actions, 2]: pile-major, amounts ascending."""
  return np.array([(p, k) for p, size in enumerate(piles) for k in range(1, size + 1)], np.int32)


def _intro(player: int, piles: tuple[int, ...]) -> str:
  return (f"You are Player {player} in a game of Nim (Player 0 moves first).\n"
          "Rules:\n"
          f"- There are {len(piles)} piles of objects, numbered from 0.\n"
          "- On your turn, remove one or more objects from a single pile.\n"
          "- The player who takes the last object wins.\n"
          "- Write a move as [pile amount]: for example, [0 3] removes 3 objects from pile 0.\n"
          "Current piles:\n")


def _pile_text(pile: int, size: int) -> str:
  return f"pile {pile}: {size}\n"


_LEGAL = "Your legal moves: "
_GAME_OVER = "The game is over."


@api.register
@dataclasses.dataclass(frozen=True)
class Nim(api.Game):
  piles: tuple[int, ...] = (3, 4, 5)

  name = "nim"

  def __post_init__(self):
    if not self.piles or min(self.piles) < 1:
      raise ValueError(f"nim: piles must be a non-empty tuple of sizes >= 1, got {self.piles}.")

  @property
  def actions(self) -> tuple[str, ...]:
    return tuple(f"{p} {k}" for p, k in moves(self.piles))

  @property
  def max_turns(self) -> int:
    return sum(self.piles)

  @property
  def phrases(self) -> tuple[str, ...]:
    return ("", _intro(0, self.piles), _intro(1, self.piles),
            *(_pile_text(p, s) for p, size in enumerate(self.piles) for s in range(size + 1)),
            _LEGAL, _GAME_OVER, *(f"[{a}]" for a in self.actions),
            *(f", [{a}]" for a in self.actions))

  @property
  def max_observation_phrases(self) -> int:
    return 1 + len(self.piles) + 1 + self.num_actions  # intro, piles, legal header, moves

  def _init(self, key: jax.Array) -> api.State:
    del key
    sizes = jnp.asarray(self.piles, jnp.int32)
    return api.new_state(self, Piles(sizes, self.piles), self._legal_mask(sizes))

  def _step(self, state: api.State, action: jax.Array, key: jax.Array) -> api.State:
    del key
    pile, amount = jnp.asarray(moves(self.piles))[action]
    sizes = state.data.sizes.at[pile].add(-amount)
    player = state.current_player
    won = (sizes == 0).all()
    winner_rewards = jnp.where(jnp.arange(2) == player, 1.0, -1.0)
    return state.replace(
        data=Piles(sizes, self.piles),
        current_player=1 - player,
        legal_action_mask=self._legal_mask(sizes),
        rewards=jnp.where(won, winner_rewards, 0.0).astype(jnp.float32),
        terminated=won,
    )

  def _legal_mask(self, sizes: jax.Array) -> jax.Array:
    pile, amount = jnp.asarray(moves(self.piles)).T
    return amount <= sizes[pile]

  def _render(self, state: api.State, player: jax.Array) -> jax.Array:
    ids = {p: i for i, p in enumerate(self.phrases)}
    first_pile_ids = np.cumsum([0, *(s + 1 for s in self.piles[:-1])]) + ids[_pile_text(0, 0)]
    pile_ids = jnp.asarray(first_pile_ids) + state.data.sizes
    legal = state.legal_action_mask
    action_ids = jnp.arange(self.num_actions)
    move_ids = jnp.where(action_ids == jnp.argmax(legal), ids[f"[{self.actions[0]}]"],
                         ids[f", [{self.actions[0]}]"]) + action_ids
    move_ids = jnp.where(legal, move_ids, api.PAD_PHRASE)
    head = [ids[self.intro(0)] + player, pile_ids,
            jnp.where(state.terminated, ids[_GAME_OVER], ids[_LEGAL])]
    return jnp.concatenate([*(jnp.atleast_1d(h) for h in head), move_ids]).astype(jnp.int32)

  def intro(self, player: int) -> str:
    return _intro(player, self.piles)

  def render_text(self, state: api.State, player: int) -> str:
    sizes = np.asarray(state.data.sizes)
    text = self.intro(player) + "".join(_pile_text(p, s) for p, s in enumerate(sizes))
    if state.terminated:
      return text + _GAME_OVER
    legal = ", ".join(f"[{a}]" for a, ok in zip(self.actions, state.legal_action_mask) if ok)
    return text + _LEGAL + legal
