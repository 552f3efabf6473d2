"""KDE density bonus (algos/exploration/kde.py): exact against brute force, a sound density estimate,
bonus order (scored before the batch is added), bounded reference set, checkpoint round trip, end to end."""
import math
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, pearsonr

from algos.common.checks import ConfigError
from algos.common.rollout import Rollout, Transitions
from algos.exploration import kde as kde_module
from algos.exploration.kde import KDEBonus, kd_tree_leaves
from tests.conftest import TINY, learning_columns, read_progress, through_checkpoint, train_in_process
from tests.helpers import iterate


def box(dim):
    return gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)


def rollout_of(obs) -> Transitions:
    """The T * N transitions of a [T, N] rollout holding observations obs [T, N, D] (no episode
    ends; rows time-major, t * N + n)."""
    T, N = obs.shape[:2]
    return Rollout(obs=obs.astype(np.float32), actions=np.zeros((T, N), np.int64), rewards_ext=np.zeros((T, N)),
                   terminated=np.zeros((T, N), bool), truncated=np.zeros((T, N), bool),
                   episode_step=np.zeros((T, N), np.int64), last_obs=obs[-1].astype(np.float32),
                   final_index=np.zeros((0, 2), np.int64),
                   final_obs=np.zeros((0, obs.shape[2]), np.float32)).transitions()


def brute_force_log_density(queries, references, sigma):
    """Eq. (1) with two Python loops in float64 (log-sum-exp over the references)."""
    out = []
    for q in np.asarray(queries, np.float64):
        exponents = [-float(np.sum((q - mu) ** 2)) / (2 * sigma**2) for mu in np.asarray(references, np.float64)]
        peak = max(exponents)
        out.append(peak + math.log(sum(math.exp(e - peak) for e in exponents)) - math.log(len(exponents)))
    return np.array(out)


@pytest.fixture(params=["auto", "dense", "sparse"])
def tile_path(request, monkeypatch):
    """Run a test with kde.py's choice between scoring every (query, reference) pair at once and
    scoring only the tiles that the box bound keeps, and with each path forced."""
    forced = {"auto": kde_module.DENSE_FRACTION, "dense": -1.0, "sparse": 2.0}[request.param]
    monkeypatch.setattr(kde_module, "DENSE_FRACTION", forced)
    return request.param


@pytest.mark.parametrize("normalise_states", [False, True])
def test_log_density_equals_brute_force_double_loop(normalise_states, tile_path):
    rng = np.random.default_rng(0)
    refs = rng.normal(3.0, 2.0, (1300, 4))  # 3 tiles of 512, the last one part padding
    queries = np.concatenate([rng.normal(3.0, 2.0, (40, 4)), [[60.0, -40.0, 3.0, 3.0]]])  # + one far away
    kde = KDEBonus(box(4), box(4), sigma=0.7, normalise_states=normalise_states, block_elements=5000)
    kde.add(refs[:100])
    kde.add(refs[100:])  # blocks of 5000 // 1536 = 3 queries: many blocks, a short last one
    expected_refs, sigma = refs, 0.7
    if normalise_states:  # sigma is then in units of the running std of the states added
        mean, std = refs.mean(0), refs.std(0)
        np.testing.assert_allclose(kde.state_rms.mean, mean, rtol=1e-6)
        expected_refs, queries_std = (refs - mean) / std, (queries - mean) / std
        expected = brute_force_log_density(queries_std, expected_refs, sigma)
    else:
        expected = brute_force_log_density(queries, refs, sigma)
    got = kde.log_density(queries)
    assert np.all(np.isfinite(got))
    assert got[-1] < -1000  # every kernel underflows in float32, the log-sum-exp still places it
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-4)


def test_separated_clusters_skip_tiles_exactly(tile_path):
    """References in 8 far-apart clusters of 512: a query near one cluster only needs that cluster's
    tiles (the sparse path, in auto mode); every path agrees with float64 brute force."""
    rng = np.random.default_rng(6)
    centres = np.arange(8)[:, None] * np.array([[15.0, 0.0, 0.0]])  # > 250 nats apart
    refs = (centres[:, None, :] + rng.normal(0, 1.0, (8, 512, 3))).reshape(-1, 3)
    queries = np.concatenate([centres[[0, 3, 7]] + rng.normal(0, 1.5, (3, 3)), [[7.5, 0.0, 0.0]]])
    kde = KDEBonus(box(3), box(3), sigma=0.5)
    kde.add(refs)
    d2 = ((queries[:, None, :] - refs[None]) ** 2).sum(-1)
    expected = logsumexp(-d2 / (2 * 0.5**2), axis=1) - math.log(len(refs))
    np.testing.assert_allclose(kde.log_density(queries), expected, rtol=1e-5, atol=1e-3)


