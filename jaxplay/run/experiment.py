"""Everything a run builds once from its config: model, tokenizer, games, tables, policies, and the
compiled `collect` (rollouts of every game kind -> one train batch)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import games
from games import opponents
from jaxplay import compiling, sharding
from jaxplay.evaluation import matches
from jaxplay.models import configs as model_configs
from jaxplay.models import loading, transformer
from jaxplay.rl import advantages, losses, policies, population, rollout, train_step
from jaxplay.run import configuration
from jaxplay.run import programs as programs_lib
from jaxplay.run import schedule as schedule_lib
from jaxplay.run import spec as spec_lib
from jaxplay.text import answers, game_tokenizer, prompts
from jaxplay.text import tokenizer as tokenizers


@dataclasses.dataclass(frozen=True)
class GameKit:
  """One game under the run's tokenizer: its prompt table and policies."""

  game: games.Game  # As its prompts show it (`prompted_game`).
  style: prompts.PromptStyle
  prompts: prompts.PromptTable
  train_policy: rollout.Policy
  eval_policy: rollout.Policy
  scoring: answers.ScoringTable | None  # Action-scoring mode only.


@dataclasses.dataclass(frozen=True)
class Experiment:
  config: spec_lib.RunSpec
  model: model_configs.ModelConfig
  tokenizer: Any
  chat: tokenizers.ChatFormat
  kits: tuple[GameKit, ...]
  max_response_len: int
  num_actions: int  # Largest action vocabulary over the games (legal masks are padded to it).
  pad_id: int
  heldout_kits: tuple[GameKit, ...] = ()  # Evaluated only (config.eval.heldout_games).
  # The run's large programs, kept traced between starts (programs_lib; default: never).
  programs: programs_lib.ProgramCache = programs_lib.ProgramCache(None)

  @property
  def scoring(self) -> bool:
    return self.config.rollout.mode == "action_scoring"

  @property
  def seq_len(self) -> int:
    return self.config.rollout.max_prompt_len + self.max_response_len


def model_config(config: spec_lib.RunSpec, vocab_size: int | None = None
                 ) -> model_configs.ModelConfig:
  """The architecture of config.model: its preset with the dtypes, and for from-scratch models
  (path 'games_bpe') the vocabulary size and the `model.overrides` fields."""
  fields = dict(dtype=config.model.dtype, param_dtype=config.model.param_dtype,
                remat=config.model.remat, **lora_fields(config))
  if config.model.path == "games_bpe":
    fields.update(config.model.overrides)
    if vocab_size or config.model.vocab_size:
      fields["vocab_size"] = vocab_size or config.model.vocab_size
  return model_configs.get(config.model.preset, **fields)


def lora_fields(config: spec_lib.RunSpec) -> dict:
  """The ModelConfig LoRA fields of config.model (none when lora_rank is 0)."""
  if not config.model.lora_rank:
    return {}
  return dict(lora_rank=config.model.lora_rank, lora_alpha=config.model.lora_alpha,
              lora_targets=config.model.lora_targets)


def trainable(model: model_configs.ModelConfig):
  """What the train step updates: None (every param), or with LoRA a bool tree marking the
  adapters (train_step.init_state / make_train_step `trainable`)."""
  if not model.lora_rank:
    return None
  return jax.tree_util.tree_map_with_path(lambda path, _: transformer.is_adapter(path),
                                          transformer.param_shapes(model))


