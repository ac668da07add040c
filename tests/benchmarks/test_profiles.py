"""The profiles sort each library's op time by kind: a matmul program is mostly matmuls, a transpose
program mostly layout changes, and a gradient's transposed ops are its backward pass."""

import jax
import jax.numpy as jnp
import pytest
import torch

from jaxplay.benchmarks import profiles


def _kinds_of(function, *args):
  return profiles.hlo_kinds(jax.jit(function).lower(*args).compile().as_text())


def test_hlo_kinds_name_matmuls_layout_changes_and_the_backward_pass():
  a = jnp.ones((64, 32))
  kinds = _kinds_of(lambda a, b: a @ b, a, a.T)
  assert ("matmuls", False) in kinds.values()
  assert "layout changes" not in {kind for kind, _ in kinds.values()}
  kinds = _kinds_of(lambda a: jnp.tanh(a).T + 1.0, a)
  assert {kind for kind, _ in kinds.values()} <= {"layout changes", "other"}
  assert "matmuls" not in {kind for kind, _ in kinds.values()}
  grad = jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w)))
  kinds = _kinds_of(grad, jnp.ones((32, 16)), a)
  assert ("matmuls", True) in kinds.values()  # The gradient's dot is autodiff's transpose.


@pytest.mark.parametrize("size, kind", [(512, "matmuls"), (2048, "other")])
def test_xla_shares_sum_to_one_and_find_the_work(size, kind):
  x = jnp.ones((size, size))
  program = (jax.jit(lambda x: x @ x) if kind == "matmuls" else
             jax.jit(lambda x: jnp.exp(jnp.sin(x) * jnp.cos(x))))
  program(x).block_until_ready()
  shares, backward = profiles.xla_shares(lambda: program(x), program.lower(x).compile().as_text())
  assert set(shares) == set(profiles.KINDS)
  assert sum(shares.values()) == pytest.approx(1.0)
  assert shares[kind] > 0.5
  assert backward == 0.0


def test_xla_shares_refuse_a_trace_of_another_program():
  x = jnp.ones((64, 64))
  traced = jax.jit(lambda x: x @ x)
  traced(x).block_until_ready()
  with pytest.raises(RuntimeError, match="holds no op of the program"):
    profiles.xla_shares(lambda: traced(x), "HloModule empty\n")


def test_torch_shares_find_matmuls_and_the_backward_pass():
  w = torch.randn(1024, 1024, requires_grad=True)
  x = torch.randn(1024, 1024)

  def step():
    (x @ w).sum().backward()
  step()  # Warm, as the benchmark profiles a warm step.
  shares, backward = profiles.torch_shares(step)
  assert sum(shares.values()) == pytest.approx(1.0)
  # One matmul forward, one (the weight's gradient) backward; in a busy process the shares move,
  # so only that both kinds and both passes are found is checked.
  assert shares["matmuls"] > 0.1
  assert 0.0 < backward < 1.0