def test_5000_states_against_50000_references(tile_path):
    """The paper-scale call: right values (float64 check of a sample of rows), and fast on one thread."""
    rng = np.random.default_rng(1)
    dim = 17  # HalfCheetah's observation
    refs = rng.normal(0.0, 1.0, (60000, dim)) * rng.uniform(0.2, 3.0, dim)
    queries = refs[:5000] + rng.normal(0.0, 0.3, (5000, dim))
    kde = KDEBonus(box(dim), box(dim), sigma=0.5, max_reference=50000)
    kde.add(refs)
    assert kde.size == 50000
    np.testing.assert_array_equal(kde.reference.numpy(), np.roll(refs[-50000:], 10000, 0).astype(np.float32))
    start = time.process_time()
    got = kde.log_density(queries)  # on one thread (the fixture)
    cpu_s = time.process_time() - start
    assert got.shape == (5000,) and np.all(np.isfinite(got))
    stored = kde.reference.numpy().astype(np.float64)
    rows = rng.choice(5000, 25, replace=False)
    d2 = ((queries[rows, None, :] - stored[None]) ** 2).sum(-1)
    expected = logsumexp(-d2 / (2 * 0.5**2), axis=1) - math.log(50000)
    np.testing.assert_allclose(got[rows], expected, rtol=1e-5, atol=1e-3)
    assert cpu_s < 3.0, f"5000 x 50000 took {cpu_s:.2f} s of CPU (about 0.4 s expected)"


