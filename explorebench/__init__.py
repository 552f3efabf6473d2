"""explorebench: what every layer (envs/, algos/, runner/) shares."""
