"""EMI (algos/exploration/emi.py): the objective's pieces against closed forms and brute force, the
order of training and scoring, the embedding on a linear system, checkpoint round trips, and resume
through the runner."""
import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from algos.common.checks import ConfigError
from algos.common.nets import mlp
from algos.common.rollout import Rollout
from algos.exploration.base import IntrinsicRewardShaper
from algos.exploration.emi import (
    EMI,
    gaussian_kl_to_standard,
    jsd_loss,
    jsd_mutual_information,
    pool_self_similarity,
    rbf_similarity,
)
from runner.config import compose
from runner.loops import bonus_of_new_experience
from tests.conftest import TINY, learning_columns, read_progress, through_checkpoint, train_in_process
from tests.helpers import iterate

OBS4 = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACT2 = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def linear_rollout(rng, B, T=50, N=20, episode_len=25, sign=1.0, obs_scale=1.0) -> Rollout:
    """T steps of N envs of s' = s + sign * B a, a ~ U[-1, 1]; episodes of `episode_len` steps
    start from s ~ N(0, obs_scale^2 I)."""
    d = B.shape[0]
    acts = rng.uniform(-1, 1, (T, N, B.shape[1]))
    ends = np.zeros((T, N), bool)
    ends[episode_len - 1::episode_len] = True
    obs, steps = np.empty((T, N, d)), np.zeros((T, N), np.int64)
    s, step = rng.normal(0, obs_scale, (N, d)), np.zeros(N, np.int64)
    final_index, final_obs = [], []
    for t in range(T):
        obs[t], steps[t] = s, step
        s = s + sign * acts[t] @ B.T
        step = step + 1
        for n in np.flatnonzero(ends[t]):
            final_index.append((t, n))
            final_obs.append(s[n].copy())
            s[n], step[n] = rng.normal(0, obs_scale, d), 0
    return Rollout(obs=obs.astype(np.float32), actions=acts.astype(np.float32),
                   rewards_ext=np.zeros((T, N)), terminated=np.zeros((T, N), bool), truncated=ends,
                   episode_step=steps, last_obs=s.astype(np.float32),
                   final_index=np.array(final_index, np.int64).reshape(-1, 2),
                   final_obs=np.array(final_obs, np.float32).reshape(-1, d))


# -- the objective's pieces ----------------------------------------------------------------------

def test_sample_gaussian_kl_equals_closed_form():
    rng = np.random.default_rng(0)
    mean, cov = np.array([0.5, -1.0]), np.array([[2.0, 0.6], [0.6, 0.5]])
    x = rng.multivariate_normal(mean, cov, 200_000)

    def closed_form(m, S):  # KL(N(m, S) || N(0, I))
        return 0.5 * (np.trace(S) + m @ m - len(m) - np.log(np.linalg.det(S)))

    kl = float(gaussian_kl_to_standard(torch.as_tensor(x)))
    assert kl == pytest.approx(closed_form(x.mean(0), np.cov(x.T)), rel=1e-10)  # the batch's own stats
    assert kl == pytest.approx(closed_form(mean, cov), rel=1e-2)                # the true distribution
    assert float(gaussian_kl_to_standard(torch.as_tensor(rng.normal(size=(100_000, 3))))) < 1e-3
    collapsed = torch.as_tensor(np.repeat(x[:100, :1], 2, 1))  # rank 1: eigenvalue floored at 1e-6
    assert math.isfinite(float(gaussian_kl_to_standard(collapsed))) and float(gaussian_kl_to_standard(collapsed)) > 5


