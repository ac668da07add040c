"""`python -m jaxplay.cli.evaluate` (`jaxplay-eval`): evaluates a run's latest checkpoint against
fixed opponents and on math sets, appending to `<workdir>/evals.jsonl`."""

from __future__ import annotations

import argparse
import datetime
import json
import time

import jax
from etils import epath

from jaxplay import errors, sharding
from jaxplay.run import checkpoints, evaluator, store, workdir
from jaxplay.run import phases as phases_lib


def format_table(rows: list[dict]) -> str:
  """One line per headline metric: eval, metric, value [95% interval]."""
  lines = [f"{'step':>6}  {'eval':<24} {'metric':<36} value"]
  for row in rows:
    for name, value in row["metrics"].items():
      if not name.endswith(evaluator.HEADLINE):
        continue
      shown = f"{value:.4g}"
      if f"{name}_low" in row["metrics"]:
        shown += f" [{row['metrics'][name + '_low']:.3f}, {row['metrics'][name + '_high']:.3f}]"
      lines.append(f"{row['step']:>6}  {row['eval'][:24]:<24} {name:<36} {shown}")
  return "\n".join(lines)


@errors.user_facing
def main(argv: list[str] | None = None) -> list[dict]:
  """Runs the requested evals on a run's checkpoint; returns the rows written to evals.jsonl."""
  # pylint: disable-next=import-outside-toplevel
  from jaxplay.evaluation import reasoning  # Imports tfds.
  parser = argparse.ArgumentParser(prog="python -m jaxplay.cli.evaluate",
                                   description="Evaluates a checkpoint of a jaxplay run.")
  parser.add_argument("--workdir", required=True, help="the run's directory")
  parser.add_argument("--evals", default="games",
                      help="comma-separated: games, gsm8k, aime2025, jsonl:<path>")
  parser.add_argument("--limit", type=int, default=None, help="first N questions of math sets")
  parser.add_argument("--samples", type=int, default=1, help="samples per math question")
  parser.add_argument("--max_response_len", type=int,
                      default=reasoning.DEFAULT_MAX_RESPONSE_LEN)
  parser.add_argument("--max_prompt_len", type=int, default=None,
                      help="default: the longest prompt of the set")
  parser.add_argument("--batch_size", type=int, default=reasoning.DEFAULT_BATCH_SIZE)
  parser.add_argument("--temperature", type=float, default=None,
                      help="math sampling temperature (default: the run's eval.temperature)")
  parser.add_argument("--top_p", type=float, default=None,
                      help="math top-p (default: the run's eval.top_p)")
  parser.add_argument("--checkpoint_step", type=int, default=None, help="default: the latest")
  parser.add_argument("--mesh", default=None,
                      help="data,fsdp,tensor sizes replacing the run's mesh, e.g. -1,1,1 (all "
                      "devices here) to evaluate on other devices than the run trained on")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default=None, help="tfds data dir of the math sets")
  args = parser.parse_args(argv)
  try:
    evals = evaluator.eval_names(args.evals)
    mesh = None if args.mesh is None else sharding.parse_mesh_sizes(args.mesh)
  except ValueError as error:
    parser.error(str(error))
  config, exp, state, step = store.load_run(args.workdir, mesh)
  if args.checkpoint_step is not None and args.checkpoint_step != step:
    ckpt = store.checkpointer(args.workdir, config, store.frozen_leaves(exp, state))
    if args.checkpoint_step not in ckpt.steps():
      parser.error(f"no checkpoint of step {args.checkpoint_step} in {ckpt.directory}; "
                   f"available: {ckpt.steps()}")
    state = ckpt.restore(args.checkpoint_step, checkpoints.abstract_like(state))
    step = args.checkpoint_step
  temperature = config.eval.temperature if args.temperature is None else args.temperature
  top_p = config.eval.top_p if args.top_p is None else args.top_p
  key = jax.random.key(args.seed)
  rows = []
  for index, name in enumerate(evals):
    started = time.time()
    eval_key = jax.random.fold_in(key, index)
    if name == "games":
      evaluate_games = evaluator.Evaluator(exp, store.decoder(exp), phases_lib.Phases())
      results, _ = evaluate_games(state.params, eval_key, state.pool)
      results = {k.removeprefix("eval/"): v for k, v in results.items()}
    else:
      results, records = reasoning.evaluate_math(
          exp, state.params, name, args.limit, samples_per_question=args.samples,
          temperature=temperature, top_p=top_p, max_prompt_len=args.max_prompt_len,
          max_response_len=args.max_response_len, batch_size=args.batch_size, key=eval_key,
          data_dir=args.data_dir)
      evaluator.write_math_records(args.workdir, step, name, records)
    row = {"step": int(step), "eval": name, "metrics": results,
           "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "seconds": round(time.time() - started, 2)}
    workdir.append_text(epath.Path(args.workdir) / "evals.jsonl", json.dumps(row) + "\n")
    rows.append(row)
    print(f"{name}: done in {row['seconds']} s", flush=True)
  print(format_table(rows))
  return rows


def run() -> None:
  """`python -m jaxplay.cli.evaluate` and the `jaxplay-eval` console script."""
  main()


if __name__ == "__main__":
  run()
