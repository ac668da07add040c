"""Advantage estimators against hand-computed values and plain-Python references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplay.rl import advantages

EPS = 1e-6


def make_samples(reward, role, game_index, turn_index=None, game_kind=None, group=None,
                 mask=None, turn_reward=None):
  n = len(reward)
  as_int = lambda x, default: jnp.asarray(default if x is None else x, jnp.int32)
  return advantages.Outcomes(
      reward=jnp.asarray(reward, jnp.float32),
      game_kind=as_int(game_kind, np.zeros(n)),
      role=as_int(role, None),
      group=as_int(group, np.zeros(n)),
      game_index=as_int(game_index, None),
      turn_index=as_int(turn_index, np.arange(n)),
      mask=jnp.asarray(np.ones(n, bool) if mask is None else mask),
      turn_reward=None if turn_reward is None else jnp.asarray(turn_reward, jnp.float32))


def run(name, samples, baselines=None, **options):
  baselines = jnp.zeros((2, 2)) if baselines is None else baselines
  fn = jax.jit(lambda s, b: advantages.get(name)(s, b, advantages.Options(**options)))
  adv, new_baselines = fn(samples, baselines)
  return np.asarray(adv), np.asarray(new_baselines)


def test_unknown_estimator_lists_valid_ones():
  with pytest.raises(ValueError, match="valid estimators: rae, grpo, dr_grpo, rloo, spo, mars, reinforce"):
    advantages.get("ppo")


def test_bad_options():
  with pytest.raises(ValueError, match="rae_order"):
    advantages.Options(rae_order="sometimes")
  with pytest.raises(ValueError, match="group_ddof"):
    advantages.Options(group_ddof=2)


def test_reinforce_is_the_return():
  s = make_samples([1.0, -1.0, 0.5], role=[0, 1, 0], game_index=[0, 0, 1],
                   mask=[True, True, False])
  adv, _ = run("reinforce", s)
  np.testing.assert_array_equal(adv, [1.0, -1.0, 0.0])


# --- RAE. ---


def test_rae_released_order_by_hand():
  # Two games of one kind: player 0 wins game 0 (two turns) and loses game 1.
  s = make_samples(reward=[1, -1, 1, -1, 1], role=[0, 1, 0, 0, 1], game_index=[0, 0, 0, 1, 1],
                   turn_index=[0, 1, 2, 0, 1])
  adv, b = run("rae", s)
  # Game 0: A = R - 0; b0 = 0.05, b1 = -0.05 (one update per trajectory, not per turn).
  # Game 1: A0 = -1 - 0.05, A1 = 1 + 0.05; b0 = 0.95*0.05 - 0.05, b1 = -0.95*0.05 + 0.05.
  np.testing.assert_allclose(adv, [1, -1, 1, -1.05, 1.05], rtol=1e-6)
  np.testing.assert_allclose(b, [[-0.0025, 0.0025], [0, 0]], atol=1e-7)


def test_rae_paper_order_by_hand():
  s = make_samples(reward=[1, -1, -1, 1], role=[0, 1, 0, 1], game_index=[0, 0, 1, 1])
  adv, b = run("rae", s, rae_order="paper")
  # Game 0: b0 = 0.05, A0 = 0.95; b1 = -0.05, A1 = -0.95.
  # Game 1: b0 = 0.0475 - 0.05 = -0.0025, A0 = -0.9975; b1 = 0.0025, A1 = 0.9975.
  np.testing.assert_allclose(adv, [0.95, -0.95, -0.9975, 0.9975], rtol=1e-6)
  np.testing.assert_allclose(b, [[-0.0025, 0.0025], [0, 0]], atol=1e-7)


def rae_reference(steps, num_kinds=2, num_roles=2, decay=0.95):
  """The released code's loop: per game in order, per player: b_old, EMA update, A = R - b_old."""
  ema = {(k, p): 0.0 for k in range(num_kinds) for p in range(num_roles)}
  out = []
  for games in steps:  # games: list of (kind, {role: return}) in game order.
    step_adv = []
    for kind, returns in games:
      adv = {}
      for role, ret in returns.items():
        old = ema[kind, role]
        ema[kind, role] = decay * old + (1 - decay) * ret
        adv[role] = ret - old
      step_adv.append(adv)
    out.append(step_adv)
  return out, ema


