"""Leduc Poker: rules and information states against OpenSpiel, payoffs, hidden cards."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyspiel
import pytest

import games
from games import leduc_poker as lp
from games import opponents

FOLD, CALL, RAISE, CHECK, BET = lp.FOLD, lp.CALL, lp.RAISE, lp.CHECK, lp.BET
OPENSPIEL_LEDUC = pyspiel.load_game("leduc_poker")


def _with_cards(state, cards):
  return state.replace(data=state.data.replace(cards=jnp.asarray(cards, jnp.int32)))


@functools.partial(jax.jit, static_argnums=0)
def _playouts(game, key, deals_B3):
  """Uniform random play from the given deals: (states [T, B], actions [T, B], info ids [T, B])."""
  batch = deals_B3.shape[0]
  states = jax.vmap(_with_cards)(jax.vmap(game.init)(jax.random.split(key, batch)), deals_B3)

  def turn(states, key):
    actions = jax.vmap(opponents.uniform_random)(states, jax.random.split(key, batch))
    info = jax.vmap(lp.information_set)(states)
    return jax.vmap(game.step)(states, actions, jax.random.split(key, batch)), (states, actions,
                                                                                 info)

  _, out = jax.lax.scan(turn, states, jax.random.split(key, game.max_turns + 1))
  return out


def _random_deals(rng, n):
  return np.stack([rng.permutation(6)[:3] for _ in range(n)]).astype(np.int32)


def _openspiel_information_state(data, player):
  """OpenSpiel's information-state string of the mover, written from our state."""
  contributions = [int(c) for c in data.contributions]
  rounds = [" ".join(str(lp.TO_OPENSPIEL[a]) for a in data.history[r] if a != lp.NO_ACTION)
            for r in range(2)]
  public = f"[Public: {int(data.cards[2])}]" if int(data.round) == 1 else ""
  return (f"[Observer: {player}][Private: {int(data.cards[player])}][Round {int(data.round) + 1}]"
          f"[Player: {player}][Pot: {sum(contributions)}]"
          f"[Money: {100 - contributions[0]} {100 - contributions[1]}]{public}"
          f"[Round1: {rounds[0]}][Round2: {rounds[1]}]")


