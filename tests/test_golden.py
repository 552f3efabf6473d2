"""Golden files: tiny runs whose progress.csv must stay exactly what it was when recorded.

The cases live in tests/golden/cases.yaml; each names an agent preset, an exploration preset and
extra overrides. The test reruns every case and compares every recorded value, as text, row by row: a
refactor of the spine must not move a single number.

Bit-exactness holds for the same CPU kernels and library versions only: MKL and OpenBLAS pick their
kernels by CPU model (an Intel Xeon and an AMD EPYC, both AVX-512, round differently), and within a
few iterations a last-bit difference grows into a different trajectory. So each machine has its own
recording, tests/golden/machines/<machine>/ (its recorded_on.yaml says the machine: CPU model, torch's
CPU capability, torch and numpy versions), and the test compares against the one of this machine; on a
machine without one it skips, saying how to add it.

    python -m tests.test_golden --add-machine     # every case, for this machine: run it at a commit
                                                  # whose numbers you trust (e.g. a clean main)
    python -m tests.test_golden --record CASE ... # a case whose random-number order had to change:
                                                  # rewritten here, removed from the other machines'
"""
from __future__ import annotations

import argparse
import csv
import platform
import re
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import learning_columns, read_progress, train_in_process

GOLDEN = Path(__file__).resolve().parent / "golden"
MACHINES = GOLDEN / "machines"
# Columns a later change added on purpose; a rerun may carry them beyond the recorded ones, empty.
ADDED_COLUMNS = ("eval_return_mean", "eval_task_metric_mean")


def machine() -> dict:
    """What bit-exactness depends on: the CPU model, the kernels torch picks, the library versions."""
    import numpy
    import torch

    info = Path("/proc/cpuinfo")
    fields = dict(line.split(":", 1) for line in info.read_text().splitlines() if ":" in line) if info.exists() else {}
    model = " ".join(fields.get(k, "").strip() for k in ("model name\t", "cpu family\t", "model\t\t")).strip()
    return {"cpu": model or platform.processor(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": str(torch.__version__), "numpy": str(numpy.__version__)}


def cases() -> dict[str, list[str]]:
    spec = yaml.safe_load((GOLDEN / "cases.yaml").read_text())
    named = {**spec["agents"], **spec["exploration"], **spec["envs"]}
    return {case: [o for item in items for o in named.get(item, [item])]
            for case, items in spec["cases"].items()}


def run_case(overrides: list[str], run_dir: Path) -> list[dict]:
    assert train_in_process(run_dir, "seed=0", "checkpoint_every=2", *overrides) == 0
    return learning_columns(read_progress(run_dir))


def machine_dir(info: dict) -> Path:
    """tests/golden/machines/<CPU model and capability>/, e.g. amd-epyc-25-17-avx512."""
    return MACHINES / re.sub(r"[^a-z0-9]+", "-", f"{info['cpu']} {info['cpu_capability']}".lower()).strip("-")


def this_machines_recording() -> Path | None:
    """The recording made on a machine exactly like this one (CPU and library versions), if any."""
    for recorded_on in sorted(MACHINES.glob("*/recorded_on.yaml")):
        if yaml.safe_load(recorded_on.read_text()) == machine():
            return recorded_on.parent
    return None


def read_golden(directory: Path, case: str) -> list[dict]:
    with open(directory / f"{case}.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("case", sorted(cases()))
def test_golden_progress_is_unchanged(tmp_path, case):
    directory = this_machines_recording()
    if directory is None or not (directory / f"{case}.csv").exists():
        recorded = ", ".join(sorted(d.name for d in MACHINES.iterdir() if d.is_dir()))
        pytest.skip(f"no golden recording of {case} for this machine ({machine()}; recorded: {recorded}): "
                    "add one at a commit whose numbers you trust, python -m tests.test_golden --add-machine")
    golden = read_golden(directory, case)
    rows = run_case(cases()[case], tmp_path)
    assert len(rows) == len(golden)
    for i, (want, got) in enumerate(zip(golden, rows)):
        extra = set(got) - set(want)
        assert extra <= set(ADDED_COLUMNS) and not any(got[k] for k in extra), (i, extra)
        changed = {k: (v, got.get(k)) for k, v in want.items() if got.get(k) != v}
        assert not changed, f"{case}, row {i + 1}: (golden, now) {changed}; recording {directory.name}"


def record(names: list[str], others: str) -> None:
    """Record `names` (every case when empty) for this machine; others="drop" removes those cases
    from the other machines' recordings (their numbers changed and cannot be re-run here)."""
    import torch

    torch.set_num_threads(1)
    every = cases()
    here = this_machines_recording() or machine_dir(machine())
    here.mkdir(parents=True, exist_ok=True)
    for case in names or sorted(every):
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_case(every[case], Path(tmp))
        with open(here / f"{case}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"recorded {case}: {len(rows)} rows in {here}")
        for stale in MACHINES.glob(f"*/{case}.csv") if others == "drop" else ():
            if stale.parent != here:
                stale.unlink()
                print(f"  removed {stale} (recorded before this change, on another machine)")
    (here / "recorded_on.yaml").write_text(yaml.safe_dump(machine(), sort_keys=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="(Re)record the golden progress files (module docstring).")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", nargs="+", metavar="CASE", help="re-record these cases (their numbers "
                      "changed on purpose); the other machines' recordings of them are removed")
    mode.add_argument("--add-machine", action="store_true", help="record every case for this machine")
    args = parser.parse_args(sys.argv[1:])
    record(args.record or [], others="keep" if args.add_machine else "drop")
