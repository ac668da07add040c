"""Kuhn Poker: rules against OpenSpiel, multi-round payoffs, hidden cards, Nash play."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyspiel
import pytest
from open_spiel.python import policy as os_policy
from open_spiel.python.algorithms import expected_game_score

import games
from games import kuhn_poker as kp
from games import opponents

CHECK, BET, CALL, FOLD = kp.CHECK, kp.BET, kp.CALL, kp.FOLD
TO_OPENSPIEL = {CHECK: 0, FOLD: 0, BET: 1, CALL: 1}  # OpenSpiel: 0 = pass, 1 = bet.
OPENSPIEL_KUHN = pyspiel.load_game("kuhn_poker")


def _with_cards(state, cards):
  return state.replace(data=state.data.replace(cards=jnp.asarray(cards, jnp.int32)))


@functools.partial(jax.jit, static_argnums=0)
def _playouts(game, key, deals_B2):
  """Uniform random play from the given first deals: (states [T, B], actions [T, B], info sets)."""
  batch = deals_B2.shape[0]
  init_key, play_key = jax.random.split(key)
  states = jax.vmap(game.init)(jax.random.split(init_key, batch))
  states = jax.vmap(_with_cards)(states, deals_B2)

  def turn(states, key):
    action_key, step_key = jax.random.split(key)
    actions = jax.vmap(opponents.uniform_random)(states, jax.random.split(action_key, batch))
    info = jax.vmap(kp.information_set)(states)
    next_states = jax.vmap(game.step)(states, actions, jax.random.split(step_key, batch))
    return next_states, (states, actions, info)

  _, out = jax.lax.scan(turn, states, jax.random.split(play_key, game.max_turns + 1))
  return out


def _random_deals(rng, n):
  return np.stack([rng.permutation(3)[:2] for _ in range(n)]).astype(np.int32)


@pytest.mark.parametrize("rounds,batch", [(1, 4096), (3, 1024)])
def test_matches_openspiel_on_random_playouts(rounds, batch):
  """Each round replays in OpenSpiel (seats rotated so its player 0 is our opener) with our deal."""
  game = games.make("kuhn_poker", rounds=rounds)
  deals = _random_deals(np.random.default_rng(rounds), batch)
  states, actions, (info_cards, info_nodes) = jax.device_get(
      _playouts(game, jax.random.key(rounds), jnp.asarray(deals)))
  num_steps = 0
  for b in range(batch):
    chips, spiel, first, rounds_played = np.zeros(2), None, 0, 0
    for t in range(game.max_turns + 1):
      data = jax.tree.map(lambda x: x[t, b], states.data)
      round_start = spiel is None or spiel.is_terminal()
      if states.terminated[t, b]:
        assert round_start and rounds_played == rounds, (b, t)
        expected = chips if rounds == 1 else np.sign(chips)
        np.testing.assert_array_equal(states.rewards[t, b], expected)
        break
      assert (data.num_moves == 0) == round_start, (b, t)
      if round_start:
        first, rounds_played = rounds_played % 2, rounds_played + 1
        spiel = OPENSPIEL_KUHN.new_initial_state()
        spiel.apply_action(int(data.cards[first]))
        spiel.apply_action(int(data.cards[1 - first]))
      player = int(states.current_player[t, b])
      assert spiel.current_player() == (player - first) % 2, (b, t)
      legal = np.flatnonzero(states.legal_action_mask[t, b])
      assert sorted({TO_OPENSPIEL[a] for a in legal}) == spiel.legal_actions(), (b, t)
      assert len(legal) == 2, (b, t)
      info = f"{info_cards[t, b]}{kp.NODES[info_nodes[t, b]]}"
      assert info == spiel.information_state_string(), (b, t)
      assert int(data.cards[player]) == int(info[0])
      spiel.apply_action(TO_OPENSPIEL[int(actions[t, b])])
      num_steps += 1
      if spiel.is_terminal():
        chips[[first, 1 - first]] += spiel.returns()
    else:
      pytest.fail(f"game {b} did not end")
  assert num_steps > 2 * batch * rounds


def _play(game, deals, actions):
  """Scripted play: deals[r] are the cards (player 0, player 1) of round r."""
  step = jax.jit(game.step)
  state = _with_cards(game.init(jax.random.key(0)), deals[0])
  for i, action in enumerate(actions):
    assert not state.terminated, i
    rounds_done = int(state.data.rounds_done)
    state = step(state, action, jax.random.key(i + 1))
    if int(state.data.rounds_done) > rounds_done and not state.terminated:
      state = _with_cards(state, deals[rounds_done + 1])
  return state


@pytest.mark.parametrize("deals,actions,chips,rewards", [
    # K v J bet-call (+2); J v Q, Player 1 opens and bets, 0 folds (-1); J v Q check-check (-1).
    ([(2, 0), (0, 1), (0, 1)], [BET, CALL, BET, FOLD, CHECK, CHECK], 0, [0, 0]),
    # Q v K check-bet-fold (-1); K v J, Player 1 checks, 0 bets, 1 calls (+2); J v K bet-fold (+1).
    ([(1, 2), (2, 0), (0, 2)], [CHECK, BET, FOLD, CHECK, BET, CALL, BET, FOLD], 2, [1, -1]),
    # J v Q bet-call (-2); Q v K bet-call (-2); K v Q check-bet-call (+2).
    ([(0, 1), (1, 2), (2, 1)], [BET, CALL, BET, CALL, CHECK, BET, CALL], -2, [-1, 1]),
])
def test_three_round_payoffs(deals, actions, chips, rewards):
  game = games.make("kuhn_poker", rounds=3)
  state = _play(game, deals, actions[:-1])
  assert not state.terminated and (np.asarray(state.rewards) == 0).all()
  state = game.step(state, actions[-1], jax.random.key(99))
  assert state.terminated and int(state.data.chips) == chips
  np.testing.assert_array_equal(state.rewards, rewards)


@pytest.mark.parametrize("rounds,payoff,deals,actions,rewards", [
    (1, "", [(2, 0)], [BET, CALL], [2, -2]),  # One round: the chips by default.
    (1, "win", [(2, 0)], [BET, CALL], [1, -1]),  # SPIRAL's: +1 to the winner.
    (1, "win", [(0, 1)], [CHECK, BET, FOLD], [-1, 1]),
    (3, "chips", [(2, 0), (0, 1), (0, 1)],  # The chip total (+2 -1 -1).
     [BET, CALL, BET, FOLD, CHECK, CHECK], [0, 0]),
    (3, "chips", [(1, 2), (2, 0), (0, 2)],
     [CHECK, BET, FOLD, CHECK, BET, CALL, BET, FOLD], [2, -2]),
])
def test_payoff_option(rounds, payoff, deals, actions, rewards):
  state = _play(games.make("kuhn_poker", rounds=rounds, payoff=payoff), deals, actions)
  assert state.terminated
  np.testing.assert_array_equal(state.rewards, rewards)


def test_unknown_payoff_names_the_option():
  with pytest.raises(ValueError, match="kuhn_poker: payoff must be one of .*'win', got 'sign'"):
    games.make("kuhn_poker", payoff="sign")


def test_first_player_alternates_and_chips_show():
  game = games.make("kuhn_poker", rounds=3)
  state = _play(game, [(2, 0), (0, 1), (0, 1)], [BET, CALL])
  assert int(state.current_player) == 1 and int(state.data.num_moves) == 0
  assert "Round 2 of 3; Player 1 acts first." in game.render_text(state, 1)
  assert "Chips so far: you -2, opponent +2." in game.render_text(state, 1)
  assert "Round 1 result: Player 0 won 2 chips at showdown." in game.render_text(state, 0)
  state = _play(game, [(2, 0), (0, 1), (0, 1)], [BET, CALL, CHECK, CHECK])
  assert int(state.current_player) == 0


def test_rules_false_keeps_the_observation_and_drops_the_rules():
  full, brief = games.make("kuhn_poker"), games.make("kuhn_poker", rules=False)
  state = _play(full, [(2, 0)], [CHECK])
  full_text, brief_text = full.render_text(state, 1), brief.render_text(state, 1)
  assert "Rules:" in full_text and "Rules:" not in brief_text
  assert brief_text.startswith("You are Player 1 in a game of Kuhn Poker.\nYour card: J\n")
  assert full_text.endswith(brief_text.split("\n", 1)[1])  # Same observation after the intro.
  assert len(brief_text) < len(full_text) / 3


@pytest.mark.parametrize("rounds", [1, 3])
def test_observation_hides_the_opponents_card(rounds):
  """While a round is live, swapping the opponent's card for the unused one changes nothing."""
  game = games.make("kuhn_poker", rounds=rounds)
  deals = _random_deals(np.random.default_rng(7), 256)
  states = jax.device_get(_playouts(game, jax.random.key(7), jnp.asarray(deals))[0])
  states = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), states)
  live = ~states.terminated
  states = jax.tree.map(lambda x: x[live], states)
  render = jax.jit(jax.vmap(game.render, in_axes=(0, None)))
  for player in range(2):
    cards = states.data.cards
    unused = 3 - cards.sum(-1)
    swapped_cards = cards.copy()
    swapped_cards[:, 1 - player] = unused
    swapped = states.replace(data=states.data.replace(cards=swapped_cards))
    np.testing.assert_array_equal(render(states, player), render(swapped, player))
    for i in range(0, len(cards), 17):
      state = jax.tree.map(lambda x: x[i], states)
      text = game.render_text(state, player)
      assert f"Your card: {kp.CARDS[cards[i, player]]}\n" in text
      assert text.count("Your card:") == 1