def _collapse_suits(info: str) -> str:
  """OpenSpiel's string with card ids replaced by ranks (the suit never matters)."""
  for field in ("Private", "Public"):
    head = f"[{field}: "
    start = info.find(head)
    if start >= 0:
      end = info.index("]", start)
      rank = lp.RANKS[int(info[start + len(head):end]) // 2]
      info = info[:start] + head + rank + info[end:]
  return info


def test_matches_openspiel_on_random_playouts():
  """Same deal in OpenSpiel: same mover, legal actions, information state and returns."""
  game = games.make("leduc_poker")
  batch = 4096
  deals = _random_deals(np.random.default_rng(0), batch)
  states, actions, infos = jax.device_get(_playouts(game, jax.random.key(0), jnp.asarray(deals)))
  key_to_info, info_to_key, num_steps = {}, {}, 0
  for b in range(batch):
    spiel = OPENSPIEL_LEDUC.new_initial_state()
    spiel.apply_action(int(deals[b, 0]))
    spiel.apply_action(int(deals[b, 1]))
    for t in range(game.max_turns + 1):
      if spiel.is_chance_node():
        assert int(states.data.round[t, b]) == 1 and int(states.data.num_moves[t, b]) == 0
        spiel.apply_action(int(deals[b, 2]))
      if states.terminated[t, b]:
        assert spiel.is_terminal(), (b, t)
        np.testing.assert_array_equal(states.rewards[t, b], spiel.returns())
        break
      data = jax.tree.map(lambda x: x[t, b], states.data)
      player = int(states.current_player[t, b])
      assert player == spiel.current_player(), (b, t)
      legal = np.flatnonzero(states.legal_action_mask[t, b])
      assert sorted(lp.TO_OPENSPIEL[a] for a in legal) == spiel.legal_actions(), (b, t)
      info = spiel.information_state_string()
      assert _openspiel_information_state(data, player) == info, (b, t)
      # Our information-set id is OpenSpiel's information state up to suits, one to one.
      collapsed = _collapse_suits(info)
      assert key_to_info.setdefault(int(infos[t, b]), collapsed) == collapsed
      assert info_to_key.setdefault(collapsed, int(infos[t, b])) == int(infos[t, b])
      spiel.apply_action(lp.TO_OPENSPIEL[int(actions[t, b])])
      num_steps += 1
    else:
      pytest.fail(f"game {b} did not end")
  assert num_steps > 3 * batch and len(key_to_info) > 250  # Leduc has 288 up to suits.


def _play(deal, actions):
  game = games.make("leduc_poker")
  state = _with_cards(game.init(jax.random.key(0)), deal)
  for i, action in enumerate(actions):
    assert not state.terminated, i
    state = game.step(state, action, jax.random.key(i))
  return state


@pytest.mark.parametrize("deal,actions,rewards", [
    ((4, 0, 2), [BET, CALL, CHECK, CHECK], [3, -3]),  # K v J, public Q: high card.
    ((1, 4, 0), [CHECK, BET, CALL, BET, CALL], [7, -7]),  # J pairs the public J over a K.
    ((0, 1, 4), [BET, RAISE, CALL, BET, RAISE, CALL], [0, 0]),  # J v J: split, 13 chips each.
    ((2, 4, 3), [BET, RAISE, CALL, BET, RAISE, CALL], [13, -13]),  # Q pairs the public Q: beats K.
    ((0, 4, 2), [CHECK, BET, RAISE, FOLD], [3, -3]),  # Player 1 folds after putting in 3.
    ((0, 4, 2), [BET, CALL, CHECK, BET, FOLD], [-3, 3]),  # Player 0 folds in round 2.
])
def test_hand_computed_payoffs(deal, actions, rewards):
  state = _play(deal, actions)
  assert state.terminated and not state.invalid
  np.testing.assert_array_equal(state.rewards, rewards)


def test_betting_limits_and_round_change():
  state = _play((0, 2, 4), [CHECK, BET, RAISE])
  assert int(state.current_player) == 1
  np.testing.assert_array_equal(state.legal_action_mask, [True, True, False, False, False])
  np.testing.assert_array_equal(state.data.contributions, [5, 3])
  state = _play((0, 2, 4), [CHECK, BET, RAISE, CALL])
  assert int(state.data.round) == 1 and int(state.current_player) == 0
  np.testing.assert_array_equal(state.legal_action_mask, [False, False, False, True, True])
  state = _play((0, 2, 4), [CHECK, BET, RAISE, CALL, BET])
  np.testing.assert_array_equal(state.data.contributions, [9, 5])  # Round 2 bets are 4.


def test_observation_hides_private_and_unrevealed_cards():
  """While live, changing the opponent's card (and the public card in round 1) changes nothing."""
  game = games.make("leduc_poker")
  rng = np.random.default_rng(1)
  deals = jnp.asarray(_random_deals(rng, 512))
  states = jax.device_get(_playouts(game, jax.random.key(1), deals)[0])
  states = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), states)
  states = jax.tree.map(lambda x: x[~states.terminated], states)
  render = jax.jit(jax.vmap(game.render, in_axes=(0, None)))
  for player in range(2):
    cards = states.data.cards.copy()
    cards[:, 1 - player] = (cards[:, 1 - player] + 1 + rng.integers(0, 5, len(cards))) % 6
    hidden = states.data.round == 0
    cards[hidden, 2] = (cards[hidden, 2] + 3) % 6
    changed = states.replace(data=states.data.replace(cards=cards))
    np.testing.assert_array_equal(render(states, player), render(changed, player))
  text = game.render_text(jax.tree.map(lambda x: x[0], states), 0)
  assert "Public card: not revealed yet\n" in text and text.count("Your card:") == 1


def test_observation_is_the_information_set():
  """The mover's rendered observation and information-set id determine each other."""
  game = games.make("leduc_poker")
  deals = jnp.asarray(_random_deals(np.random.default_rng(2), 2048))
  states, _, infos = jax.device_get(_playouts(game, jax.random.key(2), deals))
  live = ~states.terminated
  ids = np.asarray(jax.jit(jax.vmap(jax.vmap(game.render)))(states))[live]
  by_key, by_view = {}, {}
  for key, view in zip(infos[live], map(bytes, ids)):
    assert by_key.setdefault(int(key), view) == view
    assert by_view.setdefault(view, int(key)) == int(key)
  assert len(by_key) > 250


def test_init_deals_uniformly():
  game = games.make("leduc_poker")
  cards = np.asarray(jax.vmap(game.init)(jax.random.split(jax.random.key(3), 12000)).data.cards)
  assert (cards[:, 0] != cards[:, 1]).all() and (cards[:, 2] != cards[:, :2].T).all()
  for slot in range(3):
    counts = np.bincount(cards[:, slot], minlength=6)
    assert counts.min() > 1850 and counts.max() < 2150, counts  # 2000 expected, sd ~41.
