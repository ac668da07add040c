"""`python -m jaxplay.cli.ratings` (`jaxplay-ratings`): Elo ratings of a run's checkpoints, its
opponent population and the fixed opponents, from a round robin in every training game.

python -m jaxplay.cli.ratings --workdir=DIR [--games_per_seat=32] [--seed=0]

Players: every checkpoint the run keeps ("step N"), the snapshots of the latest checkpoint's
population that no kept checkpoint repeats ("pool step N"; rollout.seats=population), its counter
policies ("counter step N"; population.counters), and the run's eval.opponents ("random", ...). Every model player meets every other player,
`games_per_seat` games in each seat at the run's eval temperature (fixed opponents do not play each
other); the ratings are the Bradley-Terry fit of the whole table (evaluation/ratings.py), the
first fixed opponent at 0. Each pairing is a compiled program per game (the params are its
arguments, so one compile serves every pairing). Prints a table per game and writes
`<workdir>/ratings.json` ({game: {"players", "elo", "points", "games"}}) and `ratings.png` (per
game, the Elo of the checkpoints and snapshots by train step, the counter policies' beside them,
the fixed opponents as lines).
"""

from __future__ import annotations

import argparse
import functools
import json

import jax
import matplotlib
import numpy as np
from etils import epath

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

from games import opponents
from jaxplay import compiling, errors
from jaxplay.evaluation import matches, ratings
from jaxplay.rl import population
from jaxplay.run import checkpoints, experiment, store
from jaxplay.text import prompts


def model_players(workdir: str) -> tuple[object, object, dict[str, object]]:
  """(spec, experiment, {name: params}): every kept checkpoint, then the latest checkpoint's pool
  members taken at other steps."""
  config, exp, state, _ = store.load_run(workdir)
  ckpt = store.checkpointer(workdir, config, store.frozen_leaves(exp, state))
  abstract = checkpoints.abstract_like(state)
  players, latest = {}, None
  for step in ckpt.steps():
    latest = ckpt.restore(step, abstract)
    players[f"step {step}"] = latest.params
  ckpt.close()
  pool = latest.pool if latest is not None else None
  if pool is not None:
    for slot in range(int(pool.size)):
      name = f"step {int(pool.step[slot])}"
      if name not in players:
        players[f"pool {name}"] = population.member_params(
            population.member(pool, slot), latest.params, experiment.trainable(exp.model))
    for index in range(pool.counters):  # FXP's counter policies, by the step each was taken.
      if int(pool.counter_step[index]) >= 0:
        players[f"counter step {int(pool.counter_step[index])}"] = population.member_params(
            population.member(pool, pool.capacity + index), latest.params,
            experiment.trainable(exp.model))
  return config, exp, players


def round_robin(exp, kit, players: dict, fixed: list[str], games_per_seat: int, key
                ) -> tuple[np.ndarray, np.ndarray]:
  """(points, games) [P, P] over the model players then the fixed opponents, for one game."""
  names = list(players)
  size = len(names) + len(fixed)
  points, games = np.zeros((size, size)), np.zeros((size, size))
  render = functools.partial(prompts.render_tokens, kit.prompts)
  invalid = exp.config.eval.invalid_rewards
  fixed_fns = [opponents.get(kit.game.name, name) for name in fixed]
  vs_model = compiling.jit(lambda a, b, k: matches.play_against(
      kit.game, kit.eval_policy, render, a, None, k, games_per_seat, invalid, opponent_params=b,
      batch_halvings=exp.config.rollout.batch_halvings))
  vs_fixed = compiling.jit(lambda a, index, k: matches.play_against(
      kit.game, kit.eval_policy, render, a, matches.switch_opponent(fixed_fns, index), k,
      games_per_seat, invalid, batch_halvings=exp.config.rollout.batch_halvings))
  pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, size)]
  for pair_index, (i, j) in enumerate(pairs):
    pair_key = jax.random.fold_in(key, pair_index)
    if j < len(names):
      episodes = vs_model(players[names[i]], players[names[j]], pair_key)
    else:
      episodes = vs_fixed(players[names[i]], j - len(names), pair_key)
    scores = np.asarray(population.learner_scores(episodes.returns, episodes.learner_seat))
    points[i, j], points[j, i] = scores.sum(), scores.size - scores.sum()
    games[i, j] = games[j, i] = scores.size
  return points, games


def plot(tables: dict, path: epath.Path) -> None:
  """One panel per game: Elo of the model players by train step, fixed opponents as lines."""
  figure, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 3.5), squeeze=False)
  for axis, (game, table) in zip(axes[0], tables.items()):
    named = list(zip(table["players"], table["elo"]))
    for label, prefixes in (("learner", ("step ", "pool step ")), ("counter", ("counter step ",))):
      steps = sorted((int(n.rsplit(" ", 1)[1]), elo) for n, elo in named
                     if n.startswith(prefixes))
      if steps:
        axis.plot([s for s, _ in steps], [e for _, e in steps], "o-", label=label)
    for name, elo in named:
      if not name.startswith(("step ", "pool step ", "counter step ")):
        axis.axhline(elo, linestyle="--", color="gray")
        axis.annotate(name, (0, elo), fontsize=8)
    axis.set(title=game, xlabel="train step", ylabel="Elo")
    axis.legend(fontsize=8)
  figure.tight_layout()
  with path.open("wb") as file:
    figure.savefig(file, format="png")
  plt.close(figure)


@errors.user_facing
def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(prog="python -m jaxplay.cli.ratings",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="the run's directory")
  parser.add_argument("--games_per_seat", type=int, default=32,
                      help="games per pairing in each seat")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if args.games_per_seat < 1:
    parser.error(f"--games_per_seat={args.games_per_seat} must be >= 1.")
  config, exp, players = model_players(args.workdir)
  key = jax.random.key(args.seed)
  tables = {}
  for index, kit in enumerate(exp.kits):
    fixed = [n for n in config.eval.opponents if n in opponents.names(kit.game.name)]
    points, games = round_robin(exp, kit, players, fixed, args.games_per_seat,
                                jax.random.fold_in(key, index))
    names = list(players) + fixed
    elo = ratings.fit_elo(points, games, anchor=len(players) if fixed else 0)
    tables[kit.game.name] = {"players": names, "elo": elo.round(1).tolist(),
                             "points": points.tolist(), "games": games.tolist()}
    print(f"{kit.game.name} (Elo, {names[len(players)] if fixed else names[0]} = 0; "
          f"{2 * args.games_per_seat} games per pairing):")
    for rank in np.argsort(-elo):
      print(f"  {names[rank]:<20} {elo[rank]:8.1f}   score {points[rank].sum():g} / "
            f"{games[rank].sum():g}")
  (epath.Path(args.workdir) / "ratings.json").write_text(json.dumps(tables, indent=1))
  plot(tables, epath.Path(args.workdir) / "ratings.png")
  return tables


def run() -> None:
  """`python -m jaxplay.cli.ratings` and the `jaxplay-ratings` console script."""
  main()


if __name__ == "__main__":
  run()
