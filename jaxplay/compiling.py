"""`jit`: `jax.jit` with the compiler options every jaxplay program shares.

XLA's `xla_allow_excess_precision` (on by default) lets it skip roundings to bfloat16 between
the ops it fuses, so what a bfloat16 program computes depends on how XLA fused it: with the
layers of a 4-layer random Gemma 3 unrolled, the decode step's logits moved 0.2 away from the
whole-sequence pass's, and the sampler's log-probs (the train step's old policy) 0.013 from the
train step's own. Off, those programs agreed exactly however the layers were compiled; on a
2-core CPU bfloat16 programs also ran faster (a TicTacToe collection 14-18%, a 32-row decode step
152 -> 131 ms; BENCHMARKS.md, episode); float32 ones are unaffected. Every program that samples
or trains is compiled with it, so the sampler's and the train step's numerics are the same
function's. Its cost on GPUs and TPUs is unmeasured.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

COMPILER_OPTIONS = {"xla_allow_excess_precision": False}


def jit(fn: Callable, **options: Any) -> Callable:
  """`jax.jit(fn, **options)` compiled with COMPILER_OPTIONS."""
  return jax.jit(fn, compiler_options=COMPILER_OPTIONS, **options)
