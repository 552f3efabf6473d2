"""The fast paths (algos/common/fast/) against their plain versions: closed-form PPO gradients vs
autograd, FlatAdam vs torch's Adam, numpy acting vs the torch policy."""
import logging

import gymnasium as gym
import numpy as np
import pytest
import torch

from algos.agents.ppo import PPO
from algos.agents.trpo import TRPO
from algos.common.checks import ConfigError
from algos.common.fast.mlp import FlatAdam, FlatParameters, NumpyMLP, mlp_parts
from algos.common.fast.ppo_gradient import ClosedFormPPOGradient
from algos.common.nets import mlp
from algos.common.rollout import Rollout

OBS = gym.spaces.Box(-np.inf, np.inf, (5,))


@pytest.mark.parametrize("action_space", [gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4)],
                         ids=["gaussian", "categorical"])
@pytest.mark.parametrize("ent_coef,clip_value_loss,activation",
                         [(0.0, True, "tanh"), (0.01, True, "tanh"), (0.0, False, "relu"),
                          (0.01, False, "tanh")])
def test_closed_form_ppo_gradient_equals_autograd(action_space, ent_coef, clip_value_loss, activation):
    torch.manual_seed(0)
    agent = PPO(OBS, action_space, ent_coef=ent_coef, clip_value_loss=clip_value_loss,
                activation=activation, batch_size=64, num_minibatches=1)
    assert agent.gradient == "closed_form" and isinstance(agent.gradient_step, ClosedFormPPOGradient)
    B = 64
    obs = torch.randn(B, 5)
    actions = torch.randn(B, 3) if action_space.shape else torch.randint(0, 4, (B,))
    with torch.no_grad():  # old policy/values perturbed so that both clip branches occur
        old_logp = agent.policy.dist.log_prob(agent.policy(obs), actions) + 0.3 * torch.randn(B)
        old_values = agent.critic(obs).squeeze(-1) + 0.5 * torch.randn(B)
    adv, returns = torch.randn(B), torch.randn(B)
    ratio = (agent.policy.dist.log_prob(agent.policy(obs), actions) - old_logp).exp().detach()
    assert ((ratio < 0.8) | (ratio > 1.2)).any() and ((ratio > 0.8) & (ratio < 1.2)).any()
    pg_a, v_a, lr_a = agent.autograd_step(obs, actions, old_logp, adv, returns, old_values)
    grad_autograd = agent.flat.grad.clone()
    agent.flat.grad.fill_(float("nan"))  # an entry the closed form does not write stays NaN
    pg_c, v_c, lr_c = agent.gradient_step(obs, actions, old_logp, adv, returns, old_values)
    assert not agent.flat.grad.isnan().any()
    torch.testing.assert_close(agent.flat.grad, grad_autograd, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pg_c, pg_a)
    torch.testing.assert_close(v_c, v_a)
    torch.testing.assert_close(lr_c, lr_a)
    assert grad_autograd.abs().max() > 1e-3  # a real gradient was compared


def random_rollout(agent, T=64, seed=0):
    """T steps of agent.num_envs envs with the agent's own actions and some episode ends."""
    rng = np.random.default_rng(seed)
    N = agent.num_envs
    obs = rng.normal(size=(T, N, 5)).astype(np.float32)
    actions = np.stack([agent.act(o)[0] for o in obs])
    truncated = rng.random((T, N)) < 0.05
    final_index = np.argwhere(truncated)
    rewards = rng.normal(size=(T, N))
    return Rollout(obs=obs, actions=actions, rewards_ext=rewards, terminated=np.zeros((T, N), bool),
                   truncated=truncated, episode_step=np.zeros((T, N), np.int64),
                   last_obs=rng.normal(size=(N, 5)).astype(np.float32), final_index=final_index,
                   final_obs=rng.normal(size=(len(final_index), 5)).astype(np.float32), rewards=rewards)


@pytest.mark.parametrize("action_space", [gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4)],
                         ids=["gaussian", "categorical"])
