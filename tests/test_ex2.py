"""EX2 (algos/exploration/ex2.py): the density the exemplar discriminator implies, the closed-form KL,
the hand-written gradient, checkpoint round trips, and resume through the runner (the chain canary is
in tests/test_canary.py)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from algos.common.checks import ConfigError
from algos.common.rollout import Rollout, Transitions
from algos.exploration.ex2 import EX2, EX2KExemplar
from algos.exploration.ex2_models import density_from_discriminator, kl_to_standard_normal
from tests.conftest import (
    TINY,
    learning_columns,
    read_progress,
    through_checkpoint,
    train_in_process,
)
from tests.helpers import iterate

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT = gym.spaces.Box(-1, 1, (2,), np.float32)
SMALL = dict(hidden_sizes=[16], min_replay_size=40, first_train_itrs=30, train_itrs=10, batch_size=16,
             replay_size=100, steps_per_draw=7)
METHODS = [(EX2, {}), (EX2KExemplar, {"num_discriminators": 4})]
IDS = ["amortized", "k_exemplar"]


def make_rollout(rng: np.random.Generator, T: int = 10, N: int = 3) -> Transitions:
    """The T * N transitions of a rollout of random states and actions (rows time-major)."""
    return Rollout(obs=rng.normal(size=(T, N, 3)).astype(np.float32),
                   actions=rng.uniform(-1, 1, (T, N, 2)).astype(np.float32),
                   rewards_ext=np.zeros((T, N)), terminated=np.zeros((T, N), bool),
                   truncated=np.zeros((T, N), bool), episode_step=np.zeros((T, N), np.int64),
                   last_obs=np.zeros((N, 3), np.float32), final_index=np.zeros((0, 2), np.int64),
                   final_obs=np.zeros((0, 3), np.float32)).transitions()


def test_kl_is_the_closed_form_for_diagonal_gaussians():
    mean, log_var = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    q = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    torch.testing.assert_close(kl_to_standard_normal(mean, log_var), torch.distributions.kl_divergence(q, p))
    assert torch.all(kl_to_standard_normal(torch.zeros(3), torch.zeros(3)) == 0)


@pytest.mark.parametrize("cls,kwargs", METHODS, ids=IDS)
def test_hand_written_gradient_equals_autograd(cls, kwargs):
    method = cls(OBS, ACT, seed=1, **SMALL, **kwargs)
    model, B = method.model, 16
    x = torch.randn(method.n_encoders, 2 * B, method.dim)
    eps = torch.randn(method.n_encoders, 2 * B, model.F)
    labels = torch.cat([torch.ones(B), torch.zeros(B)])
    heads = torch.randint(0, method.num_discriminators, (2 * B,)) if method.num_discriminators > 1 else None
    loss, nll, kl = model.loss(x, eps, labels, heads)
    # the loss is the negated Eq. 5 objective: Bernoulli NLL + kl_weight * KL, both means over pairs
    torch.testing.assert_close(loss, nll + 0.1 * kl)
    expected, = torch.autograd.grad(loss, model.flat)
    model.gradient(x, eps, labels, heads)
    torch.testing.assert_close(model.flat.grad, expected, rtol=1e-4, atol=1e-6)


def test_density_ranks_states_like_the_true_density():
    """A well-trained amortized discriminator on a 1-D Gaussian mixture: p = (1 - D) / D orders states
    like the mixture's density, and rare states get the larger bonus -log p."""
    rng = np.random.default_rng(0)
    weights, means, sd = np.array([0.75, 0.25]), np.array([-2.0, 2.0]), 0.6
    comp = rng.choice(2, size=20000, p=weights)
    replay = (means[comp] + sd * rng.normal(size=20000)).astype(np.float32)[:, None]
    grid = np.linspace(-4.5, 4.5, 91, dtype=np.float32)[:, None]
    true = (weights * np.exp(-0.5 * ((grid - means) / sd) ** 2)).sum(1)

    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    method = EX2(space, ACT, seed=0, hidden_sizes=[32], use_actions=False, learning_rate=1e-3,
                 kl_weight=0.1, replay_size=20000, min_replay_size=1)
    method.replay.add(replay)
    method._train(grid, 3000)                  # the grid states are the exemplars, the replay the past
    p = method.density(grid)
    assert spearmanr(p, true).statistic > 0.8
    bonus = -np.log(p)
    common = true > np.quantile(true, 0.75)
    rare = true < np.quantile(true, 0.25)
    assert bonus[rare].mean() > bonus[common].mean() + 1.0
    assert bonus[np.argmin(np.abs(grid[:, 0] - 2.0))] > bonus[np.argmin(np.abs(grid[:, 0] + 2.0))]


