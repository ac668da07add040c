"""Prompts inside the compiled program: tokenised phrase tables and jittable rendering.

Rendering: a prompt is `chat prefix + rules + examples + header + observation + "\n" +
instruction + chat suffix` (SPIRAL's template inside the model's chat format; a `PromptStyle` sets
the header, zero-sum or general-sum, the instruction line, the worked examples and a rules
paragraph shown once, none by default). The fixed parts and every game phrase are tokenised once,
each alone; `render_tokens` gathers and packs them into `max_prompt_len` tokens.

Every prompt of a seat starts alike: the fixed part before the observation, then the game's intro
for that seat (`Game.intro`: rules, roles). `PromptTable.starts` holds these starts, which the
sampler and the train step run once per call, and each row only after them.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api, opponents
from jaxplay.text import answers
from jaxplay.text import tokenizer as tokenizers


PROMPT_PREFIX = ("You are playing a two-player zero-sum game. Make valid actions to win.\n"
                 "Observation: ")  # SPIRAL's.


# The header of games that are not zero-sum (matrix and repeated games): no "win" to aim for.
GENERAL_SUM_PREFIX = ("You are playing a two-player game. Make valid actions to get the highest "
                      "payoff for yourself.\nObservation: ")


# The header of single-player tasks (games/task.py).
TASK_PREFIX = "Solve the following problem.\nProblem: "


INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."  # SPIRAL's.


PROMPT_SUFFIX = "\n" + INSTRUCTION


class PromptTooLong(ValueError):
  """A game's prompts take more tokens than the max_prompt_len asked for."""


@dataclasses.dataclass(frozen=True)
class PromptStyle:
  """What surrounds the observation: the header before it, the line after it, and worked examples
  shown before it, after the game's rules paragraph when that is shown once (`rules`).

  Each example is the prompt of another state followed by its answer: `header + observation
  + "\\n" + instruction + "\\n" + answer + "\\n\\n"`, all inside the one user message.
  """

  instruction: str = INSTRUCTION
  examples: tuple[tuple[str, str], ...] = ()  # (observation, answer) pairs.
  header: str = PROMPT_PREFIX  # `header(game)` of the game shown.
  # A game's rules paragraph (api.WithRules.rules_text), first in every prompt and followed by a
  # blank line; "" = none (the observations hold it: SPIRAL's layout).
  rules: str = ""

  def message(self, observation: str) -> str:
    """The user message for an observation (the rules, then the examples first)."""
    shown = "".join(self._question(o) + "\n" + a + "\n\n" for o, a in self.examples)
    return (self.rules + "\n" if self.rules else "") + shown + self._question(observation)

  def _question(self, observation: str) -> str:
    return self.header + observation + "\n" + self.instruction


def worked_examples(game: api.Game, count: int, seed: int = 0) -> tuple[tuple[str, str], ...]:
  """`count` (observation, answer) pairs from random playouts of `game` (fixed by `seed`).

  States with a set of legal actions not shown yet come first (in Kuhn Poker one example with a bet
  to face, one without), then states whose answer has not been shown yet, so the examples do not
  all answer alike. The answer is `\\boxed{action}` with the action of the game's strongest fixed
  opponent ('optimal', else 'scripted', else random).
  A task's examples are instances of its training split with their solutions.
  """
  if count <= 0:
    return ()
  if game.free_answer:
    train = dataclasses.replace(game, split="train")
    keys = jax.random.split(jax.random.key(seed), count)
    states = [jax.tree.map(np.asarray, jax.jit(train.init)(k)) for k in keys]
    return tuple((train.render_text(s, 0), f"{answers.BOX_OPEN}{train.solution_text(s)}"
                  f"{answers.BOX_CLOSE}") for s in states)
  playouts = opponents.random_playouts(game, jax.random.key(seed), max(count, 16))
  flat = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), playouts)
  order = np.random.default_rng(seed).permutation(flat.terminated.shape[0])
  live = [i for i in order if not flat.terminated[i]]
  masks_seen, first, rest = set(), [], []
  for i in live:
    mask = tuple(flat.legal_action_mask[i])
    (rest if mask in masks_seen else first).append(i)
    masks_seen.add(mask)
  names = opponents.names(game.name)
  strongest = next((n for n in ("optimal", "scripted") if n in names), "random")
  act = jax.jit(opponents.get(game.name, strongest))
  state_at = lambda i: jax.tree.map(lambda x: x[i], flat)
  answer_at = lambda i, n: int(act(state_at(i), jax.random.key(seed + n)))
  chosen = [(i, answer_at(i, n)) for n, i in enumerate(first[:count])]
  while len(chosen) < count and rest:
    n, shown = len(chosen), {action for _, action in chosen}
    fresh = next(((k, a) for k, i in enumerate(rest) if (a := answer_at(i, n)) not in shown), None)
    k, action = fresh or (0, answer_at(rest[0], n))
    chosen.append((rest.pop(k), action))
  return tuple((game.render_text(state_at(i), int(flat.current_player[i])),
                f"{answers.BOX_OPEN}{game.actions[action]}{answers.BOX_CLOSE}")
               for i, action in chosen)