def init_state(exp: Experiment, params, optimizer) -> train_step.TrainState:
  """The train state before the first step: RAE baselines per game kind and role, the KL
  reference (rl.kl_coef), with LoRA optimizer state for the adapters only; with
  rollout.seats=population the pool holding the initial params (their trained leaves), and with
  population.counters the counter policy's own train state (`counter`, FXP), starting from the
  initial params too (kept as `counter_start` with population.counter_reset); with
  schedule.mode the schedule in its first phase."""
  config = exp.config
  make = lambda seed: train_step.init_state(
      params, optimizer, num_kinds=len(config.games), num_roles=2, seed=seed,
      reference=config.rl.kl_coef > 0, trainable=trainable(exp.model))
  state = make(config.seed)
  if config.schedule.mode:
    state = state.replace(schedule=schedule_lib.initial())
  if not uses_population(config):
    return state
  state = state.replace(pool=population.new_pool(
      train_step.select(params, trainable(exp.model)), config.population.size,
      config.population.dtype or None,
      fixed_opponent=configuration.seat_opponent(config) is not None,
      counters=config.population.counters))
  if not uses_counters(config):
    return state
  # Its own key stream: a seed no run derives from config.seed otherwise.
  state = state.replace(counter=make(config.seed).replace(
      rng=jax.random.fold_in(state.rng, COUNTER_STREAM)))
  if config.population.counter_reset:
    state = state.replace(counter_start=jax.tree.map(
        jnp.copy, train_step.select(params, trainable(exp.model))))
  return state


COUNTER_STREAM = 1  # fold_in of the learner's train-state key that seeds the counter policy's.


def uses_population(config: spec_lib.RunSpec) -> bool:
  """Whether the run plays an opponent population (rollout.seats has 'population')."""
  return "population" in config.rollout.seats


def uses_counters(config: spec_lib.RunSpec) -> bool:
  """Whether the run trains counter policies (fictitious cross-play: population.counters > 0)."""
  return uses_population(config) and config.population.counters > 0


def make_pool_update(exp: Experiment, pool: population.Pool):
  """Jitted `update(pool, params, counter_params, games_K, score_sums_K, step, snapshot) -> pool`
  (the pool donated, its layout kept): the step's results against each member recorded, then,
  when `snapshot` (static), `params`' trained leaves added as the newest snapshot and, with
  counter slots, `counter_params`' as the newest counter policy (else None)."""
  config, trained = exp.config.population, trainable(exp.model)

  def update(pool, params, counter_params, games, score_sums, step, snapshot):
    pool = population.record(pool, games, score_sums, config.score_decay)
    if not snapshot:
      return pool
    pool = population.add(pool, train_step.select(params, trained), step)
    if counter_params is None:
      return pool
    return population.add_counter(pool, train_step.select(counter_params, trained), step)
  return compiling.jit(update, static_argnums=6, donate_argnums=0,
                       out_shardings=jax.tree.map(lambda x: x.sharding, pool))


def make_counter_restart(exp: Experiment, state: train_step.TrainState):
  """Jitted `restart(counter, start) -> counter` (donated, its layout kept): the counter policy's
  train state started over from the trained leaves `start` (population.counter_reset): fresh
  optimizer state (its schedule from step 0 again) and RAE baselines; its key stream goes on."""
  optimizer, trained = build_optimizer(exp.config), trainable(exp.model)

  def restart(counter, start):
    params = train_step.merge(jax.tree.map(jnp.copy, start), counter.params, trained)
    return counter.replace(params=params, opt_state=optimizer.init(
        train_step.select(params, trained)), baselines=jnp.zeros_like(counter.baselines))
  return compiling.jit(restart, donate_argnums=0,
                       out_shardings=jax.tree.map(lambda x: x.sharding, state.counter))


def with_counter_update(step_fn, best_response_update=None):
  """`step(state, (batch, counter_batch)) -> (state, metrics)`: `step_fn` on the learner's state
  and batch, then on the counter policy's state (`state.counter`) and batch, in one program; the
  counter's metrics under "counter". With `best_response_update` (`make_best_response_update`)
  it is `step(state, batch)`: the counter policy learns from the learner's snapshots in
  `state.pool` instead of from games."""
  def step(state, batches):
    if best_response_update is not None:
      state, metrics = step_fn(state, batches)
      counter, metrics["counter"] = best_response_update(state.counter, state.pool)
      return state.replace(counter=counter), metrics
    batch, counter_batch = batches
    state, metrics = step_fn(state, batch)
    counter, metrics["counter"] = step_fn(state.counter, counter_batch)
    return state.replace(counter=counter), metrics
  return step


