"""Path handling of the on-policy agents: rllab's whole paths and the value after a path's end."""
import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

from algos.agents.trpo import TRPO
from algos.common.rollout import Rollout
from algos.exploration.none import NoExploration
from runner.collect import PATH_SEED_STRIDE, Collector
from runner.envs import make_vector_env
from tests.conftest import read_progress, train_in_process

CARTPOLE = OmegaConf.create({"id": "CartPole-v1", "max_episode_steps": 60, "kwargs": {}})


def paths_of(rollout: Rollout) -> list[slice]:
    ends = np.flatnonzero(rollout.episode_end[:, 0])
    return [slice(a, b + 1) for a, b in zip(np.r_[0, ends[:-1] + 1], ends)]


def test_whole_paths_are_complete_genuine_episodes_of_at_least_batch_size_steps():
    vec = make_vector_env(CARTPOLE, 3)
    agent = TRPO(vec.single_observation_space, vec.single_action_space, batch_size=150, num_envs=3,
                 policy_hidden=[8], seed=1)
    collector = Collector(vec, 50, whole_paths_min_steps=150)
    seeds = [11, 12, 13]
    collector.reset(seeds)
    for k in range(3):
        rollout, stats = collector.collect(agent, NoExploration(vec.single_observation_space, vec.single_action_space))
        T = rollout.num_steps
        assert rollout.num_envs == 1 and T >= 150
        # as a serial sampler: a path starts only while the steps taken plus what the running paths
        # may still take (60 each) are below 150, so the batch overshoots by less than one path
        assert T < 150 + 60
        assert rollout.episode_end[-1, 0]
        paths = paths_of(rollout)
        assert len(paths) == len(stats.returns) and sum(stats.lengths) == T
        for p in paths:
            assert rollout.episode_step[p, 0].tolist() == list(range(p.stop - p.start))
        # the episode statistics (in order of ending) are those of the paths
        assert sorted(rollout.rewards_ext[p, 0].sum() for p in paths) == sorted(stats.returns)
        # Replay every env's paths, in order, in a fresh env: same observations, rewards and ends.
        replayed = 0
        for i in range(3):
            env = gym.make("CartPole-v1", max_episode_steps=60)
            obs, _ = env.reset(seed=(seeds[i] + PATH_SEED_STRIDE * k) % 2**31)
            while replayed < len(paths):
                p = paths[replayed]
                if not np.allclose(rollout.obs[p.start, 0], obs):
                    break  # the next path is the next env's
                for t in range(p.start, p.stop):
                    assert np.allclose(rollout.obs[t, 0], obs)
                    obs, r, term, trunc, _ = env.step(int(rollout.actions[t, 0]))
                    assert (r, term, trunc) == (rollout.rewards_ext[t, 0], rollout.terminated[t, 0],
                                                rollout.truncated[t, 0])
                assert term or trunc
                obs, _ = env.reset()
                replayed += 1
        assert replayed == len(paths)
        # the successors the exploration methods read: the next row inside a path, the final obs at its end
        transitions = rollout.transitions()
        inside = ~rollout.episode_end[:, 0]
        assert np.array_equal(transitions.next_obs[:-1][inside[:-1]], rollout.obs[1:, 0][inside[:-1]])


