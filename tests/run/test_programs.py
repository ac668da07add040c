"""Saved programs (jaxplay/run/programs.py): a second start reads what the first traced, gets the
same results, and tells apart what it must; a run started twice traces its large programs once."""

import collections
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from jaxplay.rl import train_step
from jaxplay.run import configuration, experiment, metrics, programs, train
from tests import stand_ins
from tests.run import test_train


@struct.dataclass
class Pair:
  first: jax.Array
  second: jax.Array
  label: str = struct.field(pytree_node=False, default="pair")


@pytest.fixture
def folder(tmp_path):
  """Programs saved in tmp_path/programs for the test, off again after it."""
  path = tmp_path / "programs"
  programs.save_in(str(path))
  yield path
  programs.save_in("")


def _counting(traces: list):
  """A fresh function object each call (as a new start makes), counting its tracings."""
  def step(pair, scale):
    traces.append(1)
    return Pair(pair.first * scale, pair.second + 1), {"sum": pair.first.sum(), "none": None}
  return step


def _pair(size=3):
  return Pair(jnp.arange(size, dtype=jnp.float32), jnp.ones(size, jnp.int32))


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_saved_program_runs_without_tracing_again(folder):
  """The first start traces and saves; a later one (a new cache, a new function object) reads
  the file, traces nothing, and returns the same outputs in the same structure, donation kept."""
  traces = []
  first = programs.ProgramCache("run").jit(_counting(traces), "step", donate_argnums=0)
  expected = first(_pair(), 2.0)
  assert len(traces) == 1 and [p.name for p in folder.iterdir()][0].startswith("step-")
  again = programs.ProgramCache("run").jit(_counting(traces), "step", donate_argnums=0)
  pair = _pair()
  got = again(pair, 2.0)
  got_later = again(_pair(), 2.0)
  assert len(traces) == 1 and pair.first.is_deleted()
  _assert_same(got, expected)
  _assert_same(got_later, expected)
  assert got[0].label == "pair" and got[1]["none"] is None


def test_programs_are_told_apart_by_run_name_and_inputs(folder):
  """Another context, name, input shape or dtype is another program: traced and saved anew."""
  traces = []
  programs.ProgramCache("run").jit(_counting(traces), "step")(_pair(), 2.0)
  programs.ProgramCache("other run").jit(_counting(traces), "step")(_pair(), 2.0)
  programs.ProgramCache("run").jit(_counting(traces), "other_step")(_pair(), 2.0)
  programs.ProgramCache("run").jit(_counting(traces), "step")(_pair(4), 2.0)
  programs.ProgramCache("run").jit(_counting(traces), "step")(_pair(), jnp.bfloat16(2.0))
  assert len(traces) == 5 and len(list(folder.iterdir())) == 5


def test_without_a_folder_or_context_programs_are_plain_jits(tmp_path):
  """Off (no `save_in` folder, or a cache made without a context): jax.jit, nothing written."""
  traces = []
  jitted = programs.ProgramCache("run").jit(_counting(traces), "step")
  assert isinstance(jitted, type(jax.jit(len)))
  programs.save_in(str(tmp_path))
  try:
    assert isinstance(programs.ProgramCache(None).jit(_counting(traces), "step"),
                      type(jax.jit(len)))
  finally:
    programs.save_in("")


def test_an_unreadable_program_is_traced_and_saved_again(folder, capsys):
  traces = []
  expected = programs.ProgramCache("run").jit(_counting(traces), "step")(_pair(), 2.0)
  [path] = folder.iterdir()
  path.write_bytes(path.read_bytes()[:200])
  got = programs.ProgramCache("run").jit(_counting(traces), "step")(_pair(), 2.0)
  _assert_same(got, expected)
  assert len(traces) == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith(f"saved programs: {path}: unreadable, tracing again (")
  programs.ProgramCache("run").jit(_counting(traces), "step")(_pair(), 2.0)
  assert len(traces) == 2  # Saved again, whole.


