"""Start-up config checks: the shipped configs pass, and each mistake names its field."""

import pytest

from configs import spiral
from jaxplay import configuration


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
    ("rollout.seats", "opponent:optimal", r"no opponent 'optimal' for simple_negotiation"),
    ("rl.micro_batch_size", 5, r"config.rl.micro_batch_size=5: must divide"),
    ("rollout.samples_per_step", 10_000, r"raise games_per_batch"),
    ("optimizer.schedule", "linear", r"config.optimizer.schedule='linear'"),
    ("train.steps", 0, r"config.train.steps=0: must be positive"),
    ("model.path", "/nonexistent/model.gguf", r"config.model.path=.*does not exist"),
])
def test_bad_field_is_named(field, value, message):
  config = spiral.get_config("local")
  section, _, name = field.rpartition(".")
  target = config[section] if section else config
  target[name] = value
  with pytest.raises(configuration.ConfigError, match=message):
    configuration.validate(config)


def test_bad_game_option_is_named():
  config = spiral.get_config("local")
  config.game_options.kuhn_poker.cards = 4
  with pytest.raises(configuration.ConfigError, match="game_options.*valid options: invalid_rewards"):
    configuration.validate(config)


def test_model_overrides_are_checked_and_applied():
  from configs import kuhn_nash  # pylint: disable=import-outside-toplevel
  from jaxplay import experiment  # pylint: disable=import-outside-toplevel
  config = kuhn_nash.get_config()
  config.model.overrides.num_layers = 3
  configuration.validate(config)
  model = experiment.model_config(config)
  assert model.num_layers == 3 and model.vocab_size == config.model.vocab_size
  config.model.overrides.depth = 3
  with pytest.raises(configuration.ConfigError, match=r"model.overrides.depth=3: not a ModelC"):
    configuration.validate(config)
  local = spiral.get_config("local")
  local.model.overrides.num_layers = 3
  with pytest.raises(configuration.ConfigError, match=r"model.overrides=.*only a from-scratch"):
    configuration.validate(local)
