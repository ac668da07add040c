"""The sampler benchmark's arithmetic and timing protocol (the benchmark itself runs minutes)."""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplay import benchmarks
from jaxplay.benchmarks import sampler
from jaxplay.models import configs, transformer
from jaxplay.models.configs import ModelConfig


def test_decode_rate_counts_the_steps_after_the_prefill():
  # 8 rows, 128 new tokens: 127 decode steps each, in 3.0 s - 0.5 s of prefill.
  assert sampler.decode_rate(8, 128, 0.5, 3.0) == pytest.approx(8 * 127 / 2.5)


def test_the_roofline_is_the_slower_of_the_matmul_peak_and_the_memory_reads():
  # 1 row: 1 GFLOP at 100 GFLOP/s takes 0.01 s; 2 GB at 20 GB/s takes 0.1 s: memory binds.
  assert benchmarks.roofline_rate(1, 1e9, 2e9, 100e9, 20e9) == (pytest.approx(10.0), "memory")
  # 64 rows: 0.64 s of matmuls against the same 0.1 s of reads: the matmul peak binds.
  assert benchmarks.roofline_rate(64, 1e9, 2e9, 100e9, 20e9) == (pytest.approx(100.0), "matmul")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_matmul_peak_is_timed_in_the_dtype_asked(dtype, monkeypatch):
  """The peak that a bfloat16 rate is compared with is a bfloat16 matmul's (run as the model's
  `transformer.dot`), not float32's."""
  timed = []

  def one_second_each(calls, repeats):
    timed.extend(call() for call in calls)
    return [1.0] * len(calls)

  monkeypatch.setattr(benchmarks, "median_seconds", one_second_each)
  assert benchmarks.matmul_flops_per_second(dtype, n=8) == 2 * 8 ** 3
  [out] = timed
  assert out.shape == (8, 8) and out.dtype == jnp.dtype(dtype)


def test_a_decode_step_reads_every_weight_once_and_each_rows_cache():
  config = ModelConfig(vocab_size=16, d_model=8, num_layers=3, num_heads=2, num_kv_heads=1,
                       head_dim=4, mlp_dim=8)
  # Per row and position: 3 layers x (key + value) x 1 head x 4 dims x 2 bytes = 48 bytes.
  assert benchmarks.decode_bytes_per_step(1000, config, 5, 10, 2) == 1000 + 5 * 10 * 48


def test_the_memory_bandwidth_is_a_plausible_rate():
  assert 1e8 < benchmarks.memory_bytes_per_second(megabytes=64, repeats=2) < 1e13


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_logits_of_a_decode_step_are_timed_alone(dtype):
  seconds = []
  for vocab_size in (256, 2 ** 16):
    config = configs.tiny(dtype=dtype, param_dtype=dtype, vocab_size=vocab_size)
    params = transformer.init_params(config, jax.random.key(0))
    seconds.append(sampler.logits_seconds(config, params, 1, 3))
  assert 0 < seconds[0] < seconds[1]  # The dot over a 256x larger vocabulary takes longer.


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


def test_the_peer_runs_every_dtype_unless_told_its_own():
  parser = argparse.ArgumentParser()
  benchmarks.add_side_by_side_flags(parser)
  args = benchmarks.parse_side_by_side(parser, [])
  assert args.dtypes == args.peer_dtypes == ("float32", "bfloat16")
  args = benchmarks.parse_side_by_side(parser, ["--dtypes", "float32"])
  assert args.dtypes == ["float32"] and args.peer_dtypes == ("float32", "bfloat16")
  args = benchmarks.parse_side_by_side(parser, ["--dtypes", "bfloat16", "--peer-dtypes", "float32"])
  assert args.dtypes == ["bfloat16"] and args.peer_dtypes == ("float32",)


def test_int8_flags_add_runs_of_each_dtype():
  assert benchmarks.our_variants(("float32", "bfloat16"), False) == {
      "float32": ("float32", {}), "bfloat16": ("bfloat16", {})}
  assert list(benchmarks.our_variants(("float32",), True).items()) == [
      ("float32", ("float32", {})), ("float32 int8 logits", ("float32", dict(int8_logits=True)))]
  assert list(benchmarks.our_variants(("float32",), False, True)) == [
      "float32", "float32 int8 weights"]
  both = benchmarks.our_variants(("float32", "bfloat16"), True, True)
  assert list(both)[-2:] == ["float32 int8 weights, logits", "bfloat16 int8 weights, logits"]
  assert both["bfloat16 int8 weights, logits"] == (
      "bfloat16", dict(int8_logits=True, int8_weights=True))
  assert len(both) == 8


def test_rates_by_dtype_are_written_in_one_cell():
  assert benchmarks.by_dtype({"float32": 17.64, "bfloat16": 1234.5}) == (
      "float32 17.6, bfloat16 1,234.5")
  assert benchmarks.by_dtype({"float32": 1.436, "bfloat16": -2.5}) == "float32 1.44, bfloat16 -2.50"


def test_side_by_side_rows_name_the_torch_threads_and_repeats(tmp_path, capsys):
  import torch
  cell = benchmarks.torch_machine(3)
  assert cell.startswith(benchmarks.machine()) and cell.endswith(
      f"torch {torch.__version__} ({torch.get_num_threads()} threads), 3 repeats")
  assert benchmarks.torch_machine() == cell.removesuffix(", 3 repeats")  # A row without repeats.
  output = tmp_path / "BENCHMARKS.md"
  benchmarks.report("section", ("a", "b"), [(1, 2)], str(output))
  benchmarks.report("section", ("a", "b"), [(3, 4)], "")  # Printed only.
  assert output.read_text().splitlines()[-3:] == ["| a | b |", "| --- | --- |", "| 1 | 2 |"]
  assert capsys.readouterr().out.count("| a | b |") == 2


def test_both_sides_sample_the_whole_vocabulary_at_a_temperature(tmp_path):
  """--temperature 1: each side draws from all 97 tokens of a tiny near-uniform Gemma 3, not
  transformers' default top 50 (some drawn tokens rank 60th or lower under the logits that drew
  them), every row to the full length; at 0 both decode greedily alike."""
  import torch
  from jaxplay.models import loading
  from tests.models import hf_reference as ref
  hf_model = ref.make_model("gemma3", seed=0)
  config, params = loading.load_hf(ref.save(hf_model, tmp_path))
  prompts = np.random.default_rng(0).integers(1, config.vocab_size, (8, 5)).astype(np.int32)
  ours = np.asarray(sampler.ours_call(config, params, prompts, 32, temperature=1.0)().tokens)
  theirs = sampler.transformers_call(hf_model, prompts, 32, temperature=1.0)()[:, 5:]
  for tokens in (ours, theirs):
    assert tokens.shape == (8, 32)
    with torch.no_grad():
      logits = hf_model(torch.tensor(np.concatenate([prompts, tokens], 1))).logits[:, 4:-1]
    ranks = (logits > logits.gather(-1, torch.tensor(tokens)[..., None])).sum(-1)
    assert int(ranks.max()) >= 60  # Top 50, give or take the end token min_new_tokens bans.
  greedy_ours = sampler.ours_call(config, params, prompts, 8)().tokens
  greedy_theirs = sampler.transformers_call(hf_model, prompts, 8)()[:, 5:]
  np.testing.assert_array_equal(greedy_ours, greedy_theirs)
