"""Jittable rendering and parsing against the plain-Python references, on real tokenizers."""

import dataclasses
import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import games
from games import opponents, team_zero_one
from jaxplay.rl import rollout
from jaxplay.text import answers, prompts
from jaxplay.text import tokenizer as tokenizers
from tests import fixtures_text

GAMES = [(name, {}) for name in games.registered_names()]
GAMES += [("kuhn_poker", {"rounds": 3})] if "kuhn_poker" in games.registered_names() else []
ACTION_SETS = [(name, {}) for name in games.registered_names()]  # One game per action vocabulary.
# (tokenizer, chat format): Gemma's SentencePiece with turn markers, a Qwen-like BPE with ChatML.
SETUPS = {"gemma": (fixtures_text.gemma_tokenizer, "gemma"),
          "bpe": (fixtures_text.bpe_tokenizer, "chatml")}
SPIRAL_GAMES = ("kuhn_poker", "tic_tac_toe", "simple_negotiation")


def _matrix(game_list):
  """Every game with every tokenizer; Gemma beyond SPIRAL's games (plain options) is slow."""
  params = []
  for setup in sorted(SETUPS):
    for name, options in game_list:
      fast = setup == "bpe" or (name in SPIRAL_GAMES and not options)
      label = name + "".join(f"-{k}{v}" for k, v in options.items()) + f"-{setup}"
      params.append(pytest.param(setup, name, options, id=label,
                                 marks=() if fast else pytest.mark.slow))
  return params


BOUND_GAMES = 1024  # Games played for the prompt bound; _states reuses the compiled playouts.


@functools.lru_cache(maxsize=None)
def _setup(setup, name, options=()):
  load, fmt = SETUPS[setup]
  tokenizer = load()
  chat = tokenizers.chat_format(tokenizer, fmt)
  game = games.make(name, **dict(options))
  return game, tokenizer, chat, prompts.prompt_table(game, tokenizer, chat, bound_games=BOUND_GAMES)


@functools.lru_cache(maxsize=None)
def _byte_table(setup):
  return tokenizers.byte_table(SETUPS[setup][0]())


def _states(game, seed, count):
  """`count` random reachable states (live and terminal), unbatched on the host."""
  states = opponents.random_playouts(game, jax.random.key(seed), BOUND_GAMES)
  states = jax.device_get(jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), states))
  rows = np.random.default_rng(seed).permutation(states.turn.shape[0])[:count]
  return jax.tree.map(lambda x: x[rows], states)


@pytest.mark.parametrize("setup, name, options", _matrix(GAMES))
def test_render_decodes_to_reference_prompt(setup, name, options):
  game, tokenizer, chat, table = _setup(setup, name, tuple(options.items()))
  states = _states(game, seed=1, count=1500)
  render = jax.jit(jax.vmap(lambda t, s, p: prompts.render_tokens(t, game.render(s, p)),
                            in_axes=(None, 0, None)))
  for player in range(game.num_players):
    tokens, lengths = map(np.asarray, render(table, states, player))
    decoded = [tokenizers.decode(tokenizer, row[len(row) - n:], skip_special_tokens=False)
               for row, n in zip(tokens, lengths)]
    for i, prompt in enumerate(decoded):
      state = jax.tree.map(lambda x, i=i: x[i], states)
      assert prompt == prompts.reference_prompt(game, chat, state, player)
    assert (lengths <= table.max_prompt_len).all()
    padding = np.arange(table.max_prompt_len) < table.max_prompt_len - lengths[:, None]
    assert (tokens[padding] == table.pad_id).all()
    # Every prompt of the player begins with its seat's start (the prefix alone: one start).
    start = np.asarray(table.starts[player % table.starts.shape[0]])
    columns = (table.max_prompt_len - lengths)[:, None] + np.arange(start.size)
    assert (np.take_along_axis(tokens, columns, axis=1) == start).all()
  assert table.starts.shape[0] in (1, game.num_players)
  np.testing.assert_array_equal(table.starts[:, :table.prefix.shape[0]],
                                np.broadcast_to(table.prefix, (table.starts.shape[0],
                                                               table.prefix.shape[0])))


