"""The train-step benchmark compares the same update on both sides (checked on a tiny Gemma 3 that
transformers writes and both libraries load), and its FLOP count by hand."""

import dataclasses

import numpy as np
import pytest
import torch

from jaxplay import benchmarks
from jaxplay.benchmarks import train_step as bench
from jaxplay.models import loading
from jaxplay.models.configs import ModelConfig
from tests.models import hf_reference as ref


def test_shape_checks_name_the_flag():
  with pytest.raises(ValueError, match="--micro-batch=3 must divide --rows=8"):
    bench.Shape(rows=8, micro_batch=3, prompt_len=4, response_len=2)
  with pytest.raises(ValueError, match="must be >= 1"):
    bench.Shape(rows=8, micro_batch=4, prompt_len=0, response_len=2)


def test_train_flops_are_three_forwards_of_layers_everywhere_and_logits_on_the_response():
  config = ModelConfig(vocab_size=10, d_model=2, num_layers=1, num_heads=1, num_kv_heads=1,
                       head_dim=2, mlp_dim=3)
  shape = bench.Shape(rows=2, micro_batch=1, prompt_len=3, response_len=1)
  # Per token: q, k, v, o: 4 * 2 * 2 = 16 weights; MLP 3 * 2 * 3 = 18; 2 FLOPs each = 68; attention
  # 4 * 1 * 2 * (context (4 + 1) / 2 = 2.5) = 20. Logits at 1 position: 2 * 10 * 2 = 40.
  assert benchmarks.layer_flops_per_token(config, 2.5) == 88
  assert bench.train_flops(config, shape) == 3 * 2 * (4 * 88 + 40)


# bfloat16 is slow-only: PyTorch's bfloat16 autocast runs oneDNN's AMX kernels on CPUs that have
# them, and two full default-suite runs on such a CPU (Intel Xeon, 2026-12-02) later died of a
# segmentation fault inside XLA's compiler in the same process; the benchmark runs it in its own.
@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_both_sides_take_the_same_update(tmp_path, dtype):
  directory = ref.save(ref.make_model("gemma3"), tmp_path)
  config, params = loading.load_hf(directory)
  shape = bench.Shape(rows=4, micro_batch=2, prompt_len=6, response_len=3, learning_rate=1e-2)
  tokens, advantages = bench.random_rows(shape, config.vocab_size)
  old = bench.old_log_probs(config, params, tokens, shape)
  torch.manual_seed(0)
  model = ref.make_model("gemma3")  # The same weights as the saved checkpoint.
  with torch.no_grad():
    theirs = torch.log_softmax(torch.tensor(ref.logits(model, tokens, np.ones_like(tokens))), -1)
  picked = theirs[:, :-1].gather(-1, torch.tensor(tokens[:, 1:], dtype=torch.long)[..., None])
  np.testing.assert_allclose(old[:, shape.prompt_len:], picked[:, shape.prompt_len - 1:, 0],
                             atol=1e-4)

  ours = bench.OurStep(dataclasses.replace(config, dtype=dtype), params, tokens, old, advantages,
                       shape)
  theirs_step = bench.torch_step(model, tokens, old, advantages, shape, dtype)
  ours_norm, torch_norm = float(ours()), theirs_step()
  assert ours_norm > 0
  assert ours_norm == pytest.approx(torch_norm, rel=1e-4 if dtype == "float32" else 3e-2)
  # After one AdamW step of lr 1e-2 both models give the rows the same, new log-probs.
  with torch.no_grad():
    theirs_after = torch.log_softmax(
        torch.tensor(ref.logits(model.eval(), tokens, np.ones_like(tokens))), -1)
  picked_after = theirs_after[:, :-1].gather(
      -1, torch.tensor(tokens[:, 1:], dtype=torch.long)[..., None])[:, shape.prompt_len - 1:, 0]
  ours_after = bench.old_log_probs(config, ours.state.params, tokens, shape)[:, shape.prompt_len:]
  moved = np.abs(ours_after - old[:, shape.prompt_len:]).max()
  assert moved > 1e-2
  np.testing.assert_allclose(ours_after, picked_after, atol=moved / 20)


def test_profile_rows_give_each_sides_shares(tmp_path):
  directory = ref.save(ref.make_model("gemma3"), tmp_path)
  config, params = loading.load_hf(directory)
  shape = bench.Shape(rows=2, micro_batch=1, prompt_len=6, response_len=3)
  tokens, advantages = bench.random_rows(shape, config.vocab_size)
  old = bench.old_log_probs(config, params, tokens, shape)
  calls = {("ours", "float32"): bench.OurStep(config, params, tokens, old, advantages, shape),
           ("PyTorch", "float32"): bench.torch_step(ref.make_model("gemma3"), tokens, old,
                                                    advantages, shape, "float32")}
  output = tmp_path / "BENCHMARKS.md"
  rows = bench.profile_rows(calls, shape, str(output))
  assert [row[3:5] for row in rows] == [("ours", "float32"), ("PyTorch", "float32")]
  for row in rows:
    shares = [float(cell) for cell in row[5:8]]
    assert sum(shares) == pytest.approx(100, abs=2)  # Rounded to whole percents.
    assert 0 < float(row[8]) < 100  # Both passes ran.
  assert f"## {bench.PROFILE_SECTION}" in output.read_text()
