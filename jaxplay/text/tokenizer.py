"""Tokenizers: loading (HF directory or GGUF file), special tokens, chat formats, byte tables.

Everything here runs once at set-up, in plain Python; `jaxplay.text` turns the results into the
static tables that the compiled program uses.

Conventions (the reference for the jitted code and its tests):
- `decode(tokenizer, ids)` is the reference decoding of a response: special tokens (bos, eos, pad,
  turn markers, any added token flagged special) are skipped and no clean-up of spaces is done.
- `byte_table(tokenizer)` gives each token id the UTF-8 bytes it contributes to that decoding;
  special tokens contribute no bytes, and so do ids past the tokenizer's vocabulary (a model's
  embedding table is often padded beyond it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import sys
import tempfile

import numpy as np
import transformers
from tokenizers import __version__ as tokenizers_version
from transformers.convert_slow_tokenizer import bytes_to_unicode

Tokenizer = transformers.PreTrainedTokenizerBase

CHAT_FORMATS = ("auto", "chatml", "gemma", "completion")
_SENTINEL = "\x00JAXPLAY_MESSAGE\x00"  # Stands for the user message when splitting a template.
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def load_tokenizer(path: str, cache: str = "") -> Tokenizer:
  """Loads the tokenizer of an HF model directory, or of a GGUF file (path ending in .gguf).

  transformers builds a GGUF file's tokenizer from its metadata (~16 s for Gemma 3's 262,144
  tokens). With `cache` (a folder; '' = off) the result is also saved there in transformers' own
  tokenizer files (`gguf_tokenizer_dir` names its folder), which later loads read (~3 s). A cache
  that cannot be written, or a saved tokenizer that cannot be read (then converted and saved
  again), is reported on stderr.
  """
  path = os.path.expanduser(path)
  options = dict(trust_remote_code=False, local_files_only=True)
  if path.endswith(".gguf"):
    saved = gguf_tokenizer_dir(path, cache) if cache else None
    tokenizer = _read_saved_tokenizer(saved, options) if saved else None
    if tokenizer is None:
      directory, name = os.path.split(os.path.abspath(path))
      tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name, **options)
      if saved:
        _save_tokenizer(tokenizer, saved)
    tokenizer.name_or_path = path  # Name the GGUF file, not its folder, in messages.
  else:
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, **options)
  if not tokenizer.is_fast:
    raise ValueError(f"Model {path!r}: jaxplay needs a fast (tokenizers) tokenizer, got "
                     f"{type(tokenizer).__name__}.")
  return tokenizer


def gguf_tokenizer_dir(path: str, cache: str) -> str:
  """The folder in `cache` for the tokenizer of the GGUF file `path`: named by the file and a hash
  of its real path, size and modification time and the transformers and tokenizers versions, so
  a changed file or library is converted again."""
  real = os.path.realpath(os.path.expanduser(path))
  stat = os.stat(real)
  key = "|".join(map(str, (real, stat.st_size, stat.st_mtime_ns, transformers.__version__,
                           tokenizers_version)))
  name = os.path.basename(real).removesuffix(".gguf")
  return os.path.join(os.path.expanduser(cache),
                      f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")


def _read_saved_tokenizer(folder: str, options: dict) -> Tokenizer | None:
  """The tokenizer saved in `folder`, or None when there is none or it does not load (the folder
  is then removed, for the caller to save it again)."""
  if not os.path.isdir(folder):
    return None
  try:
    return transformers.AutoTokenizer.from_pretrained(folder, **options)
  except (OSError, ValueError) as error:
    print(f"tokenizer cache {folder}: unreadable, converting again ({error})".splitlines()[0],
          file=sys.stderr, flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    return None


def _save_tokenizer(tokenizer: Tokenizer, folder: str) -> None:
  """Saves into a fresh folder beside `folder`, then renames it: a reader sees all or nothing."""
  parent = os.path.dirname(folder)
  try:
    os.makedirs(parent, exist_ok=True)
    partial = tempfile.mkdtemp(dir=parent, prefix=".partial-")
    try:
      tokenizer.save_pretrained(partial)
      os.rename(partial, folder)
    finally:
      shutil.rmtree(partial, ignore_errors=True)  # Gone after the rename; left after a failure.
  except OSError as error:
    if not os.path.isdir(folder):  # Another process may have saved it first.
      print(f"tokenizer cache {parent}: not written ({error})", file=sys.stderr, flush=True)


def model_name(tokenizer: Tokenizer) -> str:
  return os.path.basename(str(tokenizer.name_or_path).rstrip("/")) or "<unnamed tokenizer>"


def token_id(tokenizer: Tokenizer, token: str | None) -> int | None:
  """Id of a token given as text, or None when the vocabulary has no such single token."""
  if not token:
    return None
  index = tokenizer.convert_tokens_to_ids(token)  # The unknown token's id when absent.
  return index if index is not None and tokenizer.convert_ids_to_tokens(index) == token else None


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """Ids of the tokens the sampler and the prompts need (None where the tokenizer has none)."""

  bos: int | None
  eos: int | None
  pad: int | None
  end_of_turn: int | None  # '<end_of_turn>' (Gemma) or '<|im_end|>' (ChatML), where present.
  adds_bos: bool  # The tokenizer puts bos in front of an encoded text.


def special_tokens(tokenizer: Tokenizer) -> SpecialTokens:
  end_of_turn = token_id(tokenizer, "<end_of_turn>")
  if end_of_turn is None:
    end_of_turn = token_id(tokenizer, "<|im_end|>")
  bos = tokenizer.bos_token_id
  with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
  without = tokenizer("a", add_special_tokens=False)["input_ids"]
  adds_bos = bos is not None and len(with_special) > len(without) and with_special[0] == bos
  return SpecialTokens(bos=bos, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id,
                       end_of_turn=end_of_turn, adds_bos=adds_bos)


@dataclasses.dataclass(frozen=True)
class ChatFormat:
  """How one user message is wrapped: prompt text = prefix + message + suffix."""

  name: str
  prefix: str  # Includes the bos token's text where the model expects bos.
  suffix: str  # Ends where the model's answer starts.
  stop_ids: tuple[int, ...]  # Tokens that end the model's answer.

  def wrap(self, message: str) -> str:
    return self.prefix + message + self.suffix



def pad_id(tokenizer: Tokenizer, chat: ChatFormat) -> int:
  """The id that pads prompts and responses: the tokenizer's pad token, else the chat format's
  first stop token (padding is never attended to or trained; any real id would do)."""
  if tokenizer.pad_token_id is not None:
    return tokenizer.pad_token_id
  return chat.stop_ids[0] if chat.stop_ids else 0

# Named formats: (required special tokens, prefix, suffix).
_NAMED = {
    "chatml": (("<|im_start|>", "<|im_end|>"), "<|im_start|>user\n",
               "<|im_end|>\n<|im_start|>assistant\n"),
    "gemma": (("<start_of_turn>", "<end_of_turn>"), "<start_of_turn>user\n",
              "<end_of_turn>\n<start_of_turn>model\n"),
    "completion": ((), "", ""),
}


def chat_format(tokenizer: Tokenizer, name: str = "auto") -> ChatFormat:
  """The chat format `name`; 'auto' is the model's own chat template, else plain completion.

  Raises ValueError naming the model and the missing piece when the tokenizer cannot express it.
  """
  model = model_name(tokenizer)
  if name not in CHAT_FORMATS:
    raise ValueError(f"Model {model!r}: unknown chat format {name!r}; "
                     f"valid formats: {', '.join(CHAT_FORMATS)}.")
  special = special_tokens(tokenizer)
  if name == "auto":
    if tokenizer.chat_template:
      return _template_format(tokenizer, special)
    name = "completion"
  required, prefix, suffix = _NAMED[name]
  missing = [token for token in required if token_id(tokenizer, token) is None]
  if missing:
    raise ValueError(f"Model {model!r}: chat format {name!r} needs the special token(s) "
                     f"{', '.join(missing)}, which its tokenizer does not have.")
  if special.adds_bos:
    prefix = tokenizer.bos_token + prefix
  stops = [token_id(tokenizer, token) for token in required[1:]] + [special.eos]
  return ChatFormat(name, prefix, suffix, _stop_ids(model, name, stops))


def _template_format(tokenizer: Tokenizer, special: SpecialTokens) -> ChatFormat:
  """Splits the model's chat template, rendered around a sentinel message, into prefix/suffix."""
  model = model_name(tokenizer)
  text = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}],
                                       add_generation_prompt=True, tokenize=False)
  if text.count(_SENTINEL) != 1:
    raise ValueError(f"Model {model!r}: its chat template does not render the user message "
                     "verbatim; choose a chat format by name instead of 'auto'.")
  prefix, suffix = text.split(_SENTINEL)
  return ChatFormat("auto", prefix, suffix, _stop_ids(model, "auto", [special.end_of_turn,
                                                                      special.eos]))


