"""The papers' environments, registered with gymnasium under the `explorebench/` namespace.

Importing this package registers them, so `gymnasium.make("explorebench/<Name>")` works outside the
suite too. Every environment puts the number its paper reports into `info["task_metric"]`: the
value for the episode so far, read by the runner at the episode's last step.
"""
from gymnasium.envs.registration import register, registry

# id -> (entry point, episode limit). Limits are the papers' max_path_length.
ENVIRONMENTS = {
    "SwimmerGather-v0": ("envs.gather:SwimmerGatherEnv", 500),
    "AntGather-v0": ("envs.gather:AntGatherEnv", 500),
    "HalfCheetahRllab-v0": ("envs.half_cheetah:HalfCheetahRllabEnv", 500),
    "SparseHalfCheetah-v0": ("envs.half_cheetah:SparseHalfCheetahEnv", 500),
    "SparseHalfCheetahAbs-v0": ("envs.half_cheetah:SparseHalfCheetahAbsEnv", 500),
    "MountainCarSparse-v0": ("envs.classic:SparseMountainCarEnv", 500),
    "CartpoleSwingupSparse-v0": ("envs.classic:SparseCartpoleSwingupEnv", 500),
    "DoublePendulumSparse-v0": ("envs.classic:SparseDoublePendulumEnv", 500),
    "Maze2D-v0": ("envs.maze2d:TwoDMazeEnv", 200),
    # The exploration canary: a sparse chain that undirected exploration almost never solves.
    "Chain-v0": ("envs.chain:ChainEnv", None),
}

for _name, (_entry_point, _limit) in ENVIRONMENTS.items():
    if f"explorebench/{_name}" not in registry:
        register(id=f"explorebench/{_name}", entry_point=_entry_point, max_episode_steps=_limit)
