"""The typed run spec: built from a ConfigDict or a config.json record, errors naming the field."""

import json

import pytest

from configs import game_mix, kuhn_nash, spiral, tic_tac_toe_random
from jaxplay.run import configuration, spec

SHIPPED = {"spiral": spiral.get_config, "spiral:local": lambda: spiral.get_config("local"),
           "kuhn_nash": kuhn_nash.get_config, "game_mix": game_mix.get_config,
           "tic_tac_toe_random": tic_tac_toe_random.get_config}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_config_round_trips_through_its_record(name):
  """The record (config.json) is the ConfigDict's own JSON, and reads back to the same spec, so
  runs recorded before the spec existed resume."""
  config = SHIPPED[name]()
  built = spec.from_mapping(config)
  record = spec.as_record(built)
  assert record == json.loads(config.to_json_best_effort(sort_keys=True))
  assert spec.from_mapping(json.loads(json.dumps(record))) == built


def test_names_become_tuples_and_tables_dicts():
  config = spiral.get_config("local")
  config.rollout.seats = "self_play, opponent:random"
  config.eval.heldout_games = ""
  built = spec.from_mapping(config)
  assert built.games == ("kuhn_poker", "tic_tac_toe")
  assert built.rollout.seats == ("self_play", "opponent:random")
  assert built.eval.heldout_games == ()
  assert built.game_options == {"kuhn_poker": {"rounds": 1, "rules": True, "payoff": "win"}}
  assert built.invalid_rewards == (-1.5, 0.5) and built.mesh.rules == {}
  assert built.model.lora_targets == ("q", "k", "v", "o", "gate", "up", "down")


def test_name_count_lists_become_dicts_and_read_back():
  config = spiral.get_config("local")
  assert spec.from_mapping(config).eval.games_per_seat_by_game == {"tic_tac_toe": 16}
  config.eval.games_per_seat_by_game = ""
  assert spec.from_mapping(config).eval.games_per_seat_by_game == {}
  config.eval.games_per_seat_by_game = " kuhn_poker:128, tic_tac_toe:16 "
  built = spec.from_mapping(config)
  assert built.eval.games_per_seat_by_game == {"kuhn_poker": 128, "tic_tac_toe": 16}
  record = spec.as_record(built)
  assert record["eval"]["games_per_seat_by_game"] == "kuhn_poker:128,tic_tac_toe:16"
  assert spec.from_mapping(record) == built
  assert configuration.eval_games_per_seat(built, "kuhn_poker") == 128
  assert configuration.eval_games_per_seat(built, "nim") == built.eval.games_per_seat


def test_replace_changes_fields_of_sections():
  built = spec.from_mapping(spiral.get_config("local"))
  changed = built.replace(rollout=dict(temperature=0.5), seed=3)
  assert (changed.rollout.temperature, changed.seed) == (0.5, 3)
  assert changed.rollout.top_p == built.rollout.top_p and built.rollout.temperature == 1.0


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["rollout"].pop("stop_at_answer"),
     r"config.rollout.stop_at_answer: missing \(a config or config.json written before"),
    (lambda r: r["rl"].update(clip_epsilon=0.2), r"config.rl.clip_epsilon: no such field; valid: "),
    (lambda r: r["rollout"].update(samples_per_step="16"),
     r"config.rollout.samples_per_step: '16' must be of type int"),
    (lambda r: r["rollout"].update(samples_per_step=True),
     r"config.rollout.samples_per_step: True must be of type int"),
    (lambda r: r.update(invalid_rewards=["a", 1]), r"config.invalid_rewards: .* numbers"),
    (lambda r: r.update(games=3), r"config.games: 3 must be comma-separated names"),
    (lambda r: r.update(eval=1), r"config.eval: 1 must be a section of fields"),
    (lambda r: r["eval"].update(games_per_seat_by_game="kuhn_poker=128"),
     r"config.eval.games_per_seat_by_game: 'kuhn_poker=128' must be name:count pairs"),
    (lambda r: r["eval"].update(games_per_seat_by_game="nim:2,nim:3"), r"each name once"),
    (lambda r: r["eval"].update(games_per_seat_by_game="nim:many"), r"must be name:count pairs"),
])
def test_a_bad_record_names_its_field(edit, message):
  record = spec.as_record(spec.from_mapping(spiral.get_config("local")))
  edit(record)
  with pytest.raises(spec.SpecError, match=message):
    spec.from_mapping(record)
  with pytest.raises(configuration.ConfigError, match=message):  # The same through validate.
    configuration.validate(record)


def test_a_record_older_than_a_field_with_a_default_loads_with_that_default():
  record = spec.as_record(spec.from_mapping(spiral.get_config("local")))
  assert record["rl"].pop("forfeit_credit") == "answer"  # The local preset's.
  assert spec.from_mapping(record).rl.forfeit_credit == "game"  # RLSpec's default.
  del record["eval"]["games_per_seat_by_game"]
  assert spec.from_mapping(record).eval.games_per_seat_by_game == {}
  assert record["prompt"].pop("shared_rules") == "tic_tac_toe"  # The local preset's.
  assert spec.from_mapping(record).prompt.shared_rules == ()  # SPIRAL's layout.


def test_ints_are_accepted_where_floats_are_expected():
  record = spec.as_record(spec.from_mapping(spiral.get_config("local")))
  record["optimizer"]["learning_rate"] = 1
  assert spec.from_mapping(record).optimizer.learning_rate == 1.0
