"""experiment.build's held-out games under a run's tokenizer, the Evaluator over them, and the
rollout statistics of collect."""

import dataclasses

import jax
import numpy as np
import pytest

import games
from configs import kuhn_nash
from games import exploitability, opponents
from jaxplay.evaluation import matches, ratings
from jaxplay.rl import policies
from jaxplay.run import checkpoints, configuration, evaluator, experiment, store
from jaxplay.text import answers, prompts
from jaxplay.text import tokenizer as tokenizers
from tests import stand_ins


def _text_config(heldout_games):
  """configs/kuhn_nash.py in free-text mode, small; its Kuhn-only BPE takes ~380 tokens for Nim."""
  config = kuhn_nash.get_config()
  config.rollout.update(mode="text", max_prompt_len=384, max_response_len=6)
  config.eval.update(heldout_games=heldout_games, games_per_seat=2, kuhn_samples=3)
  return config


def _build(config):
  config = configuration.validate(config)
  model, params, tokenizer = experiment.load_model_and_tokenizer(config, jax.random.key(0))
  return experiment.build(config, tokenizer, model), params


@pytest.fixture(scope="module")
def text_run():
  config = _text_config("nim,kuhn_poker")
  config.eval.games_per_seat_by_game = "nim:3"
  return _build(config)


@pytest.mark.parametrize("num_games, count, rows", [
    (8, 2, [0, 7]), (8, 3, [0, 4, 7]), (8, 1, [0]), (8, 0, []), (4, 6, [0, 1, 2, 3])])
def test_transcript_rows_spread_over_the_games(num_games, count, rows):
  assert evaluator.transcript_rows(num_games, count) == rows