@pytest.mark.parametrize("name", SPIRAL_GAMES)
def test_each_seats_start_is_the_prefix_then_its_intro(name):
  game, tokenizer, chat, table = _setup("gemma", name)
  assert table.starts.shape[0] == 2
  for player in (0, 1):
    text = tokenizers.decode(tokenizer, np.asarray(table.starts[player]),
                             skip_special_tokens=False)
    assert text == prompts.prompt_text(chat, "\x00").split("\x00")[0] + game.intro(player)


def test_a_game_whose_observations_do_not_start_with_its_intro_is_refused():
  @dataclasses.dataclass(frozen=True)
  class WrongIntro(team_zero_one.TeamZeroOne):
    def intro(self, player):  # Its render starts with the team line, not the agent line.
      return self.phrases[3 + player]

  tokenizer = fixtures_text.bpe_tokenizer()
  with pytest.raises(ValueError, match=r"team_zero_one: an observation of player 0 does not "
                                       r"start with intro\(0\)"):
    prompts.prompt_table(WrongIntro(), tokenizer, tokenizers.chat_format(tokenizer, "chatml"),
                         bound_games=64)


def test_right_padding_and_completion_format():
  game, tokenizer, chat, table = _setup("gemma", "kuhn_poker")
  completion = tokenizers.chat_format(tokenizer, "completion")
  right = prompts.prompt_table(game, tokenizer, completion, left_pad=False, bound_games=BOUND_GAMES)
  render = jax.jit(prompts.render_tokens)
  states = _states(game, seed=2, count=20)
  for i in range(20):
    state = jax.tree.map(lambda x, i=i: x[i], states)
    phrase_ids = game.render(state, 1)
    tokens, length = map(np.asarray, render(right, phrase_ids))
    assert (tokens[length:] == tokenizer.pad_token_id).all()
    assert tokenizers.decode(tokenizer, tokens[:length], skip_special_tokens=False) == (
        prompts.reference_prompt(game, completion, state, 1))
    left_tokens, left_length = map(np.asarray, render(table, phrase_ids))
    assert left_length > length and left_tokens[-1] != tokenizer.pad_token_id


def test_too_long_prompt_is_a_setup_error():
  game, tokenizer, chat, table = _setup("bpe", "tic_tac_toe")
  make = lambda n: prompts.prompt_table(game, tokenizer, chat, n, bound_games=BOUND_GAMES)
  assert make(table.max_prompt_len).max_prompt_len == table.max_prompt_len
  with pytest.raises(ValueError, match=f"tic_tac_toe.*{table.max_prompt_len}.*chatml"):
    make(table.max_prompt_len - 1)


