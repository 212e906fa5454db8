"""How well the simulator prices a grouped GEMM at rows per expert calibrate never timed.

    python benchmarks/gemm_interpolation.py results/hardware/h100-80gb-hbm3-x2.json \
        --out results/validation/gemm_interpolation.json

The simulator reads a GEMM's time off a calibrated profile's table by log-log interpolation in
rows per expert (comet_dse/measured.py Curve.loglog). Leave one out: for every interior row
count of every table, drop it, predict it from the remaining points the same way, and compare
with what was measured. That is the error at an unmeasured row count between 16 and 8192 (the
calibration issue's 5% target); at a measured one the simulator returns the measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from comet_dse.measured import Curve


def leave_one_out(entry: dict) -> list[dict]:
    rows, us = entry["rows_per_expert"], entry["us"]
    points = []
    for i in range(1, len(rows) - 1):
        rest = Curve(tuple(rows[:i] + rows[i + 1:]), tuple(us[:i] + us[i + 1:]))
        predicted = rest.loglog(rows[i])
        points.append({"rows_per_expert": rows[i], "measured_us": us[i], "predicted_us": round(predicted, 2),
                       "error_pct": round(100 * (predicted - us[i]) / us[i], 2)})
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--out")
    args = parser.parse_args()
    profile = json.loads(Path(args.profile).read_text())
    tables = []
    for e in profile["tables"]["grouped_gemm"]:
        points = leave_one_out(e)
        errors = [abs(p["error_pct"]) for p in points]
        tables.append({k: e[k] for k in ("impl", "K", "N", "swiglu", "experts", "sms")} | {
            "mean_abs_error_pct": round(statistics.mean(errors), 2), "max_abs_error_pct": max(errors), "points": points})
        print(f"{e['impl']:10s} K={e['K']:5d} N={e['N']:5d}{' swiglu' if e['swiglu'] else '       '} sms={e['sms']:3d}: "
              f"mean |error| {tables[-1]['mean_abs_error_pct']:5.2f}%, max {max(errors):5.2f}%")
    every = [abs(p["error_pct"]) for t in tables for p in t["points"]]
    within = sum(e <= 5 for e in every)
    summary = {"points": len(every), "mean_abs_error_pct": round(statistics.mean(every), 2), "max_abs_error_pct": max(every),
               "within_5_pct": within}
    print(f"{len(every)} points: mean |error| {summary['mean_abs_error_pct']}%, max {summary['max_abs_error_pct']}%, "
          f"{within} within 5%")
    if args.out:
        Path(args.out).write_text(json.dumps({"profile": args.profile, "command": "python benchmarks/gemm_interpolation.py "
                                              f"{args.profile} --out {args.out}", **summary, "tables": tables}, indent=2) + "\n")


if __name__ == "__main__":
    main()
