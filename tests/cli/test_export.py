"""HF export: transformers loads the exported directory and gives our logits on the same params;
loading the export back gives the params bit for bit."""

import dataclasses
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from jaxplay import errors  # noqa: E402
from jaxplay.cli import export  # noqa: E402
from jaxplay.models import configs  # noqa: E402
from jaxplay.models import loading  # noqa: E402
from jaxplay.models import transformer  # noqa: E402
from jaxplay.run import store
from tests.models import hf_reference as ref  # noqa: E402

TOL = 1e-4


def _perturb(params, seed):
  """Adds noise to every param, so a passing test cannot come from copying the source files."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [x + 0.03 * jax.random.normal(k, x.shape, x.dtype)
                                      for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module", params=sorted(ref.ARCHS))
def exported(request, tmp_path_factory):
  source = ref.save(ref.make_model(request.param), tmp_path_factory.mktemp("source"))
  config, params = loading.load_hf(source)
  params = _perturb(params, seed=len(request.param))
  out = export.export_hf(config, params, tmp_path_factory.mktemp("export"))
  return request.param, config, params, out


def test_transformers_logits_match(exported):
  arch, config, params, out = exported
  model = transformers.AutoModelForCausalLM.from_pretrained(
      out, dtype=torch.float32, trust_remote_code=False, local_files_only=True,
      attn_implementation="eager").eval()
  assert model.config.model_type == {"gemma3": "gemma3_text"}.get(arch, arch)
  tokens, mask = ref.left_padded_batch([10, 7, 1], 10, config.vocab_size, seed=2)
  expected = ref.logits(model, tokens, mask)
  logits, _ = transformer.apply(config, params, jnp.asarray(tokens),
                                jnp.asarray(ref.positions(mask)))
  diff = np.abs(np.asarray(logits) - expected)[mask > 0]
  print(f"{arch}: max |logits diff| = {diff.max():.2e}")
  assert diff.max() <= TOL, diff.max()


def test_round_trip_is_exact(exported):
  _, config, params, out = exported
  config_back, params_back = loading.load_hf(out)
  assert config_back == config
  assert jax.tree.structure(params_back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_back)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bfloat16_round_trip(exported, tmp_path):
  _, config, params, _ = exported
  config = dataclasses.replace(config, param_dtype="bfloat16")
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  out = export.export_hf(config, params, tmp_path)
  assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
  config_back, params_back = loading.load_hf(out, param_dtype="bfloat16")
  assert config_back == config
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_back)):
    assert b.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unsupported_config_is_refused():
  with pytest.raises(ValueError, match="attn_softcap"):
    export.model_type(configs.gemma3_270m(attn_softcap=50.0))
  with pytest.raises(ValueError, match="none of"):
    export.model_type(configs.tiny(activation="gelu_tanh"))


def test_export_run_writes_tokenizer(tmp_path, monkeypatch):
  """The CLI path: the latest checkpoint of a run and its tokenizer (load_run stubbed)."""
  from tests import fixtures_text  # pylint: disable=import-outside-toplevel
  tokenizer = fixtures_text.bpe_tokenizer()
  config = configs.tiny(vocab_size=len(tokenizer))
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), transformer.param_shapes(config))
  exp = type("Exp", (), {"model": config, "tokenizer": tokenizer})()
  state = type("State", (), {"params": params})()
  monkeypatch.setattr(store, "load_run", lambda workdir, mesh: (None, exp, state, 7))
  out, step = export.export_run("unused", str(tmp_path / "out"))
  assert step == 7
  back = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
  text = "You are playing Kuhn Poker. \\boxed{bet}"
  assert back(text)["input_ids"] == tokenizer(text)["input_ids"]
  assert json.loads((tmp_path / "out" / "config.json").read_text())["eos_token_id"] == (
      tokenizer.eos_token_id)


def test_export_run_of_a_lora_run_merges_or_writes_peft(tmp_path, monkeypatch):
  """A LoRA run exports merged (an HF model equal to the adapted one, no adapter tensors) or as
  a PEFT adapter directory with the tokenizer; another --lora value is a one-line error."""
  from tests import fixtures_text  # pylint: disable=import-outside-toplevel
  tokenizer = fixtures_text.bpe_tokenizer()
  config = configs.tiny(vocab_size=len(tokenizer), lora_rank=2, lora_targets=("q", "up"))
  params = transformer.with_adapters(config, transformer.init_params(
      dataclasses.replace(config, lora_rank=0, lora_targets=()), jax.random.key(0)),
      jax.random.key(1))
  exp = type("Exp", (), {"model": config, "tokenizer": tokenizer})()
  state = type("State", (), {"params": params})()
  run_config = type("Config", (), {"model": type("Model", (), {"path": "base_dir"})()})()
  monkeypatch.setattr(store, "load_run", lambda workdir, mesh: (run_config, exp, state, 3))
  merged, _ = export.export_run("unused", str(tmp_path / "merged"))
  _, merged_params = loading.load_hf(merged)
  want = transformer.merge_adapters(config, params)[1]
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(merged_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  adapter, _ = export.export_run("unused", str(tmp_path / "peft"), lora="peft")
  adapter_config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
  assert (adapter_config["r"], adapter_config["target_modules"],
          adapter_config["base_model_name_or_path"]) == (2, ["q_proj", "up_proj"], "base_dir")
  assert os.path.exists(os.path.join(adapter, "tokenizer.json"))
  with pytest.raises(errors.UserError, match="--lora=both: unknown; valid: merged, peft"):
    export.export_run("unused", str(tmp_path / "x"), lora="both")
