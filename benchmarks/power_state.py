"""How fast a GPU runs a stream of GEMM calls that starts after an idle gap, against the same calls in the
sustained state (back to back at the board's power cap).

    torchrun --nproc-per-node 1 benchmarks/power_state.py --out results/measurements/<...>/power_state.json

`bench` times every call after a host barrier and a ~500 µs device spin; `calibrate` times the fused kernels'
GEMM tables back to back, at the cap (`kernels/timing.py` sustained_us). A call that starts after a gap may run
faster for a while, until the board's power controller has brought the clock down. This times chains of k calls
(one CUDA graph) after a host-side idle gap of `--gaps` ms and a device spin, for k = 1, 2, 4, ... up to about
`--chain-ms` ms of work, and the same call sustained; per chain the time per call over the sustained one. Two calls:
cuBLAS `torch.mm` (4096 x 4096 x 4096, bf16) and the fused layer's two launches, compute-only, on a model's EP=2
local experts at `--rows` rows each (as calibrate's fused table times them). Imports only torch, triton, numpy
and the package. Sample `nvidia-smi` beside it to see the clock.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
from comet_dse.kernels.calibration import plan_for_rows
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE
from comet_dse.kernels.fused_moe import COMPUTE_ONLY
from comet_dse.kernels.reference import MoEWeights
from comet_dse.kernels.timing import capture_graph, environment, join_gpus, spin_device, sustained_us
from comet_dse.models import resolve_model

DTYPE = torch.bfloat16


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mixtral-8x7b")
    p.add_argument("--rows", type=int, default=512, help="rows per local expert of the fused call")
    p.add_argument("--gaps", default="0.2,2,20", help="host-side idle ms before the spin, comma-separated")
    p.add_argument("--chain-ms", type=float, default=40.0, help="the longest chain's work, ms (sustained)")
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--out", required=True)
    return p.parse_args()


def mm_call() -> callable:
    a, b = (torch.randn(4096, 4096, device="cuda", dtype=DTYPE) for _ in range(2))
    c = torch.empty(4096, 4096, device="cuda", dtype=DTYPE)
    return lambda: torch.mm(a, b, out=c)


def fused_call(model_name: str, rows: int) -> callable:
    model = resolve_model(model_name)
    local = model.num_experts // 2  # EP=2's local experts
    g = torch.Generator("cuda").manual_seed(0)
    w13 = torch.randn(local, model.hidden, 2 * model.ffn, generator=g, device="cuda", dtype=DTYPE)
    w2 = torch.randn(local, model.ffn, model.hidden, generator=g, device="cuda", dtype=DTYPE)
    w13, w2 = w13 * model.hidden ** -0.5, w2 * model.ffn ** -0.5
    weights = MoEWeights(torch.empty(model.hidden, local, device="cuda"), w13, w2)  # the router is not used
    layer = FusedMoE(weights, 1, local * rows, None, config=FusedConfig(comm_blocks0=8, comm_blocks1=8), dtype=DTYPE)
    x = torch.randn(local * rows, model.hidden, device="cuda", dtype=DTYPE)
    plan = plan_for_rows(layer, x, [rows] * local)

    def call() -> None:
        layer._launch_layer0(plan, COMPUTE_ONLY)
        layer._launch_layer1(plan, COMPUTE_ONLY)
    return call


def chain_us(call, k: int, gap_ms: float, runs: int) -> float:
    """Median µs of a graph of k calls replayed after a host-side idle gap and a device spin (as bench times a call:
    its host barrier, then the spin)."""
    graph, _ = capture_graph(lambda: [call() for _ in range(k)])
    times = []
    for i in range(runs + 2):
        torch.cuda.synchronize()
        time.sleep(gap_ms / 1e3)
        spin_device()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end) * 1e3)
    del graph
    return statistics.median(times)


def measure(name: str, call, args) -> dict:
    def at_cap() -> float:  # µs per call back to back, as calibrate's sustained tables time it
        return sustained_us(lambda: [call() for _ in range(8)], runs=10, calls=8, sustain_s=0.5)

    sustained = at_cap()
    most = max(1, int(args.chain_ms * 1e3 / sustained))
    chains = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= most]
    out = {"call": name, "sustained_us": round(sustained, 2), "chains": chains, "gaps_ms": {}}
    for gap in (float(g) for g in args.gaps.split(",")):
        per_call = [chain_us(call, k, gap, args.runs) / k for k in chains]
        out["gaps_ms"][str(gap)] = {"us_per_call": [round(u, 2) for u in per_call],
                                    "over_sustained": [round(u / sustained, 4) for u in per_call]}
        print(f"{name} gap {gap} ms: sustained {sustained:.1f} µs/call; per call / sustained at k="
              + ", ".join(f"{k}: {u / sustained:.3f}" for k, u in zip(chains, per_call)), flush=True)
    # the sustained figure again at the end: the state drifts over a run
    out["sustained_after_us"] = round(at_cap(), 2)
    return out


def main() -> None:
    args = parse_args()
    join_gpus()
    result = {**environment(), "model": args.model, "rows": args.rows, "calls": []}
    result["calls"].append(measure("torch.mm 4096^3", mm_call(), args))
    result["calls"].append(measure(f"fused layer0+layer1 compute-only, {args.model}, {args.rows} rows x EP=2 experts",
                                   fused_call(args.model, args.rows), args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
