"""rllab's Gather tasks: SwimmerGather (VIME, #Exploration, EX2, EMI) and AntGather.

Implements docs/papers.md §1.1 (rllab `gather_env.py`, `swimmer_gather_env.py`, `swimmer_env.py`, at
rll/rllab@ba78e4c) on the official `mujoco` bindings:

- A robot in a 14 × 14 arena (walls at ±7) with 8 apples and 8 bombs placed at distinct points of
  the even grid {−6, −4, −2, 0, 2, 4}² without (0, 0), apples first. Reward per step: +1 per apple
  and −1 per bomb whose squared distance to the robot's centre of mass (the torso's subtree COM) is
  below 1; caught objects disappear; the episode terminates when all 16 are gone. No locomotion
  reward (rllab's `coef_inner_rew = 0`).
- Observation: the robot's own observation, then 10 apple and 10 bomb sensor bins spanning
  [−π/2, π/2] around the robot's heading; a bin reads 1 − d/6 for its nearest object within range 6
  (nearer objects hide farther ones), 0 when empty.
- `info["task_metric"]`: apples − bombs caught so far in the episode (rllab's `Gather_AverageReturn`,
  the number the papers report).

SwimmerGather: rllab's swimmer (`assets/swimmer_gather.xml`; timestep 0.001 s, 50 substeps per step,
motors ±50 with the raw ±50 action space), robot observation qpos(5) + qvel(5) + COM(3): 33-D in all.

AntGather (docs/papers.md specifies only the Gather logic; the rest is assumed from rllab's `ant_env.py`,
`ant_gather_env.py` and `ant.xml`): rllab's ant (`assets/ant_gather.xml`; RK4, timestep 0.02 s, one
substep, motors ±150), robot observation qpos(15) + qvel(14) + clip(cfrc_ext, −1, 1)(14 bodies × 6)
+ torso rotation matrix(9) + COM(3) = 125, so 145-D in all; heading = the yaw of the torso's x axis.
The ant dies when its torso leaves heights [0.2, 1.0]: that step pays rllab's `dying_cost` −10
(no object is caught on it) and terminates the episode; the task metric does not count it.

Deviations from rllab (all forced by the port or measure-zero):
- MuJoCo 3.3 instead of 1.31: rllab's `collision="predefined"` (no contact at all for the swimmer)
  becomes `<flag contact="disable"/>`; the solver, fluid model and contact model are MuJoCo 3's.
- Object placement draws 16 distinct grid points from `self.np_random` in one call. rllab redraws
  uniform grid points from numpy's global RNG until 16 distinct ones are found; the distribution of
  layouts is the same (each object uniform over the points still free), the random stream is not.
- The bin of an object is computed from its bearing relative to the span's right edge rather than
  from rllab's bearing wrapped into (−π, π]: the same bins, except that rounding may differ for an
  object within ~1e-15 rad of a bin's edge. An object exactly on the span's left edge (+π/2) goes in
  the last bin; rllab indexes one past the end there and crashes.
- The reset noise (qpos + N(0, 0.01²), qvel + N(0, 0.1²), rllab's `MujocoEnv.reset_mujoco`) comes
  from `self.np_random` instead of numpy's global RNG.
- `info` holds only `task_metric`, not rllab's per-step `inner_rew` / `outer_rew`.

Speed: the swimmer's 50 physics substeps per step (rllab's timestep 0.001 s) cost about 75 µs, so
SwimmerGather steps at roughly 0.45× the rate of Swimmer-v5 (4 RK4 substeps of 0.01 s); see
`python -m runner.bench_envs`.
"""
from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco import MujocoEnv

ASSETS = Path(__file__).resolve().parent / "assets"


