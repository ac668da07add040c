"""Mesh, rules and placement checks; the sharded train step, sampler and training loop on 8
simulated devices.

The multi-device runs happen in child processes (tests/sharding_worker.py, tests/loop_worker.py)
whose XLA_FLAGS ask for 8 CPU devices, so this session keeps its single device.
"""

import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec as P

from jaxplay import sharding as sh
from jaxplay.models import configs, transformer
from jaxplay.rl import population
from jaxplay.run import experiment, store
from jaxplay.run import spec as spec_lib
from tests import loop_worker
from tests import sharding_worker as worker

MESHES = ("8,1,1", "2,4,1", "1,2,4", "1,1,8")


def run_worker(path: pathlib.Path, tasks: str, timeout: int = 900) -> dict[str, np.ndarray]:
  cmd = [sys.executable, "-m", "tests.sharding_worker", "meshes", str(path), tasks, *MESHES]
  proc = subprocess.run(cmd, cwd=worker.ROOT, env=worker.child_env(8), capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-5000:]
  with np.load(path) as data:
    return dict(data)


def abstract_mesh(data, fsdp, tensor):
  return AbstractMesh((data, fsdp, tensor), sh.MESH_AXES)


def mesh_sizes(text):
  return dict(zip(sh.MESH_AXES, map(int, text.split(","))))


def axes_of(entry):
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def without_unit_axes(text, sizes):
  """Spec text without mesh axes of size 1 (sharding over them or not places data the same)."""
  return ",".join("+".join(a for a in entry.split("+") if a and sizes[a] > 1)
                  for entry in text.split(","))