def test_rae_baseline_sequence_over_steps_matches_reference():
  rng = np.random.default_rng(0)
  steps = []
  for _ in range(4):
    games = [(int(rng.integers(2)), {0: float(r), 1: float(-r)})
             for r in rng.choice([-1.0, 0.0, 1.0, 2.0, -1.5], size=5)]
    steps.append(games)
  expected, ema = rae_reference(steps)
  baselines = jnp.zeros((2, 2))
  for games, expected_adv in zip(steps, expected):
    # Samples in shuffled order, several turns per player, plus masked junk that must not count.
    rows = []
    for g, (kind, returns) in enumerate(games):
      for turn in range(3):
        role = turn % 2
        rows.append((returns[role], kind, role, g, turn, True))
    rows.append((100.0, 0, 0, 2, 9, False))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    r, k, p, g, t, m = map(list, zip(*rows))
    s = make_samples(r, role=p, game_index=g, turn_index=t, game_kind=k, mask=m)
    adv, baselines = run("rae", s, baselines)
    want = [expected_adv[gi][pi] if mi else 0.0 for gi, pi, mi in zip(g, p, m)]
    np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(baselines, [[ema[k, p] for p in range(2)] for k in range(2)],
                             rtol=1e-5, atol=1e-7)


def test_drop_zero_advantage_mask():
  # Draw (R = 0) against a zero baseline gives A = 0: dropped, as SPIRAL's filter_zero_adv.
  s = make_samples(reward=[0, 0, 1, -1], role=[0, 1, 0, 1], game_index=[0, 0, 1, 1])
  adv, _, mask = advantages.compute("rae", s, jnp.zeros((1, 2)), drop_zero=True)
  np.testing.assert_array_equal(np.asarray(mask), [False, False, True, True])
  _, _, mask = advantages.compute("rae", s, jnp.zeros((1, 2)), drop_zero=False)
  assert np.asarray(mask).all()


def test_forfeit_credit_trains_a_forfeited_game_only_on_its_invalid_answer():
  # Game 0: player 0's second answer is invalid (a forfeit, -1.5; player 1 gets +0.5). Game 1
  # ends normally. RLOO in one group per role: player 0's returns -1.5 and 1 -> -2.5 / +2.5.
  s = make_samples(reward=[-1.5, 0.5, -1.5, 1.0, -1.0, 1.0], role=[0, 1, 0, 0, 1, 0],
                   game_index=[0, 0, 0, 1, 1, 1], turn_index=[0, 1, 2, 0, 1, 2])
  invalid = jnp.asarray([False, False, True, False, False, False])
  baselines = jnp.zeros((1, 2))
  adv, _, mask = advantages.compute("rloo", s, baselines, drop_zero=True)
  np.testing.assert_allclose(adv, [-2.5, 1.5, -2.5, 2.5, -1.5, 2.5], atol=1e-6)
  assert np.asarray(mask).all()
  adv, _, mask = advantages.compute("rloo", s, baselines, drop_zero=True,
                                    forfeit_credit="answer", invalid=invalid)
  # Only the invalid answer keeps its advantage in game 0; game 1 and the baselines are unchanged.
  np.testing.assert_allclose(adv, [0.0, 0.0, -2.5, 2.5, -1.5, 2.5], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(mask), [False, False, True, True, True, True])
  # An invalid answer of an untrained row (an opponent's) does not count as the learner's forfeit.
  masked = s.replace(mask=jnp.asarray([True, False, False, True, False, True]))
  adv, _, _ = advantages.compute("reinforce", masked, baselines, forfeit_credit="answer",
                                 invalid=invalid)
  np.testing.assert_allclose(adv, [-1.5, 0.0, 0.0, 1.0, 0.0, 1.0])
  with pytest.raises(ValueError, match="forfeit_credit='turn'; valid: game, answer"):
    advantages.compute("rloo", s, baselines, forfeit_credit="turn", invalid=invalid)
  with pytest.raises(ValueError, match="needs `invalid`"):
    advantages.compute("rloo", s, baselines, forfeit_credit="answer")


# --- Group estimators. ---


def group_samples(returns_by_group, extra_turns=None):
  """One role-0 trajectory per return; group g holds the games of returns_by_group[g]."""
  reward, group, game = [], [], []
  for g, returns in enumerate(returns_by_group):
    for r in returns:
      reward.append(r)
      group.append(g)
      game.append(len(game))
  turns = [0] * len(reward)
  for game_index, count in (extra_turns or {}).items():  # More turns of the same trajectory.
    for t in range(1, count):
      reward.append(reward[game_index])
      group.append(group[game_index])
      game.append(game_index)
      turns.append(t)
  return make_samples(reward, role=[0] * len(reward), game_index=game, group=group,
                      turn_index=turns)


