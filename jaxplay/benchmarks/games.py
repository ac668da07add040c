"""Vectorised game steps per second, ours vs pgx, on the same game, batch and loop.

python -m jaxplay.benchmarks.games [--batches 1024 16384] [--steps 100] [--repeats 7]

Both implementations run the same jitted loop: a `lax.scan` of `steps` turns over a vmapped batch;
each turn picks a uniform random legal action per game (one batched Gumbel draw), steps every game,
and replaces finished games by freshly initialised ones (the same select for both). Compilation and
one warm-up call are excluded; the time is the median over repeats.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import pathlib

import jax
import jax.numpy as jnp
import pgx

import games
from jaxplay import benchmarks

GAMES = ("kuhn_poker", "tic_tac_toe", "connect_four")  # Names in both games.make and pgx.make.
HEADER = ("date", "game", "batch", "steps", "ours steps/s", "pgx steps/s", "ours/pgx", "machine")


def play_loop(env, batch: int, steps: int):
  """A jitted function (states, key) -> states running `steps` random turns of `batch` games."""

  def turn(states, key):
    action_key, game_key = jax.random.split(key)
    noise = jax.random.gumbel(action_key, states.legal_action_mask.shape)
    actions = jnp.argmax(jnp.where(states.legal_action_mask, noise, -jnp.inf), -1)
    game_keys = jax.random.split(game_key, batch)  # Shared by step and reset: timing only.
    states = jax.vmap(env.step)(states, actions.astype(jnp.int32), game_keys)
    fresh = jax.vmap(env.init)(game_keys)
    done = states.terminated
    states = jax.tree.map(
        lambda new, old: jnp.where(done.reshape(done.shape + (1,) * (old.ndim - 1)), new, old),
        fresh, states)
    return states, None

  @jax.jit
  def run(states, key):
    return jax.lax.scan(turn, states, jax.random.split(key, steps))[0]

  return run


def steps_per_second(envs, batch: int, steps: int, repeats: int) -> list[float]:
  """Steps per second of each environment, timed in alternation."""
  key = jax.random.key(0)
  calls = []
  for env in envs:
    states = jax.jit(jax.vmap(env.init))(jax.random.split(key, batch))
    calls.append(functools.partial(play_loop(env, batch, steps), states, key))
  return [batch * steps / s for s in benchmarks.median_seconds(calls, repeats)]


def main(argv=None) -> list[tuple]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--games", nargs="+", default=GAMES)
  parser.add_argument("--batches", nargs="+", type=int, default=(1024, 16384))
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--output", default=str(benchmarks.BENCHMARKS_MD),
                      help="markdown file the dated rows are appended to ('' to skip)")
  args = parser.parse_args(argv)

  machine, today = benchmarks.machine(), datetime.date.today().isoformat()
  rows = []
  for name in args.games:
    if name not in games.registered_names():
      print(f"skipped {name}: not registered in games yet")
      continue
    ours, theirs = games.make(name), pgx.make(name)
    for batch in args.batches:
      ours_rate, pgx_rate = steps_per_second((ours, theirs), batch, args.steps, args.repeats)
      rows.append((today, name, batch, args.steps, f"{ours_rate:,.0f}", f"{pgx_rate:,.0f}",
                   f"{ours_rate / pgx_rate:.2f}", machine))
  print("\n".join(benchmarks.markdown_table(HEADER[1:-1], [row[1:-1] for row in rows])))
  print(f"machine: {machine}")
  if rows and args.output:
    benchmarks.append_rows("games: vectorised steps per second vs pgx", HEADER, rows,
                           pathlib.Path(args.output))
  return rows


if __name__ == "__main__":
  main()