def expected_layout(logical_spec, shape, rules, sizes):
  """(spec text, shard shape) read straight off the rules table."""
  table = dict(rules)
  mesh_axes = [axes_of(table.get(name)) if name else () for name in tuple(logical_spec)]
  mesh_axes += [()] * (len(shape) - len(mesh_axes))
  text = without_unit_axes(",".join("+".join(a) for a in mesh_axes), sizes)
  shard = tuple(n // int(np.prod([sizes[a] for a in axes])) for n, axes in zip(shape, mesh_axes))
  return text, shard


def check_matches_reference(results, prefix, meshes=MESHES, scale=1.0):
  """Every mesh's `prefix...` results equal the single-device ones (`scale`: of the tolerances)."""
  want = {k[4:]: v for k, v in results.items() if k.startswith(f"ref|{prefix}")}
  assert want
  for mesh in meshes:
    worker.assert_close({k: results[f"{mesh}|{k}"] for k in want}, want, label=mesh, scale=scale)


def check_layouts(results, prefix, logical_axes, rules, holders, meshes=MESHES):
  """Every leaf under `prefix` is placed as the rules say for the param whose path it ends with.

  holders: how many leaves each param's layout must appear on (params, Adam's mu and nu: 3; 4
  with KL reference params).
  """
  params = {jax.tree_util.keystr(path, simple=True, separator="/"): spec
            for path, spec in jax.tree_util.tree_leaves_with_path(
                logical_axes, is_leaf=lambda x: isinstance(x, P))}
  for mesh in meshes:
    sizes = mesh_sizes(mesh)
    seen = dict.fromkeys(params, 0)
    spec_keys = [k for k in results if k.startswith(f"{mesh}|spec:{prefix}")]
    assert spec_keys
    for key in spec_keys:
      name = key.split("|spec:")[1]
      shape = tuple(results[key.replace("|spec:", "|shape:")])
      shard = tuple(results[key.replace("|spec:", "|shard:")])
      match = [p for p in params if name.endswith("/" + p)]
      if match:
        (param,) = match
        seen[param] += 1
        want = expected_layout(params[param], shape, rules, sizes)
      else:  # Step, counters, baselines, rng: replicated.
        want = (",".join([""] * len(shape)), shape)
      assert (without_unit_axes(str(results[key]), sizes), shard) == want, (mesh, name)
    assert set(seen.values()) == {holders}, (mesh, seen)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
  """LogicalLM train steps and transformer sampler calls (float, and int8 logits and weights), on
  one device and on each mesh."""
  return run_worker(tmp_path_factory.mktemp("sharding") / "results.npz",
                    "train:logical_lm,sampler,int8_sampler")


def test_train_step_matches_one_device(sharded):
  check_matches_reference(sharded, "metrics")
  check_matches_reference(sharded, "params")
  check_matches_reference(sharded, "opt_state")


def test_train_state_is_sharded_as_the_rules_say(sharded):
  check_layouts(sharded, "state", worker.logical_lm_axes(), sh.TRAIN_RULES, holders=3)


def test_sampler_matches_one_device_from_train_layout(sharded):
  assert len(set(sharded["ref|samples/lengths"])) > 1  # Some rows stopped early.
  check_matches_reference(sharded, "samples")
  check_layouts(sharded, "sampler_params", transformer.param_axes(worker.transformer_config()),
                sh.SAMPLER_RULES, holders=1)


def test_int8_sampler_matches_one_device_from_train_layout(sharded):
  """`int8_logits` and `int8_weights` on every mesh: the tables quantised from sharded weights and
  the int8 dots over sharded rows, heads and channels give the single device's samples."""
  check_matches_reference(sharded, "int8_samples")


@pytest.mark.slow
def test_transformer_train_step_matches_one_device(tmp_path):
  results = run_worker(tmp_path / "results.npz", "train:transformer")
  check_matches_reference(results, "")
  check_layouts(results, "state", transformer.param_axes(worker.transformer_config()),
                sh.TRAIN_RULES, holders=3)


@pytest.mark.slow
def test_bfloat16_transformer_train_step_matches_one_device(tmp_path):
  """bfloat16 compute (its layers' residuals held as bits under a custom vjp) on every mesh: the
  metrics (loss, gradient norm, entropy, ...) of each step within 1% (100x the float32 tolerances;
  the meshes sum bfloat16 partial results in other orders, a few bfloat16 units apart)."""
  results = run_worker(tmp_path / "results.npz", "train:transformer_bfloat16")
  check_matches_reference(results, "metrics", scale=100)


LOOP_MESHES = ("2,4,1", "1,2,4")


def run_loops(tmp_path: pathlib.Path, mode: str, steps: int, meshes) -> dict[str, np.ndarray]:
  """tests/loop_worker.py (`loop` or `loop_steps`) on one device (saved as `ref|...`) and on 8
  simulated devices with each of `meshes`: two child processes side by side."""
  jobs = {1: ["1,1,1"], 8: list(meshes)}
  procs = {}
  try:
    for count, texts in jobs.items():
      cmd = [sys.executable, "-m", "tests.loop_worker", mode,
             str(tmp_path / f"devices{count}.npz"), str(steps), *texts]
      with open(tmp_path / f"devices{count}.log", "w") as log:
        procs[count] = subprocess.Popen(cmd, cwd=worker.ROOT, env=worker.child_env(count),
                                        stdout=log, stderr=subprocess.STDOUT)
    for proc in procs.values():
      proc.wait(timeout=900)
  finally:
    for proc in procs.values():
      proc.kill()
  results = {}
  for count, proc in procs.items():
    assert proc.returncode == 0, (tmp_path / f"devices{count}.log").read_text()[-5000:]
    with np.load(tmp_path / f"devices{count}.npz") as data:
      results.update({k.replace("1,1,1|", "ref|", 1): v for k, v in data.items()})
  return results


def check_loop(results, meshes):
  """Sharded losses and final state agree with one device; the state and batch layouts follow
  the run's rules."""
  check_matches_reference(results, "metrics", meshes)
  check_matches_reference(results, "params", meshes)
  check_matches_reference(results, "opt_state", meshes)
  config = loop_worker.loop_config("1,1,1", 1)
  if config.rl.kl_coef:
    check_matches_reference(results, "ref_params", meshes)
  rules = sh.make_rules(loop_worker.LOOP_RULES)
  model = experiment.model_config(spec_lib.from_mapping(config))
  holders = 4 if config.rl.kl_coef else 3  # Params, Adam's mu and nu, and the KL reference.
  check_layouts(results, "state", transformer.param_axes(model), rules, holders=holders,
                meshes=meshes)
  for mesh in meshes:
    sizes = mesh_sizes(mesh)
    specs = {k: str(v) for k, v in results.items() if k.startswith(f"{mesh}|spec:batch/")}
    for key, spec in specs.items():
      shape = tuple(results[key.replace("|spec:", "|shape:")])
      want = expected_layout(P("batch"), shape, rules, sizes)
      assert (without_unit_axes(spec, sizes), tuple(results[key.replace("|spec:", "|shard:")])
              ) == want, key


def test_train_loop_steps_on_a_mesh_match_one_device(tmp_path):
  """The loop's pieces (store.setup, collect, train step) on mesh data=1 x fsdp=2 x tensor=4."""
  results = run_loops(tmp_path, "loop_steps", 1, ["1,2,4"])
  assert any("|spec:batch/" in k for k in results)
  check_loop(results, ["1,2,4"])


@pytest.mark.slow
def test_train_on_meshes_matches_one_device(tmp_path):
  """`train.train` for 2 steps; the state is checked as restored from the final checkpoint."""
  results = run_loops(tmp_path, "loop", 2, LOOP_MESHES)
  assert results["ref|metrics/loss"].shape == (2,)
  check_loop(results, LOOP_MESHES)
  # This process has one device: the 8-device runs load with a mesh override, values unchanged.
  for mesh in LOOP_MESHES:
    _, _, state, step = store.load_run(str(tmp_path / f"run_{mesh.replace(',', '_')}"),
                                       mesh={"data": -1, "fsdp": 1, "tensor": 1})
    assert step == 2
    for key, value in loop_worker.state_results(state).items():
      if key.startswith(("params/", "opt_state/", "ref_params/")):
        np.testing.assert_array_equal(value, results[f"{mesh}|{key}"], err_msg=key)


@pytest.mark.slow
def test_a_sharded_run_started_again_from_saved_programs_matches_one_device(tmp_path):
  """`train.train` started twice on data=1 x fsdp=2 x tensor=4 with saved programs: the second
  start traces neither the rollout nor the train step (checked in the worker), and its losses,
  final state and layouts match one device's."""
  results = run_loops(tmp_path, "loop_saved", 2, ["1,2,4"])
  check_loop(results, ["1,2,4"])


def test_mesh_sizes_from_the_command_line():
  assert sh.parse_mesh_sizes("-1,1,1") == {"data": -1, "fsdp": 1, "tensor": 1}
  assert sh.parse_mesh_sizes("2, 4,1") == {"data": 2, "fsdp": 4, "tensor": 1}
  for bad in ("", "2,4", "data=2", "2,x,1"):
    with pytest.raises(ValueError, match=r"expected data,fsdp,tensor sizes"):
      sh.parse_mesh_sizes(bad)


def test_mesh_shape_resolves_the_rest():
  assert sh.mesh_shape(sh.MeshConfig(), 8) == (8, 1, 1)
  assert sh.mesh_shape(sh.MeshConfig(data=2, fsdp=-1, tensor=2), 8) == (2, 2, 2)
  assert sh.mesh_shape(ml_collections.ConfigDict(dict(data=1, fsdp=2, tensor=4)), 8) == (1, 2, 4)
  mesh = sh.make_mesh(sh.MeshConfig())
  assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}