def make_best_response_update(exp: Experiment):
  """`update(counter, pool) -> (counter, metrics)` (population.counter_oracle=exact, traceable):
  the counter policy's train state after population.counter_updates optimizer updates that
  distil an exact best response to the learner's snapshots in `pool` (a mixture weighted by
  population.counter_sampling) into its action-scoring policy at rollout.temperature, the
  policy it plays with: the loss is the cross-entropy from the best response's table to its own,
  summed over the information sets of every game of the run (matches.exact_game). Metrics:
  `best_response_cross_entropy` before and after the updates (`_start`), and
  `snapshots_exploitability`, what the best response earns against the snapshots (mean over the
  games). Its optimizer is config.optimizer with the schedule spread over the run's
  train.steps * counter_updates updates (the state's structure is the learner's)."""
  config, trained = exp.config, trainable(exp.model)
  optimizer = build_optimizer(config, config.population.counter_updates)
  temperature = max(config.rollout.temperature, 1e-6)
  solutions = [matches.exact_game(exp.model, kit, temperature) for kit in exp.kits]

  def update(counter, pool):
    weights = population.counter_opponents(pool, config.population.counter_sampling)
    weights = weights[:pool.capacity]  # The learner's snapshot slots.
    snapshots = jax.tree.map(lambda s: s[:pool.capacity], pool.params)
    as_params = lambda snapshot: population.member_params(snapshot, counter.params, trained)
    targets, exploitabilities = [], []
    for solution in solutions:
      tables = jax.lax.map(lambda s: solution.table(as_params(s)), snapshots)
      # Empty slots (weight 0) hold zeros; their tables, whatever they are, must stay finite.
      tables = jnp.where(weights.reshape((-1,) + (1,) * (tables.ndim - 1)) > 0, tables,
                         tables[pool.newest])
      targets.append(solution.best_response(tables, weights))
      exploitabilities.append(solution.exploitability(tables, weights))

    def loss(train_params):
      params = train_step.merge(train_params, counter.params, trained)
      return sum(s.cross_entropy(s.table(params), t) for s, t in zip(solutions, targets))

    def one_update(carry, _):
      train_params, opt_state = carry
      value, grads = jax.value_and_grad(loss)(train_params)
      updates, opt_state = optimizer.update(grads, opt_state, train_params)
      return (optax.apply_updates(train_params, updates), opt_state), value

    (train_params, opt_state), losses_K = jax.lax.scan(
        one_update, (train_step.select(counter.params, trained), counter.opt_state), None,
        length=config.population.counter_updates)
    metrics = {"best_response_cross_entropy_start": losses_K[0],
               "best_response_cross_entropy": loss(train_params),
               "snapshots_exploitability": sum(exploitabilities) / len(exploitabilities)}
    params = train_step.merge(train_params, counter.params, trained)
    return counter.replace(step=counter.step + 1, params=params, opt_state=opt_state), metrics
  return update


def load_model_and_tokenizer(config: spec_lib.RunSpec, key: jax.Array,
                             sharding_fn: loading.ShardingFn | None = None):
  """(model config, params, tokenizer) from model.path, or a fresh model for path 'games_bpe'.

  Loaded tensors go straight to `sharding_fn(logical axes)`; fresh params stay on one device.
  """
  if config.model.path == "games_bpe":  # From scratch, with a small BPE fit to the games' text.
    tokenizer = game_tokenizer.games_bpe_tokenizer(configuration.make_games(config),
                                                   config.model.vocab_size)
    model = model_config(config, vocab_size=len(tokenizer))
    return model, transformer.init_params(model, key), tokenizer
  path = config.model.path
  if path == "gemma3_270m_package":
    path = loading.gemma3_270m_default()
  model, params = loading.load(path, sharding_fn, dtype=config.model.dtype,
                               param_dtype=config.model.param_dtype, remat=config.model.remat)
  if config.model.lora_rank:  # Fresh adapters beside the checkpoint's weights.
    model = dataclasses.replace(model, **lora_fields(config))
    params = transformer.with_adapters(model, params, key)
  return model, params, tokenizers.load_tokenizer(path, config.model.tokenizer_cache)


