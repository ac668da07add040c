"""A small byte-level BPE tokenizer fit to the games' text, for models trained from scratch.

Built like Qwen's (regex split, byte-level, ChatML special tokens), trained deterministically on
the games' phrases, actions and the prompt template, so the same games give the same tokenizer.
"""

from __future__ import annotations

import tokenizers
import transformers

from games import api
from jaxplay.text import answers, prompts

# The pre-tokenizer split of Qwen2/Qwen3's byte-level BPE.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
              r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def train_bpe(corpus: list[str], vocab_size: int) -> transformers.PreTrainedTokenizerFast:
  """A byte-level BPE with ChatML special tokens trained on `corpus`."""
  model = tokenizers.Tokenizer(tokenizers.models.BPE())
  model.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.Split(tokenizers.Regex(QWEN_SPLIT), "isolated"),
      tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  model.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(CHATML_SPECIAL),
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  model.train_from_iterator(corpus, trainer)
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=model, eos_token="<|im_end|>", pad_token="<|endoftext|>",
      name_or_path="games-bpe")


def games_corpus(game_list: tuple[api.Game, ...]) -> list[str]:
  corpus = [prompts.PROMPT_PREFIX, prompts.PROMPT_SUFFIX, answers.BOX_OPEN + answers.BOX_CLOSE]
  corpus += sorted({prompts.header(game) for game in game_list} - {prompts.PROMPT_PREFIX})
  for game in game_list:
    corpus += list(game.phrases) + list(game.actions)
    corpus += [answers.BOX_OPEN + action + answers.BOX_CLOSE for action in game.actions]
  return corpus


def games_bpe_tokenizer(game_list: tuple[api.Game, ...], vocab_size: int = 512
                        ) -> transformers.PreTrainedTokenizerFast:
  """The tokenizer of `configs/kuhn_nash.py`-style from-scratch models."""
  return train_bpe(games_corpus(game_list), vocab_size)
