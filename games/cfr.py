"""Counterfactual regret minimisation (CFR, CFR+) on a tabulated two-player zero-sum game tree.

The tree is built once from a game's own `step` (so the rules live only in the game file): every
chance event must happen at the roots (one root per deal, with its probability), and information
sets are the distinct values of a game's `information_set(state)` key. Nodes are stored level by
level (level d = d actions taken), which turns CFR into jitted per-level gathers and segment sums.

The updates follow OpenSpiel's CFRSolver (alternating updates, regret matching, uniform averaging)
and CFRPlusSolver (alternating updates, regret matching+, averaging weighted by the iteration).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api
from games import kuhn_poker
from games import leduc_poker


@struct.dataclass
class Tree:
  """Nodes in level order; `levels[d]` is the (start, end) slice of the nodes at depth d."""

  parent: jax.Array  # int32 [N]: the parent node (roots: 0, unused).
  action: jax.Array  # int32 [N]: the action leading here from the parent (roots: 0).
  player: jax.Array  # int32 [N]: the player to move (unused at terminals).
  infoset: jax.Array  # int32 [N]: row in the information-set tables; num_infosets at terminals.
  chance: jax.Array  # float32 [N]: probability of the node's deal.
  payoff: jax.Array  # float32 [N]: player 0's return at terminals, else 0.
  terminal: jax.Array  # bool [N]
  legal: jax.Array  # bool [I, A]: legal actions of each information set.
  keys: jax.Array  # int32 [I]: sorted information-set keys (row i has key keys[i]).
  levels: tuple[tuple[int, int], ...] = struct.field(pytree_node=False)

  @property
  def num_infosets(self) -> int:
    return self.keys.shape[0]


def _in_chunks(fn, *args, size: int = 1024):
  """fn over the leading axis of numpy pytrees `args`, in fixed-size chunks (one compilation)."""
  num = jax.tree.leaves(args)[0].shape[0]
  padded = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[:1], -num % size, 0)]), args)
  outs = [jax.device_get(fn(*jax.tree.map(lambda x: x[i:i + size], padded)))
          for i in range(0, num, size)]
  return jax.tree.map(lambda *x: np.concatenate(x)[:num], *outs)


def game_tree(game: api.Game, roots: api.State, root_probs, information_set) -> Tree:
  """Expands every legal action from the batched `roots` with the game's own step."""
  step = jax.jit(jax.vmap(lambda state, action: game.step(state, action, jax.random.key(0))))
  info = jax.jit(jax.vmap(information_set))
  frontier = jax.device_get(roots)
  num_roots = frontier.turn.shape[0]
  columns = {"parent": [np.zeros(num_roots, np.int32)], "action": [np.zeros(num_roots, np.int32)],
             "chance": [np.asarray(root_probs, np.float32)]}
  levels, states, keys, start = [], [], [], 0
  while True:
    size = frontier.turn.shape[0]
    levels.append((start, start + size))
    states.append(frontier)
    keys.append(_in_chunks(info, frontier))
    node, action = np.nonzero(frontier.legal_action_mask)
    if not len(node):
      break
    frontier = _in_chunks(step, jax.tree.map(lambda x: x[node], frontier), action.astype(np.int32))
    columns["parent"].append((start + node).astype(np.int32))
    columns["action"].append(action.astype(np.int32))
    columns["chance"].append(columns["chance"][-1][node])
    start += size
  states = jax.tree.map(lambda *x: np.concatenate(x), *states)
  terminal = states.terminated
  assert not states.invalid.any()
  node_keys = np.concatenate(keys)
  info_keys, infoset = np.unique(node_keys[~terminal], return_inverse=True)
  node_infoset = np.full(len(terminal), len(info_keys), np.int32)
  node_infoset[~terminal] = infoset

  def per_infoset(column):  # The column's value at each information set, the same at all nodes.
    row = np.zeros((len(info_keys),) + column.shape[1:], column.dtype)
    row[infoset] = column[~terminal]
    assert (row[infoset] == column[~terminal]).all(), "information sets mix players/depths/moves"
    return row

  per_infoset(states.current_player)
  per_infoset(np.repeat(np.arange(len(levels)), [e - s for s, e in levels]))  # One depth each.
  legal = per_infoset(states.legal_action_mask)
  return Tree(parent=jnp.asarray(np.concatenate(columns["parent"])),
              action=jnp.asarray(np.concatenate(columns["action"])),
              player=jnp.asarray(states.current_player), infoset=jnp.asarray(node_infoset),
              chance=jnp.asarray(np.concatenate(columns["chance"])),
              payoff=jnp.asarray(np.where(terminal, states.rewards[:, 0], 0.0), jnp.float32),
              terminal=jnp.asarray(terminal), legal=jnp.asarray(legal),
              keys=jnp.asarray(info_keys, jnp.int32), levels=tuple(levels))


