"""VIME (algos/exploration/vime.py): the closed forms, the batched second-order KL, the hashed noise,
the bonus's behaviour, and checkpointing."""

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from algos.common.checks import ConfigError
from algos.common.rollout import Rollout, Transitions
from algos.exploration.vime import (
    VIME,
    BayesianDynamics,
    elbo_loss,
    hashed_noise,
    kl_factorised_gaussians,
    log_likelihood,
    predict,
    row_keys,
    second_order_kl,
)
from tests.conftest import TINY, learning_columns, read_progress, through_checkpoint, train_in_process
from tests.helpers import iterate


def tiny_bnn(sizes=(3, 4, 2), seed=0, rho_jitter=0.5) -> BayesianDynamics:
    """A float64 model with σ spread out (not all equal to the prior's), so that every term matters."""
    rng = np.random.default_rng(seed)
    bnn = BayesianDynamics(sizes[0], list(sizes[1:-1]), sizes[-1], 0.5, 5.0, 1e-3, rng, dtype=np.float64)
    bnn.theta[bnn.n:] += rho_jitter * rng.standard_normal(bnn.n)
    return bnn


def to_torch(arrays):
    return [torch.from_numpy(a) for a in arrays]


def explicit_step_kl(bnn: BayesianDynamics, x, y, noise, step: float) -> float:
    """The slow, independent route for one transition: autograd gradient of ℓ (Eq. 12), the
    diagonal of the Hessian of KL[q ‖ q_old] at q_old by autograd (checked to be diagonal), the
    explicit update φ ← φ − λ H⁻¹∇ℓ, then the exact KL between the new and the old posterior."""
    names = list(bnn.params())
    old = {k: v.clone() for k, v in bnn.params().items()}
    flat_old = torch.cat([old[k].reshape(-1) for k in names])
    sizes = [old[k].numel() for k in names]

    def unflatten(flat):
        return {k: t.reshape(old[k].shape) for k, t in zip(names, torch.split(flat, sizes))}

    def kl_to_old(flat):
        p = unflatten(flat)
        return sum(kl_factorised_gaussians(p[k], F.softplus(p[k.replace("_mu", "_rho")]),
                                           old[k], F.softplus(old[k.replace("_mu", "_rho")]))
                   for k in names if "_mu" in k)

    def ell(flat):
        return kl_to_old(flat) - log_likelihood(unflatten(flat), x[None], y[None],
                                                [e[:, None] for e in noise], bnn.likelihood_sd).sum()

    hessian = torch.autograd.functional.hessian(kl_to_old, flat_old)
    diag = torch.diagonal(hessian)
    assert torch.allclose(hessian, torch.diag(diag), atol=1e-12)   # the Hessian at the origin is diagonal
    gradient = torch.autograd.functional.jacobian(ell, flat_old)
    new = flat_old - step * gradient / diag
    return float(kl_to_old(new))


def test_closed_form_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu_p, mu_q = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    sd_p = 0.3 + torch.rand(6, generator=g, dtype=torch.float64)
    sd_q = 0.3 + torch.rand(6, generator=g, dtype=torch.float64)
    closed = float(kl_factorised_gaussians(mu_p, sd_p, mu_q, sd_q))
    p, q = torch.distributions.Normal(mu_p, sd_p), torch.distributions.Normal(mu_q, sd_q)
    theta = p.sample((400_000,))
    log_ratio = (p.log_prob(theta) - q.log_prob(theta)).sum(-1)
    stderr = float(log_ratio.std()) / np.sqrt(len(log_ratio))
    assert abs(float(log_ratio.mean()) - closed) < 4 * stderr
    assert float(kl_factorised_gaussians(mu_p, sd_p, mu_p, sd_p)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("step", [0.01, 50.0])   # the paper's λ, and one where ρ moves far
def test_second_order_kl_equals_explicit_one_step_update(step):
    bnn = tiny_bnn()
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 3)), 3 * rng.standard_normal((2, 2))
    noise = bnn.noise(2, 10, rng=rng)                          # [B, S, units] per layer
    exact = second_order_kl(bnn.params(), 5.0, *to_torch([x, y]), to_torch(noise), step, "exact").numpy()
    quadratic = second_order_kl(bnn.params(), 5.0, *to_torch([x, y]), to_torch(noise), step, "quadratic").numpy()
    for i in range(2):
        explicit = explicit_step_kl(bnn, *to_torch([x[i], y[i]]), [torch.from_numpy(e[i]) for e in noise], step)
        assert explicit > 0
        assert exact[i] == pytest.approx(explicit, rel=1e-9)
        # the paper's ½λ²gᵀH⁻¹g is the second-order term of the same KL
        assert quadratic[i] == pytest.approx(explicit, rel=1e-4 if step == 0.01 else 0.1)
    if step > 1:
        assert not np.allclose(quadratic, exact, rtol=1e-2)   # there the exact form is not the quadratic one


