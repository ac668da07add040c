"""Evaluation: win/draw/loss against fixed opponents in both seats, with 95% intervals."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from games import api
from games import opponents
from jaxplay import configuration
from jaxplay import errors
from jaxplay import exploitability
from jaxplay import phases as phases_lib
from jaxplay import rollout as rollout_lib
from jaxplay import text


def wilson_interval(successes: float, trials: int, z: float = 1.96) -> tuple[float, float]:
  """95% Wilson score interval of a proportion."""
  if trials == 0:
    return (0.0, 1.0)
  p = successes / trials
  denominator = 1 + z * z / trials
  centre = (p + z * z / (2 * trials)) / denominator
  half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
  return (max(0.0, centre - half), min(1.0, centre + half))


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
  stats["win_rate_low"], stats["win_rate_high"] = wilson_interval(wins, games_played)
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


def play_against(game: api.Game, policy: rollout_lib.Policy,
                 render_prompt: rollout_lib.RenderPrompt, params: Any,
                 opponent: rollout_lib.Opponent, key: jax.Array, games_per_seat: int,
                 invalid_rewards: tuple[float, float] = api.EVAL_INVALID_REWARDS
                 ) -> rollout_lib.Episodes:
  """Plays the learner against `opponent`, `games_per_seat` games in each seat (traceable): the
  seats are played one after the other, so the model runs only on the learner's turns."""
  game = dataclasses.replace(game, invalid_rewards=tuple(invalid_rewards))

  def play_seat(seat_and_key):
    seat, seat_key = seat_and_key
    return rollout_lib.rollout(game, policy, render_prompt, params, seat_key, games_per_seat,
                               opponent=opponent, seats=jnp.full(games_per_seat, seat, jnp.int32))

  return rollout_lib.join_games(
      jax.lax.map(play_seat, (jnp.arange(2, dtype=jnp.int32), jax.random.split(key))))


def switch_opponent(opponent_fns, index: jax.Array) -> rollout_lib.Opponent:
  """The opponent `opponent_fns[index]` with `index` traced: one compile serves them all."""
  return lambda state, key: jax.lax.switch(index, opponent_fns, state, key)


class Evaluator:
  """Plays every training and held-out game against each configured opponent, both seats,
  compiled once per game; returns flat metrics `eval/<game>/<opponent>/<stat>` and decoded
  transcripts. Single-round Kuhn Poker also gets its exploitability: exact in action-scoring
  mode, estimated from sampled answers (`estimate_kuhn_exploitability`) in free-text mode."""

  def __init__(self, exp, decode, phases: phases_lib.Phases | None = None):
    self._exp, self._decode = exp, decode
    self._phases = phases or phases_lib.Phases(live=False, log_seconds=float("inf"))
    config = exp.config
    self._games_per_seat = config.eval.games_per_seat
    self._plays = []
    kits = exp.kits + exp.heldout_kits
    for kit in kits:
      names = [n for n in config.eval.opponents.split(",") if n in opponents.names(kit.game.name)]
      fns = [opponents.get(kit.game.name, n) for n in names]
      play = jax.jit(functools.partial(
          lambda params, key, index, kit, fns: play_against(
              kit.game, kit.eval_policy, functools.partial(text.render_tokens, kit.prompts),
              params, switch_opponent(fns, index), key, self._games_per_seat,
              tuple(config.eval.invalid_rewards)), kit=kit, fns=fns))
      self._plays.append((kit.game, names, play))
    kuhn_kits = [kit for kit in kits if kit.game.name == "kuhn_poker" and kit.game.rounds == 1]
    # Exact exploitability needs the action probabilities: action-scoring mode.
    self._kuhn_tables = [(kit.game.name, jax.jit(functools.partial(kuhn_policy_table, exp, kit)))
                         for kit in kuhn_kits if exp.scoring]
    self._kuhn_estimates = [
        (kit.game.name, jax.jit(functools.partial(
            estimate_kuhn_exploitability, kit.game, kit.eval_policy,
            functools.partial(text.render_tokens, kit.prompts),
            samples=config.eval.kuhn_samples, batch_size=2 * self._games_per_seat)))
        for kit in kuhn_kits if not exp.scoring and config.eval.kuhn_samples > 0]

  def __call__(self, params, key) -> tuple[dict[str, float], list[str]]:
    results, transcripts = {}, []
    games_key, kuhn_key = jax.random.split(key)
    for game_index, (game, names, play) in enumerate(self._plays):
      for index, name in enumerate(names):
        with self._phases(f"evaluation: {game.name} vs {name}"):
          episodes = play(params, jax.random.fold_in(games_key, 100 * game_index + index), index)
          stats = game_stats(game, episodes)
        results.update({f"eval/{game.name}/{name}/{k}": v for k, v in stats.items()})
        transcripts.append(self._transcript(game.name, name, episodes, game_row=0))
    for game_name, table in self._kuhn_tables:
      results[f"eval/{game_name}/exploitability"] = float(
          exploitability.exploitability(table(params)))
    for game_name, estimate in self._kuhn_estimates:
      _, value, invalid_rate = estimate(params, kuhn_key)
      results[f"eval/{game_name}/exploitability_estimate"] = float(value)
      results[f"eval/{game_name}/exploitability_estimate_invalid_rate"] = float(invalid_rate)
    return results, transcripts

  def _transcript(self, game_name: str, opponent: str, episodes, game_row: int) -> str:
    episodes = jax.device_get(episodes)
    seat = int(episodes.learner_seat[game_row])
    lines = [f"=== {game_name}: learner (player {seat}) vs {opponent} ==="]
    for turn in range(episodes.active.shape[0]):
      if not episodes.active[turn, game_row]:
        break
      player = int(episodes.player[turn, game_row])
      prompt = episodes.prompt_tokens[turn, game_row]
      prompt = prompt[prompt.shape[0] - int(episodes.prompt_lengths[turn, game_row]):]
      response = episodes.response_tokens[turn, game_row][:int(
          episodes.response_lengths[turn, game_row])]
      who = "learner" if player == seat else opponent
      lines += [f"--- turn {turn}, player {player} ({who}) ---", self._decode(prompt)]
      if player == seat:
        lines += [">>> response:", self._decode(response)]
      lines.append(f">>> action: {int(episodes.action[turn, game_row])}")
    lines.append(f"=== returns {episodes.returns[game_row].tolist()}, invalid "
                 f"{bool(episodes.invalid[game_row])} ===")
    return "\n".join(lines)