class GatherEnv(MujocoEnv):
    """The Gather logic on any robot; subclasses name the model and the robot's own observation.

    Object state lives in plain arrays (`object_xy`, `object_alive`) and a float (`task_metric`), so
    runner.env_state's snapshots restore it together with the MjData."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"]}
    MODEL_FILE: str
    FRAME_SKIP: int

    def __init__(self, n_apples: int = 8, n_bombs: int = 8, activity_range: float = 6.0,
                 robot_object_spacing: float = 2.0, catch_range: float = 1.0, n_bins: int = 10,
                 sensor_range: float = 6.0, sensor_span: float = math.pi, dying_cost: float = -10.0,
                 render_mode: str | None = None, width: int = 480, height: int = 480):
        self.n_apples, self.n_bombs, self.n_bins = n_apples, n_bombs, n_bins
        self.catch_range, self.sensor_range, self.sensor_span = catch_range, sensor_range, sensor_span
        self.dying_cost = dying_cost
        # rllab draws randint(-range/2, range/2) * 2 per coordinate and rejects points closer than
        # robot_object_spacing to the origin: with the defaults, the 35 points of {-6..4 step 2}² but (0, 0).
        half = int(activity_range / 2)
        grid = np.array([(2.0 * x, 2.0 * y) for x in range(-half, half) for y in range(-half, half)])
        self.object_candidates = grid[(grid ** 2).sum(1) >= robot_object_spacing ** 2]
        n_objects = n_apples + n_bombs
        if n_objects > len(self.object_candidates):
            raise ValueError(f"{n_objects} objects do not fit on {len(self.object_candidates)} grid points")
        self.object_reward = np.r_[np.ones(n_apples), -np.ones(n_bombs)]  # apples first, as in rllab
        self.object_bin_offset = np.r_[np.zeros(n_apples, np.intp), np.full(n_bombs, n_bins, np.intp)]
        self.object_xy = np.zeros((n_objects, 2))
        self.object_alive = np.zeros(n_objects, bool)
        self.task_metric = 0.0
        super().__init__(str(ASSETS / self.MODEL_FILE), self.FRAME_SKIP, observation_space=None,
                         render_mode=render_mode, width=width, height=height,
                         default_camera_config={"distance": 25.0, "elevation": -90.0, "azimuth": 90.0,
                                                "lookat": np.zeros(3)})
        self.metadata = {**self.metadata, "render_fps": round(1 / self.dt)}
        self.torso = self.model.body("torso").id
        if self.model.nkey:  # a keyframe holds rllab's init_qpos where it differs from the model's pose
            self.init_qpos = self.model.key_qpos[0].copy()
        n_obs = self._robot_obs().size + 2 * n_bins
        self.observation_space = spaces.Box(-np.inf, np.inf, (n_obs,), np.float64)

    # --- robot-specific parts -------------------------------------------------------------------
    def _refresh(self) -> None:
        """Recompute the derived quantities the observation reads after the state changed (rllab
        calls mj_forward after its substeps; mj_step leaves them at the pre-integration state)."""
        raise NotImplementedError

    def _robot_obs(self) -> np.ndarray:
        raise NotImplementedError

    def _heading(self) -> float:
        raise NotImplementedError

    def _robot_died(self) -> bool:
        return False

    # --- gymnasium API ----------------------------------------------------------------------------
    def reset_model(self) -> np.ndarray:
        n_objects, n_candidates = len(self.object_xy), len(self.object_candidates)
        self.object_xy = self.object_candidates[self.np_random.choice(n_candidates, n_objects, replace=False)]
        self.object_alive = np.ones(n_objects, bool)
        self.task_metric = 0.0
        self.data.qpos[:] = self.init_qpos + 0.01 * self.np_random.standard_normal(self.model.nq)
        self.data.qvel[:] = self.init_qvel + 0.1 * self.np_random.standard_normal(self.model.nv)
        self._refresh()
        return self._get_obs()

    def step(self, action):
        self.data.ctrl[:] = action  # MuJoCo clamps to ctrlrange, as rllab's MuJoCo did
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        self._refresh()
        if self._robot_died():
            return self._get_obs(), self.dying_cost, True, False, {"task_metric": self.task_metric}
        dx, dy = self._object_offsets()
        dist2 = dx * dx + dy * dy
        caught = self.object_alive & (dist2 < self.catch_range ** 2)
        reward = 0.0
        if caught.any():
            reward = float(self.object_reward[caught].sum())
            self.object_alive = self.object_alive & ~caught
            self.task_metric += reward
        obs = np.concatenate([self._robot_obs(), self._readings(dx, dy, dist2)])
        if self.render_mode == "human":
            self.render()
        return obs, reward, not self.object_alive.any(), False, {"task_metric": self.task_metric}

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self._robot_obs(), self.sensor_readings()])

    def _object_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """x and y of every object (caught ones too) relative to the robot's COM."""
        com = self.data.subtree_com[self.torso]
        return self.object_xy[:, 0] - com[0], self.object_xy[:, 1] - com[1]

    def sensor_readings(self) -> np.ndarray:
        """10 apple bins then 10 bomb bins: 1 − d/range of the nearest visible object in each."""
        dx, dy = self._object_offsets()
        return self._readings(dx, dy, dx * dx + dy * dy)

    def _readings(self, dx: np.ndarray, dy: np.ndarray, dist2: np.ndarray) -> np.ndarray:
        readings = np.zeros(2 * self.n_bins)
        dist = np.sqrt(dist2)
        # Bearing measured from the span's right edge (heading − span/2), in [0, 2π): the object is
        # in the span when it is at most `span`, and its bin is that angle / bin width. rllab wraps
        # the bearing into (−π, π] and adds span/2: the same bins, up to rounding at a bin's edge.
        angle = np.arctan2(dy, dx)
        angle -= self._heading() - 0.5 * self.sensor_span
        angle %= 2 * math.pi
        seen = self.object_alive & (dist <= self.sensor_range) & (angle <= self.sensor_span)
        bins = (angle[seen] * (self.n_bins / self.sensor_span)).astype(np.intp)
        np.minimum(bins, self.n_bins - 1, out=bins)  # an object exactly on the left edge
        # the nearest object of a bin has the highest intensity: it occludes the others
        np.maximum.at(readings, self.object_bin_offset[seen] + bins, 1.0 - dist[seen] / self.sensor_range)
        return readings

    def render(self):
        """The robot, plus the remaining apples (green) and bombs (red) as spheres."""
        viewer = self.mujoco_renderer._get_viewer(self.render_mode)
        for (x, y), reward in zip(self.object_xy[self.object_alive], self.object_reward[self.object_alive]):
            viewer.add_marker(type=mujoco.mjtGeom.mjGEOM_SPHERE, pos=np.array([x, y, 0.0]),
                              size=np.full(3, 0.4),
                              rgba=np.array([0, 1, 0, 1] if reward > 0 else [1, 0, 0, 1], float))
        return super().render()


