"""Team Zero-One: two teams of `agents` players each pick 0 or 1; a counter-example to self-play.

The mixed cooperative-competitive matrix game with which Xu et al. (2023, "Fictitious Cross-Play")
show that self-play fails to find the global Nash equilibrium; payoffs as in the authors' matrix
game code. With k and k' the numbers of ones in a team and in the other team, the team's payoff is

  u(k, k') = (k - k') + (1 + eps) k' [k = 0] - (1 + eps) k [k' = 0]
             + (bonus - agents * eps) ([k = 0 and k' = agents] - [k = agents and k' = 0]),

and the other team's is -u (zero-sum). All zeros is the global equilibrium (it never loses); all
ones is a local one: no single agent gains by switching to 0 (it scores -1 against all ones), but
the whole team switching gains `bonus`. Gradient self-play from uniform policies ends at all ones.

Each agent answers once, without seeing anyone's choice (simultaneous moves): turns alternate
between the teams, team 0's agent 0, team 1's agent 0, team 0's agent 1, ... The observation is the
player's team and agent index. Actions: 0 and 1. `exploitability(p)` is exact for any policy given
as each agent's probability of answering 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api


@struct.dataclass
class Choices:
  ones: jax.Array  # int32 [2], each team's agents that answered 1 so far.
  turn: jax.Array  # int32 [], answers given.


@api.register
@dataclasses.dataclass(frozen=True)
class TeamZeroOne(api.Game):
  agents: int = 3
  bonus: float = 1.5
  eps: float = 0.1
  name = "team_zero_one"
  actions = ("0", "1")

  def __post_init__(self):
    if not 1 <= self.agents <= 8:
      raise ValueError(f"agents={self.agents} must be in [1, 8].")
    if self.eps < 0:
      raise ValueError(f"eps={self.eps} must be >= 0.")

  def payoffs(self) -> np.ndarray:
    """float32 [agents + 1, agents + 1]: u(k, k'), team k's payoff against team k'."""
    n, k = self.agents, np.arange(self.agents + 1)
    mine, theirs = k[:, None], k[None, :]
    u = (mine - theirs + (1 + self.eps) * theirs * (mine == 0)
         - (1 + self.eps) * mine * (theirs == 0)
         + (self.bonus - n * self.eps) * (((mine == 0) & (theirs == n)).astype(float)
                                          - ((mine == n) & (theirs == 0))))
    return u.astype(np.float32)

  @property
  def max_turns(self) -> int:
    return 2 * self.agents

  @property
  def phrases(self) -> tuple[str, ...]:
    rules = (f"Two teams of {self.agents} agents each answer 0 or 1, nobody seeing another's "
             "answer. Your team's payoff: the number of your team's ones minus the other team's, "
             "with bonuses when a team answers all 0.\n")
    teams = tuple(f"You are on Team {t}. {rules}" for t in (0, 1))
    agents = tuple(f"You are agent {i} of your team.\n" for i in range(self.agents))
    return ("", *teams, *agents, "Your legal moves: ", "The game is over.", "[0]", ", [1]")

  @property
  def max_observation_phrases(self) -> int:  # Team, agent, header, two moves.
    return 5

  def _agent(self, state):
    return jnp.minimum(state.data.turn // 2, self.agents - 1)

  def _init(self, key):
    del key
    return api.new_state(self, Choices(jnp.zeros((2,), jnp.int32), jnp.int32(0)),
                         jnp.ones((2,), bool))

  def _step(self, state, action, key):
    del key
    player = state.current_player
    ones = state.data.ones.at[player].add(action)
    turn = state.data.turn + 1
    over = turn == 2 * self.agents
    u = jnp.asarray(self.payoffs())[ones[0], ones[1]]
    return state.replace(data=Choices(ones, turn), current_player=1 - player,
                         legal_action_mask=jnp.full((2,), ~over), terminated=over,
                         rewards=jnp.where(over, jnp.stack([u, -u]), 0.0))

  def _render(self, state, player):
    team = 1 + player
    agent = 3 + self._agent(state)
    header = jnp.where(state.terminated, 4 + self.agents, 3 + self.agents)
    moves = jnp.where(state.legal_action_mask, 5 + self.agents + jnp.arange(2), api.PAD_PHRASE)
    return jnp.concatenate([jnp.stack([team, agent, header]), moves]).astype(jnp.int32)

  def intro(self, player: int) -> str:
    return self.phrases[1 + player]

  def render_text(self, state, player) -> str:
    text = self.phrases[1 + player] + self.phrases[3 + int(self._agent(state))]
    if state.terminated:
      return text + "The game is over."
    return text + "Your legal moves: [0], [1]"


def information_set_states(game: TeamZeroOne) -> api.State:
  """The 2 * agents decision states, batched in (team, agent) order: where each agent of each
  team answers (an agent sees only its team and index)."""
  states = []
  for team in (0, 1):
    for agent in range(game.agents):
      state = game.init(jax.random.key(0))
      states.append(state.replace(data=Choices(jnp.zeros((2,), jnp.int32),
                                               jnp.int32(2 * agent + team)),
                                  current_player=jnp.int32(team)))
  return jax.tree.map(lambda *x: jnp.stack(x), *states)


def _count_distribution(p_N: jax.Array) -> jax.Array:
  """float32 [N + 1]: the distribution of the number of ones of N independent agents."""
  dist = jnp.zeros((p_N.shape[0] + 1,)).at[0].set(1.0)
  for p in p_N:
    dist = dist * (1.0 - p) + jnp.roll(dist, 1).at[0].set(0.0) * p
  return dist


def _count_values(game: TeamZeroOne, ones_MTN: jax.Array, weights_M: jax.Array) -> jax.Array:
  """float32 [2, agents + 1]: per team t, its payoff for answering k ones (k = 0..agents)
  against team 1 - t of the mixture of policies `ones_MTN` (float32 [M, 2, agents], each agent's
  probability of answering 1 under member m, drawn with probability proportional to
  `weights_M`)."""
  u = jnp.asarray(game.payoffs())
  weights_M = weights_M / weights_M.sum()
  values = []
  for team in (0, 1):
    counts = jax.vmap(_count_distribution)(ones_MTN[:, 1 - team])  # [M, agents + 1]
    # Team 0's payoff table is u; team 1 facing team 0 earns -u(k0, k1) = u(k1, k0).
    values.append(u @ (weights_M @ counts))
  return jnp.stack(values)


def best_response_values(game: TeamZeroOne, ones_MTN: jax.Array, weights_M: jax.Array
                         ) -> jax.Array:
  """float32 [2]: per team t, the best payoff a whole team (coordinating its answers) earns
  against team 1 - t of the mixture of policies `ones_MTN` (as in `_count_values`)."""
  return _count_values(game, ones_MTN, weights_M).max(-1)


def best_response(game: TeamZeroOne, ones_MTN: jax.Array, weights_M: jax.Array) -> jax.Array:
  """float32 [2, agents]: a deterministic policy (each agent's probability of answering 1, 0 or
  1) in which each team plays its coordinated best response to the other team of the mixture
  `ones_MTN`: its first k agents answer 1, k the best count (the fewest ones on ties)."""
  best = jnp.argmax(_count_values(game, ones_MTN, weights_M), -1)  # [2]
  return (jnp.arange(game.agents)[None, :] < best[:, None]).astype(jnp.float32)


def exploitability(game: TeamZeroOne, ones_TN: jax.Array, weights_M: jax.Array | None = None
                   ) -> jax.Array:
  """float32 []: the mean over the teams of the best team response's payoff against the policy
  `ones_TN` (float32 [2, agents]), or with `weights_M` against the mixture of policies `ones_TN`
  [M, 2, agents]. The game is symmetric with value 0, so this is 0 exactly at an equilibrium
  (all zeros)."""
  if weights_M is None:
    ones_TN, weights_M = ones_TN[None], jnp.ones((1,))
  return best_response_values(game, ones_TN, weights_M).mean()
