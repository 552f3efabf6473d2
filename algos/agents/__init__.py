"""Agents. Each takes (observation_space, action_space, device, seed, num_iterations, **config) and
offers act(obs) -> (actions, info), update(rollout) -> metrics, state_dict()/load_state_dict().
`family` says which collection loop drives it: "on_policy", "off_policy" or "meta"."""
