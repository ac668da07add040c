"""The episode benchmark's two collections on the tiny model and a scripted host-loop model (the
benchmark itself runs Gemma 3 270M for many minutes)."""

import pytest
import torch

from jaxplay.benchmarks import rollout as rollout_benchmark
from jaxplay.run import configuration, experiment
from tests import stand_ins

BATCH = 4


class _ScriptedModel:
  """`generate` answers every prompt with `answer` (the host loop's stand-in for transformers)."""

  device = torch.device("cpu")

  def __init__(self, answer: str):
    self.answer, self.prompts = answer, []

  def generate(self, input_ids, attention_mask, **options):
    assert options["do_sample"] and options["max_new_tokens"] == 6 and options["top_k"] == 0
    self.prompts.append(input_ids.shape[0])
    return torch.cat([input_ids, torch.ones((input_ids.shape[0], 1), dtype=torch.long)], 1)


class _Tokenizer:
  """Encodes each prompt as its length in one token; decodes any response as `answer`."""

  pad_token_id, padding_side = 0, "right"

  def __init__(self, answer: str):
    self.answer, self.texts = answer, []

  def __call__(self, texts, **options):
    self.texts += texts
    return {"input_ids": torch.tensor([[len(t)] for t in texts]),
            "attention_mask": torch.ones((len(texts), 1), dtype=torch.long)}

  def batch_decode(self, rows, skip_special_tokens):
    return [f"I think so. \\boxed{{{self.answer}}}" for _ in rows]


@pytest.fixture(scope="module")
def tiny_text_run():
  config = stand_ins.tiny_kuhn_config(**{"rollout.mode": "text", "rollout.max_response_len": 6,
                                         "rollout.games_per_batch": BATCH})
  spec = configuration.validate(config)
  call, exp, kit = rollout_benchmark.ours_collection(spec, BATCH)
  return call, exp, kit


@pytest.mark.parametrize("answer, turns", [
    ("check", 2 * BATCH),  # check, check: a showdown after two turns in every game.
    ("raise", BATCH),  # Not an action: every game forfeited at its first turn.
])
def test_the_host_loop_plays_every_live_game_each_turn(tiny_text_run, answer, turns):
  _, exp, kit = tiny_text_run
  model, tokenizer = _ScriptedModel(answer), _Tokenizer(answer)
  generate_seconds = []
  call = rollout_benchmark.host_collection(exp, kit, model, tokenizer, BATCH, 6, generate_seconds)
  assert call() == turns
  assert len(generate_seconds) == 1 and generate_seconds[0] > 0  # Timed around `generate`.
  assert model.prompts == [BATCH] * (turns // BATCH) and tokenizer.padding_side == "left"
  # The prompts are the run's own: the observation of the player to move, in its prompt style.
  assert "You are Player 0 in a game of Kuhn Poker" in tokenizer.texts[0]
  assert all("Please reason step by step" in text for text in tokenizer.texts)


def test_our_collection_counts_the_live_turns_of_its_games(tiny_text_run):
  call, _, _ = tiny_text_run
  turns = call()
  # Every Kuhn game lasts one to three turns (a forfeit ends it at once).
  assert BATCH <= turns <= 3 * BATCH


def test_the_benchmark_config_is_the_local_preset_without_lora_or_an_answer_stop():
  spec = rollout_benchmark.bench_config("tic_tac_toe", 32, 24, 2, "bfloat16")
  assert spec.games == ("tic_tac_toe",) and spec.model.lora_rank == 0
  assert spec.model.dtype == spec.model.param_dtype == "bfloat16"
  assert spec.rollout.games_per_batch == 32 and spec.rollout.max_response_len == 24
  assert spec.rollout.batch_halvings == 1  # The training default: the model's batch halves once.
  assert rollout_benchmark.bench_config("tic_tac_toe", 32, 24, 2, "float32",
                                        3).rollout.batch_halvings == 3
  assert not spec.rollout.int8_logits and not spec.rollout.int8_weights
  int8 = rollout_benchmark.bench_config("tic_tac_toe", 32, 24, 2, "float32", 1, int8_logits=True,
                                        int8_weights=True).rollout
  assert int8.int8_logits and int8.int8_weights
  assert not spec.rollout.stop_at_answer and spec.rollout.max_prompt_len == 0
  assert spec.prompt.examples == 2 and spec.model.path == "gemma3_270m_package"
