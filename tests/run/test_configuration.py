"""Start-up config checks: the shipped configs pass, and each mistake names its field."""

import importlib
import importlib.util
import json
import pathlib

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags
from safetensors.numpy import save_file

import games
from configs import rlvr_arithmetic, spiral, team_zero_one
from games import opponents
from jaxplay import errors
from jaxplay.run import configuration, experiment
from jaxplay.text import prompts
from jaxplay.text import tokenizer as tokenizers
from tests import fixtures_text


def test_local_preset_is_valid():
  configuration.validate(spiral.get_config("local"))


def test_paper_recipe_without_weights_says_where_to_put_them():
  with pytest.raises(configuration.ConfigError, match=r"config.model.path=''.*--config.model.path"):
    configuration.validate(spiral.get_config())


def test_unknown_config_argument():
  with pytest.raises(ValueError, match="valid: 'local'"):
    spiral.get_config("huge")


@pytest.mark.parametrize("field, value, message", [
    ("games", "kuhn_poker,chess", r"config.games=.*unknown game 'chess'; valid: .*tic_tac_toe"),
    ("rl.estimator", "ppo", r"config.rl.estimator='ppo': unknown; valid: rae, grpo"),
    ("rl.aggregation", "sum", r"config.rl.aggregation='sum': unknown; valid: dr_grpo"),
    ("rollout.mode", "beam", r"config.rollout.mode='beam'"),
    ("rollout.seats", "opponent:scripted", r"no opponent 'scripted' for kuhn_poker"),
    ("rollout.seats", "frozen,opponent:random", r"mix only as self_play and one of"),
    ("rollout.seats", "self_play,self_play", r"mix only as self_play and one of"),
    ("rollout.seats", "self_play,tit_for_tat", r"valid: self_play, frozen, population, "
     r"opponent:<name>"),
    ("rollout.seats", "population,frozen", r"mix only as self_play and one of frozen, population"),
    ("rollout.seats", "frozen,opponent:random", r"or as population and opponent:<name>"),
    ("population.size", 0, r"config.population.size=0: must be positive"),
    ("population.snapshot_every", 0, r"config.population.snapshot_every=0: must be positive"),
    ("population.sampling", "elo", r"config.population.sampling='elo': unknown; valid: latest, "
     r"uniform, pfsp_hard, pfsp_variance"),
    ("population.score_decay", 1.0, r"config.population.score_decay=1.0: must be in \[0, 1\)"),
    ("population.dtype", "float16", r"config.population.dtype='float16': unknown; valid: , "
     r"bfloat16, float32"),
    ("rl.micro_batch_size", 5, r"config.rl.micro_batch_size=5: must divide"),
    ("rl.num_minibatches", 0, r"config.rl.num_minibatches=0: must be positive"),
    ("rl.num_minibatches", 3, r"config.rl.num_minibatches=3: must divide "
     r"rollout.samples_per_step=16"),
    ("rl.num_minibatches", 8, r"config.rl.micro_batch_size=4: must divide the 2 rows of a "
     r"mini-batch \(rollout.samples_per_step=16 / rl.num_minibatches=8\)"),
    ("rollout.samples_per_step", 10_000, r"raise games_per_batch"),
    ("optimizer.schedule", "linear", r"config.optimizer.schedule='linear'"),
    ("train.steps", 0, r"config.train.steps=0: must be positive"),
    ("model.path", "/nonexistent/model.gguf", r"config.model.path=.*does not exist"),
    ("eval.heldout_games", "nim,go", r"config.eval.heldout_games='nim,go': unknown game 'go'"),
    ("rl.kl_coef", -0.1, r"config.rl.kl_coef=-0.1: must be >= 0"),
    ("rl.forfeit_credit", "turn", r"config.rl.forfeit_credit='turn': unknown; valid: game, answer"),
    ("rl.kl_reference_decay", 1.5, r"config.rl.kl_reference_decay=1.5: must be in \[0, 1\]"),
    ("eval.kuhn_samples", -1, r"config.eval.kuhn_samples=-1: must be >= 0 \(0 = no estimate"),
    ("eval.transcripts", -1, r"config.eval.transcripts=-1: must be >= 0 \(0 = none"),
    ("eval.math", "gsm9k", r"config.eval.math='gsm9k': unknown math set 'gsm9k'; valid: gsm8k"),
    ("eval.math", "jsonl:/nonexistent.jsonl", r"config.eval.math=.*no file '/nonexistent.jsonl'"),
    ("prompt.examples", -1, r"config.prompt.examples=-1: must be >= 0"),
    ("prompt.instruction", "Answer now.", r"config.prompt.instruction='Answer now.': .*boxed"),
    ("prompt.shared_rules", "tic_tac_toe,chess", r"config.prompt.shared_rules="
     r"'tic_tac_toe,chess': chess is not a game; games of this run with one: kuhn_poker, "
     r"tic_tac_toe \('' for none"),
    ("rollout.temperature", 0.0, r"config.rollout.temperature=0.0: must be > 0 for training: at "
     r"0 the sampler is greedy .*importance ratio explodes \(eval.temperature=0 is greedy"),
    ("rollout.temperature", -1.0, r"config.rollout.temperature=-1.0: must be > 0"),
    ("rollout.top_p", 0.0, r"config.rollout.top_p=0.0: must be in \(0, 1\] \(1 = off\)"),
    ("rollout.top_p", 1.5, r"config.rollout.top_p=1.5: must be in \(0, 1\]"),
    ("rollout.top_k", -1, r"config.rollout.top_k=-1: must be >= 0 \(0 = off\)"),
    ("rollout.batch_halvings", -1, r"config.rollout.batch_halvings=-1: must be >= 0"),
    ("rollout.max_prompt_len", -1,
     r"config.rollout.max_prompt_len=-1: must be >= 0 \(0 = the longest prompt"),
    ("eval.temperature", -0.5, r"config.eval.temperature=-0.5: must be >= 0 \(0 = greedy\)"),
    ("eval.top_p", 0.0, r"config.eval.top_p=0.0: must be in \(0, 1\]"),
    ("eval.top_p", 2.0, r"config.eval.top_p=2.0: must be in \(0, 1\]"),
    ("rl.rae_decay", 5.0, r"config.rl.rae_decay=5.0: must be in \[0, 1\) \(the decay of RAE's"),
    ("rl.rae_decay", 1.0, r"config.rl.rae_decay=1.0: must be in \[0, 1\)"),
    ("rl.rae_decay", -0.1, r"config.rl.rae_decay=-0.1: must be in \[0, 1\)"),
    ("rl.clip_eps", 0.0, r"config.rl.clip_eps=0.0: must be > 0 \(PPO clips the ratio"),
    ("rl.clip_eps", -0.2, r"config.rl.clip_eps=-0.2: must be > 0"),
    ("rl.clip_eps_high", 0.0, r"config.rl.clip_eps_high=0.0: must be > 0"),
    ("rl.dual_clip", 0.5, r"config.rl.dual_clip=0.5: must be 0 \(off\) or > 1"),
    ("rl.dual_clip", -3.0, r"config.rl.dual_clip=-3.0: must be 0 \(off\) or > 1"),
    ("rl.entropy_coef", -0.01, r"config.rl.entropy_coef=-0.01: must be >= 0"),
    ("optimizer.warmup_steps", -1, r"config.optimizer.warmup_steps=-1: must be >= 0"),
    ("optimizer.b1", 1.0, r"config.optimizer.b1=1.0: must be in \[0, 1\) \(Adam's first"),
    ("optimizer.b2", -0.5, r"config.optimizer.b2=-0.5: must be in \[0, 1\) \(Adam's second"),
    ("optimizer.weight_decay", -0.1, r"config.optimizer.weight_decay=-0.1: must be >= 0"),
    ("optimizer.grad_clip", 0.0, r"config.optimizer.grad_clip=0.0: must be > 0 \(gradients are"),
    ("optimizer.learning_rate", 0.0, r"config.optimizer.learning_rate=0.0: must be positive"),
    ("model.vocab_size", -1, r"config.model.vocab_size=-1: must be >= 0"),
    ("model.preset", "gpt2", r"config.model.preset='gpt2': unknown; valid: qwen3_0_6b, .*tiny"),
    ("model.dtype", "float16", r"config.model.dtype='float16': unknown; valid: float32, bfloat16"),
    ("model.param_dtype", "int8", r"config.model.param_dtype='int8': unknown; valid: float32"),
    ("model.chat_format", "alpaca", r"config.model.chat_format='alpaca': unknown; valid: auto"),
    ("invalid_rewards", (-1.0,), r"config.invalid_rewards=\(-1.0,\): must be two rewards"),
    ("eval.invalid_rewards", (1.0, 2.0, 3.0), r"config.eval.invalid_rewards=.*must be two"),
    ("train.wandb_mode", "cloud", r"config.train.wandb_mode='cloud': unknown; valid: offline"),
])
def test_bad_field_is_named(field, value, message):
  config = spiral.get_config("local")
  section, _, name = field.rpartition(".")
  target = config[section] if section else config
  target[name] = value
  with pytest.raises(configuration.ConfigError, match=message) as error:
    configuration.validate(config)
  assert isinstance(error.value, errors.UserError) and "\n" not in str(error.value)