def test_density_formula_and_clipping():
    d = np.array([0.5, 0.2, 0.0, 1.0])
    np.testing.assert_allclose(density_from_discriminator(d), [1.0, 4.0, (1 - 1e-5) / 1e-5, 1e-5 / (1 - 1e-5)])


def assert_round_trip_reproduces_bonuses_and_training(make, batches) :
    """Train `make(seed)` on three batches, restore its checkpoint into `make(99)`, and check that the
    two agree exactly on the next three batches (bonuses, training metrics, parameters, replay). The
    checkpoint is taken between `observe` and `update` of the fourth batch, so that it carries the
    exemplars awaiting their fit."""
    method = make(3)
    for r in batches[:3]:  # 30-state batches: training starts at the third (replay 60 >= 40)
        iterate(method, r)
    assert method.trainings == 1 and method.replay.added == 90 and method.exemplars == []
    method.observe(batches[3])
    saved = through_checkpoint(method.state_dict())  # as the runner's checkpoints store it
    restored = make(99)
    assert not torch.equal(method.model.flat, restored.model.flat)
    restored.load_state_dict(saved)
    assert len(restored.exemplars) == 1
    metrics = method.update(batches[3])            # trains more steps (optimiser state carried over)
    assert metrics == restored.update(batches[3]) and 0 < metrics["discriminator_mean"] < 1
    for i, r in enumerate(batches[3:]):  # the fourth batch is then scored; the others go through it all
        if i > 0:
            assert iterate(method, r)[1] == iterate(restored, r)[1]
        a, b = method.intrinsic_reward(r), restored.intrinsic_reward(r)
        assert a.shape == (30,) and np.abs(a).sum() > 0
        np.testing.assert_array_equal(a, b)
    assert torch.equal(method.model.flat, restored.model.flat)
    np.testing.assert_array_equal(method.replay.data, restored.replay.data)
    return restored


@pytest.mark.parametrize("cls,kwargs", METHODS, ids=IDS)
def test_state_dict_round_trip_reproduces_bonuses_and_training(cls, kwargs):
    rng = np.random.default_rng(0)
    batches = [make_rollout(rng) for _ in range(6)]   # the replay wraps around (capacity 100)
    assert_round_trip_reproduces_bonuses_and_training(lambda seed: cls(OBS, ACT, seed=seed, **SMALL, **kwargs),
                                                      batches)


def test_no_bonus_before_the_first_training_and_bonus_is_minus_log_p():
    rng = np.random.default_rng(1)
    method = EX2(OBS, ACT, seed=0, **SMALL)
    r = make_rollout(rng)
    bonus, metrics = iterate(method, r)              # replay 0 < 40: no training, no bonus
    assert bonus.shape == (30,) and np.all(bonus == 0)
    assert method.trainings == 0 and metrics == {"replay_size": 30.0}  # the batch joined the replay
    iterate(method, make_rollout(rng))
    bonus, metrics = iterate(method, r)              # replay 60: trains, then scores
    assert method.trainings == 1 and metrics["train_steps"] == 30 and metrics["replay_size"] == 90
    states = np.concatenate([r.obs, r.actions], -1)
    np.testing.assert_allclose(bonus, -np.log(method.density(states)), rtol=1e-6)
    # discriminator_mean: the mean D(x, x) of the batch as it was scored, p = (1 - D) / D
    assert metrics["discriminator_mean"] == pytest.approx(np.mean(1 / (1 + method.density(states))), rel=1e-6)


def test_fit_after_scoring_scores_with_the_model_before_the_fit():
    """fit_before_scoring false (the reference's eval_first): the batch is scored with the model of
    the previous fits, then trained on; discriminator_mean is the D it was scored with."""
    rng = np.random.default_rng(1)
    method = EX2(OBS, ACT, seed=0, **SMALL, fit_before_scoring=False)
    assert not method.fit_before_scoring
    for _ in range(2):
        iterate(method, make_rollout(rng))
    r = make_rollout(rng)
    bonus, metrics = iterate(method, r)              # scored untrained (zeros), then the first fit
    assert np.all(bonus == 0) and method.trainings == 1 and "discriminator_mean" not in metrics
    r2 = make_rollout(rng)
    method.observe(r2)
    before = method.intrinsic_reward(r2)             # the model trained on the batches before r2
    d_scored = np.mean(1 / (1 + method.density(np.concatenate([r2.obs, r2.actions], -1))))
    metrics = method.update(r2)
    assert method.trainings == 2 and metrics["discriminator_mean"] == pytest.approx(d_scored, rel=1e-6)
    assert np.abs(before).sum() > 0 and not np.array_equal(before, method.intrinsic_reward(r2))