def build(config: spec_lib.RunSpec, tokenizer, model: model_configs.ModelConfig
          ) -> Experiment:
  """Tables and policies for every training and held-out game (tokenisation happens here, once).
  The returned experiment's config has rollout.max_prompt_len resolved when it was 0."""
  chat = tokenizers.chat_format(tokenizer, config.model.chat_format)
  pad_id = tokenizers.pad_id(tokenizer, chat)
  game_list = configuration.make_games(config)
  num_actions = max(g.num_actions for g in game_list)
  scoring_mode = config.rollout.mode == "action_scoring"
  scorings = ([answers.scoring_table(g.actions, tokenizer) for g in game_list]
              if scoring_mode else [])
  answer_len = max((s.tokens.shape[1] for s in scorings), default=0)
  max_response_len = answer_len if scoring_mode else config.rollout.max_response_len
  exp = Experiment(config, model, tokenizer, chat, (), max_response_len, num_actions, pad_id)
  byte_table = tokenizers.byte_table(tokenizer, model.vocab_size)
  kits = [game_kit(exp, game, byte_table,
                   _pad_scoring(scorings[i], answer_len, num_actions) if scoring_mode else None)
          for i, game in enumerate(game_list)]
  # Held-out games are only evaluated: their answers keep their own widths.
  heldout = [game_kit(exp, game, byte_table,
                      answers.scoring_table(game.actions, tokenizer) if scoring_mode else None,
                      "eval.heldout_games") for game in configuration.make_heldout_games(config)]
  if not config.rollout.max_prompt_len:  # 0: the longest prompt of the run's games.
    longest = max(kit.prompts.max_prompt_len for kit in kits + heldout)
    config = dataclasses.replace(config, rollout=dataclasses.replace(
        config.rollout, max_prompt_len=longest))
  return dataclasses.replace(exp, config=config, kits=tuple(kits), heldout_kits=tuple(heldout),
                             programs=program_cache(config, model))


def program_cache(config: spec_lib.RunSpec, model: model_configs.ModelConfig
                  ) -> programs_lib.ProgramCache:
  """The run's saved programs (programs_lib), told apart from other runs' by its config record,
  its model architecture and the model files."""
  path = config.model.path
  if path == "gemma3_270m_package":  # The package's version fixes the assembled file.
    package = loading.GEMMA3_270M_PACKAGE
    files = f"{package} {importlib.metadata.version(package)}"
  else:
    files = "" if path == "games_bpe" else programs_lib.path_identity(path)
  context = "\n".join((json.dumps(spec_lib.as_record(config), sort_keys=True), repr(model), files))
  return programs_lib.ProgramCache(context)


