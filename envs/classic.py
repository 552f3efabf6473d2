"""VIME's sparse classic control tasks, re-simulated in numpy from rllab's Box2D models.

Paper definition: docs/papers.md §1.3 — openai/vime `envs/mountain_car_env_x.py`,
`cartpole_swingup_env_x.py` and `double_pendulum_env_x.py`, which put sparse rewards on rllab's
Box2D environments (rll/rllab `rllab/envs/box2d/*.py` and `models/*.xml.mako`). VIME plots the
episode return, so `info["task_metric"]` is the return of the episode so far.

Box2D is not a dependency, so each model is written down in its own generalised coordinates, with
the bodies of rllab's model file, and stepped the way Box2D's `b2Island::Solve` steps a world:
1. gravity and the control change the bodies' velocities (semi-implicit Euler, no sub-steps);
2. the joints (or the track's contacts) make the velocities consistent with the mechanism: the
   bodies' momentum is projected onto the motions the mechanism allows — the inelastic impulse
   that Box2D's velocity solver iterates towards;
3. the generalised positions advance with those velocities; Box2D's per-step cap on a body's
   rotation (π/2) applies first.
The body velocities are kept between steps, as Box2D keeps them: step 2 then also removes the part
of the motion that the previous step's straight-line advance took off the mechanism. That is
Box2D's first-order numerical damping, and it is large at these timesteps: a free swing loses about
half its energy in 10 s. It is what makes the trajectories follow Box2D's (a symplectic integrator
of the same equations drifts ten times further from pybox2d's cart-pole within 100 steps).

Shared facts: gravity 10 m/s² (pybox2d's `b2World` default; the models set none); the control is
clipped to the model's `ctrllimit` as rllab's `forward_dynamics` does, and the action space is
those raw bounds (the runner rescales the agent's [-1, 1] to them); observations are the model's
`<state>` list, bounded by ±1e6 like rllab's `Box2DEnv`. Deviations shared by the three: float64
instead of Box2D's float32; exact joints instead of Box2D's iterated impulses and position
corrections. Each class lists its own, and the checks made against pybox2d 2.3.10 running rllab's
models (a scratch install used only for that; the numbers are in tests/test_envs_classic.py).
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

GRAVITY = 10.0
OBS_BOUND = 1e6  # rllab's Box2DEnv.observation_space: Box(-BIG, BIG) with BIG = 1e6


def rotation_cap(timestep: float) -> float:
    """Box2D's b2_maxRotation: a body turns at most π/2 per step."""
    return 0.5 * math.pi / timestep


class _SparseRllabTask(gym.Env):
    """Shared bookkeeping: spaces, control clipping and the episode return as the task metric."""

    metadata = {"render_modes": []}
    obs_dim: int
    ctrl_limit: float

    def __init__(self):
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (self.obs_dim,), np.float64)
        self.action_space = spaces.Box(-self.ctrl_limit, self.ctrl_limit, (1,), np.float32)
        self.episode_return = 0.0

    def _control(self, action) -> float:
        return min(max(float(action[0]), -self.ctrl_limit), self.ctrl_limit)

    def _start(self):
        self.episode_return = 0.0
        return self._obs(), {}

    def _finish(self, reward: float, terminated: bool):
        self.episode_return += reward
        return self._obs(), reward, terminated, False, {"task_metric": self.episode_return}


# --- MountainCar -------------------------------------------------------------------------------


def track_height(x):
    """rllab's `sine_chain` track (height 1, width 4) placed at y = 1: y = 1 - cos(πx/2) on [-2, 2]."""
    return 1.0 - np.cos(0.5 * np.pi * x)


