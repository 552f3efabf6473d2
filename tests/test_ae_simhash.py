"""The learned AE hash of #Exploration (Tang et al. 2017, §2.3): noise on the sigmoid output, the
per-pixel softmax reconstruction over intensity bins, the binarisation term on b(s), and the codes
it learns (algos/exploration/ae_simhash.py)."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from algos.common.checks import ConfigError
from algos.exploration.ae_simhash import AESimHashCount
from tests.helpers import iterate
from tests.test_simhash import DISCRETE, PIXELS, VECTOR, rollout

CONF = Path(__file__).resolve().parent.parent / "conf" / "exploration" / "ae_simhash.yaml"


def code_linear(method) -> torch.nn.Linear:
    """The linear map whose outputs are the code pre-activations (batch norm is off)."""
    return method.ae.to_code[0] if method.pixels else method.ae.encode[0][-1]


def decoder_module(method) -> torch.nn.Module:
    return method.ae.from_code if method.pixels else method.ae.decode


@pytest.mark.parametrize("space", [VECTOR, PIXELS], ids=["vector", "pixels"])
def test_noise_is_added_to_the_sigmoid_output_and_binarisation_acts_on_the_clean_code(space):
    """Half the code units are pinned at b = sigmoid(50) = 1, half at b = sigmoid(0) = 0.5. The
    decoder must then see b + U(-0.3, 0.3): values above 1 (impossible for sigmoid(x + u), the old
    placement, which also leaves a saturated unit at exactly 1), spread uniformly with std 0.3 / sqrt(3)
    around b (sigmoid(u) - 0.5 would have std ~0.043). The binarisation term is computed on the
    noise-free b: exactly 0.25 on the 0.5 units and 0 on the saturated ones (noise would lower it)."""
    method = AESimHashCount(space, DISCRETE, seed=0, code_dim=32, noise=0.3)
    linear = code_linear(method)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias[:16] = 50.0
        linear.bias[16:] = 0.0
    seen = []
    decoder_module(method).register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    rng = np.random.default_rng(0)
    obs = (rng.integers(0, 256, (256, *space.shape)).astype(space.dtype) if space is PIXELS
           else rng.normal(size=(256, 8)).astype(np.float32))
    _, parts = method.loss(method._inputs(obs))
    z = seen[0].numpy()
    b = np.r_[np.ones(16), np.full(16, 0.5)]
    u = z - b
    assert np.abs(u).max() <= 0.3 + 1e-6
    assert u.std() == pytest.approx(0.3 / np.sqrt(3), rel=0.05)
    assert abs(u.mean()) < 0.01
    assert (z[:, :16] > 1.2).mean() == pytest.approx(1 / 6, abs=0.03)  # U(0.7, 1.3) above 1.2
    assert parts["ae_binarisation"] == pytest.approx(0.125, rel=1e-6)  # mean over units of 0 and 0.25
    assert np.array_equal(method.code(obs[:8]), method.code(obs[:8]))  # hashing sees no noise
    assert np.allclose(method.code(obs[:8]), b, atol=1e-6)


def test_pixel_reconstruction_is_a_softmax_cross_entropy_per_pixel_over_intensity_bins():
    """-log p(s | b) equals a brute-force sum over pixels of -log softmax(logits)[q], q the pixel's
    quantised intensity round(x / 255 * 63), averaged over the minibatch (noise and lambda set to 0)."""
    method = AESimHashCount(PIXELS, DISCRETE, seed=0, code_dim=16, noise=0.0, binarisation=0.0)
    rng = np.random.default_rng(1)
    obs = rng.integers(0, 256, (4, *PIXELS.shape)).astype(np.uint8)
    obs[0, -1, 0, :3] = [0, 255, 128]  # bins 0, 63 and round(31.62) = 32
    frames = obs[:, -1].astype(np.int64)
    q = (frames * 63 + 127) // 255  # round-half-up in integers (x * 63 / 255 never ends in .5)
    assert q[0, 0, :3].tolist() == [0, 63, 32]
    _, parts = method.loss(method._inputs(obs))
    with torch.no_grad():
        x = torch.as_tensor(q * (2.0 / 63) - 1.0, dtype=torch.float32)
        logits = method.ae.decode(torch.sigmoid(method.ae.encode(x))).double().numpy()
    assert logits.shape == (4, 64, 42, 42)
    nll = np.zeros(4)
    for n in range(4):
        for i in range(42):
            for j in range(42):
                pixel = logits[n, :, i, j]
                log_z = pixel.max() + np.log(np.exp(pixel - pixel.max()).sum())
                nll[n] += log_z - pixel[q[n, i, j]]
    assert parts["ae_nll"] == pytest.approx(nll.mean(), rel=1e-5)


def test_batch_norm_on_the_code_is_an_option_off_by_default():
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in AESimHashCount(VECTOR, DISCRETE).ae.modules())
    for space in (VECTOR, PIXELS):
        on = AESimHashCount(space, DISCRETE, code_batch_norm=True, code_dim=16)
        assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in on.ae.modules()) == 1
    conf = yaml.safe_load(CONF.read_text())
    assert conf["code_batch_norm"] is False
    assert (conf["noise"], conf["intensity_bins"]) == (0.3, 64)


@pytest.mark.parametrize("key, value", [("intensity_bins", 1), ("intensity_bins", 257), ("intensity_bins", 2.5),
                                        ("code_batch_norm", "yes"), ("noise", -0.1)])
def test_invalid_ae_config_is_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"exploration.{key}"):
        AESimHashCount(PIXELS, DISCRETE, **{key: value})


def clusters(rng, n, centers):
    label = rng.integers(0, len(centers), n)
    return (centers[label] + 0.1 * rng.normal(size=(n, centers.shape[1]))).astype(np.float32), label


def test_ae_codes_become_binary_and_separate_clusters_without_batch_norm():
    """Measured (seeds 0, 1, 2 of method and data): 100% of the probe's code units within 0.1 of 0
    or 1 (mean distance 0.003-0.006), every cluster on one SimHash code, 4 distinct codes. With
    code_batch_norm=true the clusters separate too but only 0.1-3% of the units are that binary."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (4, 8))
    method = AESimHashCount(VECTOR, DISCRETE, seed=0, code_dim=32, dim_key=16, train_steps=50,
                            code_batch_norm=False)
    probe, label = clusters(rng, 400, centers)
    near_binary = lambda b: np.mean(np.minimum(b, 1 - b) < 0.1)  # noqa: E731  (share of code units)
    assert near_binary(method.code(probe)) < 0.5  # untrained: sigmoids near 0.5
    for _ in range(15):
        iterate(method, rollout(clusters(rng, 500, centers)[0], num_envs=2))  # count, then train the AE
    assert near_binary(method.code(probe)) > 0.99
    keys = [tuple(method.codes(probe[label == c]).mean(0).round()) for c in range(4)]
    for c in range(4):  # every cluster hashes to one code, and no two clusters share it
        same = (method.codes(probe[label == c]) == np.array(keys[c], bool)).all(axis=1)
        assert same.mean() > 0.95
    assert len(set(keys)) == 4
    probe_batch = rollout(probe)
    method.observe(probe_batch)
    r = method.intrinsic_reward(probe_batch)
    assert r.shape == (400,)
    assert r.max() <= 1 / np.sqrt(15 * 500 / 4 * 0.5)  # familiar clusters: counts in the thousands