def _trained_jsd(x, y, steps=300, seed=0):
    """Train T on (x, y) against (x, shuffled y); the JSD MI estimate on held-out pairs."""
    torch.manual_seed(seed)
    disc = mlp(x.shape[1] + y.shape[1], (64, 64), 1, "relu")
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    n = len(x) // 2
    for _ in range(steps):
        idx = torch.randint(0, n, (512,))
        perm = torch.randint(0, n, (512,))
        loss = jsd_loss(disc, torch.cat([x[idx], y[idx]], 1), torch.cat([x[idx], y[perm]], 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        xt, yt = x[n:], y[n:]
        return float(jsd_mutual_information(disc, torch.cat([xt, yt], 1),
                                            torch.cat([xt, yt[torch.randperm(len(yt))]], 1)))


def test_jsd_bound_separates_dependent_from_independent_pairs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 2, generator=g)
    dependent = _trained_jsd(x, x + 0.1 * torch.randn(20_000, 2, generator=g))
    independent = _trained_jsd(x, torch.randn(20_000, 2, generator=g))
    assert dependent > 0.8          # the bound's ceiling is 2 log 2 = 1.386
    assert abs(independent) < 0.05
    disc = mlp(4, (8,), 1)
    torch.nn.init.zeros_(disc[-1].weight), torch.nn.init.zeros_(disc[-1].bias)
    with torch.no_grad():  # T = 0 everywhere: the bound is exactly 0
        estimate = float(jsd_mutual_information(disc, torch.randn(10, 4), torch.randn(10, 4)))
        assert estimate == pytest.approx(0.0, abs=1e-7)


def test_similarities_match_brute_force_across_block_edges():
    rng = np.random.default_rng(1)
    pool, targets = rng.normal(size=(53, 2)), rng.normal(size=(11, 2))
    brute = np.array([[math.exp(-np.sum((t - p) ** 2) / (2 * 0.7 ** 2)) for p in pool] for t in targets]).mean(1)
    brute_pool = np.array([[math.exp(-np.sum((t - p) ** 2) / (2 * 0.7 ** 2)) for p in pool] for t in pool]).mean(1)
    np.testing.assert_allclose(rbf_similarity(targets, pool, 0.7, block=4), brute, rtol=1e-6)
    np.testing.assert_allclose(rbf_similarity(targets, pool, 0.7, dtype=np.float64), brute, rtol=1e-13)
    np.testing.assert_allclose(pool_self_similarity(pool, 0.7, block=7), brute_pool, rtol=1e-6)
    np.testing.assert_allclose(pool_self_similarity(pool, 0.7, block=7, dtype=np.float64), brute_pool, rtol=1e-13)


def brute_force_diversity(phi_net, rollout: Rollout, bandwidth: float, form: str = "relative") -> np.ndarray:
    """-[mean_k k(phi(s'), phi(s_k)) - mean_k k(phi(s), phi(s_k))] (or its 'naive' first term) per
    transition, one kernel value at a time, from the network `phi_net` as it is now."""
    with torch.no_grad():
        phi = lambda x: phi_net(torch.as_tensor(x, dtype=torch.float32)).double().numpy()  # noqa: E731
        p, p2 = phi(rollout.flat(rollout.obs)), phi(rollout.flat(rollout.next_obs()))
    sim = lambda x: np.mean([math.exp(-np.sum((x - q) ** 2) / (2 * bandwidth ** 2)) for q in p])  # noqa: E731
    return np.array([-sim(p2[i]) + (sim(p[i]) if form == "relative" else 0.0) for i in range(len(p))])


@pytest.mark.parametrize("form", ["relative", "naive"])
def test_diversity_and_residual_rewards_equal_brute_force(form):
    rng = np.random.default_rng(2)
    rollout = linear_rollout(rng, rng.normal(size=(4, 2)), T=7, N=3, episode_len=3)
    assert len(rollout.final_index) == 6  # ends at t = 2, 5 in every env; t = 6 continues past the batch
    div = EMI(OBS4, ACT2, seed=3, intrinsic_reward="diversity", diversity_bandwidth=0.3, diversity_form=form)
    res = EMI(OBS4, ACT2, seed=3, intrinsic_reward="residual")
    with torch.no_grad():
        s, s2 = rollout.flat(rollout.obs), rollout.flat(rollout.next_obs())
        a = torch.as_tensor(rollout.flat(rollout.actions))
        residual = ((res.nets["phi"](torch.as_tensor(s2)) - res.nets["phi"](torch.as_tensor(s))
                     - res.nets["psi"](a) - res.nets["error"](torch.as_tensor(s), a)) ** 2).sum(1).numpy()
    brute = brute_force_diversity(div.nets["phi"], rollout, 0.3, form)
    assert np.ptp(brute) > 1e-2  # the embeddings are spread enough for the test to mean something
    batch = rollout.transitions()
    np.testing.assert_allclose(div.intrinsic_reward(batch), brute, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.intrinsic_reward(batch), residual, rtol=1e-4, atol=1e-7)
    r = div.intrinsic_reward(batch)
    assert r.shape == (21,) and batch.as_steps(r).shape == (7, 3)
    # the successor encoding: each distinct state once (the 21 states, then the 6 final and the 3 last
    # observations), s'_i at row successor[i] of that list, which is the true successor
    data = div._data(batch)
    assert len(data["extra"]) == 6 + 3
    states = torch.cat([data["s"], data["extra"]])
    torch.testing.assert_close(states[data["successor"]], data["s2"](), rtol=0, atol=0)
    np.testing.assert_array_equal(data["s2"]().numpy(), s2)


# -- the order of scoring and training (the reference's dsae.py) ----------------------------------

def _scored_by_the_loop(emi: EMI, rollout: Rollout) -> tuple:
    """The bonus of a new batch as the training loops compute it (runner.loops), and a copy of phi
    from before that call."""
    phi_before = copy.deepcopy(emi.nets["phi"])
    r_int, _, fit_metrics, _ = bonus_of_new_experience(emi, IntrinsicRewardShaper(0.1), rollout.transitions(), "emi")
    return r_int, fit_metrics, phi_before


def test_diversity_reward_uses_the_embeddings_updated_on_the_batch():
    """The reference trains on the batch, then takes the diversity reward from the new embeddings:
    the loop's bonus equals the brute force from phi's weights AFTER the update, not before it."""
    rng = np.random.default_rng(4)
    rollout = linear_rollout(rng, rng.normal(size=(4, 2)), T=20, N=4, episode_len=5)
    emi = EMI(OBS4, ACT2, seed=3, diversity_bandwidth=0.3, minibatch_size=32)
    assert emi.fit_before_scoring                       # the default for the diversity reward
    r_int, fit_metrics, phi_before = _scored_by_the_loop(emi, rollout)
    assert fit_metrics is not None and emi.updates == 1  # trained before scoring
    after = brute_force_diversity(emi.nets["phi"], rollout, 0.3)
    before = brute_force_diversity(phi_before, rollout, 0.3)
    np.testing.assert_allclose(r_int, after, rtol=1e-5, atol=1e-6)
    assert np.abs(after - before).max() > 1e-3          # the update moved the bonus: the order is visible


def test_old_order_scores_with_the_embeddings_of_the_previous_batch():
    rng = np.random.default_rng(4)
    rollout = linear_rollout(rng, rng.normal(size=(4, 2)), T=20, N=4, episode_len=5)
    emi = EMI(OBS4, ACT2, seed=3, diversity_bandwidth=0.3, minibatch_size=32, fit_before_scoring=False)
    r_int, fit_metrics, phi_before = _scored_by_the_loop(emi, rollout)
    assert fit_metrics is None and emi.updates == 0     # the loop trains after the agent's update
    np.testing.assert_allclose(r_int, brute_force_diversity(phi_before, rollout, 0.3), rtol=1e-5, atol=1e-6)


def test_fit_before_scoring_follows_the_reference_for_each_reward():
    assert EMI(OBS4, ACT2, intrinsic_reward="diversity").fit_before_scoring is True
    assert EMI(OBS4, ACT2, intrinsic_reward="residual").fit_before_scoring is False   # residual_errors_before
    assert EMI(OBS4, ACT2, intrinsic_reward="residual", fit_before_scoring=True).fit_before_scoring is True
    assert compose(["exploration=emi"])[0].exploration.fit_before_scoring is True
    assert compose(["exploration=emi_atari"])[0].exploration.fit_before_scoring is False
    with pytest.raises(ConfigError, match="exploration.fit_before_scoring"):
        EMI(OBS4, ACT2, fit_before_scoring="yes")


# -- the embedding on a linear system --------------------------------------------------------------

def test_residual_small_for_seen_dynamics_and_large_for_unseen():
    """s' = s + B a: after training, transitions of these dynamics have a small residual
    ||phi(s') - (phi(s) + psi(a) + e(s, a))||^2; transitions of reversed dynamics s' = s - B a
    (never seen) have a large one."""
    rng = np.random.default_rng(0)
    B = rng.normal(size=(4, 2))
    emi = EMI(OBS4, ACT2, seed=0, intrinsic_reward="residual", minibatch_size=128)
    before = emi.intrinsic_reward(linear_rollout(rng, B).transitions()).mean()
    for _ in range(30):
        _, metrics = iterate(emi, linear_rollout(rng, B).transitions())
    seen = emi.intrinsic_reward(linear_rollout(rng, B).transitions()).mean()
    unseen = emi.intrinsic_reward(linear_rollout(rng, B, sign=-1.0).transitions()).mean()
    assert seen < 0.01 * unseen  # measured: 0.002 vs 8 (seeds 0-2)
    assert seen < 0.1 * before
    assert metrics["error_norm"] < 1e-3  # the error model stays quiet where a linear model explains
    assert metrics["mi_action"] > 0.1 and metrics["mi_obs"] > 0.1  # both discriminators learned something


# -- spaces, config -------------------------------------------------------------------------------

def test_pixels_embed_the_last_frame_and_discrete_actions_one_hot():
    obs_space = gym.spaces.Box(0, 255, (4, 52, 52), np.uint8)
    act_space = gym.spaces.Discrete(5)
    rng = np.random.default_rng(0)
    T, N = 6, 2
    frames = rng.integers(0, 256, (T, N, 4, 52, 52), dtype=np.uint8)
    rollout = Rollout(obs=frames, actions=rng.integers(0, 5, (T, N)), rewards_ext=np.zeros((T, N)),
                      terminated=np.zeros((T, N), bool), truncated=np.zeros((T, N), bool),
                      episode_step=np.zeros((T, N), np.int64), last_obs=frames[0],
                      final_index=np.zeros((0, 2), np.int64), final_obs=np.zeros((0, 4, 52, 52), np.uint8))
    emi = EMI(obs_space, act_space, seed=0, intrinsic_reward="residual", reconciler_loss_weight=1e2)
    assert emi.nets["phi"][0].convs[0].in_channels == 1
    r = emi.intrinsic_reward(rollout.transitions())
    assert r.shape == (T * N,) and np.isfinite(r).all() and r.std() > 0
    changed = Rollout(**{**rollout.__dict__, "obs": frames.copy()})
    changed.obs[:, :, :3] = 0  # older frames of the stack do not matter
    np.testing.assert_array_equal(emi.intrinsic_reward(changed.transitions()), r)
    metrics = emi.update(rollout.transitions())
    assert all(math.isfinite(v) for v in metrics.values())


def test_invalid_options_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="exploration.intrinsic_reward"):
        EMI(OBS4, ACT2, intrinsic_reward="curiosity")
    with pytest.raises(ConfigError, match="exploration.minibatch_size"):
        EMI(OBS4, ACT2, minibatch_size=0)


