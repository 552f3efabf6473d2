"""python -m runner.train: one run of agent x exploration method x environment (a Hydra app).

    python -m runner.train agent=trpo exploration=none env=half_cheetah seed=0 total_env_steps=100000

What every agent family shares lives here: validation, building, resume, signals, the checkpoint
cadence, evaluation episodes and logging. The iteration itself is the family's loop
(runner/loops/on_policy.py, off_policy.py, meta.py), picked by the agent's declared `family`.
Each iteration writes one progress.csv row (and, where the env declares coverage, one row of
coverage.bin: runner/coverage.py); a checkpoint every `checkpoint_every` iterations.
Exit codes: 0 done (or already finished), 1 a failure such as NaN, 2 an invalid configuration,
128 + signal number after SIGTERM/SIGINT.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from algos.common.checks import ConfigError, NonFiniteError, require
from algos.common.nets import action_kind, observation_kind
from algos.exploration.base import IntrinsicRewardShaper
from runner import run_dir as rd
from runner.config import (
    agent_family,
    check_overrides,
    config_differences,
    iteration_env_steps,
    refuse_renamed_keys,
    resolve_device,
    steps_per_collection,
    validate_run_config,
)
from runner.coverage import CoverageCounter, CoverageLog, coverage_spec, remove_coverage_files
from runner.envs import make_vector_env
from runner.evaluate import EVAL_COLUMNS, Evaluator
from runner.loops.meta import MetaLoop
from runner.loops.off_policy import OffPolicyLoop
from runner.loops.on_policy import OnPolicyLoop
from runner.manifest import launch_record, write_manifest
from runner.progress import FIXED_COLUMNS, ConsoleProgress, ProgressCSV, WandbMirror

log = logging.getLogger("explorebench")
EXIT_FAILED, EXIT_CONFIG = 1, 2
LOOPS = {"on_policy": OnPolicyLoop, "off_policy": OffPolicyLoop, "meta": MetaLoop}
DEFAULT_EVAL_EVERY = {"on_policy": 0, "off_policy": 10, "meta": 0}  # eval_every: null
# Keys a component's ConfigError may name as they are (not inside its own group).
RUN_LEVEL_GROUPS = ("agent", "exploration", "env", "device", "seed")


class GracefulStop:
    """SIGTERM / SIGINT ask the loop to checkpoint and exit after the current iteration; a second
    signal stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self.previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: checkpointing after this iteration", signal.Signals(signum).name)

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def check_compatibility(agent, exploration, vec_env, choices: dict) -> None:
    """Refuse combinations that cannot work, naming the config options involved."""
    env_name, agent_name, expl_name = (choices.get(k, k) for k in ("env", "agent", "exploration"))
    act_kind = action_kind(vec_env.single_action_space)
    obs_kind = observation_kind(vec_env.single_observation_space)
    if act_kind not in agent.action_kinds:
        raise ConfigError(f"agent={agent_name} needs {' or '.join(agent.action_kinds)} actions but "
                          f"env={env_name} has {act_kind} actions")
    req = exploration.requires
    problems = [(act_kind, req.action_kinds, f"env={env_name} has {act_kind} actions"),
                (agent.family, req.agent_families, f"agent={agent_name} is {agent.family}"),
                (obs_kind, req.observation_kinds, f"env={env_name} has {obs_kind} observations")]
    for value, allowed, what in problems:
        if value not in allowed:
            given = f" with {req.because}" if req.because else ""
            raise ConfigError(f"exploration={expl_name}{given} cannot run here: {what}; it supports "
                              f"{' | '.join(allowed)}")


def derive_seeds(seed: int, num_envs: int) -> dict:
    """Independent streams for every consumer of randomness, all from the run's `seed`."""
    env_ss, agent_ss, expl_ss, global_ss, eval_ss, loop_ss = np.random.SeedSequence(seed).spawn(6)
    return {"envs": [int(s) for s in env_ss.generate_state(num_envs)],
            "agent": int(agent_ss.generate_state(1)[0]),
            "exploration": int(expl_ss.generate_state(1)[0]),
            "global": int(global_ss.generate_state(1)[0]),
            "evaluation": int(eval_ss.generate_state(1)[0]),
            "loop": int(loop_ss.generate_state(1)[0])}


