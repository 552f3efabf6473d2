"""The classic strategies (algos/exploration/classic.py): each one's statistics against its
definition, the behaviour log-probabilities against closed forms, brute force and Monte-Carlo
histograms (clipped actions included), schedules and the on-policy epsilon default, OU resets, the UCB
bonus against hand-computed values and the UCB-1 action rule against a brute-force index, checkpoint
round trips, refusal of impossible combinations (OU and the UCB-1 rule on on-policy agents), and
short TRPO runs through the runner."""
import math

import gymnasium as gym
import numpy as np
import pytest
from scipy import stats
from scipy.special import log_softmax, softmax

from algos.common.checks import ConfigError
from algos.common.rollout import Rollout, Transitions
from algos.exploration.classic import (
    Boltzmann,
    EpsilonGreedy,
    GaussianNoise,
    MissingActionPreferences,
    OrnsteinUhlenbeckNoise,
    UCBCounts,
)
from tests.conftest import TINY, learning_columns, read_progress, through_checkpoint, train_in_process
from tests.helpers import iterate

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(4)
CONTINUOUS = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def rollout_of(obs, actions, episode_end=None) -> Transitions:
    """The transitions of a rollout with obs [T, N, D] and actions [T, N]; episode ends where
    episode_end [T, N] is True (rows time-major, t * N + n)."""
    T, N = actions.shape[:2]
    ended = np.zeros((T, N), bool) if episode_end is None else episode_end
    return Rollout(obs=np.asarray(obs, np.float32), actions=actions, rewards_ext=np.zeros((T, N)),
                   terminated=ended, truncated=np.zeros((T, N), bool), episode_step=np.zeros((T, N), np.int64),
                   last_obs=np.asarray(obs[-1], np.float32), final_index=np.zeros((0, 2), np.int64),
                   final_obs=np.zeros((0, *np.shape(obs)[2:]), np.float32)).transitions()


def executed(method, obs, actions, **kwargs):
    """The executed actions of one behaviour_action call (its log-probability checked for shape)."""
    out, log_prob = method.behaviour_action(obs, actions, **kwargs)
    assert log_prob.shape == (len(np.asarray(actions)),) and log_prob.dtype == np.float64
    return out


# -- epsilon-greedy -------------------------------------------------------------------------------
def test_egreedy_replaces_actions_at_rate_epsilon_with_uniform_actions():
    method = EpsilonGreedy(OBS, DISCRETE, seed=1, epsilon_start=0.3, epsilon_end=0.3, decay_steps=0)
    agent_actions = np.full(2000, 2, np.int64)
    out = np.stack([executed(method, None, agent_actions) for _ in range(50)])  # 100k decisions
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
        rates.append((executed(method, None, agent_actions) != 0).mean())
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
    out = np.stack([executed(method, None, np.zeros(10000, np.int64), agent_info={key: prefs})
                    for _ in range(10)])
    for kind in range(2):
        z = prefs[kind * 5000] / 2.0
        expected = np.exp(z) / np.exp(z).sum()
        freq = np.bincount(out[:, kind * 5000:(kind + 1) * 5000].ravel(), minlength=4) / 50000
        np.testing.assert_allclose(freq, expected, atol=0.008)  # sd <= 0.0023


def test_boltzmann_temperature_schedule_and_missing_preferences():
    method = Boltzmann(OBS, DISCRETE, seed=4, temperature_start=10.0, temperature_end=0.5, decay_steps=1000)
    prefs = np.tile([0.0, 1.0, 2.0, 3.0], (500, 1))
    hot = executed(method, None, np.zeros(500, np.int64), agent_info={"logits": prefs})
    assert method.temperature == pytest.approx(10.0 - 9.5 * 0.5)
    executed(method, None, np.zeros(500, np.int64), agent_info={"logits": prefs})
    cold = np.concatenate([executed(method, None, np.zeros(500, np.int64), agent_info={"logits": prefs})
                           for _ in range(4)])
    assert method.temperature == 0.5 and method.update(None) == {"temperature": 0.5}
    assert (hot == 3).mean() < 0.4 and (cold == 3).mean() > 0.8  # softmax(prefs / 0.5)[3] = 0.865
    with pytest.raises(MissingActionPreferences, match="agent_info"):
        method.behaviour_action(None, np.zeros(500, np.int64))


