"""The classic strategies (algos/exploration/classic.py): each one's statistics against its
definition, schedules, OU resets, UCB against hand-computed values, checkpoint round trips, refusal
of impossible combinations, and short TRPO runs through the runner."""
import math

import gymnasium as gym
import numpy as np
import pytest

from algos.common.checks import ConfigError
from algos.common.rollout import Rollout
from algos.exploration.classic import (Boltzmann, EpsilonGreedy, GaussianNoise, MissingActionPreferences,
                                       OrnsteinUhlenbeckNoise, UCBCountBonus)
from tests.conftest import TINY, learning_columns, read_progress, through_checkpoint, train_in_process

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(4)
CONTINUOUS = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def rollout_of(obs, actions, episode_end=None):
    """A rollout with obs [T, N, D] and actions [T, N]; episode ends where episode_end [T, N] is True."""
    T, N = actions.shape[:2]
    ended = np.zeros((T, N), bool) if episode_end is None else episode_end
    return Rollout(obs=np.asarray(obs, np.float32), actions=actions, rewards_ext=np.zeros((T, N)),
                   terminated=ended, truncated=np.zeros((T, N), bool), episode_step=np.zeros((T, N), np.int64),
                   last_obs=np.asarray(obs[-1], np.float32), final_index=np.zeros((0, 2), np.int64),
                   final_obs=np.zeros((0, *np.shape(obs)[2:]), np.float32))


# -- epsilon-greedy -------------------------------------------------------------------------------
def test_egreedy_replaces_actions_at_rate_epsilon_with_uniform_actions():
    method = EpsilonGreedy(OBS, DISCRETE, seed=1, epsilon_start=0.3, epsilon_end=0.3, decay_steps=0)
    agent_actions = np.full(2000, 2, np.int64)
    out = np.stack([method.perturb_action(None, agent_actions) for _ in range(50)])  # 100k decisions
    assert out.dtype == np.int64 and out.shape == (50, 2000)
    metrics = method.update(None)
    assert abs(metrics["random_fraction"] - 0.3) < 0.01 and metrics["epsilon"] == 0.3
    # a random draw is uniform over all 4 actions (the agent's included): changed w.p. eps * 3/4
    changed = out != 2
    assert abs(changed.mean() - 0.3 * 0.75) < 0.01
    np.testing.assert_allclose(np.bincount(out[changed], minlength=4)[[0, 1, 3]] / changed.sum(), 1 / 3, atol=0.02)
    assert method.env_steps == 100_000


def test_egreedy_follows_its_linear_schedule():
    method = EpsilonGreedy(OBS, DISCRETE, seed=2, epsilon_start=1.0, epsilon_end=0.2, decay_steps=40_000)
    agent_actions = np.zeros(1000, np.int64)
    rates = []
    for call in range(60):  # 60k env steps: 40 calls of decay, then constant
        rates.append((method.perturb_action(None, agent_actions) != 0).mean())
    expected_eps = [1.0 - 0.8 * min(1.0, 1000 * c / 40_000) for c in range(60)]
    np.testing.assert_allclose(rates, np.array(expected_eps) * 0.75, atol=0.05)  # binomial sd <= 0.016
    assert method.epsilon == pytest.approx(0.2)
    early = EpsilonGreedy(OBS, DISCRETE, epsilon_start=1.0, epsilon_end=0.2, decay_steps=40_000)
    early.env_steps = 10_000
    assert early.epsilon == pytest.approx(0.8)


# -- Boltzmann -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["logits", "q_values"])
def test_boltzmann_frequencies_match_the_softmax_of_preferences_over_temperature(key):
    method = Boltzmann(OBS, DISCRETE, seed=3, temperature_start=2.0, temperature_end=2.0)
    prefs = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 0.0]])
    prefs = np.repeat(prefs, 5000, 0)  # two kinds of env, 5000 of each
    out = np.stack([method.perturb_action(None, np.zeros(10000, np.int64), agent_info={key: prefs})
                    for _ in range(10)])
    for kind in range(2):
        z = prefs[kind * 5000] / 2.0
        expected = np.exp(z) / np.exp(z).sum()
        freq = np.bincount(out[:, kind * 5000:(kind + 1) * 5000].ravel(), minlength=4) / 50000
        np.testing.assert_allclose(freq, expected, atol=0.008)  # sd <= 0.0023


