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