def test_heldout_kits_leave_out_training_games(text_run):
  exp, _ = text_run
  assert [k.game.name for k in exp.kits] == ["kuhn_poker"]
  assert [k.game.name for k in exp.heldout_kits] == ["nim"]
  nim = exp.heldout_kits[0]
  bound = prompts.prompt_table(nim.game, exp.tokenizer, exp.chat).max_prompt_len
  assert nim.prompts.max_prompt_len == min(-(-bound // 8) * 8, 384)  # Fit to Nim's own bound.


def test_evaluator_plays_heldout_games_and_estimates_kuhn_exploitability(text_run):
  exp, params = text_run
  results, transcripts = evaluator.Evaluator(exp, store.decoder(exp))(params, jax.random.key(1))
  # A random model never writes a boxed answer in 6 tokens: every answer is invalid, so the
  # learner forfeits every game, in both seats, and each information set of the exploitability
  # estimate falls back to uniform play. Kuhn plays eval.games_per_seat (2) games in each seat,
  # Nim its eval.games_per_seat_by_game entry (3).
  for game, games_played in (("kuhn_poker", 4), ("nim", 6)):
    for opponent in ("random", "optimal"):
      prefix = f"eval/{game}/{opponent}/"
      assert results[prefix + "games"] == games_played
      assert results[prefix + "invalid_rate"] == 1.0 == results[prefix + "loss_rate"]
      assert results[prefix + "win_rate_seat0"] == 0.0 == results[prefix + "win_rate_seat1"]
      # All games lost: the fit's prior bounds the Elo below the opponent's 0.
      assert results[prefix + "elo"] == pytest.approx(ratings.elo_against(0.0, games_played))
      assert results[prefix + "elo"] < -300
  # eval.transcripts (2) games per game and opponent, one in each seat.
  assert len(transcripts) == 8 and "=== nim: learner" in transcripts[4]
  assert [t.split("\n")[0].split("(")[1][:8] for t in transcripts[:2]] == ["player 0", "player 1"]
  assert results["eval/kuhn_poker/exploitability_estimate_invalid_rate"] == 1.0
  assert results["eval/kuhn_poker/exploitability_estimate"] == pytest.approx(0.4583333)
  assert "eval/kuhn_poker/exploitability" not in results  # Exact only in action-scoring mode.


def test_max_prompt_len_zero_takes_the_longest_prompt_of_the_games(text_run):
  exp, _ = text_run
  config = _text_config("nim")
  config.rollout.max_prompt_len = 0
  auto, _ = _build(config)
  bounds = [prompts.prompt_table(kit.game, exp.tokenizer, exp.chat).max_prompt_len
            for kit in auto.kits + auto.heldout_kits]
  assert [k.prompts.max_prompt_len for k in auto.kits + auto.heldout_kits] == bounds
  assert auto.config.rollout.max_prompt_len == max(bounds) > 0
  assert auto.seq_len == max(bounds) + auto.max_response_len


def test_heldout_prompts_longer_than_max_prompt_len_fail_naming_the_fields(text_run):
  exp, _ = text_run
  byte_table = tokenizers.byte_table(exp.tokenizer, exp.model.vocab_size)
  with pytest.raises(configuration.ConfigError,
                     match=r"config.rollout.max_prompt_len=384: leduc_poker prompts take up to "
                           r"\d+ tokens.*in config.eval.heldout_games"):
    experiment.game_kit(exp, games.make("leduc_poker"), byte_table, None, "eval.heldout_games")


def test_shared_rules_move_the_paragraph_from_every_observation_to_the_prompt_start(text_run):
  exp, _ = text_run
  full = games.make("kuhn_poker")
  spiral_layout = experiment.prompted_game(exp.config, full)
  assert spiral_layout[0] is full and spiral_layout[1].rules == ""
  config = exp.config.replace(
      prompt=dataclasses.replace(exp.config.prompt, shared_rules=("kuhn_poker", "tic_tac_toe"),
                                 examples=2),
      rollout=dataclasses.replace(exp.config.rollout, max_prompt_len=0))  # The bound it needs.
  game, style = experiment.prompted_game(config, full)
  assert game == dataclasses.replace(full, rules=False) and style.rules == full.rules_text
  assert len(style.examples) == 2
  assert not any(full.rules_text in observation for observation, _ in style.examples)
  # Nothing to move: a game not named, one without a paragraph, and one that leaves it out.
  for other in (games.make("connect_four"), games.make("nim"), games.make("kuhn_poker", rules=False)):
    assert experiment.prompted_game(config, other)[0] is other
    assert experiment.prompted_game(config, other)[1].rules == ""
  byte_table = tokenizers.byte_table(exp.tokenizer, exp.model.vocab_size)
  kit = experiment.game_kit(dataclasses.replace(exp, config=config), full, byte_table, None)
  assert kit.game == game and kit.style == style
  start = tokenizers.decode(exp.tokenizer, np.asarray(kit.prompts.prefix))
  assert start.count(full.rules_text) == 1
  assert start.index(full.rules_text) < start.index(prompts.PROMPT_PREFIX)


def test_kuhn_poker_policies_share_each_seats_start_and_sample_as_from_the_common_prefix(
    text_run, monkeypatch):
  """Kuhn Poker's seats' prompts share their start up to the end of "You are Player N" and the
  rules (`Game.intro`): its policies, run on prompts of both seats, prefill each seat's start once
  and sample what a kit sharing only the common prefix samples."""
  exp, params = text_run
  [kit] = [k for k in exp.kits if k.game.name == "kuhn_poker"]
  byte_table = tokenizers.byte_table(exp.tokenizer, exp.model.vocab_size)
  monkeypatch.setattr(prompts, "_starts", lambda game, prefix, *_: np.asarray([prefix]))
  prefix_only = experiment.game_kit(exp, kit.game, byte_table, None)
  states = opponents.random_playouts(kit.game, jax.random.key(4), 8)
  states = jax.tree.map(lambda x: x[:2].reshape((16,) + x.shape[2:]), states)  # Turns 1 and 2.
  assert set(np.asarray(states.current_player[~states.terminated]).tolist()) == {0, 1}
  tokens, lengths = jax.vmap(experiment.render_fn(kit))(jax.vmap(kit.game.render)(states))
  width = tokens.shape[1]
  assert kit.prompts.starts.shape[0] == 2 and prefix_only.prompts.starts.shape[0] == 1
  assert policies.shared_starts(kit.prompts.prefix, kit.prompts.starts, 16, width).shape[0] == 2
  for policy, reference in ((kit.train_policy, prefix_only.train_policy),
                            (kit.eval_policy, prefix_only.eval_policy)):
    args = (params, tokens, lengths, states.legal_action_mask, jax.random.key(5))
    got, expected = jax.jit(policy)(*args), jax.jit(reference)(*args)
    np.testing.assert_array_equal(got.response_tokens, expected.response_tokens)
    np.testing.assert_allclose(got.response_logprobs, expected.response_logprobs, atol=1e-5)


def test_rollout_and_eval_sampling_settings_reach_their_policies(text_run, monkeypatch):
  """rollout.temperature/top_p/top_k/int8_logits/int8_weights make the training policy,
  eval.temperature/top_p the evaluation policy (with rollout.top_k: eval has none, and the float
  model); the sampler applies
  them (tests/models/test_sampling.py). rollout.top_p once never reached the training policy."""
  exp, _ = text_run
  made = []
  monkeypatch.setattr(experiment.policies, "text_policy",
                      lambda *args, **int8: made.append((*args[5:8], int8)) or "policy")
  config = exp.config.replace(rollout=dict(temperature=0.9, top_p=0.8, top_k=40, int8_logits=True,
                                           int8_weights=True),
                              eval=dict(temperature=0.6, top_p=0.95))
  exp = dataclasses.replace(exp, config=config)
  byte_table = tokenizers.byte_table(exp.tokenizer, exp.model.vocab_size)
  kit = experiment.game_kit(exp, exp.kits[0].game, byte_table, None)
  assert made == [(0.6, 0.95, 40, {}),
                  (0.9, 0.8, 40, dict(int8_logits=True, int8_weights=True))]
  assert kit.train_policy == kit.eval_policy == "policy"


def test_ppo_options_reach_the_train_step(text_run, monkeypatch):
  """rl.ppo_epochs, rl.num_minibatches, rl.micro_batch_size, rl.recompute_old_log_probs,
  rl.forfeit_credit and rollout.balance_games make the train step's epochs, mini-batches,
  micro-batches, old log-probs, forfeit credit and balanced draw."""
  exp, _ = text_run
  made = []
  monkeypatch.setattr(experiment.train_step, "make_train_step",
                      lambda step_config, *args, **kwargs: made.append(step_config))
  experiment.build_train_step(exp)
  config = exp.config.replace(rl=dict(ppo_epochs=3, num_minibatches=4, micro_batch_size=16,
                                      recompute_old_log_probs=True, forfeit_credit="answer"),
                              rollout=dict(balance_games=True))
  experiment.build_train_step(dataclasses.replace(exp, config=config))
  default, step_config = made
  assert default.balanced_kinds == 0
  assert (step_config.batch_size, step_config.num_epochs, step_config.num_minibatches,
          step_config.num_microbatches, step_config.recompute_old_log_probs,
          step_config.forfeit_credit, step_config.balanced_kinds) == (
              256, 3, 4, 4, True, "answer", len(exp.kits))


def test_action_scoring_kit_scores_its_own_actions(text_run):
  exp, params = text_run
  nim = games.make("nim")
  kit = experiment.game_kit(exp, nim, None, answers.scoring_table(nim.actions, exp.tokenizer))
  assert kit.scoring.tokens.shape[0] == nim.num_actions != exp.num_actions
  state = jax.vmap(nim.init)(jax.random.split(jax.random.key(0), 3))
  tokens, lengths = jax.vmap(experiment.render_fn(kit))(jax.vmap(nim.render)(state))
  act = kit.eval_policy(params, tokens, lengths, state.legal_action_mask, jax.random.key(2))
  legal = np.asarray(state.legal_action_mask)
  assert legal[np.arange(3), np.asarray(act.action)].all()


def _approx(stats):
  return {k: _approx(v) if isinstance(v, dict) else pytest.approx(float(v))
          for k, v in stats.items()}


def test_game_stats_per_seat_in_self_play():
  episodes = stand_ins.synthetic_episodes(-1)
  stats = jax.device_get(experiment.game_stats(episodes, (stand_ins.STOP_ID, 1)))
  # Seat 0 answers lengths 2, 4, 3 (invalid), 1, 4 (truncated); seat 1: 4 (truncated),
  # 4 (truncated, invalid), 2.
  assert _approx(stats) == {
      "forfeit_rate": 2 / 4, "turns_mean": 2.0, "invalid_rate": 2 / 8,
      "response_length_mean": 24 / 8, "truncation_rate": 3 / 8,
      "seat0": {"games": 4, "win_rate": 2 / 4, "draw_rate": 1 / 4, "loss_rate": 1 / 4,
                "forfeit_rate": 1 / 4, "invalid_rate": 1 / 5, "response_length_mean": 14 / 5,
                "truncation_rate": 1 / 5},
      "seat1": {"games": 4, "win_rate": 1 / 4, "draw_rate": 1 / 4, "loss_rate": 2 / 4,
                "forfeit_rate": 1 / 4, "invalid_rate": 1 / 3, "response_length_mean": 10 / 3,
                "truncation_rate": 2 / 3}}
  scoring = jax.device_get(experiment.game_stats(episodes, None))
  assert scoring["truncation_rate"] == scoring["seat0"]["truncation_rate"] == 0.0


def test_game_stats_per_seat_against_an_opponent():
  """The learner sits in seats 0, 1, 1, 0: its turns are game 0's first, game 1's second and
  game 3's first and third; in game 2 the opponent forfeits before the learner answers."""
  episodes = stand_ins.synthetic_episodes([0, 1, 1, 0])
  stats = jax.device_get(experiment.game_stats(episodes, (stand_ins.STOP_ID,)))
  assert _approx(stats) == {
      "forfeit_rate": 2 / 4, "turns_mean": 2.0, "invalid_rate": 1 / 4,
      "response_length_mean": 11 / 4, "truncation_rate": 2 / 4,
      "seat0": {"games": 2, "win_rate": 1 / 2, "draw_rate": 1 / 2, "loss_rate": 0.0,
                "forfeit_rate": 0.0, "invalid_rate": 0.0, "response_length_mean": 7 / 3,
                "truncation_rate": 1 / 3},
      "seat1": {"games": 2, "win_rate": 1 / 2, "draw_rate": 0.0, "loss_rate": 1 / 2,
                "forfeit_rate": 1 / 2, "invalid_rate": 1.0, "response_length_mean": 4.0,
                "truncation_rate": 1.0}}


def test_action_scoring_mixes_games_of_different_action_counts():
  """Kuhn Poker (4 actions) and TicTacToe (9) in one scoring run at temperature 0.5: collect and
  a train step, whose learner recomputes the sampler's log-probs (first-epoch ratio 1)."""
  config = kuhn_nash.get_config()
  config.games = "kuhn_poker,tic_tac_toe"
  config.rollout.update(samples_per_step=16, games_per_batch=4, max_prompt_len=256,
                        temperature=0.5)
  config.rl.micro_batch_size = 16
  config = configuration.validate(config)
  exp, state, step_fn, layout = store.setup(config)
  assert exp.num_actions == 9
  batch, stats = experiment.make_collect(exp, layout)(state.params, None, jax.random.key(1))
  # Every turn slot of the 4 games of each kind; the train step draws its 16 rows.
  assert batch.tokens.shape[0] == configuration.collected_rows(config) == 4 * (3 + 9)
  kinds = np.asarray(batch.outcomes.game_kind)[np.asarray(batch.outcomes.mask)]
  assert set(kinds.tolist()) == {0, 1}
  actions = np.asarray(batch.action)[np.asarray(batch.outcomes.mask)]
  assert (actions[kinds == 0] < 4).all()  # Kuhn never samples a padded action.
  legal = np.asarray(batch.legal_action_mask)[np.asarray(batch.outcomes.mask)]
  assert legal[np.arange(len(actions)), actions].all()
  for game in ("kuhn_poker", "tic_tac_toe"):
    assert stats[game]["invalid_rate"] == stats[game]["truncation_rate"] == 0
    assert stats[game]["seat0"]["games"] == stats[game]["seat1"]["games"] == 4  # Self-play.
  _, step_metrics = step_fn(state, batch)
  assert step_metrics["sampler_logprob_abs_diff"] < 1e-5
  assert step_metrics["samples_collected"] == np.asarray(batch.outcomes.mask).sum()
  assert step_metrics["num_samples"] == min(16, int(step_metrics["samples_after_filter"]))


def test_kl_to_a_moving_reference_runs_in_the_loop_and_is_checkpointed(tmp_path):
  """rl.kl_coef > 0 keeps reference params in the train state (laid out like the params), moved
  towards the params by rl.kl_reference_decay each step and saved with the rest of the state."""
  config = kuhn_nash.get_config()
  config.rollout.update(samples_per_step=16, games_per_batch=8, max_prompt_len=128)
  config.rl.update(micro_batch_size=8, ppo_epochs=1, kl_coef=0.5, kl_reference_decay=0.5)
  config = configuration.validate(config)
  exp, state, step_fn, layout = store.setup(config)
  initial = jax.device_get(state.params)
  assert jax.tree.map(lambda x: x.sharding, state.ref_params) == jax.tree.map(
      lambda x: x.sharding, state.params)
  collect = experiment.make_collect(exp, layout)
  kls = []
  for step in range(2):
    batch, _ = collect(state.params, None, jax.random.key(step))
    previous_ref = jax.device_get(state.ref_params)
    state, step_metrics = step_fn(state, batch)
    kls.append(float(step_metrics["kl"]))
  assert kls[0] == pytest.approx(0.0, abs=1e-7) and kls[1] > 0
  expected = jax.tree.map(lambda r, p: 0.5 * r + 0.5 * p, previous_ref,
                          jax.device_get(state.params))
  for got, want, start in zip(jax.tree.leaves(state.ref_params), jax.tree.leaves(expected),
                              jax.tree.leaves(initial)):
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-7)
  assert any(not np.array_equal(np.asarray(got), start)
             for got, start in zip(jax.tree.leaves(state.ref_params), jax.tree.leaves(initial)))

  saver = store.checkpointer(str(tmp_path), config)
  saver.save(2, state, force=True)
  saver.wait()
  _, restored = saver.restore_latest(checkpoints.abstract_like(state))
  for got, want in zip(jax.tree.leaves(restored.ref_params), jax.tree.leaves(state.ref_params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  saver.close()


def test_a_counter_policy_restarts_from_the_initial_params_with_fresh_optimizer_state():
  """population.counter_reset: after its snapshot the counter policy's params are the initial
  ones again (kept as counter_start), its optimizer state and RAE baselines fresh, its key
  stream unchanged."""
  config = configuration.validate(stand_ins.tiny_kuhn_config(**{
      "rollout.seats": "population", "population.counters": 1,
      "population.counter_reset": True}))
  exp, state, _, _ = store.setup(config)
  fresh = jax.device_get(state.counter)
  moved = state.counter.replace(
      params=jax.tree.map(lambda x: x + 1.0, state.counter.params),
      opt_state=jax.tree.map(lambda x: x + 1, state.counter.opt_state),
      baselines=state.counter.baselines + 0.5, step=state.counter.step + 7)
  restarted = jax.device_get(experiment.make_counter_restart(exp, state)(
      moved, state.counter_start))
  for a, b in zip(jax.tree.leaves((restarted.params, restarted.opt_state, restarted.baselines)),
                  jax.tree.leaves((fresh.params, fresh.opt_state, fresh.baselines))):
    np.testing.assert_array_equal(a, b)
  assert int(restarted.step) == 7
  np.testing.assert_array_equal(jax.random.key_data(restarted.rng),
                                jax.random.key_data(fresh.rng))
  # Without counter_reset nothing is kept to restart from.
  plain = configuration.validate(stand_ins.tiny_kuhn_config(**{
      "rollout.seats": "population", "population.counters": 1}))
  assert store.setup(plain)[1].counter_start is None


def test_the_exact_counter_oracle_distils_the_best_response_to_the_snapshots():
  """population.counter_oracle=exact: each update moves the counter policy's Kuhn table towards
  the exact best response to the learner's snapshot (the cross-entropy falls step after step);
  the metrics report the snapshot's exploitability, and the learner's params and the pool stay
  as they were."""
  config = configuration.validate(stand_ins.tiny_kuhn_config(**{
      "rollout.seats": "population", "population.counters": 1,
      "population.counter_oracle": "exact", "population.counter_updates": 10,
      "optimizer.learning_rate": 3e-3, "optimizer.schedule": "constant"}))
  exp, state, _, _ = store.setup(config)
  update = jax.jit(experiment.make_best_response_update(exp))
  solution = matches.exact_game(exp.model, exp.kits[0], config.rollout.temperature)
  learner = solution.table(state.params)
  target = np.asarray(exploitability.best_response(learner))
  pool_before = jax.device_get(state.pool)
  counter, entropies = state.counter, []
  for _ in range(4):
    counter, metrics = update(counter, state.pool)
    entropies.append(float(metrics["best_response_cross_entropy"]))
    assert float(metrics["best_response_cross_entropy_start"]) > entropies[-1]
  assert entropies == sorted(entropies, reverse=True) and entropies[-1] < 0.5 * entropies[0]
  assert int(counter.step) == 4
  assert float(metrics["snapshots_exploitability"]) == pytest.approx(
      float(exploitability.exploitability(learner)), abs=1e-5)
  counter_table = np.asarray(solution.table(counter.params))
  # Most of the mass on the best response's action at each of the 12 information sets.
  assert (counter_table * target).sum(-1).mean() > 0.8
  for now, before in zip(jax.tree.leaves(jax.device_get(state.pool)),
                         jax.tree.leaves(pool_before)):
    np.testing.assert_array_equal(now, before)


def test_the_exact_counter_oracles_schedule_spans_all_its_updates():
  """build_optimizer(config, updates_per_step): a cosine schedule spread over train.steps of that
  many updates. The exact counter oracle takes population.counter_updates a step; with the
  learner's span (rl.ppo_epochs a step) its learning rate would reach 0 after a fraction of the
  run."""
  config = configuration.validate(stand_ins.tiny_kuhn_config(**{
      "optimizer.schedule": "cosine", "optimizer.warmup_steps": 0, "train.steps": 10,
      "rl.ppo_epochs": 2}))

  def update_sizes(optimizer, count):
    params, sizes = jax.numpy.zeros(()), []
    state = optimizer.init(params)
    for _ in range(count):
      updates, state = optimizer.update(jax.numpy.ones(()), state, params)
      sizes.append(abs(float(updates)))
    return sizes

  lr = config.optimizer.learning_rate
  learner, counter = (update_sizes(experiment.build_optimizer(config, n), 21) for n in (None, 8))
  assert learner[20] == pytest.approx(0.0, abs=1e-9)  # 10 steps x 2 epochs: the schedule's end.
  # Adam's step under a constant gradient is the learning rate: cosine over 80 updates at 20.
  assert counter[20] == pytest.approx(lr * (1 + np.cos(np.pi * 20 / 80)) / 2, rel=1e-3)