def _with_cards(game: api.Game, deals: np.ndarray) -> api.State:
  roots = jax.vmap(game.init)(jax.random.split(jax.random.key(0), len(deals)))
  return roots.replace(data=roots.data.replace(cards=jnp.asarray(deals, jnp.int32)))


@functools.cache
def kuhn_tree() -> Tree:
  """Single-round Kuhn Poker; row card * 4 + node is kuhn_poker's (card, NODES index)."""
  game = kuhn_poker.KuhnPoker()
  deals = np.array(list(itertools.permutations(range(3), 2)))
  key = lambda s: (lambda card, node: card * 4 + node)(*kuhn_poker.information_set(s))
  return game_tree(game, _with_cards(game, deals), np.full(len(deals), 1 / len(deals)), key)


@functools.cache
def leduc_tree() -> Tree:
  """Leduc Poker from all 120 ordered deals (both private cards and the public card)."""
  game = leduc_poker.LeducPoker()
  deals = np.array(list(itertools.permutations(range(6), 3)))
  return game_tree(game, _with_cards(game, deals), np.full(len(deals), 1 / len(deals)),
                   leduc_poker.information_set)


# --- Tree sweeps. ---

def _rows(tree: Tree, table: jax.Array) -> jax.Array:
  """table[I, A] gathered per node, zeros at terminals: [N, A]."""
  padded = jnp.concatenate([table, jnp.zeros((1, table.shape[1]), table.dtype)])
  return padded[tree.infoset]


def _reach(tree: Tree, policy: jax.Array) -> jax.Array:
  """Each player's own probability of playing to each node: float32 [N, 2]."""
  reach = jnp.ones((tree.parent.shape[0], 2), jnp.float32)
  for start, end in tree.levels[1:]:
    parent = tree.parent[start:end]
    prob = _rows(tree, policy)[parent, tree.action[start:end]]
    moved = jnp.arange(2) == tree.player[parent][:, None]
    reach = reach.at[start:end].set(reach[parent] * jnp.where(moved, prob[:, None], 1.0))
  return reach


def _child_values(tree: Tree, depth: int, values: jax.Array) -> jax.Array:
  """values of the children of the depth-`depth` nodes, [nodes at depth, A] (0 if illegal)."""
  (start, end), (child_start, child_end) = tree.levels[depth], tree.levels[depth + 1]
  children = jnp.zeros((end - start, tree.legal.shape[1]), jnp.float32)
  return children.at[tree.parent[child_start:child_end] - start,
                     tree.action[child_start:child_end]].set(values[child_start:child_end])


