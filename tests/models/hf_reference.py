"""Tiny random transformers models (PyTorch, CPU, float32) saved as HF checkpoints for the tests."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import transformers

# Small enough to be fast, large enough that GQA, the sliding window and RoPE all matter.
_COMMON = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               attn_implementation="eager")

ARCHS = {
    "qwen3": lambda: transformers.Qwen3Config(
        **_COMMON, tie_word_embeddings=False, rope_parameters={"rope_type": "default",
                                                               "rope_theta": 1e4}),
    "llama": lambda: transformers.LlamaConfig(
        **_COMMON, tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64}),
    "gemma3": lambda: transformers.Gemma3TextConfig(
        **_COMMON, sliding_window=3, layer_types=["sliding_attention", "full_attention"],
        query_pre_attn_scalar=24, final_logit_softcapping=15.0,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}),
}


def make_model(arch: str, seed: int = 0):
  """A random float32 causal LM; every weight (norms included) is perturbed away from its init."""
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(ARCHS[arch]()).float().eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.add_(torch.randn_like(p) * (0.2 if "norm" in name else 0.05))
  return model


def save(model, directory, **kwargs) -> str:
  model.save_pretrained(directory, safe_serialization=True, **kwargs)
  return str(directory)


def logits(model, tokens_BT: np.ndarray, mask_BT: np.ndarray) -> np.ndarray:
  """Reference logits for a left-padded batch (positions count real tokens from 0)."""
  positions = np.maximum(np.cumsum(mask_BT, axis=1) - 1, 0)
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens_BT, dtype=torch.long),
                attention_mask=torch.tensor(mask_BT, dtype=torch.long),
                position_ids=torch.tensor(positions, dtype=torch.long))
  return out.logits.float().numpy()


def left_padded_batch(lengths, width, vocab, seed=0):
  """(tokens [B, width], mask [B, width]) with random tokens right-aligned, pad id 0."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((len(lengths), width), np.int32)
  mask = np.zeros((len(lengths), width), np.int32)
  for row, n in enumerate(lengths):
    tokens[row, width - n:] = rng.integers(1, vocab, n)
    mask[row, width - n:] = 1
  return tokens, mask


def positions(mask_BT: np.ndarray) -> np.ndarray:
  """Our positions: real tokens count from 0, padding is -1."""
  return np.where(mask_BT > 0, np.cumsum(mask_BT, axis=1) - 1, -1).astype(np.int32)
