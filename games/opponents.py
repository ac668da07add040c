"""Fixed opponents: jittable policies `(state, key) -> action` over a single (unbatched) state."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from games import api
from games import cfr
from games import kuhn_poker
from games import leduc_poker
from games import nim
from games import simple_negotiation
from games import tic_tac_toe


def uniform_random(state: api.State, key: jax.Array) -> jax.Array:
  """Uniform over the legal actions (action 0 when none is legal, i.e. at the end)."""
  logits = jnp.where(state.legal_action_mask, 0.0, -jnp.inf)
  any_legal = state.legal_action_mask.any()
  action = jax.random.categorical(key, jnp.where(any_legal, logits, 0.0))
  return jnp.where(any_legal, action, 0).astype(jnp.int32)


# --- Kuhn Poker ---

# Action ids for (pass, bet) at each node of kuhn_poker.NODES: check/bet, then fold/call.
_KUHN_NODE_ACTIONS = np.array([[kuhn_poker.CHECK, kuhn_poker.BET]] * 2
                              + [[kuhn_poker.FOLD, kuhn_poker.CALL]] * 2, np.int32)


def kuhn_nash_probs(alpha) -> jax.Array:
  """Kuhn's Nash family for one round, alpha in [0, 1/3]: probs float32[card, node, (pass, bet)].

  The opener bets J with alpha, K with 3 alpha, checks Q, and after check-bet calls Q with
  alpha + 1/3 (K calls, J folds). The responder bets K and a third of J after a check, and facing
  a bet calls K, a third of Q, never J. The opener's value is -1/18 for every alpha.
  """
  alpha = jnp.asarray(alpha, jnp.float32)
  third = jnp.float32(1 / 3)
  bet = jnp.stack([  # bet/call probability [card, node]; nodes "", "p", "b", "pb".
      jnp.stack([alpha, third, 0.0, 0.0]),
      jnp.stack([0.0, 0.0, third, alpha + third]),
      jnp.stack([3 * alpha, 1.0, 1.0, 1.0]),
  ])
  return jnp.stack([1 - bet, bet], axis=-1)


def kuhn_tabular(probs: jax.Array):
  """A policy `(state, key) -> action` playing probs[card, node, (pass, bet)] in every round."""
  probs = jnp.asarray(probs, jnp.float32)

  def policy(state: api.State, key: jax.Array) -> jax.Array:
    card, node = kuhn_poker.information_set(state)
    bet = jax.random.bernoulli(key, probs[card, node, 1]).astype(jnp.int32)
    action = jnp.asarray(_KUHN_NODE_ACTIONS)[node, bet]
    return jnp.where(state.legal_action_mask.any(), action, 0).astype(jnp.int32)

  return policy


def kuhn_nash(alpha=1 / 6):
  """A Nash policy of the family above (alpha may be traced)."""
  return kuhn_tabular(kuhn_nash_probs(alpha))


# --- TicTacToe ---

_TTT_POWERS = 3 ** np.arange(9)


def tic_tac_toe_index(cells):
  """Base-3 index of a board int32[..., 9] (numpy or jax): digit c is cells[c] + 1."""
  return ((cells + 1) * _TTT_POWERS).sum(-1)


@functools.cache
def tic_tac_toe_tables() -> tuple[np.ndarray, np.ndarray]:
  """Negamax over every reachable board, indexed by `tic_tac_toe_index`.

  Returns values int8[3**9] for the player to move (a win scores 10 - marks on the final board, so
  faster wins score higher; draws 0; losses negative) and best bool[3**9, 9], the moves reaching the
  value (none on terminal or unreachable boards).
  """
  values = np.zeros(3**9, np.int8)
  best = np.zeros((3**9, 9), bool)
  solved = set()

  def solve(cells, player):
    index = int(tic_tac_toe_index(cells))
    if index not in solved:
      solved.add(index)
      marks = int((cells != tic_tac_toe.EMPTY).sum())
      if (cells[tic_tac_toe.LINES] == 1 - player).all(-1).any():
        values[index] = marks - 10  # The opponent has just won.
      elif marks < 9:
        child_values = np.full(9, np.iinfo(np.int8).min, np.int32)
        for action in np.flatnonzero(cells == tic_tac_toe.EMPTY):
          child = cells.copy()
          child[action] = player
          child_values[action] = -solve(child, 1 - player)
        values[index] = child_values.max()
        best[index] = child_values == values[index]
    return int(values[index])

  solve(np.full(9, tic_tac_toe.EMPTY, np.int32), 0)
  return values, best


def tic_tac_toe_minimax(state: api.State, key: jax.Array) -> jax.Array:
  """A perfect player: uniform over the moves with the best minimax value, preferring faster wins.

  Returns action 0 on a terminal board.
  """
  best = jnp.asarray(tic_tac_toe_tables()[1])[tic_tac_toe_index(state.data.cells)]  # bool [9]
  action = jax.random.categorical(key, jnp.where(best, 0.0, -jnp.inf))
  return jnp.where(best.any(), action, 0).astype(jnp.int32)


# --- Simple Negotiation ---


def negotiation_heuristic(state: api.State, key: jax.Array) -> jax.Array:
  """Trades only for its own gain, judged by its own values (it never uses the other's values).

  In order of preference: accepts a standing offer that raises its inventory value; else offers a
  trade that the other player can pay, that raises its value and gives no more units than it
  receives; else such a trade giving more units; else denies; else any legal move.
  """
  market, player = state.data, state.current_player
  legal = state.legal_action_mask
  trades = jnp.asarray(simple_negotiation.TRADES)  # the proposer's change [action, resource]
  values = jnp.asarray(simple_negotiation.VALUES)[player]
  offered = trades[jnp.maximum(market.offer, 0)]  # the other player's change if accepted
  action_ids = jnp.arange(legal.shape[0])
  accept = legal & (action_ids == simple_negotiation.ACCEPT) & (offered @ values < 0)
  other_can_pay = (market.goods[1 - player] - trades >= 0).all(-1)
  gainful = legal & other_can_pay & (trades @ values > 0)
  greedy = gainful & (trades.sum(-1) >= 0)
  deny = legal & (action_ids == simple_negotiation.DENY)
  preferred = jnp.stack([accept, greedy, gainful, deny, legal])  # bool [tier, action]
  mask = preferred[jnp.argmax(preferred.any(-1))]
  return uniform_random(state.replace(legal_action_mask=mask), key)


# --- Nim ---


def nim_optimal(state: api.State, key: jax.Array) -> jax.Array:
  """The xor rule: a move leaving a zero nim-sum, uniformly among them; else uniform random.

  Returns action 0 at the end.
  """
  sizes = state.data.sizes
  pile, amount = jnp.asarray(nim.moves(state.data.start)).T
  nim_sum = jax.lax.reduce(sizes, np.int32(0), jax.lax.bitwise_xor, (0,))
  winning = state.legal_action_mask & (sizes[pile] - amount == (sizes[pile] ^ nim_sum))
  winning &= nim_sum != 0
  mask = jnp.where(winning.any(), winning, state.legal_action_mask)
  return uniform_random(state.replace(legal_action_mask=mask), key)


# --- Leduc Poker ---


def leduc_equilibrium(state: api.State, key: jax.Array) -> jax.Array:
  """Samples the CFR+ equilibrium (games.cfr.leduc_equilibrium) at the mover's information set.

  The table is computed at the first call (about 10 s on CPU). Returns action 0 at the end.
  """
  keys, probs = (jnp.asarray(x) for x in cfr.leduc_equilibrium())
  info = leduc_poker.information_set(state)
  row = jnp.minimum(jnp.searchsorted(keys, info), len(keys) - 1)
  found = (keys[row] == info) & state.legal_action_mask.any()
  action = jax.random.categorical(key, jnp.log(jnp.where(state.legal_action_mask, probs[row], 0.0)))
  return jnp.where(found, action, 0).astype(jnp.int32)


# --- By name ---

_BY_GAME = {
    "kuhn_poker": {"optimal": kuhn_nash()},
    "tic_tac_toe": {"optimal": tic_tac_toe_minimax},
    "simple_negotiation": {"scripted": negotiation_heuristic},
    "nim": {"optimal": nim_optimal},
    "leduc_poker": {"optimal": leduc_equilibrium},
}


def names(game_name: str) -> tuple[str, ...]:
  """Opponents available for a game: 'random' plus its scripted/optimal players."""
  return ("random", *_BY_GAME.get(game_name, {}))


def get(game_name: str, opponent_name: str):
  """The opponent policy `opponent_name` ('random', 'optimal', 'scripted') for a game."""
  if opponent_name == "random":
    return uniform_random
  if opponent_name not in _BY_GAME.get(game_name, {}):
    raise ValueError(f"Unknown opponent {opponent_name!r} for {game_name!r}; "
                     f"valid: {', '.join(names(game_name))}.")
  return _BY_GAME[game_name][opponent_name]