def test_fit_table_renders_at_the_rounded_bound_and_pads_to_a_common_width():
  game, tokenizer, chat, table = _setup("bpe", "tic_tac_toe")  # Width = the bound.
  fit = prompts.prompt_table(game, tokenizer, chat, 4096, bound_games=BOUND_GAMES, fit=True)
  assert fit.max_prompt_len == -(-table.max_prompt_len // 8) * 8
  state = game.init(jax.random.key(3))
  tokens, length = prompts.render_tokens(fit, game.render(state, 0))
  wide, wide_length = prompts.render_tokens(table.replace(max_prompt_len=600),
                                            game.render(state, 0))
  assert int(length) == int(wide_length)
  samples = rollout.TurnSamples(
      prompt_tokens=tokens[None], prompt_lengths=length[None],
      **{k: None for k in ("response_tokens", "response_logprobs", "response_lengths", "valid",
                           "action", "legal_action_mask", "outcomes")})
  padded = rollout.pad_prompts(samples, 600, fit.pad_id)
  np.testing.assert_array_equal(padded.prompt_tokens[0], wide)


KUHN = ("check", "bet", "call", "fold")
NEGOTIATION = ("Accept", "Deny", "Offer: 3 Wood -> 2 Gold", "Offer: 10 Gold -> 1 Wood")
_parse_tokens = jax.jit(answers.parse_tokens)
# (response, actions, expected id): each follows from the rules in jaxplay/text/answers.py.
RULES = [
    ("I will \\boxed{check}.", KUHN, 0),
    ("\\boxed{ [Bet] }", KUHN, 1),
    ("\\boxed{\\text{CALL}}", KUHN, 2),
    ("\\boxed{{fold}}", KUHN, 3),
    ("\\boxed{\"fold\"}", KUHN, 3),
    ("\\boxed{check} no, \\boxed{bet}", KUHN, 1),  # The last box counts.
    ("\\boxed{check} then \\boxed{bet", KUHN, -1),  # The last box is unclosed.
    ("\\boxed{bet} and \\boxed{}", KUHN, -1),  # Empty last box.
    ("\\boxed{\\boxed{call}}", KUHN, 2),  # The inner box starts last.
    ("\\boxed{c{he}ck}", KUHN, 0),  # Inner braces close inside the box, then are dropped.
    ("\\boxed {check}", KUHN, -1),
    ("\\boxed{check.}", KUHN, -1),
    ("\\boxed{ＣＨＥＣＫ}", KUHN, -1),  # Full-width letters are not ASCII.
    ("\\boxed{ch eck}", KUHN, -1),
    ("\\boxed{\ncheck\t}", KUHN, 0),
    ("\\boxed{[Offer:  3 wood ->\t2   GOLD]}", NEGOTIATION, 2),
    ("\\boxed{Offer: 3 Wood->2 Gold}", NEGOTIATION, -1),
    ("\\boxed{\\text{Offer: 10 Gold -> 1 Wood}} thanks", NEGOTIATION, 3),
    ("\\boxed{Offer: 3 Wood -> 2 Gold\u00a0}", NEGOTIATION, -1),  # No-break space is not ASCII.
    ("\\boxed{accept}", NEGOTIATION, 0),
    ("no box: accept", NEGOTIATION, -1),
]


@pytest.mark.parametrize("response, actions, expected", RULES)
def test_parse_rules(response, actions, expected):
  assert answers.parse_text(response, actions) == expected
  tokenizer = fixtures_text.bpe_tokenizer()
  ids = tokenizer(response, add_special_tokens=False)["input_ids"]
  table = answers.parse_table(actions, _byte_table("bpe"))
  assert len(ids) <= 48
  assert _parse_tokens(table, jnp.asarray(ids + [0] * (48 - len(ids))), len(ids)) == expected


def test_cut_off_response():
  tokenizer = fixtures_text.bpe_tokenizer()
  table = answers.parse_table(KUHN, _byte_table("bpe"))
  ids = jnp.asarray(tokenizer("\\boxed{fold}", add_special_tokens=False)["input_ids"])
  assert _parse_tokens(table, ids, len(ids)) == 3
  assert _parse_tokens(table, ids, len(ids) - 1) == -1


@pytest.mark.parametrize("setup, name, options", _matrix(ACTION_SETS))
def test_scoring_table_answers_parse_to_their_action(setup, name, options):
  game, tokenizer = games.make(name, **options), SETUPS[setup][0]()
  scoring = answers.scoring_table(game.actions, tokenizer)
  tokens, lengths = np.asarray(scoring.tokens), np.asarray(scoring.lengths)
  for action, row, n in zip(game.actions, tokens, lengths):
    assert tokenizers.decode(tokenizer, row[:n]) == "\\boxed{" + action + "}"
    assert tokenizers.decode(tokenizer, row[:scoring.prefix_len]) == "\\boxed{"
  table = answers.parse_table(game.actions, _byte_table(setup))
  parsed = jax.jit(jax.vmap(answers.parse_tokens, in_axes=(None, 0, 0)))(table, scoring.tokens,
                                                                          scoring.lengths)
  np.testing.assert_array_equal(parsed, np.arange(game.num_actions))


# --- Fuzz: the jitted parser against the plain-Python one. ---

RESPONSE_TOKENS = 48
NOISE = ["\\boxed{", "\\boxed", "boxed{", "{", "}", "}}", "\\text{", "\\text", "[", "]", "\"", "'",
         "`", " ", "  ", "\t", "\n", "\r\n", "\\", "$", ".", "Offer:", "->", "Wood", "Gold", "10",
         "é", "中", "😀", "\u00a0", "ＣＨＥＣＫ", "<think>", "<|im_end|>", "<end_of_turn>", "x"]
DECORATIONS = [("", ""), ("\\text{", "}"), ("[", "]"), ("\"", "\""), ("'", "'"), (" ", "  "),
               ("\\text{[", "]}"), ("{", "}"), ("\n", "\t")]


def _variant(action, rng):
  """The action with random case, doubled inner whitespace and a random decoration."""
  chars = [c.upper() if rng.random() < 0.3 else c.lower() if rng.random() < 0.3 else c
           for c in action]
  chars = [rng.choice([" ", "  ", "\t", " \n"]) if c == " " else c for c in chars]
  if rng.random() < 0.1 and chars:
    chars.insert(rng.integers(len(chars)), rng.choice(NOISE))
  left, right = DECORATIONS[rng.integers(len(DECORATIONS))]
  return left + "".join(chars) + right


def _fuzz_text(actions, rng):
  noise = lambda: "".join(rng.choice(NOISE, rng.integers(0, 6)))
  if rng.random() < 0.2:
    return noise() + noise()
  answer = "\\boxed{" + _variant(actions[rng.integers(len(actions))], rng)
  answer += "}" if rng.random() < 0.9 else ""
  return noise() + answer + (noise() if rng.random() < 0.5 else "")


def _fuzz_ids(vocab_size, rng, fragments):
  """Random vocabulary ids mixed with tokens of boxes, braces and actions."""
  ids = []
  while len(ids) < RESPONSE_TOKENS:
    if rng.random() < 0.3:
      ids.append(int(rng.integers(vocab_size)))
    else:
      ids += fragments[rng.integers(len(fragments))]
  return ids


@pytest.mark.parametrize("setup, name, options", _matrix(ACTION_SETS))
def test_parser_fuzz(setup, name, options):
  game, tokenizer = games.make(name, **options), SETUPS[setup][0]()
  actions = game.actions
  rng = np.random.default_rng(zlib.crc32(f"{setup}-{name}-{options}".encode()))
  encode = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]
  responses = encode([_fuzz_text(actions, rng) for _ in range(7000)])
  fragments = encode(NOISE + [_variant(a, rng) for a in actions] + list(actions))
  vocab_size = len(tokenizer)
  responses += [_fuzz_ids(vocab_size, rng, fragments) for _ in range(3000)]
  tokens = np.zeros((len(responses), RESPONSE_TOKENS), np.int32)
  lengths = np.zeros((len(responses),), np.int32)
  for i, ids in enumerate(responses):
    ids = ids[:RESPONSE_TOKENS]  # Longer responses are cut off at the token limit.
    cut = rng.random() < 0.2
    lengths[i] = rng.integers(len(ids) + 1) if cut else len(ids)
    tokens[i] = rng.integers(vocab_size, size=RESPONSE_TOKENS)  # Ignored past the length.
    tokens[i, :len(ids)] = ids
  table = answers.parse_table(actions, _byte_table(setup))
  parse = jax.jit(lambda t, x, n: jax.lax.map(lambda r: answers.parse_tokens(t, *r), (x, n),
                                                batch_size=500))
  got = np.asarray(parse(table, tokens, lengths))
  texts = tokenizer.batch_decode([row[:n] for row, n in zip(tokens.tolist(), lengths)],
                                 skip_special_tokens=True, clean_up_tokenization_spaces=False)
  expected = np.array([answers.parse_text(t, actions) for t in texts])
  mismatches = np.flatnonzero(got != expected)
  assert not mismatches.size, [(texts[i], got[i], expected[i]) for i in mismatches[:5]]
  assert 0.3 < (expected >= 0).mean() < 0.9  # Both valid and invalid answers are well covered.
  assert set(expected[expected >= 0]) == set(range(game.num_actions))


