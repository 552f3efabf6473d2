"""Golden files: tiny runs whose progress.csv must stay exactly what it was when recorded.

The cases live in tests/golden/cases.yaml; each names an agent preset, an exploration preset and
extra overrides. `python -m tests.test_golden --record [case ...]` (re)writes tests/golden/<case>.csv
with the learning columns only (no wall time, sps or time_*), and tests/golden/recorded_on.yaml with the
machine it ran on. The test reruns every case and compares every recorded value, as text, row by row: a
refactor of the spine must not move a single number. Bit-exactness holds for the same CPU kernels and
library versions only (float rounding differs between, e.g., AVX2 and AVX-512 matrix products), so on
another machine the values are compared to a relative 1e-3 instead, which still catches any change of
random-number order or arithmetic (those move the numbers at once, by far more).
"""
from __future__ import annotations

import argparse
import csv
import math
import platform
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import learning_columns, read_progress, train_in_process

GOLDEN = Path(__file__).resolve().parent / "golden"
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


def same_value(want: str, got: str | None, exact: bool) -> bool:
    if got == want or exact or got is None:
        return got == want
    try:
        a, b = float(want), float(got)
    except ValueError:
        return False
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))


def cases() -> dict[str, list[str]]:
    spec = yaml.safe_load((GOLDEN / "cases.yaml").read_text())
    named = {**spec["agents"], **spec["exploration"], **spec["envs"]}
    return {case: [o for item in items for o in named.get(item, [item])]
            for case, items in spec["cases"].items()}


def run_case(overrides: list[str], run_dir: Path) -> list[dict]:
    assert train_in_process(run_dir, "seed=0", "checkpoint_every=2", *overrides) == 0
    return learning_columns(read_progress(run_dir))


def read_golden(case: str) -> list[dict]:
    with open(GOLDEN / f"{case}.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("case", sorted(cases()))
def test_golden_progress_is_unchanged(tmp_path, case):
    golden = read_golden(case)
    recorded = yaml.safe_load((GOLDEN / "recorded_on.yaml").read_text())
    exact = recorded == machine()
    rows = run_case(cases()[case], tmp_path)
    assert len(rows) == len(golden)
    for i, (want, got) in enumerate(zip(golden, rows)):
        extra = set(got) - set(want)
        assert extra <= set(ADDED_COLUMNS) and not any(got[k] for k in extra), (i, extra)
        changed = {k: (v, got.get(k)) for k, v in want.items() if not same_value(v, got.get(k), exact)}
        assert not changed, (f"{case}, row {i + 1}: (golden, now) {changed}"
                             + ("" if exact else f"; recorded on {recorded}, this is {machine()}"))


def record(names: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    every = cases()
    for case in names or sorted(every):
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_case(every[case], Path(tmp))
        with open(GOLDEN / f"{case}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"recorded {case}: {len(rows)} rows")
    (GOLDEN / "recorded_on.yaml").write_text(yaml.safe_dump(machine(), sort_keys=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="(Re)record the golden progress files.")
    parser.add_argument("--record", nargs="*", metavar="CASE", required=True)
    record(parser.parse_args(sys.argv[1:]).record)