class CartOnTrack:
    """Pose of the cart (a box) riding on the track with both bottom corners on it, as a function
    of the x of its centre (what rllab observes), tabulated once on a uniform grid.

    The track is concave for |x| < 1, so the flat-bottomed box touches it at its two bottom corners
    and has one degree of freedom. For each position of the left corner, the right corner is found
    on the track at the box's width, which gives the box's angle θ and its centre, `lift` above the
    corners' chord. Columns, for the step: cos θ, sin θ, y'(x), θ'(x) and the generalised mass
    M(x) = m (1 + y'²) + I θ'² (the kinetic energy is ½ M ẋ²).

    Beyond the inflection points (|x| > 1) Box2D would not keep both corners down, but the cart
    cannot get there (see `SparseMountainCarEnv`); the table covers the whole track regardless.
    """

    def __init__(self, mass, inertia, width, lift, n_corner=20001, grid_step=1e-3):
        left = np.linspace(-2.0, 2.0 - width, n_corner)
        lo, hi = left.copy(), left + width  # bisection for the right corner at distance `width`
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            too_close = np.hypot(mid - left, track_height(mid) - track_height(left)) < width
            lo, hi = np.where(too_close, mid, lo), np.where(too_close, hi, mid)
        right = 0.5 * (lo + hi)
        theta = np.arctan2(track_height(right) - track_height(left), right - left)
        xc = 0.5 * (left + right) - lift * np.sin(theta)
        yc = 0.5 * (track_height(left) + track_height(right)) + lift * np.cos(theta)
        assert np.all(np.diff(xc) > 0), "the centre's x must parametrise the pose"

        # derivatives along the smooth corner parametrisation, then the chain rule to d/dx
        dxc = np.gradient(xc, left)
        dy, dtheta = np.gradient(yc, left) / dxc, np.gradient(theta, left) / dxc
        big_m = mass * (1.0 + dy ** 2) + inertia * dtheta ** 2
        self.x0, self.grid_step = float(xc[0]), grid_step
        grid = np.arange(xc[0], xc[-1], grid_step)
        columns = (np.cos(theta), np.sin(theta), dy, dtheta, big_m)
        # The step reads these at one x per call: Python lists of tuples index fastest.
        self.rows = list(zip(*(np.interp(grid, xc, c).tolist() for c in columns)))
        self.centre_x, self.centre_y = xc, yc

    def height(self, x):
        """Height of the centre at centre x (the potential energy is m g height)."""
        return np.interp(x, self.centre_x, self.centre_y)

    def at(self, x: float):
        """(cos θ, sin θ, y', θ', M) at centre x, interpolated linearly (clamped to the track)."""
        s = (x - self.x0) / self.grid_step
        i = min(max(int(s), 0), len(self.rows) - 2)
        t = min(max(s - i, 0.0), 1.0)
        return [p + t * (q - p) for p, q in zip(self.rows[i], self.rows[i + 1])]


