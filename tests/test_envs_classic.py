"""VIME's sparse classic tasks (envs/classic.py) and EX2's 2D maze (envs/maze2d.py).

Physical constants below are restated from rllab's model files (papers.md §1.3) and EX2's
`twod_maze.xml` rather than read from the environments, so a wrong constant in an environment
fails a closed-form check. The BOX2D_* numbers were produced once with pybox2d 2.3.10 running
rllab's models (a scratch install: Box2D is not a dependency), from the same start states and
controls; they check that the numpy re-simulation steps like Box2D.
"""
import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import envs  # noqa: F401  (registers the explorebench/ namespace)
from tests.conftest import replay_after_restore

IDS = ["explorebench/MountainCarSparse-v0", "explorebench/CartpoleSwingupSparse-v0",
       "explorebench/DoublePendulumSparse-v0", "explorebench/Maze2D-v0"]
G = 10.0
INSTANT = 1e-9  # a timestep this short leaves a state at rest where it is, to the last bit


def make(env_id):
    env = gym.make(env_id)
    return env, env.unwrapped


def step_at_rest(env, **state):
    """One zero-control step of (almost) zero length from a hand-set state: the reward and the
    termination of that state."""
    u = env.unwrapped
    u.timestep = INSTANT
    u.set_state(**state)
    _, reward, terminated, _, _ = u.step(np.zeros(u.action_space.shape, np.float32))
    return reward, terminated


def run(env, steps, action_fn):
    """Steps the unwrapped env with action_fn(t); returns the observations."""
    return np.array([env.step(np.array([action_fn(t)]))[0] for t in range(steps)])


# --- spaces, seeding, metric --------------------------------------------------------------------

@pytest.mark.parametrize("env_id,obs_dim,obs_bound,act_bound", [
    (IDS[0], 2, 1e6, [1.0]), (IDS[1], 4, 1e6, [10.0]), (IDS[2], 6, 1e6, [50.0]),
    (IDS[3], 2, np.inf, [0.5, 0.5])])
def test_spaces_match_the_originals(env_id, obs_dim, obs_bound, act_bound):
    env, _ = make(env_id)
    assert env.observation_space.shape == (obs_dim,)
    np.testing.assert_array_equal(env.observation_space.high, obs_bound)
    np.testing.assert_array_equal(env.observation_space.low, -obs_bound)
    np.testing.assert_array_equal(env.action_space.high, act_bound)
    np.testing.assert_array_equal(env.action_space.low, -np.array(act_bound))
    assert env.spec.max_episode_steps == (200 if "Maze" in env_id else 500)


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_initial_state(env_id):
    env, _ = make(env_id)
    first = [env.reset(seed=s)[0] for s in (0, 1, 0)]
    np.testing.assert_array_equal(first[0], first[2])
    assert not np.array_equal(first[0], first[1])


@pytest.mark.parametrize("env_id,low,high", [
    (IDS[0], [0.0, -1.0], [0.0, 1.0]),
    (IDS[1], [-1.0, -2.0, math.pi - 1.0, -3.0], [1.0, 2.0, math.pi + 1.0, 3.0]),
    (IDS[3], [-0.16, -0.16], [-0.14, -0.14])])
def test_initial_states_cover_the_reset_distribution(env_id, low, high):
    env, _ = make(env_id)
    obs = np.array([env.reset(seed=s)[0] for s in range(400)])
    assert np.all(obs >= low) and np.all(obs <= high)
    spread = obs.max(0) - obs.min(0)
    np.testing.assert_allclose(spread, np.subtract(high, low), rtol=0.05)  # uniform: nearly all of it


def test_double_pendulum_reset_is_near_hanging():
    env, _ = make(IDS[2])
    obs = np.array([env.reset(seed=s)[0] for s in range(400)])
    angles = np.arctan2(obs[:, [0, 3]], obs[:, [1, 4]])
    np.testing.assert_allclose(angles.std(0), 0.1, rtol=0.15)  # θ1, θ2 ~ N(0, 0.1²)
    np.testing.assert_allclose(obs[:, [2, 5]].std(0), 0.01, rtol=0.15)


