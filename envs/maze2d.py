"""EX2's 2D maze: a point mass that must go round a wall to reach a target, in numpy.

Paper definition: docs/papers.md §4 — jcoreyes/ex2 `envs/twod_maze.py` (the
`Ex2TwoDMaze-v0` gym env of `exps/pointmass.py`), a MuJoCo model `envs/assets/twod_maze.xml`.
EX2 reports the average return, so `info["task_metric"]` is the return of the episode so far.
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TwoDMazeEnv(gym.Env):
    """EX2's `TwoDMaze`: reward -5·(|x - 0.15| + |y + 0.15|) (L1 distance to the target (0.15, -0.15),
    times 5) while x > 0 and y < -0.08, else -1; never done; 200 steps per episode (`pointmass.py`'s
    max_path_length).

    Geometry (`twod_maze.xml`): an arena with walls on the square of side 0.6 centred at the origin
    and one inner wall along x = 0 from y = -0.3 up to y = 0.05, all capsules of radius 0.02. The
    agent is a sphere of radius 0.03 (density 1000: 0.113 kg) on two slide joints with damping 1,
    no gravity. It starts at (-0.15, -0.15), left of the inner wall, and the target is at
    (0.15, -0.15), right of it: the way round passes above the wall's end, between y = 0.1 and 0.25.
    The reward region (x > 0, y < -0.08) is the lower part of the right-hand room; it pays less
    than -1 in the parts farther than 0.2 (L1) from the target.

    Note: `twod_maze.py` defines INIT_POS = (0.15, 0.15) but subtracts it from the joint positions
    to make the observation, and the model puts the body at (-0.15, -0.15): the observation is the
    position in the arena, and the episode starts at (-0.15, -0.15) (docs/papers.md §4 reads the
    constant as the start).

    Dynamics: MuJoCo timestep 0.01 s with frame skip 2 (0.02 s per step), Euler integration with
    the joint damping taken implicitly (as MuJoCo's Euler integrator does): per axis
    v ← (m v + h f) / (m + h c), then x ← x + h v. Control: motor forces in [-0.5, 0.5] N per axis
    (the actuators' ctrlrange; top speed f/c = 0.5 m/s, 0.01 m per step). Observation [x, y],
    unbounded as gym's MujocoEnv declared it.
    Reset: each coordinate U(-0.01, 0.01) around the start, each velocity U(-0.01, 0.01).

    Deviations: walls are hard and frictionless (the model's contacts are frictionless, condim 1):
    a step that ends inside a wall puts the ball back on its surface and removes the velocity into
    it. MuJoCo's contacts are soft and start 0.002 m early (geom margin), so there the ball stops
    within a few millimetres of where it stops here. Free motion matches MuJoCo 3.3 on the same
    model to 1e-8 (tests/test_envs_classic.py); EX2 ran MuJoCo 1.31.

    Random policy (uniform actions in [-0.5, 0.5]², 1000 episodes of 200 steps): success rate
    (entering the reward region at least once) 0.0%; every return is -200.
    """

    metadata = {"render_modes": []}
    timestep, frame_skip = 0.01, 2
    mass = 1000.0 * 4.0 / 3.0 * math.pi * 0.03 ** 3
    damping = 1.0
    ctrl_limit = 0.5
    start = (-0.15, -0.15)
    target = (0.15, -0.15)
    # where the ball's centre can be: the arena's inside less ball and wall radii (0.03 + 0.02)
    clearance = 0.05
    arena_half = 0.3 - clearance
    inner_wall_top = 0.05  # the inner wall is the segment x = 0, y from -0.3 to 0.05

    def __init__(self):
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = spaces.Box(-self.ctrl_limit, self.ctrl_limit, (2,), np.float32)
        self.x = self.y = self.x_dot = self.y_dot = 0.0
        self.episode_return = 0.0

    def _obs(self):
        return np.array([self.x, self.y])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        dx, dy = self.np_random.uniform(-0.01, 0.01, 2).tolist()
        self.x, self.y = self.start[0] + dx, self.start[1] + dy
        self.x_dot, self.y_dot = self.np_random.uniform(-0.01, 0.01, 2).tolist()
        self.episode_return = 0.0
        return self._obs(), {}

    def reward(self) -> float:
        if self.x > 0.0 and self.y < -0.08:
            return -5.0 * (abs(self.x - self.target[0]) + abs(self.y - self.target[1]))
        return -1.0

    def step(self, action):
        limit, h = self.ctrl_limit, self.timestep
        fx = min(max(float(action[0]), -limit), limit)
        fy = min(max(float(action[1]), -limit), limit)
        inertia = self.mass + h * self.damping
        for _ in range(self.frame_skip):
            self.x_dot = (self.mass * self.x_dot + h * fx) / inertia
            self.y_dot = (self.mass * self.y_dot + h * fy) / inertia
            self.x += h * self.x_dot
            self.y += h * self.y_dot
            self._collide()
        reward = self.reward()
        self.episode_return += reward
        return self._obs(), reward, False, False, {"task_metric": self.episode_return}

    def _collide(self):
        """Push the ball out of any wall it entered, keeping only the velocity along the wall."""
        edge = self.arena_half
        if abs(self.x) > edge:
            self.x, self.x_dot = math.copysign(edge, self.x), 0.0
        if abs(self.y) > edge:
            self.y, self.y_dot = math.copysign(edge, self.y), 0.0
        # inner wall: the nearest point of the segment x = 0, y <= top is (0, min(y, top))
        gap_y = max(self.y - self.inner_wall_top, 0.0)
        distance = math.hypot(self.x, gap_y)
        if distance >= self.clearance:
            return
        # (distance 0 would need a jump of 0.05 in one sub-step; the top speed gives 0.005)
        nx, ny = (self.x / distance, gap_y / distance) if distance > 0.0 else (1.0, 0.0)
        self.x = nx * self.clearance
        self.y = min(self.y, self.inner_wall_top) + ny * self.clearance
        into = self.x_dot * nx + self.y_dot * ny
        if into < 0.0:
            self.x_dot -= into * nx
            self.y_dot -= into * ny
