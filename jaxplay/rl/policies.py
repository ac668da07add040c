"""Model policies for the rollout: free-text sampling + parsing, or scoring the legal actions.

Both return `rollout.Act`. In free-text mode the response is the generation and its per-token
log-probs; in action-scoring mode the policy is the softmax over legal actions of each action's
answer log-likelihood (`answers.ScoringTable`), the response is the chosen answer's tokens, and its
log-prob sits on the first response token (the train step scores actions the same way).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxplay.models import sampling, transformer
from jaxplay.models.configs import ModelConfig
from jaxplay.rl import losses, rollout
from jaxplay.text import answers


def text_policy(model: ModelConfig, parse: answers.ParseTable, stop_tokens: tuple[int, ...],
                max_response_len: int, pad_id: int, temperature: float, top_p: float = 1.0,
                top_k: int = 0, stop_at_answer: bool = False,
                prompt_prefix: jax.Array | None = None, prompt_starts: jax.Array | None = None,
                int8_logits: bool = False, int8_weights: bool = False) -> rollout.Policy:
  """Samples a response and parses its last \\boxed{} answer; `stop_at_answer` ends responses at
  the `}` closing their first \\boxed{ (answers.answer_stop_rule). `prompt_prefix` (int32 [L]) are
  tokens every prompt starts with, `prompt_starts` (int32 [N, S], each beginning with the prefix)
  the starts of each seat's prompts (prompts.PromptTable.prefix and .starts): the sampler prefills
  the prefix or the starts once per call, whichever runs fewer tokens for the call's rows, and the
  rest of each prompt after them, with the same samples. `int8_logits`, `int8_weights`: see
  `sampling.sample`."""
  stop_rule = answers.answer_stop_rule(parse) if stop_at_answer else None

  def policy(params, prompt_tokens, prompt_lengths, legal_mask, key):
    batch, width = prompt_tokens.shape
    starts = shared_starts(prompt_prefix, prompt_starts, batch, width)
    shared = 0 if starts is None else starts.shape[1]
    index = None
    if starts is not None and starts.shape[0] > 1:
      index = continued_start(prompt_tokens, width - prompt_lengths, starts)
    # The parse decides legality (illegal answers are the game's business); rows without a
    # legal action (games already over) are not decoded beyond one token.
    out = sampling.sample(model, params, prompt_tokens[:, shared:], prompt_lengths - shared, key,
                          temperature, top_p, top_k, jnp.asarray(stop_tokens, jnp.int32),
                          max_response_len=max_response_len, pad_id=pad_id, stop_rule=stop_rule,
                          prefixes_NL=starts, prefix_index_B=index, skip_B=~legal_mask.any(-1),
                          int8_logits=int8_logits, int8_weights=int8_weights)
    actions, answer, answer_length = jax.vmap(answers.read_tokens, in_axes=(None, 0, 0))(
        parse, out.tokens, out.lengths)
    return rollout.Act(actions, out.tokens, out.logprobs, out.lengths, answer, answer_length)

  return policy


def shared_starts(prefix_L: jax.Array | None, starts_NS: jax.Array | None, rows: int,
                  width: int) -> jax.Array | None:
  """The starts a call on `rows` prompts `width` tokens wide runs once: the seats' starts when
  running them (N x S tokens) and the rows after them (rows x (width - S)) is fewer tokens than
  the prefix and the rows after it, else the prefix ([1, L]); None without either."""
  if starts_NS is None or starts_NS.shape[0] == 1:
    return None if prefix_L is None else prefix_L[None]
  if prefix_L is None:
    return starts_NS
  (count, start), prefix = starts_NS.shape, prefix_L.shape[0]
  if count * start + rows * (width - start) < prefix + rows * (width - prefix):
    return starts_NS
  return prefix_L[None]


def continued_start(tokens_BT: jax.Array, first_B: jax.Array, starts_NS: jax.Array,
                    start_lengths_N: jax.Array | None = None,
                    allowed_BN: jax.Array | None = None) -> jax.Array:
  """int32 [B]: which start each row's tokens begin with at column first_B (starts left-aligned
  in starts_NS, `start_lengths_N` tokens long, default all S), among the `allowed_BN` ones; 0
  where none does (a game whose observations break `Game.intro`'s contract, which
  prompts.prompt_table and games/checks.py rule out)."""
  starts_NS = jnp.asarray(starts_NS)
  count, width = starts_NS.shape
  columns = jnp.minimum(first_B[:, None] + jnp.arange(width), tokens_BT.shape[1] - 1)
  seen_BS = jnp.take_along_axis(tokens_BT, columns, axis=1)
  lengths = jnp.full((count,), width) if start_lengths_N is None else jnp.asarray(start_lengths_N)
  in_start_NS = jnp.arange(width) < lengths[:, None]
  match_BN = jnp.all((seen_BS[:, None] == starts_NS[None]) | ~in_start_NS[None], axis=-1)
  if allowed_BN is not None:
    match_BN = match_BN & allowed_BN
  return jnp.argmax(match_BN, axis=-1).astype(jnp.int32)


def answer_log_likelihoods(model: ModelConfig, params, prompt_tokens_BP, prompt_lengths_B,
                           answer_tokens_BAL, answer_lengths_BA) -> jax.Array:
  """float32 [B, A]: log p(answer tokens of each action | left-padded prompt).

  The prompt is encoded once into a KV cache, which every action's answer then continues.
  """
  batch, prompt_len = prompt_tokens_BP.shape
  _, num_actions, answer_len = answer_tokens_BAL.shape
  positions = jnp.arange(prompt_len)[None, :] - (prompt_len - prompt_lengths_B)[:, None]
  cache = transformer.init_cache(model, batch, prompt_len + answer_len)
  prompt_hidden, cache = transformer.apply(model, params, prompt_tokens_BP, positions, cache,
                                           return_hidden=True)
  repeat = lambda x: jnp.repeat(x, num_actions, axis=1 if x.ndim == 5 else 0)
  cache = cache.replace(k=repeat(cache.k), v=repeat(cache.v), positions=repeat(cache.positions))
  answer_rows = answer_tokens_BAL.reshape(batch * num_actions, answer_len)
  answer_positions = (jnp.repeat(prompt_lengths_B, num_actions)[:, None]
                      + jnp.arange(answer_len)[None, :])
  answer_hidden, _ = transformer.apply(model, params, answer_rows, answer_positions, cache,
                                       return_hidden=True)
  # The prompt's last state predicts answer token 0; answer state j predicts token j + 1.
  first = jnp.repeat(prompt_hidden[:, -1:], num_actions, axis=0)
  hidden = jnp.concatenate([first, answer_hidden[:, :-1]], axis=1)  # [B*A, L, D]
  logits = transformer.unembed(model, params, hidden)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, answer_rows[..., None], axis=-1)[..., 0]
  in_answer = jnp.arange(answer_len)[None, :] < answer_lengths_BA.reshape(-1, 1)
  return jnp.where(in_answer, picked, 0.0).sum(-1).reshape(batch, num_actions)


def action_log_probs(model: ModelConfig, params, prompt_tokens_BP, prompt_lengths_B,
                     legal_mask_BA, answer_tokens_BAL, answer_lengths_BA,
                     temperature: float = 1.0):
  """(log pi(a | s) float32 [B, A] over legal actions (-inf elsewhere), entropy [B]).

  Rows without a legal action (finished games, padding) score every action, to stay finite.
  """
  scores = answer_log_likelihoods(model, params, prompt_tokens_BP, prompt_lengths_B,
                                  answer_tokens_BAL, answer_lengths_BA)
  legal_mask_BA = legal_mask_BA | ~legal_mask_BA.any(-1, keepdims=True)
  logits = jnp.where(legal_mask_BA, scores / temperature, -jnp.inf)
  log_pi = jax.nn.log_softmax(logits, axis=-1)
  finite = jnp.where(legal_mask_BA, log_pi, 0.0)  # No -inf inside: its gradient would be NaN.
  entropy = -jnp.where(legal_mask_BA, jnp.exp(finite) * finite, 0.0).sum(-1)
  return log_pi, entropy


def scoring_policy(model: ModelConfig, scoring: answers.ScoringTable, pad_id: int,
                   temperature: float = 1.0) -> rollout.Policy:
  """Samples a legal action from the softmax of the answers' log-likelihoods (greedy at 0)."""

  def policy(params, prompt_tokens, prompt_lengths, legal_mask, key):
    batch = prompt_tokens.shape[0]
    # A table padded to a larger game mix's action count: the extra actions are never legal.
    legal_mask = jnp.pad(legal_mask, ((0, 0), (0, scoring.tokens.shape[0] - legal_mask.shape[1])))
    answer_rows = jnp.broadcast_to(scoring.tokens, (batch,) + scoring.tokens.shape)
    answer_lengths = jnp.broadcast_to(scoring.lengths, (batch,) + scoring.lengths.shape)
    log_pi, _ = action_log_probs(model, params, prompt_tokens, prompt_lengths, legal_mask,
                                 answer_rows, answer_lengths, max(temperature, 1e-6))
    sampled = jax.random.categorical(key, log_pi, axis=-1)
    actions = (jnp.argmax(log_pi, -1) if temperature <= 0 else sampled).astype(jnp.int32)
    chosen = jnp.take_along_axis(log_pi, actions[:, None], axis=-1)[:, 0]
    lengths = scoring.lengths[actions]
    in_answer = jnp.arange(scoring.tokens.shape[1])[None, :] < lengths[:, None]
    tokens = jnp.where(in_answer, scoring.tokens[actions], pad_id).astype(jnp.int32)
    logprobs = jnp.zeros(tokens.shape, jnp.float32).at[:, 0].set(chosen)
    return rollout.Act(actions, tokens, logprobs, lengths)

  return policy


