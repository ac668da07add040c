"""Evaluation during a run: every game against the configured opponents, Kuhn exploitability,
transcripts, and the math sets on their schedule."""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp

from games import opponents, task
from jaxplay.evaluation import matches, ratings
from jaxplay.rl import population
from jaxplay.run import configuration, experiment
from jaxplay.run import phases as phases_lib
from jaxplay.run import spec as spec_lib
from jaxplay.text import prompts
from jaxplay.text import tokenizer as tokenizers


def transcript_rows(num_games: int, count: int) -> list[int]:
  """`count` game rows spread evenly over `num_games` (the learner's seat-0 games come first, so
  two or more cover both seats); all of them when count >= num_games."""
  if count >= num_games:
    return list(range(num_games))
  if count <= 1:
    return [0] * count
  return [round(i * (num_games - 1) / (count - 1)) for i in range(count)]


class Evaluator:
  """Plays every training and held-out game against each configured opponent, both seats,
  compiled once per game; returns flat metrics `eval/<game>/<opponent>/<stat>` (`elo`: the
  learner's Elo with that opponent at 0, from these games) and decoded transcripts; a game plays
  `configuration.eval_games_per_seat` games per seat. A task (games/task.py) instead answers
  twice that many problems of its held-out split at each of its eval.task_difficulties:
  `eval/<task>/difficulty_<d>/<stat>` (accuracy with its interval).
  Single-round Kuhn Poker also gets its exploitability: exact in action-scoring mode, estimated
  from sampled answers (`matches.estimate_kuhn_exploitability`) in free-text mode; Team Zero-One
  its exact exploitability in action-scoring mode."""

  def __init__(self, exp, decode, phases: phases_lib.Phases | None = None):
    self._exp, self._decode = exp, decode
    self._phases = phases or phases_lib.Phases(live=False, log_seconds=float("inf"))
    config = exp.config
    self._transcripts = config.eval.transcripts
    self._plays, self._tasks = [], []
    kits = exp.kits + exp.heldout_kits
    byte_table = tokenizers.byte_table(exp.tokenizer, exp.model.vocab_size)

    def play_games(params, key, index, kit, fns, count):
      return matches.play_against(
          kit.game, kit.eval_policy, functools.partial(prompts.render_tokens, kit.prompts),
          params, matches.switch_opponent(fns, index), key, count, config.eval.invalid_rewards,
          batch_halvings=config.rollout.batch_halvings)

    def solve_problems(params, key, kit, count):
      return matches.solve_problems(kit.game, kit.eval_policy, experiment.render_fn(kit), params,
                                    key, count, config.eval.invalid_rewards)

    for kit_index, kit in enumerate(kits):
      games_per_seat = configuration.eval_games_per_seat(config, kit.game.name)
      if isinstance(kit.game, task.Task):
        for difficulty in configuration.task_difficulties(config, kit.game):
          game = dataclasses.replace(kit.game, split="heldout", difficulty=difficulty)
          problems = experiment.game_kit(exp, game, byte_table, None, "eval.task_difficulties")
          solve = exp.programs.jit(
              functools.partial(solve_problems, kit=problems, count=2 * games_per_seat),
              f"eval_solve_{kit_index}_{difficulty}")
          self._tasks.append((game, solve))
        continue
      names = [n for n in config.eval.opponents if n in opponents.names(kit.game.name)]
      fns = [opponents.get(kit.game.name, n) for n in names]
      play = exp.programs.jit(
          functools.partial(play_games, kit=kit, fns=fns, count=games_per_seat),
          f"eval_play_{kit_index}_{kit.game.name}")
      self._plays.append((kit.game, names, play))
    kuhn_kits = [(i, kit) for i, kit in enumerate(kits)
                 if kit.game.name == "kuhn_poker" and kit.game.rounds == 1]
    # Exact exploitability needs the action probabilities: action-scoring mode.
    exact = [(i, kit.game.name, matches.exact_game(exp.model, kit, config.eval.temperature))
             for i, kit in enumerate(kits)] if exp.scoring else []
    self._exact = [(name, exp.programs.jit(solution.table, f"eval_exact_{i}_{name}"),
                    solution.exploitability)
                   for i, name, solution in exact if solution is not None]
    self._kuhn_estimates = [
        (kit.game.name, exp.programs.jit(functools.partial(
            matches.estimate_kuhn_exploitability, kit.game, kit.eval_policy,
            functools.partial(prompts.render_tokens, kit.prompts),
            samples=config.eval.kuhn_samples,
            batch_size=2 * configuration.eval_games_per_seat(config, kit.game.name)),
            f"eval_kuhn_estimate_{i}"))
        for i, kit in kuhn_kits if not exp.scoring and config.eval.kuhn_samples > 0]

  def __call__(self, params, key, pool: population.Pool | None = None
               ) -> tuple[dict[str, float], list[str]]:
    """Metrics and transcripts of `params`; with the run's opponent `pool` (population play) the
    exact Kuhn tables also give `eval/kuhn_poker/population_exploitability`: that of the average
    strategy of the pool's snapshots, each drawn alike (fictitious play's average)."""
    results, transcripts = {}, []
    games_key, kuhn_key = jax.random.split(key)
    for game_index, (game, names, play) in enumerate(self._plays):
      for index, name in enumerate(names):
        with self._phases(f"evaluation: {game.name} vs {name}"):
          episodes = play(params, jax.random.fold_in(games_key, 100 * game_index + index), index)
          stats = matches.game_stats(game, episodes)
          stats["elo"] = ratings.elo_against(stats["wins"] + stats["draws"] / 2, stats["games"])
        results.update({f"eval/{game.name}/{name}/{k}": v for k, v in stats.items()})
        transcripts += [self._transcript(game.name, name, episodes, row)
                        for row in transcript_rows(len(episodes.learner_seat), self._transcripts)]
    tasks_key = jax.random.fold_in(key, 2)
    for index, (game, solve) in enumerate(self._tasks):
      label = f"difficulty_{game.difficulty}"
      with self._phases(f"evaluation: {game.name} held-out {label}"):
        episodes = solve(params, jax.random.fold_in(tasks_key, index))
        results.update({f"eval/{game.name}/{label}/{k}": v
                        for k, v in matches.task_stats(episodes).items()})
      transcripts += [self._transcript(game.name, f"held-out {label}", episodes, row)
                      for row in transcript_rows(len(episodes.learner_seat), self._transcripts)]
    for game_name, table, mixture_exploitability in self._exact:
      results[f"eval/{game_name}/exploitability"] = float(
          mixture_exploitability(table(params)[None], jnp.ones(1)))
      if pool is not None:
        trained = experiment.trainable(self._exp.model)
        tables = [table(population.member_params(population.member(pool, k), params, trained))
                  for k in range(int(pool.size))]
        results[f"eval/{game_name}/population_exploitability"] = float(
            mixture_exploitability(jnp.stack(tables), jnp.ones(len(tables))))
    for game_name, estimate in self._kuhn_estimates:
      _, value, invalid_rate = estimate(params, kuhn_key)
      results[f"eval/{game_name}/exploitability_estimate"] = float(value)
      results[f"eval/{game_name}/exploitability_estimate_invalid_rate"] = float(invalid_rate)
    return results, transcripts

  def _transcript(self, game_name: str, opponent: str, episodes, game_row: int) -> str:
    episodes = jax.device_get(episodes)
    seat = int(episodes.learner_seat[game_row])  # -1: the learner plays every turn (a task).
    lines = [f"=== {game_name}: learner (player {seat}) vs {opponent} ===" if seat >= 0 else
             f"=== {game_name}: learner, {opponent} ==="]
    for turn in range(episodes.active.shape[0]):
      if not episodes.active[turn, game_row]:
        break
      player = int(episodes.player[turn, game_row])
      prompt = episodes.prompt_tokens[turn, game_row]
      prompt = prompt[prompt.shape[0] - int(episodes.prompt_lengths[turn, game_row]):]
      response = episodes.response_tokens[turn, game_row][:int(
          episodes.response_lengths[turn, game_row])]
      mine = seat < 0 or player == seat
      who = "learner" if mine else opponent
      lines += [f"--- turn {turn}, player {player} ({who}) ---", self._decode(prompt)]
      if mine:
        lines += [">>> response:", self._decode(response)]
      lines.append(f">>> action: {int(episodes.action[turn, game_row])}")
    lines.append(f"=== returns {episodes.returns[game_row].tolist()}, invalid "
                 f"{bool(episodes.invalid[game_row])} ===")
    return "\n".join(lines)


