"""Check tuned plans' picks on the GPU: regret and prediction error of each bucket's pick.

    python benchmarks/plan_check.py            # writes each check's plan_check.json (CHECKS below)
    python benchmarks/plan_check.py --check    # exit 1 if one is not what its inputs give

Inputs of each check: a folder of plans (`comet-dse tune` outputs, one per model) and a folder of
bench files: per model, one `comet-dse bench --plan` run and one sweep of communication blocks run
right after it on the same machine. Per bucket: the plan's pick, its predicted and measured fused
µs, the measured best of the pick and the sweep, and the regret (measured pick / measured best - 1).
Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

from generated_file import write_or_check

ROOT = Path(__file__).resolve().parent.parent


class PlanCheck(NamedTuple):  # not a dataclass: the tests load this file without registering it as a module
    plans: Path  # the plans, and the check's plan_check.json beside them
    bench: Path
    profile: str  # the hardware profile the plans were tuned on

    @property
    def out(self) -> Path:
        return self.plans / "plan_check.json"


CHECKS = (
    # cost model 3, the kernels of 2026-11-25, plans tuned on run 9's profile, checked on run 9's machine
    PlanCheck(ROOT / "results" / "validation" / "plan_check", ROOT / "results" / "measurements" / "ep2_h200" / "plan_check",
              "results/hardware/h200-x2-run9.json"),
    # cost model 10, the pairs + TMA-store kernels, plans tuned on run 31's profile, checked on another H200 pair
    PlanCheck(ROOT / "results" / "validation" / "plan_check_run35",
              ROOT / "results" / "measurements" / "ep2_h200" / "plan_check_run35", "results/hardware/h200-x2-run31.json"),
)


def _bench(bench: Path, model: str) -> tuple[dict, dict]:
    """(the --plan run, the sweep) of a model: the file whose command names --plan, and the other."""
    files = [json.loads(p.read_text()) for p in sorted(bench.glob(f"bench-{model}-*.json"))]
    plan_runs = [f for f in files if "--plan" in f["command"].split()]
    sweeps = [f for f in files if "--plan" not in f["command"].split()]
    if len(plan_runs) != 1 or len(sweeps) != 1:
        raise SystemExit(f"{bench}: expected one --plan run and one sweep of {model}, got {len(plan_runs)} and {len(sweeps)}")
    return plan_runs[0], sweeps[0]


def render(check: PlanCheck = CHECKS[0]) -> dict:
    rows = []
    for path in sorted(check.plans.glob("*-ep*-tp*.json")):
        plan = json.loads(path.read_text())
        picked_run, sweep = _bench(check.bench, plan["model"])
        for bucket in plan["buckets"]:
            tokens = bucket["tokens"]
            (pick,) = [r for r in picked_run["runs"] if r["tokens"] == tokens]
            swept = {r["config"]["comm_blocks0"]: r["timings_us"]["fused"] for r in sweep["runs"] if r["tokens"] == tokens}
            measured = pick["timings_us"]["fused"]
            best = min([measured, *swept.values()])
            predicted = bucket["predicted_us"]["comet"]
            rows.append({
                "model": plan["model"], "tokens": tokens, "pick": bucket["config"], "predicted_us": predicted,
                "measured_us": measured, "prediction_error_pct": round(100 * (predicted - measured) / measured, 1),
                "sweep_us_by_comm_blocks": swept, "measured_best_us": best,
                "regret_pct": round(100 * (measured / best - 1), 1),
            })
    regrets = [r["regret_pct"] for r in rows]
    return {
        "what": "tuned plans' picks measured on the GPUs they were tuned for (comet-dse validate's plan check)",
        "command": "python benchmarks/plan_check.py",
        "hardware_profile": check.profile,
        "gpu": picked_run["gpu"] if rows else None,
        "bench_commands": sorted({json.loads(p.read_text())["command"] for p in check.bench.glob("bench-*.json")}),
        "buckets": rows,
        "regret_pct": {"mean": round(sum(regrets) / len(regrets), 1), "max": max(regrets)} if rows else None,
    }


def render_text(check: PlanCheck = CHECKS[0]) -> str:
    return json.dumps(render(check), indent=1) + "\n"


def main() -> int:
    present = [c for c in CHECKS if c.plans.exists()]
    if not present:
        print("no plan check's plans folder exists", file=sys.stderr)
        return 1
    return max(write_or_check(__doc__, c.out, lambda c=c: render_text(c), "plan_check.py") for c in present)


if __name__ == "__main__":
    sys.exit(main())
