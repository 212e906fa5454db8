"""How far the simulator's price of B0's expert GEMMs is from the benchmark's own `torch._grouped_mm`.

    python benchmarks/grouped_mm_gap.py results/measurements/ep2_h200_run27 results/hardware/h200-x2-run27.json \
        --out results/validation/grouped_mm_gap_run27.json

`comet-dse bench` times `torch._grouped_mm` GEMM0 + GEMM1 on the rows its routing sent to each rank
(`grouped_mm`, a CUDA graph, slowest rank). The simulator prices the same two calls for `sequential`
from calibrate's grouped_mm table, which was timed at equal rows per expert (16, 32, ... 8192): the
call's waves of cluster tiles at its experts' rows (sim/baseline_kernels.py measured_gemm_ns; until
2026-11-27 each expert's share of a call at its own rows, summed, which missed uneven rows' cost), on the
routing `comet-dse validate` draws (uniform, seed 0). Both on the same machine when the measurements
and the profile come from one device call. Ratio = measured / priced: above 1, the table prices the
library's GEMMs on a real routing too fast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from comet_dse.errors import UserError
from comet_dse.hardware import load_hardware
from comet_dse.measurements import bench_paths, load_bench
from comet_dse.routing import make_routing
from comet_dse.sim.baseline_kernels import measured_gemm_ns
from comet_dse.sim.layout import rank_groups
from comet_dse.sim.runtime import SimContext
from comet_dse.validation import workload_of


def priced_us(bench, tokens: int, hardware) -> float:
    """GEMM0 + GEMM1 with torch._grouped_mm on every rank's rows, the slowest rank, as sequential prices them."""
    workload = workload_of(bench, tokens)
    ctx = SimContext(workload, hardware, make_routing(workload), record=False)
    worst = 0.0
    for rank in range(workload.world):
        groups = rank_groups(workload, ctx.routing, rank)
        rows = np.array([g.rows_by_source.sum() for g in groups])
        # the grouped_mm table only (not the faster of it and "loop", as sequential takes): the benchmark's
        # figure is grouped_mm's
        us = sum(measured_gemm_ns(ctx, groups, rows, layer, hardware.sms, "grouped_mm") for layer in (0, 1)) / 1e3
        worst = max(worst, us)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measurements")
    parser.add_argument("profile")
    parser.add_argument("--out")
    args = parser.parse_args()
    hardware = load_hardware(args.profile)
    points = []
    for path in bench_paths([args.measurements]):
        bench = load_bench(path)
        seen = set()
        for run in bench.runs:
            measured = run.timings_us.get("grouped_mm")
            if measured is None or run.tokens in seen:
                continue
            seen.add(run.tokens)
            priced = priced_us(bench, run.tokens, hardware)
            points.append({"model": bench.model, "tokens": run.tokens, "measured_us": round(measured, 1),
                           "priced_us": round(priced, 1), "ratio": round(measured / priced, 3)})
    if not points:
        raise UserError("measurements", f"no bench file under {args.measurements} has a grouped_mm figure")
    points.sort(key=lambda p: (p["model"], p["tokens"]))
    for p in points:
        print(f"{p['model']:16} {p['tokens']:6}  bench grouped_mm {p['measured_us']:9.1f} µs  table {p['priced_us']:9.1f} µs"
              f"  ratio {p['ratio']:.3f}")
    ratios = [p["ratio"] for p in points]
    summary = {"points": len(points), "median_ratio": round(statistics.median(ratios), 3),
               "min_ratio": min(ratios), "max_ratio": max(ratios)}
    print(f"median ratio {summary['median_ratio']:.3f} (min {summary['min_ratio']:.3f}, max {summary['max_ratio']:.3f}) "
          f"over {len(points)} points")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(["python benchmarks/grouped_mm_gap.py", args.measurements,
                                                                   args.profile, "--out", args.out]),
                                              "profile": args.profile, "measurements": args.measurements,
                                              "summary": summary, "points": points}, indent=1) + "\n")


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:  # a bad path, profile or bench file: one line, exit 2, nothing written
        print(f"grouped_mm_gap.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