def test_ppo_update_is_the_same_with_either_gradient(action_space):
    """agent.gradient=closed_form and autograd: the same parameters after one PPO update."""
    agents = {}
    for gradient in ("autograd", "closed_form"):
        torch.manual_seed(0)
        agents[gradient] = PPO(OBS, action_space, seed=1, batch_size=128, num_envs=2, num_minibatches=4,
                               update_epochs=2, ent_coef=0.01, gradient=gradient)
        assert agents[gradient].gradient == gradient
    rollout = random_rollout(agents["autograd"])
    start = agents["autograd"].flat.flat.detach().clone()
    torch.testing.assert_close(agents["closed_form"].flat.flat.detach(), start, rtol=0, atol=0)
    metrics = {gradient: agent.update(rollout) for gradient, agent in agents.items()}
    after = {gradient: agent.flat.flat.detach() for gradient, agent in agents.items()}
    assert (after["autograd"] - start).abs().max() > 1e-4  # the update moved the parameters
    torch.testing.assert_close(after["closed_form"], after["autograd"], rtol=1e-4, atol=1e-6)
    for key in ("loss_policy", "loss_value", "kl"):
        assert metrics["closed_form"][key] == pytest.approx(metrics["autograd"][key], rel=1e-4, abs=1e-7)


def test_closed_form_falls_back_to_autograd_for_cnn_policies(caplog):
    pixels = gym.spaces.Box(0, 255, (4, 36, 36), np.uint8)
    with caplog.at_level(logging.INFO, logger="explorebench"):
        agent = PPO(pixels, gym.spaces.Discrete(3), gradient="closed_form", normalise_observations=False)
    assert agent.gradient == "autograd" and agent.gradient_step == agent.autograd_step
    lines = [r for r in caplog.records if r.name == "explorebench" and "agent.gradient" in r.getMessage()]
    assert len(lines) == 1 and "autograd" in lines[0].getMessage()
    with caplog.at_level(logging.INFO, logger="explorebench"):
        caplog.clear()
        PPO(pixels, gym.spaces.Discrete(3), gradient="autograd")
    assert not caplog.records  # asked for autograd: nothing to say


def test_invalid_gradient_is_a_config_error():
    with pytest.raises(ConfigError, match=r"agent\.gradient.*closed_form \| autograd"):
        PPO(OBS, gym.spaces.Discrete(3), gradient="numeric")


def test_flat_adam_matches_torch_adam():
    torch.manual_seed(0)
    net_a, net_b = mlp(4, (8,), 2), mlp(4, (8,), 2)
    net_b.load_state_dict(net_a.state_dict())
    torch_adam = torch.optim.Adam(net_a.parameters(), lr=1e-2, eps=1e-5)
    flat = FlatParameters(list(net_b.parameters()))
    flat_adam = FlatAdam(flat, lr=1e-2, eps=1e-5)
    for step in range(20):
        x = torch.randn(16, 4)
        torch_adam.zero_grad()
        net_a(x).square().mean().backward()
        torch_adam.step()
        flat.zero_grad()
        net_b(x).square().mean().backward()  # autograd accumulates into the flat buffer
        flat_adam.step()
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_numpy_mlp_matches_torch_and_follows_in_place_updates(activation):
    net = mlp(5, (7, 6), 3, activation)
    flat = FlatParameters(list(net.parameters()))
    actor = NumpyMLP(*mlp_parts(net))
    x = np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32)
    np.testing.assert_allclose(actor(x), net(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    flat.flat.data.add_(0.1)  # an optimizer step, in place
    np.testing.assert_allclose(actor(x), net(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_numpy_acting_samples_the_policy_distribution():
    """Gaussian: sample mean/std match the policy's mean and exp(log_std); categorical: action
    frequencies match softmax(logits)."""
    torch.manual_seed(0)
    agent = TRPO(OBS, gym.spaces.Box(-1, 1, (2,)), init_log_std=-0.5)
    obs = np.tile(np.random.default_rng(1).normal(size=(1, 5)).astype(np.float32), (20000, 1))
    actions, _ = agent.act(obs)
    mean, log_std = agent.policy(torch.from_numpy(obs[:1]))
    np.testing.assert_allclose(actions.mean(0), mean.detach().numpy()[0], atol=0.02)
    np.testing.assert_allclose(actions.std(0), np.exp(-0.5), rtol=0.03)
    agent = TRPO(OBS, gym.spaces.Discrete(3))
    actions, _ = agent.act(obs)
    probs = torch.softmax(agent.policy(torch.from_numpy(obs[:1]))[0], -1).detach().numpy()[0]
    np.testing.assert_allclose(np.bincount(actions, minlength=3) / len(actions), probs, atol=0.015)