def header(game: api.Game) -> str:
  """The prompt header of a game: a task's, a zero-sum game's (SPIRAL's) or a general-sum one's."""
  if game.num_players == 1:
    return TASK_PREFIX
  return PROMPT_PREFIX if game.zero_sum else GENERAL_SUM_PREFIX


def prompt_text(chat: tokenizers.ChatFormat, observation: str,
                style: PromptStyle = PromptStyle()) -> str:
  """The full prompt text for an observation (special tokens written as their text)."""
  return chat.wrap(style.message(observation))


def reference_prompt(game: api.Game, chat: tokenizers.ChatFormat, state: api.State,
                     player: int, style: PromptStyle = PromptStyle()) -> str:
  """Reference prompt of `player` in an unbatched state."""
  return prompt_text(chat, game.render_text(state, player), style)


@struct.dataclass
class PromptTable:
  """Tokenised phrases and fixed prompt parts of one game under one tokenizer and chat format."""

  phrase_tokens: jax.Array  # int32 [num_phrases, max_phrase_len]
  phrase_lengths: jax.Array  # int32 [num_phrases]
  prefix: jax.Array  # int32 [prefix_len]: chat prefix + rules + examples + header
  # int32 [N, start_len]: the prompt starts rows share, the prefix then each seat's intro (N =
  # players) when every seat has one and all are one length in tokens, else the prefix (N = 1).
  starts: jax.Array
  suffix: jax.Array  # int32 [suffix_len]: "\n" + instruction + chat suffix
  max_prompt_len: int = struct.field(pytree_node=False)
  pad_id: int = struct.field(pytree_node=False)
  left_pad: bool = struct.field(pytree_node=False)


