"""The papers' MuJoCo environments against the facts of papers.md §1.1 (Gather) and §1.2 (HalfCheetah).

Sensor readings are checked against a brute-force reference written here from the definition (per
bin, the nearest object inside the bin's angular interval), robot poses and objects are placed by
hand, and the centre of mass is recomputed from body masses and positions, so that a broken
environment cannot pass by agreeing with itself.
"""
import math
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from omegaconf import OmegaConf

import envs  # noqa: F401  (registers explorebench/)
from runner.envs import make_env
from tests.conftest import replay_after_restore

CONF_DIR = Path(__file__).resolve().parent.parent / "conf" / "env"
SWIMMER = "explorebench/SwimmerGather-v0"
ANT = "explorebench/AntGather-v0"
CHEETAHS = ["explorebench/HalfCheetahRllab-v0", "explorebench/SparseHalfCheetah-v0",
            "explorebench/SparseHalfCheetahAbs-v0"]
GRID = {(x, y) for x in range(-6, 6, 2) for y in range(-6, 6, 2)} - {(0, 0)}  # papers.md §1.1
N_BINS, SENSOR_RANGE, SPAN = 10, 6.0, math.pi


# --- independent references -----------------------------------------------------------------------
def brute_force_readings(apples, bombs, com_xy, heading):
    """10 apple bins then 10 bomb bins. Bin b covers bearings [heading − π/2 + b·π/10, + π/10)
    (the last bin also holds its upper edge); it reads 1 − d/6 for its nearest object within 6."""
    readings = []
    for objects in (apples, bombs):
        bins = [0.0] * N_BINS
        for b in range(N_BINS):
            low = heading - SPAN / 2 + b * SPAN / N_BINS
            high = low + SPAN / N_BINS
            for x, y in objects:
                dist = math.hypot(x - com_xy[0], y - com_xy[1])
                if dist > SENSOR_RANGE:
                    continue
                bearing = math.atan2(y - com_xy[1], x - com_xy[0])
                while bearing < low:  # the same direction, expressed within [low, low + 2π)
                    bearing += 2 * math.pi
                while bearing >= low + 2 * math.pi:
                    bearing -= 2 * math.pi
                if low <= bearing < high or (b == N_BINS - 1 and math.isclose(bearing, high)):
                    bins[b] = max(bins[b], 1.0 - dist / SENSOR_RANGE)
        readings += bins
    return np.array(readings)


def whole_body_com(model, data):
    """Mass-weighted mean of the bodies' centres of mass, from a fresh forward pass."""
    fresh = mujoco.MjData(model)
    fresh.qpos[:], fresh.qvel[:] = data.qpos, data.qvel
    mujoco.mj_forward(model, fresh)
    return (model.body_mass[:, None] * fresh.xipos).sum(0) / model.body_mass.sum()


def com_velocity_as_rllab(model, data):
    """rllab's get_body_comvel("torso"): summed linear momentum of the bodies / total mass."""
    fresh = mujoco.MjData(model)
    fresh.qpos[:], fresh.qvel[:] = data.qpos, data.qvel
    mujoco.mj_forward(model, fresh)
    momentum, velocity = np.zeros(3), np.zeros(6)
    for body in range(1, model.nbody):
        mujoco.mj_objectVelocity(model, fresh, mujoco.mjtObj.mjOBJ_BODY, body, velocity, 0)
        momentum += model.body_mass[body] * velocity[3:]
    return momentum / model.body_mass.sum()


# --- helpers ----------------------------------------------------------------------------------------
def place(env, apples=(), bombs=(), qpos=None):
    """Put the robot at rest at qpos and these objects (apples in the first 8 slots, bombs in the
    last 8, other slots empty); returns the observation of that state."""
    u = env.unwrapped
    xy, alive = np.zeros((16, 2)), np.zeros(16, bool)
    xy[:len(apples)], alive[:len(apples)] = np.reshape(apples, (-1, 2)), True
    xy[8:8 + len(bombs)], alive[8:8 + len(bombs)] = np.reshape(bombs, (-1, 2)), True
    u.object_xy, u.object_alive = xy, alive
    if qpos is not None:
        u.set_state(np.asarray(qpos, float), np.zeros(u.model.nv))
    return u._get_obs()


@pytest.fixture
def swimmer():
    env = gym.make(SWIMMER)
    env.reset(seed=0)
    yield env
    env.close()