def test_batched_kls_equal_a_per_transition_python_loop():
    bnn = tiny_bnn(sizes=(5, 6, 3), seed=2)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((6, 5)), rng.standard_normal((6, 3))
    noise = bnn.noise(6, 10, rng=rng)
    batched = second_order_kl(bnn.params(), 5.0, *to_torch([x, y]), to_torch(noise), 0.01).numpy()
    loop = [explicit_step_kl(bnn, *to_torch([x[i], y[i]]), [torch.from_numpy(e[i]) for e in noise], 0.01)
            for i in range(6)]
    np.testing.assert_allclose(batched, loop, rtol=1e-9)
    assert len(set(np.round(batched, 12))) == 6


@pytest.mark.parametrize("rows_of_noise", [7, 1])  # per-example noise, and one draw shared by the 7 rows
def test_hand_derived_training_gradient_matches_autograd(rows_of_noise):
    bnn = tiny_bnn(sizes=(4, 5, 3, 2), seed=4)                     # two hidden layers
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((7, 4)), rng.standard_normal((7, 2))
    noise = bnn.noise(10, rows_of_noise, rng=rng)                 # [S, rows or 1, units] per layer
    params = {k: v.clone().requires_grad_(True) for k, v in bnn.params().items()}
    loss = elbo_loss(params, *to_torch([x, y]), to_torch(noise), 0.5, 5.0, 5.0)
    loss.backward()
    theta = bnn.theta.copy()
    nll = bnn.train_step(x, y, noise, 5.0)
    gradient = bnn.adam_m / 0.1                                   # first Adam step: m = (1 − β1) g
    expected = np.zeros_like(gradient)
    base = bnn.params()["w_mu0"].data_ptr()
    for name, p in params.items():
        offset = (bnn.params()[name].data_ptr() - base) // 8
        expected[offset:offset + p.numel()] = p.grad.numpy().ravel()
    np.testing.assert_allclose(gradient, expected, rtol=1e-9, atol=1e-12)
    prior_sd = torch.tensor(0.5, dtype=torch.float64)
    sd = {k: F.softplus(params[k.replace("_mu", "_rho")]).detach() for k in params if "_mu" in k}
    kl_prior = sum(float(kl_factorised_gaussians(params[k].detach(), sd[k], 0.0, prior_sd)) for k in sd)
    assert nll == pytest.approx(float(loss.detach()) - kl_prior / 5.0, rel=1e-9)
    assert not np.array_equal(theta, bnn.theta)


# -- the method on rollouts ------------------------------------------------------------------------

OBS, ACT = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), gym.spaces.Box(-1, 1, (1,), np.float32)


def dynamics(s, a):
    return np.stack([s[..., 0] + 0.1 * s[..., 1], 0.9 * s[..., 1] + 0.5 * a[..., 0]], -1)


