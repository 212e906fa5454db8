"""Which side of the fused layer the simulator gets wrong: its comet prediction taken apart.

    python benchmarks/sim_sides.py --measurements results/measurements/ep2_h200/run61 \
        --hardware results/hardware/h200-x2-run39-contention63.json --out results/validation/sides_run61.json

For every fused configuration of the bench files that timed the compute-only and comm-only variants beside
the layer, the simulator's comet schedule three times on the profile: as is (against `fused`), with every
grouped-GEMM table entry 1000x faster (its communication side, the copies still slowed as beside the
GEMM, against `comm_only`), and with every copy curve 1000x faster (its compute side, against
`compute_only`). A side within a few percent of its measurement while the whole misses puts the miss in
how the two sides wait on each other, not in a rate. Where bench timed each kernel alone behind a device spin
(`layer_timing: spin`), the same for layer0 and layer1 against the simulator's kernel spans.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from pathlib import Path

from comet_dse.files import read_json_object
from comet_dse.hardware import load_hardware
from comet_dse.measurements import bench_paths, load_bench
from comet_dse.sim import simulate
from comet_dse.validation import KERNELS, _schedule, cases_of, workload_of

SPEEDUP = 1000.0
VARIANTS = ("fused", "comm_only", "compute_only")  # against the simulator as is, with near-free GEMMs, near-free copies


def side_profiles(profile: dict) -> tuple[dict, dict]:
    """(near-free GEMMs, near-free copies) copies of a measured profile."""
    comm_side, compute_side = copy.deepcopy(profile), copy.deepcopy(profile)
    for entry in comm_side["tables"]["grouped_gemm"]:
        entry["us"] = [us / SPEEDUP for us in entry["us"]]
    tables = compute_side["tables"]
    for name in ("layer_comm_blocks", "comm_blocks"):
        found = tables.get(name, [])
        for table in found if isinstance(found, list) else [found]:  # layer_comm_blocks: one, or one per model
            for way in ("pull", "push"):
                table[way]["GBps"] = [rate * SPEEDUP for rate in table[way]["GBps"]]
                if "item_us" in table:  # a block's own time per item, as near free as its rows
                    table["item_us"][way] /= SPEEDUP
    if "comm_blocks" in tables:
        tables["comm_blocks"]["copy_engine_GBps"] *= SPEEDUP
    return comm_side, compute_side


def summary(rows: list[dict]) -> dict:
    """Per figure (a variant of the layer or of one kernel), predicted / measured over the configurations with
    communication blocks (the copy engine's apart): how many, the median and range, and the MAPE in %."""
    found = {}
    keys = sorted({k.removesuffix("_predicted_us") for row in rows for k in row if k.endswith("_predicted_us")})
    for key in keys:
        ratios = [r[f"{key}_predicted_us"] / r[f"{key}_measured_us"] for r in rows
                  if r["comm_blocks"] > 0 and r.get(f"{key}_measured_us")]
        if ratios:
            found[key] = {"n": len(ratios), "median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
                          "max": round(max(ratios), 3), "mape_pct": round(100 * statistics.fmean(abs(x - 1) for x in ratios), 1)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", nargs="+", required=True, help="bench JSON files or folders")
    parser.add_argument("--hardware", required=True, help="a measured profile (comet-dse calibrate)")
    parser.add_argument("--out", required=True, help="where the JSON goes")
    parser.add_argument("--after-gap", action="store_true",
                        help="comet off the power cap after bench's gap (the profile's power_state table; "
                             "validate --after-gap)")
    args = parser.parse_args()
    profile = read_json_object(Path(args.hardware), "--hardware")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in zip(("comm_side", "compute_side"), side_profiles(profile)):
            paths.append(Path(tmp) / f"{name}.json")
            paths[-1].write_text(json.dumps(data))
        whole, comm_side, compute_side = (load_hardware(p) for p in (Path(args.hardware), *paths))
    rows = []
    for path in bench_paths(args.measurements):
        bench = load_bench(path)
        for case in cases_of(bench, measured=True):
            timings = bench.runs[case.run].timings_us
            if case.schedule != "comet" or case.skip or not {"comm_only", "compute_only"} <= set(timings):
                continue
            workload, schedule = workload_of(bench, case.tokens), _schedule(case)
            results = [simulate(workload, hw, schedule, record=False, after_gap=args.after_gap)
                       for hw in (whole, comm_side, compute_side)]
            row = {"model": case.model, "tokens": case.tokens, "comm_blocks": case.knobs["comm_blocks0"], "source": str(path)}
            # the whole layer, and each kernel alone where bench timed it behind a device spin (layer<i>:<variant>)
            spans = [("", lambda r: r.latency_us, lambda variant: timings[variant])]
            if bench.layer_timing == "spin":  # (not the copy engine's: its layer0 is not timed alone)
                spans += [(f"{k}:", lambda r, k=k: r.kernels_us[k], lambda variant, k=k: timings[f"{k}:{variant}"])
                          for k in KERNELS if all(f"{k}:{v}" in timings for v in VARIANTS)]
            for prefix, predicted, measured in spans:
                for variant, result in zip(VARIANTS, results):
                    row[f"{prefix}{variant}_predicted_us"] = round(predicted(result), 1)
                    row[f"{prefix}{variant}_measured_us"] = round(measured(variant), 1)
                print(f"{case.model:15} {case.tokens:6} blocks {row['comm_blocks']:3} {prefix or 'layer:':8} " + "  ".join(
                    f"{v} {row[f'{prefix}{v}_predicted_us']:8.1f}/{row[f'{prefix}{v}_measured_us']:8.1f} "
                    f"({row[f'{prefix}{v}_predicted_us'] / row[f'{prefix}{v}_measured_us']:.2f})" for v in VARIANTS))
            rows.append(row)
    Path(args.out).write_text(json.dumps({"hardware": args.hardware, "measurements": args.measurements,
                                          "after_gap": args.after_gap, "speedup_of_the_other_side": SPEEDUP,
                                          "summary": summary(rows), "rows": rows},
                                         indent=1) + "\n")
    print(f"wrote {args.out} (predicted/measured µs, ratio)")


if __name__ == "__main__":
    main()