def test_train_itrs_zero_trains_only_the_first_time():
    rng = np.random.default_rng(2)
    method = EX2(OBS, ACT, seed=0, **{**SMALL, "train_itrs": 0})
    for _ in range(3):
        iterate(method, make_rollout(rng))                         # the third trains (replay 60)
    trained = method.model.flat.detach().clone()
    bonus, metrics = iterate(method, make_rollout(rng))
    assert method.trainings == 1 and np.any(bonus != 0) and "train_steps" not in metrics
    assert torch.equal(method.model.flat, trained)                  # no further steps


def test_k_exemplar_groups_adjacent_states():
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    method = EX2KExemplar(space, ACT, seed=0, num_discriminators=4, use_actions=False, **SMALL)
    np.testing.assert_array_equal(method._groups(np.arange(10), 10), [0, 0, 0, 1, 1, 1, 2, 2, 2, 3])
    np.testing.assert_array_equal(method._groups(np.array([9, 0, 4]), 10), [3, 0, 1])
    T, N = 2, 3
    states = np.arange(T * N, dtype=np.float32).reshape(T, N, 1)  # state 3 t + n at (step t, env n)
    batch = Rollout(obs=states, actions=np.zeros((T, N, 2), np.float32), rewards_ext=np.zeros((T, N)),
                    terminated=np.zeros((T, N), bool), truncated=np.zeros((T, N), bool),
                    episode_step=np.zeros((T, N), np.int64), last_obs=states[-1],
                    final_index=np.zeros((0, 2), np.int64), final_obs=np.zeros((0, 1), np.float32)).transitions()
    # trajectory by trajectory: env 0's steps in time order, then env 1's, ...
    np.testing.assert_array_equal(method._exemplars(batch)[:, 0], [0, 3, 1, 4, 2, 5])
    # the position (hence the group) of a row comes from its (step, env) index, whatever the row order
    shuffled = batch.take(np.array([4, 0, 5, 2, 1, 3]))
    np.testing.assert_array_equal(method._exemplars(shuffled)[:, 0], [0, 3, 1, 4, 2, 5])
    _, positions, total = method._exemplar_positions(shuffled)
    assert total == 6
    np.testing.assert_array_equal(positions, [3, 0, 5, 4, 2, 1])       # n * T + t of rows 4, 0, 5, 2, 1, 3
    method.observe(shuffled)
    np.testing.assert_array_equal(method.exemplars[0][:, 0], [0, 3, 1, 4, 2, 5])  # appended in exemplar order


EX2_TINY = ["exploration.min_replay_size=200", "exploration.first_train_itrs=20",
            "exploration.train_itrs=10", "exploration.batch_size=32", "exploration.hidden_sizes=[8]"]


@pytest.mark.parametrize("exploration", ["ex2", "ex2_kexemplar"])
def test_resume_after_checkpoint_equals_uninterrupted_run(tmp_path, exploration):
    args = ["agent=trpo", "env=pendulum", *TINY["trpo"][:-1], f"exploration={exploration}", *EX2_TINY,
            "checkpoint_every=1", "seed=4"]
    assert train_in_process(tmp_path / "whole", *args, "total_env_steps=1000") == 0
    assert train_in_process(tmp_path / "split", *args, "total_env_steps=400") == 0
    assert train_in_process(tmp_path / "split", *args, "total_env_steps=1000") == 0
    whole, split = read_progress(tmp_path / "whole"), read_progress(tmp_path / "split")
    assert len(whole) == 5 and float(whole[-1]["expl_loss"]) > 0      # trained from iteration 2 on
    assert learning_columns(split) == learning_columns(whole)


# -- pixels: the Siamese conv model of EX2's Atari runs (papers.md §4, Atari row) -------------------

