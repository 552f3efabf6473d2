"""The agent contracts (algos/agents/base.py): families, act()'s info and deterministic acting on
both acting paths (numpy fast path, torch plain path), episode_start."""
import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from algos.agents.base import AGENT_FAMILIES, Agent, MetaAgent, OffPolicyAgent, OnPolicyAgent
from algos.agents.ppo import PPO
from algos.agents.trpo import TRPO

OBS = gym.spaces.Box(-np.inf, np.inf, (5,))
PIXELS = gym.spaces.Box(0, 255, (4, 36, 36), np.uint8)
SPACES = {"gaussian": gym.spaces.Box(-1, 1, (3,)), "categorical": gym.spaces.Discrete(4)}
N = 6


def make_agent(agent_cls, kind: str, path: str, obs_space=OBS):
    torch.manual_seed(0)
    agent = agent_cls(obs_space, SPACES[kind], seed=3, init_log_std=-0.4) if agent_cls is TRPO \
        else agent_cls(obs_space, SPACES[kind], seed=3)
    if not agent.discrete:  # a log-std that is not the same in every dimension
        with torch.no_grad():
            agent.policy.log_std.add_(torch.linspace(-0.3, 0.3, 3))
        agent.refresh_acting()
    if path == "torch":
        agent.fast_actor = None  # the plain version
    else:
        assert agent.fast_actor is not None
    return agent


def observations(obs_space=OBS, n=N):
    rng = np.random.default_rng(7)
    if obs_space is PIXELS:
        return rng.integers(0, 256, (n, *obs_space.shape), dtype=np.uint8)
    return rng.normal(size=(n, *obs_space.shape)).astype(np.float32)


def rng_states(agent):
    return copy.deepcopy(agent.rng.bit_generator.state), agent.generator.get_state().clone()


def policy_params(agent, obs):
    with torch.no_grad():
        return tuple(x.detach() for x in agent.policy(agent.preprocess(obs)))


CASES = [(cls, kind, path) for cls in (TRPO, PPO) for kind in SPACES for path in ("numpy", "torch")]
IDS = [f"{cls.__name__}-{kind}-{path}" for cls, kind, path in CASES]


def test_families():
    assert AGENT_FAMILIES == ("on_policy", "off_policy", "meta")
    assert TRPO.family == PPO.family == OnPolicyAgent.family == "on_policy"
    assert OffPolicyAgent.family == "off_policy" and MetaAgent.family == "meta"
    for cls in (OnPolicyAgent, OffPolicyAgent, MetaAgent):
        assert issubclass(cls, Agent) and cls.family in AGENT_FAMILIES


def test_contract_bases_declare_their_methods():
    off, meta = OffPolicyAgent(), MetaAgent()  # no constructor of their own
    for call in (lambda: off.observe(None), lambda: off.update(lambda batch: None),
                 lambda: meta.start_task(0), lambda: meta.adapt(0, None), lambda: meta.meta_update([[]]),
                 lambda: off.act(np.zeros((1, 2)), deterministic=True)):
        with pytest.raises(NotImplementedError):
            call()
    off.episode_start(np.ones(3, bool))  # no-op by default


@pytest.mark.parametrize("agent_cls,kind,path", CASES, ids=IDS)
def test_deterministic_act_is_the_mode_and_draws_nothing(agent_cls, kind, path):
    agent = make_agent(agent_cls, kind, path)
    obs = observations()
    before = rng_states(agent)
    actions, info = agent.act(obs, deterministic=True)
    again, _ = agent.act(obs, deterministic=True)
    after = rng_states(agent)
    assert before[0] == after[0]
    assert torch.equal(before[1], after[1])
    params = policy_params(agent, obs)
    if agent.discrete:
        np.testing.assert_array_equal(actions, params[0].argmax(-1).numpy())
    else:
        np.testing.assert_allclose(actions, params[0].numpy(), rtol=1e-5, atol=1e-6)
        assert not np.shares_memory(actions, info["mean"])
    np.testing.assert_array_equal(actions, again)