@pytest.mark.parametrize("env_id", IDS)
def test_task_metric_is_the_episode_return(env_id):
    env, _ = make(env_id)
    env.reset(seed=3)
    rng, total = np.random.default_rng(0), 0.0
    for _ in range(env.spec.max_episode_steps):
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        assert info["task_metric"] == pytest.approx(total)
        if terminated or truncated:
            break
    env.reset()
    _, reward, *_, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert info["task_metric"] == reward  # a new episode starts from zero


# --- sparse rewards and termination at their thresholds ----------------------------------------

def test_mountain_car_pays_and_ends_exactly_at_the_goal():
    env, _ = make(IDS[0])
    env.reset(seed=0)
    assert step_at_rest(env, x=0.59, x_dot=0.0) == (0.0, False)
    assert step_at_rest(env, x=0.6, x_dot=0.0) == (1.0, True)
    assert step_at_rest(env, x=-1.99, x_dot=0.0) == (0.0, False)
    assert step_at_rest(env, x=-2.0, x_dot=0.0) == (0.0, True)  # leaving on the left pays nothing


def test_cartpole_reward_needs_upright_and_on_track():
    env, _ = make(IDS[1])
    env.reset(seed=0)
    up, down = math.acos(0.81), math.acos(0.79)
    assert step_at_rest(env, x=0.0, x_dot=0.0, theta=down, theta_dot=0.0) == (0.0, False)
    assert step_at_rest(env, x=0.0, x_dot=0.0, theta=up, theta_dot=0.0) == (1.0, False)
    assert step_at_rest(env, x=0.0, x_dot=0.0, theta=-up + 4 * math.pi, theta_dot=0.0) == (1.0, False)
    assert step_at_rest(env, x=2.99, x_dot=0.0, theta=up, theta_dot=0.0) == (1.0, False)
    assert step_at_rest(env, x=-2.99, x_dot=0.0, theta=up, theta_dot=0.0) == (1.0, False)
    assert step_at_rest(env, x=3.01, x_dot=0.0, theta=up, theta_dot=0.0) == (0.0, True)
    assert step_at_rest(env, x=-3.01, x_dot=0.0, theta=down, theta_dot=0.0) == (0.0, True)


def _pose_with_tip_distance(d):
    """Link 1 upright and link 2 turned by φ: the tip is 2 sin(φ/2) from the target."""
    return dict(theta1=math.pi, theta2=math.pi + 2 * math.asin(d / 2), theta1_dot=0.0, theta2_dot=0.0)


def test_double_pendulum_reward_within_distance_one_of_upright():
    env, _ = make(IDS[2])
    env.reset(seed=0)
    assert step_at_rest(env, **_pose_with_tip_distance(0.99)) == (1.0, False)
    assert step_at_rest(env, **_pose_with_tip_distance(1.01)) == (0.0, False)
    assert step_at_rest(env, theta1=0.0, theta2=0.0, theta1_dot=0.0, theta2_dot=0.0) == (0.0, False)


def test_double_pendulum_uses_rllabs_mirrored_tip():
    """rllab's tip is the elbow minus (sin θ2, cos θ2). Both links tilted 0.6 rad the same way put
    the physical tip 1.18 from the target, rllab's straight above it (rewarded); a zig-zag does the
    opposite."""
    env, _ = make(IDS[2])
    env.reset(seed=0)
    a = math.pi - 0.6
    assert step_at_rest(env, theta1=a, theta2=a, theta1_dot=0.0, theta2_dot=0.0) == (1.0, False)
    assert step_at_rest(env, theta1=a, theta2=2 * math.pi - a, theta1_dot=0.0, theta2_dot=0.0) == (0.0, False)


@pytest.mark.parametrize("position,reward", [
    ((0.15, -0.079), -1.0), ((0.15, -0.081), -5 * 0.069), ((0.06, -0.15), -5 * 0.09),
    ((-0.06, -0.15), -1.0), ((0.15, -0.15), 0.0), ((0.24, -0.24), -5 * 0.18), ((0.15, 0.15), -1.0)])
