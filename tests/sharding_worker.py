"""Runs the sharded train step and sampler on simulated devices; saves results with np.savez.

Started by tests/test_sharding.py and tests/test_multihost.py in a child process whose XLA_FLAGS
set the device count, so the test session itself keeps one device:

  python -m tests.sharding_worker meshes OUT.npz TASKS D,F,T [D,F,T ...]
  python -m tests.sharding_worker multihost OUT.npz MODEL PROCESS_ID PORT

TASKS: comma-separated `train:MODEL` (a MODELS key) and `sampler`. `meshes` also saves the
single-device results (mesh=None) as `ref|...`, the sharded ones as `D,F,T|...`.
"""

from __future__ import annotations

import functools
import os
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxplay import sharding as sh
from jaxplay.models import configs, sampling, transformer
from jaxplay.rl import train_step as ts
from tests.rl.test_train_step import config, make_batch

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Optimisation level 0 halves XLA's CPU compile time; numerics stay float32.
CHILD_XLA_FLAGS = "--xla_force_host_platform_device_count={} --xla_backend_optimization_level=0"
NUM_STEPS = 2
OPTIMIZER = ts.make_optimizer(learning_rate=1e-3)
PROMPT_LEN, RESPONSE_LEN = 4, 4
STOP_TOKENS = (162, 234)  # Ends some rows early.


def child_env(num_devices: int) -> dict[str, str]:
  """Environment of a worker process with `num_devices` simulated CPU devices."""
  path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
  return {**os.environ, "XLA_FLAGS": CHILD_XLA_FLAGS.format(num_devices), "PYTHONPATH": path,
          "JAX_PLATFORMS": "cpu"}


class LogicalLM(nn.Module):
  """A cheap causal LM (running mean + per-layer heads and MLP) with the decoder's logical axes."""

  vocab: int = 16
  embed: int = 16
  heads: int = 8
  head_dim: int = 4
  mlp: int = 32
  layers: int = 2

  def _param(self, name, shape, axes, scale=0.3):
    init = nn.with_logical_partitioning(nn.initializers.normal(scale), axes)
    return self.param(name, init, shape)

  @nn.compact
  def __call__(self, tokens_BT, positions_BT):
    del positions_BT
    L, E, H, D, F, V = self.layers, self.embed, self.heads, self.head_dim, self.mlp, self.vocab
    x = self._param("embedding", (V, E), ("vocab", "embed"), 1.0)[tokens_BT]
    x = jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1)[:, None]
    wq = self._param("q", (L, E, H, D), ("layers", "embed", "heads", "head_dim"))
    wk = self._param("k", (L, E, H, D), ("layers", "embed", "kv_heads", "head_dim"))
    wo = self._param("o", (L, H, D, E), ("layers", "heads", "head_dim", "embed"))
    w_up = self._param("up", (L, E, F), ("layers", "embed", "mlp"))
    w_down = self._param("down", (L, F, E), ("layers", "mlp", "embed"))
    for layer in range(L):
      h = (jnp.tanh(jnp.einsum("bte,ehd->bthd", x, wq[layer]))
           * jnp.einsum("bte,ehd->bthd", x, wk[layer]))
      x = x + jnp.einsum("bthd,hde->bte", h, wo[layer])
      x = x + jnp.tanh(x @ w_up[layer]) @ w_down[layer]
    return x @ self._param("lm_head", (E, V), ("embed", "vocab"))


def _init_logical_lm():
  tokens = jnp.zeros((1, 6), jnp.int32)
  return LogicalLM().init(jax.random.key(0), tokens, tokens)


def logical_lm_axes():
  return nn.get_partition_spec(jax.eval_shape(_init_logical_lm))


@functools.lru_cache
def logical_lm():
  """(forward_fn, params, logical axes) of LogicalLM."""
  forward = lambda p, t, pos: LogicalLM().apply(p, t, pos)
  return forward, nn.unbox(jax.jit(_init_logical_lm)()), logical_lm_axes()


def transformer_config(dtype: str = "float32"):
  """The decoder's tiny preset with head counts that split over 8 devices."""
  return configs.tiny(num_heads=8, num_kv_heads=8, tie_embeddings=False, dtype=dtype)


