"""Math evaluation with the compiled sampler, and `jaxplay.cli.evaluate` on a trained run."""

import json
import math
import types

import jax
import numpy as np
import pytest

import games
from jaxplay.cli import evaluate as evaluate_cli
from jaxplay.evaluation import math_data, reasoning
from jaxplay.models import configs as model_configs
from jaxplay.models import sampling, transformer
from jaxplay.run import configuration, evaluator, train
from jaxplay.text import game_tokenizer
from jaxplay.text import tokenizer as tokenizers
from tests import stand_ins

pytest.importorskip("array_record")

QUESTIONS = [("What is 2 + 3?", "#### 5"), ("Half of 18?", "9"), ("Seven minus ten?", "-3"),
             ("One third as a fraction?", "\\frac{1}{3}"), ("Twelve times ten?", "120")]


@pytest.fixture(scope="module")
def questions_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("math") / "five.jsonl"
  path.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n"
                          for i, (q, a) in enumerate(QUESTIONS)))
  return str(path)


@pytest.fixture(scope="module")
def tiny_parts():
  """A random tiny model with the games BPE in ChatML (as configs/kuhn_nash.py builds it)."""
  tokenizer = game_tokenizer.games_bpe_tokenizer((games.make("kuhn_poker"),), 512)
  model = model_configs.get("tiny", vocab_size=len(tokenizer), dtype="float32")
  params = transformer.init_params(model, jax.random.key(0))
  return reasoning.make_parts(model, tokenizer, "chatml"), params


def wilson(k, n, z=1.96):
  """The Wilson score interval written out from its formula."""
  p = k / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  return centre - half, centre + half


