"""Architecture configs of the decoder: one frozen dataclass, presets for the supported models."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Projections that take LoRA adapters: attention's q, k, v, o and the MLP's gate, up, down.
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling: 'linear' (divide by factor) or 'llama3' (Llama 3.1 band scaling)."""

  kind: str
  factor: float
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static description of a decoder; hashable, so it can be a static jit argument."""

  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  norm_eps: float = 1e-6
  activation: str = "silu"  # 'silu' (Qwen3, Llama) or 'gelu_tanh' (Gemma 3).
  qk_norm: bool = False  # RMSNorm over head_dim on queries and keys (Qwen3, Gemma 3).
  sandwich_norm: bool = False  # Extra norms after attention and after the MLP (Gemma 3).
  norm_plus_one: bool = False  # RMSNorm scales by (1 + w), weights start at 0 (Gemma).
  scale_embeddings: bool = False  # Multiply embeddings by sqrt(d_model) (Gemma).
  tie_embeddings: bool = True
  rope_base: float = 10_000.0
  rope_scaling: RopeScaling | None = None  # Applies to global layers only.
  local_rope_base: float = 10_000.0  # RoPE base of sliding-window layers.
  sliding_window: int = 0  # Window of local layers (a query sees keys at distance < window).
  local_layers: tuple[bool, ...] = ()  # Per layer: True = sliding-window layer; () = none.
  query_scale: float | None = None  # Scores scaled by query_scale**-0.5; None = head_dim.
  attn_softcap: float | None = None
  final_softcap: float | None = None
  param_dtype: str = "float32"
  dtype: str = "float32"  # Compute dtype; norms, softmax and logits stay in float32.
  remat: bool = False  # Rematerialise each layer in the backward pass.
  # LoRA: each target projection W computes x W + (lora_alpha / lora_rank) x A B, with A [in, r]
  # and B [r, out] (params `<target>_lora_a`, `<target>_lora_b`); 0 = no adapters.
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = ()

  def __post_init__(self):
    if self.local_layers and len(self.local_layers) != self.num_layers:
      raise ValueError(f"local_layers has {len(self.local_layers)} entries, "
                       f"expected num_layers={self.num_layers}")
    if any(self.local_layers) and self.sliding_window <= 0:
      raise ValueError("local_layers needs sliding_window > 0")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {sorted(DTYPES)}")
    if self.lora_rank < 0:
      raise ValueError(f"lora_rank={self.lora_rank} must be >= 0 (0 = no adapters)")
    unknown = [t for t in self.lora_targets if t not in LORA_TARGETS]
    if unknown:
      raise ValueError(f"lora_targets {unknown} unknown; valid: {', '.join(LORA_TARGETS)}")
    if self.lora_rank and not self.lora_targets:
      raise ValueError("lora_rank > 0 needs lora_targets (e.g. ('q', 'v'))")

  @property
  def lora_scale(self) -> float:
    return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

  @property
  def is_local(self) -> tuple[bool, ...]:
    return self.local_layers or (False,) * self.num_layers

  @property
  def jnp_dtype(self):
    return DTYPES[self.dtype]

  @property
  def jnp_param_dtype(self):
    return DTYPES[self.param_dtype]


def every_nth_global(num_layers: int, n: int) -> tuple[bool, ...]:
  """Gemma 3's interleaving: layers i with (i + 1) % n != 0 are local."""
  return tuple((i + 1) % n != 0 for i in range(num_layers))


def qwen3_0_6b(**overrides) -> ModelConfig:
  return ModelConfig(**{**dict(
      vocab_size=151_936, d_model=1024, num_layers=28, num_heads=16, num_kv_heads=8,
      head_dim=128, mlp_dim=3072, qk_norm=True, rope_base=1e6), **overrides})


def qwen3_4b(**overrides) -> ModelConfig:
  return ModelConfig(**{**dict(
      vocab_size=151_936, d_model=2560, num_layers=36, num_heads=32, num_kv_heads=8,
      head_dim=128, mlp_dim=9728, qk_norm=True, rope_base=1e6), **overrides})


def gemma3_270m(**overrides) -> ModelConfig:
  return ModelConfig(**{**dict(
      vocab_size=262_144, d_model=640, num_layers=18, num_heads=4, num_kv_heads=1,
      head_dim=256, mlp_dim=2048, activation="gelu_tanh", qk_norm=True, sandwich_norm=True,
      norm_plus_one=True, scale_embeddings=True, rope_base=1e6, local_rope_base=1e4,
      sliding_window=512, local_layers=every_nth_global(18, 6), query_scale=256.0),
      **overrides})


def smollm2_135m(**overrides) -> ModelConfig:
  return ModelConfig(**{**dict(
      vocab_size=49_152, d_model=576, num_layers=30, num_heads=9, num_kv_heads=3,
      head_dim=64, mlp_dim=1536, norm_eps=1e-5, rope_base=1e5), **overrides})


def tiny(**overrides) -> ModelConfig:
  """A Qwen3-style model small enough for unit tests."""
  return ModelConfig(**{**dict(
      vocab_size=256, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
      mlp_dim=128, qk_norm=True, rope_base=1e4), **overrides})


PRESETS = {"qwen3_0_6b": qwen3_0_6b, "qwen3_4b": qwen3_4b, "gemma3_270m": gemma3_270m,
           "smollm2_135m": smollm2_135m, "tiny": tiny}


def get(name: str, **overrides) -> ModelConfig:
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}")
  return PRESETS[name](**overrides)