def kuhn_information_set_states(game) -> api.State:
  """The 12 single-round Kuhn Poker information sets as states, [card * 4 + node] (batched).

  The acting player holds `card`; the other card is the lowest other one (it is never shown).
  """
  from games import kuhn_poker  # pylint: disable=import-outside-toplevel
  histories = {"": [], "p": [kuhn_poker.CHECK], "b": [kuhn_poker.BET],
               "pb": [kuhn_poker.CHECK, kuhn_poker.BET]}
  states = []
  for card in range(3):
    other = min(c for c in range(3) if c != card)
    for node in kuhn_poker.NODES:
      actor = len(histories[node]) % 2
      cards = (card, other) if actor == 0 else (other, card)
      state = game.init(jax.random.key(0))
      state = state.replace(data=state.data.replace(cards=jnp.asarray(cards, jnp.int32)))
      for action in histories[node]:
        state = game.step(state, action, jax.random.key(0))
      states.append(state)
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def kuhn_policy_table(exp, kit, params) -> jax.Array:
  """probs float32[3, 4, (pass, bet)] of an action-scoring policy at every information set."""
  from games import kuhn_poker  # pylint: disable=import-outside-toplevel
  from jaxplay import policies  # pylint: disable=import-outside-toplevel
  states = kuhn_information_set_states(kit.game)
  phrase_ids = jax.vmap(kit.game.render)(states)
  tokens, lengths = jax.vmap(functools.partial(text.render_tokens, kit.prompts))(phrase_ids)
  legal = jnp.pad(states.legal_action_mask,
                  ((0, 0), (0, kit.scoring.tokens.shape[0] - kit.game.num_actions)))
  batch = tokens.shape[0]
  log_pi, _ = policies.action_log_probs(
      exp.model, params, tokens, lengths, legal,
      jnp.broadcast_to(kit.scoring.tokens, (batch,) + kit.scoring.tokens.shape),
      jnp.broadcast_to(kit.scoring.lengths, (batch,) + kit.scoring.lengths.shape),
      max(exp.config.eval.temperature, 1e-6))
  probs = jnp.exp(log_pi)
  passes = probs[:, kuhn_poker.CHECK] + probs[:, kuhn_poker.FOLD]
  bets = probs[:, kuhn_poker.BET] + probs[:, kuhn_poker.CALL]
  return jnp.stack([passes, bets], -1).reshape(3, 4, 2)