PIXELS = gym.spaces.Box(0, 255, (4, 42, 42), np.uint8)
DISCRETE = gym.spaces.Discrete(4)
CONV_SMALL = dict(use_actions=False, hidden_sizes=[64], feature_dim=32, batch_size=16, min_replay_size=40,
                  first_train_itrs=8, train_itrs=4, replay_size=100, steps_per_draw=3)


def square_frames(rng: np.random.Generator, corners) -> np.ndarray:
    """Black 42x42 uint8 frames with a white 12x12 square near the top-left (corner 0) or the
    bottom-right (corner 1), jittered by 0-2 pixels: one frame per entry of `corners`."""
    frames = np.zeros((len(corners), 42, 42), np.uint8)
    for frame, corner, (dr, dc) in zip(frames, corners, rng.integers(0, 3, (len(corners), 2))):
        r = c = 4 if corner == 0 else 26
        frame[r + dr:r + dr + 12, c + dc:c + dc + 12] = 255
    return frames


def pixel_rollout(rng: np.random.Generator, T: int = 10, N: int = 3) -> Transitions:
    """The T * N transitions of a rollout of stacks of 4 frames: three random ones, and a square
    frame last (the newest)."""
    obs = rng.integers(0, 256, (T, N, 4, 42, 42), dtype=np.uint8)
    obs[:, :, -1] = square_frames(rng, rng.integers(0, 2, T * N)).reshape(T, N, 42, 42)
    return Rollout(obs=obs, actions=rng.integers(0, 4, (T, N)), rewards_ext=np.zeros((T, N)),
                   terminated=np.zeros((T, N), bool), truncated=np.zeros((T, N), bool),
                   episode_step=np.zeros((T, N), np.int64), last_obs=obs[0],
                   final_index=np.zeros((0, 2), np.int64),
                   final_obs=np.zeros((0, 4, 42, 42), np.uint8)).transitions()


def test_conv_model_shapes_last_frame_and_uint8_replay():
    method = EX2(PIXELS, DISCRETE, seed=0, **CONV_SMALL)
    net = method.model.net
    assert method.replay.data.dtype == np.uint8 and method.replay.data.shape == (100, 42, 42)
    assert [m.out_channels for m in net.encoders[0] if isinstance(m, torch.nn.Conv2d)] == [16, 8]
    x = torch.randint(0, 256, (2, 6, 42, 42), dtype=torch.uint8)
    assert net.encoders[0][:4](x[0, :, None].float()).shape == (6, 8, 9, 9)   # 42 -> 20 -> 9 (4x4, stride 2)
    eps = torch.randn(2, 6, 32)
    mean, log_var, logit = net(x, eps)
    assert mean.shape == log_var.shape == (2, 6, 32) and logit.shape == (6,)
    torch.testing.assert_close(net(x, eps), net(x.float() / 255.0, eps))  # uint8 is scaled to [0, 1]
    labels = torch.cat([torch.ones(3), torch.zeros(3)])
    loss, nll, kl = method.model.loss(x, eps, labels)                      # the Eq. 5 objective, negated
    torch.testing.assert_close(nll, torch.nn.functional.binary_cross_entropy_with_logits(logit, labels))
    torch.testing.assert_close(kl, kl_to_standard_normal(mean, log_var).sum((0, 2)).mean())
    torch.testing.assert_close(loss, nll + 0.1 * kl)

    rng = np.random.default_rng(0)
    assert np.all(iterate(method, pixel_rollout(rng))[0] == 0)             # replay 0 < 40: no bonus yet
    iterate(method, pixel_rollout(rng))
    r = pixel_rollout(rng)
    bonus, metrics = iterate(method, r)                                    # replay 60: trains, then scores
    assert bonus.shape == (30,) and np.isfinite(bonus).all() and bonus.std() > 0
    assert r.as_steps(bonus).shape == (10, 3)
    # only the newest frame of each stack counts, and it is what the replay keeps (as bytes), in
    # exemplar order (env 0's steps in time order, then env 1's, ...)
    np.testing.assert_allclose(bonus, -np.log(method.density(r.obs[:, -1])), rtol=1e-6)
    frames = r.obs[:, -1].reshape(10, 3, 42, 42)
    np.testing.assert_array_equal(method.replay.data[60:90], frames.swapaxes(0, 1).reshape(30, 42, 42))
    assert metrics["train_steps"] == 8 and all(np.isfinite(v) for v in metrics.values())
    assert metrics["discriminator_mean"] == pytest.approx(np.mean(1 / (1 + method.density(r.obs[:, -1]))), rel=1e-6)


