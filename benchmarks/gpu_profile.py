"""Where the fused layer's time goes: per-kernel GPU time of one forward, by configuration.

    torchrun --nproc-per-node 2 benchmarks/gpu_profile.py --model qwen2-moe-2.7b --tokens 1024,8192 \
        --configs 128x128/128/s3/w8,64x128/128/s4/w4 --out results/measurements/profile.json

A configuration is BMxBN/BN1/sS/wW (tile, layer1 tile width, pipeline stages, warps). For each
model, token count and configuration: the median of 20 CUDA-graph replays of `fused` and
`compute_only` (slowest rank), and the GPU time of every kernel of one forward from
torch.profiler over 5 eager forwards, grouped as layer0, layer1, combine, barriers and the
plan's small torch ops; `--graph-trace`: the graph replays themselves traced (each kernel's start and
end: the span, the idle gaps between kernels, the kernel time per category; one entry per rank).
Imports only torch, triton, numpy and the package.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE
from comet_dse.kernels.fused_moe import COMM_ONLY, COMPUTE_ONLY, FULL
from comet_dse.kernels.reference import MoEWeights, route
from comet_dse.kernels.timing import join_gpus, median_us, write_and_leave
from comet_dse.models import resolve_model

PROFILED_FORWARDS = 5
CONFIG = re.compile(r"(\d+)x(\d+)/(\d+)/s(\d+)/w(\d+)")


def parse_config(text: str, comm_blocks: int, tile_order: str = "layout", tile_layout: str = "merged") -> FusedConfig:
    match = CONFIG.fullmatch(text)
    if not match:
        raise SystemExit(f"--configs: expected BMxBN/BN1/sS/wW such as 128x128/128/s3/w8, got {text!r}")
    bm, bn, bn1, stages, warps = (int(v) for v in match.groups())
    return FusedConfig(comm_blocks0=comm_blocks, comm_blocks1=comm_blocks, block_m=bm, block_n=bn, block_n1=bn1,
                       num_stages=stages, num_warps=warps, tile_order=tile_order, tile_layout=tile_layout)


def category(name: str) -> str:
    for key in ("layer0_kernel", "layer1_kernel", "combine_kernel", "barrier_kernel", "place_own_kernel", "plan_kernel"):
        if key in name:
            return key.removesuffix("_kernel")
    return "plan and packing (torch ops)"


def kernel_breakdown(forward) -> dict[str, float]:
    """GPU µs per kernel category of one forward, averaged over PROFILED_FORWARDS."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILED_FORWARDS):
            forward()
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        us = getattr(event, "device_time_total", None)
        if us is None:
            us = getattr(event, "cuda_time_total", 0.0)
        if us and getattr(event, "device_type", None) is not None and "CUDA" in str(event.device_type):
            totals[category(event.key)] += us / PROFILED_FORWARDS
    return {k: round(v, 1) for k, v in sorted(totals.items())}


def kernel_timeline(kernels: list[tuple[float, float, str]]) -> dict:
    """One replay's kernels (start µs, end µs, name), sorted by start: the span from the first start to the last
    end, the time at least one kernel ran (kernels may overlap), the idle time between them, the three largest
    gaps with the kernels on either side, and the kernel time per category."""
    busy, reach, last, gaps, by_category = 0.0, kernels[0][0], "", [], defaultdict(float)
    for start, end, name in kernels:
        by_category[category(name)] += end - start
        if start > reach:
            gaps.append((start - reach, last[:60], name[:60]))
        busy += max(0.0, end - max(start, reach))
        if end > reach:
            reach, last = end, name  # the kernel the GPU is busy with until `reach`
    span = reach - kernels[0][0]
    return {"span_us": span, "busy_us": busy, "idle_us": span - busy, "kernels": len(kernels),
            "by_category": dict(by_category),
            "largest_gaps": [{"us": round(g, 1), "after": a, "before": b} for g, a, b in sorted(gaps)[-3:][::-1]]}