# -- checkpointing --------------------------------------------------------------------------------

def test_state_dict_round_trip_reproduces_rewards_and_training():
    rng = np.random.default_rng(5)
    B = rng.normal(size=(4, 2))
    batches = [linear_rollout(rng, B, T=30, N=20).transitions() for _ in range(4)]
    a = EMI(OBS4, ACT2, seed=0)
    for batch in batches[:2]:
        iterate(a, batch)
    saved = through_checkpoint(a.state_dict())  # as the runner's checkpoints store it
    b = EMI(OBS4, ACT2, seed=99)
    b.load_state_dict(saved)
    for batch in batches[2:]:
        (r_a, metrics_a), (r_b, metrics_b) = iterate(a, batch), iterate(b, batch)
        assert r_a.shape == (600,)
        np.testing.assert_array_equal(r_a, r_b)
        assert metrics_a == metrics_b
    np.testing.assert_array_equal(a.intrinsic_reward(batches[0]), b.intrinsic_reward(batches[0]))


@pytest.mark.parametrize("exploration,env", [("emi", "pendulum"), ("emi_atari", "cartpole")])
def test_resume_after_checkpoint_equals_uninterrupted_run(tmp_path, exploration, env):
    args = ["agent=trpo", f"env={env}", f"exploration={exploration}", *TINY["trpo"][:-1],
            "exploration.minibatch_size=64", "checkpoint_every=1", "seed=2"]
    assert train_in_process(tmp_path / "ref", *args, "total_env_steps=800") == 0
    assert train_in_process(tmp_path / "run", *args, "total_env_steps=400") == 0
    assert train_in_process(tmp_path / "run", *args, "total_env_steps=800") == 0
    ref, run = read_progress(tmp_path / "ref"), read_progress(tmp_path / "run")
    assert [int(r["iteration"]) for r in run] == [1, 2, 3, 4]
    assert learning_columns(run) == learning_columns(ref)
    assert float(ref[-1]["bonus_raw_mean"]) != 0.0 and "expl_mi_obs" in ref[-1]