def test_grpo_by_hand():
  s = group_samples([[2.0, 0.0, 1.0], [1.0, -1.0], [3.0, 3.0], [5.0]])
  adv, _ = run("grpo", s)
  root2 = math.sqrt(2)
  want = [1 / (1 + EPS), -1 / (1 + EPS), 0.0,  # mean 1, unbiased std 1.
          1 / (root2 + EPS), -1 / (root2 + EPS),  # group of 2: std sqrt(2).
          0.0, 0.0,  # all equal.
          0.0]  # group of one.
  np.testing.assert_allclose(adv, want, rtol=1e-6)
  adv, _ = run("grpo", s, group_ddof=0)
  np.testing.assert_allclose(adv[3:5], [1 / (1 + EPS), -1 / (1 + EPS)], rtol=1e-6)
  np.testing.assert_allclose(adv[:3], np.array([1, -1, 0]) / (math.sqrt(2 / 3) + EPS), rtol=1e-6)


def test_dr_grpo_by_hand():
  s = group_samples([[2.0, 0.0, 1.0], [1.0, -1.0], [3.0, 3.0], [5.0]])
  adv, _ = run("dr_grpo", s)
  np.testing.assert_allclose(adv, [1, -1, 0, 1, -1, 0, 0, 0], atol=1e-7)


def test_rloo_by_hand():
  s = group_samples([[2.0, 0.0, 1.0], [1.0, -1.0], [3.0, 3.0], [5.0]])
  adv, _ = run("rloo", s)
  np.testing.assert_allclose(adv, [1.5, -1.5, 0, 2, -2, 0, 0, 0], atol=1e-6)


def test_spo_by_hand():
  """Each game's share of wins over the other games of its group (ties half), less 1/2."""
  s = group_samples([[1.0, -1.0, 0.0, 1.0], [2.0, -1.5], [3.0, 3.0], [5.0]])
  adv, _ = run("spo", s)
  np.testing.assert_allclose(adv, [
      2.5 / 3 - 0.5, 0 / 3 - 0.5, 1 / 3 - 0.5, 2.5 / 3 - 0.5,  # Beats -1 and 0, ties the other 1.
      0.5, -0.5,  # A group of two: the winner gets +1/2.
      0.0, 0.0,  # A tie.
      0.0], atol=1e-7)  # A group of one.
  scaled, _ = run("spo", group_samples([[10.0, -10.0, 0.0, 10.0], [200.0, -150.0], [3.0, 3.0],
                                        [5.0]]))
  np.testing.assert_allclose(scaled, adv, atol=1e-7)  # Only the order of the returns counts.


def test_spo_counts_each_trajectory_once_per_role():
  s = group_samples([[1.0, -1.0]], extra_turns={0: 3})
  adv, _ = run("spo", s)
  np.testing.assert_allclose(adv, [0.5, -0.5, 0.5, 0.5], atol=1e-7)
  s = make_samples(reward=[1, -1, 0, 0, 9], role=[0, 1, 0, 1, 0], game_index=[0, 0, 1, 1, 1],
                   turn_index=[0, 1, 0, 1, 2], mask=[True, True, True, True, False])
  adv, _ = run("spo", s)
  np.testing.assert_allclose(adv, [0.5, -0.5, -0.5, 0.5, 0.0], atol=1e-7)


def test_group_counts_each_trajectory_once():
  # Game 0 (R = 1) has 3 turns, game 1 (R = -1) has one: the group mean is 0, not 0.5.
  s = group_samples([[1.0, -1.0]], extra_turns={0: 3})
  adv, _ = run("dr_grpo", s)
  np.testing.assert_allclose(adv, [1, -1, 1, 1], atol=1e-7)


def test_groups_are_per_role_and_masked():
  # One group, two games; the roles are compared with their own seat only; a masked row is ignored.
  s = make_samples(reward=[1, -1, 0, 0, 9], role=[0, 1, 0, 1, 0], game_index=[0, 0, 1, 1, 1],
                   turn_index=[0, 1, 0, 1, 2], mask=[True, True, True, True, False])
  adv, _ = run("dr_grpo", s)
  np.testing.assert_allclose(adv, [0.5, -0.5, -0.5, 0.5, 0.0], atol=1e-7)


# --- MARS. ---


def whiten(x):
  return (x - x.mean()) / np.sqrt(x.var(ddof=1) + 1e-8)


def mars_reference(kind, role, game, turn, turn_reward):
  """Plain numpy transcription of the MARS steps on valid samples."""
  turn_reward = np.asarray(turn_reward, float)
  player = [(k, p) for k, p in zip(kind, role)]
  def centre(x):
    out = x.copy()
    for key in set(player):
      idx = [i for i, q in enumerate(player) if q == key]
      out[idx] -= x[idx].mean()
    return out
  r = whiten(centre(turn_reward))
  to_go = np.array([sum(r[j] for j in range(len(r))
                        if game[j] == game[i] and role[j] == role[i] and turn[j] >= turn[i])
                    for i in range(len(r))])
  return whiten(centre(to_go))