def game_kit(exp: Experiment, game: games.Game, byte_table: tuple[np.ndarray, np.ndarray],
             scoring: answers.ScoringTable | None, listed_in: str = "games") -> GameKit:
  """A game's prompt table and policies (action scoring when `scoring` is given, else free text).

  Raises ConfigError naming rollout.max_prompt_len when the game's prompts do not fit it.
  """
  config, model, pad_id = exp.config, exp.model, exp.pad_id
  game, style = prompted_game(config, game)
  try:
    table = prompts.prompt_table(game, exp.tokenizer, exp.chat,
                                 config.rollout.max_prompt_len or None, fit=True, style=style)
  except prompts.PromptTooLong as error:
    raise configuration.ConfigError(
        f"config.rollout.max_prompt_len={config.rollout.max_prompt_len}: {error} ({game.name} is "
        f"in config.{listed_in}.)") from None
  if scoring is not None:
    make = lambda t: policies.scoring_policy(model, scoring, pad_id, t)
    eval_policy = make(config.eval.temperature)
  else:
    parse = answers.parse_table(game.actions, byte_table, getattr(game, "max_answer_bytes", 0))
    make = lambda t, p=1.0, **int8: policies.text_policy(
        model, parse, exp.chat.stop_ids, exp.max_response_len, pad_id, t, p,
        config.rollout.top_k, config.rollout.stop_at_answer, table.prefix, table.starts, **int8)
    eval_policy = make(config.eval.temperature, config.eval.top_p)
  train_policy = (make(config.rollout.temperature) if scoring is not None
                  else make(config.rollout.temperature, config.rollout.top_p,
                            int8_logits=config.rollout.int8_logits,
                            int8_weights=config.rollout.int8_weights))
  return GameKit(game, style, table, train_policy, eval_policy, scoring)


def prompted_game(config: spec_lib.RunSpec, game: games.Game
                  ) -> tuple[games.Game, prompts.PromptStyle]:
  """config.prompt for one game: (the game as its observations show it, the prompt style: its
  instruction line, `examples` worked examples, and for a game in `shared_rules` its rules
  paragraph shown once, first, which then leaves every observation: the game's `rules=False`
  copy, the same play)."""
  rules = ""
  if game.name in config.prompt.shared_rules and isinstance(game, games.WithRules) and game.rules:
    rules, game = game.rules_text, dataclasses.replace(game, rules=False)
  return game, prompts.PromptStyle(
      instruction=config.prompt.instruction or prompts.INSTRUCTION,
      examples=prompts.worked_examples(game, config.prompt.examples),
      header=prompts.header(game), rules=rules)


def _pad_scoring(table: answers.ScoringTable, width: int, num_actions: int) -> answers.ScoringTable:
  """Pads answers to `width` tokens and the action axis to `num_actions` (never legal)."""
  tokens = np.zeros((num_actions, width), np.int32)
  lengths = np.ones((num_actions,), np.int32)
  a, w = table.tokens.shape
  tokens[:a, :w] = np.asarray(table.tokens)
  lengths[:a] = np.asarray(table.lengths)
  return table.replace(tokens=jnp.asarray(tokens), lengths=jnp.asarray(lengths))


def render_fn(kit: GameKit):
  return functools.partial(prompts.render_tokens, kit.prompts)


def play(exp: Experiment, kit: GameKit, params, key, batch: int, frozen_params=None,
         opponent_name: str | None = None, rows_sharding=None, pool: population.Pool | None = None,
         members=None, self_play_games: int | None = None) -> rollout.Episodes:
  """One training rollout of `batch` games of the kit's game (traced inside `collect`): against
  the frozen copy, the fixed opponent, or the `pool`'s `members` (int32 [batch]; the fixed
  opponent is the pool's last member when it has one), or self-play; the first
  `self_play_games` (default: as rollout.seats says) in self-play."""
  if self_play_games is None:
    self_play_games = configuration.self_play_games(exp.config)
  opponent = opponents.get(kit.game.name, opponent_name) if opponent_name else None
  member_policy = None
  if pool is not None:
    member_policy = lambda snapshot, *args: kit.train_policy(
        population.member_params(snapshot, params, trainable(exp.model)), *args)
  return rollout.rollout(kit.game, kit.train_policy, render_fn(kit), params, key, batch,
                         opponent_params=frozen_params if pool is None else pool.params,
                         opponent=opponent, group_size=exp.config.rl.group_size,
                         self_play_games=self_play_games,
                         rows_sharding=rows_sharding, opponent_members=members,
                         opponent_policy=member_policy,
                         batch_halvings=exp.config.rollout.batch_halvings)