@functools.lru_cache
def transformer_lm(dtype: str = "float32"):
  """The decoder, its lm_head scaled up so that logits are neither flat nor one-hot."""
  cfg = transformer_config(dtype)
  params = transformer.init_params(cfg, jax.random.key(0))
  params["lm_head"] = params["lm_head"] * 20
  forward = lambda p, t, pos: transformer.apply(cfg, p, t, pos)[0]
  return forward, params, transformer.param_axes(cfg)


MODELS = {"logical_lm": logical_lm, "transformer": transformer_lm,
          "transformer_bfloat16": functools.partial(transformer_lm, "bfloat16")}


def spec_text(spec, ndim) -> str:
  """'fsdp,,tensor'-style text of a mesh PartitionSpec padded to ndim; several axes join by '+'."""
  entries = tuple(spec) + (None,) * (ndim - len(spec))
  return ",".join("+".join(e) if isinstance(e, tuple) else (e or "") for e in entries)


def flatten(prefix, tree) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {f"{prefix}/{jax.tree_util.keystr(p, simple=True, separator='/')}": np.asarray(x)
          for p, x in leaves}


def layouts(prefix, tree) -> dict[str, np.ndarray]:
  """Per leaf: its spec text, its shape and the shape of its first addressable shard."""
  out = {}
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    name = f"{prefix}/{jax.tree_util.keystr(path, simple=True, separator='/')}"
    out[f"spec:{name}"] = np.asarray(spec_text(x.sharding.spec, x.ndim))
    out[f"shape:{name}"] = np.asarray(x.shape, np.int64)
    out[f"shard:{name}"] = np.asarray(x.addressable_shards[0].data.shape, np.int64)
  return out


def _gather(tree):
  """Host copies of (possibly multi-process) global arrays."""
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


# (rtol, atol) by result kind. Float32 reduction order differs across layouts, and Adam (lr 1e-3,
# 8 updates) amplifies that where gradients are near zero: params within 5% of one step. With
# int8 weights a float32 difference can flip an activation's int8 rounding (the remainder part
# absorbs most of it): log-probs within ~5e-5 (the 8,1,1 mesh).
TOLERANCES = {"metrics": (1e-4, 1e-5), "params": (1e-4, 5e-5), "ref_params": (1e-4, 5e-5),
              "opt_state": (1e-3, 1e-6), "samples": (1e-5, 1e-5), "int8_samples": (2e-4, 2e-4)}


def assert_close(got, want, label="", scale=1.0):
  """Every result in `want` (as saved by run_train/run_sampler) matches `got`, within `scale`
  times TOLERANCES."""
  for key, value in want.items():
    rtol, atol = (scale * t for t in TOLERANCES[key.split("/")[0].rstrip("0123456789")])
    if value.dtype.kind == "f":
      np.testing.assert_allclose(got[key], value, rtol=rtol, atol=atol, err_msg=f"{label} {key}")
    else:
      np.testing.assert_array_equal(got[key], value, err_msg=f"{label} {key}")


def run_train(model: str, mesh=None) -> dict[str, np.ndarray]:
  """NUM_STEPS train steps; params, metrics and (with a mesh) the state's layout."""
  forward, params, axes = MODELS[model]()
  cfg = config(recompute_old_log_probs=True)
  step = ts.make_train_step(cfg, forward, OPTIMIZER)
  init = lambda p: ts.init_state(p, OPTIMIZER, num_kinds=1, num_roles=2, seed=0)
  rules, out = sh.TRAIN_RULES, {}
  if mesh is None:
    state = init(jax.tree.map(jnp.copy, params))  # The step donates it; the model is cached.
  else:
    params = sh.shard_params(params, mesh, rules, axes)
    state = sh.init_sharded(init, params, sh.param_shardings(axes, mesh, rules))
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
    batch_shardings = sh.batch_shardings(make_batch(0), mesh, rules)
    step = sh.shard_step(step, state_shardings, batch_shardings)
    rows = sh.process_rows(cfg.batch_size, mesh, rules)
  for i in range(NUM_STEPS):
    batch = make_batch(i)
    if mesh is not None:
      local = jax.tree.map(lambda x: np.asarray(x)[rows], batch)
      batch = sh.global_batch(local, cfg.batch_size, mesh, rules)
    state, metrics = step(state, batch)
    out.update(flatten(f"metrics{i}", jax.device_get(metrics)))
  if mesh is not None:
    out.update(layouts("state", state))
  host = jax.device_get if mesh is None else _gather
  out.update(flatten("params", host(state.params)))
  out.update(flatten("opt_state", host(state.opt_state)))
  return out


