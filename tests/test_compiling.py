"""compiling.jit: its options reach XLA (a bfloat16 model's logits are not the default build's)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxplay import compiling
from jaxplay.models import configs, transformer


def test_the_options_reach_xla():
  """A 4-layer random Gemma 3 in bfloat16: compiled by `compiling.jit`, its logits keep the
  roundings XLA's default build skips (measured 0.23 apart), and a float32 model's agree."""
  config = dataclasses.replace(configs.gemma3_270m(dtype="bfloat16", param_dtype="bfloat16"),
                               num_layers=4, vocab_size=512,
                               local_layers=(True, False, True, False))
  tokens = jnp.asarray([[5, 7, 9, 8], [3, 4, 11, 2]], jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(4, dtype=jnp.int32), (2, 4))

  def gap(config):
    params = transformer.init_params(config, jax.random.key(0))
    logits = [jit(transformer.apply, static_argnums=0)(config, params, tokens, positions)[0]
              for jit in (jax.jit, compiling.jit)]
    return float(np.abs(np.asarray(logits[0]) - np.asarray(logits[1])).max())

  assert gap(config) > 1e-2
  assert gap(dataclasses.replace(config, dtype="float32", param_dtype="float32")) < 1e-4
