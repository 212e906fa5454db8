"""The simulator's deal of the remote tiles (sim/fused_costs.deal_stretch) against each communication block's measured
end (benchmarks/gpu_comm_spans.py): for every workload, block count and layer of a comm-spans JSON, the copies' end as
measured (the last block's, slowest rank), as the deal prices it from the rows the plan dealt each block, and as bytes
at the curve's rate (what the simulator charged before it modelled the deal). The curve is the same run's own: the
round-robin workload whose tiles are all full and evenly dealt (`--curve-workload`), kernel time at each block count,
so only the deal is under test. `--profile`: a calibrated profile's per-item cost of a block (its layer_comm_blocks
"item_us" at the nearest row width) priced beside each item's rows, as the simulator does with that profile.

    python benchmarks/comm_deal_check.py results/measurements/ep2_h200/run114/comm_spans_qwen.json \\
        results/measurements/ep2_h200/run114/comm_spans_mixtral.json --curve-from comm_spans_qwen.json \\
        --out results/validation/comm_deal_run114.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from comet_dse.errors import UserError
from comet_dse.files import read_json_object
from comet_dse.hardware import load_hardware
from comet_dse.measured import Curve, MeasuredTables
from comet_dse.models import resolve_model
from comet_dse.sim.fused_costs import deal_stretch

LAYERS = ("layer0", "layer1")


def rate_curve(runs: list[dict], workload: str, layer: str, row_bytes: int) -> Curve:
    """GB/s of the workload's copies at each block count measured (bytes over the kernel's time, slowest rank)."""
    points = sorted((e["comm_blocks"], e[layer]["ranks"][0]["rows_moved"] * row_bytes / e[layer]["us"] / 1e3)
                    for e in runs if e["workload"] == workload and e.get("comm_deal", "static") == "static")
    if not points:
        raise ValueError(f"no runs of {workload!r} in the curve's file")
    return Curve(tuple(float(b) for b, _ in points), tuple(v for _, v in points))


def check(runs: list[dict], row_bytes: int, curves: dict[str, Curve], skip: str, items: MeasuredTables | None = None,
          hidden: int = 0) -> list[dict]:
    """Per (workload, blocks, deal, layer) of a spans file: measured, dealt and even ends; `items`: a profile whose
    per-item cost the deal prices (rows of `hidden` elements)."""
    rows = []
    for e in runs:
        if e["workload"] == skip and e.get("comm_deal", "static") == "static":
            continue
        n = e["comm_blocks"]
        for layer in LAYERS:
            curve = curves[layer]
            rate = lambda k, c=curve: c.linear(k, through_origin=True)  # noqa: E731
            measured, dealt, even = [], [], []
            dynamic = e.get("comm_deal", "static") == "dynamic"
            for r in e[layer]["ranks"]:
                found = None if items is None else items.comm_item("pull" if layer == "layer0" else "push", hidden)
                if "tile_rows" in r:  # the plan's remote tiles in walk order: either deal, as the simulator prices it
                    item_bytes = row_bytes / (r["splits"] if layer == "layer1" else 1)
                    item = None if found is None else (found[0] * 1e3, found[1], item_bytes, max(curve.y))
                    stretch = deal_stretch(np.array(r["tile_rows"], dtype=float), n, rate, r["splits"], dynamic=dynamic,
                                           item=item)
                elif dynamic or found is not None:
                    raise ValueError("a dynamic deal or a per-item cost needs the tiles' rows (gpu_comm_spans.py before "
                                     "tile_rows has none)")
                else:  # files before tile_rows: each block's total reproduces a static deal (one "tile" a block)
                    stretch = deal_stretch(np.array(r["block_rows"], dtype=float), n, rate)
                alone_us = r["rows_moved"] * row_bytes / rate(n) / 1e3
                measured.append(r["last_end_us"])
                dealt.append(stretch * alone_us)
                even.append(alone_us)
            m, d, v = max(measured), max(dealt), max(even)
            rows.append({"workload": e["workload"], "comm_blocks": n, "comm_deal": e.get("comm_deal", "static"),
                         "layer": layer, "measured_us": m,
                         "dealt_us": round(d, 1), "even_us": round(v, 1), "dealt_ratio": round(d / m, 3),
                         "even_ratio": round(v / m, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spans", nargs="+", help="gpu_comm_spans.py JSON files")
    parser.add_argument("--curve-from", required=True, help="the file (one of spans, by name) whose workload gives the curve")
    parser.add_argument("--curve-workload", default="round-robin 1024 rows per expert")
    parser.add_argument("--profile", help="a calibrated profile whose per-item cost of a block the deal prices")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        files = {Path(p).name: read_json_object(Path(p), "spans") for p in args.spans}
    except UserError as exc:  # a missing or broken spans file: one line, not a traceback
        parser.error(str(exc))
    if args.curve_from not in files:
        parser.error(f"--curve-from: {args.curve_from!r} is not one of the files given")
    source = files[args.curve_from]
    row_bytes = resolve_model(source["model"]).hidden * 2
    try:
        curves = {layer: rate_curve(source["runs"], args.curve_workload, layer, row_bytes) for layer in LAYERS}
    except ValueError as e:
        parser.error(f"--curve-workload: {e}")
    items = None
    if args.profile:
        try:
            items = load_hardware(Path(args.profile)).measured
        except UserError as exc:
            parser.error(f"--profile: {exc.message if exc.field == '--hardware' else exc}")
        if items is None or not items.layer_comm_items:
            parser.error(f"--profile: {args.profile} has no per-item cost (layer_comm_blocks item_us: calibrate since "
                         "2026-11-28)")
    found = []
    for name, data in files.items():
        hidden = resolve_model(data["model"]).hidden
        try:
            rows = check(data["runs"], hidden * 2, curves, args.curve_workload, items, hidden)
        except ValueError as e:
            parser.error(f"{name}: {e}")
        for row in rows:
            row["file"] = name
            print(f"{data['model']:16s} {row['workload']:34s} {row['comm_deal']:7s} {row['comm_blocks']:3d} {row['layer']}: measured "
                  f"{row['measured_us']:7.1f}  dealt {row['dealt_us']:7.1f} ({row['dealt_ratio']:.2f})  even "
                  f"{row['even_us']:7.1f} ({row['even_ratio']:.2f})")
        found += rows
    summary = {}
    for model, deal in sorted({(files[r["file"]]["model"], r["comm_deal"]) for r in found}):
        for layer in LAYERS:
            mine = [r for r in found if files[r["file"]]["model"] == model and r["layer"] == layer and r["comm_deal"] == deal]
            summary[f"{model} {layer}" + ("" if deal == "static" else f" {deal}")] = {k: {"median": round(statistics.median(r[f"{k}_ratio"] for r in mine), 3),
                                              "min": min(r[f"{k}_ratio"] for r in mine),
                                              "max": max(r[f"{k}_ratio"] for r in mine)} for k in ("dealt", "even")}
    print(json.dumps(summary, indent=1))
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/comm_deal_check.py " + " ".join(
        [*args.spans, "--curve-from", args.curve_from, *(["--profile", args.profile] if args.profile else []),
         "--out", args.out]), "curve_workload": args.curve_workload,
        "summary": summary, "points": found}, indent=1) + "\n")


if __name__ == "__main__":
    main()
