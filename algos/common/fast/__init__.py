"""Fast paths: code that computes exactly what a plain version elsewhere computes, faster on CPU,
kept beside the code it speeds up rather than in the algorithm's reading path.

- mlp.py:          flat parameters and Adam, MLP forward/backward without autograd, numpy MLPs
- ppo_gradient.py: PPO's minibatch gradient in closed form (plain version: PPO.autograd_step)
- acting.py:       acting with numpy for MLP policies (plain version: OnPolicyAgent._act_torch)

Each is tested against its plain version (tests/test_fast_mlp.py, tests/test_agents.py).
"""
