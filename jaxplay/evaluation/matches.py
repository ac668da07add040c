"""A policy against fixed opponents in both seats (win/draw/loss with 95% intervals), and the
exact game theory of action-scoring policies where it is known (exploitability and best responses
in single-round Kuhn Poker and Team Zero-One; Kuhn's exploitability also estimated from samples)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from games import api, exploitability, kuhn_poker, team_zero_one
from jaxplay.evaluation import statistics
from jaxplay.models import sampling
from jaxplay.models.configs import ModelConfig
from jaxplay.rl import policies
from jaxplay.rl import rollout as rollout_lib
from jaxplay.text import prompts


def outcome_stats(episodes: rollout_lib.Episodes) -> dict[str, float]:
  """Learner's win/draw/loss counts and rates with intervals, invalid rate and response length."""
  episodes = jax.device_get(episodes)
  seats = np.asarray(episodes.learner_seat)
  rows = np.arange(seats.shape[0])
  learner_return = np.asarray(episodes.returns)[rows, seats]
  other_return = np.asarray(episodes.returns)[rows, 1 - seats]
  wins = int((learner_return > other_return).sum())
  losses = int((learner_return < other_return).sum())
  games_played = seats.shape[0]
  learner_turns = np.asarray(episodes.learner)
  learner_invalid = learner_turns & ~np.asarray(episodes.valid)
  stats = {"games": games_played, "wins": wins, "losses": losses,
           "draws": games_played - wins - losses,
           "win_rate": wins / games_played, "loss_rate": losses / games_played,
           "draw_rate": (games_played - wins - losses) / games_played,
           "invalid_rate": float(learner_invalid.sum() / max(learner_turns.sum(), 1)),
           "response_length_mean": float(
               np.asarray(episodes.response_lengths)[learner_turns].mean())
           if learner_turns.any() else 0.0,
           "return_mean": float(learner_return.mean())}
  stats["win_rate_low"], stats["win_rate_high"] = statistics.wilson_interval(wins, games_played)
  for seat in (0, 1):
    in_seat = seats == seat
    stats[f"win_rate_seat{seat}"] = float((learner_return > other_return)[in_seat].mean()
                                          if in_seat.any() else 0.0)
  return stats


def game_stats(game: api.Game, episodes: rollout_lib.Episodes) -> dict[str, float]:
  """`outcome_stats` plus the game's own statistics of the final states (`Game.eval_stats`)."""
  episodes = jax.device_get(episodes)
  return {**outcome_stats(episodes),
          **game.eval_stats(episodes.final_state, np.asarray(episodes.learner_seat))}


def task_stats(episodes: rollout_lib.Episodes) -> dict[str, float]:
  """A task's problems: accuracy with its 95% interval, invalid rate and response length."""
  episodes = jax.device_get(episodes)
  correct = int((np.asarray(episodes.returns)[:, 0] > 0).sum())
  problems = int(episodes.returns.shape[0])
  answered = np.asarray(episodes.learner)
  stats = {"games": problems, "correct": correct, "accuracy": correct / problems,
           "invalid_rate": float((answered & ~np.asarray(episodes.valid)).sum()
                                 / max(answered.sum(), 1)),
           "response_length_mean": float(np.asarray(episodes.response_lengths)[answered].mean())}
  stats["accuracy_low"], stats["accuracy_high"] = statistics.wilson_interval(correct, problems)
  return stats


def solve_problems(game: api.Game, policy: rollout_lib.Policy,
                   render_prompt: rollout_lib.RenderPrompt, params: Any, key: jax.Array,
                   count: int, invalid_rewards: tuple[float, float] = api.EVAL_INVALID_REWARDS
                   ) -> rollout_lib.Episodes:
  """`count` problems of a task (games/task.py) answered by the policy (traceable)."""
  game = dataclasses.replace(game, invalid_rewards=tuple(invalid_rewards))
  return rollout_lib.rollout(game, policy, render_prompt, params, key, count)