def test_boltzmann_temperature_schedule_and_missing_preferences():
    method = Boltzmann(OBS, DISCRETE, seed=4, temperature_start=10.0, temperature_end=0.5, decay_steps=1000)
    prefs = np.tile([0.0, 1.0, 2.0, 3.0], (500, 1))
    hot = method.perturb_action(None, np.zeros(500, np.int64), agent_info={"logits": prefs})
    assert method.temperature == pytest.approx(10.0 - 9.5 * 0.5)
    method.perturb_action(None, np.zeros(500, np.int64), agent_info={"logits": prefs})
    cold = np.concatenate([method.perturb_action(None, np.zeros(500, np.int64), agent_info={"logits": prefs})
                           for _ in range(4)])
    assert method.temperature == 0.5 and method.update(None) == {"temperature": 0.5}
    assert (hot == 3).mean() < 0.4 and (cold == 3).mean() > 0.8  # softmax(prefs / 0.5)[3] = 0.865
    with pytest.raises(MissingActionPreferences, match="agent_info"):
        method.perturb_action(None, np.zeros(500, np.int64))


# -- Gaussian and Ornstein-Uhlenbeck noise -------------------------------------------------------
def test_gaussian_noise_has_the_configured_std_and_stays_in_bounds():
    method = GaussianNoise(OBS, CONTINUOUS, seed=5, sigma=0.15)
    base = np.full((50000, 2), 0.2, np.float32)
    out = method.perturb_action(None, base)
    assert out.dtype == np.float32 and out.shape == base.shape
    noise = out - 0.2
    assert abs(noise.std() - 0.15) < 0.003 and abs(noise.mean()) < 0.003
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.02
    edge = method.perturb_action(None, np.full((10000, 2), 0.95, np.float32))
    assert edge.max() == 1.0 and edge.min() >= -1.0 and (edge == 1.0).mean() > 0.3


def test_ou_noise_has_the_analytic_stationary_variance_and_autocorrelation():
    theta, sigma, dt = 0.15, 0.2, 1e-2
    method = OrnsteinUhlenbeckNoise(OBS, gym.spaces.Box(-1, 1, (1,)), seed=6, theta=theta, sigma=sigma, dt=dt)
    n, burn_in, lag = 4000, 5000, 300  # correlation time 1 / (theta dt) = 667 steps
    steps = np.ones(n, np.int64)
    for _ in range(burn_in):
        method.noise(steps)
    x0 = method.noise(steps)[:, 0]
    for _ in range(lag - 1):
        method.noise(steps)
    x_lag = method.noise(steps)[:, 0]
    exact = sigma**2 * dt / (1 - (1 - theta * dt) ** 2)
    assert method.stationary_variance() == pytest.approx(exact)
    assert exact == pytest.approx(sigma**2 / (2 * theta), rel=1e-3)
    assert x0.var() == pytest.approx(exact, rel=0.07) and x_lag.var() == pytest.approx(exact, rel=0.07)
    assert np.corrcoef(x0, x_lag)[0, 1] == pytest.approx((1 - theta * dt) ** lag, abs=0.04)  # 0.637


def test_ou_noise_restarts_at_episode_starts():
    method = OrnsteinUhlenbeckNoise(OBS, CONTINUOUS, seed=7, theta=0.15, sigma=0.2, dt=1.0)  # fast to fill up
    running = np.ones(2000, np.int64)
    for _ in range(50):
        method.noise(running)
    starts = running.copy()
    starts[:1000] = 0  # the first half begins new episodes
    x = method.noise(starts)
    # one step from mu = 0: sigma sqrt(dt) N(0, 1); the others keep their stationary spread
    assert x[:1000].std() == pytest.approx(0.2, rel=0.08)
    assert x[1000:].std() == pytest.approx(math.sqrt(method.stationary_variance()), rel=0.08)  # 0.389
    # perturb_action passes episode_step through, adds the noise and clips to [-1, 1]
    actions = np.zeros((2000, 2), np.float32)
    out = method.perturb_action(None, actions, episode_step=starts)
    assert out.dtype == np.float32 and np.abs(out).max() <= 1.0
    assert out[:1000].std() == pytest.approx(0.2, rel=0.08) and out[1000:].std() > 0.33