def test_mars_terminal_rewards_by_hand():
  # One game: player 0 moves at turns 0 and 2 and wins (+1), player 1 moves at turn 1.
  s = make_samples(reward=[1, -1, 1], role=[0, 1, 0], game_index=[0, 0, 0], turn_index=[0, 1, 2])
  np.testing.assert_array_equal(np.asarray(advantages.terminal_turn_rewards(s, 2)), [0, -1, 1])
  adv, _ = run("mars", s)
  # Per-player centring: player 0 turn rewards (0, 1) -> (-0.5, 0.5); player 1 (-1) -> 0.
  # Whitening of (-0.5, 0, 0.5): std 0.5 -> (-1, 0, 1). Reward-to-go: player 0 turn 0 gets -1 + 1 = 0,
  # turn 2 gets 1; player 1 gets 0. Centring per player: (-0.5, 0, 0.5). Whitening -> (-1, 0, 1).
  np.testing.assert_allclose(adv, [-1, 0, 1], atol=1e-6)


def test_mars_matches_reference_with_turn_rewards():
  rng = np.random.default_rng(1)
  kind = [0, 0, 0, 0, 0, 1, 1, 1, 1]
  role = [0, 1, 0, 1, 0, 0, 1, 0, 1]
  game = [0, 0, 0, 1, 1, 2, 2, 2, 2]
  turn = [0, 1, 2, 1, 0, 0, 1, 2, 3]
  turn_reward = rng.normal(size=9)
  s = make_samples(rng.normal(size=9), role=role, game_index=game, turn_index=turn,
                   game_kind=kind, turn_reward=turn_reward)
  adv, _ = run("mars", s)
  np.testing.assert_allclose(adv, mars_reference(kind, role, game, turn, turn_reward),
                             rtol=1e-5, atol=1e-5)


def _with_junk(s, junk):
  """`s` followed by masked-out rows (reward, kind, role, group, game, turn, turn_reward)."""
  extra = [np.asarray(column) for column in zip(*junk)]
  cat = lambda x, y, dtype: jnp.concatenate([x, jnp.asarray(y, dtype)])
  return advantages.Outcomes(
      reward=cat(s.reward, extra[0], jnp.float32), game_kind=cat(s.game_kind, extra[1], jnp.int32),
      role=cat(s.role, extra[2], jnp.int32), group=cat(s.group, extra[3], jnp.int32),
      game_index=cat(s.game_index, extra[4], jnp.int32),
      turn_index=cat(s.turn_index, extra[5], jnp.int32),
      mask=cat(s.mask, np.zeros(len(junk), bool), bool),
      turn_reward=None if s.turn_reward is None else cat(s.turn_reward, extra[6], jnp.float32))


@pytest.mark.parametrize("name,turn_rewards",
                         [(name, False) for name in advantages.ESTIMATORS] + [("mars", True)])
def test_masked_rows_are_inert(name, turn_rewards):
  """Masked-out rows with wild values, inside real trajectories (later turns, with another game
  kind or group than their game's) and in games of their own, change neither the real rows'
  advantages nor the baselines, and get advantage 0."""
  rng = np.random.default_rng(3)
  reward = rng.choice([-1.0, 0.0, 1.0, 2.0], size=10)
  s = make_samples(reward, role=[0, 1, 0, 1, 0, 1, 0, 1, 0, 1],
                   game_index=[0, 0, 0, 1, 1, 2, 2, 3, 3, 3],
                   turn_index=[0, 1, 2, 0, 1, 0, 1, 0, 1, 2],
                   game_kind=[0, 0, 0, 1, 1, 0, 0, 1, 1, 1], group=[0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
                   turn_reward=rng.normal(size=10) if turn_rewards else None)
  junk = [(90.0, 1, 0, 5, 0, 5, 40.0),  # A later turn of game 0's player 0, another kind/group.
          (-70.0, 1, 1, 0, 3, 9, -60.0),  # Game 3's player 1, in group 0, after its last turn.
          (55.0, 1, 0, 1, 11, 0, 30.0),  # A game of its own, in group 1.
          (-80.0, 0, 1, 12, 12, 4, 80.0)]  # Its own game and group.
  baselines = jnp.asarray([[0.3, -0.2], [0.1, 0.4]])
  real, real_baselines = run(name, s, baselines)
  both, both_baselines = run(name, _with_junk(s, junk), baselines)
  assert np.abs(real).max() > 0.1, name  # Not all zero, so the comparison has teeth.
  np.testing.assert_allclose(both[:10], real, rtol=1e-5, atol=1e-6, err_msg=name)
  np.testing.assert_array_equal(both[10:], 0.0)
  np.testing.assert_allclose(both_baselines, real_baselines, rtol=1e-6, err_msg=name)