def fake_rollout(rng, T=50, N=2, centre=0.0, spread=1.0) -> Transitions:
    """The transitions of T x N one-step episodes from the region centre ± spread (each step ends
    its episode, so its successor is the listed final observation)."""
    obs = (centre + spread * rng.uniform(-1, 1, (T, N, 2))).astype(np.float32)
    act = rng.uniform(-1, 1, (T, N, 1)).astype(np.float32)
    nxt = dynamics(obs, act).astype(np.float32)
    t, i = np.meshgrid(np.arange(T), np.arange(N), indexing="ij")
    return Rollout(obs=obs, actions=act, rewards_ext=np.zeros((T, N)), terminated=np.ones((T, N), bool),
                   truncated=np.zeros((T, N), bool), episode_step=np.zeros((T, N), np.int64),
                   last_obs=np.zeros((N, 2), np.float32), final_index=np.stack([t.ravel(), i.ravel()], 1),
                   final_obs=nxt.reshape(T * N, 2)).transitions()


def make_vime(seed=0, **overrides):
    config = dict(min_pool_size=100, n_updates_per_sample=50, learning_rate=1e-3, replay_pool_size=1000)
    return VIME(OBS, ACT, seed=seed, **{**config, **overrides})


def test_first_iteration_has_no_bonus_and_successors_are_the_true_ones():
    vime, rng = make_vime(), np.random.default_rng(0)
    rollout = fake_rollout(rng)
    r, metrics = iterate(vime, rollout)                          # pool 100 >= min_pool_size: trains after
    assert r.shape == (100,) and np.all(r == 0)                  # the reference's `itr > 0`
    assert vime.trainings == 1 and np.isfinite(metrics["nll"]) and metrics["pool_size"] == 100
    assert not {"kl_mean", "kl_median", "kl_max"} & metrics.keys()
    pool = vime.pool.data[:vime.pool.size]
    np.testing.assert_allclose(pool[:, 3:], dynamics(pool[:, :2], pool[:, 2:3]), atol=1e-6)
    r = vime.intrinsic_reward(fake_rollout(rng))
    assert r.shape == (100,) and np.all(r > 0) and np.all(r <= 1000)


def test_no_bonus_until_the_model_trained_and_the_bonus_keeps_the_stats_it_trained_with():
    vime, rng = make_vime(min_pool_size=250), np.random.default_rng(1)
    for pool_size in (100, 200):                                 # below min_pool_size: no training
        r, metrics = iterate(vime, fake_rollout(rng))
        assert np.all(r == 0) and vime.trainings == 0 and metrics == {"pool_size": float(pool_size)}
        assert vime.input_stats is None
    r, metrics = iterate(vime, fake_rollout(rng))                # pool 300: scored untrained, then trains
    assert np.all(r == 0) and vime.trainings == 1 and "nll" in metrics
    mean, std = vime.input_stats                                 # the pool the model was trained on
    pool = vime.pool.data[:300, :3].astype(np.float64)
    np.testing.assert_allclose(mean, pool.mean(0))
    np.testing.assert_allclose(std, pool.std(0))
    probe = fake_rollout(rng)
    first = vime.intrinsic_reward(probe)
    assert np.all(first > 0)
    vime.observe(fake_rollout(rng, centre=3.0))                  # moves the pool's statistics, not the bonus's
    assert not np.allclose(vime.pool.stats()[0], mean)
    assert vime.input_stats[0] is mean
    np.testing.assert_array_equal(vime.intrinsic_reward(probe), first)
    x, y = vime.pool.standardise(np.concatenate([probe.obs, probe.actions, probe.next_obs], 1), (mean, std))
    keys = row_keys(np.concatenate([probe.obs, probe.actions, probe.next_obs], 1), vime.noise_key ^ np.uint64(1))
    noise = hashed_noise(keys, vime.n_samples, vime.bnn.sizes[1:])
    expected = second_order_kl(vime.bnn.params(), vime.bnn.likelihood_sd, torch.from_numpy(x), torch.from_numpy(y),
                               [torch.from_numpy(e) for e in noise], vime.step_size, vime.kl_form).numpy()
    np.testing.assert_allclose(first, np.clip(expected, 0, 1000), rtol=1e-6)
    vime.update(probe)                                            # a second model: new noise, new stats
    assert vime.trainings == 2 and vime.input_stats[0] is not mean
    assert not np.allclose(vime.intrinsic_reward(probe), first)