# -- Gaussian and Ornstein-Uhlenbeck noise -------------------------------------------------------
def test_gaussian_noise_has_the_configured_std_and_clips_only_when_asked():
    method = GaussianNoise(OBS, CONTINUOUS, seed=5, sigma=0.15)
    base = np.full((50000, 2), 0.2, np.float32)
    out = executed(method, None, base)
    assert out.dtype == np.float32 and out.shape == base.shape
    noise = out - 0.2
    assert abs(noise.std() - 0.15) < 0.003 and abs(noise.mean()) < 0.003
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.02
    near_edge = np.full((10000, 2), 0.95, np.float32)
    assert executed(method, None, near_edge).max() > 1.0  # the default records the unclipped sum
    assert method.requires.agent_families == ("on_policy", "off_policy", "meta")
    clipping = GaussianNoise(OBS, CONTINUOUS, seed=5, sigma=0.15, clip_actions=True)
    assert clipping.requires.agent_families == ("off_policy",)
    edge = executed(clipping, None, near_edge)
    assert edge.max() == 1.0 and edge.min() >= -1.0 and (edge == 1.0).mean() > 0.3
    with pytest.raises(ConfigError, match="exploration.clip_actions"):
        GaussianNoise(OBS, CONTINUOUS, clip_actions="yes")
    with pytest.raises(ConfigError, match="exploration.sigma"):
        GaussianNoise(OBS, CONTINUOUS, sigma=0.0)


def test_ou_noise_has_the_analytic_stationary_variance_and_autocorrelation():
    theta, sigma, dt = 0.15, 0.2, 1e-2
    method = OrnsteinUhlenbeckNoise(OBS, gym.spaces.Box(-1, 1, (1,)), seed=6, theta=theta, sigma=sigma, dt=dt)
    n, burn_in, lag = 4000, 5000, 300  # correlation time 1 / (theta dt) = 667 steps
    steps = np.ones(n, np.int64)
    for _ in range(burn_in):
        method.noise(steps)
    x0 = method.noise(steps)[0][:, 0]  # (the noise, its conditional mean)
    for _ in range(lag - 1):
        method.noise(steps)
    x_lag = method.noise(steps)[0][:, 0]
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
    previous = method.state.copy()
    x, drift = method.noise(starts)
    np.testing.assert_allclose(drift[1000:], previous[1000:] * (1 - 0.15))  # x + theta (mu - x) dt, mu = 0
    assert np.all(drift[:1000] == 0.0)                                      # restarted at mu
    # one step from mu = 0: sigma sqrt(dt) N(0, 1); the others keep their stationary spread
    assert x[:1000].std() == pytest.approx(0.2, rel=0.08)
    assert x[1000:].std() == pytest.approx(math.sqrt(method.stationary_variance()), rel=0.08)  # 0.389
    # behaviour_action passes episode_step through, adds the noise and clips to [-1, 1]
    actions = np.zeros((2000, 2), np.float32)
    out = executed(method, None, actions, episode_step=starts)
    assert out.dtype == np.float32 and np.abs(out).max() <= 1.0
    assert out[:1000].std() == pytest.approx(0.2, rel=0.08) and out[1000:].std() > 0.33


# -- behaviour log-probabilities against brute force ---------------------------------------------
def values_per_action(kinds, executed_actions, log_prob, num_actions):
    """The log-probability of every (kind of env, executed action) pair, [kinds, A]: the rows of one
    pair must all carry the same value, and every action must have been executed in every kind."""
    table = np.full((kinds.max() + 1, num_actions), np.nan)
    for k in range(len(table)):
        for a in range(num_actions):
            values = log_prob[(kinds == k) & (executed_actions == a)]
            assert len(values) > 0, (k, a)
            np.testing.assert_allclose(values, values[0], rtol=0, atol=1e-12)
            table[k, a] = values[0]
    return table


def frequencies(kinds, executed_actions, num_actions):
    return np.stack([np.bincount(executed_actions[kinds == k], minlength=num_actions) / np.sum(kinds == k)
                     for k in range(kinds.max() + 1)])


