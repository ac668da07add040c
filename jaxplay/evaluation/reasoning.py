"""Reasoning transfer: boxed-answer accuracy on math sets with the compiled sampler.

A question becomes SPIRAL's math prompt inside the model's chat format, tokenised once and
left-padded to one static width; generation runs in fixed-size batches (the last one padded), so
`sampling.generate` compiles once per (model, batch size, prompt width, response length).
Each question gets `samples_per_question` consecutive rows. With temperature > 0 the draws depend
on the key and the batch size; greedy decoding (temperature 0) depends on neither.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from jaxplay.evaluation import math_data, math_grader
from jaxplay.models import sampling
from jaxplay.models.configs import ModelConfig
from jaxplay.text import tokenizer as tokenizers

DEFAULT_MAX_RESPONSE_LEN = 1024
DEFAULT_BATCH_SIZE = 8


@dataclasses.dataclass(frozen=True)
class Parts:
  """What generation needs (an `experiment.Experiment` has the same fields)."""

  model: ModelConfig
  tokenizer: Any
  chat: tokenizers.ChatFormat
  pad_id: int


def make_parts(model: ModelConfig, tokenizer, chat_format: str = "auto") -> Parts:
  """Parts for a model and tokenizer, with the pad id chosen as `experiment.build` does."""
  chat = tokenizers.chat_format(tokenizer, chat_format)
  pad = tokenizers.special_tokens(tokenizer).pad
  return Parts(model, tokenizer, chat, pad if pad is not None else chat.stop_ids[0])


def encode_prompts(tokenizer, chat: tokenizers.ChatFormat,
                   examples: Sequence[math_data.MathExample],
                   max_prompt_len: int | None = None, pad_id: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(int32 [N, P] left-padded prompt tokens, int32 [N] lengths); P = max_prompt_len or longest.

  Raises ValueError naming the first question whose prompt is longer than max_prompt_len.
  """
  encoded = [tokenizers.encode(tokenizer, chat.wrap(math_data.prompt(e.question)))
             for e in examples]
  longest = max((len(ids) for ids in encoded), default=1)
  width = longest if max_prompt_len is None else max_prompt_len
  for example, ids in zip(examples, encoded):
    if len(ids) > width:
      raise ValueError(f"Question {example.id!r} needs {len(ids)} prompt tokens, more than "
                       f"max_prompt_len={width}; raise max_prompt_len (longest: {longest}).")
  tokens = np.full((len(encoded), width), pad_id, np.int32)
  for row, ids in enumerate(encoded):
    tokens[row, width - len(ids):] = ids
  return tokens, np.asarray([len(ids) for ids in encoded], np.int32)


def sample_responses(parts: Parts, params, prompts_NP: np.ndarray, lengths_N: np.ndarray,
                     key: jax.Array, *, temperature: float, top_p: float, max_response_len: int,
                     batch_size: int) -> tuple[list[str], np.ndarray]:
  """(decoded responses, int [N] generated token counts) for every prompt row, in order."""
  rows = prompts_NP.shape[0]
  stops = np.asarray(parts.chat.stop_ids, np.int32)
  texts, counts = [], []
  for index, batch in enumerate(sampling.batch_indices(rows, batch_size)):
    out = sampling.generate(parts.model, params, prompts_NP[batch], lengths_N[batch],
                            jax.random.fold_in(key, index), temperature, top_p, 0, stops,
                            max_response_len=max_response_len, pad_id=parts.pad_id)
    tokens, generated = jax.device_get((out.tokens, out.lengths))
    for row in range(min(batch_size, rows - index * batch_size)):
      counts.append(int(generated[row]))
      texts.append(tokenizers.decode(parts.tokenizer, tokens[row, :generated[row]]))
  return texts, np.asarray(counts, np.int32)


def evaluate_math(exp, params, name: str, limit: int | None = None, *,
                  samples_per_question: int = 1, temperature: float = 0.6, top_p: float = 0.95,
                  max_prompt_len: int | None = None,
                  max_response_len: int = DEFAULT_MAX_RESPONSE_LEN,
                  batch_size: int = DEFAULT_BATCH_SIZE, key: jax.Array | None = None,
                  data_dir: str | None = None) -> tuple[dict[str, float], list[dict]]:
  """(summary, per-sample records) of a math set (`math_data` name) for an Experiment or Parts.

  summary: math_grader.summarise (samples, correct, accuracy with its 95% Wilson interval, mean
  response length) plus questions and truncated_rate (responses that hit max_response_len).
  records: id, sample, answer, response, correct, length; question-major order.
  """
  if samples_per_question < 1 or batch_size < 1:
    raise ValueError(f"samples_per_question ({samples_per_question}) and batch_size "
                     f"({batch_size}) must be positive.")
  examples = math_data.load(name, limit, data_dir)
  if not examples:
    raise ValueError(f"Math set {name!r} has no questions.")
  prompts, lengths = encode_prompts(exp.tokenizer, exp.chat, examples, max_prompt_len, exp.pad_id)
  prompts = np.repeat(prompts, samples_per_question, axis=0)
  lengths = np.repeat(lengths, samples_per_question, axis=0)
  key = jax.random.key(0) if key is None else key
  texts, counts = sample_responses(exp, params, prompts, lengths, key, temperature=temperature,
                                   top_p=top_p, max_response_len=max_response_len,
                                   batch_size=batch_size)
  records = []
  for row, (response, count) in enumerate(zip(texts, counts)):
    example = examples[row // samples_per_question]
    records.append({"id": example.id, "sample": row % samples_per_question,
                    "answer": example.answer, "response": response,
                    "correct": math_grader.grade(response, example.answer),
                    "length": int(count)})
  summary = math_grader.summarise([r["correct"] for r in records], [r["length"] for r in records])
  summary["questions"] = len(examples)
  summary["truncated_rate"] = float(np.mean(counts >= max_response_len))
  return summary, records