class SparseMountainCarEnv(_SparseRllabTask):
    """VIME's sparse MountainCar (`MountainCarEnvX`), docs/papers.md §1.3: reward 1 on the step the
    cart's centre reaches x ≥ 0.6, which ends the episode; 0 otherwise. Limit 500 steps.

    Model (rllab `box2d/models/mountain_car.xml.mako`): a 0.4 x 0.2 m box of density 5 (0.4 kg) on
    the track y = 1 - cos(πx/2), x ∈ [-2, 2] (width 4). Timestep 0.05 s, frame skip 1. Control: a
    force in [-1, 1] N along the box's own x axis at its centre. Contact friction √(0.0005 · 0.2) =
    0.01 (Box2D mixes the cart's 0.0005 with the track's default 0.2), Coulomb: at most 0.01 times
    the normal impulse of the step. The box rides 0.015 m above the track: both shapes carry Box2D's
    0.01 m polygon skin, less the 0.005 m overlap (b2_linearSlop) its solver tolerates. Observation
    [x, ẋ] of the box's centre. Reset as rllab: the box at the valley floor, velocity (ẋ, 0) with
    ẋ ~ U(-1, 1) and no spin (so the first step loses the rotation the track imposes).

    Left edge: rllab also ends the episode when |x| ≥ 2, and its reward is `is_current_done()`, so
    leaving the track on the left would pay 1 too. Here leaving on the left (x ≤ -2) ends the episode
    with reward 0: the reward marks the goal only. In practice neither can happen: x = -1 (still
    short of the edge) lies 1.05 m above the rest pose, the goal 0.45 m; a cart that fell short of
    the goal starts its leftward swing with less than the goal's energy, and 1 N over the 2.3 m of
    track from x = 0.6 to x = -1 adds at most 2.3 J, less than the 2.4 J between the two heights.

    Against pybox2d on rllab's model, the two-corner pose matches Box2D's (centre height within
    about 0.005 m, angle within 0.05 rad: Box2D's box rocks a little between its corners), but
    Box2D's contact solver loses more energy than the projection alone. `contact_damping` (the
    velocity lost per step, 2%) is fitted to it: the turning points of a free swing launched at
    2 m/s are within 0.04 m of Box2D's, and pushing with the velocity at full force reaches the
    goal in 77-98 steps (Box2D: 74-112; 42-83 without the damping). This fitted loss is the one
    part of the model that is not rllab's mechanics.

    Random policy (uniform actions in [-1, 1], 1000 episodes of 500 steps): success rate 0.0%
    (leftmost x reached: -0.25); also 0.0% with each action held for 5, 10 or 20 steps, as in
    Box2D (without the fitted damping, holding for 10 steps succeeded 4.3% of the time).
    """

    obs_dim, ctrl_limit = 2, 1.0
    timestep = 0.05
    mass = 0.4 * 0.2 * 5.0
    inertia = mass * (0.4 ** 2 + 0.2 ** 2) / 12.0
    friction = math.sqrt(0.0005 * 0.2)
    goal_x, left_edge = 0.6, -2.0
    contact_damping = 0.02  # per step; fitted to pybox2d's losses (see the docstring)
    track = CartOnTrack(mass, inertia, width=0.4, lift=0.1 + 0.015)

    def __init__(self):
        super().__init__()
        # the box's centre x and its Box2D body velocity (linear x, y and angular)
        self.x = self.x_dot = self.y_dot = self.spin = 0.0

    def _obs(self):
        return np.array([self.x, self.x_dot])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        # as rllab: at the floor, body velocity (ẋ, 0) and no spin; the first step's projection
        # onto the track then takes away the share of the momentum the box's turning needs
        self.x, self.x_dot, self.y_dot, self.spin = 0.0, float(self.np_random.uniform(-1.0, 1.0)), 0.0, 0.0
        return self._start()

    def set_state(self, x: float, x_dot: float):
        """Put the cart at centre x, moving along the track with horizontal speed x_dot."""
        _, _, dy, dtheta, _ = self.track.at(x)
        self.x, self.x_dot, self.y_dot, self.spin = x, x_dot, x_dot * dy, x_dot * dtheta

    def step(self, action):
        h, m, force = self.timestep, self.mass, self._control(action)
        cos, sin, dy, dtheta, big_m = self.track.at(self.x)
        vx = self.x_dot + h * force * cos / m
        vy = self.y_dot + h * (force * sin / m - GRAVITY)
        # the track keeps the part of the momentum along the pose's tangent (1, y', θ')
        x_dot = (m * (vx + vy * dy) + self.inertia * self.spin * dtheta) / big_m
        # Coulomb friction: an impulse along the track of at most μ times the normal one (the
        # momentum the track just took away), which can stop the cart but not reverse it
        normal_impulse = m * math.hypot(vx - x_dot, vy - x_dot * dy)
        stop = self.friction * normal_impulse * math.sqrt(1.0 + dy * dy) / big_m
        x_dot -= math.copysign(min(abs(x_dot), stop), x_dot)
        x_dot *= 1.0 - self.contact_damping  # Box2D's further contact losses, fitted
        self.x += h * x_dot
        # the body keeps the velocity it had along the pose where the track was solved
        self.x_dot, self.y_dot, self.spin = x_dot, x_dot * dy, x_dot * dtheta
        at_goal = self.x >= self.goal_x
        return self._finish(1.0 if at_goal else 0.0, at_goal or self.x <= self.left_edge)


# --- CartpoleSwingup ---------------------------------------------------------------------------


