"""Fixed opponents: jittable policies `(state, key) -> action` over a single (unbatched) state."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from games import api, cfr, connect_four, kuhn_poker, leduc_poker, nim, pig, simple_negotiation
from games import matrix_game, tic_tac_toe


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


# --- Pig ---


@functools.cache
def pig_tables(win_score: int, horizon: int) -> tuple[np.ndarray, np.ndarray, float]:
  """Optimal play of two-player Pig with a horizon: backward induction over the moves left.

  V_t(i, j, k) is the mover's expected return (P(win) - P(loss)) with t moves left before the
  horizon, the mover's score i, the other's score j and turn total k. V_0 = 0 (a draw). With t >= 1
  a state with i + k >= win_score is a forced, winning stop (1); otherwise the mover takes the best
  of stop, -V_{t-1}(j, i + k, 0), and roll, (-V_{t-1}(j, i, 0) + sum over d = 2..6 of
  V_{t-1}(i, j, k + d)) / 6 (ties: stop). The moves left are part of the state because the horizon
  ends the game; far from it the policy no longer changes (from 6 moves left at win score 30).

  Returns (layer int32[horizon + 1], rolls bool[layers, W, W, W], value): with t >= 1 moves left
  the optimal move at (i, j, k), i + k < W, is a roll iff rolls[layer[t], i, j, k] (consecutive
  identical layers are stored once; False where i + k >= W), and value = V_horizon(0, 0, 0), Player
  0's expected return under optimal play. Time O(horizon * W**3), table layers * W**3 bytes (a
  constant of the compiled policy): 0.1 s and 6 layers (0.16 MB) at the defaults (30, 60); 0.4 s
  and 14 MB at (50, 120); 47 s and 192 MB at OpenSpiel's (100, 1000), where value = 0.0612
  (P(win) 0.5306 for Player 0, the known optimum of Pig to 100).
  """
  w, faces = win_score, pig.FACES
  i = np.arange(w)[:, None, None]
  j = np.arange(w)[None, :, None]
  k = np.arange(w + faces)[None, None, :]  # Turn totals up to w + 5 (rolls start below w).
  reach = np.broadcast_to(i + k >= w, (w, w, w + faces))
  values = np.zeros((w, w, w + faces))  # V_0
  layers, layer = [], np.zeros(horizon + 1, np.int32)
  for t in range(1, horizon + 1):
    start = values[:, :, 0].T  # start[i, j] = V_{t-1}(j, i, 0): the other player's turn starts.
    stop = -start[np.minimum(i + k, w - 1), j]
    gains = sum(values[:, :, d:d + w] for d in range(2, faces + 1))
    roll = (-start[:, :, None] + gains) / faces  # [w, w, w]: turn totals below w.
    rolls = (roll > stop[:, :, :w]) & ~reach[:, :, :w]
    best = np.maximum(stop, np.pad(roll, ((0, 0), (0, 0), (0, faces)), constant_values=-np.inf))
    values = np.where(reach, 1.0, best)
    if not layers or not np.array_equal(rolls, layers[-1]):
      layers.append(rolls)
    layer[t] = len(layers) - 1
  return layer, np.stack(layers), float(values[0, 0, 0])


def pig_optimal(state: api.State, key: jax.Array) -> jax.Array:
  """Optimal play (games.opponents.pig_tables, exact for the game's win score and horizon).

  Deterministic: rolls only where rolling is strictly better. Returns action 0 at the end.
  """
  del key
  data = state.data
  layer, rolls, _ = pig_tables(data.win_score, data.horizon)
  clip = lambda x: jnp.clip(x, 0, data.win_score - 1)
  me = state.current_player
  moves_left = jnp.clip(data.horizon - state.turn, 0, data.horizon)
  roll = jnp.asarray(rolls)[jnp.asarray(layer)[moves_left], clip(data.scores[me]),
                            clip(data.scores[1 - me]), clip(data.turn_total)]
  roll &= state.legal_action_mask[pig.ROLL]
  action = jnp.where(roll, pig.ROLL, pig.STOP)
  return jnp.where(state.legal_action_mask.any(), action, 0).astype(jnp.int32)


def pig_hold_at(target: int):
  """The classic heuristic: roll until the turn total reaches `target` or the win is in reach."""

  def policy(state: api.State, key: jax.Array) -> jax.Array:
    del key
    roll = state.legal_action_mask[pig.ROLL] & (state.data.turn_total < target)
    action = jnp.where(roll, pig.ROLL, pig.STOP)
    return jnp.where(state.legal_action_mask.any(), action, 0).astype(jnp.int32)

  return policy


# --- Matrix games (games.matrix_game) ---
# Strategies of the repeated games read only the finished rounds, state.data.choices[:rounds_done]:
# as Player 1 they never see Player 0's choice of the current round. Moves are action ids: 0 is
# 'cooperate' (social dilemmas) or the row player's favourite (Battle of the Sexes), 1 'defect' or
# the column player's favourite. A move the mover lacks (non-square tables) becomes its first one.
# In a parallel game (several 2x2 tables side by side) a strategy's move is played in every
# table, and tit-for-tat copies the other player's whole answer.


def _every_table(state: api.State, move) -> jax.Array:
  """The action playing `move` (0 or 1) in every table of a parallel game; `move` otherwise."""
  parallel = state.data.payoffs.shape[1]  # [rounds, parallel, n, m, 2]
  return jnp.asarray(move, jnp.int32) * ((1 << parallel) - 1)


def _matrix_move(state: api.State, action) -> jax.Array:
  mask = state.legal_action_mask
  action = jnp.asarray(action, jnp.int32)
  return jnp.where(mask[action], action, jnp.argmax(mask)).astype(jnp.int32)


def matrix_constant(by_seat: tuple[int, int]):
  """Always by_seat[mover's seat]."""
  return lambda state, key: _matrix_move(
      state, _every_table(state, jnp.asarray(by_seat)[state.current_player]))


def matrix_tit_for_tat(first: tuple[int, int] = (0, 0)):
  """first[seat] in round 1, then the other player's move of the previous round."""

  def policy(state: api.State, key: jax.Array) -> jax.Array:
    data, me = state.data, state.current_player
    last = data.choices[jnp.maximum(data.rounds_done - 1, 0), 1 - me]
    return _matrix_move(state, jnp.where(data.rounds_done > 0, last,
                                         _every_table(state, jnp.asarray(first)[me])))

  return policy


def matrix_grim_trigger(nice: int = 0, nasty: int = 1):
  """`nice` until the other player has once played anything else, then `nasty` for good."""

  def policy(state: api.State, key: jax.Array) -> jax.Array:
    data, me = state.data, state.current_player
    finished = jnp.arange(data.choices.shape[0]) < data.rounds_done
    betrayed = (finished & (data.choices[:, 1 - me] != _every_table(state, nice))).any()
    return _matrix_move(state, _every_table(state, jnp.where(betrayed, nasty, nice)))

  return policy


def matrix_alternate(first: int = 0, second: int = 1):
  """`first` in odd rounds (1, 3, ...), `second` in even ones."""
  return lambda state, key: _matrix_move(
      state, _every_table(state, jnp.where(state.data.rounds_done % 2, second, first)))


def matrix_equilibrium(state: api.State, key: jax.Array) -> jax.Array:
  """Plays each table of the round by its equilibrium: its own move in the pure Nash equilibrium
  that pays it most (the first such cell row-major on ties); in a 2x2 table without one, a draw
  from its mixed-equilibrium probabilities (each player's mix leaves the other indifferent); in
  a larger table without one, a uniform move. Strength: over `family:all` against the uniform
  random opponent its mean reward is 0.30 (random's own -0.01; 2,000 games per seat;
  tests/games/test_matrix_game.py checks > 0.2)."""
  data, me = state.data, state.current_player
  tables = data.payoffs[jnp.minimum(data.rounds_done, data.payoffs.shape[0] - 1)]  # [P, n, m, 2]
  parallel, n, m = tables.shape[:3]
  nash = matrix_game.pure_nash(tables)  # [P, n, m]
  own = jnp.where(me == 0, tables[..., 0], tables[..., 1])
  cell = jnp.argmax(jnp.where(nash, own, -jnp.inf).reshape(parallel, n * m), axis=1)
  pure = jnp.where(me == 0, cell // m, cell % m)
  draw_key, uniform_key = jax.random.split(key)
  if (n, m) == (2, 2):
    first = matrix_game.mixed_nash(tables)[:, me]  # NaN where a pure equilibrium is played.
    mixed = (jax.random.uniform(draw_key, (parallel,)) >= first).astype(jnp.int32)
  else:
    mixed = jax.random.randint(uniform_key, (parallel,), 0, jnp.where(me == 0, n, m))
  moves = jnp.where(nash.any((1, 2)), pure, mixed).astype(jnp.int32)  # [P]
  action = (moves << jnp.arange(parallel - 1, -1, -1)).sum() if parallel > 1 else moves[0]
  return _matrix_move(state, action)


_MATRIX = {"always_first": matrix_constant((0, 0)), "always_second": matrix_constant((1, 1)),
           "tit_for_tat": matrix_tit_for_tat(), "grim_trigger": matrix_grim_trigger(),
           "alternate": matrix_alternate(), "equilibrium": matrix_equilibrium}


# --- Connect Four ---

_C4_WIN = 1e6  # A win's score (plus the plies left to search: faster wins score higher).
_C4_LINE_WEIGHTS = np.array([0, 1, 4, 32, 0], np.float32)  # By pieces in a line of one player.
_C4_CENTRE_WEIGHT = 3.0  # Per piece in the centre column.


def _connect_four_children(cells: jax.Array, player: jax.Array):
  """Boards after `player` drops into each column: (cells int32 [columns, rows, columns], wins
  bool [columns], legal bool [columns]); the boards of full columns are meaningless."""
  legal = cells[0] == connect_four.EMPTY
  children, won = jax.vmap(connect_four.drop, in_axes=(None, 0, None))(
      cells, jnp.arange(cells.shape[1]), player)
  return children, won & legal, legal


def connect_four_heuristic(cells: jax.Array, player: jax.Array) -> jax.Array:
  """Static score of a board for `player`, who has just moved (the other player is to move).

  -WIN if the other player wins at once: a line of four holds three of their pieces and an empty
  cell playable now. Else WIN - 1 if `player` has two such lines of theirs with their empty cells
  in different columns (a win in two moves). Else each line holding pieces of one player only
  scores 1, 4 or 32 for 1, 2 or 3 pieces (plus for `player`, minus for the other), and each piece
  in the centre column 3.
  """
  rows, columns = cells.shape
  empty = cells == connect_four.EMPTY
  below_filled = jnp.concatenate([~empty[1:], jnp.ones((1, columns), bool)])
  lines = jnp.asarray(connect_four.lines(rows, columns))
  windows = cells.reshape(-1)[lines]  # [num_lines, 4]
  gaps = windows == connect_four.EMPTY
  playable_gaps = gaps & (empty & below_filled).reshape(-1)[lines]
  mine, theirs = (windows == player).sum(-1), (windows == 1 - player).sum(-1)
  open_three = playable_gaps.any(-1) & (mine + theirs == 3)  # Its empty cell is playable now.
  they_win = (open_three & (theirs == 3)).any()
  gap_column = (gaps * (lines % columns)).sum(-1)  # Of the one empty cell of a line of three.
  my_columns = ((gap_column[:, None] == jnp.arange(columns))
                & (open_three & (mine == 3))[:, None]).any(0)
  weights = jnp.asarray(_C4_LINE_WEIGHTS)
  score = (jnp.where(theirs == 0, weights[mine], 0.0)
           - jnp.where(mine == 0, weights[theirs], 0.0)).sum()
  centre = cells[:, columns // 2]
  score += _C4_CENTRE_WEIGHT * ((centre == player).sum() - (centre == 1 - player).sum())
  score = jnp.where(my_columns.sum() >= 2, _C4_WIN - 1, score)
  return jnp.where(they_win, -_C4_WIN, score)


def connect_four_scores(cells: jax.Array, player: jax.Array, depth: int) -> jax.Array:
  """Negamax scores float32 [columns] of `player`'s moves (`player` to move), full width, `depth`
  plies deep, on `connect_four_heuristic` at the leaves; -inf for full columns."""
  children, wins, legal = _connect_four_children(cells, player)
  full = (children[:, 0] != connect_four.EMPTY).all(-1)
  if depth <= 1:
    later = jax.vmap(connect_four_heuristic, in_axes=(0, None))(children, player)
  else:
    later = -jax.vmap(lambda c: connect_four_scores(c, 1 - player, depth - 1).max())(children)
  scores = jnp.where(wins, _C4_WIN + depth, jnp.where(full, 0.0, later))
  return jnp.where(legal, scores, -jnp.inf)


def connect_four_search(depth: int = 2):
  """A policy `(state, key) -> action`: uniform among the moves of best `connect_four_scores`.

  At depth 2 it takes a win at once, blocks the other's immediate win, never plays under a cell
  that wins for the other (when it can help it), makes and stops two-threat forks, and otherwise
  plays the heuristic. It costs columns**depth leaf evaluations a move (49 at depth 2). Returns
  action 0 at the end.
  """

  def policy(state: api.State, key: jax.Array) -> jax.Array:
    scores = connect_four_scores(state.data.cells, state.current_player, depth)
    legal = state.legal_action_mask
    best = legal & (scores == jnp.where(legal, scores, -jnp.inf).max())
    return uniform_random(state.replace(legal_action_mask=best), key)

  return policy


def connect_four_greedy(state: api.State, key: jax.Array) -> jax.Array:
  """A weaker player: wins at once if it can, else blocks the other's immediate win, else plays
  uniformly at random. Returns action 0 at the end."""
  _, wins, _ = _connect_four_children(state.data.cells, state.current_player)
  _, blocks, _ = _connect_four_children(state.data.cells, 1 - state.current_player)
  legal = state.legal_action_mask
  preferred = jnp.stack([wins & legal, blocks & legal, legal])
  mask = preferred[jnp.argmax(preferred.any(-1))]
  return uniform_random(state.replace(legal_action_mask=mask), key)


# --- Team Zero-One (games.team_zero_one) ---


def team_constant(answer: int):
  """Every agent of the team answers `answer` (all zeros is the game's global equilibrium, all
  ones the local one self-play ends at)."""
  return lambda state, key: jnp.int32(answer)


# --- By name ---

_BY_GAME = {
    "kuhn_poker": {"optimal": kuhn_nash()},
    "tic_tac_toe": {"optimal": tic_tac_toe_minimax},
    "simple_negotiation": {"scripted": negotiation_heuristic},
    "nim": {"optimal": nim_optimal},
    "leduc_poker": {"optimal": leduc_equilibrium},
    "connect_four": {"scripted": connect_four_search(), "greedy": connect_four_greedy},
    "team_zero_one": {"all_zero": team_constant(0), "all_one": team_constant(1)},
    "matrix_game": _MATRIX,  # For the social dilemmas, first = cooperate and second = defect.
    "iterated_prisoners_dilemma": {
        "always_cooperate": _MATRIX["always_first"], "always_defect": _MATRIX["always_second"],
        **{k: _MATRIX[k] for k in ("tit_for_tat", "grim_trigger", "alternate")}},
    "repeated_battle_of_the_sexes": {
        "always_first": _MATRIX["always_first"], "always_second": _MATRIX["always_second"],
        "stubborn": matrix_constant((0, 1)), "tit_for_tat": matrix_tit_for_tat(first=(0, 1)),
        "alternate": _MATRIX["alternate"]},
    "pig": {"optimal": pig_optimal, "hold_at_20": pig_hold_at(20)},
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


@functools.partial(jax.jit, static_argnums=(0, 2))
def random_playouts(game: api.Game, key: jax.Array, batch: int) -> api.State:
  """Plays `batch` games with uniform random legal actions for `game.max_turns + 1` steps.

  Returns the states before each step, stacked: leaves are [max_turns + 2, batch, ...]
  (index 0 is the initial state, the last index is after the extra step on finished games).
  """
  init_key, play_key = jax.random.split(key)
  states = jax.vmap(game.init)(jax.random.split(init_key, batch))

  def turn(states, key):
    action_key, step_key = jax.random.split(key)
    actions = jax.vmap(uniform_random)(states, jax.random.split(action_key, batch))
    next_states = jax.vmap(game.step)(states, actions, jax.random.split(step_key, batch))
    return next_states, next_states

  final, trajectory = jax.lax.scan(turn, states, jax.random.split(play_key, game.max_turns + 1))
  del final
  return jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), states, trajectory)