def prompt_table(game: api.Game, tokenizer: tokenizers.Tokenizer,
                 chat: tokenizers.ChatFormat, max_prompt_len: int | None = None,
                 left_pad: bool = True, bound_games: int = 4096,
                 fit: bool = False, style: PromptStyle = PromptStyle()) -> PromptTable:
  """Tokenises the game's phrases and the fixed prompt parts once.

  The longest prompt is bounded by the fixed parts plus, for each observation slot, the longest
  phrase seen in that slot over random playouts of `bound_games` games (every turn, both players);
  taking each slot's maximum independently makes the bound cover far more than the states seen.
  `max_prompt_len=None` takes that bound; a smaller one is a PromptTooLong error. `fit=True`
  renders at the bound rounded up to 8 tokens instead of `max_prompt_len` (a short game's prompts
  then cost less in every forward pass; `pad_prompts` widens them to a common width).
  """
  encode = lambda text: tokenizers.encode(tokenizer, text)
  phrase_tokens, phrase_lengths = answers.padded([encode(p) for p in game.phrases])
  before, after = prompt_text(chat, "\x00", style).split("\x00")
  prefix, suffix = encode(before), encode(after)
  slot_lengths, firsts = _slots_seen(game, jnp.asarray(phrase_lengths), bound_games)
  bound = len(prefix) + len(suffix) + int(slot_lengths.sum())
  if max_prompt_len is None:
    max_prompt_len = bound
  if bound > max_prompt_len:
    raise PromptTooLong(
        f"{game.name} prompts take up to {bound} tokens with model "
        f"{tokenizers.model_name(tokenizer)!r} and chat format {chat.name!r}, more than "
        f"max_prompt_len={max_prompt_len}; set max_prompt_len to at least {bound}.")
  if fit:
    max_prompt_len = min(max_prompt_len, -(-bound // 8) * 8)
  return PromptTable(jnp.asarray(phrase_tokens), jnp.asarray(phrase_lengths),
                     jnp.asarray(prefix, jnp.int32),
                     jnp.asarray(_starts(game, prefix, phrase_tokens, phrase_lengths, firsts)),
                     jnp.asarray(suffix, jnp.int32),
                     max_prompt_len=max_prompt_len, pad_id=tokenizers.pad_id(tokenizer, chat),
                     left_pad=left_pad)


def _slots_seen(game: api.Game, phrase_lengths: jax.Array, num_games: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """Over random playouts of `num_games` games (every turn, both players): (int [slots], the
  longest phrase in tokens seen in each observation slot; int [players, states], the first
  slot's phrase ids)."""
  states = opponents.random_playouts(game, jax.random.key(0), num_games)
  longest, firsts = _slot_lengths_and_firsts(game, states, phrase_lengths)
  return np.asarray(longest), np.asarray(firsts)


@functools.partial(jax.jit, static_argnums=0)
def _slot_lengths_and_firsts(game: api.Game, states: api.State, phrase_lengths: jax.Array):
  render = jax.vmap(jax.vmap(game.render, in_axes=(0, None)), in_axes=(0, None))
  ids = jnp.stack([render(states, p) for p in range(game.num_players)])  # [players, T, B, slots]
  longest = phrase_lengths[ids].reshape(-1, ids.shape[-1]).max(0)
  return longest, ids[..., 0].reshape(game.num_players, -1)


def _starts(game: api.Game, prefix: list[int], phrase_tokens: np.ndarray,
            phrase_lengths: np.ndarray, firsts: np.ndarray) -> np.ndarray:
  """PromptTable.starts. Raises ValueError when a seat's observations seen (`firsts`: their first
  phrase ids, int [players, states]) do not all start with the game's intro for it."""
  intros = [game.intro(p) for p in range(game.num_players)]
  if not all(intros):
    return np.asarray([prefix], np.int32)
  ids = [game.phrases.index(intro) for intro in intros]
  for player, first in enumerate(ids):
    if (firsts[player] != first).any():
      raise ValueError(f"{game.name}: an observation of player {player} does not start with "
                       f"intro({player}) (Game.intro: render's first slot in every state).")
  if len({int(phrase_lengths[i]) for i in ids}) > 1:
    return np.asarray([prefix], np.int32)
  return np.asarray([prefix + list(phrase_tokens[i, :phrase_lengths[i]]) for i in ids], np.int32)



def render_tokens(table: PromptTable, phrase_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Packs phrase ids (int32 [slots]) into a prompt: (int32 [max_prompt_len], length).

  Padding (table.pad_id) goes left or right per the table. Jittable and vmappable. A prompt longer
  than max_prompt_len (beyond the set-up bound, never seen in its playouts) keeps its true length,
  so callers can detect it, and loses its overflowing tokens.
  """
  rows = table.phrase_tokens[phrase_ids]  # [slots, max_phrase_len]
  row_valid = jnp.arange(rows.shape[1]) < table.phrase_lengths[phrase_ids][:, None]
  source = jnp.concatenate([table.prefix, rows.reshape(-1), table.suffix])
  valid = jnp.concatenate([jnp.ones_like(table.prefix, bool), row_valid.reshape(-1),
                           jnp.ones_like(table.suffix, bool)])
  length = valid.sum(dtype=jnp.int32)
  position = jnp.cumsum(valid) - 1
  if table.left_pad:
    position = position + table.max_prompt_len - length
  position = jnp.where(valid & (position >= 0), position, table.max_prompt_len)
  tokens = jnp.full((table.max_prompt_len,), table.pad_id, jnp.int32)
  return tokens.at[position].set(source, mode="drop"), length
