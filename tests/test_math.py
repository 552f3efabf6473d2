"""Numerical pieces against closed forms and brute force."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from algos.agents.trpo import TRPO, backtracking_line_search, fisher_vector_product
from algos.common.baselines import LinearFeatureBaseline
from algos.common.distributions import Categorical, DiagGaussian
from algos.common.math import conjugate_gradient, gae
from algos.common.nets import CategoricalPolicy, GaussianPolicy, mlp
from algos.common.normalizers import DiscountedReturnScaler, RunningMeanStd
from algos.exploration.base import IntrinsicRewardShaper


def test_conjugate_gradient_solves_random_spd_system():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(12, 12))
    a = torch.tensor(m @ m.T + 12 * np.eye(12))
    b = torch.tensor(rng.normal(size=12))
    x = conjugate_gradient(lambda v: a @ v, b, iterations=12)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(a.numpy(), b.numpy()), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("discrete", [False, True])
def test_fisher_vector_product_equals_hessian_of_mean_kl(discrete):
    torch.manual_seed(0)
    policy = (CategoricalPolicy(mlp(3, (5,), 4)) if discrete
              else GaussianPolicy(mlp(3, (5,), 2), 2, init_log_std=-0.3)).double()
    obs = torch.randn(20, 3, dtype=torch.float64)
    params = list(policy.parameters())
    theta = torch.cat([p.detach().reshape(-1) for p in params])
    old = policy.dist.detach(policy(obs))

    def mean_kl(flat):
        # functional evaluation of the policy at flat parameters
        chunks, offset = {}, 0
        for (name, p) in policy.named_parameters():
            chunks[name] = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        new = torch.func.functional_call(policy, chunks, (obs,))
        return policy.dist.kl(old, new).mean()

    hessian = torch.autograd.functional.hessian(mean_kl, theta)
    damping = 0.1
    fvp = fisher_vector_product(policy, obs, damping)
    for seed in range(3):
        v = torch.randn(theta.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        np.testing.assert_allclose(fvp(v).detach().numpy(), (hessian @ v + damping * v).numpy(),
                                   rtol=1e-6, atol=1e-9)


def test_gaussian_and_categorical_kl_match_torch_distributions():
    torch.manual_seed(1)
    m1, m2, s1, s2 = torch.randn(7, 3), torch.randn(7, 3), torch.randn(3), torch.randn(7, 3)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, s1.exp()), torch.distributions.Normal(m2, s2.exp())).sum(-1)
    torch.testing.assert_close(DiagGaussian.kl((m1, s1), (m2, s2)), ref)
    l1, l2 = torch.randn(7, 5), torch.randn(7, 5)
    ref = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=l1),
                                            torch.distributions.Categorical(logits=l2))
    torch.testing.assert_close(Categorical.kl((l1,), (l2,)), ref)
    a = torch.randn(7, 3)
    torch.testing.assert_close(DiagGaussian.log_prob((m1, s1), a),
                               torch.distributions.Normal(m1, s1.exp()).log_prob(a).sum(-1))


def test_modes_are_the_most_likely_actions_and_draw_nothing():
    torch.manual_seed(2)
    mean, log_std, logits = torch.randn(7, 3), torch.randn(3), torch.randn(7, 5)
    state = torch.get_rng_state()
    torch.testing.assert_close(DiagGaussian.mode((mean, log_std)), mean)
    torch.testing.assert_close(Categorical.mode((logits,)), torch.distributions.Categorical(logits=logits).mode)
    assert torch.equal(torch.get_rng_state(), state)


def _line_search_problem(seed, scale):
    torch.manual_seed(seed)
    policy = GaussianPolicy(mlp(4, (16,), 2), 2)
    obs, actions, adv = torch.randn(256, 4), torch.randn(256, 2), torch.randn(256)
    params = [p for p in policy.parameters()]
    old = DiagGaussian.detach(policy(obs))
    old_logp = DiagGaussian.log_prob(old, actions)
    surrogate = lambda: -(torch.exp(DiagGaussian.log_prob(policy(obs), actions) - old_logp) * adv).mean()
    mean_kl = lambda: DiagGaussian.kl(old, policy(obs)).mean()
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(surrogate(), params)])
    theta = torch.cat([p.detach().reshape(-1) for p in params])
    return policy, theta, scale * grad, surrogate, mean_kl


@pytest.mark.parametrize("seed", range(8))
def test_line_search_never_exceeds_the_kl_bound(seed):
    """Deliberately over-long proposals (the gradient times 50) must be cut back until the KL
    bound holds and the surrogate improves, or rejected."""
    max_kl = 0.01
    policy, theta, step, surrogate, mean_kl = _line_search_problem(seed, scale=50.0)
    with torch.no_grad():
        loss_before = float(surrogate())
    accepted, backtracks, loss_after, kl = backtracking_line_search(
        policy, theta, step, surrogate, mean_kl, max_kl, ratio=0.8, max_backtracks=15)
    with torch.no_grad():
        kl_now, loss_now = float(mean_kl()), float(surrogate())
    assert kl_now <= max_kl
    if accepted:
        assert backtracks > 0  # the full proposal was too long, so it had to shrink
        assert loss_now < loss_before
        assert kl == pytest.approx(kl_now)
    else:
        torch.testing.assert_close(torch.cat([p.reshape(-1) for p in policy.parameters()]), theta)


def test_trpo_update_respects_trust_region_and_improves_surrogate():
    from algos.common.rollout import Rollout
    rng = np.random.default_rng(0)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (3,))
    agent = TRPO(obs_space, gym.spaces.Box(-1, 1, (2,)), batch_size=400, num_envs=4, max_kl=0.01)
    T, N = 100, 4
    rollout = Rollout(obs=rng.normal(size=(T, N, 3)).astype(np.float32),
                      actions=rng.normal(size=(T, N, 2)).astype(np.float32),
                      rewards_ext=rng.normal(size=(T, N)), terminated=np.zeros((T, N), bool),
                      truncated=np.zeros((T, N), bool), episode_step=np.tile(np.arange(T)[:, None], (1, N)),
                      last_obs=rng.normal(size=(N, 3)).astype(np.float32),
                      final_index=np.zeros((0, 2), np.int64), final_obs=np.zeros((0, 3), np.float32))
    rollout.rewards = rollout.obs[..., 0].astype(np.float64)  # reward depends on the state
    metrics = agent.update(rollout)
    assert metrics["kl"] <= 0.01
    if metrics["step_accepted"]:
        assert metrics["loss_policy_after"] < metrics["loss_policy"]


def test_gae_equals_brute_force_sum():
    rng = np.random.default_rng(0)
    T, N, gamma, lam = 40, 3, 0.97, 0.9
    rewards, values, next_values = rng.normal(size=(T, N)), rng.normal(size=(T, N)), rng.normal(size=(T, N))
    terminated = rng.random((T, N)) < 0.05
    truncated = (rng.random((T, N)) < 0.05) & ~terminated
    end = terminated | truncated
    adv = gae(rewards, values, next_values, terminated.astype(float), end.astype(float), gamma, lam)
    for i in range(N):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                delta = rewards[k, i] + gamma * (0 if terminated[k, i] else next_values[k, i]) - values[k, i]
                total += weight * delta
                if end[k, i]:
                    break
                weight *= gamma * lam
            assert adv[t, i] == pytest.approx(total, abs=1e-10)


def test_linear_baseline_is_the_least_squares_solution():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(500, 4)) * 3
    steps = rng.integers(0, 500, 500)
    returns = rng.normal(size=500) + obs[:, 0] * 2
    baseline = LinearFeatureBaseline(gym.spaces.Box(-np.inf, np.inf, (4,)), reg_coeff=0.0)
    baseline.fit(obs, steps, returns)
    o = np.clip(obs, -10, 10)
    t = steps[:, None] / 100.0
    features = np.concatenate([o, o**2, t, t**2, t**3, np.ones_like(t)], 1)
    expected, *_ = np.linalg.lstsq(features, returns, rcond=None)
    np.testing.assert_allclose(baseline.coeffs, expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(baseline.predict(obs, steps), features @ expected, rtol=1e-6, atol=1e-8)


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(3, 2, size=(1000, 5))
    rms = RunningMeanStd((5,), epsilon=0.0)
    for chunk in np.array_split(data, 7):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0))
    np.testing.assert_allclose(rms.var, data.var(0))


def test_return_scaler_matches_per_step_wrapper_semantics():
    rng = np.random.default_rng(0)
    T, N, gamma = 50, 3, 0.9
    rewards = rng.normal(size=(T, N))
    ends = rng.random((T, N)) < 0.1
    scaler = DiscountedReturnScaler(gamma, clip=1e9, num_envs=N)
    scaled = scaler(rewards[:25], ends[:25])
    scaled = np.concatenate([scaled, scaler(rewards[25:], ends[25:])])
    rms, running, expected = RunningMeanStd(()), np.zeros(N), np.empty((T, N))
    for t in range(T):  # the wrapper, one step at a time
        running = running * gamma + rewards[t]
        rms.update(running)
        expected[t] = rewards[t] / np.sqrt(rms.var + 1e-8)
        running = running * (1 - ends[t])
    np.testing.assert_allclose(scaled, expected, rtol=1e-6)


def shape_new_data(shaper: IntrinsicRewardShaper, r: np.ndarray) -> np.ndarray:
    """What the loops do with the bonuses of new experience: move the statistics, then apply."""
    shaper.observe(r)
    return shaper.apply(r)


def test_intrinsic_reward_normalisations():
    r = np.array([[1.0, 2.0], [3.0, 10.0]])
    np.testing.assert_allclose(shape_new_data(IntrinsicRewardShaper(0.5, "none"), r), 0.5 * r)
    np.testing.assert_allclose(shape_new_data(IntrinsicRewardShaper(1.0, "batch_median"), r), r - 2.5)
    vime = IntrinsicRewardShaper(1.0, "running_median_ratio", median_window=2)
    np.testing.assert_array_equal(shape_new_data(vime, np.zeros((2, 2))), 0.0)  # no bonus yet: statistics untouched
    assert not vime.medians
    np.testing.assert_allclose(shape_new_data(vime, r), r / 2.5)
    np.testing.assert_allclose(shape_new_data(vime, 2 * r), 2 * r / np.mean([2.5, 5.0]))
    np.testing.assert_allclose(shape_new_data(vime, 4 * r), 4 * r / np.mean([5.0, 10.0]))  # window of 2
    std = IntrinsicRewardShaper(1.0, "running_std")
    np.testing.assert_allclose(shape_new_data(std, r), r / np.std(r), rtol=1e-3)  # prior weight is only 1e-4


def test_shaping_a_minibatch_is_pure():
    """apply() never moves the statistics: an off-policy agent shapes replay minibatches with the
    statistics of the new experience only."""
    for normalise in ("running_std", "running_median_ratio", "batch_median"):
        shaper = IntrinsicRewardShaper(2.0, normalise)
        shape_new_data(shaper, np.array([1.0, 2.0, 3.0, 7.0]))
        state = (shaper.rms.state_dict(), list(shaper.medians))
        minibatch = np.array([0.5, 4.0, 9.0])
        first = shaper.apply(minibatch)
        np.testing.assert_array_equal(shaper.apply(minibatch), first)
        assert (shaper.rms.state_dict(), list(shaper.medians)) == state
        if normalise == "running_median_ratio":
            np.testing.assert_allclose(first, 2.0 * minibatch / 2.5)  # the median of the NEW data: 2.5