def build(config, group: str, **kwargs):
    """hydra.utils.instantiate, letting a constructor's ConfigError through unwrapped, its key named in
    full: a helper shared by agents and methods (e.g. algos.common.nets.mlp) names `activation`, which
    becomes `agent.activation` or `exploration.activation` by the group it was built for."""
    try:
        return instantiate(config, **kwargs, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            message = str(err.__cause__)
            key = message.split(":", 1)[0]
            if key.isidentifier() and key not in RUN_LEVEL_GROUPS:
                message = f"{group}.{message}"
            raise ConfigError(message) from None
        raise


def build_exploration(expl_cfg: DictConfig, observation_space, action_space, seed: int, device):
    params = OmegaConf.to_container(expl_cfg, resolve=True)
    coef = params.pop("coef", 0.0)
    require(isinstance(coef, (int, float)) and not isinstance(coef, bool) and coef >= 0, "exploration.coef",
            f"must be a number >= 0 (the bonus is added to the reward), got {coef!r}")
    shaper = IntrinsicRewardShaper(coef, params.pop("normalise", "none"))
    method = build(params, "exploration", observation_space=observation_space, action_space=action_space,
                   seed=seed, device=device)
    return method, shaper


class Outcome(int):
    """train()'s exit code, with why the run did not finish (None when it did), for a sweep's report."""

    def __new__(cls, code: int, reason: str | None = None):
        outcome = super().__new__(cls, code)
        outcome.reason = reason
        return outcome


def _hydra_files(cfg: DictConfig) -> dict[str, str]:
    """The .hydra/ files Hydra would write (conf/config.yaml sets hydra.output_subdir: null, so that a
    refused launch does not rewrite them): train() writes them once it accepts the launch. None outside
    a Hydra app (tests and scripts that call train() directly)."""
    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    return {"config.yaml": OmegaConf.to_yaml(cfg),
            "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
            "overrides.yaml": OmegaConf.to_yaml(list(hydra_cfg.overrides.task))}


def train(cfg: DictConfig, run_dir: Path, choices: dict, show_progress: bool | None = None,
          overrides=()) -> Outcome:
    """Run (or resume) one training run in `run_dir`; returns the process exit code.

    A launch is refused (exit code 2) before any work while another process holds the directory, for
    an invalid configuration (`overrides`, the command line's, are checked against the config they
    override: runner.config.check_overrides), a damaged checkpoint with no intact generation, or a
    checkpoint of another configuration. A refused launch writes nothing into a directory that holds
    a run; into a new directory it writes error.txt (and .hydra/), so that runner.status shows why.

    While it runs, `run_dir/running.json` names this process, so that `python -m runner.status`
    can tell a running run from a killed one (whose marker stays behind, naming a process that
    is gone)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return _cannot_write(err, run_dir)
    if not rd.acquire_run_lock(run_dir) or _alive_elsewhere(run_dir):
        marker = rd.read_marker(run_dir)
        holder = f"process {marker['pid']} on {marker['hostname']}" if marker else "another process"
        reason = (f"{run_dir} is in use by {holder} (another run or sweep holds it); wait for it to "
                  "finish or stop it first")
        print(f"explorebench: {reason}", file=sys.stderr)
        return Outcome(EXIT_CONFIG, reason)
    holds_run = rd.holds_run(run_dir)
    accepted = False

    def accept(hydra_files: dict[str, str]) -> None:
        """The launch passed every check: from here on the run directory is this launch's."""
        nonlocal accepted
        accepted = True
        rd.clear_error(run_dir)
        rd.mark_running(run_dir)
        rd.write_hydra_files(run_dir, hydra_files)

    try:
        return _train(cfg, run_dir, choices, show_progress, overrides, accept)
    except (ConfigError, rd.CheckpointError) as err:
        message = f"invalid configuration: {err}" if isinstance(err, ConfigError) else str(err)
        if accepted or not holds_run:  # never into an intact run that this launch did not take over
            rd.write_error(run_dir, message)
            if not accepted:
                rd.write_hydra_files(run_dir, _hydra_files(cfg))
        print(f"explorebench: {message}", file=sys.stderr)
        return Outcome(EXIT_CONFIG, message)
    except NonFiniteError as err:
        rd.write_error(run_dir, str(err))
        log.error("%s", err)
        kept = ("the last checkpoint is intact" if rd.checkpoint_path(run_dir).exists() else
                "there is no checkpoint yet: a relaunch starts the run over")
        print(f"explorebench: run stopped: {err} ({kept})", file=sys.stderr)
        return Outcome(EXIT_FAILED, str(err))
    except OSError as err:
        return _cannot_write(err, run_dir)
    except Exception:
        rd.write_error(run_dir, traceback.format_exc())
        raise
    finally:
        if accepted:
            rd.clear_marker(run_dir)
        rd.release_run_lock(run_dir)


def _alive_elsewhere(run_dir: Path) -> bool:
    """A live marker of another process: one on another host (which the lock cannot see), or a
    process that does not take the lock."""
    other = rd.read_marker(run_dir)
    return other is not None and other["pid"] != os.getpid() and rd.marker_alive(other) is not False


def _cannot_write(err: OSError, run_dir: Path) -> Outcome:
    """Disk full, a read-only or unwritable directory: say so, naming the path; the last checkpoint
    stays as it was (run_dir writes every checkpoint file atomically)."""
    path = err.filename or run_dir
    message = f"cannot write {path}: {err.strerror or err} (the last checkpoint, if any, is intact)"
    try:
        rd.write_error(run_dir, message)
    except OSError:
        pass  # the disk that is full cannot take error.txt either: the message goes to stderr only
    print(f"explorebench: {message}", file=sys.stderr)
    return Outcome(EXIT_FAILED, message)


def _train(cfg: DictConfig, run_dir: Path, choices: dict, show_progress: bool | None, overrides,
           accept) -> int:
    # -- validate and build (no training work yet, nothing written) -------------------------------
    if overrides:
        check_overrides(cfg, overrides, choices, HydraConfig.get().searchpath if HydraConfig.initialized() else ())
    validate_run_config(cfg)
    coverage_grid = coverage_spec(cfg.env)
    family = agent_family(cfg.agent)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    per_iteration = iteration_env_steps(cfg)
    n_iterations = cfg.total_env_steps // per_iteration
    num_envs = cfg.agent.num_envs
    seeds = derive_seeds(cfg.seed, num_envs)
    torch.manual_seed(seeds["global"])
    np.random.seed(seeds["global"] % 2**32)

    vec_env = make_vector_env(cfg.env, num_envs)
    obs_space, act_space = vec_env.single_observation_space, vec_env.single_action_space
    agent = build(cfg.agent, "agent", observation_space=obs_space, action_space=act_space,
                  device=device, seed=seeds["agent"], num_iterations=n_iterations)
    exploration, shaper = build_exploration(cfg.exploration, obs_space, act_space,
                                            seeds["exploration"], device)
    check_compatibility(agent, exploration, vec_env, choices)
    coverage = CoverageCounter(coverage_grid, vec_env) if coverage_grid is not None else None
    component = {k: f"{k} ({choices.get(k, '?')})" for k in ("agent", "exploration")}
    loop = LOOPS[family](vec_env, agent, exploration, shaper, steps_per_env=steps_per_collection(cfg),
                         env_seeds=seeds["envs"], components=component, task_seed=seeds["loop"],
                         coverage=coverage)
    eval_every = DEFAULT_EVAL_EVERY[family] if cfg.eval_every is None else cfg.eval_every
    evaluator = Evaluator(cfg.env, cfg.eval_episodes, seeds["evaluation"])
    config = OmegaConf.to_container(cfg, resolve=True)

    # -- resume or start --------------------------------------------------------------------------
    state = rd.load_checkpoint(run_dir) if cfg.resume else None
    if state is not None and "coverage" not in state["config"].get("env", {}) and "coverage" in config["env"]:
        # a run begun before envs declared coverage: it resumes as it began, without a map
        config["env"].pop("coverage")
        if coverage is not None:
            coverage.enabled, coverage = False, None
            log.info("the run in %s began without coverage maps: it resumes without one", run_dir)
    if state is not None:
        differences = config_differences(state["config"], config)
        if differences:
            raise ConfigError(
                f"run directory {run_dir} holds a run with a different configuration ("
                + "; ".join(differences) + "); use another hydra.run.dir, or resume=false to start over")
    hydra_files = _hydra_files(cfg)
    accept(hydra_files)
    progress = ProgressCSV(run_dir / "progress.csv")
    coverage_log = CoverageLog(run_dir, coverage_grid) if coverage is not None else None
    if state is not None:
        progress.resume(state["iteration"], state.get("progress"))
        if coverage_log is not None:
            coverage_log.resume(state["iteration"], state.get("coverage"))
        if state["iteration"] >= n_iterations:
            progress.close()
            if coverage_log is not None:
                coverage_log.close()
            log.info("run in %s already finished (%d iterations); nothing to do", run_dir, state["iteration"])
            return 0
        agent.load_state_dict(state["agent"])
        exploration.load_state_dict(state["exploration"])
        shaper.load_state_dict(state["shaper"])
        loop.load_state_dict(state["loop"])
        evaluator.load_state_dict(state["evaluator"])
        rd.set_global_rng_state(state["rng"])
        start, wall_offset, hydra_files = state["iteration"], state["wall_s"], state["hydra_files"]
        env_steps = state["env_steps"]
        log.info("resuming %s from iteration %d", run_dir, start)
    else:
        rd.discard_checkpoints(run_dir)  # a fresh run never falls back on another run's checkpoint
        progress.start_fresh()
        if coverage_log is not None:
            coverage_log.start_fresh()
        else:
            remove_coverage_files(run_dir)  # an earlier run's, with resume=false
        loop.start()
        start, wall_offset, env_steps = 0, 0.0, 0
    write_manifest(run_dir, launch_record(cfg.seed, device), resumed=state is not None)
    group = "/".join([cfg.experiment_name, *(choices.get(k, "?") for k in ("env", "agent", "exploration"))])
    wandb = WandbMirror(cfg.logger.wandb, run_dir, config, group, state and state.get("wandb_id"))
    console = ConsoleProgress(n_iterations * per_iteration, env_steps, show_progress)

    def save(iteration: int, env_steps: int, wall_s: float) -> None:
        progress.sync()  # the rows the checkpoint covers are on disk before it is
        if coverage_log is not None:
            coverage_log.sync()
        rd.save_checkpoint(run_dir, {
            "iteration": iteration, "env_steps": env_steps, "wall_s": wall_s,
            "config": config, "choices": choices, "hydra_files": hydra_files,
            "agent": agent.state_dict(), "exploration": exploration.state_dict(),
            "shaper": shaper.state_dict(), "loop": loop.state_dict(), "evaluator": evaluator.state_dict(),
            "rng": rd.global_rng_state(), "wandb_id": wandb.run_id, "progress": progress.snapshot(),
            "coverage": coverage_log.snapshot() if coverage_log is not None else None},
            {"iteration": iteration, "env_steps": env_steps,
             "total_iterations": n_iterations, "finished": iteration >= n_iterations})

    # -- train ------------------------------------------------------------------------------------
    launch_time = time.perf_counter()
    exit_code = EXIT_FAILED
    try:
        with GracefulStop() as stop:
            for iteration in range(start + 1, n_iterations + 1):
                t0 = time.perf_counter()
                metrics = loop.iteration()
                t1 = time.perf_counter()
                # env steps taken: per_iteration, or at least that many in whole paths (on-policy loop)
                steps = metrics.pop("env_steps", per_iteration)
                env_steps += steps
                evaluation = dict.fromkeys(EVAL_COLUMNS, float("nan"))
                if eval_every and iteration % eval_every == 0:
                    evaluation = evaluator.evaluate(agent)
                row = {"iteration": iteration, "env_steps": env_steps,
                       "wall_s": wall_offset + (t1 - launch_time), "sps": steps / (t1 - t0),
                       **{k: metrics.pop(k) for k in FIXED_COLUMNS[4:]}, **evaluation, **metrics}
                progress.write(row)
                if coverage_log is not None:
                    coverage_log.append(coverage.take_row())
                wandb.log(row)
                console.update(row)
                if iteration % cfg.checkpoint_every == 0 or iteration == n_iterations or stop.signum:
                    save(iteration, env_steps, row["wall_s"])
                if stop.signum:
                    log.warning("stopped by signal after iteration %d; relaunch the same command to resume", iteration)
                    exit_code = 128 + stop.signum
                    return exit_code
        exit_code = 0
        log.info("finished %d iterations (%d env steps) in %s", n_iterations, env_steps, run_dir)
        return 0
    finally:
        console.close()
        progress.close()
        if coverage_log is not None:
            coverage_log.close()
        wandb.close(exit_code)
        evaluator.close()
        vec_env.close()


class JobFailed(RuntimeError):
    """A sweep job that did not finish (NaN, invalid configuration). Raised instead of exiting:
    the launcher records the job as failed and goes on with the others, and the sweep then ends
    with exit status 1 and this message."""


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """One run exits with train()'s code (0, 1 failure, 2 invalid configuration, 128 + signal).

    A sweep job (-m) must neither end the other jobs (sys.exit would end the sequential
    launcher's process, and the sweep with it) nor hide its failure: it logs the failure (train()
    has written why into error.txt) and raises JobFailed. A signal (Ctrl-C, SIGTERM) still stops
    the whole sweep once the running jobs have checkpointed; relaunching the sweep resumes them."""
    hydra_cfg = HydraConfig.get()
    run_dir, choices = Path(hydra_cfg.runtime.output_dir), dict(hydra_cfg.runtime.choices)
    code = train(cfg, run_dir, choices, overrides=list(hydra_cfg.overrides.task))
    if code == 0:
        return
    if hydra_cfg.mode != RunMode.MULTIRUN or code > 128:
        sys.exit(int(code))
    reason = getattr(code, "reason", None) or rd.read_error(run_dir) or f"exit code {code}"
    log.error("sweep job %s failed (exit code %d): %s", hydra_cfg.job.num, code, reason)
    raise JobFailed(f"{run_dir}: {reason}")


def exit_2_for_hydra_refusals() -> None:
    """Hydra reports the configurations it cannot compose (env=nope, a malformed override) with exit
    status 1, the status of a failed run; explorebench exits 2 for every invalid configuration. Hydra's
    reporter (hydra._internal.utils.run_and_report, hydra-core 1.3.8, pinned) still prints its message;
    this wrapper only changes the status. A run directory Hydra cannot create exits 1 naming the path."""
    from hydra._internal import utils as hydra_utils
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    report = hydra_utils.run_and_report
    refusals = (ConfigCompositionException, MissingConfigException, OverrideParseException, ConfigError)

    def run_and_report(func):
        refused = []

        def guarded():
            try:
                return func()
            except refusals as err:
                refused.append(err)
                raise
            except OSError as err:  # creating the run directory or its log file
                print(f"explorebench: cannot write {err.filename}: {err.strerror or err}", file=sys.stderr)
                sys.exit(EXIT_FAILED)

        try:
            return report(guarded)
        except SystemExit as done:
            if refused and done.code == 1:
                raise SystemExit(EXIT_CONFIG) from None
            raise

    hydra_utils.run_and_report = run_and_report


if __name__ == "__main__":
    try:
        refuse_renamed_keys(sys.argv[1:])
    except ConfigError as err:
        print(f"explorebench: invalid configuration: {err}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    exit_2_for_hydra_refusals()
    main()