def scoring_log_probs_fn(model: ModelConfig, scorings: answers.ScoringTable, prompt_len: int,
                         temperature: float = 1.0):
  """train_step log_probs_fn for action scoring: log pi(action | prompt) at column prompt_len - 1.

  `scorings` stacks the games' tables ([K, A, L]); rows hold tokens [b, P + R] (left-padded
  prompt first), positions, legal [b, A], action [b] and kind [b] (the game). The returned
  [b, P + R - 1] arrays are zero except where the first response token is predicted.
  """

  def log_probs_fn(params, rows):
    tokens, positions = rows.tokens, rows.positions
    prompt_lengths = positions[:, prompt_len - 1] + 1
    log_pi, entropy = action_log_probs(model, params, tokens[:, :prompt_len], prompt_lengths,
                                       rows.legal, scorings.tokens[rows.kind],
                                       scorings.lengths[rows.kind], temperature)
    chosen = jnp.take_along_axis(log_pi, rows.action[:, None], axis=-1)[:, 0]
    column = jnp.arange(tokens.shape[1] - 1)[None, :] == prompt_len - 1
    return jnp.where(column, chosen[:, None], 0.0), jnp.where(column, entropy[:, None], 0.0)

  return log_probs_fn


def _start_entries(starts: tuple[jax.Array, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Every game kind's starts ([N_k, L_k] each) stacked: (tokens int32 [E, S], left-aligned, S the
  longest; lengths [E]; the kind of each [E])."""
  starts = [np.atleast_2d(np.asarray(s, np.int32)) for s in starts]
  tokens = np.zeros((sum(s.shape[0] for s in starts), max(s.shape[1] for s in starts)), np.int32)
  lengths, kinds, row = [], [], 0
  for kind, part in enumerate(starts):
    tokens[row:row + part.shape[0], :part.shape[1]] = part
    lengths += [part.shape[1]] * part.shape[0]
    kinds += [kind] * part.shape[0]
    row += part.shape[0]
  return tokens, np.asarray(lengths, np.int32), np.asarray(kinds, np.int32)


def prefix_kv_fn(model: ModelConfig, starts: tuple[jax.Array, ...]):
  """`params -> (k, v)`, each [layers, E, S, kv_heads, head_dim]: the keys and values of every
  game kind's shared prompt starts (prompts.PromptTable.starts, [N_k, L_k] each; a 1-D prefix is
  one start), E of them in kind order, S the longest.

  The train step computes them once per update and differentiates through them once
  (`train_step.make_train_step(shared_fn=...)`); `response_log_probs_fn(starts=...)` reads
  them instead of running every row's start again (as `transformer.SharedKV`). Each kind's starts
  run at their own length (the slots after it are zeros, which that reader marks empty).
  """
  kinds = [np.atleast_2d(np.asarray(s, np.int32)) for s in starts]
  slots = max(k.shape[1] for k in kinds)

  def kind_kv(params, tokens):
    count, length = tokens.shape
    cache = transformer.init_cache(model, count, slots)
    if length:
      _, cache = transformer.apply(model, params, jnp.asarray(tokens),
                                   jnp.broadcast_to(jnp.arange(length), tokens.shape), cache,
                                   return_hidden=True)
    return cache.k, cache.v

  def prefix_kv(params):
    k, v = zip(*(kind_kv(params, tokens) for tokens in kinds))
    return jnp.concatenate(k, axis=1), jnp.concatenate(v, axis=1)

  return prefix_kv


def response_log_probs_fn(model: ModelConfig, prompt_len: int, temperature: float = 1.0,
                          prompt_widths: tuple[int, ...] = (),
                          starts: tuple[jax.Array, ...] = ()):
  """train_step log_probs_fn for free text: log-probs and entropies of the response tokens only.

  Rows hold tokens [b, P + R] (prompt first, left-padded). Logits are computed only where a
  response token is predicted (columns P - 1 .. P + R - 2 of the [b, P + R - 1] output; zeros
  elsewhere), which spares the full-vocabulary projection of every prompt position.
  `prompt_widths[kind]` (each <= P) is the widest prompt of each game kind (rows.kind): the
  forward pass then skips the padding columns left of the widest prompt among the rows.
  With `starts[kind]` (each kind's shared prompt starts, [N_k, L_k], `prefix_kv_fn`), the function
  takes a third argument, the starts' (k, v), and runs only each row's tokens after the start it
  begins with; the log-probs are those of the whole row.
  """
  if starts and len(starts) != len(prompt_widths):
    raise ValueError("starts needs one prompt width per game kind.")
  shared = np.asarray([np.atleast_2d(s).shape[1] for s in starts]
                      or [0] * max(len(prompt_widths), 1), np.int32)
  own_widths = [w - int(shared[k]) for k, w in enumerate(prompt_widths)]
  widths = sorted({min(w, prompt_len) for w in own_widths} | (set() if starts else {prompt_len}))
  rank_of_kind = jnp.asarray([widths.index(min(w, prompt_len)) for w in own_widths] or [0],
                             jnp.int32)
  entry_tokens, entry_lengths, entry_kinds = _start_entries(starts) if starts else (None,) * 3
  if starts:  # int32 [E, S]: the slots each start fills, -1 after it.
    columns = np.arange(entry_tokens.shape[1])[None, :]
    entry_positions = np.where(columns < entry_lengths[:, None], columns, -1).astype(np.int32)

  def at_width(width, params, tokens, positions, kind, entry, prefix_kv):
    start = prompt_len - width
    tokens, positions = tokens[:, start:], positions[:, start:]
    start_kv = None
    if prefix_kv is not None:  # The start's keys and values come from prefix_kv, the rest runs.
      positions = jnp.where(positions >= jnp.asarray(shared)[kind][:, None], positions, -1)
      start_kv = transformer.SharedKV(k=prefix_kv[0], v=prefix_kv[1],
                                      positions=jnp.asarray(entry_positions), start=entry)
    hidden, _ = transformer.apply(model, params, tokens, positions, return_hidden=True,
                                  shared=start_kv)
    logits = transformer.unembed(model, params, hidden[:, width - 1:-1])
    log_probs, entropy = losses.log_probs_and_entropy(logits, tokens[:, width:], temperature)
    pad = lambda x: jnp.pad(x, ((0, 0), (prompt_len - 1, 0)))
    return pad(log_probs), pad(entropy)

  def log_probs_fn(params, rows, prefix_kv=None):
    if starts and prefix_kv is None:
      raise ValueError("this log_probs_fn reads the starts' keys and values: pass prefix_kv.")
    entry = None
    if starts:
      entry = continued_start(rows.tokens, jnp.argmax(rows.positions >= 0, axis=1), entry_tokens,
                              entry_lengths, jnp.asarray(entry_kinds)[None] == rows.kind[:, None])
    args = (params, rows.tokens, rows.positions, rows.kind, entry, prefix_kv)
    branches = [functools.partial(at_width, w) for w in widths]
    if len(branches) == 1:
      return branches[0](*args)
    return jax.lax.switch(rank_of_kind[rows.kind].max(), branches, *args)

  return log_probs_fn