def _values(tree: Tree, policy: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Player 0's expected return at each node [N] and after each action [N, A] under `policy`."""
  values = tree.payoff
  action_values = jnp.zeros((tree.parent.shape[0], tree.legal.shape[1]), jnp.float32)
  node_policy = _rows(tree, policy)
  for depth in reversed(range(len(tree.levels) - 1)):
    start, end = tree.levels[depth]
    children = _child_values(tree, depth, values)
    action_values = action_values.at[start:end].set(children)
    expected = (node_policy[start:end] * children).sum(-1)
    values = values.at[start:end].set(jnp.where(tree.terminal[start:end], values[start:end],
                                                expected))
  return values, action_values


def regret_matching(regrets: jax.Array, legal: jax.Array) -> jax.Array:
  """Policy [I, A] proportional to positive regrets, uniform over legal actions if none."""
  positive = jnp.where(legal, jnp.maximum(regrets, 0.0), 0.0)
  total = positive.sum(-1, keepdims=True)
  uniform = legal / legal.sum(-1, keepdims=True)
  return jnp.where(total > 0, positive / jnp.where(total > 0, total, 1.0), uniform)


# --- CFR. ---

@struct.dataclass
class Solver:
  regrets: jax.Array  # float32 [I, A]: cumulative counterfactual regrets.
  cumulative_policy: jax.Array  # float32 [I, A]: reach-weighted sum of the policies played.
  iteration: jax.Array  # int32 []: iterations done.


def init(tree: Tree) -> Solver:
  zeros = jnp.zeros(tree.legal.shape, jnp.float32)
  return Solver(zeros, zeros, jnp.int32(0))


def _update_player(tree: Tree, solver: Solver, player: int, plus: bool) -> Solver:
  """One CFR pass in which `player`'s regrets and average policy are updated."""
  policy = regret_matching(solver.regrets, tree.legal)
  reach = _reach(tree, policy)
  values, action_values = _values(tree, policy)
  sign = 1.0 - 2.0 * player  # Values are player 0's.
  counterfactual = tree.chance * reach[:, 1 - player] * sign
  mine = (tree.player == player) & ~tree.terminal
  segment = jnp.where(mine, tree.infoset, tree.num_infosets)
  advantages = (action_values - values[:, None]) * _rows(tree, tree.legal)
  node_regrets = counterfactual[:, None] * advantages
  regrets = solver.regrets + jax.ops.segment_sum(node_regrets, segment, tree.num_infosets)
  if plus:
    regrets = jnp.maximum(regrets, 0.0)
  weight = (solver.iteration + 1).astype(jnp.float32) if plus else 1.0
  played = reach[:, player, None] * _rows(tree, policy)
  cumulative = solver.cumulative_policy + weight * jax.ops.segment_sum(played, segment,
                                                                       tree.num_infosets)
  return solver.replace(regrets=regrets, cumulative_policy=cumulative)


@functools.partial(jax.jit, static_argnames="plus")
def iterate(tree: Tree, solver: Solver, iterations, plus: bool = True) -> Solver:
  """`iterations` CFR (plus=False) or CFR+ (plus=True) iterations, alternating player 0 then 1."""

  def body(_, solver):
    for player in range(2):
      solver = _update_player(tree, solver, player, plus)
    return solver.replace(iteration=solver.iteration + 1)

  return jax.lax.fori_loop(0, iterations, body, solver)


@jax.jit
def average_policy(tree: Tree, solver: Solver) -> jax.Array:
  """The normalised cumulative policy [I, A] (uniform where it was never reached)."""
  return regret_matching(solver.cumulative_policy, tree.legal)


# --- Exploitability. ---

@jax.jit
def best_response_values(tree: Tree, policy: jax.Array) -> jax.Array:
  """float32 [2]: each player's expected return when best-responding to the other's `policy`."""
  reach = _reach(tree, policy)
  out = []
  for player in range(2):
    sign = 1.0 - 2.0 * player
    # Values weighted by the chance and opponent probability of reaching the node.
    values = tree.chance * reach[:, 1 - player] * tree.payoff * sign
    for depth in reversed(range(len(tree.levels) - 1)):
      start, end = tree.levels[depth]
      children = _child_values(tree, depth, values)
      mine = (tree.player[start:end] == player) & ~tree.terminal[start:end]
      segment = jnp.where(mine, tree.infoset[start:end], tree.num_infosets)
      totals = jax.ops.segment_sum(children, segment, tree.num_infosets)
      best = jnp.argmax(jnp.where(tree.legal, totals, -jnp.inf), -1)
      best = jnp.concatenate([best, jnp.zeros((1,), best.dtype)])[tree.infoset[start:end]]
      chosen = jnp.take_along_axis(children, best[:, None], -1)[:, 0]
      node_values = jnp.where(mine, chosen, children.sum(-1))
      values = values.at[start:end].set(jnp.where(tree.terminal[start:end], values[start:end],
                                                  node_values))
    start, end = tree.levels[0]
    out.append(values[start:end].sum())
  return jnp.stack(out)


def exploitability(tree: Tree, policy: jax.Array) -> jax.Array:
  """NashConv / 2 (OpenSpiel's `exploitability` for two-player zero-sum games)."""
  return best_response_values(tree, policy).sum() / 2


# --- The Leduc equilibrium. ---

LEDUC_ITERATIONS = 1000


@functools.cache
def leduc_equilibrium() -> tuple[np.ndarray, np.ndarray]:
  """CFR+ average policy for Leduc Poker: (sorted info-set keys int32 [I], probs float32 [I, 5]).

  About 10 s on a 2-core CPU; safe to call first while tracing (it computes eagerly).
  """
  with jax.ensure_compile_time_eval():
    tree = leduc_tree()
    solver = iterate(tree, init(tree), LEDUC_ITERATIONS)
    return np.asarray(tree.keys), np.asarray(average_policy(tree, solver))