@pytest.mark.parametrize("with_logits", [True, False])
def test_egreedy_log_prob_is_the_mixture_of_policy_and_uniform(with_logits):
    """Agent actions drawn from softmax(logits) (or a greedy agent's fixed action), executed with
    epsilon-greedy: the returned log-probability is log((1 - eps) pi(a) + eps / |A|) of the executed
    action, a distribution over the |A| actions (sums to 1 per env), and the executed actions'
    frequencies follow it."""
    eps, A, rng = 0.3, 4, np.random.default_rng(20)
    method = EpsilonGreedy(OBS, DISCRETE, seed=21, epsilon_start=eps, epsilon_end=eps, decay_steps=0)
    logits = np.array([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [-3.0, 4.0, 0.0, 1.0]])
    kinds = np.repeat(np.arange(3), 20000)
    if with_logits:
        pi = softmax(logits, axis=1)
        agent = np.array([rng.choice(A, p=pi[k]) for k in kinds])
        info = {"logits": logits[kinds], "log_prob": np.log(pi[kinds, agent])}
    else:  # greedy: a point mass on the agent's action
        pi = np.eye(A)[[0, 3, 1]]
        agent, info = np.array([0, 3, 1])[kinds], {}
    out, log_prob = method.behaviour_action(None, agent, episode_step=np.ones(len(kinds), np.int64),
                                            agent_info=info)
    assert out.dtype == agent.dtype and log_prob.shape == (len(kinds),)
    table = values_per_action(kinds, out, log_prob, A)
    brute = np.log((1 - eps) * pi + eps / A)
    np.testing.assert_allclose(table, brute, rtol=1e-12)
    np.testing.assert_allclose(np.exp(table).sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(frequencies(kinds, out, A), np.exp(table), atol=0.012)  # sd <= 0.0035


def test_boltzmann_log_prob_is_the_log_softmax_at_the_current_temperature():
    rng = np.random.default_rng(22)
    method = Boltzmann(OBS, DISCRETE, seed=23, temperature_start=3.0, temperature_end=0.5, decay_steps=40000)
    prefs = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 0.0], [-2.0, 1.0, 1.0, 0.0]])
    kinds = np.repeat(np.arange(3), 10000)
    for key in ("logits", "q_values"):
        temperature = method.temperature                   # the schedule before this call's steps
        out, log_prob = method.behaviour_action(None, rng.integers(0, 4, len(kinds)),
                                                agent_info={key: prefs[kinds]})
        table = values_per_action(kinds, out, log_prob, 4)
        np.testing.assert_allclose(table, log_softmax(prefs / temperature, axis=1), rtol=1e-12)
        np.testing.assert_allclose(np.exp(table).sum(1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(frequencies(kinds, out, 4), np.exp(table), atol=0.017)  # sd <= 0.005
    assert temperature == pytest.approx(3.0 - 2.5 * 30000 / 40000)  # the second call's, mid-schedule
    assert method.temperature == 0.5                                  # 60000 steps: the end of it


def assert_log_density_matches_histogram(samples, log_prob, bins=4):
    """exp(log_prob) against the Monte-Carlo density of 2-D samples: in each of bins x bins square
    bins of 0.4 times the smaller coordinate's std around the samples' median, count / (n width^2) vs
    the mean of exp(log_prob) over the bin (>= 3000 samples a bin: ~2% sampling error)."""
    width = 0.4 * samples.std(0).min()
    centre = np.median(samples, 0)
    edges = centre[:, None] + width * (np.arange(bins + 1) - bins / 2)[None, :]
    cell = np.stack([np.searchsorted(edges[d], samples[:, d]) - 1 for d in range(2)], 1)
    inside = np.all((cell >= 0) & (cell < bins), 1)
    for i in range(bins):
        for j in range(bins):
            members = inside & (cell[:, 0] == i) & (cell[:, 1] == j)
            empirical = members.sum() / (len(samples) * width**2)
            assert members.sum() > 3000
            assert empirical == pytest.approx(np.exp(log_prob[members]).mean(), rel=0.08), (i, j)


def test_gaussian_noise_log_prob_is_the_density_of_the_policy_plus_noise():
    """Agent actions a ~ N(mean, std^2), executed a + N(0, sigma^2) unclipped (the default): the
    log-density of the executed action under N(mean, std^2 + sigma^2), summed over the action's
    coordinates (scipy), for every row (beyond the bounds too), matching a Monte-Carlo histogram of the
    executed actions; without "mean" the policy is a point mass."""
    sigma, rng, n = 0.15, np.random.default_rng(24), 400_000
    method = GaussianNoise(OBS, CONTINUOUS, seed=25, sigma=sigma)
    mean, std = np.array([0.1, -0.2]), np.array([0.2, 0.1])
    agent = (mean + std * rng.standard_normal((n, 2))).astype(np.float32)
    info = {"mean": np.tile(mean, (n, 1)), "std": np.tile(std, (n, 1)), "log_prob": np.zeros(n)}
    out, log_prob = method.behaviour_action(None, agent, agent_info=info)
    scale = np.sqrt(std**2 + sigma**2)
    np.testing.assert_allclose(log_prob, stats.norm.logpdf(out, mean, scale).sum(1), rtol=1e-9)
    assert_log_density_matches_histogram(out.astype(np.float64), log_prob)
    # a deterministic actor: N(a, sigma^2) around its own action, near the bounds too (no clipping)
    agent = rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32)
    out, log_prob = method.behaviour_action(None, agent, agent_info={})
    assert np.abs(out).max() > 1.0
    np.testing.assert_allclose(log_prob, stats.norm.logpdf(out, agent.astype(np.float64), sigma).sum(1), rtol=1e-9)
    z = (out - agent.astype(np.float64)) / sigma
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3


BOX1 = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


@pytest.mark.parametrize("cls", [GaussianNoise, OrnsteinUhlenbeckNoise])
def test_clipped_actions_get_the_censored_gaussian_log_likelihood(cls):
    """clip_actions=true: an executed action at a bound is a point mass whose log-probability is the
    tail mass log P(Y >= 1) (or log P(Y <= -1)) of the unclipped sum Y, checked against scipy and against
    the Monte-Carlo fraction of rows at that bound; interior rows keep the density. (The unclipped density
    at the bound, the old value, is far from both.)"""
    rng, n = np.random.default_rng(30), 400_000
    mean = np.where(np.arange(n) < n // 2, 0.8, -0.7)[:, None]  # one half near each bound
    std = 0.25
    if cls is GaussianNoise:
        method, noise_var, centre = cls(OBS, BOX1, seed=31, sigma=0.2, clip_actions=True), 0.2**2, mean
    else:  # the first step of an episode: the process starts at mu, one Euler step of noise
        mu, sigma, dt = 0.1, 0.4, 0.25
        method = cls(OBS, BOX1, seed=31, theta=0.15, sigma=sigma, dt=dt, mu=mu, clip_actions=True)
        noise_var, centre = sigma**2 * dt, mean + mu
    agent = (mean + std * rng.standard_normal((n, 1))).astype(np.float32)
    info = {"mean": mean, "std": np.full((n, 1), std)}
    out, log_prob = method.behaviour_action(None, agent, episode_step=np.zeros(n, np.int64), agent_info=info)
    sd, centre = math.sqrt(std**2 + noise_var), centre[:, 0]
    high, low, inside = out[:, 0] == 1.0, out[:, 0] == -1.0, np.abs(out[:, 0]) < 1.0
    assert out.min() >= -1.0 and out.max() <= 1.0 and np.all(high | low | inside)
    np.testing.assert_allclose(log_prob[high], stats.norm.logsf(1.0, centre[high], sd), rtol=1e-9)
    np.testing.assert_allclose(log_prob[low], stats.norm.logcdf(-1.0, centre[low], sd), rtol=1e-9)
    np.testing.assert_allclose(log_prob[inside], stats.norm.logpdf(out[inside, 0], centre[inside], sd), rtol=1e-9)
    for half, bound, tail in ((slice(0, n // 2), high, stats.norm.sf(1.0, centre[0], sd)),
                              (slice(n // 2, n), low, stats.norm.cdf(-1.0, centre[-1], sd))):
        assert 0.1 < tail < 0.4
        assert bound[half].mean() == pytest.approx(tail, abs=0.004)  # binomial sd <= 0.0011
        assert np.exp(log_prob[half][bound[half]]) == pytest.approx(tail)
    assert np.all(np.abs(stats.norm.logpdf(1.0, centre[high], sd) - log_prob[high]) > 0.3)


def test_ou_noise_log_prob_is_the_density_given_the_process_state():
    """OU (unclipped, to see every row's density): the executed action is a + x_t,
    x_t ~ N(x_{t-1} + theta (mu - x_{t-1}) dt, sigma^2 dt) given the previous state (mu at an episode's
    first step); the log-probability is the density of a + x_t under N(mean + drift, std^2 + sigma^2 dt),
    with the drift computed here from the process's state before the call, and the standardised executed
    actions are N(0, 1)."""
    theta, sigma, dt, mu = 0.5, 0.2, 0.5, 0.05
    rng, n = np.random.default_rng(26), 400_000
    method = OrnsteinUhlenbeckNoise(OBS, CONTINUOUS, seed=27, theta=theta, sigma=sigma, dt=dt, mu=mu,
                                    clip_actions=False)
    mean, std = np.array([0.1, -0.2]), np.array([0.2, 0.1])
    info = {"mean": np.tile(mean, (n, 1)), "std": np.tile(std, (n, 1))}
    noise_var = sigma**2 * dt
    # the first step: every process starts at mu, so the executed actions are N(mean + mu, std^2 + s^2)
    agent = (mean + std * rng.standard_normal((n, 2))).astype(np.float32)
    out, log_prob = method.behaviour_action(None, agent, episode_step=np.zeros(n, np.int64), agent_info=info)
    np.testing.assert_allclose(log_prob, stats.norm.logpdf(out, mean + mu, np.sqrt(std**2 + noise_var)).sum(1),
                               rtol=1e-9)
    assert_log_density_matches_histogram(out.astype(np.float64), log_prob)
    # later steps, half of the envs restarting: the drift from each env's previous state
    for restart in (np.arange(n) % 2 == 0, np.zeros(n, bool)):
        previous = np.where(restart[:, None], mu, method.state)
        drift = previous + theta * (mu - previous) * dt
        agent = (mean + std * rng.standard_normal((n, 2))).astype(np.float32)
        out, log_prob = method.behaviour_action(None, agent, episode_step=np.where(restart, 0, 3),
                                                agent_info=info)
        total_sd = np.sqrt(std**2 + noise_var)
        np.testing.assert_allclose(log_prob, stats.norm.logpdf(out, mean + drift, total_sd).sum(1), rtol=1e-9)
        z = (out - mean - drift) / total_sd
        assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    # a deterministic actor: a point mass at its action, plus the process
    previous = method.state.copy()
    agent = rng.uniform(-0.3, 0.3, (n, 2)).astype(np.float32)
    out, log_prob = method.behaviour_action(None, agent, episode_step=np.ones(n, np.int64), agent_info={})
    centre = agent.astype(np.float64) + previous + theta * (mu - previous) * dt
    np.testing.assert_allclose(log_prob, stats.norm.logpdf(out, centre, math.sqrt(noise_var)).sum(1), rtol=1e-9)
    assert stats.kstest(((out - centre) / math.sqrt(noise_var)).ravel(), "norm").pvalue > 1e-3


# -- UCB counts ----------------------------------------------------------------------------------
def test_ucb_bonus_equals_hand_computed_values():
    obs_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    method = UCBCounts(obs_space, gym.spaces.Discrete(2), alpha=2.0, cell_size=1.0)
    # batch 1 (T = 4, N = 1): cells 0, 0, 1, 0; actions 0, 1, 0, 0
    first = rollout_of(np.array([0.2, 0.7, 1.5, 0.1])[:, None, None], np.array([[0], [1], [0], [0]]))
    np.testing.assert_array_equal(method.intrinsic_reward(first), np.zeros(4))  # nothing observed: counts 1
    method.observe(first)
    # counts including the batch: N_0 = 3, N_1 = 1; n_(0,0) = 2, n_(0,1) = 1, n_(1,0) = 1
    expected = [2 * math.sqrt(2 * math.log(3) / 2), 2 * math.sqrt(2 * math.log(3) / 1), 0.0,
                2 * math.sqrt(2 * math.log(3) / 2)]
    np.testing.assert_allclose(method.intrinsic_reward(first), expected, rtol=1e-12)
    np.testing.assert_allclose(method.intrinsic_reward(first), expected, rtol=1e-12)  # nothing stored
    assert method.update(first) == {"distinct_states": 2, "distinct_pairs": 3}
    # batch 2: (cell 0, action 1), (cell 1, action 0): N_0 = 4, N_1 = 2, n_(0,1) = 2, n_(1,0) = 2
    second = rollout_of(np.array([0.3, 1.2])[:, None, None], np.array([[1], [0]]))
    method.observe(second)
    np.testing.assert_allclose(method.intrinsic_reward(second),
                               [2 * math.sqrt(2 * math.log(4) / 2), 2 * math.sqrt(2 * math.log(2) / 2)], rtol=1e-12)
    # negative coordinates floor into their own cells: -0.5 is cell -1, not cell 0 (N_0 = 5, n_(0,0) = 3)
    third = rollout_of(np.array([-0.5, 0.5])[:, None, None], np.array([[0], [0]]))
    method.observe(third)
    np.testing.assert_allclose(method.intrinsic_reward(third), [0.0, 2 * math.sqrt(2 * math.log(5) / 3)], rtol=1e-12)
    assert method.update(third) == {"distinct_states": 3, "distinct_pairs": 4}
    # stored counts, at least 1: an untried action in a visited cell (N_1 = 2, n_(1,1) = 0), a new cell
    probe = rollout_of(np.array([1.7, 7.0])[:, None, None], np.array([[1], [1]]))
    np.testing.assert_allclose(method.intrinsic_reward(probe), [2 * math.sqrt(2 * math.log(2) / 1), 0.0], rtol=1e-12)
    # no change of action: the behaviour is the policy's
    assert not method.changes_actions
    actions, log_prob = method.behaviour_action(None, np.array([1, 0]), episode_step=np.zeros(2, np.int64),
                                                agent_info={"log_prob": np.array([-0.1, -2.0])})
    np.testing.assert_array_equal(actions, [1, 0])
    np.testing.assert_array_equal(log_prob, [-0.1, -2.0])


def test_ucb_per_coordinate_cells_and_invalid_cell_size():
    method = UCBCounts(OBS, DISCRETE, cell_size=[1.0, 10.0, 0.5])
    np.testing.assert_array_equal(method.cells(np.array([[1.5, 15.0, 0.7], [-0.1, 9.9, -0.2]])),
                                  [[1, 1, 1], [-1, 0, -1]])
    with pytest.raises(ConfigError, match="exploration.cell_size"):
        UCBCounts(OBS, DISCRETE, cell_size=[1.0, 1.0])
    with pytest.raises(ConfigError, match="exploration.epsilon_start"):
        EpsilonGreedy(OBS, DISCRETE, epsilon_start=1.5)


def brute_force_ucb1(q, state_cell, state_counts, pair_counts, alpha):
    """The UCB-1 choice of one env by loops: untried actions first (the lowest), else the argmax of
    Q(s, a) + alpha sqrt(2 ln N_s / n_{s,a}) (the first of equal maxima)."""
    n = [pair_counts.get((state_cell, a), 0) for a in range(len(q))]
    if 0 in n:
        return n.index(0)
    big_n = state_counts[state_cell]
    index = [q[a] + alpha * math.sqrt(2 * math.log(big_n) / n[a]) for a in range(len(q))]
    return index.index(max(index))


def test_ucb1_action_rule_picks_the_argmax_of_the_brute_force_index():
    """rule=ucb1_action over 2-D cells, 7 envs, 300 steps, random Q-values: every choice is the
    brute-force UCB-1 choice from counts kept here (each step counted once it is taken); the rule is a
    point mass (log-probability 0), pays no bonus, and `observe` leaves its counts alone."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    method = UCBCounts(obs_space, DISCRETE, rule="ucb1_action", alpha=0.7, cell_size=1.0)
    assert method.changes_actions and method.requires.agent_families == ("off_policy",)
    rng, state_counts, pair_counts = np.random.default_rng(40), {}, {}
    for _ in range(300):
        obs = rng.uniform(-1.5, 1.5, (7, 2))  # 16 cells (floors -2 .. 1)
        q = rng.normal(0, 0.5, (7, 4))
        chosen, log_prob = method.behaviour_action(obs, np.zeros(7, np.int64), episode_step=np.ones(7, np.int64),
                                                   agent_info={"q_values": q, "logits": -q})
        cells = [tuple(np.floor(o).astype(int)) for o in obs]
        expected = [brute_force_ucb1(q[i], cells[i], state_counts, pair_counts, 0.7) for i in range(7)]
        np.testing.assert_array_equal(chosen, expected)
        np.testing.assert_array_equal(log_prob, np.zeros(7))
        for c, a in zip(cells, chosen):  # after the whole vector step
            state_counts[c] = state_counts.get(c, 0) + 1
            pair_counts[(c, int(a))] = pair_counts.get((c, int(a)), 0) + 1
    assert min(pair_counts.values()) > 1 and len(pair_counts) == 16 * 4
    batch = rollout_of(rng.uniform(-1.5, 1.5, (5, 7, 2)), rng.integers(0, 4, (5, 7)))
    before = through_checkpoint(method.state_dict())
    method.observe(batch)
    assert method.state_dict() == before
    np.testing.assert_array_equal(method.intrinsic_reward(batch), np.zeros(len(batch)))


def test_ucb1_action_rule_is_ucb1_on_a_bernoulli_bandit():
    """A bandit is one cell: with Q the arms' empirical mean rewards (as a value-based agent would pass),
    the rule makes the choices of UCB-1, v_a + sqrt(2 ln N / n_a), step for step, and pulls the best
    arm most."""
    p, rng = np.array([0.2, 0.5, 0.8]), np.random.default_rng(41)
    method = UCBCounts(gym.spaces.Box(-1, 1, (1,), np.float32), gym.spaces.Discrete(3), rule="ucb1_action",
                       alpha=1.0, cell_size=1.0)
    pulls, totals, obs = np.zeros(3), np.zeros(3), np.zeros((1, 1))
    for t in range(3000):
        means = np.divide(totals, pulls, out=np.zeros(3), where=pulls > 0)
        if t < 3:
            expected = t  # every arm once, in order
        else:
            expected = int(np.argmax(means + np.sqrt(2 * math.log(t) / pulls)))
        chosen, _ = method.behaviour_action(obs, np.zeros(1, np.int64), agent_info={"q_values": means[None]})
        assert chosen[0] == expected, t
        pulls[expected] += 1
        totals[expected] += rng.random() < p[expected]
    assert pulls[2] > 0.8 * 3000 and pulls[0] < pulls[1]


def test_ucb_rule_is_checked_and_the_action_rule_needs_q_values():
    with pytest.raises(ConfigError, match="exploration.rule"):
        UCBCounts(OBS, DISCRETE, rule="ucb2")
    bonus = UCBCounts(OBS, DISCRETE)
    assert not bonus.changes_actions and bonus.requires.agent_families == ("on_policy", "off_policy")
    rule = UCBCounts(OBS, DISCRETE, rule="ucb1_action")
    with pytest.raises(MissingActionPreferences, match="q_values"):  # a policy's logits are no Q-values
        rule.behaviour_action(np.zeros((2, 3)), np.zeros(2, np.int64), agent_info={"logits": np.zeros((2, 4))})


# -- checkpoint round trip for every method ------------------------------------------------------
def drive(method, rng, calls):
    """Feed `calls` batches (changing actions step by step where the method does): the outputs
    (executed actions, their behaviour log-probabilities, r_int and the update's metrics)."""
    discrete = isinstance(method.action_space, gym.spaces.Discrete)
    outputs = []
    for _ in range(calls):
        T, N = 6, 5
        obs = rng.normal(0, 1, (T, N, 3))
        actions = rng.integers(0, 4, (T, N)) if discrete else rng.uniform(-1, 1, (T, N, 2)).astype(np.float32)
        ended = rng.random((T, N)) < 0.2
        log_probs = np.zeros((T, N))
        if method.changes_actions:
            step = np.zeros(N, np.int64)
            for t in range(T):
                info = ({"logits": rng.normal(0, 1, (N, 4)), "q_values": rng.normal(0, 1, (N, 4))} if discrete else
                        {"mean": rng.uniform(-0.5, 0.5, (N, 2)), "std": rng.uniform(0.1, 0.5, (N, 2))})
                actions[t], log_probs[t] = method.behaviour_action(obs[t], actions[t], episode_step=step,
                                                                   agent_info=info)
                step = np.where(ended[t], 0, step + 1)
        r_int, metrics = iterate(method, rollout_of(obs, actions, ended))
        outputs += [actions.copy(), log_probs, r_int, metrics]
    return outputs


METHODS = {
    "egreedy": (EpsilonGreedy, DISCRETE, dict(epsilon_start=0.9, epsilon_end=0.1, decay_steps=100)),
    "boltzmann": (Boltzmann, DISCRETE, dict(temperature_start=3.0, temperature_end=1.0, decay_steps=100)),
    "gaussian_noise": (GaussianNoise, CONTINUOUS, dict(sigma=0.3)),
    "ou_noise": (OrnsteinUhlenbeckNoise, CONTINUOUS, dict(dt=0.5)),
    "ucb": (UCBCounts, DISCRETE, dict(cell_size=0.7)),
    "ucb1_action": (UCBCounts, DISCRETE, dict(rule="ucb1_action", cell_size=0.7)),
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


@pytest.mark.parametrize("agent", ["trpo", "ppo"])
@pytest.mark.parametrize("method, extra", [("ou_noise", []), ("gaussian_noise", ["exploration.clip_actions=true"])])
def test_runner_refuses_history_dependent_or_clipped_noise_on_on_policy_agents(tmp_path, capsys, agent, method,
                                                                               extra):
    """OU noise depends on its history (DDPG's exploration), clipped Gaussian noise has no density at
    the bounds: refused at start-up, naming both options (the acceptance command, in process)."""
    assert train_in_process(tmp_path, f"agent={agent}", f"exploration={method}", "env=half_cheetah",
                            "total_env_steps=10000", *extra) == 2
    err = capsys.readouterr().err
    assert f"exploration={method}" in err and f"agent={agent}" in err and "off_policy" in err
    assert all(key in err for key in extra)  # the value that made it off-policy only
    assert not (tmp_path / "progress.csv").exists()


@pytest.mark.parametrize("agent", ["trpo", "ppo"])
def test_runner_refuses_the_ucb1_action_rule_on_on_policy_agents(tmp_path, capsys, agent):
    """A deterministic action rule has no importance ratio: refused; the bonus rule runs (below)."""
    assert train_in_process(tmp_path, f"agent={agent}", "exploration=ucb", "exploration.rule=ucb1_action",
                            "env=cartpole") == 2
    err = capsys.readouterr().err
    assert "exploration=ucb with exploration.rule=ucb1_action" in err and f"agent={agent}" in err
    assert "off_policy" in err


def test_egreedy_default_is_a_small_constant_epsilon_within_trpo_step_size():
    """conf/exploration/egreedy.yaml: constant eps = 0.01, whose behaviour b = (1 - eps) pi + eps / |A|
    stays within KL(pi || b) <= -log(1 - eps) ~ 0.01 of any policy (brute force over random policies and
    the point masses); DQN's 1 -> 0.1 over 1M steps is reachable by overrides."""
    from runner.config import compose
    from runner.train import build_exploration

    cfg, _ = compose(["exploration=egreedy", "env=cartpole"])
    method, shaper = build_exploration(cfg.exploration, OBS, DISCRETE, 0, "cpu")
    assert shaper.coef == 0.0
    for steps in (0, 10**7):
        method.env_steps = steps
        assert method.epsilon == 0.01
    rng = np.random.default_rng(50)
    pi = np.concatenate([rng.dirichlet(np.full(4, 0.3), 10000), np.eye(4)])
    b = 0.99 * pi + 0.01 / 4
    kl = np.sum(np.where(pi > 0, pi * np.log(np.where(pi > 0, pi, 1) / b), 0.0), 1)
    # KL is convex in pi (b is affine in it): largest at a point mass, -log(1 - eps + eps / |A|)
    worst = -math.log(0.99 + 0.01 / 4)
    np.testing.assert_allclose(kl[-4:], worst, rtol=1e-12)
    assert kl.max() <= worst * (1 + 1e-12) and worst < -math.log(0.99) < 0.0101
    dqn = ["exploration.epsilon_start=1.0", "exploration.epsilon_end=0.1", "exploration.decay_steps=1000000"]
    cfg, _ = compose(["exploration=egreedy", "env=cartpole", *dqn])
    method, _ = build_exploration(cfg.exploration, OBS, DISCRETE, 0, "cpu")
    assert method.epsilon == 1.0
    method.env_steps = 500_000
    assert method.epsilon == pytest.approx(0.55)
    method.env_steps = 2_000_000
    assert method.epsilon == pytest.approx(0.1)


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
    """The categorical policy's logits reach behaviour_action through agent.act's info."""
    rows = run_and_resume(tmp_path, "env=cartpole", "exploration=boltzmann", "exploration.temperature_start=2.0")
    assert all(float(r["expl_temperature"]) == 2.0 for r in rows)


def test_trpo_pendulum_with_gaussian_noise(tmp_path):
    rows = run_and_resume(tmp_path, "env=pendulum", "exploration=gaussian_noise")
    assert all(float(r["bonus_raw_mean"]) == 0.0 for r in rows)
    returns = [float(r["return_ext_mean"]) for r in rows if int(r["episodes"])]  # 200-step episodes
    assert len(rows) == 4 and returns and all(np.isfinite(returns))