def test_maze_reward_regions(position, reward):
    env, u = make(IDS[3])
    env.reset(seed=0)
    u.timestep = INSTANT
    u.x, u.y, u.x_dot, u.y_dot = *position, 0.0, 0.0
    _, r, terminated, _, _ = u.step(np.zeros(2, np.float32))
    assert r == pytest.approx(reward, abs=1e-12) and not terminated


@pytest.mark.parametrize("env_id", IDS)
def test_rewards_and_ends_agree_with_the_returned_observations(env_id):
    """Under random play, every reward and episode end is the paper's condition on the observation
    the same step returned (computed here from the observation alone)."""
    def condition(obs):
        if "MountainCar" in env_id:
            return float(obs[0] >= 0.6), obs[0] >= 0.6 or obs[0] <= -2
        if "Cartpole" in env_id:
            off = abs(obs[0]) > 3
            return (0.0 if off else float(math.cos(obs[2]) > 0.8)), off
        if "DoublePendulum" in env_id:  # rllab's tip from (sin, cos) of the absolute angles
            tip = (obs[0] - obs[3], -obs[1] - obs[4])
            return float(math.hypot(tip[0], tip[1] - 2) < 1), False
        inside = obs[0] > 0 and obs[1] < -0.08
        return (-5 * (abs(obs[0] - 0.15) + abs(obs[1] + 0.15)) if inside else -1.0), False

    env, u = make(env_id)
    rng = np.random.default_rng(1)
    seen = set()
    for episode in range(100):
        env.reset(seed=episode)
        if "Cartpole" in env_id and episode % 2:  # random play alone seldom swings the pole up
            u.set_state(0.0, 0.0, rng.uniform(-1, 1), 0.0)
        for _ in range(env.spec.max_episode_steps):
            action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            expected_reward, expected_end = condition(obs)
            assert reward == pytest.approx(expected_reward) and terminated == expected_end
            seen.add(reward)
            if terminated or truncated:
                break
    if "Cartpole" in env_id or "DoublePendulum" in env_id:
        assert seen == {0.0, 1.0}  # both sides of the threshold were visited


# --- dynamics: closed forms --------------------------------------------------------------------

def test_mountain_car_rests_on_the_track_and_gravity_pulls_to_the_floor():
    _, u = make(IDS[0])
    u.reset(seed=0)
    # level box on the floor: corners at x = ±0.2 on y = 1 - cos(πx/2), centre 0.1 + 0.015 above
    assert u.track.height(0.0) == pytest.approx(1 - math.cos(0.1 * math.pi) + 0.115, abs=1e-6)
    for x0, direction in ((0.3, -1), (-0.3, 1), (0.0, 0)):
        u.set_state(x0, 0.0)
        x = run(u, 3, lambda t: 0.0)[:, 0]
        assert np.sign(x[-1] - x0) == direction
    u.set_state(0.0, 0.0)
    assert run(u, 3, lambda t: 1.0)[-1, 0] > 0  # the force drives along the box's axis


def _mountain_car_energy(u):
    kinetic = 0.5 * 0.4 * (u.x_dot ** 2 + u.y_dot ** 2) + 0.5 * (0.4 * 0.2 / 12) * u.spin ** 2
    return kinetic + 0.4 * G * u.track.height(u.x)


def _cartpole_energy(u):
    mc, mp, l, j = 1.0, 0.1, 0.5, 0.1 * (1 + 0.01) / 12 + 0.1 * 0.25
    return (0.5 * (mc + mp) * u.x_dot ** 2 - mp * l * math.cos(u.theta) * u.x_dot * u.theta_dot
            + 0.5 * j * u.theta_dot ** 2 + mp * G * l * math.cos(u.theta))


def _double_pendulum_energy(u):
    m, i_c = 0.5, 0.5 * (1 + 0.01) / 12
    t1, t2, w1, w2 = u.theta1, u.theta2, u.theta1_dot, u.theta2_dot
    kinetic = (0.5 * (i_c + 1.25 * m) * w1 ** 2 + 0.5 * (i_c + 0.25 * m) * w2 ** 2
               + 0.5 * m * math.cos(t1 - t2) * w1 * w2)
    return kinetic - m * G * (1.5 * math.cos(t1) + 0.5 * math.cos(t2))