@pytest.mark.parametrize("estimator", configuration.GROUP_ESTIMATORS)
def test_group_estimators_need_groups(estimator):
  config = spiral.get_config("local")
  config.rl.update(estimator=estimator, group_size=1)
  with pytest.raises(configuration.ConfigError, match=rf"config.rl.group_size=1: must be >= 2 for "
                     rf"rl.estimator='{estimator}'.*every update is skipped"):
    configuration.validate(config)
  config.rl.group_size = 2
  configuration.validate(config)


def test_greedy_evaluation_is_allowed_and_cosine_warmup_fits_the_updates():
  config = spiral.get_config("local")
  config.train.update(steps=3, eval_every=3)  # 3 steps of 1 PPO epoch.
  config.eval.temperature = 0.0
  config.optimizer.update(schedule="cosine", warmup_steps=2)
  configuration.validate(config)
  config.optimizer.warmup_steps = 3
  with pytest.raises(configuration.ConfigError, match=r"config.optimizer.warmup_steps=3: must be "
                     r"below the 3 optimizer updates \(train.steps x rl.ppo_epochs\)"):
    configuration.validate(config)


_QWEN3 = dict(model_type="qwen3", vocab_size=16, hidden_size=8, num_hidden_layers=1,
              num_attention_heads=2, intermediate_size=16, rms_norm_eps=1e-6)