HEADLINE = ("/win_rate", "/invalid_rate", "exploitability", "exploitability_estimate", "accuracy",
            "samples", "mean_response_length", "truncated_rate")


def eval_names(spec: str) -> list[str]:
  """The eval names of a comma-separated `--evals` value; ValueError listing the valid ones."""
  # pylint: disable-next=import-outside-toplevel
  from jaxplay.evaluation import math_data  # Imports tfds.
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


def math_due(config: spec_lib.RunSpec, step: int) -> bool:
  """Whether training runs its math evals (config.eval.math) at `step`."""
  return bool(config.eval.math) and (
      step % config.eval.math_every == 0 or step == config.train.steps)


def run_math(exp, params, key: jax.Array, workdir: str, step: int) -> dict[str, float]:
  """The math evals of config.eval.math, one sample per question at the eval temperature:
  flat metrics `eval/math/<slug>/<stat>`; per-sample records go to workdir/eval_samples/."""
  # pylint: disable-next=import-outside-toplevel
  from jaxplay.evaluation import reasoning  # Imports tfds.
  config, results = exp.config, {}
  for index, name in enumerate(config.eval.math):
    summary, records = reasoning.evaluate_math(
        exp, params, name, config.eval.math_limit or None, temperature=config.eval.temperature,
        top_p=config.eval.top_p, max_response_len=config.eval.math_max_response_len,
        batch_size=config.eval.math_batch_size, key=jax.random.fold_in(key, index),
        data_dir=config.eval.math_data_dir or None)
    write_math_records(workdir, step, name, records)
    results.update({f"eval/math/{eval_slug(name)}/{k}": v for k, v in summary.items()})
  return results