# -- UCB counts ----------------------------------------------------------------------------------
def test_ucb_bonus_equals_hand_computed_values():
    obs_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    method = UCBCountBonus(obs_space, gym.spaces.Discrete(2), alpha=2.0, cell_size=1.0)
    # batch 1 (T = 4, N = 1): cells 0, 0, 1, 0; actions 0, 1, 0, 0
    first = rollout_of(np.array([0.2, 0.7, 1.5, 0.1])[:, None, None], np.array([[0], [1], [0], [0]]))
    # counts including the batch: N_0 = 3, N_1 = 1; n_(0,0) = 2, n_(0,1) = 1, n_(1,0) = 1
    expected = [2 * math.sqrt(2 * math.log(3) / 2), 2 * math.sqrt(2 * math.log(3) / 1), 0.0,
                2 * math.sqrt(2 * math.log(3) / 2)]
    np.testing.assert_allclose(method.intrinsic_reward(first)[:, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(method.intrinsic_reward(first)[:, 0], expected, rtol=1e-12)  # nothing stored
    assert method.update(first) == {"distinct_states": 2, "distinct_pairs": 3}
    # batch 2: (cell 0, action 1), (cell 1, action 0): N_0 = 4, N_1 = 2, n_(0,1) = 2, n_(1,0) = 2
    second = rollout_of(np.array([0.3, 1.2])[:, None, None], np.array([[1], [0]]))
    np.testing.assert_allclose(method.intrinsic_reward(second)[:, 0],
                               [2 * math.sqrt(2 * math.log(4) / 2), 2 * math.sqrt(2 * math.log(2) / 2)], rtol=1e-12)
    # negative coordinates floor into their own cells: -0.5 is cell -1, not cell 0
    third = rollout_of(np.array([-0.5, 0.5])[:, None, None], np.array([[0], [0]]))
    np.testing.assert_allclose(method.intrinsic_reward(third)[:, 0], [0.0, 2 * math.sqrt(2 * math.log(4) / 3)])


def test_ucb_per_coordinate_cells_and_invalid_cell_size():
    method = UCBCountBonus(OBS, DISCRETE, cell_size=[1.0, 10.0, 0.5])
    np.testing.assert_array_equal(method.cells(np.array([[1.5, 15.0, 0.7], [-0.1, 9.9, -0.2]])),
                                  [[1, 1, 1], [-1, 0, -1]])
    with pytest.raises(ConfigError, match="exploration.cell_size"):
        UCBCountBonus(OBS, DISCRETE, cell_size=[1.0, 1.0])
    with pytest.raises(ConfigError, match="exploration.epsilon_start"):
        EpsilonGreedy(OBS, DISCRETE, epsilon_start=1.5)


# -- checkpoint round trip for every method ------------------------------------------------------
def drive(method, rng, calls):
    """Feed `calls` batches (perturbing actions step by step where the method does): the outputs."""
    discrete = isinstance(method.action_space, gym.spaces.Discrete)
    outputs = []
    for _ in range(calls):
        T, N = 6, 5
        obs = rng.normal(0, 1, (T, N, 3))
        actions = rng.integers(0, 4, (T, N)) if discrete else rng.uniform(-1, 1, (T, N, 2)).astype(np.float32)
        ended = rng.random((T, N)) < 0.2
        if method.perturbs_actions:
            step = np.zeros(N, np.int64)
            for t in range(T):
                info = {"logits": rng.normal(0, 1, (N, 4))}
                actions[t] = method.perturb_action(obs[t], actions[t], episode_step=step, agent_info=info)
                step = np.where(ended[t], 0, step + 1)
        rollout = rollout_of(obs, actions, ended)
        outputs += [actions.copy(), method.intrinsic_reward(rollout)]
        outputs.append(method.update(rollout))
    return outputs


METHODS = {
    "egreedy": (EpsilonGreedy, DISCRETE, dict(epsilon_start=0.9, epsilon_end=0.1, decay_steps=100)),
    "boltzmann": (Boltzmann, DISCRETE, dict(temperature_start=3.0, temperature_end=1.0, decay_steps=100)),
    "gaussian_noise": (GaussianNoise, CONTINUOUS, dict(sigma=0.3)),
    "ou_noise": (OrnsteinUhlenbeckNoise, CONTINUOUS, dict(dt=0.5)),
    "ucb": (UCBCountBonus, DISCRETE, dict(cell_size=0.7)),
}


@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trip_continues_identically(name):
    cls, action_space, config = METHODS[name]
    original = cls(OBS, action_space, seed=11, **config)
    drive(original, np.random.default_rng(0), 3)
    saved = through_checkpoint(original.state_dict())  # as the runner's checkpoints store it
    restored = cls(OBS, action_space, seed=999, **config)  # another seed: the state must carry the RNG
    restored.load_state_dict(saved)
    after_original = drive(original, np.random.default_rng(1), 3)
    after_restored = drive(restored, np.random.default_rng(1), 3)
    for a, b in zip(after_original, after_restored):  # actions, r_int, update metrics of each batch
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b
    fresh = drive(cls(OBS, action_space, seed=999, **config), np.random.default_rng(1), 3)
    assert any(not np.array_equal(a, b) for a, b in zip(after_original, fresh) if isinstance(a, np.ndarray))


# -- through the runner --------------------------------------------------------------------------
@pytest.mark.parametrize("method, env", [("egreedy", "half_cheetah"), ("boltzmann", "pendulum"),
                                         ("ucb", "half_cheetah"), ("gaussian_noise", "cartpole"),
                                         ("ou_noise", "cartpole")])
def test_runner_refuses_the_wrong_action_kind(tmp_path, capsys, method, env):
    assert train_in_process(tmp_path, f"exploration={method}", f"env={env}") == 2
    err = capsys.readouterr().err
    assert f"exploration={method}" in err and f"env={env}" in err
    assert not (tmp_path / "progress.csv").exists()


def run_and_resume(tmp_path, *args):
    """4 TRPO iterations straight, and 2 + 2 with a resume in between: the rows (learning columns)."""
    args = ["agent=trpo", *TINY["trpo"][:-1], *args]
    assert train_in_process(tmp_path / "full", *args, "total_env_steps=800") == 0
    assert train_in_process(tmp_path / "resumed", *args, "total_env_steps=400") == 0
    assert train_in_process(tmp_path / "resumed", *args, "total_env_steps=800") == 0
    rows = read_progress(tmp_path / "full")
    assert learning_columns(read_progress(tmp_path / "resumed")) == learning_columns(rows)
    return rows


def test_trpo_cartpole_with_egreedy(tmp_path):
    rows = run_and_resume(tmp_path, "env=cartpole", "exploration=egreedy", "exploration.epsilon_start=0.5",
                          "exploration.epsilon_end=0.5")
    fractions = [float(r["expl_random_fraction"]) for r in rows]
    assert all(abs(f - 0.5) < 0.15 for f in fractions), fractions  # 200 decisions each


def test_trpo_cartpole_with_ucb(tmp_path):
    rows = run_and_resume(tmp_path, "env=cartpole", "exploration=ucb", "exploration.cell_size=0.5")
    assert all(float(r["bonus_raw_mean"]) > 0 for r in rows)
    distinct = [int(r["expl_distinct_states"]) for r in rows]
    assert distinct == sorted(distinct) and distinct[0] > 1


def test_trpo_cartpole_with_boltzmann(tmp_path):
    """The categorical policy's logits reach perturb_action through agent.act's info."""
    rows = run_and_resume(tmp_path, "env=cartpole", "exploration=boltzmann", "exploration.temperature_start=2.0")
    assert all(float(r["expl_temperature"]) == 2.0 for r in rows)


@pytest.mark.parametrize("method", ["gaussian_noise", "ou_noise"])
def test_trpo_pendulum_with_action_noise(tmp_path, method):
    rows = run_and_resume(tmp_path, "env=pendulum", f"exploration={method}")
    assert all(float(r["bonus_raw_mean"]) == 0.0 for r in rows)
    returns = [float(r["return_ext_mean"]) for r in rows if int(r["episodes"])]  # 200-step episodes
    assert len(rows) == 4 and len(returns) == 2 and all(np.isfinite(returns))
