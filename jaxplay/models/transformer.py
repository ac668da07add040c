"""One decoder-only transformer (Qwen3, Gemma 3, Llama) in Flax Linen, with a static-shape KV cache.

Layers run under `nn.scan`, so every layer parameter is stacked on a leading `layers` axis.
Positions are per row; a negative position marks padding (never attended to). Attention masks come
from positions only: causal (key position <= query position), padding, and the sliding window of
local layers (query position - key position < window).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxplay.models.configs import ModelConfig

_NEG = float(jnp.finfo(jnp.float32).min)


@struct.dataclass
class KVCache:
  """Keys and values of every layer; the slots of one call are written at `index`."""

  k: jax.Array  # [L, B, S, K, D]
  v: jax.Array  # [L, B, S, K, D]
  positions: jax.Array  # int32 [B, S], position held by each slot, -1 if empty or padding.
  index: jax.Array  # int32 [], next slot to write (shared by all rows).


@struct.dataclass
class SharedKV:
  """Keys and values of N prompt starts that many rows continue, held once rather than in every
  row's cache: row b attends to start `start[b]`'s slots before its own. A decode step (one
  token a row) attends to them in one matmul for all rows (every row's query against the N
  starts' keys, the starts of others masked) instead of a matrix-vector product a row over its
  own copy; a call of several tokens a row reads a per-row copy (its queries make a matmul)."""

  k: jax.Array  # [L, N, P, K, D]
  v: jax.Array  # [L, N, P, K, D]
  positions: jax.Array  # int32 [N, P], position held by each slot, -1 if empty.
  start: jax.Array  # int32 [B]: the start each row continues.


def init_cache(config: ModelConfig, batch: int, max_len: int, as_bits: bool = False) -> KVCache:
  """An empty cache in the compute dtype. `as_bits` holds a bfloat16 cache as its uint16 bits:
  XLA's CPU backend widens a bfloat16 write's whole operand to float32 and back (every layer's
  cache rewritten at every write, half a decode step at 700 slots), a uint16 write it does in
  place. Not differentiable: for sampling, not for caches a gradient flows through."""
  shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
  dtype = jnp.uint16 if as_bits and config.jnp_dtype == jnp.bfloat16 else config.jnp_dtype
  return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                 positions=jnp.full((batch, max_len), -1, jnp.int32),
                 index=jnp.zeros((), jnp.int32))


def inverse_frequencies(config: ModelConfig) -> np.ndarray:
  """RoPE inverse frequencies, float32 [2, head_dim // 2]: row 0 global layers, row 1 local."""
  exponents = np.arange(0, config.head_dim, 2, dtype=np.float32) / config.head_dim
  global_inv = 1.0 / (config.rope_base ** exponents)
  local_inv = 1.0 / (config.local_rope_base ** exponents)
  scaling = config.rope_scaling
  if scaling is not None and scaling.kind == "linear":
    global_inv = global_inv / scaling.factor
  elif scaling is not None and scaling.kind == "llama3":
    wavelen = 2 * math.pi / global_inv
    low_wavelen = scaling.original_max_position / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position / scaling.high_freq_factor
    smooth = ((scaling.original_max_position / wavelen - scaling.low_freq_factor)
              / (scaling.high_freq_factor - scaling.low_freq_factor))
    smoothed = (1 - smooth) * global_inv / scaling.factor + smooth * global_inv
    global_inv = np.where(wavelen > low_wavelen, global_inv / scaling.factor,
                          np.where(wavelen < high_wavelen, global_inv, smoothed))
  elif scaling is not None:
    raise ValueError(f"unknown rope scaling {scaling.kind!r}")
  return np.stack([global_inv, local_inv]).astype(np.float32)


def apply_rope(x_BTHD: jax.Array, positions_BT: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotates the two halves of head_dim (the HF 'rotate_half' convention)."""
  angles = positions_BT.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
  cos = jnp.cos(angles)[:, :, None, :].astype(x_BTHD.dtype)
  sin = jnp.sin(angles)[:, :, None, :].astype(x_BTHD.dtype)
  x1, x2 = jnp.split(x_BTHD, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _soft_cap(x, cap: float | None):
  """cap * tanh(x / cap), or x where cap is None."""
  return x if cap is None else jnp.tanh(x / cap) * cap


def _stored_param(module, name, init, shape, axes, dtype):
  """The param as stored: a uint16 one (`as_bits`) holds a bfloat16's bits (`_as_float`)."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def _as_float(x):
  """x, or the bfloat16 whose bits a uint16 x holds."""
  return jax.lax.bitcast_convert_type(x, jnp.bfloat16) if x.dtype == jnp.uint16 else x


def _param(module, name, init, shape, axes, dtype):
  return _as_float(_stored_param(module, name, init, shape, axes, dtype))


def projections_in_compute_dtype(config: ModelConfig, params):
  """`params` with each layer projection and LoRA factor cast to the compute dtype: `_project`
  casts them so before every dot, so this is the same model, whose weights a sampler then reads
  at the compute dtype's width (float32 params computing in bfloat16 read half the bytes a decode
  step). Norm scales, embeddings and int8 weights stay as they are (read in float32 or rounded in
  the param dtype)."""
  def cast(path, x):
    name = str(getattr(path[-1], "key", path[-1]))
    in_layers = str(getattr(path[0], "key", path[0])) == "layers"
    floating = jnp.issubdtype(x.dtype, jnp.floating)
    if in_layers and floating and (name in PROJECTIONS or name.endswith(LORA_SUFFIXES)):
      return x.astype(config.jnp_dtype)
    return x
  return jax.tree_util.tree_map_with_path(cast, params)


def as_bits(params):
  """`params` with each bfloat16 array held as its uint16 bits, which `apply` reads back as
  bfloat16: the same model, for sampling (not differentiable). XLA's CPU backend widens a
  bfloat16 array to float32 to slice it (the stacked layers' weights at each layer, embedding
  rows), so each decode step would read float32 weights; uint16 slices it reads as they are."""
  bits = lambda x: (jax.lax.bitcast_convert_type(x, jnp.uint16) if x.dtype == jnp.bfloat16
                    else x)
  return jax.tree.map(bits, params)


LORA_SUFFIXES = ("_lora_a", "_lora_b")
# Each layer projection: (its module, the number of its weight's input dims after `layers`).
# Attention's output projection reads heads x head_dim.
PROJECTIONS = {"q": ("attn", 1), "k": ("attn", 1), "v": ("attn", 1), "o": ("attn", 2),
               "gate": ("mlp", 1), "up": ("mlp", 1), "down": ("mlp", 1)}


def lora_a_init(key, shape, dtype=jnp.float32):
  """A [in dims..., r] ~ N(0, 1/in): the adapter starts at zero through B, not through A."""
  fan_in = math.prod(shape[:-1])
  return jax.random.normal(key, shape, dtype) * fan_in ** -0.5


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def einsum_with_plain_grads(spec: str, x, w, out_dtype=None):
  """`dot(spec, x, w, out_dtype)` for a projection spec '<x>,<w>-><y>', differentiated by the two
  dots written out in x's dtype (dx = dot('<y>,<w>-><x>'), dw = dot('<x>,<y>-><w>'), the output's
  cotangent cast to x's dtype first). Same values as autodiff's, but XLA's CPU backend lays these
  dots out without the transposed copies of the activation gradients that autodiff's dot_generals
  cost it (BENCHMARKS.md, train step), and a float32 output of bfloat16 inputs (the logits) is
  still differentiated by bfloat16 dots."""
  return dot(spec, x, w, out_dtype)


def dot(spec: str, x, w, out_dtype=None):
  """jnp.einsum(spec, x, w) summed in float32 and returned in `out_dtype` (default x's dtype): the
  same values as a bfloat16 einsum's, but XLA's CPU backend runs bfloat16 inputs with a float32
  output through its fast bfloat16 kernels (~2x float32 where the CPU has them), a bfloat16
  output not."""
  return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32).astype(out_dtype or x.dtype)


def _einsum_fwd(spec, x, w, out_dtype):
  return dot(spec, x, w, out_dtype), (x, w)


def _einsum_bwd(spec, out_dtype, residuals, dy):
  x, w = residuals
  x_spec, w_spec, y_spec = spec.replace("->", ",").split(",")
  dy = dy.astype(x.dtype)
  return (dot(f"{y_spec},{w_spec}->{x_spec}", dy, w),
          _weight_grad(x_spec, w_spec, y_spec, x, dy).astype(w.dtype))


def _weight_grad(x_spec: str, w_spec: str, y_spec: str, x, dy):
  """The weight's gradient, x and dy summed over their shared (token) axes. XLA's CPU backend
  copies one of the two transposed for the dot, and x, the input the forward pass saved, is
  sliced out of the layers' stacked residuals, which makes its transposed copy slow
  (BENCHMARKS.md, train step). So where dy is the narrower (fewer features a token than x: the
  down, o, k and v projections and every LoRA A), the dot computes the gradient as [out, in]
  from dy transposed and the result is transposed to the weight's layout."""
  w_out = "".join(c for c in w_spec if c in y_spec)
  w_in = "".join(c for c in w_spec if c not in y_spec)
  if math.prod(dy.shape[y_spec.index(c)] for c in w_out) >= math.prod(
      x.shape[x_spec.index(c)] for c in w_in):
    return dot(f"{x_spec},{y_spec}->{w_spec}", x, dy)
  return jnp.einsum(f"{w_out}{w_in}->{w_spec}", dot(f"{y_spec},{x_spec}->{w_out}{w_in}", dy, x))


einsum_with_plain_grads.defvjp(_einsum_fwd, _einsum_bwd)


def _project(module, name: str, x, w, spec: str, in_axes: tuple[str, ...],
             out_axes: tuple[str, ...]):
  """x @ w by the einsum `spec` ('<x>,<w>-><out>'), plus the LoRA path when `name` is a target:
  scale * (x A) B with A [in dims..., r] and B [r, out dims...] (never merged into w). Every
  float dot here is differentiated by `einsum_with_plain_grads` (A and B's too: a LoRA train step
  of Gemma 3 270M ran 16% faster than with autodiff's gradients; BENCHMARKS.md, train step)."""
  cfg = module.config
  dt = cfg.jnp_dtype
  n_in = len(in_axes)
  if w.dtype == jnp.int8:  # Stored by `int8_weights`, with its scale per output channel.
    scale = _param(module, f"{name}_scale", nn.initializers.ones, w.shape[n_in:], out_axes,
                   jnp.float32)
    y = _int8_project(spec, x, w, scale, n_in).astype(dt)
  else:
    y = einsum_with_plain_grads(spec, x, w.astype(dt))
  if cfg.lora_rank == 0 or name not in cfg.lora_targets:
    return y
  x_spec, w_spec, y_spec = spec.replace("->", ",").split(",")
  in_letters, out_letters = w_spec[:n_in], w_spec[n_in:]
  r = cfg.lora_rank
  a = _param(module, f"{name}_lora_a", lora_a_init, (*w.shape[:n_in], r), (*in_axes, None),
             cfg.jnp_param_dtype)
  b = _param(module, f"{name}_lora_b", nn.initializers.zeros, (r, *w.shape[n_in:]),
             (None, *out_axes), cfg.jnp_param_dtype)
  low = einsum_with_plain_grads(f"{x_spec},{in_letters}r->{x_spec[:-n_in]}r", x, a.astype(dt))
  delta = einsum_with_plain_grads(f"{x_spec[:-n_in]}r,r{out_letters}->{y_spec}", low,
                                  b.astype(dt))
  return y + (cfg.lora_scale * delta).astype(y.dtype)


class RMSNorm(nn.Module):
  config: ModelConfig
  axis: str = "embed"

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    init = nn.initializers.zeros if cfg.norm_plus_one else nn.initializers.ones
    w = _param(self, "scale", init, (x.shape[-1],), (self.axis,), cfg.jnp_param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
    scale = w.astype(jnp.float32) + (1.0 if cfg.norm_plus_one else 0.0)
    return (y * scale).astype(x.dtype)


def _write_cache(cache_LBSKD, new_BTKD, layer, index):
  """The cache with `new` at [layer, :, index:index + T] (a uint16 cache holds `new`'s bits)."""
  if cache_LBSKD.dtype == jnp.uint16:
    new = jax.lax.bitcast_convert_type(new_BTKD.astype(jnp.bfloat16), jnp.uint16)
  else:
    new = new_BTKD.astype(cache_LBSKD.dtype)
  return jax.lax.dynamic_update_slice(cache_LBSKD, new[None], (layer, 0, index, 0, 0))


def _read_cache(cache_LBSKD, layer, dtype):
  """Layer `layer` of the cache [B, S, K, D] in `dtype`."""
  return _as_float(cache_LBSKD[layer]).astype(dtype)


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BTD, positions_BT, key_positions_BS, kv, layer, is_local, index,
               shared=None):
    """Returns (output [B, T, D], updated kv); kv is None or (k, v) of all layers [L, B, S, K, D];
    shared is None or (this layer's SharedKV k and v [N, P, K, D], its positions, its start)."""
    cfg = self.config
    dt, pdt = cfg.jnp_dtype, cfg.jnp_param_dtype
    init = nn.initializers.normal(0.02)
    H, K, D, E = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model
    wq = _param(self, "q", init, (E, H, D), ("embed", "heads", "head_dim"), pdt)
    wk = _param(self, "k", init, (E, K, D), ("embed", "kv_heads", "head_dim"), pdt)
    wv = _param(self, "v", init, (E, K, D), ("embed", "kv_heads", "head_dim"), pdt)
    wo = _param(self, "o", init, (H, D, E), ("heads", "head_dim", "embed"), pdt)
    q = _project(self, "q", x_BTD, wq, "bte,ehd->bthd", ("embed",), ("heads", "head_dim"))
    k = _project(self, "k", x_BTD, wk, "bte,ekd->btkd", ("embed",), ("kv_heads", "head_dim"))
    v = _project(self, "v", x_BTD, wv, "bte,ekd->btkd", ("embed",), ("kv_heads", "head_dim"))
    if cfg.qk_norm:
      q = RMSNorm(cfg, "head_dim", name="q_norm")(q)
      k = RMSNorm(cfg, "head_dim", name="k_norm")(k)
    global_inv, local_inv = inverse_frequencies(cfg)
    inv_freq = jnp.where(is_local, local_inv, global_inv)
    q = apply_rope(q, positions_BT, inv_freq)
    k = apply_rope(k, positions_BT, inv_freq)

    if kv is not None:  # Write this call's keys/values, then attend over the whole cache.
      k_all = _write_cache(kv[0], k, layer, index)
      v_all = _write_cache(kv[1], v, layer, index)
      kv = (k_all, v_all)
      k, v = _read_cache(k_all, layer, dt), _read_cache(v_all, layer, dt)

    B, T = x_BTD.shape[:2]
    if shared is not None and T > 1:  # Many queries a row: attend to a per-row copy of its start.
      shared_k, shared_v, shared_positions_NP, start_B = shared
      k = jnp.concatenate([_as_float(shared_k[start_B]).astype(dt), k], axis=1)
      v = jnp.concatenate([_as_float(shared_v[start_B]).astype(dt), v], axis=1)
      key_positions_BS = jnp.concatenate([shared_positions_NP[start_B], key_positions_BS], axis=1)
      shared = None
    q = q.reshape(B, T, K, H // K, D)  # Query head h reads kv head h // (H // K).
    scale = (cfg.query_scale or D) ** -0.5

    def masked_scores(spec, q, k, visible):
      scores = jnp.einsum(spec, q, k, preferred_element_type=jnp.float32) * scale
      return jnp.where(visible, _soft_cap(scores, cfg.attn_softcap), _NEG)

    def visible(q_pos, k_pos):  # Broadcast over each other's axes.
      seen = (k_pos >= 0) & (k_pos <= q_pos)
      if cfg.sliding_window:
        seen &= ~is_local | (q_pos - k_pos < cfg.sliding_window)
      return seen

    own_visible = visible(positions_BT[:, :, None], key_positions_BS[:, None, :])  # [B, T, S]

    def attend(q, k, v, visible_BTS):  # Each query's softmax over its visible keys.
      scores = masked_scores("btkgd,bskd->bktgs", q, k, visible_BTS[:, None, :, None])
      probs = jax.nn.softmax(scores, axis=-1).astype(dt)
      # v first: XLA's CPU backend then reads the probabilities without transposing them.
      return dot("bskd,bktgs->btkgd", v, probs)

    if shared is None and kv is not None and T > 1 and jax.default_backend() == "cpu":
      # A prompt's prefill on a CPU, row by row: a row's scores stay in the CPU's caches (the
      # same values; BENCHMARKS.md, episode: Simple Negotiation's collection 1.29x).
      row = lambda x: x[:, None]
      out = jax.lax.map(lambda xs: attend(*xs)[0], (row(q), row(k), row(v), row(own_visible)))
    elif shared is None and T > 1:
      out = attend(q, k, v, own_visible)
    else:  # One query a row (a decode step).
      # Scores as [B, K, G, T, S]: XLA's CPU backend then reads the keys as they are (as
      # `attend`'s [B, K, T, G, S] it copied each layer's keys transposed every step).
      scores = masked_scores("btkgd,bskd->bkgts", q, k, own_visible[:, None, None])
      if shared is None:
        out = dot("bskd,bkgts->btkgd", v, jax.nn.softmax(scores, axis=-1).astype(dt))
      else:  # One softmax over [the N starts' slots (others' masked), its own].
        shared_k, shared_v, shared_positions_NP, start_B = shared
        N, P = shared_positions_NP.shape
        own_start = jnp.arange(N)[None, :] == start_B[:, None]  # [B, N]
        shared_visible = (visible(positions_BT[:, :, None, None], shared_positions_NP[None, None])
                          & own_start[:, None, :, None])  # [B, T, N, P]
        shared_scores = masked_scores("btkgd,npkd->bkgtnp", q, _as_float(shared_k).astype(dt),
                                      shared_visible[:, None, None])
        probs = jax.nn.softmax(jnp.concatenate(
            [shared_scores.reshape(*scores.shape[:-1], N * P), scores], axis=-1), axis=-1)
        probs = probs.astype(dt)
        # Values first, as in `attend`: no transposed copy of them or of the probabilities.
        out = (jnp.einsum("mkd,bkgtm->btkgd", _as_float(shared_v).astype(dt).reshape(N * P, K, D),
                          probs[..., :N * P], preferred_element_type=jnp.float32)
               + jnp.einsum("bskd,bkgts->btkgd", v, probs[..., N * P:],
                            preferred_element_type=jnp.float32)).astype(dt)
    out = out.reshape(B, T, H, D)
    return _project(self, "o", out, wo, "bthd,hde->bte", ("heads", "head_dim"), ("embed",)), kv


@functools.partial(jax.checkpoint, static_argnums=(2,))
def _gated(gate, up, activation: str):
  """activation(gate) * up [B, T, F] in gate's dtype, computed in float32: XLA's CPU backend runs
  bfloat16 elementwise math op by op, rounding each, ~3x slower (BENCHMARKS.md, episode). A
  gradient holds only gate and up and recomputes the float32 steps (held, they took the local
  preset's train step from 3.80 to 6.12 GiB of temporaries)."""
  gate32, up32 = gate.astype(jnp.float32), up.astype(jnp.float32)
  act = jax.nn.silu(gate32) if activation == "silu" else jax.nn.gelu(gate32, approximate=True)
  return (act * up32).astype(gate.dtype)


class Mlp(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BTD):
    cfg = self.config
    pdt = cfg.jnp_param_dtype
    init = nn.initializers.normal(0.02)
    E, F = cfg.d_model, cfg.mlp_dim
    w_gate = _param(self, "gate", init, (E, F), ("embed", "mlp"), pdt)
    w_up = _param(self, "up", init, (E, F), ("embed", "mlp"), pdt)
    w_down = _param(self, "down", init, (F, E), ("mlp", "embed"), pdt)
    gate = _project(self, "gate", x_BTD, w_gate, "bte,ef->btf", ("embed",), ("mlp",))
    up = _project(self, "up", x_BTD, w_up, "bte,ef->btf", ("embed",), ("mlp",))
    return _project(self, "down", _gated(gate, up, cfg.activation), w_down, "btf,fe->bte",
                    ("mlp",), ("embed",))


class _Bits(NamedTuple):
  """A bfloat16 array held as its uint16 bits."""

  bits: jax.Array


def _residuals_as_bits(vjp_fn):
  """A vjp function's pytree with each bfloat16 residual held as `_Bits`."""
  return jax.tree.map(lambda x: (_Bits(jax.lax.bitcast_convert_type(x, jnp.uint16))
                                 if x.dtype == jnp.bfloat16 else x), vjp_fn)


def _residuals_from_bits(held):
  return jax.tree.map(lambda x: (jax.lax.bitcast_convert_type(x.bits, jnp.bfloat16)
                                 if isinstance(x, _Bits) else x),
                      held, is_leaf=lambda x: isinstance(x, _Bits))


def _layer(block, *args):
  return block.layer(*args)


def _layer_fwd(block, *args):
  outputs, vjp_fn = nn.vjp(_layer, block, *args)
  return outputs, _residuals_as_bits(vjp_fn)


def _layer_bwd(held, doutputs):
  return _residuals_from_bits(held)(doutputs)


class Block(nn.Module):
  """One pre-norm layer (with Gemma's post-norms when configured); scanned over layers.

  In bfloat16 its backward pass reads the residuals the forward pass saved for it as uint16
  bits: `nn.scan` stacks each layer's residuals, and XLA's CPU backend widens a bfloat16 stack to
  float32 over its whole length to write or slice one layer's (a ~5 ms copy per residual, layer
  and micro-batch in Gemma 3 270M's train step); uint16 ones it writes in place. Same values.
  """

  config: ModelConfig

  def __call__(self, carry, layer_inputs, positions_BT, key_positions_BS, index, shared_rows):
    args = (carry, layer_inputs, positions_BT, key_positions_BS, index, shared_rows)
    if self.config.jnp_dtype != jnp.bfloat16 or self.config.remat:
      return self.layer(*args)
    return nn.custom_vjp(_layer, _layer_fwd, _layer_bwd)(self, *args)

  @nn.compact
  def layer(self, carry, layer_inputs, positions_BT, key_positions_BS, index, shared_rows):
    """shared_rows: None, or SharedKV's (positions, start); layer_inputs then holds this layer's
    shared k and v after its index and is_local."""
    cfg = self.config
    x, kv = carry
    layer, is_local, *shared_kv = layer_inputs
    shared = None if shared_rows is None else (*shared_kv, *shared_rows)
    h, kv = Attention(cfg, name="attn")(RMSNorm(cfg, name="attn_norm")(x), positions_BT,
                                        key_positions_BS, kv, layer, is_local, index, shared)
    if cfg.sandwich_norm:
      h = RMSNorm(cfg, name="post_attn_norm")(h)
    x = x + h
    h = Mlp(cfg, name="mlp")(RMSNorm(cfg, name="mlp_norm")(x))
    if cfg.sandwich_norm:
      h = RMSNorm(cfg, name="post_mlp_norm")(h)
    return (x + h, kv), None


class Decoder(nn.Module):
  config: ModelConfig

  def setup(self):
    cfg = self.config
    pdt = cfg.jnp_param_dtype
    # As stored: rows are gathered from uint16 bits before they are read as bfloat16 (XLA's CPU
    # backend widens a bfloat16 table to float32 to gather from it).
    self.stored_embedding = _stored_param(self, "embedding", nn.initializers.normal(1.0),
                                          (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), pdt)
    block = nn.remat(Block, prevent_cse=False) if cfg.remat else Block
    self.layers = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                          length=cfg.num_layers,
                          metadata_params={nn.PARTITION_NAME: "layers"})(cfg)
    self.final_norm = RMSNorm(cfg)
    if not cfg.tie_embeddings:
      self.lm_head = _param(self, "lm_head", nn.initializers.normal(0.02),
                            (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), pdt)

  def __call__(self, tokens_BT, positions_BT, cache=None, return_hidden=False, shared=None):
    cfg = self.config
    x = _as_float(jnp.take(self.stored_embedding, tokens_BT, axis=0))
    if cfg.scale_embeddings:  # The scale is rounded to the parameter dtype, as in Gemma.
      x = x * jnp.asarray(math.sqrt(cfg.d_model), x.dtype)
    x = x.astype(cfg.jnp_dtype)
    positions_BT = jnp.where(positions_BT < 0, -1, positions_BT).astype(jnp.int32)
    if cache is None:
      kv, key_positions, index = None, positions_BT, jnp.zeros((), jnp.int32)
    else:
      kv, index = (cache.k, cache.v), cache.index
      key_positions = jax.lax.dynamic_update_slice(cache.positions, positions_BT, (0, index))
    layer_inputs = (jnp.arange(cfg.num_layers), jnp.asarray(cfg.is_local))
    shared_rows = None
    if shared is not None:
      layer_inputs += (shared.k, shared.v)
      shared_rows = (shared.positions, jnp.asarray(shared.start, jnp.int32))
    (x, kv), _ = self.layers((x, kv), layer_inputs, positions_BT, key_positions, index,
                             shared_rows)
    h = self.final_norm(x)
    if cache is not None:
      cache = KVCache(k=kv[0], v=kv[1], positions=key_positions,
                      index=index + tokens_BT.shape[1])
    return (h if return_hidden else self.unembed(h)), cache

  def unembed(self, h_BTD):
    """Final hidden states -> float32 logits [B, T, V] (with final soft-capping if configured)."""
    cfg = self.config
    if cfg.tie_embeddings:
      embedding = _as_float(self.stored_embedding).astype(cfg.jnp_dtype)
      logits = einsum_with_plain_grads("btd,vd->btv", h_BTD, embedding, jnp.float32)
    else:
      logits = einsum_with_plain_grads("btd,dv->btv", h_BTD, self.lm_head.astype(cfg.jnp_dtype),
                                       jnp.float32)
    return _soft_cap(logits, cfg.final_softcap)


def apply(config: ModelConfig, params, tokens_BT, positions_BT, cache=None,
          return_hidden=False, shared: SharedKV | None = None):
  """(params, tokens [B, T], positions [B, T], cache | None) -> (logits [B, T, V] f32, cache).

  With a cache, the T new tokens are written at slots [cache.index, cache.index + T) and attend to
  every earlier slot of their row; without one, the tokens attend among themselves. With
  `shared`, they attend to their start's slots too (before their own; the start's positions come
  first). `return_hidden=True` returns the final-normed hidden states [B, T, D] instead of logits.
  """
  return Decoder(config).apply({"params": params}, tokens_BT, positions_BT, cache,
                               return_hidden, shared)


def unembed(config: ModelConfig, params, h_BTD):
  return Decoder(config).apply({"params": params}, h_BTD, method=Decoder.unembed)


def logits_vocab_major(config: ModelConfig, params, h_BD) -> jax.Array:
  """float32 logits [V, B] of final hidden states [B, D], `unembed`'s values transposed (the
  sampler's layout). With the table's rows first XLA's CPU backend runs the dot about twice as
  fast for 2-32 rows, and a one-row dot would widen the whole table to float32, so a single row
  is computed beside a zero row. `params` should hold the table in its float dtype: `as_bits`'
  uint16 is read back through a copy of the table (BENCHMARKS.md, sampler)."""
  rows = h_BD.shape[0]
  h_BD = jnp.pad(h_BD, ((0, 1), (0, 0))) if rows == 1 else h_BD
  if config.tie_embeddings:
    weights, spec = _as_float(params["embedding"]), "vd,bd->vb"
  else:
    weights, spec = _as_float(params["lm_head"]), "dv,bd->vb"
  logits = dot(spec, weights.astype(config.jnp_dtype), h_BD.astype(config.jnp_dtype), jnp.float32)
  return _soft_cap(logits[:, :rows], config.final_softcap)


# Projections of at most this many rows (a decode step's batch) take `_int8_project`'s int8 x int8
# dot; more rows (prefills, large batches) dequantise the weight inside a float dot. On a 2-core
# CPU, Gemma 3 270M's layer projections: the int8 dot 3.4x / 2.3x faster than float32 at 1 / 8
# rows, the dequantising dot faster at 16 and 32 rows (BENCHMARKS.md, sampler).
INT8_DOT_MAX_ROWS = 8


def _int8(x, axes):
  """(int8 values, float32 scales keeping `axes` as size 1): x over its largest |value| / 127
  along `axes`, rounded."""
  x = x.astype(jnp.float32)
  scales = jnp.max(jnp.abs(x), axis=axes, keepdims=True) / 127
  return jnp.round(x / jnp.where(scales > 0, scales, 1.0)).astype(jnp.int8), scales


def _int8_dot(x_ND, w_int8, w_in_axis: int = 0):
  """float32 [N, O]: x @ w with w int8 [D, O] (w_in_axis 0) or [O, D] (1). Each row of x is
  written as two int8 rows (its quantised values, then the quantised remainder) and both go
  through one int8 x int8 dot with int32 sums: the remainder makes the activations' rounding
  negligible, and two rows sidestep XLA's one-row int8 dot (~10x slower than its two-row one on
  this CPU)."""
  N = x_ND.shape[0]
  high, high_scales = _int8(x_ND, -1)
  low, low_scales = _int8(x_ND - high.astype(jnp.float32) * high_scales, -1)
  parts = jnp.concatenate([high, low])  # [2N, D]
  sums = jax.lax.dot_general(parts, w_int8, (((1,), (w_in_axis,)), ((), ())),
                             preferred_element_type=jnp.int32).astype(jnp.float32)  # [2N, O]
  return sums[:N] * high_scales + sums[N:] * low_scales


def _int8_project(spec: str, x, w_int8, scale, n_in: int):
  """x @ (w_int8 * scale) by the einsum `spec`, w's first n_in dims contracted, float32. Above
  INT8_DOT_MAX_ROWS rows the weight is dequantised to x's dtype (int8 is exact in bfloat16)."""
  rows = math.prod(x.shape[:-n_in])
  if rows > INT8_DOT_MAX_ROWS:
    return jnp.einsum(spec, x, w_int8.astype(x.dtype), preferred_element_type=jnp.float32) * scale
  d_in = math.prod(w_int8.shape[:n_in])
  y = _int8_dot(x.reshape(rows, d_in), w_int8.reshape(d_in, -1)) * scale.reshape(-1)
  return y.reshape(*x.shape[:-n_in], *w_int8.shape[n_in:])


def int8_weights(params):
  """`params` with every layer projection (q, k, v, o, gate, up, down) stored as int8 with one
  float32 scale per output channel (`<name>_scale` [L, out dims...]: the channel's largest
  |weight| / 127); embeddings, norms and LoRA factors stay as they are. `apply` takes the result
  (the projections see the int8 dtype): at most INT8_DOT_MAX_ROWS rows through `_int8_dot`, more
  through a float dot of the dequantised weight."""
  layers = {name: dict(module) for name, module in params["layers"].items()}
  for target, (module_name, n_in) in PROJECTIONS.items():
    module = layers[module_name]
    w = module[target]
    values, scales = _int8(w, tuple(range(1, 1 + n_in)))  # Over input dims, per layer.
    module[target] = values
    module[f"{target}_scale"] = scales.reshape(w.shape[:1] + w.shape[1 + n_in:])
  return {**params, "layers": layers}


def int8_unembedding(config: ModelConfig, params) -> tuple[jax.Array, jax.Array]:
  """The unembedding for `int8_logits`: (int8 [V, D], float32 [V]), one scale per token's row."""
  weights_VD = params["embedding"] if config.tie_embeddings else params["lm_head"].T
  values, scales = _int8(weights_VD, -1)
  return values, scales[:, 0]


def int8_logits(config: ModelConfig, table, h_BD) -> jax.Array:
  """float32 [V, B] logits (`logits_vocab_major`'s layout) from `int8_unembedding`'s table through
  `_int8_dot`, soft-capped as `unembed`'s. What differs from `unembed` is the table's rounding
  (for Gemma 3 270M within 3% of the largest |logit|). On a 2-core CPU the dot is 1.2x the
  bfloat16 `logits_vocab_major`'s speed at 1 and 8 rows, 0.7x at 32 (BENCHMARKS.md, sampler)."""
  values_VD, scales_V = table
  logits = _int8_dot(h_BD, values_VD, w_in_axis=1) * scales_V
  return _soft_cap(logits.T, config.final_softcap)


def _init_boxed(config: ModelConfig, key):
  tokens = jnp.zeros((1, 1), jnp.int32)
  return Decoder(config).init(key, tokens, tokens)["params"]


def init_params(config: ModelConfig, key: jax.Array):
  """Random parameters (plain arrays; see `param_axes` for their logical axis names)."""
  return nn.unbox(_init_boxed(config, key))


@functools.lru_cache(maxsize=16)
def _abstract(config: ModelConfig):
  return jax.eval_shape(functools.partial(_init_boxed, config), jax.random.key(0))


def param_shapes(config: ModelConfig):
  """Tree of jax.ShapeDtypeStruct, the layout `apply` expects."""
  return nn.unbox(_abstract(config))


def param_axes(config: ModelConfig):
  """Tree of PartitionSpec of logical axis names (embed, heads, kv_heads, ..., layers)."""
  return nn.get_partition_spec(_abstract(config))


def is_adapter(path) -> bool:
  """Whether the params leaf at tree `path` is a LoRA factor (`<target>_lora_a` or `_lora_b`)."""
  return str(getattr(path[-1], "key", path[-1])).endswith(LORA_SUFFIXES)


def with_adapters(config: ModelConfig, params, key: jax.Array):
  """`params` (a checkpoint's, without adapters) plus fresh LoRA factors for `config`'s targets:
  A ~ N(0, 1/in) per layer, B = 0, so the model starts exactly at `params`."""
  keys = iter(jax.random.split(key, 2 * len(config.lora_targets) + 1))

  def fill(path, shape):
    names = [p.key for p in path]
    if not is_adapter(path):
      return functools.reduce(lambda tree, name: tree[name], names, params)
    if names[-1].endswith("_lora_b"):
      return jnp.zeros(shape.shape, shape.dtype)
    layer_keys = jax.random.split(next(keys), shape.shape[0])  # Stacked over `layers`.
    return jax.vmap(lambda k: lora_a_init(k, shape.shape[1:], shape.dtype))(layer_keys)

  return jax.tree_util.tree_map_with_path(fill, param_shapes(config))


def merge_adapters(config: ModelConfig, params) -> tuple[ModelConfig, dict]:
  """(config without LoRA, params with each target W replaced by W + scale * A B and no
  adapter leaves): the same function as a plain model, e.g. for export."""
  layers = {name: dict(module) for name, module in params["layers"].items()}
  for target in config.lora_targets:
    module = layers[PROJECTIONS[target][0]]
    w, a, b = (module[target], module.pop(f"{target}_lora_a"), module.pop(f"{target}_lora_b"))
    rank = a.shape[-1]
    delta = jnp.einsum("lir,lro->lio", a.reshape(a.shape[0], -1, rank).astype(jnp.float32),
                       b.reshape(b.shape[0], rank, -1).astype(jnp.float32))
    module[target] = (w.astype(jnp.float32) + config.lora_scale * delta.reshape(w.shape)
                      ).astype(w.dtype)
  merged = dataclasses.replace(config, lora_rank=0, lora_alpha=ModelConfig.lora_alpha,
                               lora_targets=())
  return merged, {**params, "layers": layers}
