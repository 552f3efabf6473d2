"""The papers' environments, registered with gymnasium under the `explorebench/` namespace.

Importing this package registers them, so `gymnasium.make("explorebench/<Name>")` works outside the
suite too. Every environment puts the number its paper reports into `info["task_metric"]`: the
value for the episode so far, read by the runner at the episode's last step.
"""
