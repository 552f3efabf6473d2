"""rllab's HalfCheetah and the two published sparse variants (docs/papers.md §1.2).

- `HalfCheetahRllabEnv`: rllab `half_cheetah_env.py` (rll/rllab@ba78e4c). Observation qpos[1:](8) +
  qvel(9) + torso COM(3) = 20-D, where the COM is the torso's subtree COM (rllab's `get_body_com`
  reads `com_subtree`; the torso is the root, so this is the whole body's COM). 6 actions in
  [−1, 1] (gears 120/90/60/120/60/30), timestep 0.01 s, one substep per env step (no frame_skip
  numeric), so a 500-step episode is 5 s. Reward = COM x-velocity − 0.05‖clip(a)‖² (rllab's
  `get_body_comvel`, the subtree COM's linear velocity, and `0.5 · 1e-1 · Σa²`).
- `SparseHalfCheetahEnv` (VIME `HalfCheetahEnvX`, #Exploration): reward 1 at every step where the
  COM x is beyond +5, else 0; forward only, never terminates.
- `SparseHalfCheetahAbsEnv` (EX2 / EMI `SparseHalfCheetahEnv`): reward 1 while |COM x| > 5, either
  direction.

All three share dynamics and observation; `info["task_metric"]` is the episode return so far (the
papers report the return). Reset, as rllab's `MujocoEnv.reset_mujoco`: qpos + N(0, 0.01²),
qvel + N(0, 0.1²), drawn from `self.np_random` (rllab used numpy's global RNG).

The model is gymnasium's `half_cheetah.xml`, which matches rllab's `vendor/mujoco_models/
half_cheetah.xml` in every physical attribute (bodies, joints with their stiffness, damping and
limits, geoms, gears, ctrlrange, timestep 0.01, total mass 14; it only adds a tracking camera). It
runs on MuJoCo 3.3 instead of rllab's 1.31: solver and contact model are MuJoCo 3's, and MuJoCo 3's
Euler integrator treats joint damping implicitly (whether 1.31 did is not recorded in docs/papers.md).

How this differs from gymnasium's HalfCheetah-v5, on the same model file:

| | here (rllab) | HalfCheetah-v5 |
|---|---|---|
| observation | 20-D: qpos[1:], qvel, whole-body COM | 17-D: qpos[1:], qvel (no COM) |
| reward | COM x-velocity − 0.05‖a‖² | torso-origin x-velocity (finite difference) − 0.1‖a‖² |
| frame_skip | 1 (0.01 s per step) | 5 (0.05 s per step) |
| horizon | 500 steps = 5 s | 1000 steps = 50 s |
| reset noise | qpos + N(0, 0.01²), qvel + N(0, 0.1²) | qpos + U(−0.1, 0.1), qvel + N(0, 0.1²) |
"""
from __future__ import annotations

import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco import MujocoEnv


class HalfCheetahRllabEnv(MujocoEnv):
    """rllab's dense HalfCheetah (docs/papers.md §1.2): 20-D observation, 6-D action in [−1, 1]."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 100}

    def __init__(self, render_mode: str | None = None, width: int = 480, height: int = 480):
        self.episode_return = 0.0
        # gymnasium's copy of the model (see the module docstring); one substep per env step
        super().__init__("half_cheetah.xml", frame_skip=1,
                         observation_space=spaces.Box(-np.inf, np.inf, (20,), np.float64),
                         render_mode=render_mode, width=width, height=height, camera_name="track")
        self.torso = self.model.body("torso").id

    def _refresh(self) -> None:
        """The subtree COM and its velocity at the new state: rllab calls mj_forward after stepping,
        while mj_step leaves them at the pre-integration state. These four stages are all they need."""
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_comVel(self.model, self.data)
        mujoco.mj_subtreeVel(self.model, self.data)

    def reset_model(self) -> np.ndarray:
        self.data.qpos[:] = self.init_qpos + 0.01 * self.np_random.standard_normal(self.model.nq)
        self.data.qvel[:] = self.init_qvel + 0.1 * self.np_random.standard_normal(self.model.nv)
        self._refresh()
        self.episode_return = 0.0
        return self._get_obs()

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[1:], self.data.qvel, self.data.subtree_com[self.torso]])

    def reward(self, action) -> float:
        ctrl = np.minimum(np.maximum(action, -1.0), 1.0)  # np.clip, without its dispatch overhead
        return float(self.data.subtree_linvel[self.torso, 0] - 0.05 * np.dot(ctrl, ctrl))

    def step(self, action):
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        self._refresh()
        reward = self.reward(action)
        self.episode_return += reward
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, False, False, {"task_metric": self.episode_return}


class SparseHalfCheetahEnv(HalfCheetahRllabEnv):
    """VIME's / #Exploration's sparse HalfCheetah: 1 per step while COM x > 5 (forward only)."""

    def __init__(self, min_distance: float = 5.0, **kwargs):
        self.min_distance = min_distance  # the line; the name of the #Exploration copy's parameter
        super().__init__(**kwargs)

    def reward(self, action) -> float:
        return 1.0 if self.data.subtree_com[self.torso, 0] > self.min_distance else 0.0


class SparseHalfCheetahAbsEnv(SparseHalfCheetahEnv):
    """EX2's / EMI's sparse HalfCheetah: 1 per step while |COM x| > 5 (either direction)."""

    def reward(self, action) -> float:
        return 1.0 if abs(self.data.subtree_com[self.torso, 0]) > self.min_distance else 0.0