def _stop_ids(model: str, name: str, ids) -> tuple[int, ...]:
  stops = tuple(dict.fromkeys(i for i in ids if i is not None))
  if not stops:
    raise ValueError(f"Model {model!r}: chat format {name!r} needs an end-of-turn or eos token "
                     "to stop the answer, and its tokenizer has neither.")
  return stops


def decode(tokenizer: Tokenizer, ids, skip_special_tokens: bool = True) -> str:
  """Reference text of token ids: special tokens skipped (responses) or kept as their text
  (prompts), no space clean-up."""
  return tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens,
                          clean_up_tokenization_spaces=False)


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
  """Tokens of `text` alone (special tokens written in it are recognised, none are added).

  Raises ValueError when they do not decode back to exactly `text`.
  """
  ids = tokenizer(text, add_special_tokens=False)["input_ids"]
  if decode(tokenizer, ids, skip_special_tokens=False) != text:
    raise ValueError(f"Model {model_name(tokenizer)!r}: the text {text!r} does not decode back "
                     "to itself when tokenised alone.")
  return ids


def special_ids(tokenizer: Tokenizer) -> set[int]:
  """Ids that `decode` skips: the named special tokens and every added token flagged special."""
  ids = set(tokenizer.all_special_ids)
  ids.update(i for i, token in tokenizer.added_tokens_decoder.items() if token.special)
  return ids