class SparseCartpoleSwingupEnv(_SparseRllabTask):
    """VIME's sparse cart-pole swing-up (`CartpoleSwingupEnvX`), docs/papers.md §1.3: reward 1 at each
    step where cos θ > 0.8 and |x| ≤ 3, else 0; the episode ends (reward 0) when |x| > 3. Limit 500.

    Model (rllab `box2d/models/cartpole.xml.mako`): a 4/√12 x 3/√12 m cart of density 1 (1 kg) on a
    prismatic joint along the track; a 0.1 x 1 m pole of density 1 (0.1 kg) hinged by its end to the
    top of the cart; θ = 0 upright, counter-clockwise positive, not wrapped (Box2D's body angle).
    Timestep 0.05 s, frame skip 1. Control: a horizontal force in [-10, 10] N on the cart's centre.
    Frictionless: the fixtures' friction coefficients act only in contacts, and there are none
    (pole and track share collision group -1, and jointed bodies do not collide). Observation
    [x, ẋ, θ, θ̇]. Reset: x ~ U(-1, 1), ẋ ~ U(-2, 2), θ ~ U(π-1, π+1), θ̇ ~ U(-3, 3), with the pole's
    centre moving with the cart and the spin.

    Deviation: rllab's reset set only the cart's position and velocity and the pole's angle and
    spin; the pole's centre of mass stayed at rest and its pivot at x = 0. Box2D's joint solver then
    shared the momentum between cart and pole and dragged the pole onto the cart over the first
    steps, turning it by up to ~0.8 rad when |x| is near 1 (measured with pybox2d). Here the sampled
    state is the state. Box2D's linear speed cap (40 m/s) cannot be reached on a 6 m track.
    Against pybox2d from states where the pole starts on the cart: θ within 0.03 rad and x within
    0.01 m over 100 steps (5 s), without force and with a sinusoidal one.

    Random policy (uniform actions in [-10, 10], 1000 episodes): success rate (at least one rewarded
    step) 0.0%; episodes end at the track's edge after 72 steps on average (pybox2d with rllab's
    reset: 0.0%, 74 steps).
    """

    obs_dim, ctrl_limit = 4, 10.0
    timestep = 0.05
    cart_mass = (4.0 / 12 ** 0.5) * (3.0 / 12 ** 0.5) * 1.0
    pole_mass = 0.1 * 1.0 * 1.0
    pole_com = 0.5  # pivot to the pole's centre of mass
    pole_inertia = pole_mass * (1.0 ** 2 + 0.1 ** 2) / 12.0  # about its centre of mass
    max_cart_pos = 3.0
    min_cos_reward = 0.8

    def __init__(self):
        super().__init__()
        self.x = self.theta = 0.0
        # Box2D body velocities: the cart's x_dot, the pole's spin theta_dot and its centre's velocity
        self.x_dot = self.theta_dot = self.pole_vx = self.pole_vy = 0.0

    def _obs(self):
        return np.array([self.x, self.x_dot, self.theta, self.theta_dot])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        low, high = (-1.0, -2.0, math.pi - 1.0, -3.0), (1.0, 2.0, math.pi + 1.0, 3.0)
        self.set_state(*self.np_random.uniform(low, high).tolist())
        return self._start()

    def set_state(self, x: float, x_dot: float, theta: float, theta_dot: float):
        """Put the mechanism in this state, the pole's centre moving with the cart and the spin."""
        l = self.pole_com
        self.x, self.x_dot, self.theta, self.theta_dot = x, x_dot, theta, theta_dot
        self.pole_vx, self.pole_vy = x_dot - l * math.cos(theta) * theta_dot, -l * math.sin(theta) * theta_dot

    def step(self, action):
        h, mc, mp, l, j = self.timestep, self.cart_mass, self.pole_mass, self.pole_com, self.pole_inertia
        cart_vx = self.x_dot + h * self._control(action) / mc
        pole_vy = self.pole_vy - h * GRAVITY
        sin, cos = math.sin(self.theta), math.cos(self.theta)
        # momentum along the generalised coordinates (x, θ); the pole's centre is at
        # (x - l sin θ, y + l cos θ), so it moves with (ẋ - l cos θ θ̇, -l sin θ θ̇)
        p_x = mc * cart_vx + mp * self.pole_vx
        p_theta = -mp * l * (cos * self.pole_vx + sin * pole_vy) + j * self.theta_dot
        # solve [[mc + mp, -mp l cos θ], [-mp l cos θ, J + mp l²]] [ẋ, θ̇] = [p_x, p_θ]
        a, b, d = mc + mp, -mp * l * cos, j + mp * l * l
        det = a * d - b * b
        x_dot = (d * p_x - b * p_theta) / det
        cap = rotation_cap(h)
        theta_dot = min(max((a * p_theta - b * p_x) / det, -cap), cap)
        self.x += h * x_dot
        self.theta += h * theta_dot
        # the bodies keep the velocities they had at the pose where the joints were solved
        self.x_dot, self.theta_dot = x_dot, theta_dot
        self.pole_vx, self.pole_vy = x_dot - l * cos * theta_dot, -l * sin * theta_dot
        if abs(self.x) > self.max_cart_pos:
            return self._finish(0.0, True)
        return self._finish(1.0 if math.cos(self.theta) > self.min_cos_reward else 0.0, False)