def test_a_folder_that_cannot_be_written_leaves_the_program_a_plain_jit(tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  programs.save_in(str(blocker / "programs"))
  try:
    got = programs.ProgramCache("run").jit(_counting([]), "step")(_pair(), 2.0)
  finally:
    programs.save_in("")
  _assert_same(got, jax.jit(_counting([]))(_pair(), 2.0))
  assert capsys.readouterr().err.startswith("saved programs: step is traced at each start (")


def test_a_program_whose_outputs_cannot_be_named_is_traced_at_each_start(folder, capsys):
  """Outputs of a pytree type defined inside a function cannot be read back by name: one
  stderr line, the program runs as jax.jit, nothing is written."""
  @struct.dataclass
  class Local:
    value: jax.Array

  jitted = programs.ProgramCache("run").jit(lambda x: Local(x + 1), "local")
  np.testing.assert_array_equal(jitted(jnp.ones(2)).value, [2.0, 2.0])
  assert capsys.readouterr().err.startswith("saved programs: local is traced at each start (")
  assert not folder.exists() or not list(folder.iterdir())


def test_only_the_most_recently_used_programs_are_kept(folder, monkeypatch):
  """Reading a program counts as using it: of a (saved first, read again), b and c, b goes."""
  monkeypatch.setattr(programs, "MAX_SAVED", 2)
  for seconds, name in enumerate(("a", "b"), start=1):
    programs.ProgramCache("run").jit(_counting([]), name)(_pair(), 2.0)
    [path] = folder.glob(f"{name}-*")
    os.utime(path, (seconds, seconds))  # Saved long ago, a before b.
  traces = []
  programs.ProgramCache("run").jit(_counting(traces), "a")(_pair(), 2.0)
  programs.ProgramCache("run").jit(_counting([]), "c")(_pair(), 2.0)
  assert not traces and sorted(p.name[0] for p in folder.iterdir()) == ["a", "c"]


def test_tree_structures_read_back_from_json():
  """What a train step returns (flax dataclasses with None fields, optax's named tuples, dicts
  of params) encodes to JSON and decodes to an equal structure."""
  params = {"layer": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "scale": {3: jnp.ones(1)}}
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  state = train_step.init_state(params, optimizer, num_kinds=2, num_roles=2, seed=0)
  for tree in (state, (state, {"loss": 1.0, "none": None}), [Pair(1, 2)], 1.0, None):
    structure = jax.tree.structure(tree)
    assert programs.decode_tree(programs.encode_tree(structure)) == structure


def test_the_key_holds_every_source_the_process_loaded(tmp_path, monkeypatch):
  """A game module of the user's, outside the Python installation, is among the sources."""
  (tmp_path / "my_game_module.py").write_text("VALUE = 1\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  import my_game_module  # pylint: disable=import-outside-toplevel,import-error
  files = programs.source_files()
  assert os.path.realpath(my_game_module.__file__) in files
  assert os.path.realpath(programs.__file__) in files
  assert not any(".venv" in f or "site-packages" in f for f in files)


def _traced_names(runs, configs, root):
  """Runs each config in `configs` (one per start, each its own workdir) and returns the
  names of the functions JAX traced in each start, and each run's metrics rows."""
  traced, rows = [], []

  def listener(event, duration, **fields):
    del duration
    if event == "/jax/core/compile/jaxpr_trace_duration":
      traced[-1][fields.get("fun_name")] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for run, config in zip(runs, configs):
      traced.append(collections.Counter())
      summary = train.train(config, str(root / run))
      rows.append([{k: v for k, v in row.items() if k != "time"}
                   for row in metrics.read_jsonl(summary["metrics"])])
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return traced, rows


# The rollout, the train step, the evaluation's games, a task's held-out problems.
SAVED = ("collect", "train_step", "play_games", "solve_problems")


def test_a_second_start_traces_none_of_the_runs_large_programs(folder, tmp_path):
  """Two starts of the tiny Kuhn Poker run (in one process: a new start builds new functions):
  the first traces and saves the rollout, train step and evaluation programs, the second reads
  them, traces none, and writes the same metrics."""
  config = stand_ins.tiny_kuhn_config(**{"train.steps": 2, "train.eval_every": 2})
  traced, rows = _traced_names(("first", "second"), (config, config), tmp_path)
  assert all(traced[0][name] for name in SAVED[:3]), traced[0]
  assert not any(traced[1][name] for name in SAVED), traced[1]
  assert rows[0] == rows[1] and any("loss" in row for row in rows[1])
  names = {path.name.split("-")[0] for path in folder.iterdir()}
  assert {"collect", "train_step", "eval_play_0_kuhn_poker", "eval_exact_0_kuhn_poker"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["population_with_counters", "iterative_spo", "rlvr"])
def test_runs_of_every_kind_start_again_from_saved_programs(folder, tmp_path, kind):
  """The counter policy's games, each phase's games, a task's held-out problems: the second
  start traces none of them and writes the first's metrics."""
  config = {"population_with_counters": lambda: test_train.population_config(2),
            "iterative_spo": lambda: test_train.iterative_spo_config(3),
            "rlvr": test_train.rlvr_config}[kind]()
  traced, rows = _traced_names(("first", "second"), (config, config), tmp_path)
  names = {path.name.split("-")[0] for path in folder.iterdir()}
  assert "train_step" in names and any(name.startswith("collect") for name in names), names
  assert traced[0]["collect"]
  # A step with a counter policy is `step` (experiment.with_counter_update).
  assert not any(traced[1][name] for name in SAVED + ("step",)), traced[1]
  assert rows[0] == rows[1]



def test_a_changed_model_file_or_config_is_another_run(tmp_path):
  """The run's context changes with its config and with its model files' size or time."""
  model = tmp_path / "model"
  model.mkdir()
  (model / "weights.safetensors").write_bytes(b"1234")
  config = configuration.validate(stand_ins.tiny_kuhn_config())
  context = lambda spec: experiment.program_cache(
      dataclasses.replace(spec, model=dataclasses.replace(spec.model, path=str(model))),
      experiment.model_config(spec)).key("collect", "inputs")
  before = context(config)
  assert before == context(config)
  assert context(dataclasses.replace(config, seed=config.seed + 1)) != before
  (model / "weights.safetensors").write_bytes(b"12345")
  assert context(config) != before
  assert str(model / "weights.safetensors") in programs.path_identity(str(model))