def token_bytes(tokenizer: Tokenizer) -> list[bytes]:
  """The UTF-8 bytes each id in the tokenizer's vocabulary contributes to `decode`.

  Byte-level BPE (GPT-2, Qwen, SmolLM2) pieces go through the inverse of the byte-to-unicode map
  (a piece with a character outside that map is taken as its own UTF-8, as `tokenizers` does);
  SentencePiece-style pieces (Gemma, Llama 2) map '<0xNN>' to that byte and '▁' to a space.
  Added tokens that are not special are their own text; special tokens are empty.
  """
  byte_level = "ByteLevel" in repr(tokenizer.backend_tokenizer.decoder)
  unicode_to_byte = {c: b for b, c in bytes_to_unicode().items()}
  skipped = special_ids(tokenizer)
  added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
  pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
  table = []
  for i, piece in enumerate(pieces):
    if i in skipped or piece is None:
      table.append(b"")
    elif i in added:
      table.append(_added_bytes(added[i], byte_level))
    elif byte_level:
      if all(c in unicode_to_byte for c in piece):
        table.append(bytes(unicode_to_byte[c] for c in piece))
      else:
        table.append(piece.encode())
    else:
      fallback = _BYTE_FALLBACK.fullmatch(piece)
      table.append(bytes([int(fallback[1], 16)]) if fallback else
                   piece.replace("\u2581", " ").encode())
  return table


def _added_bytes(content: str, byte_level: bool) -> bytes:
  return content.encode() if byte_level else content.replace("\u2581", " ").encode()


def byte_table(tokenizer: Tokenizer, vocab_size: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """Token bytes as a padded table: (uint8 [vocab, max_token_bytes], int32 [vocab] lengths).

  `vocab_size` (default: the tokenizer's) may exceed the tokenizer's vocabulary; the extra rows
  are empty.
  """
  pieces = token_bytes(tokenizer)
  vocab_size = vocab_size or len(pieces)
  if vocab_size < len(pieces):
    raise ValueError(f"Model {model_name(tokenizer)!r}: vocab_size {vocab_size} is smaller than "
                     f"its tokenizer's vocabulary ({len(pieces)}).")
  width = max(1, max(len(p) for p in pieces))
  table = np.zeros((vocab_size, width), np.uint8)
  lengths = np.zeros((vocab_size,), np.int32)
  for i, piece in enumerate(pieces):
    table[i, :len(piece)] = np.frombuffer(piece, np.uint8)
    lengths[i] = len(piece)
  return table, lengths