# --- SwimmerGather: spaces and model facts ------------------------------------------------------------
def test_swimmer_gather_spaces_and_model_facts(swimmer):
    u = swimmer.unwrapped
    assert swimmer.observation_space.shape == (33,)
    assert isinstance(swimmer.action_space, gym.spaces.Box) and swimmer.action_space.shape == (2,)
    np.testing.assert_array_equal(swimmer.action_space.low, [-50, -50])  # raw, not normalised
    np.testing.assert_array_equal(swimmer.action_space.high, [50, 50])
    assert u.model.opt.timestep == 0.001 and u.frame_skip == 50 and u.dt == pytest.approx(0.05)
    assert u.model.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_CONTACT  # rllab: no contact at all
    assert u.model.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    assert u.model.opt.density == 4000 and u.model.opt.viscosity == 0.1
    assert swimmer.spec.max_episode_steps == 500
    obs, _, _, _, info = swimmer.step(np.zeros(2))
    assert obs.shape == (33,) and obs.dtype == np.float64 and "task_metric" in info


def test_runner_normalises_swimmer_actions_to_the_motors_range():
    env = make_env(OmegaConf.load(CONF_DIR / "swimmer_gather.yaml"))  # the agent acts in [-1, 1]
    env.reset(seed=0)
    env.step(np.array([1.0, -0.5], np.float32))
    np.testing.assert_allclose(env.unwrapped.data.ctrl, [50.0, -25.0])
    env.step(np.array([3.0, -0.5], np.float32))  # clipped to 1 first
    np.testing.assert_allclose(env.unwrapped.data.ctrl, [50.0, -25.0])