def graph_breakdown(step) -> dict:
    """Where a graphed forward's time goes on the GPU: each of PROFILED_FORWARDS replays (after a barrier, as it
    is timed) traced alone; from its kernels (start, end): the span from the first kernel's start to the last
    one's end, the time some kernel ran, the idle gaps between them (the largest, with the kernels around it),
    and the kernel time per category. Medians over the replays."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    replays = []
    for _ in range(PROFILED_FORWARDS):
        dist.barrier()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step.replay()
            torch.cuda.synchronize()
        with tempfile.NamedTemporaryFile(suffix=".json") as trace:
            prof.export_chrome_trace(trace.name)
            events = json.loads(Path(trace.name).read_text())["traceEvents"]
        kernels = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
                         if e.get("cat") == "kernel" and "dur" in e)
        if kernels:  # (no early return: every rank must reach each barrier above)
            replays.append(kernel_timeline(kernels))
    if not replays:
        return {"error": "the profiler saw no kernels of the graph replays"}
    mid = sorted(replays, key=lambda r: r["span_us"])[len(replays) // 2]
    return {"span_us": round(mid["span_us"], 1), "busy_us": round(mid["busy_us"], 1), "idle_us": round(mid["idle_us"], 1),
            "kernels": mid["kernels"], "kernels_us": {k: round(v, 1) for k, v in sorted(mid["by_category"].items())},
            "largest_gaps": mid["largest_gaps"], "spans_us": [round(r["span_us"], 1) for r in replays]}


def slowest(value: float) -> float:
    t = torch.tensor([value], device="cuda")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return round(float(t.item()), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2-moe-2.7b")
    parser.add_argument("--tokens", default="1024,8192")
    parser.add_argument("--configs", default="128x128/128/s3/w8")
    parser.add_argument("--comm-blocks", type=int, default=8)
    parser.add_argument("--tile-orders", default="layout", help="comma-separated: layout, expert")
    parser.add_argument("--tile-layout", default="merged", help="merged or by-source")
    parser.add_argument("--graph-trace", action="store_true",
                        help="also trace each variant's graph replays: span, idle gaps and kernel time per category")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rank, world = join_gpus()
    model = resolve_model(args.model)
    weights = MoEWeights.random(model.num_experts, model.hidden, model.ffn, seed=0, device=torch.device("cuda"),
                                dtype=torch.bfloat16)
    local = weights.of_rank(rank, world)
    runs = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        g = torch.Generator().manual_seed(tokens * 31 + rank)
        x = torch.randn(tokens, model.hidden, generator=g).to("cuda", torch.bfloat16)
        ids, w = route(x, weights.router, model.top_k)
        for text, order in ((t, o) for t in args.configs.split(",") for o in args.tile_orders.split(",")):
            cfg = parse_config(text, args.comm_blocks, order, args.tile_layout)
            try:
                layer = FusedMoE(local, model.top_k, tokens, config=cfg, dtype=torch.bfloat16)
            except ValueError as exc:
                if rank == 0:
                    print(f"skip {text}: {exc}", flush=True)
                continue
            row = {"tokens": tokens, "config": text, "comm_blocks": args.comm_blocks, "tile_order": order,
                   "tile_layout": cfg.layout(world)}
            for name, mode in (("fused", FULL), ("compute_only", COMPUTE_ONLY), ("comm_only", COMM_ONLY)):
                step = layer.graphed(tokens, mode)
                step.set_inputs(x, ids, w)
                row[f"{name}_us"] = slowest(median_us(step.replay, runs=20, warmup=3, before_each=dist.barrier))
                row[f"{name}_kernels_us"] = kernel_breakdown(lambda m=mode: layer(x, ids, w, mode=m))
                if args.graph_trace:  # every rank's: the slower one's gaps are where the other waits
                    per_rank: list = [None] * world
                    dist.all_gather_object(per_rank, graph_breakdown(step))
                    row[f"{name}_graph"] = per_rank
            layer.check()
            runs.append(row)
            if rank == 0:
                print(json.dumps(row), flush=True)
            del layer, step
            torch.cuda.empty_cache()
    write_and_leave(args.out, {"gpus": world, "model": model.name, "runs": runs})


if __name__ == "__main__":
    main()
