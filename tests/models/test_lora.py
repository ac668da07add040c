"""LoRA adapters: the model starts exactly at its base, adapters equal their merged weights, and
both export formats (merged HF model, PEFT adapter directory) give our logits in transformers."""

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import peft  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from jaxplay.cli import export  # noqa: E402
from jaxplay.models import configs  # noqa: E402
from jaxplay.models import loading  # noqa: E402
from jaxplay.models import transformer  # noqa: E402
from tests.models import hf_reference as ref  # noqa: E402

TOL = 1e-4
ALL = configs.LORA_TARGETS


def _perturb_adapters(params, seed):
  """Noise on every LoRA factor (B starts at 0), so the adapters change the function."""
  keys = iter(jax.random.split(jax.random.key(seed), 64))
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.05 * jax.random.normal(next(keys), x.shape, x.dtype)
      if transformer.is_adapter(path) else x, params)


def _batch(config):
  tokens, mask = ref.left_padded_batch([9, 6, 1], 9, config.vocab_size, seed=3)
  return tokens, mask, jnp.asarray(ref.positions(mask))


def test_fresh_adapters_leave_the_function_unchanged_and_merge_exactly():
  base = configs.tiny()
  params = transformer.init_params(base, jax.random.key(0))
  lora = dataclasses.replace(base, lora_rank=4, lora_alpha=8.0, lora_targets=ALL)
  with_lora = transformer.with_adapters(lora, params, jax.random.key(1))
  adapters = [p for p, _ in jax.tree_util.tree_leaves_with_path(with_lora)
              if transformer.is_adapter(p)]
  assert len(adapters) == 2 * len(ALL)
  assert with_lora["layers"]["attn"]["o_lora_a"].shape == (2, 4, 16, 4)  # [L, H, D, r]
  assert with_lora["layers"]["attn"]["o_lora_b"].shape == (2, 4, 64)  # [L, r, E]
  tokens, _, positions = _batch(base)
  plain, _ = transformer.apply(base, params, jnp.asarray(tokens), positions)
  fresh, _ = transformer.apply(lora, with_lora, jnp.asarray(tokens), positions)
  np.testing.assert_array_equal(np.asarray(fresh), np.asarray(plain))

  trained = _perturb_adapters(with_lora, seed=2)
  adapted, _ = transformer.apply(lora, trained, jnp.asarray(tokens), positions)
  merged_config, merged = transformer.merge_adapters(lora, trained)
  assert merged_config == base
  assert jax.tree.structure(merged) == jax.tree.structure(params)
  merged_logits, _ = transformer.apply(merged_config, merged, jnp.asarray(tokens), positions)
  assert np.abs(np.asarray(adapted) - np.asarray(plain)).max() > 1e-2  # The adapters matter.
  np.testing.assert_allclose(np.asarray(adapted), np.asarray(merged_logits), atol=1e-4)


def test_adapter_axes_leave_the_rank_unsharded():
  lora = configs.tiny(lora_rank=4, lora_targets=("q", "down"))
  axes = transformer.param_axes(lora)["layers"]
  assert tuple(axes["attn"]["q_lora_a"]) == ("layers", "embed", None)
  assert tuple(axes["attn"]["q_lora_b"]) == ("layers", None, "heads", "head_dim")
  assert tuple(axes["mlp"]["down_lora_b"]) == ("layers", None, "embed")
  assert "k_lora_a" not in axes["attn"]


@pytest.mark.parametrize("message, fields", [
    ("lora_targets \\['qkv'\\] unknown", dict(lora_rank=2, lora_targets=("qkv",))),
    ("needs lora_targets", dict(lora_rank=2)),
    ("lora_rank=-1", dict(lora_rank=-1, lora_targets=("q",))),
])
def test_bad_lora_fields_are_refused(message, fields):
  with pytest.raises(ValueError, match=message):
    configs.tiny(**fields)


@pytest.mark.parametrize("arch", sorted(ref.ARCHS))
def test_peft_and_merged_exports_give_our_logits_in_transformers(arch, tmp_path):
  source = ref.save(ref.make_model(arch), tmp_path / "source")
  base, params = loading.load_hf(source)
  lora = dataclasses.replace(base, lora_rank=3, lora_alpha=6.0, lora_targets=ALL)
  params = _perturb_adapters(transformer.with_adapters(lora, params, jax.random.key(0)), 1)
  tokens, mask, positions = _batch(base)
  ours = np.asarray(transformer.apply(lora, params, jnp.asarray(tokens), positions)[0])

  load = lambda path: transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=torch.float32, local_files_only=True, attn_implementation="eager").eval()
  base_params = jax.tree_util.tree_map_with_path(
      lambda p, x: None if transformer.is_adapter(p) else x, params)
  base_dir = export.export_hf(base, base_params, tmp_path / "base")
  adapter_dir = export.export_peft(lora, params, tmp_path / "adapter", base_model=base_dir)
  with_peft = peft.PeftModel.from_pretrained(load(base_dir), adapter_dir).eval()
  merged_dir = export.export_hf(*transformer.merge_adapters(lora, params), tmp_path / "merged")
  for model in (with_peft, load(merged_dir)):
    diff = np.abs(ref.logits(model, tokens, mask) - ours)[mask > 0]
    assert diff.max() <= TOL, diff.max()