def make_collect(exp: Experiment, layout: sharding.Layout, counter: bool = False,
                 kinds: tuple[int, ...] | None = None):
  """Jitted `collect(params, others, key) -> (train_step.Batch, {game: game_stats})`; `others`
  is the frozen opponent's params (rollout.seats has 'frozen'), the population.Pool ('population':
  each group of games draws a member by population.sampling and population.cross_play, and the
  stats hold `population_games` and `population_score_sums`, float32 [pool members] over all game
  kinds, for `make_pool_update`), or None.

  `counter` collects the counter policy's games instead (FXP; `params` are its own): every game
  against one of the learner's snapshots, drawn by population.counter_sampling (a best response to
  its past versions, or to its newest). `kinds` (indices into exp.kits; default all) are the
  game kinds played (one phase of Iterative-SPO, jaxplay/run/schedule.py).

  Params arrive in the train layout and are resharded to the sampler layout inside the program;
  each device plays its share of the games; the batch holds every turn slot of every game
  (`configuration.collected_rows` rows; the train step draws its subsample) and leaves split by
  rows in the train layout (on several hosts each holds its own rows), as the train step takes
  it; stats are replicated.
  """
  config = exp.config
  games_per_batch = config.rollout.games_per_batch
  opponent_name = None if counter else configuration.seat_opponent(config)
  self_play_games = 0 if counter else None
  serve = layout.params(transformer.param_axes(exp.model), sampler=True)
  to_sampler = lambda params: params if params is None else sharding.reshard(params, serve)

  pool_play = uses_population(config)
  group_size = config.rl.group_size

  def opponents(pool, key):
    groups = games_per_batch // group_size
    if counter:
      drawn = population.draw_from(
          population.counter_opponents(pool, config.population.counter_sampling), key, groups)
    else:
      drawn = population.draw(pool, key, groups, config.population.sampling,
                              config.population.pfsp_power, config.population.cross_play)
    return jnp.repeat(drawn, group_size)

  def collect(params, others, key):
    pool = others if pool_play else None
    params, frozen_params = to_sampler(params), None if pool_play else to_sampler(others)
    samples, stats, results = [], {}, []
    kit_keys = jax.random.split(key, len(exp.kits))
    for kind in range(len(exp.kits)) if kinds is None else kinds:
      kit, kit_key, members = exp.kits[kind], kit_keys[kind], None
      if pool_play:
        kit_key, draw_key = jax.random.split(kit_key)
        members = opponents(pool, draw_key)
      episodes = play(exp, kit, params, kit_key, games_per_batch, frozen_params, opponent_name,
                      layout.rows(sampler=True), pool, members, self_play_games)
      samples.append(rollout.pad_prompts(
          rollout.to_samples(episodes, kind, group_size, exp.num_actions),
          config.rollout.max_prompt_len, kit.prompts.pad_id))
      stats[kit.game.name] = game_stats(episodes, None if exp.scoring else exp.chat.stop_ids)
      if pool_play:
        seat = episodes.learner_seat
        results.append(population.results(
            members, population.learner_scores(episodes.returns, jnp.maximum(seat, 0)),
            seat >= 0, pool.members))
    if results:
      stats["population_games"], stats["population_score_sums"] = jax.tree.map(
          lambda *x: sum(x), *results)
    return to_batch(exp, rollout.concat(samples)), stats

  name = "collect" + ("_counter" if counter else "") + (
      "" if kinds is None else "_kinds_" + "_".join(map(str, kinds)))
  return exp.programs.jit(collect, name, out_shardings=(layout.rows(), layout.replicated))


