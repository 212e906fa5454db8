"""Check tuned plans' picks on the GPU: regret and prediction error of each bucket's pick.

    python benchmarks/plan_check.py            # writes results/validation/plan_check/plan_check.json
    python benchmarks/plan_check.py --check    # exit 1 if that file is not what the inputs give

Inputs (results/validation/plan_check/*.json plans, results/measurements/ep2_h200/plan_check/ bench
files): per model, one `comet-dse bench --plan` run and one sweep of communication blocks run right
after it on the same machine. Per bucket: the plan's pick, its predicted and measured fused µs, the
measured best of the pick and the sweep, and the regret (measured pick / measured best - 1).
Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from generated_file import write_or_check

ROOT = Path(__file__).resolve().parent.parent
PLANS = ROOT / "results" / "validation" / "plan_check"
BENCH = ROOT / "results" / "measurements" / "ep2_h200" / "plan_check"
OUT = PLANS / "plan_check.json"


def _bench(model: str) -> tuple[dict, dict]:
    """(the --plan run, the sweep) of a model: the file whose command names --plan, and the other."""
    files = [json.loads(p.read_text()) for p in sorted(BENCH.glob(f"bench-{model}-*.json"))]
    plan_runs = [f for f in files if "--plan" in f["command"].split()]
    sweeps = [f for f in files if "--plan" not in f["command"].split()]
    if len(plan_runs) != 1 or len(sweeps) != 1:
        raise SystemExit(f"{BENCH}: expected one --plan run and one sweep of {model}, got {len(plan_runs)} and {len(sweeps)}")
    return plan_runs[0], sweeps[0]


def render() -> dict:
    rows = []
    for path in sorted(PLANS.glob("*-ep*-tp*.json")):
        plan = json.loads(path.read_text())
        picked_run, sweep = _bench(plan["model"])
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
        "hardware_profile": "results/hardware/h200-x2-run9.json",
        "gpu": picked_run["gpu"] if rows else None,
        "bench_commands": sorted({json.loads(p.read_text())["command"] for p in BENCH.glob("bench-*.json")}),
        "buckets": rows,
        "regret_pct": {"mean": round(sum(regrets) / len(regrets), 1), "max": max(regrets)} if rows else None,
    }


def render_text() -> str:
    return json.dumps(render(), indent=1) + "\n"


def main() -> int:
    return write_or_check(__doc__, OUT, render_text, "plan_check.py")


if __name__ == "__main__":
    sys.exit(main())