@pytest.mark.parametrize("setup, name", [("bpe", n) for n in SPIRAL_GAMES] + [("gemma", "kuhn_poker")])
def test_prompt_style_renders_its_reference(setup, name):
  """Worked examples and another instruction line render exactly as the reference text."""
  game, tokenizer, chat, _ = _setup(setup, name)
  style = prompts.PromptStyle(instruction="Answer in \\boxed{} only.",
                              examples=prompts.worked_examples(game, 2))
  table = prompts.prompt_table(game, tokenizer, chat, bound_games=BOUND_GAMES, style=style)
  states = _states(game, 1, 8)
  for i in range(8):
    state = jax.tree.map(lambda x: x[i], states)
    tokens, length = prompts.render_tokens(table, game.render(state))
    row = np.asarray(tokens)[table.max_prompt_len - int(length):]
    assert tokenizers.decode(tokenizer, row, skip_special_tokens=False) == (
        prompts.reference_prompt(game, chat, state, int(state.current_player), style))
  prompt = prompts.reference_prompt(game, chat, state, 0, style)
  assert prompt.count(prompts.PROMPT_PREFIX) == 3 and prompt.count("Answer in \\boxed{} only.") == 3
  assert prompts.PROMPT_SUFFIX not in prompt


@pytest.mark.parametrize("name", ["kuhn_poker", "tic_tac_toe"])
def test_shared_rules_are_shown_once_in_the_prompt_start(name):
  """With the rules paragraph shown once (the `rules=False` game's observations): it opens the
  message, sits in the shared start (`table.prefix`) and nowhere in a row, and every packed prompt
  decodes to the reference text, which holds it once."""
  full, tokenizer, chat, _ = _setup("gemma", name)
  game = games.make(name, rules=False)
  style = prompts.PromptStyle(examples=prompts.worked_examples(game, 2), rules=full.rules_text)
  table = prompts.prompt_table(game, tokenizer, chat, bound_games=BOUND_GAMES, style=style,
                               fit=True)
  prefix = tokenizers.decode(tokenizer, np.asarray(table.prefix), skip_special_tokens=False)
  assert prefix.startswith(chat.prefix + full.rules_text + "\n" + prompts.PROMPT_PREFIX)
  states = _states(game, 2, 8)
  for i in range(8):
    state = jax.tree.map(lambda x: x[i], states)
    tokens, length = prompts.render_tokens(table, game.render(state))
    row = np.asarray(tokens)[table.max_prompt_len - int(length):]
    text = tokenizers.decode(tokenizer, row, skip_special_tokens=False)
    assert text == prompts.reference_prompt(game, chat, state, int(state.current_player), style)
    assert text.count(full.rules_text) == 1 and text.startswith(prefix)
  spiral = prompts.prompt_table(full, tokenizer, chat, bound_games=BOUND_GAMES, fit=True,
                                style=dataclasses.replace(style, rules="",
                                                          examples=prompts.worked_examples(full, 2)))
  own = lambda t: t.max_prompt_len - t.prefix.shape[0]  # Tokens a row holds after the start.
  assert own(table) < own(spiral) - 40


