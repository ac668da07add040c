"""Play a game against a run's latest checkpoint in the terminal, or watch it play an opponent.

  python -m jaxplay.cli.play --workdir=DIR --game=kuhn_poker [--seat=0|1] [--games=N]
  python -m jaxplay.cli.play --workdir=DIR --game=kuhn_poker --watch=random

Each turn of the model shows its full response and the action parsed from it (an unparseable or
illegal answer forfeits the game, as in evaluation). A person answers with an action's text, with or
without `\\boxed{}`; a move that is not legal is asked again. The game may be any training or
held-out game of the run; the model samples at the run's `eval.temperature`.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Callable, TextIO

import jax
import jax.numpy as jnp

from games import api, opponents, task
from jaxplay import compiling, errors
from jaxplay.run import experiment, store
from jaxplay.text import answers, prompts

# player(state, key) -> action id; it writes what it shows (observation, response) itself.
Player = Callable[[api.State, jax.Array], int]


def find_kit(exp: experiment.Experiment, game_name: str) -> experiment.GameKit:
  """The run's kit of `game_name` (a training or held-out game); UserError listing the others."""
  kits = {kit.game.name: kit for kit in exp.kits + exp.heldout_kits}
  if game_name not in kits:
    raise errors.UserError(f"--game={game_name}: not a game of this run; valid: "
                           f"{', '.join(kits)}.")
  if isinstance(kits[game_name].game, task.Task):
    raise errors.UserError(f"--game={game_name}: a one-player task, nothing to play against; "
                           "its held-out accuracy is in the run's evaluations.")
  return kits[game_name]


def model_player(exp: experiment.Experiment, kit: experiment.GameKit, params,
                 out: TextIO) -> Player:
  """The checkpoint's eval policy on one game; prints its response and parsed action."""
  act = compiling.jit(lambda params, tokens, length, legal, key: kit.eval_policy(
      params, tokens[None], length[None], legal[None], key))
  render = jax.jit(functools.partial(prompts.render_tokens, kit.prompts))

  def player(state: api.State, key: jax.Array) -> int:
    tokens, length = render(kit.game.render(state))
    result = act(params, tokens, length, state.legal_action_mask, key)
    response = store.decoder(exp)(result.response_tokens[0, :int(result.response_lengths[0])])
    action = int(result.action[0])
    legal = 0 <= action < kit.game.num_actions and bool(state.legal_action_mask[action])
    shown = kit.game.actions[action] if legal else "(invalid: forfeits the game)"
    out.write(f"Model (Player {int(state.current_player)}) answers:\n{response}\n"
              f"-> {shown}\n\n")
    return action

  return player


def human_player(game: api.Game, read: TextIO, out: TextIO) -> Player:
  """A person at the terminal: shows their observation and reads a legal action."""

  def player(state: api.State, key: jax.Array) -> int:
    del key
    out.write(game.render_text(state, int(state.current_player)) + "\n")
    while True:
      out.write("Your move: ")
      out.flush()
      line = read.readline()
      if not line:
        raise errors.UserError("input ended before the game did.")
      answer = line.strip() if "\\boxed{" in line else f"\\boxed{{{line.strip()}}}"
      action = answers.parse_text(answer, game.actions)
      if action != api.INVALID_ACTION and bool(state.legal_action_mask[action]):
        out.write("\n")
        return action
      legal = [a for a, ok in zip(game.actions, state.legal_action_mask) if ok]
      out.write(f"Not a legal move; write one of: {', '.join(legal)}\n")

  return player


def opponent_player(game: api.Game, name: str, out: TextIO) -> Player:
  """A fixed opponent of games/opponents.py; prints its action."""
  try:
    policy = jax.jit(opponents.get(game.name, name))
  except ValueError as error:
    raise errors.UserError(f"--watch={name}: {error}") from None

  def player(state: api.State, key: jax.Array) -> int:
    action = int(policy(state, key))
    out.write(f"{name} (Player {int(state.current_player)}) plays {game.actions[action]}\n\n")
    return action

  return player


def play_game(game: api.Game, players: tuple[Player, Player], key: jax.Array) -> api.State:
  """One game from `players[0]` and `players[1]` to the end; returns the final state."""
  init_key, key = jax.random.split(key)
  state = game.init(init_key)
  step = jax.jit(game.step)
  while not bool(state.terminated):
    act_key, step_key, key = jax.random.split(key, 3)
    action = players[int(state.current_player)](state, act_key)
    state = step(state, jnp.int32(action), step_key)
  return state


def outcome(state: api.State, seat: int) -> str:
  """'won', 'lost' or 'drew' for the player in `seat`, with the returns."""
  mine, theirs = float(state.rewards[seat]), float(state.rewards[1 - seat])
  word = "won" if mine > theirs else "lost" if mine < theirs else "drew"
  forfeit = " (an invalid answer ended it)" if bool(state.invalid) else ""
  return f"{word} {mine:+g} to {theirs:+g}{forfeit}"


@errors.user_facing
def main(argv: list[str] | None = None, read: TextIO = sys.stdin, out: TextIO = sys.stdout
         ) -> list[api.State]:
  """Plays `--games` games; returns their final states."""
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog="python -m jaxplay.cli.play",
                                   description="Play a game against a jaxplay checkpoint.")
  parser.add_argument("--workdir", required=True, help="the run's directory")
  parser.add_argument("--game", required=True, help="a training or held-out game of the run")
  parser.add_argument("--seat", type=int, choices=(0, 1), default=None,
                      help="your seat (default: alternate, starting with 0)")
  parser.add_argument("--watch", default=None,
                      help="an opponent name (e.g. random): watch the model play it instead")
  parser.add_argument("--games", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  config, exp, state, step = store.load_run(args.workdir)
  kit = find_kit(exp, args.game)
  game = dataclasses.replace(kit.game, invalid_rewards=tuple(config.eval.invalid_rewards))
  model = model_player(exp, kit, state.params, out)
  other = (opponent_player(game, args.watch, out) if args.watch
           else human_player(game, read, out))
  who = args.watch or "You"
  out.write(f"{game.name} against the step-{step} checkpoint of {args.workdir}.\n\n")
  finals = []
  for index in range(args.games):
    seat = args.seat if args.seat is not None else index % 2
    players = (other, model) if seat == 0 else (model, other)
    final = play_game(game, players, jax.random.fold_in(jax.random.key(args.seed), index))
    out.write(f"Game {index + 1}: {who} (Player {seat}) {outcome(final, seat)}.\n\n")
    finals.append(final)
  return finals


def run() -> None:
  """`python -m jaxplay.cli.play` and the `jaxplay-play` console script."""
  main()


if __name__ == "__main__":
  run()