def _energy_at_rest(env_id):
    """The energy at rest at the bottom, so that losses are relative to the motion's energy."""
    return {IDS[0]: 0.4 * G * (1 - math.cos(0.1 * math.pi) + 0.115),
            IDS[1]: -0.1 * G * 0.5, IDS[2]: -0.5 * G * 2.0}[env_id]


@pytest.mark.parametrize("env_id,state,energy,seconds", [
    (IDS[0], dict(x=0.4, x_dot=0.0), _mountain_car_energy, 10.0),
    (IDS[1], dict(x=0.0, x_dot=0.5, theta=2.0, theta_dot=0.0), _cartpole_energy, 10.0),
    (IDS[2], dict(theta1=2.0, theta2=-1.0, theta1_dot=0.0, theta2_dot=0.0), _double_pendulum_energy, 5.0)])
def test_energy_is_conserved_to_first_order_in_the_timestep(env_id, state, energy, seconds):
    """Without control, friction or damping the only loss is the integrator's (Box2D's velocity
    projection, which takes half the energy of these swings in 10 s at the models' timesteps): it
    halves with the timestep, and is small at a fine one."""
    _, u = make(env_id)
    u.reset(seed=0)
    if "MountainCar" in env_id:
        u.friction = u.contact_damping = 0.0
    losses = []
    for h in (u.timestep / 16, u.timestep / 32):
        u.timestep = h
        u.set_state(**state)
        e0 = energy(u)
        for _ in range(int(round(seconds / (h * getattr(u, "frame_skip", 1))))):
            u.step(np.zeros(1, np.float32))
        losses.append((e0 - energy(u)) / (e0 - _energy_at_rest(env_id)))
    assert 0 < losses[1] < 0.1
    assert 1.6 < losses[0] / losses[1] < 2.2


def test_cartpole_small_oscillation_period():
    """Hanging pole, free cart: φ̈ = -ω² φ with ω² = m_p g l / (J - (m_p l)² / (m_c + m_p))."""
    _, u = make(IDS[1])
    u.reset(seed=0)
    mc, mp, l, j = 1.0, 0.1, 0.5, 0.1 * (1 + 0.01) / 12 + 0.1 * 0.25
    period = 2 * math.pi / math.sqrt(mp * G * l / (j - (mp * l) ** 2 / (mc + mp)))
    u.timestep = 0.001
    u.set_state(0.0, 0.0, math.pi + 0.01, 0.0)
    phi = run(u, 5000, lambda t: 0.0)[:, 2] - math.pi
    upward = np.flatnonzero((phi[:-1] < 0) & (phi[1:] >= 0))
    assert np.diff(upward).mean() * u.timestep == pytest.approx(period, rel=2e-3)


def test_cartpole_upright_is_unstable_and_hanging_is_stable():
    _, u = make(IDS[1])
    u.reset(seed=0)
    u.set_state(0.0, 0.0, 0.05, 0.0)
    assert run(u, 10, lambda t: 0.0)[-1, 2] > 0.1
    u.set_state(0.0, 0.0, math.pi, 0.0)
    np.testing.assert_allclose(run(u, 100, lambda t: 0.0)[-1], [0.0, 0.0, math.pi, 0.0], atol=1e-12)


def test_double_pendulum_motor_turns_the_links_apart_and_is_clipped():
    _, u = make(IDS[2])
    u.reset(seed=0)
    u.set_state(0.0, 0.0, 0.0, 0.0)
    obs = run(u, 1, lambda t: 10.0)[0]
    assert obs[5] > 0 > obs[2]  # +τ on link 2, -τ on link 1
    u.set_state(0.0, 0.0, 0.0, 0.0)
    clipped = run(u, 1, lambda t: 500.0)[0]
    u.set_state(0.0, 0.0, 0.0, 0.0)
    np.testing.assert_array_equal(clipped, run(u, 1, lambda t: 50.0)[0])


def test_double_pendulum_spins_are_capped_like_box2d():
    """Box2D turns a body at most π/2 per 0.01 s step: 157 rad/s."""
    _, u = make(IDS[2])
    u.reset(seed=0)
    u.frame_skip = 1  # one Box2D step: the next would start from a pose turned by 90°
    u.set_state(0.0, 0.0, 0.0, -300.0)
    assert run(u, 1, lambda t: 0.0)[0, 5] == pytest.approx(-0.5 * math.pi / 0.01)
    u.set_state(0.0, 0.0, 0.0, -150.0)
    assert run(u, 1, lambda t: 0.0)[0, 5] == pytest.approx(-150.0, abs=0.1)