def _hf_directory(tmp_path, config_json=json.dumps(_QWEN3), cut=0):
  """A directory with `config_json` and one small safetensors file less its last `cut` bytes."""
  directory = tmp_path / "hf"
  directory.mkdir()
  (directory / "config.json").write_text(config_json)
  weights = directory / "model.safetensors"
  save_file({"w": np.zeros((4, 4), np.float32)}, str(weights))
  weights.write_bytes(weights.read_bytes()[:len(weights.read_bytes()) - cut])
  return directory


def _text_file(tmp_path, name):
  (tmp_path / name).write_text("hello, not weights\n")
  return tmp_path / name


@pytest.mark.parametrize("make, message", [
    (lambda d: _text_file(d, "notes.txt"), r"notes.txt: is neither a .gguf file nor an HF "
     r"checkpoint directory"),
    (lambda d: _text_file(d, "model.gguf"), r"model.gguf: not a GGUF file \(it starts with "
     r"b'hell', not b'GGUF'\)"),
    (lambda d: _hf_directory(d, cut=10), r"model.safetensors: truncated: the file has 126 bytes, "
     r"its tensors need 136\."),
    (lambda d: _hf_directory(d, "{model_type: qwen3"), r"config.json: not valid JSON"),
    (lambda d: _hf_directory(d, json.dumps({**_QWEN3, "model_type": "xyz"})),
     r"config.json: unsupported model_type 'xyz'; expected qwen3, llama or gemma3_text\."),
    (lambda d: _hf_directory(d, json.dumps({"model_type": "qwen3"})),
     r"config.json: has no field 'num_attention_heads'"),
])
def test_bad_model_file_is_refused_at_start_up(tmp_path, make, message):
  config = spiral.get_config("local")
  config.model.path = str(make(tmp_path))
  with pytest.raises(configuration.ConfigError, match=r"config.model.path: .*" + message):
    configuration.validate(config)


