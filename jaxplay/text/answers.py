"""Answers inside the compiled program: jittable `\\boxed{}` parsing, stopping and scoring.

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

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from games import api
from jaxplay.models import sampling
from jaxplay.text import tokenizer as tokenizers


BOX_OPEN = "\\boxed{"


BOX_CLOSE = "}"


TEXT_OPEN = "\\text{"


DROPPED_CHARS = "{}[]\"'`"


WHITESPACE = " \t\n\r\x0b\x0c"


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


def padded(rows: list[list[int]], dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
  width = max(1, max(len(r) for r in rows))
  table = np.zeros((len(rows), width), dtype)
  for i, row in enumerate(rows):
    table[i, :len(row)] = row
  return table, np.array([len(r) for r in rows], np.int32)


@struct.dataclass
class ParseTable:
  """Token bytes of a tokenizer and the normalised action vocabulary of a game."""

  token_bytes: jax.Array  # uint8 [vocab, max_token_bytes]
  token_lengths: jax.Array  # int32 [vocab]
  action_bytes: jax.Array  # uint8 [num_actions, W]: W the answer width, > max_action_bytes
  action_lengths: jax.Array  # int32 [num_actions]


def parse_table(actions: tuple[str, ...], byte_table: tuple[np.ndarray, np.ndarray],
                answer_width: int = 0) -> ParseTable:
  """Builds the parse tables; `byte_table` is `tokenizer.byte_table(...)` (shared by games).
  Answers are read `answer_width` bytes wide at least (a task's `max_answer_bytes`)."""
  normalised = [normalise(a).encode() for a in actions]
  if not all(normalised) or len(set(normalised)) != len(normalised):
    raise ValueError(f"Actions {actions} are empty or not distinct once normalised.")
  width = max(answer_width, max(len(a) for a in normalised) + 1)
  action_bytes = np.zeros((len(normalised), width), np.uint8)
  for i, action in enumerate(normalised):
    action_bytes[i, :len(action)] = list(action)
  action_lengths = np.array([len(a) for a in normalised], np.int32)
  token_bytes, token_lengths = byte_table
  return ParseTable(jnp.asarray(token_bytes), jnp.asarray(token_lengths),
                    jnp.asarray(action_bytes), jnp.asarray(action_lengths))


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


def answer_bytes(data: jax.Array, size: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
  """The normalised answer in data[:size] (uint8): (uint8 [width], zero-padded, its length int32
  [], -1 without a closed box; a length above `width` means the answer did not fit)."""
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
  position = jnp.where(emit, jnp.cumsum(emit) - 1, width)
  answer = jnp.zeros((width,), jnp.uint8).at[position].set(chars, mode="drop")
  return answer, jnp.where(closed, emit.sum(), -1).astype(jnp.int32)


def parse_bytes(table: ParseTable, data: jax.Array, size: jax.Array) -> jax.Array:
  """Action id answered in data[:size] (uint8), or api.INVALID_ACTION. Jittable, vmappable."""
  answer, length = answer_bytes(data, size, table.action_bytes.shape[1])
  return _match(table, answer, length)


def _match(table: ParseTable, answer: jax.Array, length: jax.Array) -> jax.Array:
  matches = (length == table.action_lengths) & (answer[None, :] == table.action_bytes).all(-1)
  return jnp.where(matches.any(), jnp.argmax(matches), api.INVALID_ACTION)


def parse_tokens(table: ParseTable, tokens: jax.Array, length: jax.Array) -> jax.Array:
  """Action id answered in response tokens[:length], or api.INVALID_ACTION."""
  return read_tokens(table, tokens, length)[0]


def read_tokens(table: ParseTable, tokens: jax.Array, length: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(action id int32 [], normalised answer uint8 [W], its length int32 []) of response
  tokens[:length]; W is the table's answer width (`parse_table(answer_width=...)`)."""
  data, size = response_bytes(table, tokens, length)
  answer, answer_length = answer_bytes(data, size, table.action_bytes.shape[1])
  return _match(table, answer, answer_length).astype(jnp.int32), answer, answer_length


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


@struct.dataclass
class ScoringTable:
  """Answer tokens of every action: tokens('\\boxed{') + tokens(action + '}'), zero-padded."""

  tokens: jax.Array  # int32 [num_actions, max_answer_len]
  lengths: jax.Array  # int32 [num_actions]
  prefix_len: int = struct.field(pytree_node=False)  # Leading tokens shared by all actions.


def scoring_table(actions: tuple[str, ...], tokenizer: tokenizers.Tokenizer) -> ScoringTable:
  prefix = tokenizers.encode(tokenizer, BOX_OPEN)
  rows = [prefix + tokenizers.encode(tokenizer, a + BOX_CLOSE) for a in actions]
  tokens, lengths = padded(rows)
  return ScoringTable(jnp.asarray(tokens), jnp.asarray(lengths), prefix_len=len(prefix))