# -- the canary (envs/chain.py) -------------------------------------------------------------------

# Diversity reward, the authors' low-dimensional default: its 'relative' form telescopes along an
# episode to sim(phi(s_0)) - sim(phi(s_T)), so it pays for ending episodes in rarely visited parts of
# the embedding (a potential-based shaping), not for surviving. coef 1.0 puts the per-step bonus
# (~0.01 at the frontier, bandwidth 5) on the scale of the 0.01 distractor; minibatch 64 gives the
# 1000-step batches 45 embedding steps per iteration instead of 3 (with 512, the chain's linear
# embedding does not form and every state's similarity is ~1).
CANARY = ["agent=trpo", "env=chain", "agent.batch_size=1000", "agent.num_envs=4", "total_env_steps=20000"]
CANARY_EMI = ["exploration=emi", "exploration.coef=1.0", "exploration.minibatch_size=64"]


def _goal_rates(run_dir) -> list[float]:
    return [float(r["task_metric_mean"]) if r["task_metric_mean"] not in ("", "nan") else 0.0
            for r in read_progress(run_dir)]


def test_canary_emi_beats_none_on_the_chain(tmp_path):
    emi, none = [], []
    for seed in range(5):
        assert train_in_process(tmp_path / f"emi{seed}", *CANARY, *CANARY_EMI, f"seed={seed}") == 0
        assert train_in_process(tmp_path / f"none{seed}", *CANARY, "exploration=none", f"seed={seed}") == 0
        emi.append(_goal_rates(tmp_path / f"emi{seed}"))
        none.append(_goal_rates(tmp_path / f"none{seed}"))
    emi_found = sum(max(rates) > 0 for rates in emi)
    none_found = sum(max(rates) > 0 for rates in none)
    emi_final = sum(np.mean(rates[-5:]) for rates in emi)    # measured: ~2.8 of 5
    none_final = sum(np.mean(rates[-5:]) for rates in none)  # measured: 0
    assert emi_found >= 3 and none_found <= 1, (emi_found, none_found)
    assert emi_final >= 1.5 and emi_final > none_final + 1.0, (emi_final, none_final)