@pytest.mark.parametrize("name", SPIRAL_GAMES)
def test_worked_examples_answer_legally_and_vary(name):
  game = games.make(name)
  examples = prompts.worked_examples(game, 3, seed=5)
  assert len(examples) == 3 and prompts.worked_examples(game, 3, seed=5) == examples
  assert prompts.worked_examples(game, 0) == ()
  for observation, answer in examples:
    action = answers.parse_text(answer, game.actions)
    assert action >= 0 and f"[{game.actions[action]}]" in observation or name != "kuhn_poker"
  if name == "kuhn_poker":  # One example facing a bet, one not: they do not all answer alike.
    facing_bet = ["legal actions: [call]" in observation for observation, _ in examples]
    assert any(facing_bet) and not all(facing_bet)


def test_worked_examples_show_new_answers_once_every_legal_set_is_shown():
  """Kuhn Poker has two legal sets (check/bet, call/fold): after one example of each, the next
  two answer what was not shown yet, so four examples show each of the four actions once."""
  game = games.make("kuhn_poker", rules=False)
  for seed in range(3):
    examples = prompts.worked_examples(game, 4, seed=seed)
    assert prompts.worked_examples(game, 2, seed=seed) == examples[:2]
    assert sorted(answers.parse_text(a, game.actions) for _, a in examples) == [0, 1, 2, 3]