class SwimmerGatherEnv(GatherEnv):
    """rllab's SwimmerGatherEnv (docs/papers.md §1.1): 33-D observation, 2-D action in [−50, 50]."""

    MODEL_FILE = "swimmer_gather.xml"
    FRAME_SKIP = 50  # rllab swimmer.xml's numeric "frame_skip": 50 × 0.001 s per env step

    def _refresh(self) -> None:
        mujoco.mj_kinematics(self.model, self.data)  # body poses, then the subtree COMs
        mujoco.mj_comPos(self.model, self.data)

    def _robot_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel, self.data.subtree_com[self.torso]])

    def _heading(self) -> float:
        return self.data.qpos[2]  # rllab's ORI_IND = 2: the torso's yaw hinge


class AntGatherEnv(GatherEnv):
    """rllab's AntGatherEnv: 145-D observation, 8-D action in [−150, 150] (see the module docstring)."""

    MODEL_FILE = "ant_gather.xml"
    FRAME_SKIP = 1  # rllab's ant.xml has no frame_skip numeric

    def _refresh(self) -> None:
        # the observation reads contact forces (cfrc_ext), which need the whole forward pass
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_rnePostConstraint(self.model, self.data)

    def _robot_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel, np.clip(self.data.cfrc_ext, -1, 1).ravel(),
                               self.data.xmat[self.torso], self.data.subtree_com[self.torso]])

    def _heading(self) -> float:
        # yaw of the torso's x axis rotated by the root quaternion (rllab's AntEnv.get_ori)
        w, x, y, z = self.data.qpos[3:7]
        return math.atan2(2 * (x * y + w * z), w * w + x * x - y * y - z * z)

    def _robot_died(self) -> bool:
        height = self.data.qpos[2]
        finite = np.isfinite(self.data.qpos).all() and np.isfinite(self.data.qvel).all()
        return not (finite and 0.2 <= height <= 1.0)
