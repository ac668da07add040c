"""Tokenizer loading, special tokens, chat formats and byte tables against transformers and GGUF."""

import os

import numpy as np
import pytest
import transformers

from jaxplay.text import tokenizer as tokenizers
from tests import fixtures_text

TOKENIZERS = {"gemma": fixtures_text.gemma_tokenizer, "bpe": fixtures_text.bpe_tokenizer,
              "smollm2": lambda: tokenizers.load_tokenizer(fixtures_text.smollm2_gguf_path())}


def test_gemma_gguf_special_tokens():
  tokenizer = fixtures_text.gemma_tokenizer()
  special = tokenizers.special_tokens(tokenizer)
  names = tokenizer.convert_ids_to_tokens([special.bos, special.eos, special.pad,
                                           special.end_of_turn])
  assert names == ["<bos>", "<eos>", "<pad>", "<end_of_turn>"]
  assert special.adds_bos
  assert tokenizer("a")["input_ids"][0] == special.bos


@pytest.mark.slow
def test_gemma_special_tokens_match_gguf_metadata():
  import gguf  # pylint: disable=import-outside-toplevel
  reader = gguf.GGUFReader(fixtures_text.gemma_gguf_path())
  field = lambda key: reader.fields[f"tokenizer.ggml.{key}"].contents()
  special = tokenizers.special_tokens(fixtures_text.gemma_tokenizer())
  assert special.bos == field("bos_token_id")
  assert special.eos == field("eos_token_id")
  assert special.pad == field("padding_token_id")
  assert special.end_of_turn == field("tokens").index("<end_of_turn>")
  assert special.adds_bos == field("add_bos_token")


def test_load_hf_directory(tmp_path):
  original = fixtures_text.bpe_tokenizer()
  original.save_pretrained(tmp_path)
  loaded = tokenizers.load_tokenizer(str(tmp_path))
  sample = "Observation: <think> \\boxed{Offer: 3 Wood -> 2 Gold}<|im_end|> Ünï"
  assert loaded(sample)["input_ids"] == original(sample)["input_ids"]
  assert tokenizers.special_tokens(loaded) == tokenizers.special_tokens(original)


@pytest.mark.parametrize("model", ["smollm2", pytest.param("gemma", marks=pytest.mark.slow)])
def test_gguf_tokenizer_cache_reads_back_the_same_tokenizer(model, tmp_path, monkeypatch):
  """The first load converts the GGUF and saves the tokenizer in the cache; the second reads the
  saved files (not the GGUF), and both tokenize, decode and name tokens alike."""
  path = (fixtures_text.gemma_gguf_path if model == "gemma" else fixtures_text.smollm2_gguf_path)()
  sources = []
  from_pretrained = transformers.AutoTokenizer.from_pretrained
  monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                      lambda source, **kwargs: sources.append((source, kwargs.get("gguf_file")))
                      or from_pretrained(source, **kwargs))
  converted = tokenizers.load_tokenizer(path, str(tmp_path))
  folder = tokenizers.gguf_tokenizer_dir(path, str(tmp_path))
  assert os.listdir(tmp_path) == [os.path.basename(folder)]  # No partial folder left.
  cached = tokenizers.load_tokenizer(path, str(tmp_path))
  assert sources == [(os.path.dirname(path), os.path.basename(path)), (folder, None)]
  assert cached.name_or_path == converted.name_or_path == path
  assert type(cached) is type(converted) and cached.is_fast
  assert cached.get_vocab() == converted.get_vocab()
  assert tokenizers.special_tokens(cached) == tokenizers.special_tokens(converted)
  assert cached.chat_template == converted.chat_template
  for sample in ["Observation: <think> \\boxed{Offer: 3 Wood -> 2 Gold} Ünï  \n\n x",
                 "<start_of_turn>user\n[0] [1]<end_of_turn>", "<|im_start|>assistant\n\t{}"]:
    for special in (True, False):
      ids = converted(sample, add_special_tokens=special)["input_ids"]
      assert cached(sample, add_special_tokens=special)["input_ids"] == ids
      assert tokenizers.decode(cached, ids) == tokenizers.decode(converted, ids)
  for a, b in zip(tokenizers.byte_table(cached), tokenizers.byte_table(converted)):
    np.testing.assert_array_equal(a, b)


def test_gguf_tokenizer_cache_that_cannot_be_written_is_skipped(tmp_path, capsys):
  blocked = tmp_path / "a_file"
  blocked.write_text("not a folder")
  tokenizer = tokenizers.load_tokenizer(fixtures_text.smollm2_gguf_path(), str(blocked / "cache"))
  assert tokenizer("a")["input_ids"]
  assert capsys.readouterr().err.startswith(f"tokenizer cache {blocked / 'cache'}: not written (")
  assert blocked.read_text() == "not a folder"