def test_hashed_noise_is_standard_normal_deterministic_and_independent():
    rows = np.random.default_rng(2).standard_normal((4000, 5)).astype(np.float32)
    keys = row_keys(rows, np.uint64(12345))
    assert keys.dtype == np.uint64 and len(np.unique(keys)) == len(rows)
    noise = hashed_noise(keys, 10, [32, 2])
    assert [e.shape for e in noise] == [(4000, 10, 32), (4000, 10, 2)] and noise[0].dtype == np.float32
    flat = np.concatenate([e.reshape(len(rows), -1) for e in noise], 1).astype(np.float64)  # [4000, 340]
    assert stats.kstest(flat.ravel(), "norm").pvalue > 1e-3
    assert abs(flat.mean()) < 0.005 and abs(flat.std() - 1) < 0.005    # 1.36M draws: sd of the mean 0.001
    corr = np.corrcoef(flat[:, :40].T)                                  # across draws and units of a row
    assert np.abs(corr[np.triu_indices(40, 1)]).max() < 0.07           # sd 1/sqrt(4000) = 0.016
    assert abs(np.corrcoef(flat[:-1, 0], flat[1:, 0])[0, 1]) < 0.07   # across rows
    # a function of each row alone: the same noise in any batch, and for a copy of the row
    again = hashed_noise(row_keys(rows[[7, 3, 7]], np.uint64(12345)), 10, [32, 2])
    for e, f in zip(noise, again):
        np.testing.assert_array_equal(f, e[[7, 3, 7]])
    # another salt (model version) or a one-bit change of the row: unrelated noise
    other = hashed_noise(row_keys(rows, np.uint64(12344)), 10, [32, 2])[0].reshape(len(rows), -1)
    assert abs(np.corrcoef(flat[:, :320].ravel(), other.ravel())[0, 1]) < 0.01
    nudged = rows.copy()
    nudged[:, 0] = np.nextafter(nudged[:, 0], np.float32(np.inf))
    assert not np.any(row_keys(nudged, np.uint64(12345)) == keys)


def test_information_gain_is_larger_for_transitions_unlike_the_pool():
    vime, rng = make_vime(n_updates_per_sample=1000, replay_pool_size=5000), np.random.default_rng(0)
    for _ in range(5):                                           # pool: s in [-1, 1]²
        iterate(vime, fake_rollout(rng))
    assert vime.pool.size == 500 and vime.trainings == 5
    s = rng.uniform(-1, 1, (200, 2)).astype(np.float32)
    a = rng.uniform(-1, 1, (200, 1)).astype(np.float32)
    familiar = vime.information_gain(s, a, dynamics(s, a).astype(np.float32))
    novel_s = s + np.float32(4.0)                                # several pool standard deviations away
    novel = vime.information_gain(novel_s, a, dynamics(novel_s, a).astype(np.float32))
    assert np.median(novel) > 5 * np.median(familiar)
    assert np.mean(novel > np.median(familiar)) > 0.95


@pytest.mark.parametrize("restore_seed", [
    1,  # the run's own seed, as the runner resumes
    7,  # another seed: the checkpoint carries the bonus's noise key too
])
def test_state_dict_round_trip_reproduces_rewards_and_training(restore_seed):
    rng = np.random.default_rng(0)
    rollouts = [fake_rollout(rng) for _ in range(6)]
    original = make_vime(seed=1)
    for r in rollouts[:3]:
        iterate(original, r)
    saved = through_checkpoint(original.state_dict())  # as the runner's checkpoints store it
    restored = make_vime(seed=restore_seed)  # everything (but the seed's noise key, see above) from the state
    restored.load_state_dict(saved)
    assert restored.trainings == original.trainings == 3
    for r in rollouts[3:]:
        (a, metrics_a), (b, metrics_b) = iterate(original, r), iterate(restored, r)
        assert np.array_equal(a, b) and a.max() > 0
        assert metrics_a == metrics_b
    assert np.array_equal(original.bnn.theta, restored.bnn.theta)
    for x, y in zip(original.input_stats, restored.input_stats):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("train_noise", ["minibatch", "per_example"])