def game_stats(episodes: rollout.Episodes, stop_ids: tuple[int, ...] | None
               ) -> dict[str, Any]:
  """A game kind's rollout statistics (scalars), logged as `rollout/<game>/<name>`.

  Over the learner's answers (both seats in self-play): `invalid_rate` (answers that do not parse
  to a legal action), `response_length_mean` (tokens, the stop token included) and
  `truncation_rate` (responses that fill max_response_len and do not end with one of `stop_ids`;
  `stop_ids` is None in action-scoring mode, where answers are never truncated). Over all games:
  `forfeit_rate` (games that ended on an invalid answer, by either seat) and `turns_mean`.
  `seat<k>/...` (k = 0, 1) are the learner's in seat k: over all games in self-play, over the
  games where it sat in seat k against a fixed or frozen opponent (`games` counts them):
  `win_rate`, `draw_rate`, `loss_rate`, `forfeit_rate` (games ended by its invalid answer), and
  the answer statistics above over its turns in that seat. A task has `accuracy` (the share of
  problems solved) and `reward_mean` instead of seats.
  """
  lengths_TB = episodes.response_lengths
  if stop_ids is None:
    truncated_TB = jnp.zeros(lengths_TB.shape, bool)
  else:
    last_TB = episodes.response_tokens[..., -1]
    truncated_TB = ((lengths_TB == episodes.response_tokens.shape[-1])
                    & ~jnp.isin(last_TB, jnp.asarray(stop_ids, jnp.int32)))
  invalid_TB = ~episodes.valid

  def answer_stats(turns_TB):
    count = jnp.maximum(turns_TB.sum(), 1)
    return {"invalid_rate": (invalid_TB & turns_TB).sum() / count,
            "response_length_mean": (lengths_TB * turns_TB).sum() / count,
            "truncation_rate": (truncated_TB & turns_TB).sum() / count}

  stats = {"forfeit_rate": episodes.invalid.mean(), "turns_mean": episodes.num_turns.mean(),
           **answer_stats(episodes.learner)}
  returns = episodes.returns  # [B, players]
  if returns.shape[1] == 1:  # A task: how many problems were solved.
    return {**stats, "accuracy": (returns[:, 0] > 0).mean(), "reward_mean": returns[:, 0].mean()}
  for seat in (0, 1):
    games_B = (episodes.learner_seat < 0) | (episodes.learner_seat == seat)
    turns_TB = episodes.learner & (episodes.player == seat)
    games = games_B.sum()
    share = lambda outcome_B: (outcome_B & games_B).sum() / jnp.maximum(games, 1)
    mine, other = returns[:, seat], returns[:, 1 - seat]
    stats[f"seat{seat}"] = {
        "games": games, "win_rate": share(mine > other), "draw_rate": share(mine == other),
        "loss_rate": share(mine < other), "forfeit_rate": share((invalid_TB & turns_TB).any(0)),
        **answer_stats(turns_TB)}
  return stats


def to_batch(exp: Experiment, samples: rollout.TurnSamples) -> train_step.Batch:
  """Prompt + response rows for the train step (response mask, sampler log-probs, positions)."""
  prompt_len = samples.prompt_tokens.shape[1]
  response_len = samples.response_tokens.shape[1]
  tokens = jnp.concatenate([samples.prompt_tokens, samples.response_tokens], axis=1)
  columns = jnp.arange(prompt_len + response_len)[None, :]
  positions = columns - (prompt_len - samples.prompt_lengths)[:, None]
  trained_len = 1 if exp.scoring else samples.response_lengths[:, None]
  response_mask = jnp.broadcast_to((columns >= prompt_len) & (columns < prompt_len + trained_len),
                                   tokens.shape)
  old_log_probs = jnp.concatenate(
      [jnp.zeros(samples.prompt_tokens.shape, jnp.float32), samples.response_logprobs], axis=1)
  return train_step.Batch(
      tokens=tokens, positions=positions.astype(jnp.int32), response_mask=response_mask,
      old_log_probs=old_log_probs,
      outcomes=samples.outcomes,
      invalid_action=~samples.valid,
      legal_action_mask=samples.legal_action_mask if exp.scoring else None,
      action=samples.action if exp.scoring else None)