def play_against(game: api.Game, policy: rollout_lib.Policy,
                 render_prompt: rollout_lib.RenderPrompt, params: Any,
                 opponent: rollout_lib.Opponent | None, key: jax.Array, games_per_seat: int,
                 invalid_rewards: tuple[float, float] = api.EVAL_INVALID_REWARDS,
                 opponent_params: Any = None, batch_halvings: int = 1) -> rollout_lib.Episodes:
  """Plays the learner against `opponent` (a fixed opponent) or, when it is None, against the same
  policy with `opponent_params` (another checkpoint), `games_per_seat` games in each seat
  (traceable): the seats are played one after the other, so against a fixed opponent the model
  runs only on the learner's turns (on as few rows as `rollout.rollout`'s `batch_halvings`
  allows)."""
  game = dataclasses.replace(game, invalid_rewards=tuple(invalid_rewards))

  def play_seat(seat_and_key):
    seat, seat_key = seat_and_key
    return rollout_lib.rollout(game, policy, render_prompt, params, seat_key, games_per_seat,
                               opponent=opponent, opponent_params=opponent_params,
                               seats=jnp.full(games_per_seat, seat, jnp.int32),
                               batch_halvings=batch_halvings)

  return rollout_lib.join_games(
      jax.lax.map(play_seat, (jnp.arange(2, dtype=jnp.int32), jax.random.split(key))))


def switch_opponent(opponent_fns, index: jax.Array) -> rollout_lib.Opponent:
  """The opponent `opponent_fns[index]` with `index` traced: one compile serves them all."""
  return lambda state, key: jax.lax.switch(index, opponent_fns, state, key)


def scoring_probs(model: ModelConfig, kit, temperature: float, params, states) -> jax.Array:
  """probs float32 [S, actions] of the action-scoring policy of `kit` (a game kit with a scoring
  table) at each of the batched `states` (0 for illegal actions), at `temperature`."""
  phrase_ids = jax.vmap(kit.game.render)(states)
  tokens, lengths = jax.vmap(functools.partial(prompts.render_tokens, kit.prompts))(phrase_ids)
  legal = jnp.pad(states.legal_action_mask,
                  ((0, 0), (0, kit.scoring.tokens.shape[0] - kit.game.num_actions)))
  batch = tokens.shape[0]
  log_pi, _ = policies.action_log_probs(
      model, params, tokens, lengths, legal,
      jnp.broadcast_to(kit.scoring.tokens, (batch,) + kit.scoring.tokens.shape),
      jnp.broadcast_to(kit.scoring.lengths, (batch,) + kit.scoring.lengths.shape),
      max(temperature, 1e-6))
  return jnp.exp(log_pi)


def kuhn_policy_table(model: ModelConfig, kit, temperature: float, params) -> jax.Array:
  """probs float32[3, 4, (pass, bet)] of the action-scoring policy of `kit` (a game kit with a
  scoring table) at every information set, at `temperature`."""
  probs = scoring_probs(model, kit, temperature, params,
                        kuhn_poker.information_set_states(kit.game))
  passes = probs[:, kuhn_poker.CHECK] + probs[:, kuhn_poker.FOLD]
  bets = probs[:, kuhn_poker.BET] + probs[:, kuhn_poker.CALL]
  return jnp.stack([passes, bets], -1).reshape(3, 4, 2)


def team_zero_one_table(model: ModelConfig, kit, temperature: float, params) -> jax.Array:
  """float32 [2, agents]: each agent's probability of answering 1 in Team Zero-One under the
  action-scoring policy of `kit`, at `temperature`."""
  probs = scoring_probs(model, kit, temperature, params,
                        team_zero_one.information_set_states(kit.game))
  return probs[:, 1].reshape(2, kit.game.agents)


class ExactGame(NamedTuple):
  """An action-scoring policy's exact quantities in a game small enough to enumerate. A table is
  the policy's action probabilities at every information set (`kuhn_policy_table`,
  `team_zero_one_table`); a mixture is tables [M, ...] with weights [M], member m drawn with
  probability proportional to its weight for a whole game."""
  table: Any  # params -> the policy's table.
  exploitability: Any  # (tables, weights) -> float32 []: the mixture's exploitability.
  best_response: Any  # (tables, weights) -> a deterministic table: a best response to the mixture.
  cross_entropy: Any  # (table, target) -> float32 []: -sum of target * log(table) over decisions.


def _cross_entropy(probs, target):
  return -(target * jnp.log(jnp.maximum(probs, 1e-30))).sum()


def has_exact_game(game: api.Game) -> bool:
  """Whether `exact_game` knows `game`: single-round Kuhn Poker and Team Zero-One."""
  return (game.name == "kuhn_poker" and game.rounds == 1) or game.name == "team_zero_one"


