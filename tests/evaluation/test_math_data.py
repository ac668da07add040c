"""Math sets through the tfds builder: GSM8K test and AIME 2025 from the package, user JSONL files."""

import importlib.resources
import importlib.util
import json
import pathlib
import sys

import pytest

from jaxplay.evaluation import math_data, math_grader

pytest.importorskip("array_record")

# Official answers, written by hand: GSM8K test questions 1-5, AIME 2025 I and II problems 1-15.
GSM8K_FIRST_ANSWERS = ["18", "3", "70000", "540", "20"]
AIME_2025_ANSWERS = [70, 588, 16, 117, 279, 504, 821, 77, 62, 81, 259, 510, 204, 60, 735,
                     468, 49, 82, 106, 336, 293, 237, 610, 149, 907, 113, 19, 248, 104, 240]


def _package_rows(relative: str) -> list[dict]:
  pytest.importorskip(math_data.PACKAGE)
  path = importlib.resources.files(math_data.PACKAGE) / "data" / relative
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prompt_is_spirals_math_prompt():
  assert math_data.prompt("What is 1+1?") == (
      "Question: What is 1+1?\nPlease reason step by step, and put your final answer within "
      "\\boxed{}.")


def test_gsm8k_first_five_match_the_package_file(data_dir):
  rows = _package_rows("gsm8k/test.jsonl")
  examples = math_data.load("gsm8k", limit=5, data_dir=data_dir)
  assert [e.question for e in examples] == [r["question"] for r in rows[:5]]
  assert [e.answer for e in examples] == GSM8K_FIRST_ANSWERS
  assert examples[0].question.startswith("Janet\u2019s ducks lay 16 eggs per day.")
  assert [e.id for e in examples] == [f"gsm8k-test-{i}" for i in range(1, 6)]


def test_gsm8k_has_all_1319_test_questions_in_file_order(data_dir):
  rows = _package_rows("gsm8k/test.jsonl")
  source = math_data.data_source("gsm8k", data_dir)
  assert len(source) == len(rows) == 1319
  last = source[1318]
  assert last["question"].decode() == rows[-1]["question"]
  assert last["id"].decode() == "gsm8k-test-1319"
  prepared = list((pathlib.Path(data_dir) / "jaxplay_math" / "gsm8k").glob(
      "*/jaxplay_math-test.array_record-*"))
  assert prepared, "array_record files were not written under data_dir"


def test_first_20_gsm8k_references_grade_correct_boxed(data_dir):
  rows = _package_rows("gsm8k/test.jsonl")
  examples = math_data.load("gsm8k", limit=20, data_dir=data_dir)
  for example, row in zip(examples, rows):
    assert math_grader.grade(f"... so \\boxed{{{example.answer}}}.", row["answer"]), example.id
    wrong = int(math_grader.parse_number(example.answer.replace(",", ""))) + 1
    assert not math_grader.grade(f"\\boxed{{{wrong}}}", row["answer"]), example.id


def test_aime2025_has_30_problems_with_official_answers(data_dir):
  examples = math_data.load("aime2025", data_dir=data_dir)
  assert len(examples) == 30
  assert [e.id for e in examples[14:16]] == ["aime2025-I-15", "aime2025-II-1"]
  assert examples[19].answer == "336^\\circ"  # The package keeps the degree sign.
  for example, answer in zip(examples, AIME_2025_ANSWERS):
    assert math_grader.grade(f"\\boxed{{{answer}}}", example.answer), example.id
  assert math_data.load("aime2025", limit=3, data_dir=data_dir) == examples[:3]


def test_user_jsonl(tmp_path, data_dir):
  path = tmp_path / "my set.jsonl"
  rows = [{"question": "1+1?", "answer": "#### 2"},
          {"question": "Half of 1?", "answer": "It is \\boxed{\\frac{1}{2}}.", "id": "half"},
          {"question": "Ten squared?", "answer": 100}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
  examples = math_data.load(f"jsonl:{path}", data_dir=data_dir)
  assert [(e.id, e.question, e.answer) for e in examples] == [
      ("my_set-1", "1+1?", "2"), ("half", "Half of 1?", "\\frac{1}{2}"),
      ("my_set-3", "Ten squared?", "100")]
  assert math_data.load(f"jsonl:{path}", limit=2, data_dir=data_dir) == examples[:2]
  path.write_text(json.dumps({"question": "Changed?", "answer": "7"}) + "\n")
  assert [e.answer for e in math_data.load(f"jsonl:{path}", data_dir=data_dir)] == ["7"]


def test_bad_inputs_name_the_problem(tmp_path, data_dir):
  path = tmp_path / "bad.jsonl"
  path.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n" + json.dumps({"q": 1}))
  with pytest.raises(ValueError, match="bad.jsonl:2"):
    math_data.load(f"jsonl:{path}", data_dir=data_dir)
  with pytest.raises(ValueError, match="Unknown math set"):
    math_data.load("gsm9k", data_dir=data_dir)


def test_works_without_tensorflow(data_dir):
  assert importlib.util.find_spec("tensorflow") is None
  math_data.load("aime2025", limit=1, data_dir=data_dir)
  assert "tensorflow" not in sys.modules