def build_train_step(exp: Experiment, layout: sharding.Layout | None = None):
  """The compiled train step for this experiment (token level, or action scoring).

  With a `layout`, each micro-batch is split by rows over the batch mesh axes.
  """
  config = exp.config
  batch_size = config.rollout.samples_per_step
  step_config = train_step.TrainStepConfig(
      batch_size=batch_size, seq_len=exp.seq_len, estimator=config.rl.estimator,
      advantage=advantages.Options(rae_decay=config.rl.rae_decay, rae_order=config.rl.rae_order),
      drop_zero_advantage=config.rl.drop_zero_advantage, forfeit_credit=config.rl.forfeit_credit,
      loss=losses.LossConfig(
          clip_eps=config.rl.clip_eps, clip_eps_high=config.rl.clip_eps_high,
          dual_clip=config.rl.dual_clip or None, aggregation=config.rl.aggregation,
          max_response_len=exp.max_response_len, kl_coef=config.rl.kl_coef,
          entropy_coef=config.rl.entropy_coef,
          temperature=max(config.rollout.temperature, 1e-6)),
      num_epochs=config.rl.ppo_epochs, num_minibatches=config.rl.num_minibatches,
      num_microbatches=batch_size // (config.rl.num_minibatches * config.rl.micro_batch_size),
      recompute_old_log_probs=config.rl.recompute_old_log_probs,
      reference_decay=config.rl.kl_reference_decay,
      balanced_kinds=len(exp.kits) if config.rollout.balance_games else 0)
  optimizer = build_optimizer(config)
  forward = lambda params, tokens, positions: transformer.apply(exp.model, params, tokens,
                                                                positions)[0]
  # Every kind's prompts start with its prefix (chat prefix, worked examples, header) and each
  # seat's with its intro too: the update runs each kind's prefix or seats' starts (whichever
  # runs fewer tokens for its expected rows in an update) once, and each row only after it.
  rows = max(batch_size // (config.rl.num_minibatches * max(len(exp.kits), 1)), 1)
  starts = tuple(policies.shared_starts(kit.prompts.prefix, kit.prompts.starts, rows,
                                        kit.prompts.max_prompt_len) for kit in exp.kits)
  shared_fn = (policies.prefix_kv_fn(exp.model, starts)
               if any(s.shape[1] for s in starts) else None)
  log_probs_fn = policies.response_log_probs_fn(
      exp.model, config.rollout.max_prompt_len, max(config.rollout.temperature, 1e-6),
      tuple(kit.prompts.max_prompt_len for kit in exp.kits),
      starts=starts if shared_fn else ())
  if exp.scoring:
    scorings = jax.tree.map(lambda *t: jnp.stack(t), *[kit.scoring for kit in exp.kits])
    log_probs_fn = policies.scoring_log_probs_fn(exp.model, scorings,
                                                 config.rollout.max_prompt_len,
                                                 max(config.rollout.temperature, 1e-6))
    shared_fn = None
  rows = None if layout is None else layout.rows(leading=1)
  return (train_step.make_train_step(step_config, forward, optimizer, log_probs_fn, rows,
                                     shared_fn, trainable(exp.model)), optimizer)


def build_optimizer(config: spec_lib.RunSpec, updates_per_step: int | None = None):
  """The optimizer of config.optimizer; its schedule spans train.steps steps of
  `updates_per_step` updates (default rl.ppo_epochs, the learner's)."""
  o = config.optimizer
  return train_step.make_optimizer(
      learning_rate=o.learning_rate, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
      max_grad_norm=o.grad_clip, schedule=o.schedule, warmup_steps=o.warmup_steps,
      decay_steps=config.train.steps * (updates_per_step or config.rl.ppo_epochs))
