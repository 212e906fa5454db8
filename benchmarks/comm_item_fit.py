"""A communication block's cost per item, read off the blocks of one launch (benchmarks/gpu_comm_spans.py).

    python benchmarks/comm_item_fit.py results/measurements/ep2_h200/run114/comm_spans_qwen.json \\
        --out results/validation/comm_item_fit_run114.json

In a launch with a static deal every block moves as many items (or one fewer) but not as many rows, so each block's
end is (items x a per-item cost) + (rows x a per-row cost): least squares over the blocks of each workload, layer,
block count and rank gives both. Only where the link is below its limit (`--blocks`, default 8 and 16): beyond it the
blocks share the link and a block's end stops following its own rows. What `calibrate` writes as
layer_comm_blocks[].item_us is measured another way (the same rows in items of two sizes); this is the check on it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from comet_dse.errors import UserError
from comet_dse.files import read_json_object


def fit(ends: list[float], rows: list[float], items: list[int]) -> tuple[float, float, float]:
    """(µs per item, ns per row, rms residual µs) of ends = items x a + rows x b."""
    design = np.column_stack([items, rows]).astype(float)
    (per_item, per_row), *_ = np.linalg.lstsq(design, np.asarray(ends, dtype=float), rcond=None)
    residual = float(np.sqrt(np.mean((np.asarray(ends) - design @ [per_item, per_row]) ** 2)))
    return float(per_item), float(per_row) * 1e3, residual


def fits(data: dict, blocks: set[int]) -> list[dict]:
    found = []
    for run in data["runs"]:
        n = run["comm_blocks"]
        if run.get("comm_deal", "static") != "static" or n not in blocks:
            continue
        for layer in ("layer0", "layer1"):
            for rank, r in enumerate(run[layer]["ranks"]):
                if not r.get("block_rows") or np.ptp(r["block_rows"]) == 0:  # even rows: nothing tells the two apart
                    continue
                splits = round(sum(r["block_rows"]) / r["rows_moved"])  # layer1 deals each tile once per split
                total = r["remote_tiles"] * splits
                items = [len(range(b, total, n)) for b in range(n)]  # round robin: item i to block i mod n
                per_item, per_row, residual = fit(r["block_end_us"], r["block_rows"], items)
                found.append({"model": data["model"], "workload": run["workload"], "layer": layer, "comm_blocks": n,
                              "rank": rank, "item_us": round(per_item, 2), "row_ns": round(per_row, 1),
                              "residual_us": round(residual, 1)})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spans", nargs="+", help="gpu_comm_spans.py JSON files (with each block's rows: a static deal)")
    parser.add_argument("--blocks", default="8,16", help="block counts to fit at, comma-separated (default 8,16)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        blocks = {int(b) for b in args.blocks.split(",")}
    except ValueError:
        parser.error(f"--blocks: must be comma-separated whole numbers, got {args.blocks!r}")
    found = []
    for path in args.spans:
        try:
            found += fits(read_json_object(Path(path), "spans"), blocks)
        except UserError as exc:
            parser.error(str(exc))
    summary = {}
    for key in sorted({(f["model"], f["layer"]) for f in found}):
        mine = [f["item_us"] for f in found if (f["model"], f["layer"]) == key]
        summary[f"{key[0]} {key[1]}"] = {"fits": len(mine), "item_us_median": round(statistics.median(mine), 2),
                                         "item_us_min": min(mine), "item_us_max": max(mine)}
    for f in found:
        print(f"{f['model']:16s} {f['workload']:34s} {f['layer']} {f['comm_blocks']:3d} blocks rank {f['rank']}: "
              f"{f['item_us']:5.2f} µs an item, {f['row_ns']:6.1f} ns a row (residual {f['residual_us']} µs)")
    print(json.dumps(summary, indent=1))
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/comm_item_fit.py " + " ".join(
        [*args.spans, "--blocks", args.blocks, "--out", args.out]), "summary": summary, "fits": found}, indent=1) + "\n")


if __name__ == "__main__":
    main()
