"""Batched sampling with a static-shape KV cache: one prefill, then decoding in `lax.while_loop`.

`sample` is a pure function of arrays with static shapes (the model config and max_response_len are
its only static arguments), so it can be jitted alone (`generate`) or called inside a `lax.scan`.
Prompts come left-padded to a common width P; the cache holds P + max_response_len slots a row
(shared prompt starts are held once, see `sample`) and is a loop carry updated in place.
Temperature, top-p and top-k are per-row arrays, so changing them does not recompile.

Returned log-probs are those of the policy distribution softmax(logits / temperature) over the
full vocabulary (top-k/top-p only restrict which tokens can be drawn), which is what PPO's
ratio needs; a greedy row (temperature 0) reports log_softmax(logits).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxplay import compiling
from jaxplay.models import transformer
from jaxplay.models.configs import ModelConfig


@struct.dataclass
class Generation:
  tokens: jax.Array  # int32 [B, R]: the response, pad_id after the stop token.
  logprobs: jax.Array  # float32 [B, R]: log-prob of each token under the policy, 0 after the end.
  lengths: jax.Array  # int32 [B]: tokens generated, the stop token included.


class StopRule(NamedTuple):
  """Ends rows by what they wrote, beyond stop tokens: `init(batch) -> carry` and
  `update(carry, tokens_B) -> (carry, done_B)`, called once per generated token (the token counts
  in the response, like a stop token)."""

  init: Callable[[int], Any]
  update: Callable[[Any, jax.Array], tuple[Any, jax.Array]]


PREFILL_CHUNK = 128  # The most prompt columns a prefill pass runs (`_prefill`).


def batch_indices(rows: int, batch_size: int) -> np.ndarray:
  """int [calls, batch_size]: the indices of `rows` rows in calls of a fixed `batch_size` (one
  compile), the last call topped up with copies of the first rows (whose results are dropped)."""
  calls = -(-rows // batch_size)
  return (np.arange(calls * batch_size) % rows).reshape(calls, batch_size)


# Top-k/top-p look for their kept tokens among each row's largest logits first (`lax.top_k` of
# these counts, in turn); the whole vocabulary is sorted only when some row's kept set may reach
# beyond them. With Gemma's 262,144 tokens on a 2-core CPU the sort took 0.1-3.5 s a step (1-32
# rows), top_k of 1,024 2-50 ms; Gemma 3 270M's 0.95 nucleus at temperature 0.6 held more than
# 1,024 tokens at 1% of its steps (of 1,024 steps; at most 2,102).
TRUNCATION_CANDIDATES = (1024, 16384)


def _walk(sorted_BK, k_B, top_p_B, log_total_B):
  """(threshold [B], settled [B]) over a row's K largest logits sorted descending: the smallest
  logit that top-k then top-p keep (HF's order), with log_total_B the log of the mass top-p
  renormalises over; `settled` is False where the kept set may reach beyond these K."""
  K = sorted_BK.shape[-1]
  in_k = jnp.arange(K) < k_B[:, None]
  probs = jnp.where(in_k, jnp.exp(sorted_BK - log_total_B[:, None]), 0.0)
  mass_after = jnp.cumsum(probs, axis=-1)
  # top_p >= 1 keeps every token: float32 mass can reach 1 before the tail's last tokens.
  keep = ((mass_after - probs < top_p_B[:, None]) | (top_p_B[:, None] >= 1)) & in_k
  n_keep = jnp.maximum(keep.sum(-1), 1)
  threshold = jnp.take_along_axis(sorted_BK, (n_keep - 1)[:, None], axis=-1)[:, 0]
  settled = (k_B <= K) | ((top_p_B < 1) & (mass_after[:, -1] >= top_p_B))
  return threshold, settled


def _threshold(scaled_BV, k_B, top_p_B, log_total_B, candidates: tuple[int, ...]):
  """float32 [B]: the smallest logit top-k then top-p keep, found among each row's
  `candidates[0]` largest logits, else among the next count's, else the whole sorted row.
  log_total_B: each whole row's logsumexp (the mass top-p renormalises over without top-k)."""
  vocab = scaled_BV.shape[-1]
  candidates = tuple(count for count in candidates if count < vocab)
  if not candidates:
    sorted_BV = jnp.flip(jnp.sort(scaled_BV, axis=-1), axis=-1)
    in_k = jnp.arange(vocab) < k_B[:, None]
    log_total = jax.nn.logsumexp(jnp.where(in_k, sorted_BV, -jnp.inf), axis=-1)
    return _walk(sorted_BV, k_B, top_p_B, log_total)[0]
  count = candidates[0]
  top_BK = jax.lax.top_k(scaled_BV, count)[0]
  log_total = jnp.where(k_B >= vocab, log_total_B,
                        jax.nn.logsumexp(jnp.where(jnp.arange(count) < k_B[:, None], top_BK,
                                                   -jnp.inf), axis=-1))
  known_total = (k_B <= count) | (k_B >= vocab)  # Else the top k's mass needs more logits.
  threshold, settled = _walk(top_BK, k_B, top_p_B, log_total)
  return jax.lax.cond(jnp.all(settled & known_total), lambda: threshold,
                      lambda: _threshold(scaled_BV, k_B, top_p_B, log_total_B, candidates[1:]))


def _truncate(scaled_VB, top_k_B, top_p_B, candidates=TRUNCATION_CANDIDATES, *,
              log_total_B=None):
  """Masks each row's (column's) tokens outside top-k, then outside the top-p nucleus of what
  remains (as in HF); ties with the last kept token stay. Exact whatever the `candidates` (static
  counts, see above). log_total_B: each row's logsumexp where the caller has it (else one more
  pass over [V, B])."""
  vocab = scaled_VB.shape[0]
  if log_total_B is None:
    log_total_B = jax.nn.logsumexp(scaled_VB, axis=0)
  k_B = jnp.where(top_k_B > 0, jnp.minimum(top_k_B, vocab), vocab)
  keep_all = (k_B >= vocab) & (top_p_B >= 1)
  # Rows that keep everything ask for their top token alone, which settles among any candidates.
  threshold = _threshold(scaled_VB.T, jnp.where(keep_all, 1, k_B), top_p_B, log_total_B,
                         candidates)
  threshold = jnp.where(keep_all, -jnp.inf, threshold)
  return jnp.where(scaled_VB >= threshold, scaled_VB, -jnp.inf)


def _chunk_width(vocab: int) -> int:
  """The smallest power of two >= sqrt(vocab): `_draw` splits the vocabulary into chunks of it."""
  return 1 << math.ceil(math.log2(math.isqrt(max(vocab - 1, 0)) + 1))


def _chunks(x_VB):
  """[V, B] -> [C, W, B] with W = _chunk_width(V), the last chunk padded with -inf."""
  V, B = x_VB.shape
  width = _chunk_width(V)
  return jnp.pad(x_VB, ((0, -V % width), (0, 0)), constant_values=-jnp.inf).reshape(-1, width, B)


def _chunk_masses(x_VB):
  """float32 [B, C]: the log of each chunk's unnormalised mass, logsumexp over its tokens."""
  chunks_CWB = _chunks(x_VB)
  if chunks_CWB.shape[2] == 1:  # XLA's CPU reduction of [C, W, 1] over W ran ~20x slower.
    return jax.nn.logsumexp(chunks_CWB[:, :, 0], axis=1)[None]
  return jax.nn.logsumexp(chunks_CWB, axis=1).T


def _draw(key, logits_VB, masses_BC):
  """Tokens [B] drawn from softmax over each column of logits_VB, exactly, in two steps: a chunk
  with probability proportional to its mass, then a token of that chunk by its logits (P(chunk)
  P(token | chunk) = P(token)). That draws 2 sqrt(V) Gumbel variates a row instead of V: with
  Gemma's 262,144 tokens one draw over the whole vocabulary took up to ~40% of a decode step on a
  2-core CPU."""
  chunk_key, token_key = jax.random.split(key)
  chunk_B = jax.random.categorical(chunk_key, masses_BC, axis=-1)
  within_BW = _chunks(logits_VB)[chunk_B, :, jnp.arange(logits_VB.shape[1])]
  token_B = jax.random.categorical(token_key, within_BW, axis=-1)
  return chunk_B * _chunk_width(logits_VB.shape[0]) + token_B


def choose_tokens(logits_VB, key, temperature_B, top_p_B, top_k_B):
  """(tokens [B], policy log-probs [B]) from vocabulary-major logits [V, B]
  (`transformer.logits_vocab_major`); temperature <= 0 is greedy, top_k <= 0 disables it."""
  greedy = temperature_B <= 0
  scaled = logits_VB / jnp.where(greedy, 1.0, temperature_B)
  masses = _chunk_masses(scaled)  # One exp over the vocabulary serves all: log-probs, top-p, draw.
  log_total = jax.nn.logsumexp(masses, axis=-1)
  needs_truncation = jnp.any(~greedy & ((top_k_B > 0) | (top_p_B < 1)))

  def truncated(scaled, _):  # Greedy rows take the argmax: their settings must not force a sort.
    filtered = _truncate(scaled, jnp.where(greedy, 0, top_k_B), jnp.where(greedy, 1.0, top_p_B),
                         log_total_B=log_total)
    return filtered, _chunk_masses(filtered)

  filtered, filtered_masses = jax.lax.cond(needs_truncation, truncated, lambda *x: x, scaled,
                                           masses)
  # Each pass over [V, B] counts (an argmax over 32 rows of Gemma's vocabulary: ~18 ms a step).
  best = jax.lax.cond(jnp.any(greedy), lambda: jnp.argmax(logits_VB, axis=0).astype(jnp.int32),
                      lambda: jnp.zeros(greedy.shape, jnp.int32))
  drawn = jax.lax.cond(jnp.all(greedy), lambda: best,
                       lambda: _draw(key, filtered, filtered_masses).astype(jnp.int32))
  tokens = jnp.where(greedy, best, drawn)
  chosen = scaled[tokens, jnp.arange(tokens.shape[0])]
  return tokens, chosen - log_total


def sample(config: ModelConfig, params, prompt_BP, prompt_lengths_B, key, temperature,
           top_p, top_k, stop_tokens, *, max_response_len: int, pad_id: int = 0,
           stop_rule: StopRule | None = None, prefixes_NL: jax.Array | None = None,
           prefix_index_B: jax.Array | None = None, skip_B: jax.Array | None = None,
           int8_logits: bool = False, int8_weights: bool = False) -> Generation:
  """Samples up to max_response_len tokens after left-padded prompts (each length >= 1).

  temperature, top_p, top_k: scalars or [B] arrays; stop_tokens: int [N] ids (a row ends at its
  first stop token, which is kept; pass e.g. [-1] for none); `stop_rule` ends rows too.
  `prefixes_NL` (int32 [N, L]) are prompt starts shared by many rows, left out of `prompt_BP`:
  row b continues prefix `prefix_index_B[b]` (default 0). They are prefilled once (batch N) and
  their keys and values held once (`transformer.SharedKV`), not copied to every row, which gives
  the same samples as prompts that hold them at a fraction of the prefill and of each decode
  step's attention (few-shot examples, long instructions, each seat's rules).
  `skip_B` (bool [B]) marks rows nobody needs an answer for (e.g. games already over): they end
  after their first token, so they never keep the decoding loop going.
  `int8_logits` computes every token's logits with `transformer.int8_logits` (the unembedding
  quantised once per call): faster at small batches, close to but not the float logits; the
  tokens are drawn from, and the log-probs are those of, the quantised logits.
  `int8_weights` runs every layer projection with `transformer.int8_weights` (quantised once per
  call, before the prefill): faster decoding of small batches, a model close to but not the float
  one; its tokens and log-probs, as above.
  A bfloat16 model samples with its params and cache held as uint16 bits (`transformer.as_bits`,
  `init_cache(as_bits=True)`): the same values, read and written without XLA's CPU backend
  widening them to float32; the logits alone read the float table, vocabulary-major
  (`transformer.logits_vocab_major`, `choose_tokens`).
  """
  B, P = prompt_BP.shape
  R = max_response_len
  row = lambda x, dtype: jnp.broadcast_to(jnp.asarray(x, dtype), (B,))
  temperature, top_p, top_k = (row(temperature, jnp.float32), row(top_p, jnp.float32),
                               row(top_k, jnp.int32))
  stop_tokens = jnp.asarray(stop_tokens, jnp.int32).reshape(-1)
  prompt_lengths_B = jnp.asarray(prompt_lengths_B, jnp.int32)
  if int8_logits:
    table = transformer.int8_unembedding(config, params)
    logits_of = lambda h_BD: transformer.int8_logits(config, table, h_BD)
  else:  # The float table, not `as_bits`' (see `transformer.logits_vocab_major`).
    logits_of = functools.partial(transformer.logits_vocab_major, config, params)
  if int8_weights:
    params = transformer.int8_weights(params)
  params = transformer.as_bits(transformer.projections_in_compute_dtype(config, params))
  shared, offset = _shared_starts(config, params, prefixes_NL, prefix_index_B, B)
  last_hidden_BD, cache = _prefill(config, params, prompt_BP, prompt_lengths_B, offset, shared,
                                   R, pad_id)
  logits = logits_of(last_hidden_BD)
  choose = lambda logits, step: choose_tokens(logits, jax.random.fold_in(key, step),
                                              temperature, top_p, top_k)
  first, first_logprob = choose(logits, 0)
  tokens = jnp.full((B, R), pad_id, jnp.int32).at[:, 0].set(first)
  logprobs = jnp.zeros((B, R), jnp.float32).at[:, 0].set(first_logprob)

  def finished(rule_carry, new_B):
    if stop_rule is None:
      return rule_carry, jnp.isin(new_B, stop_tokens)
    rule_carry, answered = stop_rule.update(rule_carry, new_B)
    return rule_carry, answered | jnp.isin(new_B, stop_tokens)

  rule_carry, done = finished(None if stop_rule is None else stop_rule.init(B), first)
  if skip_B is not None:
    done = done | skip_B
  lengths = jnp.ones((B,), jnp.int32)

  def cond(carry):
    step, *_, done, _, _ = carry
    return (step < R) & ~jnp.all(done)

  def body(carry):
    step, tokens, logprobs, cache, done, lengths, rule_carry = carry
    previous = jax.lax.dynamic_index_in_dim(tokens, step - 1, axis=1)  # [B, 1]
    positions = (offset + prompt_lengths_B + step - 1)[:, None]
    hidden, cache = transformer.apply(config, params, previous, positions, cache,
                                      return_hidden=True, shared=shared)
    new, new_logprob = choose(logits_of(hidden[:, 0]), step)
    active = ~done
    tokens = tokens.at[:, step].set(jnp.where(active, new, pad_id))
    logprobs = logprobs.at[:, step].set(jnp.where(active, new_logprob, 0.0))
    rule_carry, ends = finished(rule_carry, new)
    return (step + 1, tokens, logprobs, cache, done | ends, lengths + active, rule_carry)

  carry = (jnp.ones((), jnp.int32), tokens, logprobs, cache, done, lengths, rule_carry)
  _, tokens, logprobs, _, _, lengths, _ = jax.lax.while_loop(cond, body, carry)
  return Generation(tokens=tokens, logprobs=logprobs, lengths=lengths)


def _prefill(config: ModelConfig, params, prompt_BP, prompt_lengths_B, offset: int,
             shared: transformer.SharedKV | None, max_response_len: int, pad_id: int
             ) -> tuple[jax.Array, transformer.KVCache]:
  """(the last prompt token's hidden state [B, D], a cache holding the prompts with room for
  `max_response_len` more tokens) of left-padded prompts. The prompts run in equal passes of at
  most PREFILL_CHUNK columns (the first widened with padding), and a pass whose columns are
  padding in every row is left out: a batch's prompts are often far shorter than the width
  rendered for the longest (Simple Negotiation's turns: 141-305 of 425 tokens a row)."""
  B, P = prompt_BP.shape
  passes = -(-P // PREFILL_CHUNK)
  width = -(-P // passes)
  columns = passes * width
  prompt_BC = jnp.pad(prompt_BP, ((0, 0), (columns - P, 0)), constant_values=pad_id)
  columns_BC = jnp.arange(columns)[None, :] - (columns - prompt_lengths_B)[:, None]
  positions_BC = jnp.where(columns_BC >= 0, offset + columns_BC, -1)  # -1 on padding

  def prefill(index, carry):
    last_hidden_BD, cache = carry
    tokens, positions = (jax.lax.dynamic_slice_in_dim(x, index * width, width, axis=1)
                         for x in (prompt_BC, positions_BC))

    def run(cache):
      hidden, cache = transformer.apply(config, params, tokens, positions, cache,
                                        return_hidden=True, shared=shared)
      return hidden[:, -1], cache

    skip = lambda cache: (last_hidden_BD, cache.replace(index=cache.index + width))
    return jax.lax.cond(jnp.any(positions >= 0), run, skip, cache)

  cache = transformer.init_cache(config, B, columns + max_response_len, as_bits=True)
  start = (jnp.zeros((B, config.d_model), config.jnp_dtype), cache)
  return jax.lax.fori_loop(0, passes, prefill, start)


def _shared_starts(config: ModelConfig, params, prefixes_NL: jax.Array | None,
                   prefix_index_B: jax.Array | None, batch: int
                   ) -> tuple[transformer.SharedKV | None, int]:
  """(the prefixes' keys and values for `batch` rows, their length L), or (None, 0)."""
  if prefixes_NL is None or prefixes_NL.shape[1] == 0:
    return None, 0
  N, L = prefixes_NL.shape
  cache = transformer.init_cache(config, N, L, as_bits=True)
  positions_NL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (N, L))
  _, cache = transformer.apply(config, params, prefixes_NL.astype(jnp.int32), positions_NL, cache,
                               return_hidden=True)
  start_B = (jnp.zeros((batch,), jnp.int32) if prefix_index_B is None
             else jnp.asarray(prefix_index_B, jnp.int32))
  return transformer.SharedKV(k=cache.k, v=cache.v, positions=cache.positions, start=start_B), L


# `sample`, jitted: config, max_response_len, pad_id, int8_logits and int8_weights are static.
generate = compiling.jit(
    sample, static_argnums=0,
    static_argnames=("max_response_len", "pad_id", "int8_logits", "int8_weights"))
