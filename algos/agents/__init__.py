"""Agents. Each takes (observation_space, action_space, device, seed, num_iterations, **config) and
offers act(obs, deterministic=False) -> (actions, info), episode_start(mask) and
state_dict()/load_state_dict(); its `family` ("on_policy", "off_policy" or "meta") says which loop
drives it and what else it offers (algos/agents/base.py)."""
