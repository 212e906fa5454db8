"""Where the copy-engine variant's host time goes: its eager forward traced on the host and the GPU at once.

    torchrun --nproc-per-node 2 benchmarks/copy_engine_trace.py --model qwen2-moe-2.7b --tokens 1024,8192 \
        --out results/measurements/copy_engine_trace.json

The copy-engine variant (comm_blocks0 = 0) syncs with the host before its copies and launches the rest
eagerly. For each token count: the forward's time as bench times it (queued behind a device spin, median
of 20, slowest rank), then PROFILED_FORWARDS forwards traced one by one with torch.profiler (CPU and CUDA),
each after the same line-up. From each trace, relative to the first GPU kernel of the forward (µs): when
the host finished issuing the copies (after its sync), finished launching layer0 and layer1, and returned;
when the GPU ran the copies, layer0, layer1, the barrier after them and the combine. The gap between
layer1's end and the barrier's start is the GPU waiting for the host's later launches; medians over the
traces, every rank's. Imports only torch, triton, numpy and the package.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE
from comet_dse.kernels.reference import MoEWeights, route
from comet_dse.kernels.timing import join_gpus, line_up, median_us, write_and_leave
from comet_dse.models import resolve_model
from gpu_profile import slowest

PROFILED_FORWARDS = 5
HOST_STEPS = ("forward", "copy-engine dispatch", "launch layer0", "launch layer1")
GPU_KERNELS = ("layer0_kernel", "layer1_kernel", "barrier_kernel", "combine_kernel")


def annotate(layer: FusedMoE) -> None:
    """Wrap the layer's host steps in profiler ranges (this instance only)."""
    from torch.profiler import record_function

    for attr, label in (("_copy_engine_dispatch", "copy-engine dispatch"), ("_launch_layer0", "launch layer0"),
                        ("_launch_layer1", "launch layer1")):
        step = getattr(layer, attr)

        def wrapped(*args, _step=step, _label=label):
            with record_function(_label):
                return _step(*args)
        setattr(layer, attr, wrapped)


def trace_one(forward, token: torch.Tensor) -> dict:
    """One forward after the queued line-up, traced (read_trace)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    dist.barrier()
    line_up(token, queued=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with record_function("forward"):
            forward()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:
        prof.export_chrome_trace(trace.name)
        return read_trace(json.loads(Path(trace.name).read_text())["traceEvents"])


def read_trace(events: list[dict]) -> dict:
    """A traced forward's host steps (when each ended) and GPU spans (the last of each kernel, the copies from the
    first to the last), in µs from its first GPU kernel; the line-up's kernels (NCCL, the spin) left out."""
    events = [e for e in events if e.get("ph") == "X"]
    host = {e["name"]: (e["ts"], e["ts"] + e["dur"]) for e in events
            if e.get("cat") == "user_annotation" and e["name"] in HOST_STEPS}
    gpu = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
                 if e.get("cat") in ("kernel", "gpu_memcpy") and e["ts"] >= host["forward"][0])
    gpu = [g for g in gpu if not any(k in g[2].lower() for k in ("nccl", "allreduce", "sleep", "spin"))]
    t0 = gpu[0][0]
    out = {"host forward start": round(host["forward"][0] - t0, 1)}
    out.update({f"host {name} end": round(end - t0, 1) for name, (_, end) in host.items()})
    for key in GPU_KERNELS:
        spans = [(s, e) for s, e, name in gpu if key in name]
        if spans:
            out[f"gpu {key} start"], out[f"gpu {key} end"] = round(spans[-1][0] - t0, 1), round(spans[-1][1] - t0, 1)
    copies = [(s, e) for s, e, name in gpu if "memcpy" in name.lower()]
    if copies:
        out["gpu copies start"], out["gpu copies end"] = round(copies[0][0] - t0, 1), round(copies[-1][1] - t0, 1)
    out["gpu end"] = round(max(e for _, e, _ in gpu) - t0, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2-moe-2.7b")
    parser.add_argument("--tokens", default="1024,8192")
    parser.add_argument("--comm-blocks1", type=int, default=16)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rank, world = join_gpus()
    model = resolve_model(args.model)
    weights = MoEWeights.random(model.num_experts, model.hidden, model.ffn, seed=0, device=torch.device("cuda"),
                                dtype=torch.bfloat16)
    local = weights.of_rank(rank, world)
    token = torch.zeros(1, device="cuda")
    runs = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        g = torch.Generator().manual_seed(tokens * 31 + rank)
        x = torch.randn(tokens, model.hidden, generator=g).to("cuda", torch.bfloat16)
        ids, w = route(x, weights.router, model.top_k)
        layer = FusedMoE(local, model.top_k, tokens, dtype=torch.bfloat16,
                         config=FusedConfig(comm_blocks0=0, comm_blocks1=args.comm_blocks1, tile_layout="by-source"))
        forward = lambda: layer(x, ids, w)  # noqa: E731
        lined_up = lambda: (dist.barrier(), line_up(token, queued=True))  # noqa: E731  as bench --align queued
        us = slowest(median_us(forward, runs=20, warmup=3, before_each=lined_up))
        annotate(layer)
        traces = [trace_one(forward, token) for _ in range(PROFILED_FORWARDS)]
        layer.check()
        mine = {key: statistics.median(tr[key] for tr in traces) for key in traces[0]
                if all(key in tr for tr in traces)}
        per_rank: list = [None] * world
        dist.all_gather_object(per_rank, mine)
        row = {"tokens": tokens, "comm_blocks0": 0, "comm_blocks1": args.comm_blocks1, "fused_us": us,
               "traced_medians_by_rank": per_rank}
        runs.append(row)
        if rank == 0:
            print(json.dumps(row), flush=True)
        del layer
        torch.cuda.empty_cache()
    write_and_leave(args.out, {"gpus": world, "model": model.name, "align": "queued",
                               "profiled_forwards": PROFILED_FORWARDS, "runs": runs})


if __name__ == "__main__":
    main()