def clustered_states(rng, n, dim=6, clusters=12):
    """States spread over clusters of different widths and weights, as visited states are: a few
    dense regions, sparse ones between them, and far outliers."""
    centres = rng.normal(0.0, 6.0, (clusters, dim))
    widths = rng.uniform(0.1, 1.5, clusters)
    k = rng.choice(clusters, n, p=rng.dirichlet(np.ones(clusters)))
    states = centres[k] + widths[k, None] * rng.standard_normal((n, dim)) * rng.uniform(0.3, 1.0, dim)
    states[rng.choice(n, max(1, n // 200), replace=False)] += rng.normal(0.0, 20.0, (max(1, n // 200), dim))
    return states


def assert_within_float32_error(got, expected, queries, references, sigma):
    """kde.py's documented error: ~1e-7 (||s||^2 + ||mu||^2) / (2 sigma^2) nats of float32
    cancellation (norms from the reference mean; bounded here with the largest ||mu||), on top of
    float32 rounding of log p itself."""
    centre = references.mean(0)
    norms = ((queries - centre) ** 2).sum(1) + ((references - centre) ** 2).sum(1).max()
    tolerance = 1e-5 * np.abs(expected) + 1e-3 + 2e-7 * norms / (2 * sigma**2)
    excess = np.abs(got - expected) - tolerance
    assert np.all(excess <= 0), f"worst query {excess.argmax()}: {got[excess.argmax()]} vs {expected[excess.argmax()]}"


def pairs_scored(kde, queries):
    """log_density(queries), and the fraction of (tile, query) pairs that its pass 2 scored."""
    counted = []
    original = kde._pair_scores

    def counting(tiles, rows, tile_of, query_of):
        counted.append(len(query_of) / (len(tiles.columns) * len(rows)))
        return original(tiles, rows, tile_of, query_of)

    kde._pair_scores = counting
    try:
        got = kde.log_density(queries)
    finally:
        del kde._pair_scores
    return got, (counted[-1] if len(counted) == 2 else 1.0)  # pass 1 and pass 2, or all pairs at once


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 30.0])
def test_tiles_equal_brute_force_log_sum_exp_over_all_references(sigma, tile_path):
    """Clustered states, many tiles: from sigma small for the data (most tiles skipped) to sigma
    larger than the data (nothing can be skipped), every path equals a float64 log-sum-exp over all
    references, for queries in the clusters, between them and far away."""
    rng = np.random.default_rng(7)
    states = clustered_states(rng, 7300)  # references, then queries from the same clusters
    refs = states[:7000]
    queries = np.concatenate([states[7000:], refs[:20] + rng.normal(0.0, 0.01, (20, 6)),
                              rng.normal(0.0, 40.0, (10, 6))])
    kde = KDEBonus(box(6), box(6), sigma=sigma, max_reference=6000, block_elements=50000)
    kde.add(refs)  # a full ring: 1000 overwritten
    stored = kde.reference.numpy().astype(np.float64)
    d2 = ((queries[:, None, :] - stored[None]) ** 2).sum(-1)
    expected = logsumexp(-d2 / (2 * sigma**2), axis=1) - math.log(len(stored))
    got, fraction = pairs_scored(kde, queries)
    assert_within_float32_error(got, expected, queries, stored, sigma)
    if tile_path == "auto" and sigma == 0.05:
        assert fraction < 0.4, fraction  # most tiles are skipped before any distance is computed
    if tile_path == "auto" and sigma == 30.0:
        assert fraction == 1.0  # every pair counts: all scored in one product


def test_halfcheetah_like_states_skip_most_tiles_exactly():
    """The paper's setting in miniature: sigma = 0.2 on states that spread over ~6 directions
    several units wide (HalfCheetah's velocities) and ~14 narrow ones. A query's nearest reference
    lies many sigmas away, so pass 2 scores a small fraction of the (tile, query) pairs; the result
    is still the log-sum-exp over all references."""
    rng = np.random.default_rng(8)
    scales = np.concatenate([rng.uniform(3.0, 6.0, 6), rng.uniform(0.05, 0.7, 14)])
    refs = rng.standard_normal((20000, 20)) * scales
    queries = rng.standard_normal((400, 20)) * scales
    kde = KDEBonus(box(20), box(20), sigma=0.2, max_reference=20000)
    kde.add(refs)
    got, fraction = pairs_scored(kde, queries)
    d2 = ((queries[:, None, :] - refs[None]) ** 2).sum(-1)
    expected = logsumexp(-d2 / (2 * 0.2**2), axis=1) - math.log(len(refs))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    assert fraction < 0.3, fraction


def test_box_bound_is_a_lower_bound_of_every_distance_in_the_tile():
    rng = np.random.default_rng(9)
    states = clustered_states(rng, 3200, dim=7)
    kde = KDEBonus(box(7), box(7), sigma=0.3)
    kde.add(states[:3000])
    tiles = kde._build_tiles()
    queries = np.concatenate([states[3000:], rng.normal(0.0, 30.0, (10, 7))])
    x = torch.as_tensor(queries, dtype=torch.float32) - tiles.centre
    bound = KDEBonus._box_bound(tiles, x).double().numpy()                     # [B, n_tiles]
    members = tiles.columns[:, :7, :].transpose(1, 2).double().numpy() * 0.3**2  # [n_tiles, size, D]
    real = np.isfinite(tiles.columns[:, 7, :].numpy())                           # padding scores -inf
    assert real.sum() == 3000 and len(tiles.columns) == 16
    for t in range(len(members)):
        d2 = ((x.double().numpy()[:, None, :] - members[t][real[t]][None]) ** 2).sum(-1).min(1)
        assert np.all(bound[:, t] <= d2 * (1 + 1e-6) + 1e-6)
    assert (bound > 0).mean() > 0.5  # and it is not trivial


def test_kd_tree_leaves_split_at_medians():
    points = np.random.default_rng(10).permutation(1000).astype(np.float64)[:, None]  # 0..999 on a line
    leaves = kd_tree_leaves(points, 100)                       # 16 leaves of 63 (the last ones padded)
    assert leaves.shape == (16, 63)
    real = [np.sort(points[leaf[leaf < 1000], 0]) for leaf in leaves]
    assert np.array_equal(np.concatenate(real), np.arange(1000))  # leaves are consecutive intervals
    assert (leaves == 1000).sum() == 16 * 63 - 1000
    assert kd_tree_leaves(points[:40], 100).shape == (1, 40)


def test_tiles_follow_every_change_of_the_reference_set(tile_path):
    """The tiles are rebuilt after add() and load_state_dict(), never reused stale."""
    rng = np.random.default_rng(11)
    states = clustered_states(rng, 5100)
    queries = states[5000:]
    kde = KDEBonus(box(6), box(6), sigma=0.3, max_reference=4000)
    for batch in range(3):
        kde.add(states[1500 * batch:1500 * (batch + 1)])
        stored = kde.reference[:kde.size].numpy().astype(np.float64)
        d2 = ((queries[:, None, :] - stored[None]) ** 2).sum(-1)
        expected = logsumexp(-d2 / (2 * 0.3**2), axis=1) - math.log(kde.size)
        np.testing.assert_allclose(kde.log_density(queries), expected, rtol=1e-5, atol=1e-3)
    other = KDEBonus(box(6), box(6), sigma=0.3, max_reference=4000)
    other.add(states[4500:5000])
    other.log_density(queries)  # tiles for its own references, to be dropped by the load
    other.load_state_dict(through_checkpoint(kde.state_dict()))
    np.testing.assert_array_equal(other.log_density(queries), kde.log_density(queries))
    assert kde.log_density(queries[:0]).shape == (0,)


def mixture():
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 3.0]])
    covs = [np.diag([0.5, 0.3]) ** 2, np.array([[0.4, 0.15], [0.15, 0.3]]), np.diag([0.3, 0.6]) ** 2]
    return weights, means, covs