def exact_game(model: ModelConfig, kit, temperature: float) -> ExactGame | None:
  """The ExactGame of `kit`'s game (a kit with a scoring table) at `temperature` (Kuhn Poker in
  chips, whatever its payoff option); None where `has_exact_game` is False."""
  game = kit.game
  if not has_exact_game(game):
    return None
  if game.name == "kuhn_poker":
    def kuhn_mixture(tables, weights):
      return tables[0] if tables.shape[0] == 1 else exploitability.average_policy(tables, weights)
    return ExactGame(
        table=functools.partial(kuhn_policy_table, model, kit, temperature),
        exploitability=lambda tables, weights: exploitability.exploitability(
            kuhn_mixture(tables, weights)),
        best_response=lambda tables, weights: exploitability.best_response(
            kuhn_mixture(tables, weights)),
        cross_entropy=_cross_entropy)
  as_pairs = lambda ones: jnp.stack([1.0 - ones, ones], -1)
  return ExactGame(
      table=functools.partial(team_zero_one_table, model, kit, temperature),
      exploitability=functools.partial(team_zero_one.exploitability, game),
      best_response=functools.partial(team_zero_one.best_response, game),
      cross_entropy=lambda ones, target: _cross_entropy(as_pairs(ones), as_pairs(target)))


def act_in_batches(policy: rollout_lib.Policy, params, tokens_NP: jax.Array,
                   lengths_N: jax.Array, legal_NA: jax.Array, key: jax.Array,
                   batch_size: int) -> rollout_lib.Act:
  """The policy's Act for each of N prompt rows, `batch_size` rows per call (traceable; the last
  call is topped up with copies of earlier rows)."""
  rows = tokens_NP.shape[0]
  indices = sampling.batch_indices(rows, batch_size)
  chunk = lambda x: x[indices]
  act = lambda inputs: policy(params, *inputs)
  out = jax.lax.map(act, (chunk(tokens_NP), chunk(lengths_N), chunk(legal_NA),
                          jax.random.split(key, indices.shape[0])))
  return jax.tree.map(lambda x: x.reshape((indices.size,) + x.shape[2:])[:rows], out)


class KuhnEstimate(NamedTuple):
  table: jax.Array  # float32 [3, 4, (pass, bet)], exploitability.py's layout.
  exploitability: jax.Array  # float32 [], exact exploitability of `table`.
  invalid_rate: jax.Array  # float32 [], share of answers left out of the estimate.


def estimate_kuhn_exploitability(game, policy: rollout_lib.Policy,
                                 render_prompt: rollout_lib.RenderPrompt, params, key: jax.Array,
                                 samples: int, batch_size: int) -> KuhnEstimate:
  """Samples `samples` answers of `policy` at each of the 12 Kuhn information sets; the table
  holds each set's share of bet/call among its valid answers.

  Invalid answers (unparseable, or illegal at that set) are left out of the shares and reported
  as the invalid rate; a set without a valid answer falls back to uniform (0.5, 0.5). So the
  estimate is of the policy's play given that it answers validly. Each share is a mean of
  `samples` Bernoulli draws (error ~ 0.5 / sqrt(samples)); exploitability moves by at most 2/3
  per unit change of one share. Traceable; jit it with `samples` and `batch_size` static.
  """
  states = kuhn_poker.information_set_states(game)
  tokens, lengths = jax.vmap(render_prompt)(jax.vmap(game.render)(states))
  repeat = lambda x: jnp.repeat(x, samples, axis=0)  # Row i * samples + j: set i, sample j.
  actions = act_in_batches(policy, params, repeat(tokens), repeat(lengths),
                           repeat(states.legal_action_mask), key, batch_size).action
  legal = states.legal_action_mask[:, None, :]
  taken = jax.nn.one_hot(actions.reshape(-1, samples), game.num_actions, dtype=bool) & legal
  counts = taken.sum(1)  # [12, A]; INVALID_ACTION and illegal answers count nowhere.
  valid = counts.sum(-1)
  bets = counts[:, kuhn_poker.BET] + counts[:, kuhn_poker.CALL]
  bet = jnp.where(valid > 0, bets / jnp.maximum(valid, 1), 0.5)
  table = jnp.stack([1 - bet, bet], -1).reshape(3, 4, 2).astype(jnp.float32)
  return KuhnEstimate(table, exploitability.exploitability(table),
                      (actions.shape[0] - valid.sum()) / actions.shape[0])
