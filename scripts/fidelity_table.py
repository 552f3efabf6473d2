"""The fidelity table of results/README.md, from the committed results and the papers' claims.

    python scripts/fidelity_table.py          # rewrites the table and the `Committed presets:` line

Each preset's claims are in scripts/reproduce.yaml (`claims`: per environment, the method the paper
says beats the baseline, and where it says so). For a preset with a committed results/<preset>/ each
claim gets our final scores (mean and 95% CI of the final 10% of iterations, final_scores.csv) and
rliable's P(method > baseline) with its 95% CI (probability_of_improvement.csv), and a verdict by one
rule, the same for every row:

  reproduced        the CI of P(method > baseline) lies above 1/2
  not reproduced    it lies below 1/2 (the baseline is better)
  inconclusive      it contains 1/2 (at this scale the seeds do not tell the two apart)

A claim's `differs` (scripts/reproduce.yaml) says what our run does not share with the paper's (the
budget, settings the paper does not give, known deviations): the table's last column, so that a verdict
is read beside it. Results at the smoke scale (a pipeline check: seconds per run, numbers that mean
nothing) get no verdict: "not measured". Presets without committed results are listed as pending.
scripts/reproduce.py runs this after writing a results/<preset>/; nothing in the table is typed by hand.
"""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
MANIFEST = ROOT / "scripts" / "reproduce.yaml"
BEGIN, END = "<!-- fidelity table: scripts/fidelity_table.py -->", "<!-- end of the fidelity table -->"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def verdict(low: float, high: float) -> str:
    if low > 0.5:
        return "reproduced"
    if high < 0.5:
        return "not reproduced"
    return "inconclusive"


def claim_row(preset: str, claim: dict, baseline: str, results: Path, manifest: dict) -> list[str]:
    env, method = claim["env"], claim["method"]
    scores = {(r["env"], r["method"]): r for r in _rows(results / "final_scores.csv")}
    pairs = {(r["env"], r["x"], r["y"]): r for r in _rows(results / "probability_of_improvement.csv")}
    mine, base, pair = scores.get((env, method)), scores.get((env, baseline)), pairs.get((env, method, baseline))
    budget = manifest.get("envs", {}).get(env, {}).get("budget_env_steps", {}).get(method)
    scale = f"{manifest.get('scale', '?')}, {int(budget):,} env steps" if budget else manifest.get("scale", "?")
    claim_text = f"{method} > {baseline} on {env}: {claim['paper']}"
    if mine is None or base is None or pair is None:
        return [f"`{preset}`", claim_text, f"{scale}: no final scores for this pair", "inconclusive", ""]

    def score(r):
        return f"{float(r['mean']):.3g} [{float(r['ci_low']):.3g}, {float(r['ci_high']):.3g}] ({r['seeds']} seeds)"

    low, high = float(pair["ci_low"]), float(pair["ci_high"])
    ours = (f"{scale}: {method} {score(mine)}, {baseline} {score(base)}; P({method} > {baseline}) = "
            f"{float(pair['p_x_better']):.2f} [{low:.2f}, {high:.2f}]")
    if manifest.get("scale") == "smoke":
        return [f"`{preset}`", claim_text, f"{ours} (a pipeline check: these numbers mean nothing)",
                "not measured", f"[curves](results/{preset}/curves.png)"]
    return [f"`{preset}`", claim_text, ours, verdict(low, high),
            f"[curves](results/{preset}/curves.png), [coverage](results/{preset}/coverage_{env}.png)"]


def table() -> tuple[str, list[str]]:
    spec = yaml.safe_load(MANIFEST.read_text())["presets"]
    lines = ["| preset | paper claim | our result (scale; final score mean [95% CI]; P(method > baseline) "
             "[95% CI]) | verdict | figures | where ours differs from the paper |", "|---|---|---|---|---|---|"]
    committed = []
    for preset, entry in spec.items():
        results = RESULTS / preset
        claims = entry.get("claims") or []
        if not (results / "manifest.json").is_file():
            for claim in claims:
                cells = [f"`{preset}`", f"{claim['method']} > {entry['baseline']} on {claim['env']}: {claim['paper']}",
                         "not run yet", "pending", ""]
                lines.append("| " + " | ".join([*cells, claim.get("differs", "")]) + " |")
            continue
        committed.append(preset)
        manifest = json.loads((results / "manifest.json").read_text())
        for claim in claims:
            cells = claim_row(preset, claim, entry["baseline"], results, manifest)
            lines.append("| " + " | ".join([*cells, claim.get("differs", "")]) + " |")
    return "\n".join(lines), committed


def main() -> int:
    readme = RESULTS / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"fidelity_table.py: {readme} lacks the markers {BEGIN} ... {END}", file=sys.stderr)
        return 2
    rows, committed = table()
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{rows}\n{END}", text, flags=re.S)
    line = "Committed presets: " + (", ".join(f"`{p}`" for p in committed) if committed else "none yet")
    text = re.sub(r"^Committed presets:.*$", line, text, flags=re.M)
    readme.write_text(text)
    print(f"fidelity table written to {readme}: {len(committed)} presets with results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