@pytest.mark.parametrize("mesh_config, message", [
    (sh.MeshConfig(data=3, fsdp=-1), "8 devices are not divisible by 3"),
    (sh.MeshConfig(data=2, fsdp=2, tensor=1), "has 4 devices, but there are 8"),
    (sh.MeshConfig(data=4, fsdp=4, tensor=1), "has 16 devices, but there are 8"),
    (sh.MeshConfig(data=-1, fsdp=-1), "at most one -1"),
    (sh.MeshConfig(data=0), "must be positive"),
])
def test_mesh_that_does_not_fit_the_devices_fails(mesh_config, message):
  with pytest.raises(ValueError, match=message):
    sh.mesh_shape(mesh_config, 8)


def test_rules_from_a_config_table():
  rules = dict(sh.make_rules({"kv_heads": None, "batch": ["data"]}))
  assert rules["kv_heads"] is None and rules["batch"] == ("data",)
  assert rules["embed"] == "fsdp"
  assert dict(sh.SAMPLER_RULES)["embed"] is None
  assert dict(sh.SAMPLER_RULES)["heads"] == "tensor"
  with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
    sh.make_rules({"mlp": "model"})


def test_param_that_does_not_split_names_param_dim_and_axes():
  cfg = configs.tiny()  # 4 heads, 2 kv heads, d_model 64.
  shapes = transformer.param_shapes(cfg)
  axes = transformer.param_axes(cfg)
  sh.check_divisible(shapes, sh.param_shardings(axes, abstract_mesh(1, 2, 2), sh.TRAIN_RULES))
  with pytest.raises(ValueError, match=r"param layers/attn/k dim 2 of size 2 .* axes tensor=4;"):
    sh.check_divisible(shapes, sh.param_shardings(axes, abstract_mesh(1, 1, 4), sh.TRAIN_RULES))
  with pytest.raises(ValueError, match=r"param embedding dim 1 of size 64 .* axes fsdp=128;"):
    sh.check_divisible(shapes, sh.param_shardings(axes, abstract_mesh(1, 128, 1), sh.TRAIN_RULES))
  rules = sh.make_rules({"kv_heads": None})  # The fix the message suggests.
  sh.check_divisible(shapes, sh.param_shardings(axes, abstract_mesh(1, 1, 4), rules))