def sample_mixture(rng, n, widen=1.0):
    """n samples of the mixture (each component's std times `widen`)."""
    weights, means, covs = mixture()
    k = rng.choice(3, n, p=weights)
    chol = np.stack([np.linalg.cholesky(c) for c in covs]) * widen
    return means[k] + np.einsum("nij,nj->ni", chol[k], rng.standard_normal((n, 2)))


def true_log_density(x):
    weights, means, covs = mixture()
    return logsumexp([np.log(w) + multivariate_normal(m, c).logpdf(x) for w, m, c in zip(weights, means, covs)], axis=0)


def test_estimate_tracks_the_true_log_density_of_a_gaussian_mixture():
    rng = np.random.default_rng(2)
    kde = KDEBonus(box(2), box(2), sigma=0.2)
    kde.add(sample_mixture(rng, 20000))
    # queries where the mixture has mass and in its tails (the bonus must order both)
    queries = np.concatenate([sample_mixture(rng, 1500), sample_mixture(rng, 500, widen=1.7)])
    estimate, truth = kde.log_density(queries), true_log_density(queries)
    assert truth.max() - truth.min() > 10  # a wide range of densities, from modes to far tails
    r, _ = pearsonr(estimate, truth)
    assert r > 0.9, r
    # unnormalised kernels: the estimate is log p + log (2 pi sigma^2)^(D/2) where the density is smooth
    core = truth > np.quantile(truth, 0.5)
    offset = np.median(estimate[core] - truth[core])
    assert abs(offset - math.log(2 * math.pi * 0.2**2)) < 0.3, offset


def test_rare_states_get_larger_bonuses_and_the_batch_is_scored_before_it_is_added():
    rng = np.random.default_rng(3)
    kde = KDEBonus(box(2), box(2), sigma=0.2)
    first = rollout_of(sample_mixture(rng, 400).reshape(100, 4, 2))
    kde.observe(first)
    np.testing.assert_array_equal(kde.intrinsic_reward(first), np.zeros(400))  # empty reference set
    assert kde.size == 0 and len(kde.pending) == 1                              # observed, not yet added
    assert kde.update(first) == {"reference_size": 400}
    assert kde.pending == []
    common = np.array([[0.0, 0.0], [3.0, 1.0]])        # mixture modes
    rare = np.array([[1.5, -1.5], [6.0, 6.0]])          # a gap and far outside
    batch = rollout_of(np.concatenate([common, rare])[:, None, :])
    kde.observe(batch)
    bonus = kde.intrinsic_reward(batch)
    assert bonus.shape == (4,) and np.all(bonus >= 0)
    assert max(bonus[:2]) < min(bonus[2:])
    assert bonus[3] > bonus[2]
    np.testing.assert_array_equal(kde.intrinsic_reward(batch), bonus)  # scoring changes nothing
    assert kde.size == 400                             # the observed batch is not scored against itself
    assert kde.update(batch) == {"reference_size": 404}
    after = kde.intrinsic_reward(batch)
    assert kde.size == 404 and after[3] < bonus[3] - 5  # once added, the far state is no longer novel