def brute_force_advantages(rewards, values, next_values, terminated, truncated, gamma, lam, bootstrap_truncated):
    """A_t = sum_l (gamma lam)^l delta_{t+l} within the path, delta with V = 0 after the path's end
    (after a time limit too, unless bootstrapped); the rollout's last step is bootstrapped."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, factor = 0.0, 1.0
            for u in range(t, T):
                ends = terminated[u, n] or truncated[u, n]
                zero_after = terminated[u, n] or (truncated[u, n] and not bootstrap_truncated)
                delta = rewards[u, n] + gamma * (0.0 if zero_after else next_values[u, n]) - values[u, n]
                total += factor * delta
                if ends:
                    break
                factor *= gamma * lam
            adv[t, n] = total
    return adv


@pytest.mark.parametrize("bootstrap_truncated", [False, True])
def test_advantages_give_value_zero_after_a_path_end_unless_truncations_are_bootstrapped(bootstrap_truncated):
    rng = np.random.default_rng(0)
    T, N, D = 12, 3, 2
    obs_space = gym.spaces.Box(-np.inf, np.inf, (D,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    agent = TRPO(obs_space, act_space, batch_size=T * N, num_envs=N, gamma=0.9, gae_lambda=0.8,
                 bootstrap_truncated=bootstrap_truncated)
    terminated = rng.random((T, N)) < 0.15
    truncated = ~terminated & (rng.random((T, N)) < 0.2)
    final_index = np.argwhere(terminated | truncated)
    rollout = Rollout(obs=rng.normal(size=(T, N, D)), actions=rng.normal(size=(T, N, 1)),
                      rewards_ext=rng.normal(size=(T, N)), terminated=terminated, truncated=truncated,
                      episode_step=np.zeros((T, N), np.int64), last_obs=rng.normal(size=(N, D)),
                      final_index=final_index, final_obs=rng.normal(size=(len(final_index), D)))
    w = rng.normal(size=D)

    def value(obs, steps):
        return obs @ w

    adv, returns = agent.advantages(rollout, rollout.rewards_ext, rollout.successor_values(value))
    values = rollout.obs @ w
    next_values = np.concatenate([rollout.obs[1:], rollout.last_obs[None]]) @ w
    next_values[final_index[:, 0], final_index[:, 1]] = rollout.final_obs @ w
    expected = brute_force_advantages(rollout.rewards_ext, values, next_values, terminated, truncated,
                                      0.9, 0.8, bootstrap_truncated)
    np.testing.assert_allclose(adv, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(returns, expected + values, rtol=1e-10, atol=1e-10)
    assert truncated.any()


def test_trpo_defaults_are_rllabs_and_ppo_keeps_cleanrls():
    from runner.config import compose

    trpo, _ = compose(["agent=trpo"])
    ppo, _ = compose(["agent=ppo"])
    assert trpo.agent.whole_paths is True and trpo.agent.bootstrap_truncated is False
    assert "whole_paths" not in ppo.agent and ppo.agent.bootstrap_truncated is False


WHOLE = ["agent=trpo", "env=half_cheetah", "env.max_episode_steps=70", "agent.batch_size=200",
         "agent.num_envs=2", "agent.policy_hidden=[8]"]


def test_whole_paths_run_counts_real_env_steps_and_resumes_bit_exact(tmp_path):
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    assert train_in_process(straight, *WHOLE, "total_env_steps=800") == 0
    assert train_in_process(parts, *WHOLE, "total_env_steps=400", "checkpoint_every=1") == 0
    assert train_in_process(parts, *WHOLE, "total_env_steps=800", "checkpoint_every=1") == 0
    rows, resumed = read_progress(straight), read_progress(parts)
    steps = [int(r["env_steps"]) for r in rows]
    # 70-step paths: 3 (210 steps) reach 200 in every iteration, as in a serial sampler; the second
    # env sits out the third path
    assert steps == [210, 420, 630, 840]
    learning = [k for k in rows[0] if k not in ("wall_s", "sps") and not k.startswith("time_")]
    assert [[r[k] for k in learning] for r in resumed] == [[r[k] for k in learning] for r in rows]


def test_whole_paths_must_be_a_boolean():
    obs_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    with pytest.raises(ValueError, match="agent.whole_paths: must be true or false"):
        TRPO(obs_space, gym.spaces.Discrete(2), whole_paths="yes")
    with pytest.raises(ValueError, match="agent.bootstrap_truncated: must be true or false"):
        TRPO(obs_space, gym.spaces.Discrete(2), bootstrap_truncated=1)