def test_model_directory_without_safetensors_is_refused(tmp_path):
  directory = _hf_directory(tmp_path)
  config = spiral.get_config("local")
  config.model.path = str(directory)
  configuration.validate(config)  # The directory is a well-formed checkpoint.
  (directory / "model.safetensors").unlink()
  with pytest.raises(configuration.ConfigError, match=r"hf: has no \*.safetensors files"):
    configuration.validate(config)


def test_game_options_documented_in_the_readme_are_settable_from_the_command_line():
  argv = ["main", "--config=configs/spiral.py:local",
          "--config.game_options.kuhn_poker.rules=False",
          "--config.game_options.kuhn_poker.rounds=3", "--config.game_options.kuhn_poker.payoff=chips"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  config = flag_values.config
  options = config.game_options.kuhn_poker
  assert (options.rules, options.rounds, options.payoff) == (False, 3, "chips")
  configuration.validate(config)
  options.payoff = "sign"
  with pytest.raises(configuration.ConfigError, match="game_options.*payoff must be one of"):
    configuration.validate(config)


@pytest.mark.parametrize("sizes, message", [
    ("kuhn:128", r"config.eval.games_per_seat_by_game='kuhn:128': unknown game 'kuhn'; valid: "),
    ("nim:4,kuhn_poker:0", r"kuhn_poker: must be at least 1 game per seat"),
])
def test_bad_eval_sizes_are_named(sizes, message):
  config = spiral.get_config("local")
  config.eval.games_per_seat_by_game = sizes
  with pytest.raises(configuration.ConfigError, match=message):
    configuration.validate(config)


def test_shared_rules_need_a_rules_paragraph():
  config = spiral.get_config("local")
  config.update(games="kuhn_poker,tic_tac_toe", prompt=dict(shared_rules="kuhn_poker"))
  config.eval.heldout_games = "nim"
  configuration.validate(config)
  config.prompt.shared_rules = "kuhn_poker,connect_four"  # A game not played is kept.
  configuration.validate(config)
  for names, game_options in (("nim", {}), ("kuhn_poker", {"rules": False})):
    config.prompt.shared_rules = names
    config.game_options.kuhn_poker.update(rules=game_options.get("rules", True))
    with pytest.raises(configuration.ConfigError,
                       match=rf"config.prompt.shared_rules='{names}': {names} has no rules "
                             r"paragraph to show \(rules=False, or none in the game\)"):
      configuration.validate(config)


def test_bad_game_option_is_named():
  config = spiral.get_config("local")
  config.game_options.kuhn_poker.cards = 4
  with pytest.raises(configuration.ConfigError, match="game_options.*valid options: invalid_rewards"):
    configuration.validate(config)


def test_model_overrides_are_checked_and_applied():
  from configs import kuhn_nash  # pylint: disable=import-outside-toplevel
  from jaxplay.run import experiment  # pylint: disable=import-outside-toplevel
  config = kuhn_nash.get_config()
  config.model.overrides.num_layers = 3
  model = experiment.model_config(configuration.validate(config))
  assert model.num_layers == 3 and model.vocab_size == config.model.vocab_size
  config.model.overrides.depth = 3
  with pytest.raises(configuration.ConfigError, match=r"model.overrides.depth=3: not a ModelC"):
    configuration.validate(config)
  local = spiral.get_config("local")
  local.model.overrides.num_layers = 3
  with pytest.raises(configuration.ConfigError, match=r"model.overrides=.*only a from-scratch"):
    configuration.validate(local)


def test_math_schedule_and_heldout_options_are_checked(tmp_path):
  config = spiral.get_config("local")
  config.train.update(steps=3, eval_every=3)
  config.eval.heldout_games = "nim,leduc_poker"
  questions = tmp_path / "q.jsonl"
  questions.write_text('{"question": "1 + 1?", "answer": "2"}\n')
  config.eval.update(math=f"jsonl:{questions}", math_every=4)
  with pytest.raises(configuration.ConfigError,
                     match=r"config.eval.math_every=4: must be a multiple of train.eval_every=3"):
    configuration.validate(config)
  config.eval.math_every = 6
  config.game_options.nim = {"piles": (1, 2)}  # Options of a held-out game are allowed.
  spec = configuration.validate(config)
  assert [g.name for g in configuration.make_heldout_games(spec)] == ["nim", "leduc_poker"]
  config.eval.heldout_games = "leduc_poker"
  configuration.validate(config)  # Options of a game the run does not play are kept...
  config.game_options.nim = {"piles": (0,)}
  with pytest.raises(configuration.ConfigError, match=r"config.game_options: .*pile"):
    configuration.validate(config)  # ...and checked.
  config.game_options = {"nmi": {}}
  with pytest.raises(configuration.ConfigError, match=r"game_options.nmi.*unknown game 'nmi'"):
    configuration.validate(config)


def test_heldout_games_that_are_trained_on_are_evaluated_as_training_games():
  config = spiral.get_config("local")
  config.eval.heldout_games = "nim, tic_tac_toe"
  assert configuration.heldout_game_names(configuration.validate(config)) == ("nim",)
  config.eval.heldout_games = ""
  assert configuration.make_heldout_games(configuration.validate(config)) == ()


@pytest.mark.slow
def test_local_preset_prompts_fit_its_max_prompt_len():
  """Training and held-out games under Gemma 3's tokenizer in completion format (issue 8)."""
  config = configuration.validate(spiral.get_config("local"))
  tokenizer = fixtures_text.gemma_tokenizer()
  chat = tokenizers.chat_format(tokenizer, config.model.chat_format)
  game_list = configuration.make_games(config) + configuration.make_heldout_games(config)
  names = config.games + configuration.heldout_game_names(config)
  assert [g.name for g in game_list] == list(names) and "tic_tac_toe" in names
  for game in game_list:
    prompts.prompt_table(game, tokenizer, chat, config.rollout.max_prompt_len)  # Raises if longer.


@pytest.mark.parametrize("mesh, message", [
    (dict(data=3, fsdp=-1), r"config.mesh: mesh data=3 x fsdp=-1 x tensor=1: 8 devices are not "
     r"divisible by 3"),
    (dict(data=2, fsdp=2, tensor=1), r"config.mesh: .* has 4 devices, but there are 8"),
    (dict(data=-1), r"config.rollout.games_per_batch=4: must be a multiple of 8: batches split "
     r"over the mesh's batch axes data=8 x fsdp=1 \(8 devices\)"),
    (dict(data=2, fsdp=2, tensor=2), r"config.rl.micro_batch_size=2: must be a multiple of 4: "
     r".* data=2 x fsdp=2"),
    (dict(data=1, fsdp=2, tensor=4, rules={"batch": "model"}), r"unknown mesh axis 'model'"),
])
def test_mesh_that_does_not_fit_names_the_numbers(mesh, message):
  config = spiral.get_config("local")
  config.rollout.update(samples_per_step=8, games_per_batch=4)
  config.rl.update(micro_batch_size=2, group_size=2)
  config.mesh.update(mesh)
  with pytest.raises(configuration.ConfigError, match=message):
    configuration.validate(config, num_devices=8)
  config.mesh = spiral.get_config("local").mesh
  config.mesh.update(data=1, fsdp=2, tensor=4)  # Batches split in 2: valid.
  configuration.validate(config, num_devices=8)


# Their default is GPU-sized and needs downloaded weights; `:local` runs offline.
NEEDS_WEIGHTS = ("spiral", "rlvr_arithmetic", "iterative_spo")


@pytest.mark.parametrize("name", sorted(
    p.stem for p in (pathlib.Path(__file__).resolve().parents[2] / "configs").glob("*.py")
    if p.stem != "__init__"))
def test_every_shipped_config_validates(name):
  module = importlib.import_module(f"configs.{name}")
  if name in NEEDS_WEIGHTS:
    configuration.validate(module.get_config("local"))
    with pytest.raises(configuration.ConfigError, match=r"config.model.path=''"):
      configuration.validate(module.get_config())
  elif name == "game":  # Takes a game name: every two-player game, and a one-line error.
    for game in games.registered_names():
      if games.make(game).num_players == 2:
        config = module.get_config(game)
        spec = configuration.validate(config)
        assert spec.games == (game,) and spec.rollout.max_prompt_len == 0
        assert spec.eval.opponents == opponents.names(game)
        assert spec.game_options[game].get("rules", False) is False
    for bad in (None, "chess", "arithmetic"):
      with pytest.raises(ValueError, match=r"configs/game.py needs a two-player game.*valid: "
                                           r"connect_four.*tic_tac_toe"):
        module.get_config(bad)
  else:
    configuration.validate(module.get_config())


def test_task_fields_are_checked_by_name():
  config = rlvr_arithmetic.get_config("local")
  spec = configuration.validate(config)
  arithmetic = configuration.make_games(spec)[0]
  assert configuration.task_difficulties(spec, arithmetic) == (1, 2)
  config.eval.task_difficulties = "2,9"  # 9: arithmetic has no such difficulty, skipped.
  assert configuration.task_difficulties(configuration.validate(config), arithmetic) == (2,)
  for field, value, message in [
      ("eval.task_difficulties", "easy", "config.eval.task_difficulties='easy': must be whole"),
      ("rollout.seats", "opponent:random", "tasks \\(arithmetic\\) are played alone"),
      ("rollout.mode", "action_scoring", "tasks \\(arithmetic\\) read free-text answers"),
      ("eval.opponents", "random", "no game has opponent 'random' \\(tasks have none\\)")]:
    bad = rlvr_arithmetic.get_config("local")
    section, name = field.split(".")
    bad[section][name] = value
    with pytest.raises(configuration.ConfigError, match=message):
      configuration.validate(bad)
  bad = rlvr_arithmetic.get_config("local")
  bad.game_options.arithmetic.digits = 7
  with pytest.raises(configuration.ConfigError, match="arithmetic: digits must be 1 to 4"):
    configuration.validate(bad)


def test_the_team_zero_one_config_has_a_cross_play_variant_and_names_bad_ones():
  spec = configuration.validate(team_zero_one.get_config("fxp"))
  assert spec.rollout.seats == ("population",) and spec.population.counters == 4
  assert spec.population.counter_reset and spec.population.counter_sampling == "latest"
  assert spec.population.counter_oracle == "exact" and spec.population.cross_play == 1.0
  with pytest.raises(ValueError, match="team_zero_one.py:psro: unknown variant; valid: "
                                       "self_play, fxp"):
    team_zero_one.get_config("psro")


def test_cross_play_fields_are_checked_by_name():
  config = spiral.get_config()
  config.population.counters = 2
  with pytest.raises(configuration.ConfigError, match="config.population.counters=2: counter "
                                                      "policies play in the population"):
    configuration.validate(config)
  config.rollout.seats = "population"
  config.population.cross_play = 1.5
  with pytest.raises(configuration.ConfigError, match=r"config.population.cross_play=1.5: must "
                                                      r"be in \[0, 1\]"):
    configuration.validate(config)
  config.population.cross_play = 0.5
  config.population.counter_sampling = "pfsp_hard"
  with pytest.raises(configuration.ConfigError, match="config.population.counter_sampling"):
    configuration.validate(config)


def test_the_exact_counter_oracle_is_checked_by_name():
  """population.counter_oracle=exact needs counters, action scoring and games with an exact best
  response; counter_updates >= 1; an unknown oracle is named with the valid ones."""
  assert configuration.validate(team_zero_one.get_config("fxp")).population.counter_oracle == (
      "exact")
  cases = [
      ({"population.counter_oracle": "psro"},
       r"config.population.counter_oracle='psro': unknown; valid: games, exact"),
      ({"population.counter_updates": 0}, r"config.population.counter_updates=0: must be positive"),
      ({"population.counters": 0},
       r"config.population.counter_oracle='exact': needs counter policies"),
      ({"rollout.mode": "text"},
       r"config.population.counter_oracle='exact': needs rollout.mode=action_scoring"),
      ({"games": "team_zero_one,tic_tac_toe"},
       r"config.population.counter_oracle='exact': no exact best response in tic_tac_toe"),
  ]
  for changes, message in cases:
    bad = team_zero_one.get_config("fxp")
    for field, value in changes.items():
      section, _, name = field.rpartition(".")
      (bad[section] if section else bad)[name] = value
    with pytest.raises(configuration.ConfigError, match=message) as error:
      configuration.validate(bad)
    assert "\n" not in str(error.value)


def test_a_seat_mix_splits_each_batch_in_two_halves():
  config = spiral.get_config("local")
  config.rollout.seats = "self_play,opponent:random"
  spec = configuration.validate(config)
  assert spec.rollout.seats == ("self_play", "opponent:random")
  assert configuration.self_play_games(spec) == config.rollout.games_per_batch // 2
  assert configuration.seat_opponent(spec) == "random"
  config.rollout.games_per_batch = 5
  with pytest.raises(configuration.ConfigError,
                     match=r"config.rollout.games_per_batch=5: .* two halves"):
    configuration.validate(config)


def test_wandb_project_without_wandb_says_how_to_install_it(monkeypatch):
  config = spiral.get_config("local")
  config.train.wandb_project = "spiral"
  configuration.validate(config)  # wandb is installed with the test extra.
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "wandb" else find_spec(name, *a))
  with pytest.raises(configuration.ConfigError,
                     match=r"config.train.wandb_project='spiral': wandb is not installed: "
                           r"pip install 'jaxplay\[wandb\]'"):
    configuration.validate(config)


@pytest.mark.parametrize("fields, message", [
    (dict(lora_rank=-1), r"config.model.lora_rank=-1: must be >= 0"),
    (dict(lora_rank=8, lora_alpha=0.0), r"config.model.lora_alpha=0.0: must be > 0"),
    (dict(lora_rank=8, lora_targets="q,qkv"), r"config.model.lora_targets='q,qkv': name one or "
     r"more of q, k, v, o, gate, up, down"),
    (dict(lora_rank=8, lora_targets=""), r"config.model.lora_targets='': name one or more"),
])
def test_bad_lora_fields_are_named(fields, message):
  config = spiral.get_config("local")
  config.model.update(fields)
  with pytest.raises(configuration.ConfigError, match=message):
    configuration.validate(config)


def test_lora_reaches_the_model_config():
  config = spiral.get_config("local")
  config.model.update(lora_rank=8, lora_alpha=32.0, lora_targets="q, v")
  model = experiment.model_config(configuration.validate(config))
  assert (model.lora_rank, model.lora_alpha, model.lora_targets, model.lora_scale) == (
      8, 32.0, ("q", "v"), 4.0)