def test_swimmer_robot_observation_is_qpos_qvel_and_com(swimmer):
    u = swimmer.unwrapped
    # three equal links centred at +1, 0 and -1 along a straight body: the COM is the torso's origin
    obs = place(swimmer, qpos=[1.5, -2.0, 0.7, 0.0, 0.0])
    np.testing.assert_allclose(obs[10:13], [1.5, -2.0, 0.0], atol=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(5):
        obs, *_ = swimmer.step(rng.uniform(-50, 50, 2))
        np.testing.assert_array_equal(obs[:5], u.data.qpos)
        np.testing.assert_array_equal(obs[5:10], u.data.qvel)
        np.testing.assert_allclose(obs[10:13], whole_body_com(u.model, u.data), atol=1e-12)


# --- SwimmerGather: sensors ----------------------------------------------------------------------------
def test_sensor_reading_of_a_single_apple_ahead(swimmer):
    obs = place(swimmer, apples=[(3.0, 0.0)], qpos=[0, 0, 0, 0, 0])
    expected = np.zeros(20)
    expected[5] = 0.5  # bearing 0 is the first bin left of the heading; 1 - 3/6
    np.testing.assert_allclose(obs[13:], expected, atol=1e-12)


def test_sensor_nearer_object_occludes_farther_one_of_its_kind_only(swimmer):
    apples = [(4.0, 0.2), (2.0, 0.1)]  # both in bin 5, the farther one listed first
    bombs = [(1.5, 0.05), (3.0, -3.0)]  # a bomb in front of the apples does not hide them
    obs = place(swimmer, apples=apples, bombs=bombs, qpos=[0, 0, 0, 0, 0])
    assert obs[13 + 5] == pytest.approx(1 - math.hypot(2.0, 0.1) / 6)
    assert obs[13 + 10 + 5] == pytest.approx(1 - 1.5 / 6, abs=1e-3)
    np.testing.assert_allclose(obs[13:], brute_force_readings(apples, bombs, (0, 0), 0.0), atol=1e-12)


@pytest.mark.parametrize("heading", [0.0, 1.0, -2.5, 7.0])
def test_sensor_span_edges_and_range_limit(swimmer, heading):
    def at(bearing, dist):
        return (dist * math.cos(heading + bearing), dist * math.sin(heading + bearing))

    apples = [at(math.pi / 2 - 1e-3, 3), at(-math.pi / 2 + 1e-3, 4), at(math.pi / 2 + 1e-3, 2),
              at(-math.pi / 2 - 1e-3, 2), at(math.pi, 1.5)]  # in, in, out, out, behind
    bombs = [at(0.05, 5.99), at(0.4, 6.01)]  # inside and beyond the range
    obs = place(swimmer, apples=apples, bombs=bombs, qpos=[0, 0, heading, 0, 0])
    expected = np.zeros(20)
    expected[9], expected[0] = 0.5, 1 - 4 / 6
    expected[10 + 5] = 1 - 5.99 / 6
    np.testing.assert_allclose(obs[13:], expected, atol=1e-12)
    np.testing.assert_allclose(obs[13:], brute_force_readings(apples, bombs, (0, 0), heading), atol=1e-12)


def test_sensor_exactly_on_the_left_edge_reads_in_the_last_bin(swimmer):
    obs = place(swimmer, apples=[(0.0, 3.0)], bombs=[(0.0, -3.0)], qpos=[0, 0, 0, 0, 0])
    assert obs[13 + 9] == pytest.approx(0.5) and obs[13 + 10] == pytest.approx(0.5)
    assert np.count_nonzero(obs[13:]) == 2


def test_sensor_readings_match_brute_force_for_random_poses_and_layouts(swimmer):
    u = swimmer.unwrapped
    rng = np.random.default_rng(7)
    readings_seen = 0
    for seed in range(60):
        swimmer.reset(seed=seed)
        qpos = [*rng.uniform(-6, 6, 2), rng.uniform(-10, 10), *rng.uniform(-1.7, 1.7, 2)]
        u.set_state(np.array(qpos), np.zeros(5))
        u.object_alive = rng.random(16) < 0.8
        obs = u._get_obs()
        com = whole_body_com(u.model, u.data)
        apples = [xy for xy, alive in zip(u.object_xy[:8], u.object_alive[:8]) if alive]
        bombs = [xy for xy, alive in zip(u.object_xy[8:], u.object_alive[8:]) if alive]
        expected = brute_force_readings(apples, bombs, com[:2], qpos[2])
        np.testing.assert_allclose(obs[13:], expected, atol=1e-12)
        readings_seen += np.count_nonzero(obs[13:])
    assert readings_seen > 150  # most poses see several objects: the comparison is not vacuous


# --- SwimmerGather: catching and episode end ------------------------------------------------------------
@pytest.mark.parametrize("kind,reward", [("apples", 1.0), ("bombs", -1.0)])
def test_catching_an_object_pays_and_removes_it(swimmer, kind, reward):
    u = swimmer.unwrapped
    place(swimmer, **{kind: [(1.4, 0.5), (2.5, 2.5)]}, qpos=[0.5, 0.5, 0, 0, 0])  # 0.9 and 2.8 away
    slot = 0 if kind == "apples" else 8
    before = u._get_obs()[13:]
    obs, r, terminated, truncated, info = swimmer.step(np.zeros(2))  # at rest: the swimmer stays put
    assert r == reward and info["task_metric"] == reward
    assert not terminated and not truncated
    assert not u.object_alive[slot] and u.object_alive[slot + 1]
    seen_before, seen_after = np.flatnonzero(before), np.flatnonzero(obs[13:])
    assert len(seen_before) == 2 and len(seen_after) == 1  # the caught object left the sensors
    _, r, *_ = swimmer.step(np.zeros(2))
    assert r == 0.0


def test_object_just_outside_the_catch_radius_stays(swimmer):
    place(swimmer, apples=[(1.55, 0.5)], bombs=[(0.5, -0.52)], qpos=[0.5, 0.5, 0, 0, 0])  # 1.05, 1.02
    _, r, terminated, _, info = swimmer.step(np.zeros(2))
    assert r == 0.0 and info["task_metric"] == 0.0 and not terminated
    assert swimmer.unwrapped.object_alive.sum() == 2


def test_episode_terminates_when_all_objects_are_collected(swimmer):
    u = swimmer.unwrapped
    place(swimmer, apples=[(0.6, 0.0), (0.0, 0.0)], bombs=[(4.0, 0.0)], qpos=[0, 0, 0, 0, 0])
    _, r, terminated, *_ = swimmer.step(np.zeros(2))
    assert r == 2.0 and not terminated  # two apples at once; the bomb remains
    u.object_xy[8] = u.data.subtree_com[u.torso][:2] + [0.3, 0.0]
    _, r, terminated, _, info = swimmer.step(np.zeros(2))
    assert r == -1.0 and terminated and info["task_metric"] == 1.0


def test_task_metric_is_the_sum_of_the_rewards_over_an_episode():
    env = gym.make(SWIMMER, max_episode_steps=60)
    env.reset(seed=3)
    u, total = env.unwrapped, 0.0
    rng = np.random.default_rng(0)
    for t in range(60):
        if t % 10 == 0:  # now and then, an apple (slots 0-7) or bomb (8-15) right on the swimmer
            slot = [0, 8, 1, 2, 9, 3][t // 10]
            u.object_xy[slot] = u.data.subtree_com[u.torso][:2]
            u.object_alive[slot] = True
        _, r, terminated, truncated, info = env.step(rng.uniform(-50, 50, 2))
        total += r
        assert info["task_metric"] == total
    assert truncated and total == 2.0  # 4 apples - 2 bombs


# --- SwimmerGather: object layout -------------------------------------------------------------------------
def test_layout_is_seeded_by_reset():
    env = gym.make(SWIMMER)
    layouts = []
    for seed in range(20):
        env.reset(seed=seed)
        layouts.append(env.unwrapped.object_xy.copy())
    env.reset(seed=4)
    np.testing.assert_array_equal(env.unwrapped.object_xy, layouts[4])
    assert len({l.tobytes() for l in layouts}) == 20
    env.reset()  # the env's RNG goes on: a new layout
    assert not np.array_equal(env.unwrapped.object_xy, layouts[4])


def test_layout_uses_distinct_grid_points_never_the_origin_uniformly():
    env = gym.make(SWIMMER)
    counts = dict.fromkeys(GRID, 0)
    n_seeds = 500
    for seed in range(n_seeds):
        _, info = env.reset(seed=seed)
        u = env.unwrapped
        points = [tuple(p) for p in u.object_xy.astype(int).tolist()]
        np.testing.assert_array_equal(u.object_xy, np.round(u.object_xy))
        assert len(set(points)) == 16 and set(points) <= GRID  # so never (0, 0)
        assert u.object_alive.all() and u.task_metric == 0.0
        for p in points:
            counts[p] += 1
    expected = n_seeds * 16 / 35  # each of the 35 points is taken with probability 16/35
    assert all(abs(c - expected) < 0.25 * expected for c in counts.values()), counts
    np.testing.assert_array_equal(env.unwrapped.object_reward, [1] * 8 + [-1] * 8)  # apples first


def test_reset_noise_is_rllabs():
    env = gym.make(SWIMMER)
    states = []
    for seed in range(300):
        env.reset(seed=seed)
        states.append(np.r_[env.unwrapped.data.qpos, env.unwrapped.data.qvel])
    states = np.array(states)
    np.testing.assert_allclose(states.mean(0), 0, atol=0.03)
    np.testing.assert_allclose(states[:, :5].std(0), 0.01, rtol=0.2)
    np.testing.assert_allclose(states[:, 5:].std(0), 0.1, rtol=0.2)


# --- AntGather ------------------------------------------------------------------------------------------
def test_ant_gather_spaces_observation_and_heading():
    env = gym.make(ANT)
    env.reset(seed=0)
    u = env.unwrapped
    assert env.observation_space.shape == (145,) and env.action_space.shape == (8,)
    np.testing.assert_array_equal(env.action_space.high, np.full(8, 150.0))
    assert u.model.opt.timestep == 0.02 and u.frame_skip == 1
    assert u.model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
    for _ in range(20):  # until the feet rest on the floor
        obs, *_ = env.step(np.zeros(8))
    np.testing.assert_array_equal(obs[:15], u.data.qpos)
    np.testing.assert_array_equal(obs[15:29], u.data.qvel)
    forces = obs[29:113]  # clipped external forces (here: contacts), 14 bodies x 6
    assert np.abs(forces).max() == 1.0 and np.count_nonzero(forces) > 10
    np.testing.assert_array_equal(obs[113:122], u.data.xmat[u.torso])
    np.testing.assert_allclose(obs[122:125], whole_body_com(u.model, u.data), atol=1e-12)
    # heading = the torso's yaw: an apple 3 ahead of a torso turned by 0.8 rad reads in bin 5
    yaw = 0.8
    qpos = u.init_qpos.copy()
    qpos[3:7] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
    place(env, qpos=qpos)
    com = u.data.subtree_com[u.torso]
    obs = place(env, apples=[(com[0] + 3 * math.cos(yaw), com[1] + 3 * math.sin(yaw))])
    expected = np.zeros(20)
    expected[5] = 0.5
    np.testing.assert_allclose(obs[125:], expected, atol=1e-12)


def test_ant_dies_below_height_with_rllabs_dying_cost():
    env = gym.make(ANT)
    env.reset(seed=0)
    u = env.unwrapped
    qpos = u.init_qpos.copy()
    qpos[2] = 0.1
    place(env, apples=[(0.0, 0.0)], qpos=qpos)  # an apple under it is not caught on the dying step
    _, r, terminated, _, info = env.step(np.zeros(8))
    assert r == -10.0 and terminated and info["task_metric"] == 0.0


# --- HalfCheetah ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", CHEETAHS)
def test_cheetah_spaces_and_model_facts(env_id):
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    assert obs.shape == (20,) and env.observation_space.shape == (20,) and obs.dtype == np.float64
    assert env.action_space.shape == (6,)
    np.testing.assert_array_equal(env.action_space.low, -np.ones(6))
    np.testing.assert_array_equal(u.model.actuator_gear[:, 0], [120, 90, 60, 120, 60, 30])
    assert u.model.opt.timestep == 0.01 and u.frame_skip == 1 and u.dt == 0.01
    assert env.spec.max_episode_steps == 500
    assert u.model.body_mass.sum() == pytest.approx(14.0)
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(obs[:8], u.data.qpos[1:])
    np.testing.assert_array_equal(obs[8:17], u.data.qvel)
    np.testing.assert_allclose(obs[17:], whole_body_com(u.model, u.data), atol=1e-12)


def test_dense_cheetah_reward_is_com_velocity_minus_control_cost():
    env = gym.make(CHEETAHS[0])
    env.reset(seed=2)
    u, total = env.unwrapped, 0.0
    rng = np.random.default_rng(0)
    for _ in range(50):
        action = rng.uniform(-1.5, 1.5, 6)  # beyond the bounds: the cost uses the clipped action
        _, r, terminated, _, info = env.step(action)
        expected = com_velocity_as_rllab(u.model, u.data)[0] - 0.05 * np.sum(np.clip(action, -1, 1) ** 2)
        assert r == pytest.approx(expected, abs=1e-10)
        total += r
        assert info["task_metric"] == pytest.approx(total) and not terminated


def _cheetah_with_com_at(env, x):
    """Rest pose with the whole-body COM at x (rootx is a slide along x, so the COM shifts with it)."""
    u = env.unwrapped
    u.set_state(np.zeros(9), np.zeros(9))
    qpos = np.zeros(9)
    qpos[0] = x - u.data.subtree_com[u.torso][0]
    u.set_state(qpos, np.zeros(9))


@pytest.mark.parametrize("env_id,rewards", [
    ("explorebench/SparseHalfCheetah-v0",
     {4.9: 0.0, 5.1: 1.0, 4.98: 0.0, 5.02: 1.0, -4.9: 0.0, -5.1: 0.0, 0.0: 0.0, 12.0: 1.0}),
    ("explorebench/SparseHalfCheetahAbs-v0",
     {4.9: 0.0, 5.1: 1.0, 5.02: 1.0, -4.98: 0.0, -4.9: 0.0, -5.1: 1.0, 0.0: 0.0, -12.0: 1.0}),
])
def test_sparse_cheetah_pays_one_beyond_the_line(env_id, rewards):
    env = gym.make(env_id)
    env.reset(seed=0)
    for x, expected in rewards.items():
        _cheetah_with_com_at(env, x)
        obs, r, terminated, _, _ = env.step(np.zeros(6))
        # in the air, at rest: no horizontal force moves the COM. The COM is 0.038 ahead of rootx,
        # so x = 5.02 and -4.98 tell the COM from the torso's origin.
        assert obs[17] == pytest.approx(x, abs=1e-9)
        assert r == expected, (x, r)
        assert not terminated


def test_sparse_cheetah_task_metric_counts_steps_beyond_the_line():
    env = gym.make("explorebench/SparseHalfCheetahAbs-v0")
    env.reset(seed=0)
    _cheetah_with_com_at(env, -5.5)
    metrics = [env.step(np.zeros(6))[4]["task_metric"] for _ in range(3)]
    assert metrics == [1.0, 2.0, 3.0]


def test_sparse_cheetahs_share_the_dense_dynamics():
    runs = []
    for env_id in CHEETAHS:
        env = gym.make(env_id)
        env.reset(seed=5)
        rng = np.random.default_rng(0)
        runs.append([env.step(rng.uniform(-1, 1, 6))[0] for _ in range(20)])
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


# --- snapshot / restore ---------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", [SWIMMER, ANT, *CHEETAHS])
def test_snapshot_mid_episode_restores_exactly(env_id):
    env = gym.make(env_id, max_episode_steps=25)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    for _ in range(10):
        env.step(rng.uniform(low, high))
    gather = hasattr(env.unwrapped, "object_xy")
    if gather:  # an apple right on the robot: the replay catches it, the restore must bring it back
        u = env.unwrapped
        u.object_xy[0] = u.data.subtree_com[u.torso][:2]
        u.object_alive[0] = True
    actions = [rng.uniform(low, high) for _ in range(40)]  # crosses the 25-step limit
    first = replay_after_restore(env, actions)
    assert any(len(step) == 1 for step in first)  # an episode ended and a new one began
    if gather:
        assert first[0][1] == 1.0