def test_ring_keeps_the_newest_states():
    kde = KDEBonus(box(1), box(1), max_reference=10)
    for start in (0, 7, 14):
        kde.add(np.arange(start, start + 7, dtype=np.float32)[:, None])
    assert kde.size == 10 and kde.seen == 21
    assert sorted(kde.reference[:, 0].tolist()) == list(range(11, 21))
    kde.add(np.arange(100, 125, dtype=np.float32)[:, None])  # a batch bigger than the set
    assert sorted(kde.reference[:, 0].tolist()) == list(range(115, 125))


def test_reservoir_is_a_uniform_sample_of_everything_seen():
    kde = KDEBonus(box(1), box(1), max_reference=1000, reference_update="reservoir", seed=4)
    for start in range(0, 20000, 2500):
        kde.add(np.arange(start, start + 2500, dtype=np.float32)[:, None])
    kept = kde.reference[:, 0].numpy()
    assert kde.size == 1000 and len(np.unique(kept)) == 1000
    counts, _ = np.histogram(kept, bins=4, range=(0, 20000))
    assert np.all(np.abs(counts - 250) < 60), counts  # binomial sd ~ 14
    assert kept.min() < 5000  # not merely the newest states


def test_state_dict_round_trip_resumes_identically():
    rng = np.random.default_rng(5)
    batches = [rollout_of(rng.normal(0, 1, (50, 4, 3))) for _ in range(6)]
    config = dict(sigma=0.3, max_reference=300, reference_update="reservoir", normalise_states=True)
    a = KDEBonus(box(3), box(3), seed=9, **config)
    for b in batches[:3]:
        iterate(a, b)
    a.observe(batches[3])                        # a checkpoint between observe and update
    saved = through_checkpoint(a.state_dict())  # as the runner's checkpoints store it
    b_ = KDEBonus(box(3), box(3), seed=9, **config)
    b_.load_state_dict(saved)
    assert len(b_.pending) == 1 and b_.size == a.size == 300
    np.testing.assert_array_equal(a.intrinsic_reward(batches[3]), b_.intrinsic_reward(batches[3]))
    assert a.update(batches[3]) == b_.update(batches[3])  # the pending batch, through the reservoir's RNG
    for batch in batches[4:]:
        r_a, metrics_a = iterate(a, batch)
        r_b, metrics_b = iterate(b_, batch)
        np.testing.assert_array_equal(r_a, r_b)
        assert r_a.shape == (200,) and metrics_a == metrics_b
    np.testing.assert_array_equal(a.reference.numpy(), b_.reference.numpy())
    assert a.seen == b_.seen == 1200


@pytest.mark.parametrize("key, value", [("sigma", 0.0), ("max_reference", 0), ("reference_update", "fifo")])
def test_invalid_config_is_refused(key, value):
    with pytest.raises(ConfigError, match=f"exploration.{key}"):
        KDEBonus(box(2), box(2), **{key: value})


def test_trpo_run_with_kde_and_resume(tmp_path):
    args = ["agent=trpo", "env=cartpole", "exploration=kde", *TINY["trpo"][:-1], "exploration.normalise=batch_median"]
    assert train_in_process(tmp_path / "full", *args, "total_env_steps=800") == 0
    rows = read_progress(tmp_path / "full")
    bonus = [float(r["bonus_raw_mean"]) for r in rows]
    assert bonus[0] == 0.0 and all(b > 0 for b in bonus[1:])
    assert [int(r["expl_reference_size"]) for r in rows] == [200, 400, 600, 800]
    assert train_in_process(tmp_path / "resumed", *args, "total_env_steps=400") == 0
    assert train_in_process(tmp_path / "resumed", *args, "total_env_steps=800") == 0
    assert learning_columns(read_progress(tmp_path / "resumed")) == learning_columns(rows)


def test_pixel_spaces_are_refused_by_requirements_before_any_allocation():
    pixels = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    kde = KDEBonus(pixels, gym.spaces.Discrete(4))  # the runner builds, then checks `requires`
    assert kde.requires.observation_kinds == ("vector",) and kde.reference.numel() == 0
    empty = KDEBonus(box(2), box(2))
    empty.load_state_dict(KDEBonus(box(2), box(2)).state_dict())  # a checkpoint taken before any batch
    probe = rollout_of(np.ones((3, 2, 2)))
    assert empty.size == 0 and empty.intrinsic_reward(probe).shape == (6,) and not empty.intrinsic_reward(probe).any()