@pytest.mark.parametrize("deterministic", [False, True], ids=["sampled", "deterministic"])
@pytest.mark.parametrize("agent_cls,kind,path", CASES, ids=IDS)
def test_info_matches_the_policy(agent_cls, kind, path, deterministic):
    agent = make_agent(agent_cls, kind, path)
    obs = observations()
    actions, info = agent.act(obs, deterministic=deterministic)
    params = policy_params(agent, obs)
    dist = agent.policy.dist
    dtype = torch.long if agent.discrete else torch.float32
    want = dist.log_prob(params, torch.as_tensor(actions, dtype=dtype)).numpy()
    assert info["log_prob"].shape == (N,)
    np.testing.assert_allclose(info["log_prob"], want, rtol=1e-5, atol=1e-5)
    if agent.discrete:
        np.testing.assert_allclose(info["logits"], params[0].numpy(), rtol=1e-5, atol=1e-6)
        assert "mean" not in info
    else:
        mean, log_std = params
        assert info["mean"].shape == info["std"].shape == (N, 3)
        np.testing.assert_allclose(info["mean"], mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(info["std"], log_std.exp().expand_as(mean).numpy(), rtol=1e-6)
        assert "logits" not in info


@pytest.mark.parametrize("agent_cls", [TRPO, PPO])
def test_pixel_policies_act_through_torch(agent_cls):
    torch.manual_seed(0)
    agent = agent_cls(PIXELS, SPACES["categorical"], seed=3)
    assert agent.fast_actor is None
    obs = observations(PIXELS, 2)
    actions, info = agent.act(obs)
    params = policy_params(agent, obs)
    want = agent.policy.dist.log_prob(params, torch.as_tensor(actions)).numpy()
    np.testing.assert_allclose(info["log_prob"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info["logits"], params[0].numpy(), rtol=1e-5, atol=1e-6)
    before = rng_states(agent)
    actions, _ = agent.act(obs, deterministic=True)
    assert torch.equal(before[1], rng_states(agent)[1])
    np.testing.assert_array_equal(actions, params[0].argmax(-1).numpy())


@pytest.mark.parametrize("kind", list(SPACES))
def test_sampling_draws_as_before(kind):
    """The sampled actions are the same draws as before info grew: numpy path mean + std * one
    float32 standard_normal [N, A] / inverse CDF from one uniform [N, 1]; torch path dist.sample."""
    agent = make_agent(TRPO, kind, "numpy")
    obs = observations()
    replica = copy.deepcopy(agent.rng)
    actions, _ = agent.act(obs)
    params = policy_params(agent, obs)
    if agent.discrete:
        logits = params[0].numpy()
        p = np.exp(logits - logits.max(-1, keepdims=True))
        cdf = np.cumsum(p, -1)
        u = replica.random((N, 1)) * cdf[:, -1:]
        want = np.minimum((cdf < u).sum(-1), logits.shape[-1] - 1)
        np.testing.assert_array_equal(actions, want)
    else:
        noise = replica.standard_normal((N, 3), dtype=np.float32)
        want = params[0].numpy() + np.exp(params[1].numpy()) * noise
        np.testing.assert_allclose(actions, want, rtol=1e-5, atol=1e-6)
    assert agent.rng.bit_generator.state == replica.bit_generator.state

    agent = make_agent(TRPO, kind, "torch")
    replica = torch.Generator().set_state(agent.generator.get_state())
    actions, _ = agent.act(obs)
    want = agent.policy.dist.sample(policy_params(agent, obs), replica).numpy()
    np.testing.assert_array_equal(actions, want)


@pytest.mark.parametrize("agent_cls,kind,path", CASES, ids=IDS)
def test_episode_start_is_a_no_op(agent_cls, kind, path):
    agent, twin = make_agent(agent_cls, kind, path), make_agent(agent_cls, kind, path)
    obs = observations()
    agent.episode_start(np.array([True, False] * (N // 2)))
    agent.episode_start(np.ones(N, bool))
    a, info_a = agent.act(obs)
    b, info_b = twin.act(obs)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(info_a["log_prob"], info_b["log_prob"])


@pytest.mark.parametrize("on_cpu", [True, False], ids=["views", "copies"])
@pytest.mark.parametrize("kind", list(SPACES))
def test_fast_actor_follows_the_weights_after_refresh(kind, on_cpu):
    """On CPU the numpy weights are views; off the CPU, copies that refresh_acting re-reads (here the
    re-reading path, run on CPU). Either way, after an update and refresh_acting, act() sees the new
    policy."""
    from algos.common.fast.acting import NumpyActor

    agent = make_agent(TRPO, kind, "numpy")
    agent.fast_actor = NumpyActor.for_policy(agent.policy, on_cpu=on_cpu)
    obs = observations()
    with torch.no_grad():
        for p in agent.policy.parameters():
            p.add_(0.1)
    agent.refresh_acting()
    _, info = agent.act(obs, deterministic=True)
    params = policy_params(agent, obs)
    if agent.discrete:
        np.testing.assert_allclose(info["logits"], params[0].numpy(), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(info["mean"], params[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(info["std"][0], params[1].exp().numpy(), rtol=1e-6)


def test_trpo_and_ppo_weigh_noisy_actions_by_the_behaviour_distribution():
    """With epsilon-greedy, old_logp is the mixture's log-probability: TRPO's surrogate at theta_old
    is -mean(pi_old(a|s) / ((1 - eps) pi_old(a|s) + eps / |A|) * A), checked against a brute force."""
    from omegaconf import OmegaConf

    from algos.exploration.classic import EpsilonGreedy
    from algos.exploration.none import NoExploration
    from runner.collect import Collector
    from runner.envs import make_vector_env

    vec = make_vector_env(OmegaConf.create({"id": "CartPole-v1", "max_episode_steps": 50, "kwargs": {}}), 2)
    spaces = vec.single_observation_space, vec.single_action_space
    agent = TRPO(*spaces, batch_size=100, num_envs=2, policy_hidden=[8], seed=0, whole_paths=False)
    noise = EpsilonGreedy(*spaces, seed=1, epsilon_start=0.3, epsilon_end=0.3)
    collector = Collector(vec, 50)
    collector.reset([0, 1])
    rollout, _ = collector.collect(agent, noise)
    rollout.rewards = rollout.rewards_ext
    obs = agent.tensor(rollout.flat(rollout.obs))
    with torch.no_grad():
        logits = agent.policy(obs)[0]
    pi = torch.softmax(logits.double(), -1).numpy()[np.arange(100), rollout.flat(rollout.actions)]
    mixture = np.log(0.7 * pi + 0.3 / 2)
    np.testing.assert_allclose(rollout.flat(rollout.behaviour_log_prob), mixture, rtol=1e-5)
    adv = rollout.flat(agent.advantages(rollout, rollout.rewards, rollout.successor_values(agent.value))[0])
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    expected = -np.mean(pi / np.exp(mixture) * adv)
    assert agent.update(rollout)["loss_policy"] == pytest.approx(expected, rel=1e-4)
    # without action noise the ratio at theta_old is 1: the surrogate is -mean(A) = 0
    collector.reset([0, 1])
    plain, _ = collector.collect(agent, NoExploration(*spaces))
    assert plain.behaviour_log_prob is None
    plain.rewards = plain.rewards_ext
    assert abs(agent.update(plain)["loss_policy"]) < 1e-6
    # PPO takes the same denominator
    ppo = PPO(*spaces, batch_size=100, num_envs=2, num_minibatches=2, seed=0)
    given = torch.zeros(100, dtype=torch.float64)
    assert torch.equal(ppo.old_log_prob(rollout, given), torch.as_tensor(rollout.flat(rollout.behaviour_log_prob)))
    assert ppo.old_log_prob(plain, given) is given


def test_trpo_fits_its_baseline_on_extrinsic_returns_when_asked():
    """baseline_returns=extrinsic (VIME's code): the linear baseline is the ridge fit of the returns of
    r_ext, whatever bonus the rollout's rewards carry; shaped: of the returns of the rewards."""
    from algos.common.baselines import LinearFeatureBaseline
    from algos.common.rollout import Rollout

    rng = np.random.default_rng(0)
    T, n = 20, 2
    ends = np.zeros((T, n), bool)
    ends[9] = ends[-1] = True
    steps = np.tile(np.r_[np.arange(10), np.arange(10)][:, None], (1, n))
    rollout = Rollout(obs=rng.normal(size=(T, n, 5)).astype(np.float32), actions=rng.normal(size=(T, n, 3)),
                      rewards_ext=rng.normal(size=(T, n)), terminated=np.zeros((T, n), bool), truncated=ends,
                      episode_step=steps, last_obs=np.zeros((n, 5), np.float32),
                      final_index=np.argwhere(ends), final_obs=rng.normal(size=(2 * n, 5)).astype(np.float32))
    rollout.rewards = rollout.rewards_ext + 5.0 * rng.random((T, n))

    def discounted(r):
        out, running = np.zeros_like(r), np.zeros(n)
        for t in range(T - 1, -1, -1):
            running = r[t] + 0.99 * running * (1 - ends[t])
            out[t] = running
        return out

    for which, rewards in (("extrinsic", rollout.rewards_ext), ("shaped", rollout.rewards)):
        agent = TRPO(OBS, SPACES["gaussian"], batch_size=T * n, num_envs=n, seed=0, baseline_returns=which)
        agent.update(rollout)
        reference = LinearFeatureBaseline(OBS)
        reference.fit(rollout.flat(rollout.obs), rollout.flat(steps), rollout.flat(discounted(rewards)))
        np.testing.assert_allclose(agent.baseline.coeffs, reference.coeffs, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="agent.baseline_returns"):
        TRPO(OBS, SPACES["gaussian"], baseline_returns="bonus")
