"""Why bench's torch._grouped_mm runs 1.0-1.65x slower than calibrate's table prices it: uneven rows, or timing?

    python benchmarks/grouped_mm_uneven.py --out $OUT/grouped_mm_uneven.json        # one GPU is enough

`calibrate` times torch._grouped_mm with every expert given the same rows, each call alone behind a device
spin; `bench` times GEMM0 + GEMM1 on the rows a uniform routing sent to a rank (uneven: multinomial), as one
CUDA graph replayed after a barrier. On run 76 (results/validation/grouped_mm_gap_run76.json) bench's figure
was 1.15x what the simulator reads off calibrate's table at the median, 1.65x on Mixtral at 256-512 tokens.
Here, on one GPU, per model and mean rows per expert, both GEMMs of one EP rank's experts are timed with equal
and with multinomial rows (the same total), each three ways (alone behind a spin; in a graph after a sync; back to
back after 0.3 s of the same call, the GPU under continuous load as in a bench sweep), so the causes come apart.
Inputs and weights rotate over 3 sets, as calibrate's. Needs torch, numpy and the
package; on a CPU it runs (slowly, fp32, small shapes via --shape) to check itself.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from comet_dse.errors import UserError
from comet_dse.kernels.timing import capture_graph, environment, median_us, spin_device
from comet_dse.models import resolve_model

ROTATE = 3
HOWS = ("alone", "graph", "back_to_back")
RATIOS = ("uneven_over_equal_alone", "uneven_over_equal_graph", "graph_over_alone_equal", "back_to_back_over_alone_equal")
SUSTAIN_S = 0.3  # back to back: the call runs this long before the timed ones (a bench sweep's load)


def row_counts(mean_rows: int, experts: int, seed: int) -> dict[str, list[int]]:
    """Equal rows, and what a uniform routing of as many rows gives each expert (multinomial)."""
    total = mean_rows * experts
    uneven = np.random.default_rng(seed).multinomial(total, [1.0 / experts] * experts)
    return {"equal": [mean_rows] * experts, "uneven": [int(c) for c in uneven]}


def back_to_back_us(call, runs: int) -> float:
    """µs per call of `runs` calls in a row after SUSTAIN_S of the same, nothing between them: the GPU under
    continuous load, as in a bench sweep's replays (run 84: Mixtral's forward 8150-8300 µs alone, 9100-9300 so)."""
    end = time.perf_counter() + SUSTAIN_S
    while time.perf_counter() < end:
        call()
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # one call at a time: the host never runs far ahead
    if not torch.cuda.is_available():
        t0 = time.perf_counter()
        for _ in range(runs):
            call()
        return (time.perf_counter() - t0) * 1e6 / runs
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(runs):
        call()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) * 1e3 / runs


def time_call(call, how: str, runs: int, warmup: int) -> float:
    """µs of call: alone behind a device spin (calibrate; median), replayed as a CUDA graph after a sync (bench;
    median), or back to back under continuous load (mean of `runs` in a row)."""
    cuda = torch.cuda.is_available()
    if how == "back_to_back":
        return back_to_back_us(call, runs)
    if how == "alone" or not cuda:
        return median_us(call, runs=runs, warmup=warmup, before_each=spin_device if cuda else None)
    graph, _ = capture_graph(call)
    return median_us(graph.replay, runs=runs, warmup=warmup, before_each=torch.cuda.synchronize)


def parse_inputs(args: argparse.Namespace) -> tuple[list[tuple[str, int, int, int]], list[int]]:
    """(name, experts, H, F) of each shape and the mean rows per expert; a bad value: one line, exit 2."""
    def positive_ints(text: str, field: str, count: int | None = None) -> list[int]:
        values = text.split(",")
        if (count is not None and len(values) != count) or not all(v.strip().isdigit() and int(v) > 0 for v in values):
            fail(f"{field}: expected {count or 'comma-separated'} positive integers, got {text!r}")
        return [int(v) for v in values]

    rows = positive_ints(args.rows, "--rows")
    if args.shape:
        e, _, h, f = positive_ints(args.shape, "--shape", 4)
        shapes = [("shape", e, h, f)]
    else:
        try:
            shapes = [(m.name, m.num_experts, m.hidden, m.ffn) for m in map(resolve_model, args.models.split(","))]
        except UserError as exc:
            fail(f"--models: {exc.message}")
    if args.ep < 1 or any(e % args.ep for _, e, _, _ in shapes):
        fail(f"--ep: must be >= 1 and divide every shape's experts, got {args.ep}")
    return shapes, rows


def fail(text: str) -> NoReturn:
    print(f"grouped_mm_uneven.py: error: {text}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="qwen2-moe-2.7b,mixtral-8x7b,phi-3.5-moe")
    parser.add_argument("--shape", help="E,top_k,H,F instead of the models (a CPU check)")
    parser.add_argument("--ep", type=int, default=2, help="the rank's experts are E / EP (default 2)")
    parser.add_argument("--rows", default="64,128,256,512,1024,2048,4096", help="mean rows per expert")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    shapes, mean_rows_list = parse_inputs(args)
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    g = torch.Generator(device=device).manual_seed(args.seed)
    points = []
    for name, experts, hidden, ffn in shapes:
        local = experts // args.ep
        most = local * max(mean_rows_list) * 2  # room for the largest uneven draw
        for gemm, (k, n) in (("gemm0", (hidden, 2 * ffn)), ("gemm1", (ffn, hidden))):
            sets = [(torch.randn(most, k, device=device, dtype=dtype, generator=g),
                     torch.randn(local, k, n, device=device, dtype=dtype, generator=g) * k ** -0.5) for _ in range(ROTATE)]
            turn = itertools.count()
            for mean_rows in mean_rows_list:
                row = {"model": name, "gemm": gemm, "K": k, "N": n, "experts": local, "mean_rows": mean_rows}
                for kind, counts in row_counts(mean_rows, local, args.seed + mean_rows).items():
                    ends = torch.tensor(np.cumsum(counts), device=device, dtype=torch.int32)
                    total = int(sum(counts))

                    def call(ends=ends, total=total) -> torch.Tensor:
                        a, w = sets[next(turn) % ROTATE]
                        return torch._grouped_mm(a[:total], w, offs=ends)

                    row[f"{kind}_rows"] = counts
                    for how in HOWS:
                        row[f"{kind}_{how}_us"] = round(time_call(call, how, args.runs, args.warmup), 1)
                row["uneven_over_equal_alone"] = round(row["uneven_alone_us"] / row["equal_alone_us"], 3)
                row["uneven_over_equal_graph"] = round(row["uneven_graph_us"] / row["equal_graph_us"], 3)
                row["graph_over_alone_equal"] = round(row["equal_graph_us"] / row["equal_alone_us"], 3)
                row["back_to_back_over_alone_equal"] = round(row["equal_back_to_back_us"] / row["equal_alone_us"], 3)
                points.append(row)
                print(json.dumps({k_: v for k_, v in row.items() if not k_.endswith("_rows")}), flush=True)
    summary = {key: round(statistics.median(p[key] for p in points), 3) for key in RATIOS}
    print("medians:", json.dumps(summary))
    Path(args.out).write_text(json.dumps({**environment(), "ep": args.ep, "dtype": str(dtype).removeprefix("torch."),
                                          "runs": args.runs, "summary": summary, "points": points}, indent=1) + "\n")


if __name__ == "__main__":
    main()
