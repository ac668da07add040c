"""Runs the training loop of a tiny Kuhn Poker config on simulated devices; saves np.savez results.

Started by tests/test_sharding.py in child processes whose XLA_FLAGS set the device count:

  python -m tests.loop_worker loop|loop_saved|loop_steps OUT.npz STEPS D,F,T [D,F,T ...]

`loop` runs `train.train` for STEPS steps on each mesh and restores its final checkpoint;
`loop_saved` does so twice with saved programs (jaxplay/run/programs.py) and keeps the second
start's results; `loop_steps` runs only the loop's collect + train steps (`store.setup`,
`experiment.make_collect`).
Results of mesh D,F,T are saved as `D,F,T|...` (kinds as in tests/sharding_worker.py).
"""

from __future__ import annotations

import collections
import pathlib
import sys

import jax
import numpy as np

from configs import kuhn_nash
from jaxplay import sharding as sh
from jaxplay.run import configuration, experiment, metrics, programs, store, train
from tests.sharding_worker import flatten, layouts

# The tiny model has 2 KV heads and a games-BPE vocabulary of a few hundred tokens (not a
# multiple of 4): unsplit, they let `tensor` be 4.
LOOP_RULES = {"kv_heads": None, "vocab": None}


def loop_config(mesh_text: str, steps: int):
  """configs/kuhn_nash.py cut down to seconds per step, on the mesh `D,F,T`."""
  config = kuhn_nash.get_config()
  config.rollout.update(samples_per_step=8, games_per_batch=8)
  config.rl.update(micro_batch_size=8)
  config.train.update(steps=steps, eval_every=100, checkpoint_every=100)
  config.eval.update(opponents="random", games_per_seat=2)
  config.mesh.update(dict(zip(sh.MESH_AXES, map(int, mesh_text.split(",")))), rules=LOOP_RULES)
  return config


def run_train_loop(workdir: pathlib.Path, mesh_text: str, steps: int) -> dict[str, np.ndarray]:
  """`train.train`: losses, and the final state as restored from its checkpoint (values, layout)."""
  summary = train.train(loop_config(mesh_text, steps), str(workdir))
  losses = [r["loss"] for r in metrics.read_jsonl(summary["metrics"]) if "loss" in r]
  _, _, state, step = store.load_run(str(workdir))
  assert step == steps, step
  return {"metrics/loss": np.array(losses), **state_results(state)}


def run_saved_train_loop(folder: pathlib.Path, mesh_text: str, steps: int
                         ) -> dict[str, np.ndarray]:
  """`run_train_loop` started twice with saved programs: the second start's results, after
  checking that it traced neither the rollout nor the train step."""
  programs.save_in(str(folder / "programs"))
  name = mesh_text.replace(",", "_")
  run_train_loop(folder / f"first_{name}", mesh_text, steps)
  traced = collections.Counter()
  listener = lambda event, duration, **fields: traced.update(
      [fields.get("fun_name")] if event == "/jax/core/compile/jaxpr_trace_duration" else [])
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    results = run_train_loop(folder / f"run_{name}", mesh_text, steps)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert not (traced["collect"] or traced["train_step"]), traced
  return results


def run_loop_steps(mesh_text: str, steps: int) -> dict[str, np.ndarray]:
  """The loop's collect + train steps alone: losses, the last batch's layout, the final state."""
  exp, state, step_fn, layout = store.setup(configuration.validate(loop_config(mesh_text, steps)))
  collect = experiment.make_collect(exp, layout)
  losses = []
  for step in range(1, steps + 1):
    batch, _ = collect(state.params, None, jax.random.fold_in(jax.random.key(1), step))
    state, step_metrics = step_fn(state, batch)
    losses.append(float(step_metrics["loss"]))
  return {"metrics/loss": np.array(losses), **layouts("batch", batch), **state_results(state)}


def state_results(state) -> dict[str, np.ndarray]:
  """Params, optimizer state and KL reference params if any (gathered: one process), and the
  layout of the whole state."""
  ref = {} if state.ref_params is None else flatten("ref_params", jax.device_get(state.ref_params))
  return {**flatten("params", jax.device_get(state.params)),
          **flatten("opt_state", jax.device_get(state.opt_state)), **ref,
          **layouts("state", state)}


def main(argv):
  mode, path, steps, *meshes = argv[1:]
  folder, steps = pathlib.Path(path).parent, int(steps)
  run = lambda text: (
      run_loop_steps(text, steps) if mode == "loop_steps" else
      run_saved_train_loop(folder, text, steps) if mode == "loop_saved" else
      run_train_loop(folder / f"run_{text.replace(',', '_')}", text, steps))
  np.savez(path, **{f"{text}|{k}": v for text in meshes for k, v in run(text).items()})


if __name__ == "__main__":
  main(sys.argv)