def test_conv_ae_hash_on_pixels_round_trips_through_state_dict():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 4, 42, 42), dtype=np.uint8)
    obs = frames[rng.integers(0, 3, 64)]
    method = AESimHashCount(PIXELS, DISCRETE, seed=0, train_steps=3, minibatch_size=16)
    assert method.codes(obs).shape == (64, 64)
    batch = rollout(obs, num_envs=4)
    assert np.all(method.intrinsic_reward(batch) == 1.0)   # nothing observed yet: every count is 0
    method.observe(batch)
    r = method.intrinsic_reward(batch)
    assert r.shape == (64,) and batch.as_steps(r).shape == (16, 4) and np.isfinite(r).all()
    assert r.max() <= 1 / np.sqrt(64 / 3 * 0.5)             # 3 distinct frames, each ~21 times
    assert method.replay.added == 64
    metrics = method.update(batch)
    assert np.isfinite(metrics["ae_nll"]) and metrics["counted_states"] == 64
    other = AESimHashCount(PIXELS, DISCRETE, seed=5, train_steps=3, minibatch_size=16)
    other.load_state_dict(method.state_dict())
    assert np.array_equal(other.code(obs), method.code(obs))
    assert np.array_equal(other.intrinsic_reward(batch), method.intrinsic_reward(batch))
    other.observe(batch)
    method.observe(batch)
    assert np.array_equal(other.intrinsic_reward(batch), method.intrinsic_reward(batch))
    assert other.update(batch) == method.update(batch)  # same replay, minibatches and noise
