"""Text inside the compiled program: tokenised phrase tables, jittable prompt rendering and parsing.

Rendering: a prompt is `chat prefix + examples + header + observation + "\n" + instruction +
chat suffix` (SPIRAL's template inside the model's chat format; a `PromptStyle` sets the header,
zero-sum or general-sum, the instruction line and the worked examples, none by default). The
fixed parts and every game phrase are tokenised once, each alone; `render_tokens` gathers and
packs them into `max_prompt_len` tokens.

Parsing (the rules `parse_text` states in plain Python and `parse_tokens` runs on device):
1. The response is the bytes of its first `length` tokens (`tokenizer.byte_table`: special tokens
   and ids outside the vocabulary give no bytes). Tokens past `length` are ignored, so a cut-off
   response is parsed as it stands. The reference text is `tokenizer.decode` of the same tokens.
2. The answer is the content of the last `\\boxed{`: from after its `{` to the `}` that closes it,
   counting nested `{`/`}`. No `\\boxed{`, or a last one that is never closed: invalid.
3. Normalisation: every `\\text{` is deleted, then every character of DROPPED_CHARS (braces,
   square brackets, double and single quotes, backtick); ASCII letters are lowercased; runs of
   ASCII whitespace become one space and leading/trailing whitespace goes. Nothing else changes
   (non-ASCII text stays, so e.g. full-width letters or a no-break space never match).
4. The normalised answer must equal a normalised action exactly (so an empty box is invalid);
   otherwise the result is api.INVALID_ACTION.
All rules concern ASCII characters, which UTF-8 never uses inside a multi-byte character, so bytes
and text agree. One exception: Gemma's decode turns a broken UTF-8 run of byte-fallback tokens,
ASCII bytes included, into U+FFFD per byte, while the byte table keeps the ASCII bytes.

Stopping at the answer: `answer_stop_rule` ends a response at the `}` that closes its first
`\\boxed{` (what the model writes after it would only be trained on, never parsed).

Action scoring: the answer a policy scores for action `a` is the text `\\boxed{` + actions[a] + `}`,
tokenised as tokens('\\boxed{') followed by tokens(actions[a] + '}'); the shared first part is
`ScoringTable.prefix_len` tokens long. No end-of-turn token is appended.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api
from games import checks, opponents
from jaxplay import sampling
from jaxplay import tokenizer as tokenizers

PROMPT_PREFIX = ("You are playing a two-player zero-sum game. Make valid actions to win.\n"
                 "Observation: ")  # SPIRAL's.
# The header of games that are not zero-sum (matrix and repeated games): no "win" to aim for.
GENERAL_SUM_PREFIX = ("You are playing a two-player game. Make valid actions to get the highest "
                      "payoff for yourself.\nObservation: ")
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."  # SPIRAL's.
PROMPT_SUFFIX = "\n" + INSTRUCTION
BOX_OPEN = "\\boxed{"
BOX_CLOSE = "}"
TEXT_OPEN = "\\text{"
DROPPED_CHARS = "{}[]\"'`"
WHITESPACE = " \t\n\r\x0b\x0c"


# --- Prompt style and the plain-Python reference. ---

@dataclasses.dataclass(frozen=True)
class PromptStyle:
  """What surrounds the observation: the header before it, the line after it, and worked examples
  shown before it.

  Each example is the prompt of another state followed by its answer: `header + observation
  + "\\n" + instruction + "\\n" + answer + "\\n\\n"`, all inside the one user message.
  """

  instruction: str = INSTRUCTION
  examples: tuple[tuple[str, str], ...] = ()  # (observation, answer) pairs.
  header: str = PROMPT_PREFIX  # GENERAL_SUM_PREFIX for games that are not zero-sum.

  def message(self, observation: str) -> str:
    """The user message for an observation (examples first)."""
    shown = "".join(self._question(o) + "\n" + a + "\n\n" for o, a in self.examples)
    return shown + self._question(observation)

  def _question(self, observation: str) -> str:
    return self.header + observation + "\n" + self.instruction


def worked_examples(game: api.Game, count: int, seed: int = 0) -> tuple[tuple[str, str], ...]:
  """`count` (observation, answer) pairs from random playouts of `game` (fixed by `seed`).

  States with a set of legal actions not shown yet come first (in Kuhn Poker one example with a bet
  to face, one without), so the examples do not all answer alike. The answer is `\\boxed{action}`
  with the action of the game's strongest fixed opponent ('optimal', else 'scripted', else random).
  """
  if count <= 0:
    return ()
  playouts = checks.random_playouts(game, jax.random.key(seed), max(count, 16))
  flat = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), playouts)
  order = np.random.default_rng(seed).permutation(flat.terminated.shape[0])
  live = [i for i in order if not flat.terminated[i]]
  masks_seen, first, rest = set(), [], []
  for i in live:
    mask = tuple(flat.legal_action_mask[i])
    (rest if mask in masks_seen else first).append(i)
    masks_seen.add(mask)
  chosen = (first + rest)[:count]
  names = opponents.names(game.name)
  strongest = next((n for n in ("optimal", "scripted") if n in names), "random")
  act = jax.jit(opponents.get(game.name, strongest))
  examples = []
  for n, i in enumerate(chosen):
    state = jax.tree.map(lambda x: x[i], flat)
    action = int(act(state, jax.random.key(seed + n)))
    examples.append((game.render_text(state, int(state.current_player)),
                     f"{BOX_OPEN}{game.actions[action]}{BOX_CLOSE}"))
  return tuple(examples)


def prompt_text(chat: tokenizers.ChatFormat, observation: str,
                style: PromptStyle = PromptStyle()) -> str:
  """The full prompt text for an observation (special tokens written as their text)."""
  return chat.wrap(style.message(observation))


def reference_prompt(game: api.Game, chat: tokenizers.ChatFormat, state: api.State,
                     player: int, style: PromptStyle = PromptStyle()) -> str:
  """Reference prompt of `player` in an unbatched state."""
  return prompt_text(chat, game.render_text(state, player), style)


_DROP = str.maketrans("", "", DROPPED_CHARS)
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_SPACES = re.compile(f"[{re.escape(WHITESPACE)}]+")


def boxed_content(text: str) -> str | None:
  """Content of the last `\\boxed{...}` with nested braces, or None if absent or unclosed."""
  start = text.rfind(BOX_OPEN)
  if start < 0:
    return None
  start += len(BOX_OPEN)
  depth = 1
  for i in range(start, len(text)):
    depth += (text[i] == "{") - (text[i] == "}")
    if depth == 0:
      return text[start:i]
  return None


def normalise(text: str) -> str:
  text = text.replace(TEXT_OPEN, "").translate(_DROP).translate(_LOWER)
  return " ".join(word for word in _SPACES.split(text) if word)


def parse_text(text: str, actions: tuple[str, ...]) -> int:
  """Action id answered in `text`, or api.INVALID_ACTION."""
  content = boxed_content(text)
  if content is None:
    return api.INVALID_ACTION
  return _vocabulary(tuple(actions)).get(normalise(content), api.INVALID_ACTION)


@functools.lru_cache(maxsize=64)
def _vocabulary(actions: tuple[str, ...]) -> dict[str, int]:
  return {normalise(a): i for i, a in enumerate(actions)}


# --- Rendering. ---

@struct.dataclass
class PromptTable:
  """Tokenised phrases and fixed prompt parts of one game under one tokenizer and chat format."""

  phrase_tokens: jax.Array  # int32 [num_phrases, max_phrase_len]
  phrase_lengths: jax.Array  # int32 [num_phrases]
  prefix: jax.Array  # int32 [prefix_len]: chat prefix + examples + header
  suffix: jax.Array  # int32 [suffix_len]: "\n" + instruction + chat suffix
  max_prompt_len: int = struct.field(pytree_node=False)
  pad_id: int = struct.field(pytree_node=False)
  left_pad: bool = struct.field(pytree_node=False)


def _padded(rows: list[list[int]], dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
  width = max(1, max(len(r) for r in rows))
  table = np.zeros((len(rows), width), dtype)
  for i, row in enumerate(rows):
    table[i, :len(row)] = row
  return table, np.array([len(r) for r in rows], np.int32)


def prompt_table(game: api.Game, tokenizer: tokenizers.Tokenizer,
                 chat: tokenizers.ChatFormat, max_prompt_len: int | None = None,
                 left_pad: bool = True, bound_games: int = 4096,
                 fit: bool = False, style: PromptStyle = PromptStyle()) -> PromptTable:
  """Tokenises the game's phrases and the fixed prompt parts once.

  The longest prompt is bounded by the fixed parts plus, for each observation slot, the longest
  phrase seen in that slot over random playouts of `bound_games` games (every turn, both players);
  taking each slot's maximum independently makes the bound cover far more than the states seen.
  `max_prompt_len=None` takes that bound; a smaller one is a ValueError. `fit=True` renders at
  the bound rounded up to 8 tokens instead of `max_prompt_len` (a short game's prompts then cost
  less in every forward pass; `pad_prompts` widens them to a common width).
  """
  encode = lambda text: tokenizers.encode(tokenizer, text)
  phrase_tokens, phrase_lengths = _padded([encode(p) for p in game.phrases])
  before, after = prompt_text(chat, "\x00", style).split("\x00")
  prefix, suffix = encode(before), encode(after)
  bound = len(prefix) + len(suffix) + _observation_bound(game, phrase_lengths, bound_games)
  if max_prompt_len is None:
    max_prompt_len = bound
  if bound > max_prompt_len:
    raise ValueError(
        f"{game.name} prompts take up to {bound} tokens with model "
        f"{tokenizers.model_name(tokenizer)!r} and chat format {chat.name!r}, more than "
        f"max_prompt_len={max_prompt_len}; set max_prompt_len to at least {bound}.")
  if fit:
    max_prompt_len = min(max_prompt_len, -(-bound // 8) * 8)
  pad_id = tokenizer.pad_token_id
  pad_id = tokenizer.eos_token_id if pad_id is None else pad_id
  return PromptTable(jnp.asarray(phrase_tokens), jnp.asarray(phrase_lengths),
                     jnp.asarray(prefix, jnp.int32), jnp.asarray(suffix, jnp.int32),
                     max_prompt_len=max_prompt_len, pad_id=int(pad_id or 0), left_pad=left_pad)


def _observation_bound(game: api.Game, phrase_lengths: np.ndarray, num_games: int) -> int:
  """Sum over observation slots of the longest phrase (in tokens) seen in that slot."""
  states = checks.random_playouts(game, jax.random.key(0), num_games)
  return int(_slot_max_lengths(game, states, jnp.asarray(phrase_lengths)).sum())


@functools.partial(jax.jit, static_argnums=0)
def _slot_max_lengths(game: api.Game, states: api.State, phrase_lengths: jax.Array) -> jax.Array:
  """int32 [slots]: longest phrase in each slot over all states ([turns, batch]) and players."""
  render = jax.vmap(jax.vmap(game.render, in_axes=(0, None)), in_axes=(0, None))
  ids = jnp.stack([render(states, p) for p in range(game.num_players)])
  return phrase_lengths[ids].reshape(-1, ids.shape[-1]).max(0)


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


# --- Parsing. ---

@struct.dataclass
class ParseTable:
  """Token bytes of a tokenizer and the normalised action vocabulary of a game."""

  token_bytes: jax.Array  # uint8 [vocab, max_token_bytes]
  token_lengths: jax.Array  # int32 [vocab]
  action_bytes: jax.Array  # uint8 [num_actions, max_action_bytes + 1], zero-padded
  action_lengths: jax.Array  # int32 [num_actions]


def parse_table(actions: tuple[str, ...], byte_table: tuple[np.ndarray, np.ndarray]
                ) -> ParseTable:
  """Builds the parse tables; `byte_table` is `tokenizer.byte_table(...)` (shared by games)."""
  normalised = [normalise(a).encode() for a in actions]
  if not all(normalised) or len(set(normalised)) != len(normalised):
    raise ValueError(f"Actions {actions} are empty or not distinct once normalised.")
  action_bytes, action_lengths = _padded([list(a) + [0] for a in normalised], np.uint8)
  token_bytes, token_lengths = byte_table
  return ParseTable(jnp.asarray(token_bytes), jnp.asarray(token_lengths),
                    jnp.asarray(action_bytes), jnp.asarray(action_lengths - 1))


def response_bytes(table: ParseTable, tokens: jax.Array, length: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """Bytes of tokens[:length]: (uint8 [num_tokens * max_token_bytes], number of bytes)."""
  vocab, width = table.token_bytes.shape
  size = tokens.shape[0] * width
  known = (jnp.arange(tokens.shape[0]) < length) & (tokens >= 0) & (tokens < vocab)
  ids = jnp.where(known, tokens, 0)
  counts = jnp.where(known, table.token_lengths[ids], 0)
  starts = jnp.cumsum(counts) - counts
  offsets = jnp.arange(width)
  position = jnp.where(offsets < counts[:, None], starts[:, None] + offsets, size)
  data = jnp.zeros((size,), jnp.uint8).at[position.reshape(-1)].set(
      table.token_bytes[ids].reshape(-1), mode="drop")
  return data, counts.sum()


def _find(data: jax.Array, end: jax.Array, pattern: str) -> jax.Array:
  """bool [size]: an occurrence of ASCII `pattern` starts here and ends before `end`."""
  size = data.shape[0]
  index = jnp.arange(size)
  padded = jnp.concatenate([data, jnp.zeros((len(pattern),), data.dtype)])
  hit = index + len(pattern) <= end
  for k, char in enumerate(pattern.encode()):
    hit &= padded[k:k + size] == char
  return hit


def _spread(starts: jax.Array, width: int) -> jax.Array:
  """bool [size]: within `width` bytes after a start."""
  covered = jnp.cumsum(starts.astype(jnp.int32))
  return covered - jnp.concatenate([jnp.zeros((width,), jnp.int32), covered[:-width]]) > 0


def parse_bytes(table: ParseTable, data: jax.Array, size: jax.Array) -> jax.Array:
  """Action id answered in data[:size] (uint8), or api.INVALID_ACTION. Jittable, vmappable."""
  index = jnp.arange(data.shape[0])
  last = jnp.max(jnp.where(_find(data, size, BOX_OPEN), index, -1))
  start = last + len(BOX_OPEN)
  tail = (index >= start) & (index < size) & (last >= 0)
  depth = 1 + jnp.cumsum(jnp.where(tail, (data == ord("{")).astype(jnp.int32)
                                   - (data == ord("}")), 0))
  end = jnp.min(jnp.where(tail & (depth == 0), index, data.shape[0]))
  content = (index >= start) & (index < end)
  closed = (last >= 0) & (end < data.shape[0])

  keep = content & ~_spread(_find(data, end, TEXT_OPEN) & content, len(TEXT_OPEN))
  keep &= ~jnp.isin(data, jnp.frombuffer(DROPPED_CHARS.encode(), np.uint8))
  space = jnp.isin(data, jnp.frombuffer(WHITESPACE.encode(), np.uint8))
  word = keep & ~space
  previous_kept = jax.lax.cummax(jnp.where(keep, index, -1))
  previous_kept = jnp.concatenate([jnp.array([-1]), previous_kept[:-1]])
  after_word = (previous_kept >= 0) & word[jnp.maximum(previous_kept, 0)]
  words_before = jnp.cumsum(word)
  before_word = words_before[-1] - words_before > 0
  emit = word | (keep & space & after_word & before_word)

  upper = (data >= ord("A")) & (data <= ord("Z"))
  chars = jnp.where(space, ord(" "), jnp.where(upper, data + 32, data)).astype(jnp.uint8)
  width = table.action_bytes.shape[1]
  position = jnp.where(emit, jnp.cumsum(emit) - 1, width)
  answer = jnp.zeros((width,), jnp.uint8).at[position].set(chars, mode="drop")
  matches = ((emit.sum() == table.action_lengths)
             & (answer[None, :] == table.action_bytes).all(-1))
  return jnp.where(closed & matches.any(), jnp.argmax(matches), api.INVALID_ACTION)


def parse_tokens(table: ParseTable, tokens: jax.Array, length: jax.Array) -> jax.Array:
  """Action id answered in response tokens[:length], or api.INVALID_ACTION."""
  data, size = response_bytes(table, tokens, length)
  return parse_bytes(table, data, size).astype(jnp.int32)


def answer_stop_rule(table: ParseTable) -> sampling.StopRule:
  """Ends a response at the `}` closing its first `\\boxed{` (nested braces counted), byte by byte.

  Carry per row: its last len(BOX_OPEN) bytes and the brace depth inside the box (0 = outside).
  A later `\\boxed{` inside the box starts over, as the parser takes the last one.
  """
  pattern = jnp.frombuffer(BOX_OPEN.encode(), np.uint8)
  vocab, width = table.token_bytes.shape

  def init(batch: int):
    return jnp.zeros((batch, len(BOX_OPEN)), jnp.uint8), jnp.zeros((batch,), jnp.int32)

  def update(carry, tokens_B):
    known = (tokens_B >= 0) & (tokens_B < vocab)
    ids = jnp.where(known, tokens_B, 0)
    data_BW = table.token_bytes[ids]
    counts_B = jnp.where(known, table.token_lengths[ids], 0)

    def byte(k, state):
      window, depth, closed = state
      on, value = k < counts_B, data_BW[:, k]
      window = jnp.where(on[:, None], jnp.concatenate([window[:, 1:], value[:, None]], 1), window)
      opened = on & (window == pattern).all(-1)
      delta = (value == ord("{")).astype(jnp.int32) - (value == ord("}"))
      inside = on & (depth > 0)
      new_depth = jnp.where(opened, 1, jnp.where(inside, depth + delta, depth))
      return window, new_depth, closed | (inside & ~opened & (new_depth == 0))

    window, depth, closed = jax.lax.fori_loop(
        0, width, byte, (*carry, jnp.zeros(tokens_B.shape, bool)))
    return (window, depth), closed

  return sampling.StopRule(init, update)


# --- Action scoring. ---

@struct.dataclass
class ScoringTable:
  """Answer tokens of every action: tokens('\\boxed{') + tokens(action + '}'), zero-padded."""

  tokens: jax.Array  # int32 [num_actions, max_answer_len]
  lengths: jax.Array  # int32 [num_actions]
  prefix_len: int = struct.field(pytree_node=False)  # Leading tokens shared by all actions.


def scoring_table(actions: tuple[str, ...], tokenizer: tokenizers.Tokenizer) -> ScoringTable:
  prefix = tokenizers.encode(tokenizer, BOX_OPEN)
  rows = [prefix + tokenizers.encode(tokenizer, a + BOX_CLOSE) for a in actions]
  tokens, lengths = _padded(rows)
  return ScoringTable(jnp.asarray(tokens), jnp.asarray(lengths), prefix_len=len(prefix))