# --- dynamics: against pybox2d 2.3.10 running rllab's models -----------------------------------

# (start state, control(t)) -> {step: (x, ẋ, θ, θ̇)} or {step: (θ1, θ̇1, θ2, θ̇2)}
BOX2D_CARTPOLE = [
    ((0.3, -0.5, 2.5, 1.0), lambda t: 0.0,
     {10: (0.0187, -0.5454, 3.6537, 1.9662), 25: (-0.2903, -0.3632, 2.7721, -2.2835),
      50: (-0.907, -0.4084, 3.6177, -1.4226), 100: (-2.0322, -0.5399, 2.8535, 1.8078)}),
    ((-0.2, 1.0, 3.5, -2.0), lambda t: 10 * math.sin(0.4 * t),
     {10: (0.9871, 2.9731, 1.8105, -2.1019), 25: (2.4263, 3.0105, 3.4317, 2.0135),
      50: (4.7947, 1.3251, 2.6836, 1.1618), 100: (9.8603, 2.6102, 3.821, 0.1184)})]
BOX2D_DOUBLE_PENDULUM = [
    ((2.0, -1.0, 0.0, 0.0), lambda t: 0.0,
     {10: (1.7419, -2.4386, -1.1068, -0.8883), 25: (0.6531, -4.7704, -0.7484, 5.0577)}),
    ((0.1, -0.1, 0.0, 0.0), lambda t: 20 * math.sin(0.5 * t),
     {10: (-0.4807, 0.3785, 2.0206, 10.1585), 25: (-0.3197, -0.7209, 4.9029, 4.4983)})]


def assert_follows_box2d(env_id, start, control, expected, tolerances):
    """Drive the unwrapped env from `start` with control(t); after each step listed in `expected`,
    compare the state coordinates named in `tolerances` ({attribute: (index in the expected
    tuple, tolerance)}) with pybox2d's values."""
    _, u = make(env_id)
    u.reset(seed=0)
    u.set_state(*start)
    for t in range(max(expected)):
        u.step(np.array([control(t)]))  # limits (the cart's track) are not enforced on the unwrapped env
        if t + 1 in expected:
            for name, (index, tolerance) in tolerances.items():
                assert abs(getattr(u, name) - expected[t + 1][index]) < tolerance, (t + 1, name)


@pytest.mark.parametrize("start,control,expected", BOX2D_CARTPOLE)
def test_cartpole_follows_box2d(start, control, expected):
    assert_follows_box2d(IDS[1], start, control, expected, {"x": (0, 0.01), "theta": (2, 0.03)})


@pytest.mark.parametrize("start,control,expected", BOX2D_DOUBLE_PENDULUM)
def test_double_pendulum_follows_box2d(start, control, expected):
    assert_follows_box2d(IDS[2], start, control, expected, {"theta1": (0, 0.05), "theta2": (2, 0.05)})


def test_mountain_car_loses_energy_like_box2d():
    """Box2D, launched at 2 m/s along the floor with no force: turning points 0.308, -0.235,
    0.169, -0.146; pushing with the velocity at full force from rest: the goal after 80 steps."""
    _, u = make(IDS[0])
    u.reset(seed=0)
    u.x, u.x_dot, u.y_dot, u.spin = 0.0, 2.0, 0.0, 0.0  # rllab's launch: no spin
    x = run(u, 120, lambda t: 0.0)[:, 0]
    x = x[np.r_[True, np.diff(x) != 0]]  # friction can hold the cart for a step at a turn
    turns = x[1:-1][np.diff(np.sign(np.diff(x))) != 0][:4]
    np.testing.assert_allclose(turns, [0.308, -0.235, 0.169, -0.146], atol=0.045)
    u.x, u.x_dot, u.y_dot, u.spin = 0.0, 0.0, 0.0, 0.0
    for steps in range(1, 501):
        if u.step(np.array([1.0 if u.x_dot >= 0 else -1.0]))[2]:
            break
    assert 70 <= steps <= 100


