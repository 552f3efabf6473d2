"""manifest.json: what produced a run (code version, packages, hardware, seed, command)."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ["explorebench", "torch", "numpy", "gymnasium", "mujoco", "ale-py", "hydra-core",
            "omegaconf", "wandb"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def launch_record(seed: int, device: torch.device) -> dict:
    status = _git("status", "--porcelain")
    return {
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.orig_argv),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "packages": _versions(),
        "cpu": _cpu_model(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
        "hostname": platform.node(),
    }


def write_manifest(run_dir: Path, record: dict, resumed: bool) -> None:
    """The first launch's record at the top level; every later launch (a resume) is appended to
    `resumes`, so the file tells the whole history of the run directory."""
    path = Path(run_dir) / "manifest.json"
    if resumed and path.exists():
        manifest = json.loads(path.read_text())
        manifest.setdefault("resumes", []).append(record)
    else:
        manifest = {**record, "resumes": []}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)