def test_prompts_are_chat_wrapped_math_prompts_left_padded(tiny_parts):
  parts, _ = tiny_parts
  examples = [math_data.MathExample(f"q{i}", q, a) for i, (q, a) in enumerate(QUESTIONS[:3])]
  tokens, lengths = reasoning.encode_prompts(parts.tokenizer, parts.chat, examples,
                                             pad_id=parts.pad_id)
  assert tokens.shape == (3, lengths.max())
  for row, example in enumerate(examples):
    text = tokenizers.decode(parts.tokenizer, tokens[row, -lengths[row]:],
                             skip_special_tokens=False)
    assert text == ("<|im_start|>user\nQuestion: " + example.question + "\nPlease reason step "
                    "by step, and put your final answer within \\boxed{}.<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert (tokens[row, :-lengths[row]] == parts.pad_id).all()
  with pytest.raises(ValueError, match="'q0'.*max_prompt_len=10"):
    reasoning.encode_prompts(parts.tokenizer, parts.chat, examples, max_prompt_len=10)


def test_grading_of_known_responses_groups_samples_by_question(
    tiny_parts, questions_file, data_dir, monkeypatch):
  """A fake generator answers sample 0 right (read from the prompt) and sample 1 wrong."""
  parts, params = tiny_parts
  right = {"What is 2 + 3?": "\\boxed{5}", "Half of 18?": "So \\boxed{9.}",
           "Seven minus ten?": "\\boxed{-3}", "One third as a fraction?": "\\boxed{\\dfrac{1}{3}}",
           "Twelve times ten?": "\\boxed{120} apples"}
  calls = []

  def fake(parts_, params_, prompts, lengths, key, **options):
    calls.append(options)
    texts = []
    for row in range(prompts.shape[0]):
      prompt = tokenizers.decode(parts.tokenizer, prompts[row, -lengths[row]:])
      question = prompt.split("Question: ")[1].split("\nPlease")[0]
      texts.append(right[question] if row % 2 == 0 else "I think \\boxed{7}, no: 8")
    return texts, np.arange(1, prompts.shape[0] + 1)

  monkeypatch.setattr(reasoning, "sample_responses", fake)
  summary, records = reasoning.evaluate_math(
      parts, params, "jsonl:" + questions_file, limit=4, samples_per_question=2,
      max_response_len=32, data_dir=data_dir)
  assert calls == [dict(temperature=0.6, top_p=0.95, max_response_len=32, batch_size=8)]
  assert [(r["id"], r["sample"], r["correct"]) for r in records] == [
      (f"q{i}", s, s == 0) for i in range(4) for s in range(2)]
  assert summary["samples"] == 8 and summary["correct"] == 4 and summary["questions"] == 4
  assert summary["accuracy"] == 0.5
  assert (summary["accuracy_low"], summary["accuracy_high"]) == pytest.approx(wilson(4, 8))
  assert summary["mean_response_length"] == 4.5


def test_greedy_results_do_not_depend_on_batch_size(tiny_parts, questions_file, data_dir):
  parts, params = tiny_parts
  runs = {}
  for batch_size in (2, 3):
    before = sampling.generate._cache_size()  # pylint: disable=protected-access
    runs[batch_size] = reasoning.evaluate_math(
        parts, params, "jsonl:" + questions_file, samples_per_question=1, temperature=0.0,
        max_response_len=12, batch_size=batch_size, data_dir=data_dir,
        key=jax.random.key(batch_size))
    # Three or two batches, the last one padded: one compilation for all of them.
    assert sampling.generate._cache_size() - before <= 1  # pylint: disable=protected-access
  (summary2, records2), (summary3, records3) = runs[2], runs[3]
  assert [r["id"] for r in records2] == [f"q{i}" for i in range(5)]
  assert [(r["response"], r["length"]) for r in records2] == [
      (r["response"], r["length"]) for r in records3]
  assert summary2 == summary3
  # Each row's response is what the sampler gives for that prompt alone, unpadded.
  examples = math_data.load("jsonl:" + questions_file, data_dir=data_dir)
  for example, record in zip(examples[:2], records2):
    tokens, lengths = reasoning.encode_prompts(parts.tokenizer, parts.chat, [example])
    alone = sampling.generate(parts.model, params, tokens, lengths, jax.random.key(0), 0.0, 1.0,
                              0, np.asarray(parts.chat.stop_ids), max_response_len=12,
                              pad_id=parts.pad_id)
    assert record["length"] == int(alone.lengths[0])
    assert record["response"] == tokenizers.decode(parts.tokenizer,
                                                   alone.tokens[0, :int(alone.lengths[0])])


def test_unknown_eval_names_list_the_valid_ones():
  with pytest.raises(ValueError, match="bogus.*valid: games, gsm8k, aime2025 or jsonl:"):
    evaluator.eval_names("games,bogus")
  assert evaluator.eval_names("games, jsonl:/x.jsonl") == ["games", "jsonl:/x.jsonl"]
  with pytest.raises(SystemExit):
    evaluate_cli.main(["--workdir=/nonexistent", "--evals=gsm9k"])
  with pytest.raises(SystemExit):
    evaluate_cli.main(["--workdir=/nonexistent", "--mesh=2,x,1"])


def _tiny_run_config():
  return stand_ins.tiny_kuhn_config(**{
      "rollout.games_per_batch": 8, "rl.micro_batch_size": 8, "train.steps": 1,
      "train.eval_every": 1, "train.checkpoint_every": 1})


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_evaluate_command_math_on_a_saved_run(tmp_path, questions_file, data_dir, capsys):
  """A run directory holding the initial state (step 0): math eval, records, step selection."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  stand_ins.saved_run(workdir, _tiny_run_config(), step=0)
  rows = evaluate_cli.main([f"--workdir={workdir}", f"--evals=jsonl:{questions_file}", "--limit=3",
                            "--samples=2", "--max_response_len=8", "--batch_size=4",
                            f"--data_dir={data_dir}"])
  lines = _read_jsonl(workdir / "evals.jsonl")
  assert lines == rows and len(lines) == 1
  assert set(lines[0]) == {"step", "eval", "metrics", "time", "seconds"}
  assert lines[0]["step"] == 0 and lines[0]["eval"] == f"jsonl:{questions_file}"
  metrics = lines[0]["metrics"]
  assert metrics["samples"] == 3 * 2 and metrics["questions"] == 3
  assert 0 <= metrics["accuracy_low"] <= metrics["accuracy"] <= metrics["accuracy_high"] <= 1
  assert 1 <= metrics["mean_response_length"] <= 8
  samples = _read_jsonl(workdir / "eval_samples" / "step_000000_five_jsonl.jsonl")
  assert [(s["id"], s["sample"]) for s in samples] == [
      (f"q{i}", s) for i in range(3) for s in range(2)]
  assert sum(s["correct"] for s in samples) == metrics["correct"]
  assert "accuracy" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    evaluate_cli.main([f"--workdir={workdir}", "--checkpoint_step=7"])
  assert "no checkpoint of step 7" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_command_on_a_trained_run(tmp_path, questions_file, data_dir, capsys):
  """train.train for one step, then games and math evals of its latest checkpoint."""
  workdir = str(tmp_path / "run")
  train.train(_tiny_run_config(), workdir)
  rows = evaluate_cli.main([f"--workdir={workdir}", f"--evals=games,jsonl:{questions_file}",
                            "--limit=3", "--samples=2", "--max_response_len=8", "--batch_size=4",
                            f"--data_dir={data_dir}"])
  lines = _read_jsonl(f"{workdir}/evals.jsonl")
  assert lines == rows and [r["eval"] for r in lines] == ["games", f"jsonl:{questions_file}"]
  assert all(row["step"] == 1 for row in lines)
  games_metrics, math_metrics = lines[0]["metrics"], lines[1]["metrics"]
  assert games_metrics["kuhn_poker/random/games"] == 4
  assert 0 <= games_metrics["kuhn_poker/exploitability"] <= 2
  assert math_metrics["samples"] == 3 * 2 and 0 <= math_metrics["accuracy"] <= 1
  table = capsys.readouterr().out
  assert "kuhn_poker/optimal/win_rate" in table and "accuracy" in table


def _math_config(questions_file, data_dir):
  config = _tiny_run_config()
  config.train.update(steps=3, eval_every=1, checkpoint_every=3)
  config.eval.update(math=f"jsonl:{questions_file}", math_every=2, math_limit=3,
                     math_max_response_len=4, math_batch_size=2, math_data_dir=data_dir)
  return config


def test_math_evals_of_the_config_give_named_metrics_and_records(
    tiny_parts, tmp_path, questions_file, data_dir):
  config = _math_config(questions_file, data_dir)
  due = lambda step: evaluator.math_due(configuration.validate(config), step)
  assert [s for s in range(5) if due(s)] == [0, 2, 3, 4]
  config.eval.math = ""
  assert not any(due(s) for s in range(5))
  config.eval.math = f"jsonl:{questions_file}"
  parts, params = tiny_parts
  exp = types.SimpleNamespace(config=configuration.validate(config), **vars(parts))
  metrics = evaluator.run_math(exp, params, jax.random.key(0), str(tmp_path), step=7)
  assert metrics["eval/math/five_jsonl/samples"] == 3 == metrics["eval/math/five_jsonl/questions"]
  samples = _read_jsonl(tmp_path / "eval_samples" / "step_000007_five_jsonl.jsonl")
  assert [s["id"] for s in samples] == ["q0", "q1", "q2"]
  assert sum(s["correct"] for s in samples) == metrics["eval/math/five_jsonl/correct"]
  # The random model writes no stop token within math_max_response_len = 4: all truncated.
  assert [s["length"] for s in samples] == [4, 4, 4]
  assert metrics["eval/math/five_jsonl/mean_response_length"] == 4.0
  assert metrics["eval/math/five_jsonl/truncated_rate"] == 1.0


@pytest.mark.slow
def test_math_runs_during_training_at_its_steps(tmp_path, questions_file, data_dir):
  """train.train writes eval/math/<set>/... at step 0, every math_every steps and the last."""
  config = _math_config(questions_file, data_dir)
  workdir = str(tmp_path / "run")
  summary = train.train(config, workdir)
  records = [r for r in _read_jsonl(f"{workdir}/metrics.jsonl") if "eval/math/five_jsonl/samples"
             in r]
  assert [r["step"] for r in records] == [0, 2, 3]
  for record in records:
    assert record["eval/math/five_jsonl/samples"] == 3 == record["eval/math/five_jsonl/questions"]
    assert 0 <= record["eval/math/five_jsonl/accuracy"] <= 1
    assert 1 <= record["eval/math/five_jsonl/mean_response_length"] <= 4
    samples = _read_jsonl(f"{workdir}/eval_samples/step_{record['step']:06d}_five_jsonl.jsonl")
    assert [s["id"] for s in samples] == ["q0", "q1", "q2"]
    assert sum(s["correct"] for s in samples) == record["eval/math/five_jsonl/correct"]
  assert "eval/math/five_jsonl/accuracy" in summary["last_eval"]