# --- DoublePendulum ----------------------------------------------------------------------------


class SparseDoublePendulumEnv(_SparseRllabTask):
    """VIME's sparse double pendulum (`DoublePendulumEnvX`), docs/papers.md §1.3: reward 1 at each step
    where rllab's tip point is within distance 1 of the upright target (0, 2); never done. Limit 500.

    A CONTROL task, not an exploration one: random play finds the reward in almost every episode (96%
    here, 93% in VIME's Box2D version; the numbers are below), so no bonus is needed to find it. VIME
    ran it among its sparse tasks and `+experiment=vime_classic` keeps it, labelled a control.

    Model (rllab `box2d/models/double_pendulum.xml.mako`, link_len 1): two 0.1 x 1 m links of
    density 5 (0.5 kg each), the first hinged at the origin, the second at the first one's end;
    absolute angles θ1, θ2 with 0 hanging down, counter-clockwise positive. Timestep 0.01 s, frame
    skip 2 (0.1 s per step). Control: a torque in [-50, 50] N·m at the elbow (+τ on link 2, -τ on
    link 1: rllab drives the joint's motor towards ±1e5 rad/s with at most |τ|, which always
    saturates); the shoulder is passive; no friction or damping. Observation
    [sin θ1, cos θ1, θ̇1, sin θ2, cos θ2, θ̇2]. Reset: θ1, θ2 ~ N(0, 0.1²), θ̇1, θ̇2 ~ N(0, 0.01²).

    rllab's tip point is the elbow minus (sin θ2, cos θ2): the end of link 2 mirrored about the
    vertical through the elbow (the physical end is the elbow plus (sin θ2, -cos θ2)). We keep that
    definition, the reward VIME learned from; the two agree when link 1 is upright.

    Box2D's rotation cap (π/2 per 0.01 s step, 157 rad/s) is applied; random play stays below
    60 rad/s, as in Box2D. Deviations: rllab's reset turned both links about their own origins and
    left their centres of mass at rest, which opened the elbow by about 0.1 m until Box2D's position
    solver closed it; here the links start joined. Box2D's linear speed cap (200 m/s per body) is
    not applied (it needs both links near the rotation cap at once). Against pybox2d from states
    where the links start joined: both angles within 0.05 rad over 25 steps (2.5 s), without torque
    and with a sinusoidal one; the motion is chaotic, so longer runs part.

    Random policy (uniform actions in [-50, 50], 1000 episodes): success rate (at least one rewarded
    step) 96.4%; mean return 20.9 ± 12.8 (pybox2d, 300 episodes: 92.7%, 20.9 ± 13.0).
    """

    obs_dim, ctrl_limit = 6, 50.0
    timestep, frame_skip = 0.01, 2
    link_mass, link_len = 0.1 * 1.0 * 5.0, 1.0
    link_inertia = link_mass * (1.0 ** 2 + 0.1 ** 2) / 12.0  # about the link's centre
    target_radius = 1.0

    def __init__(self):
        super().__init__()
        self.theta1 = self.theta2 = 0.0
        # Box2D body velocities: spins, and the velocities of the links' centres of mass
        self.theta1_dot = self.theta2_dot = 0.0
        self.com1_vx = self.com1_vy = self.com2_vx = self.com2_vy = 0.0

    def _obs(self):
        t1, t2 = self.theta1, self.theta2
        return np.array([math.sin(t1), math.cos(t1), self.theta1_dot,
                         math.sin(t2), math.cos(t2), self.theta2_dot])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.set_state(*(self.np_random.standard_normal(4) * (0.1, 0.1, 0.01, 0.01)).tolist())
        return self._start()

    def set_state(self, theta1: float, theta2: float, theta1_dot: float, theta2_dot: float):
        """Put the mechanism in this state, the links' centres moving with the spins."""
        self.theta1, self.theta2 = theta1, theta2
        self._move_links(theta1_dot, theta2_dot, math.cos(theta1), math.sin(theta1),
                         math.cos(theta2), math.sin(theta2))

    def _move_links(self, w1, w2, c1, s1, c2, s2):
        """Body velocities of the links turning at w1, w2 in the pose (cos, sin of θ1, θ2): link 1's
        centre moves with (L/2) θ̇1 (cos θ1, sin θ1), link 2's with that of the elbow,
        L θ̇1 (cos θ1, sin θ1), plus (L/2) θ̇2 (cos θ2, sin θ2)."""
        L, half = self.link_len, 0.5 * self.link_len
        self.theta1_dot, self.theta2_dot = w1, w2
        self.com1_vx, self.com1_vy = half * c1 * w1, half * s1 * w1
        self.com2_vx, self.com2_vy = L * c1 * w1 + half * c2 * w2, L * s1 * w1 + half * s2 * w2

    def tip_distance(self) -> float:
        """Distance from rllab's tip point to the target (0, 2·link_len)."""
        L = self.link_len
        tip_x = L * math.sin(self.theta1) - L * math.sin(self.theta2)
        tip_y = -L * math.cos(self.theta1) - L * math.cos(self.theta2)
        return math.hypot(tip_x, tip_y - 2.0 * L)

    def step(self, action):
        tau, h = self._control(action), self.timestep
        m, L, i_c, cap = self.link_mass, self.link_len, self.link_inertia, rotation_cap(h)
        half = 0.5 * L
        m11, m22 = i_c + 1.25 * m * L * L, i_c + 0.25 * m * L * L
        for _ in range(self.frame_skip):
            w1 = self.theta1_dot - h * tau / i_c  # the motor's torque pair
            w2 = self.theta2_dot + h * tau / i_c
            vy1, vy2 = self.com1_vy - h * GRAVITY, self.com2_vy - h * GRAVITY
            s1, c1 = math.sin(self.theta1), math.cos(self.theta1)
            s2, c2 = math.sin(self.theta2), math.cos(self.theta2)
            # momentum along (θ1, θ2), with the centres' motions of `_move_links`
            p1 = (i_c * w1 + m * half * (c1 * self.com1_vx + s1 * vy1)
                  + m * L * (c1 * self.com2_vx + s1 * vy2))
            p2 = i_c * w2 + m * half * (c2 * self.com2_vx + s2 * vy2)
            m12 = m * L * half * (c1 * c2 + s1 * s2)
            det = m11 * m22 - m12 * m12
            w1 = min(max((m22 * p1 - m12 * p2) / det, -cap), cap)
            w2 = min(max((m11 * p2 - m12 * p1) / det, -cap), cap)
            self._move_links(w1, w2, c1, s1, c2, s2)  # at the pose where the joints were solved
            self.theta1 += h * w1
            self.theta2 += h * w2
        return self._finish(1.0 if self.tip_distance() < self.target_radius else 0.0, False)