def test_gguf_tokenizer_cache_that_cannot_be_read_is_converted_again(tmp_path, capsys):
  path = fixtures_text.smollm2_gguf_path()
  folder = tokenizers.gguf_tokenizer_dir(path, str(tmp_path))
  os.makedirs(folder)
  with open(os.path.join(folder, "tokenizer.json"), "w") as f:
    f.write("{not json")
  with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
    f.write("{}")
  tokenizer = tokenizers.load_tokenizer(path, str(tmp_path))
  assert capsys.readouterr().err.startswith(
      f"tokenizer cache {folder}: unreadable, converting again (")
  saved = tokenizers.load_tokenizer(path, str(tmp_path))  # Saved again, readable.
  assert capsys.readouterr().err == ""
  assert saved.get_vocab() == tokenizer.get_vocab()


def test_auto_format_is_the_models_chat_template():
  tokenizer = TOKENIZERS["smollm2"]()
  chat = tokenizers.chat_format(tokenizer, "auto")
  message = "Observation: board\n[0], [1]"
  expected = tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                           add_generation_prompt=True, tokenize=False)
  assert chat.wrap(message) == expected
  assert chat.stop_ids[0] == tokenizer.convert_tokens_to_ids("<|im_end|>")
  # The named ChatML format is the same turn without SmolLM2's default system message.
  assert expected.endswith(tokenizers.chat_format(tokenizer, "chatml").wrap(message))


def test_gemma_formats():
  tokenizer = fixtures_text.gemma_tokenizer()
  gemma = tokenizers.chat_format(tokenizer, "gemma")
  assert gemma.wrap("hi") == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
  assert gemma.stop_ids == (106, 1)  # <end_of_turn>, <eos>
  auto = tokenizers.chat_format(tokenizer, "auto")  # The base model's GGUF has no template.
  assert (auto.name, auto.wrap("hi"), auto.stop_ids) == ("completion", "<bos>hi", (1,))


@pytest.mark.parametrize("name, fmt, missing", [("gemma", "chatml", "<|im_start|>"),
                                                ("bpe", "gemma", "<start_of_turn>")])
def test_missing_special_tokens_fail_with_the_model_name(name, fmt, missing):
  tokenizer = TOKENIZERS[name]()
  with pytest.raises(ValueError, match=f"{tokenizers.model_name(tokenizer)}.*{missing}"):
    tokenizers.chat_format(tokenizer, fmt)
  with pytest.raises(ValueError, match="unknown chat format"):
    tokenizers.chat_format(tokenizer, "alpaca")


def test_format_without_stop_token_fails():
  tokenizer = fixtures_text.bpe_tokenizer()
  tokenizer = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer,
                                  name_or_path="no-eos")
  with pytest.raises(ValueError, match="'no-eos'.*neither"):
    tokenizers.chat_format(tokenizer, "completion")


def _random_unicode(rng, n):
  # Not '▁': Gemma's tokenizer itself decodes a written '▁' as a space.
  alphabet = list("abcXYZ 019\n\t{}[]\\'\"") + ["é", "ß", "中", "文", "😀", "\u00a0", "ＣＨ"]
  return "".join(rng.choice(alphabet, n))


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_byte_table_reproduces_decode(name):
  tokenizer = TOKENIZERS[name]()
  table, lengths = tokenizers.byte_table(tokenizer)
  rng = np.random.default_rng(0)
  as_bytes = lambda ids: b"".join(table[i, :lengths[i]].tobytes() for i in ids)
  byte_level = "ByteLevel" in repr(tokenizer.backend_tokenizer.decoder)
  compared = 0
  for _ in range(2000):  # Random ids over the whole vocabulary, special tokens included.
    ids = rng.integers(0, len(tokenizer), rng.integers(1, 40))
    raw = as_bytes(ids)
    try:
      text = raw.decode()
    except UnicodeDecodeError:
      if not byte_level:  # SentencePiece byte fallback replaces each byte of a broken run.
        continue
      text = raw.decode(errors="replace")  # Byte-level BPE: the same rules as Rust's lossy UTF-8.
    compared += 1
    assert text == tokenizers.decode(tokenizer, ids), ids
  assert compared > 1600
  for _ in range(300):  # Real tokenisations, including byte fallbacks of rare characters.
    text = _random_unicode(rng, 30)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert as_bytes(ids).decode() == tokenizers.decode(tokenizer, ids) == text
  special = sorted(tokenizers.special_ids(tokenizer))
  assert (lengths[special] == 0).all()
  assert tokenizers.decode(tokenizer, special) == ""


def test_byte_table_padded_vocab():
  tokenizer = fixtures_text.bpe_tokenizer()
  table, lengths = tokenizers.byte_table(tokenizer, vocab_size=len(tokenizer) + 64)
  assert table.shape[0] == len(tokenizer) + 64 and (lengths[len(tokenizer):] == 0).all()
  with pytest.raises(ValueError, match="smaller"):
    tokenizers.byte_table(tokenizer, vocab_size=10)