# --- EX2's maze against MuJoCo 3.3 --------------------------------------------------------------

MAZE_MJCF = """<mujoco><option timestep="0.01" gravity="0 0 0" integrator="Euler"/>
<default><joint limited="false" damping="1"/>
<geom contype="2" conaffinity="1" condim="1" density="1000" margin="0.002"/></default>
<worldbody><body pos="-0.15 -0.15 0"><geom type="sphere" size="0.03" contype="1"/>
<joint name="x" type="slide" axis="1 0 0"/><joint name="y" type="slide" axis="0 1 0"/></body>
<geom type="capsule" size=".02" fromto="-.3 -.3 .01 .3 -.3 .01"/>
<geom type="capsule" size=".02" fromto=".3 -.3 .01 .3 .3 .01"/>
<geom type="capsule" size=".02" fromto="-.3 .3 .01 .3 .3 .01"/>
<geom type="capsule" size=".02" fromto="-.3 -.3 .01 -.3 .3 .01"/>
<geom type="capsule" size=".02" fromto="0 -.3 .01 0 .05 .01"/></worldbody>
<actuator><motor joint="x" ctrlrange="-0.5 0.5" ctrllimited="true"/>
<motor joint="y" ctrlrange="-0.5 0.5" ctrllimited="true"/></actuator></mujoco>"""


def _maze_pair(seed):
    env, u = make(IDS[3])
    env.reset(seed=seed)
    model = mujoco.MjModel.from_xml_string(MAZE_MJCF)
    data = mujoco.MjData(model)
    data.qpos[:] = np.array([u.x, u.y]) - (-0.15, -0.15)  # joint offsets from the body's place
    data.qvel[:] = [u.x_dot, u.y_dot]
    return u, model, data


def _both_step(u, model, data, action):
    data.ctrl[:] = action
    for _ in range(2):  # EX2's frame skip
        mujoco.mj_step(model, data)
    obs = u.step(np.asarray(action, np.float32))[0]
    return obs, data.qpos + (-0.15, -0.15)


def test_maze_free_motion_matches_mujoco():
    u, model, data = _maze_pair(seed=4)
    assert model.body_mass[1] == pytest.approx(u.mass)
    rng = np.random.default_rng(0)
    for _ in range(60):  # stays clear of the walls from this start
        obs, reference = _both_step(u, model, data, rng.uniform(-0.6, 0.6, 2))
        np.testing.assert_allclose(obs, reference, atol=1e-8)
    assert data.ncon == 0


def test_maze_walls_stop_the_ball_where_mujoco_does():
    u, model, data = _maze_pair(seed=0)
    for push, steps in (((0.5, 0.0), 100), ((0.5, 0.5), 100), ((0.5, -0.5), 150)):
        for _ in range(steps):
            obs, reference = _both_step(u, model, data, push)
        np.testing.assert_allclose(obs, reference, atol=0.003)
    # pushed right, then up along the inner wall, over it, then down into the far corner
    np.testing.assert_allclose(obs, [0.25, -0.25], atol=1e-12)


def test_maze_inner_wall_blocks_the_direct_way():
    env, u = make(IDS[3])
    env.reset(seed=0)
    for _ in range(200):
        obs, reward, *_ = env.step(np.array([0.5, 0.0], np.float32))
        assert obs[0] <= -0.05 and reward == -1.0


# --- exact snapshots -----------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", IDS)
def test_snapshot_restore_reproduces_the_trajectory(env_id):
    """Mid-episode snapshot of a gymnasium.make'd env; replaying the same actions after restoring
    gives the same observations, rewards and ends bit for bit, across episode ends and resets."""
    env, _ = make(env_id)
    env.reset(seed=5)
    rng = np.random.default_rng(2)
    sample = lambda: rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)  # noqa: E731
    for _ in range(env.spec.max_episode_steps - 50):
        if any(env.step(sample())[2:4]):
            env.reset()
    actions = [sample() for _ in range(120)]  # crosses the time limit (or a termination)
    first = replay_after_restore(env, actions)
    assert any(len(step) == 1 for step in first)  # an episode ended and restarted