def test_training_minibatch_rows_share_one_noise_draw(train_noise):
    """The reference's BNNLayer draws ε of shape (num_units,) per forward pass of a minibatch: within
    a training minibatch every row sees the same draw, so identical inputs give identical outputs
    (per MC sample). `per_example` gives each row its own draw, and fails that check."""
    vime, rng = make_vime(train_noise=train_noise, n_updates_per_sample=3), np.random.default_rng(0)
    vime.observe(fake_rollout(rng))
    seen, train_step = [], vime.bnn.train_step

    def recording_train_step(x, y, noise, n_batches):
        seen.append((x, noise))
        return train_step(x, y, noise, n_batches)

    vime.bnn.train_step = recording_train_step
    vime.update(None)
    assert len(seen) == 3
    for x, noise in seen:
        assert x.shape == (10, 3)                                        # a minibatch of pool_batch_size
        same_input = torch.from_numpy(np.repeat(x[:1], 10, 0))          # one row, ten times
        with torch.no_grad():
            out = predict(vime.bnn.params(), same_input, [torch.from_numpy(e) for e in noise]).numpy()
        assert out.shape == (10, 10, 2)                                  # [S, rows, outputs]
        assert np.ptp(out, axis=0).min() > 0                             # the S samples differ
        rows_agree = np.allclose(out, out[:, :1], rtol=0, atol=0)
        assert rows_agree == (train_noise == "minibatch")
    first, second = (np.asarray(noise[0]) for _, noise in seen[:2])
    assert not np.allclose(first, second)                                # a fresh draw per minibatch


def test_invalid_configuration_is_refused():
    with pytest.raises(ConfigError, match="exploration.kl_form"):
        make_vime(kl_form="cubic")
    with pytest.raises(ConfigError, match="exploration.second_order_update"):
        make_vime(second_order_update=False)
    with pytest.raises(ConfigError, match="exploration.hidden"):
        make_vime(hidden=[])
    with pytest.raises(ConfigError, match="exploration.train_noise"):
        make_vime(train_noise="per_weight")


# -- through the runner -----------------------------------------------------------------------------

VIME_TINY = ["exploration=vime", "exploration.min_pool_size=100", "exploration.n_updates_per_sample=20",
             "exploration.replay_pool_size=500", "agent=trpo", *TINY["trpo"][:-1]]


@pytest.mark.parametrize("env", ["pendulum", "cartpole"])          # continuous and (one-hot) discrete actions
def test_resume_after_checkpoint_equals_uninterrupted_run(tmp_path, env):
    args = [*VIME_TINY, f"env={env}", "seed=3"]
    assert train_in_process(tmp_path / "ref", *args, "total_env_steps=1000") == 0
    assert train_in_process(tmp_path / "run", *args, "total_env_steps=400") == 0   # stops, checkpointed
    assert train_in_process(tmp_path / "run", *args, "total_env_steps=1000") == 0  # resumes at 3
    ref, run = read_progress(tmp_path / "ref"), read_progress(tmp_path / "run")
    assert [int(r["iteration"]) for r in run] == [1, 2, 3, 4, 5]
    assert learning_columns(run) == learning_columns(ref)
    assert float(ref[0]["bonus_raw_mean"]) == 0 and all(float(r["bonus_raw_mean"]) > 0 for r in ref[1:])
    assert float(ref[-1]["expl_pool_size"]) == 500                 # FIFO at capacity
    assert "expl_nll" in ref[-1] and "expl_kl_mean" not in ref[-1]


def test_model_benchmark_runs_from_bench_exploration(capsys):
    from runner.bench_exploration import main

    threads = torch.get_num_threads()
    try:
        main(["--vime-model", "--transitions", "40", "--updates", "10"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "per-transition KL (exact" in out and "per-transition KL (quadratic" in out
    assert "BNN training, 10 Adam steps" in out

# The VIME canary lives with the others in tests/test_canary.py.