def act_in_batches(policy: rollout_lib.Policy, params, tokens_NP: jax.Array,
                   lengths_N: jax.Array, legal_NA: jax.Array, key: jax.Array,
                   batch_size: int) -> rollout_lib.Act:
  """The policy's Act for each of N prompt rows, `batch_size` rows per call (traceable; the last
  call is topped up with copies of earlier rows)."""
  rows = tokens_NP.shape[0]
  calls = -(-rows // batch_size)
  fill = jnp.arange(calls * batch_size) % rows
  chunk = lambda x: x[fill].reshape((calls, batch_size) + x.shape[1:])
  act = lambda inputs: policy(params, *inputs)
  out = jax.lax.map(act, (chunk(tokens_NP), chunk(lengths_N), chunk(legal_NA),
                          jax.random.split(key, calls)))
  return jax.tree.map(lambda x: x.reshape((calls * batch_size,) + x.shape[2:])[:rows], out)


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
  from games import kuhn_poker  # pylint: disable=import-outside-toplevel
  states = kuhn_information_set_states(game)
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


# Standalone evaluation of a run's checkpoint: `python -m jaxplay.evaluate --workdir=DIR
# [--evals=games,gsm8k,aime2025,jsonl:/path] [--limit=N] [--samples=1] [--checkpoint_step=K]`.
# Prints a table and appends one JSON line per eval to workdir/evals.jsonl; math evals also write
# their per-sample records to workdir/eval_samples/.

_HEADLINE = ("/win_rate", "/invalid_rate", "exploitability", "exploitability_estimate", "accuracy",
             "samples", "mean_response_length", "truncated_rate")


def eval_names(spec: str) -> list[str]:
  """The eval names of a comma-separated `--evals` value; ValueError listing the valid ones."""
  from jaxplay import math_data  # pylint: disable=import-outside-toplevel
  names = [name.strip() for name in spec.split(",") if name.strip()]
  valid = ["games", *math_data.PACKAGE_SETS]
  unknown = [n for n in names if n not in valid and not n.startswith(math_data.JSONL_PREFIX)]
  if unknown or not names:
    raise ValueError(f"unknown eval name(s) {', '.join(unknown) or '(none given)'}; valid: "
                     f"{', '.join(valid)} or {math_data.JSONL_PREFIX}<path to a JSONL file>.")
  return names


def eval_slug(name: str) -> str:
  """A file- and metric-safe eval name: 'gsm8k', or 'five_jsonl' for 'jsonl:/data/five.jsonl'."""
  return "".join(c if c.isalnum() else "_" for c in os.path.basename(name))


def write_math_records(workdir: str, step: int, name: str, records: list[dict]) -> str:
  """Writes a math eval's per-sample records to workdir/eval_samples/; returns the path."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  folder = epath.Path(workdir) / "eval_samples"
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / f"step_{step:06d}_{eval_slug(name)}.jsonl"
  path.write_text("".join(json.dumps(record) + "\n" for record in records))
  return str(path)


def math_due(config, step: int) -> bool:
  """Whether training runs its math evals (config.eval.math) at `step`."""
  return bool(configuration.math_eval_names(config)) and (
      step % config.eval.math_every == 0 or step == config.train.steps)


def run_math(exp, params, key: jax.Array, workdir: str, step: int) -> dict[str, float]:
  """The math evals of config.eval.math, one sample per question at the eval temperature:
  flat metrics `eval/math/<slug>/<stat>`; per-sample records go to workdir/eval_samples/."""
  from jaxplay import reasoning  # pylint: disable=import-outside-toplevel  (imports tfds)
  config, results = exp.config, {}
  for index, name in enumerate(configuration.math_eval_names(config)):
    summary, records = reasoning.evaluate_math(
        exp, params, name, config.eval.math_limit or None, temperature=config.eval.temperature,
        top_p=config.eval.top_p, max_response_len=config.eval.math_max_response_len,
        batch_size=config.eval.math_batch_size, key=jax.random.fold_in(key, index),
        data_dir=config.eval.math_data_dir or None)
    write_math_records(workdir, step, name, records)
    results.update({f"eval/math/{eval_slug(name)}/{k}": v for k, v in summary.items()})
  return results


def format_table(rows: list[dict]) -> str:
  """One line per headline metric: eval, metric, value [95% interval]."""
  lines = [f"{'step':>6}  {'eval':<24} {'metric':<36} value"]
  for row in rows:
    for name, value in row["metrics"].items():
      if not name.endswith(_HEADLINE):
        continue
      shown = f"{value:.4g}"
      if f"{name}_low" in row["metrics"]:
        shown += f" [{row['metrics'][name + '_low']:.3f}, {row['metrics'][name + '_high']:.3f}]"
      lines.append(f"{row['step']:>6}  {row['eval'][:24]:<24} {name:<36} {shown}")
  return "\n".join(lines)


@errors.user_facing
def main(argv: list[str] | None = None) -> list[dict]:
  """Runs the requested evals on a run's checkpoint; returns the rows written to evals.jsonl."""
  # pylint: disable=import-outside-toplevel
  import argparse
  import datetime
  import time

  from etils import epath

  from jaxplay import checkpoints, reasoning, sharding, train, workdir
  parser = argparse.ArgumentParser(prog="python -m jaxplay.evaluate",
                                   description="Evaluates a checkpoint of a jaxplay run.")
  parser.add_argument("--workdir", required=True, help="the run's directory")
  parser.add_argument("--evals", default="games",
                      help="comma-separated: games, gsm8k, aime2025, jsonl:<path>")
  parser.add_argument("--limit", type=int, default=None, help="first N questions of math sets")
  parser.add_argument("--samples", type=int, default=1, help="samples per math question")
  parser.add_argument("--max_response_len", type=int,
                      default=reasoning.DEFAULT_MAX_RESPONSE_LEN)
  parser.add_argument("--max_prompt_len", type=int, default=None,
                      help="default: the longest prompt of the set")
  parser.add_argument("--batch_size", type=int, default=reasoning.DEFAULT_BATCH_SIZE)
  parser.add_argument("--temperature", type=float, default=None,
                      help="math sampling temperature (default: the run's eval.temperature)")
  parser.add_argument("--top_p", type=float, default=None,
                      help="math top-p (default: the run's eval.top_p)")
  parser.add_argument("--checkpoint_step", type=int, default=None, help="default: the latest")
  parser.add_argument("--mesh", default=None,
                      help="data,fsdp,tensor sizes replacing the run's mesh, e.g. -1,1,1 (all "
                      "devices here) to evaluate on other devices than the run trained on")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default=None, help="tfds data dir of the math sets")
  args = parser.parse_args(argv)
  try:
    evals = eval_names(args.evals)
    mesh = None if args.mesh is None else sharding.parse_mesh_sizes(args.mesh)
  except ValueError as error:
    parser.error(str(error))
  config, exp, state, step = train.load_run(args.workdir, mesh)
  if args.checkpoint_step is not None and args.checkpoint_step != step:
    ckpt = train.checkpointer(args.workdir, config, train.frozen_leaves(exp, state))
    if args.checkpoint_step not in ckpt.steps():
      parser.error(f"no checkpoint of step {args.checkpoint_step} in {ckpt.directory}; "
                   f"available: {ckpt.steps()}")
    state = ckpt.restore(args.checkpoint_step, checkpoints.abstract_like(state))
    step = args.checkpoint_step
  temperature = config.eval.temperature if args.temperature is None else args.temperature
  top_p = config.eval.top_p if args.top_p is None else args.top_p
  key = jax.random.key(args.seed)
  rows = []
  for index, name in enumerate(evals):
    started = time.time()
    eval_key = jax.random.fold_in(key, index)
    if name == "games":
      results, _ = Evaluator(exp, train.decoder(exp), phases_lib.Phases())(state.params, eval_key)
      results = {k.removeprefix("eval/"): v for k, v in results.items()}
    else:
      results, records = reasoning.evaluate_math(
          exp, state.params, name, args.limit, samples_per_question=args.samples,
          temperature=temperature, top_p=top_p, max_prompt_len=args.max_prompt_len,
          max_response_len=args.max_response_len, batch_size=args.batch_size, key=eval_key,
          data_dir=args.data_dir)
      write_math_records(args.workdir, step, name, records)
    row = {"step": int(step), "eval": name, "metrics": results,
           "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "seconds": round(time.time() - started, 2)}
    workdir.append_text(epath.Path(args.workdir) / "evals.jsonl", json.dumps(row) + "\n")
    rows.append(row)
    print(f"{name}: done in {row['seconds']} s", flush=True)
  print(format_table(rows))
  return rows


def run() -> None:
  """`python -m jaxplay.evaluate` and the `jaxplay-eval` console script."""
  main()


if __name__ == "__main__":
  run()