def _first_closed_box(pieces: list[str]) -> int:
  """Reference of answer_stop_rule: index of the first piece after which the text has a closed
  `\\boxed{...}` (counted from its last `\\boxed{`), or -1."""
  for i in range(len(pieces)):
    if answers.boxed_content("".join(pieces[:i + 1])) is not None:
      return i
  return -1


@pytest.mark.parametrize("response", [
    "I bet. \\boxed{bet} and then more text",
    "\\boxed{\\text{call}} \\boxed{fold}",
    "\\boxed{\\boxed{check}}",
    "no answer here } at all {",
    "box{ \\boxed{Offer: 3 Wood -> 2 Gold}",
    "\\boxed{unclosed {nested}",
])
def test_answer_stop_rule_stops_at_the_closing_brace(response):
  tokenizer = fixtures_text.bpe_tokenizer()
  ids = tokenizer(response, add_special_tokens=False)["input_ids"]
  pieces = [tokenizers.decode(tokenizer, [i]) for i in ids]
  assert "".join(pieces) == response
  rule = answers.answer_stop_rule(answers.parse_table(KUHN, _byte_table("bpe")))
  carry = rule.init(2)
  done = []
  for token in ids:  # Row 0 writes the response; row 1 writes padding (id 0, never done).
    carry, ends = jax.jit(rule.update)(carry, jnp.asarray([token, 0]))
    done.append(bool(ends[0]))
    assert not ends[1]
  assert (done.index(True) if any(done) else -1) == _first_closed_box(pieces)


def test_sampler_stops_rows_at_their_answer():
  """A stop rule ends each row of the compiled sampler where it fires (the token is kept)."""
  from jaxplay.models import sampling  # pylint: disable=import-outside-toplevel
  from jaxplay.models import configs  # pylint: disable=import-outside-toplevel
  from jaxplay.models import transformer  # pylint: disable=import-outside-toplevel
  model = configs.get("tiny", vocab_size=32, dtype="float32", param_dtype="float32")
  params = transformer.init_params(model, jax.random.key(0))
  count = lambda carry, tokens: (carry + 1, carry + 1 == jnp.asarray([2, 5]))
  rule = sampling.StopRule(lambda batch: jnp.zeros((batch,), jnp.int32), count)
  out = sampling.sample(model, params, jnp.ones((2, 4), jnp.int32), jnp.asarray([4, 3]),
                        jax.random.key(1), 1.0, 1.0, 0, jnp.asarray([-1]), max_response_len=8,
                        pad_id=0, stop_rule=rule)
  assert out.lengths.tolist() == [2, 5]