def test_batch_that_does_not_split_names_the_numbers():
  batch = {"tokens": np.zeros((6, 5), np.int32), "reward": np.zeros(6, np.float32)}
  mesh = abstract_mesh(2, 4, 1)
  with pytest.raises(ValueError, match=r"has 6 rows, which do not split over data=2 x fsdp=4 = 8"):
    sh.batch_shardings(batch, mesh, sh.TRAIN_RULES)
  shardings = sh.batch_shardings({"tokens": np.zeros((8, 5))}, mesh, sh.TRAIN_RULES)
  assert shardings["tokens"].spec == P(("data", "fsdp"))


def test_cache_shardings():
  cfg = configs.tiny(num_kv_heads=4)
  cache = jax.eval_shape(lambda: transformer.init_cache(cfg, batch=8, max_len=16))
  shardings = sh.cache_shardings(cache, abstract_mesh(2, 2, 2), sh.SAMPLER_RULES)
  assert shardings.k.spec == P(None, ("data", "fsdp"), None, "tensor", None)
  assert shardings.positions.spec == P(("data", "fsdp"), None)
  assert shardings.index.spec == P()
  with pytest.raises(ValueError, match=r"cache k dim 3 of size 4 .*tensor=8"):
    sh.cache_shardings(cache, abstract_mesh(1, 1, 8), sh.SAMPLER_RULES)


def test_optimizer_state_follows_params():
  cfg = configs.tiny()
  shapes = transformer.param_shapes(cfg)
  shardings = sh.param_shardings(transformer.param_axes(cfg), abstract_mesh(1, 2, 2),
                                 sh.TRAIN_RULES)
  opt_state = jax.eval_shape(optax.adamw(1e-3).init, shapes)
  placed = sh.like_params(opt_state, shapes, shardings)
  adam = placed[0]
  assert adam.mu["layers"]["attn"]["q"].spec == P(None, "fsdp", "tensor", None)
  assert adam.nu["embedding"].spec == shardings["embedding"].spec == P("tensor", "fsdp")
  assert adam.count.spec == P()



def test_a_population_of_stacked_snapshots_is_split_like_its_params():
  cfg = configs.tiny()
  shapes = transformer.param_shapes(cfg)
  shardings = sh.param_shardings(transformer.param_axes(cfg), abstract_mesh(1, 2, 2),
                                 sh.TRAIN_RULES)
  pool = jax.eval_shape(lambda p: population.new_pool(p, capacity=3), shapes)
  placed = sh.like_params(pool, shapes, shardings)
  assert placed.params["layers"]["attn"]["q"].spec == P(None, None, "fsdp", "tensor", None)
  assert placed.params["embedding"].spec == P(None, "tensor", "fsdp")
  assert placed.score.spec == P()


def test_process_rows_single_process():
  mesh = sh.make_mesh(sh.MeshConfig())
  np.testing.assert_array_equal(sh.process_rows(4, mesh, sh.TRAIN_RULES), np.arange(4))
  local = {"x": np.arange(8.0).reshape(4, 2)}
  batch = sh.global_batch(local, 4, mesh, sh.TRAIN_RULES)
  assert isinstance(batch["x"].sharding, NamedSharding)
  np.testing.assert_array_equal(batch["x"], local["x"])
