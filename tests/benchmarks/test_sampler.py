"""The sampler benchmark's arithmetic and timing protocol (the benchmark itself runs minutes)."""

import time

import pytest

from jaxplay import benchmarks
from jaxplay.benchmarks import sampler


def test_decode_rate_counts_the_steps_after_the_prefill():
  # 8 rows, 128 new tokens: 127 decode steps each, in 3.0 s - 0.5 s of prefill.
  assert sampler.decode_rate(8, 128, 0.5, 3.0) == pytest.approx(8 * 127 / 2.5)


def test_first_call_is_timed_apart_and_the_rest_alternate():
  order = []

  def call(name, seconds):
    def run():
      order.append(name)
      time.sleep(seconds if len([n for n in order if n == name]) == 1 else seconds / 10)
    return run

  first, median = benchmarks.first_and_median_seconds([call("a", 0.05), call("b", 0.02)], 3)
  assert order == ["a", "b"] + ["a", "b"] * 3  # Warm-up once each, then alternating rounds.
  assert first[0] >= 0.05 and first[1] >= 0.02
  assert median[0] < first[0] and median[1] < first[1]


def test_rates_by_dtype_are_written_in_one_cell():
  assert benchmarks.by_dtype({"float32": 17.64, "bfloat16": 1234.5}) == (
      "float32 17.6, bfloat16 1,234.5")


def test_side_by_side_rows_name_the_torch_threads_and_repeats(tmp_path, capsys):
  import torch
  cell = benchmarks.torch_machine(3)
  assert cell.startswith(benchmarks.machine()) and cell.endswith(
      f"torch {torch.__version__} ({torch.get_num_threads()} threads), 3 repeats")
  output = tmp_path / "BENCHMARKS.md"
  benchmarks.report("section", ("a", "b"), [(1, 2)], str(output))
  benchmarks.report("section", ("a", "b"), [(3, 4)], "")  # Printed only.
  assert output.read_text().splitlines()[-3:] == ["| a | b |", "| --- | --- |", "| 1 | 2 |"]
  assert capsys.readouterr().out.count("| a | b |") == 2