@pytest.mark.parametrize("rare_corner", [0, 1])
def test_conv_model_gives_rare_frames_the_larger_bonus(rare_corner):
    """Past frames: 95% show the square in one corner, 5% in the other. Trained on balanced exemplars
    against that replay, p = (1 - D) / D must rank the rare frames below the common ones, whichever
    corner is rare. (Untrained, the two differ by ~0.2 nats in either direction; trained, by ~2.)"""
    rng = np.random.default_rng(0)
    method = EX2(PIXELS, DISCRETE, seed=0, use_actions=False, hidden_sizes=[64], feature_dim=32,
                 learning_rate=1e-3, batch_size=32, replay_size=400, min_replay_size=1, steps_per_draw=20)
    corners = np.where(rng.random(400) < 0.05, rare_corner, 1 - rare_corner)
    method.replay.add(square_frames(rng, corners))
    method._train(square_frames(rng, np.repeat([0, 1], 32)), 200)  # exemplars: both patterns
    common = -np.log(method.density(square_frames(rng, np.full(50, 1 - rare_corner))))
    rare = -np.log(method.density(square_frames(rng, np.full(50, rare_corner))))
    assert rare.mean() > common.mean() + 1.0    # measured: 2.1 and 2.0 nats (1.7 to 2.9 over seeds 0-4)
    assert (rare[:, None] > common[None, :]).mean() > 0.8          # measured: 1.0 (0.96 to 1.0 over seeds)


def test_conv_model_state_dict_round_trip_reproduces_bonuses_and_training():
    rng = np.random.default_rng(0)
    batches = [pixel_rollout(rng) for _ in range(6)]
    restored = assert_round_trip_reproduces_bonuses_and_training(
        lambda seed: EX2(PIXELS, DISCRETE, seed=seed, **CONV_SMALL), batches)
    with pytest.raises(ConfigError, match="exploration"):          # a vector model's checkpoint does not fit
        restored.load_state_dict(EX2(OBS, ACT, **SMALL).state_dict())


def test_pixels_are_refused_by_the_k_exemplar_model_and_with_actions():
    with pytest.raises(ConfigError, match="^exploration: the K-exemplar model .* exploration=ex2_atari"):
        EX2KExemplar(PIXELS, DISCRETE, use_actions=False)
    with pytest.raises(ConfigError, match="^exploration.use_actions: must be false with pixel"):
        EX2(PIXELS, DISCRETE, use_actions=True)
    with pytest.raises(ConfigError, match="^exploration.conv_filters"):
        EX2(PIXELS, DISCRETE, use_actions=False, conv_filters=[16, 8, 8, 8, 8])


def test_atari_runner_smoke_run_logs_the_bonus_and_resumes(tmp_path):
    """agent=trpo_atari env=montezuma exploration=ex2_atari at a tiny budget: exits 0, trains from the
    second iteration on (replay 128 >= 100), logs the bonus columns, and a run resumed from its
    checkpoint (sync vector env: resumable bit for bit) matches the uninterrupted one."""
    args = ["agent=trpo_atari", "env=montezuma", "exploration=ex2_atari", "env.atari.vector=sync",
            "agent.batch_size=128", "agent.num_envs=2", "exploration.min_replay_size=100",
            "exploration.first_train_itrs=5", "exploration.train_itrs=3", "exploration.batch_size=16",
            "exploration.replay_size=300", "checkpoint_every=1"]
    assert train_in_process(tmp_path / "whole", *args, "total_env_steps=384") == 0
    rows = read_progress(tmp_path / "whole")
    assert len(rows) == 3 and float(rows[0]["bonus_raw_mean"]) == 0.0 and rows[0]["expl_loss"] == ""
    for row in rows[1:]:
        assert float(row["bonus_raw_mean"]) != 0.0 and float(row["bonus_scaled_mean"]) != 0.0
        assert float(row["expl_loss"]) > 0 and 0 < float(row["expl_discriminator_mean"]) < 1
    assert [row["expl_train_steps"] for row in rows[1:]] == ["5.0", "3.0"]
    assert train_in_process(tmp_path / "split", *args, "total_env_steps=256") == 0
    assert train_in_process(tmp_path / "split", *args, "total_env_steps=384") == 0
    assert learning_columns(read_progress(tmp_path / "split")) == learning_columns(rows)