def sampler_inputs():
  """Left-padded prompts, lengths, a key and per-row temperatures (half greedy, half sampled)."""
  rng = np.random.default_rng(0)
  prompts = rng.integers(1, 200, size=(8, PROMPT_LEN)).astype(np.int32)
  lengths = np.array([4, 3, 2, 1, 4, 3, 2, 1], np.int32)
  prompts[np.arange(PROMPT_LEN)[None, :] < PROMPT_LEN - lengths[:, None]] = 0
  temperature = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32)
  return prompts, lengths, jax.random.key(1), temperature


def run_sampler(mesh=None, int8=False) -> dict[str, np.ndarray]:
  """One sampler call on the transformer; with a mesh, params arrive in the train layout.
  Results under "samples", or "int8_samples" with int8 logits and layer weights (then without
  the layouts)."""
  cfg = transformer_config()
  _, params, axes = transformer_lm()
  prefix = "int8_samples" if int8 else "samples"

  # Two prompt starts prefilled once each, the rows continuing them in turn (each seat's start).
  starts = np.random.default_rng(1).integers(1, 200, size=(2, 3)).astype(np.int32)

  def sample(params, prompts, lengths, key, temperature):
    return sampling.sample(cfg, params, prompts, lengths, key, temperature, 1.0, 0, STOP_TOKENS,
                           max_response_len=RESPONSE_LEN, prefixes_NL=jnp.asarray(starts),
                           prefix_index_B=jnp.arange(prompts.shape[0]) % 2, int8_logits=int8,
                           int8_weights=int8)
  args = sampler_inputs()
  if mesh is None:
    return flatten(prefix, jax.jit(sample)(params, *args))
  train = sh.param_shardings(axes, mesh, sh.TRAIN_RULES)
  serve = sh.param_shardings(axes, mesh, sh.SAMPLER_RULES)
  rows = jax.sharding.NamedSharding(mesh, sh.batch_spec(sh.SAMPLER_RULES))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.jit(lambda p, *a: sample(sh.reshard(p, serve), *a),
                    in_shardings=(train, rows, rows, replicated, rows), out_shardings=rows)
  params = sh.shard_params(params, mesh, sh.TRAIN_RULES, axes)
  out = flatten(prefix, sharded(params, *args))
  if not int8:
    out.update(layouts("sampler_params", jax.jit(lambda p: sh.reshard(p, serve))(params)))
  return out


def main(argv):
  mode, path, what = argv[1:4]
  if mode == "multihost":
    process_id, port = int(argv[4]), int(argv[5])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=process_id)
    mesh = sh.make_mesh(sh.MeshConfig(data=1, fsdp=2, tensor=2))
    out = run_train(what, mesh)
    out["process_rows"] = sh.process_rows(8, mesh, sh.TRAIN_RULES)
    out["devices"] = np.array([jax.device_count(), jax.local_device_count()])
    np.savez(path, **out)
    jax.distributed.shutdown()
    return
  results = {}
  for text in ["ref"] + argv[4:]:
    mesh = None if text == "ref" else sh.make_mesh(sh.MeshConfig(*map(int, text.split(","))))
    for task in what.split(","):
      out = (run_sampler(mesh, int8=task == "int8_sampler") if task.endswith("sampler")
             else run_train(task.split(":")[1], mesh))
      results.update({f"{text}|{k}": v for k, v in out.items()})
  np.savez(path, **results)


if __name__ == "__main__":
  main(sys.argv)