def test_init_deals_uniformly():
  game = games.make("kuhn_poker")
  cards = np.asarray(jax.vmap(game.init)(jax.random.split(jax.random.key(3), 6000)).data.cards)
  assert (cards[:, 0] != cards[:, 1]).all()
  counts = np.bincount(cards[:, 0] * 3 + cards[:, 1], minlength=9)[[1, 2, 3, 5, 6, 7]]
  assert counts.min() > 850 and counts.max() < 1150, counts  # 1000 expected, sd ~29.


def test_nash_probs_value_and_play_match_openspiel():
  """The Nash family's value is -1/18 in OpenSpiel, and our policies realise it in our game."""
  game = games.make("kuhn_poker")
  for alpha in (0.0, 1 / 6, 1 / 3):
    probs = np.asarray(opponents.kuhn_nash_probs(alpha))
    tabular = os_policy.TabularPolicy(OPENSPIEL_KUHN)
    for info, row in tabular.state_lookup.items():
      tabular.action_probability_array[row] = probs[int(info[0]), kp.NODES.index(info[1:])]
    value = expected_game_score.policy_value(OPENSPIEL_KUHN.new_initial_state(), [tabular] * 2)
    np.testing.assert_allclose(value, [-1 / 18, 1 / 18], atol=1e-6)

  @jax.jit
  def play(key, alpha):
    policy = opponents.kuhn_nash(alpha)
    keys = jax.random.split(key, (game.max_turns + 1, 3))
    state = game.init(keys[0, 0])
    for t in range(game.max_turns):
      state = game.step(state, policy(state, keys[t, 1]), keys[t, 2])
    return state

  n = 40000
  final = jax.vmap(play, in_axes=(0, None))(jax.random.split(jax.random.key(5), n), 1 / 6)
  assert bool(final.terminated.all()) and not bool(final.invalid.any())
  mean = float(final.rewards[:, 0].mean())
  assert abs(mean + 1 / 18) < 0.03, mean  # sd of the mean ~0.007.


def test_tabular_policy_plays_each_information_set():
  """A deterministic table: the policy's action at every reachable info set is the table's."""
  rng = np.random.default_rng(0)
  choice = rng.integers(0, 2, size=(3, 4))
  probs = np.stack([1 - choice, choice], -1).astype(np.float32)
  policy = jax.jit(opponents.kuhn_tabular(probs))
  game = games.make("kuhn_poker")
  states, _, (cards, nodes) = jax.device_get(
      _playouts(game, jax.random.key(1), jnp.asarray(_random_deals(rng, 64))))
  seen = set()
  for t in range(game.max_turns):
    for b in range(64):
      state = jax.tree.map(lambda x: x[t, b], states)
      if state.terminated:
        continue
      card, node = int(cards[t, b]), int(nodes[t, b])
      expected = ((CHECK, BET) if node < 2 else (FOLD, CALL))[choice[card, node]]
      assert int(policy(state, jax.random.key(t))) == expected
      seen.add((card, node))
  assert len(seen) == 12
