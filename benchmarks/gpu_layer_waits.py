"""What the fused layer's kernels lose to waiting for each other, and what to sharing the GPU: layer0 and
layer1 each timed alone behind a device spin, as bench's per-layer figures (`layer0:<variant>`), four ways:

    full          FULL mode: remote tiles wait for their rows (layer0), pushes for their tiles (layer1)
    nowait        FULL mode with every wait given up at once (max_spins 0): both roles run side by side
                  in the one kernel as fast as they can; the timing only (rows are read before they land)
    compute_only  the same kernel's GEMMs alone
    comm_only     its copies alone

full / nowait is what the waits cost (the pipeline's dependencies); nowait / comm_only is how much the GEMM
beside them in the same kernel slows the copies (calibrate's copy_contention and push_contention time that
with the copies and the GEMM in two kernels on two streams, at one shape). On bench's workload (its routing,
seed and defaults), or calibrate's (`--rows`: top-1, round-robin, that many rows per local expert).

    torchrun --nproc-per-node 2 benchmarks/gpu_layer_waits.py --model qwen2-moe-2.7b --tokens 4096,8192,16384 \\
        --out results/measurements/layer_waits_qwen.json

Imports only torch, triton and the package.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.distributed as dist
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE
from comet_dse.kernels.fused_moe import COMM_ONLY, COMPUTE_ONLY, FULL
from comet_dse.kernels.timing import join_ranks, line_up, median_us, spin_device, write_and_leave
from comet_dse.models import resolve_model
from gpu_layer_copies import layer_workloads, slowest  # the workloads and the reduction (benchmarks/)

WAYS = ("full", "nowait", "compute_only", "comm_only")
MODE_OF = {"full": FULL, "nowait": FULL, "compute_only": COMPUTE_ONLY, "comm_only": COMM_ONLY}


def layer_times(layer: FusedMoE, inputs: tuple, runs: int) -> dict[str, float]:
    """This rank's median µs of `layer<i>:<way>` for both kernels and every way, each launch from reset flags
    (layer0) or counters (layer1) behind a barrier, the GPUs lined up and a device spin, as bench times them."""
    token = torch.zeros(1, device=layer.device)
    found = {}

    def time(fn: Callable[[], None], reset: torch.Tensor) -> float:
        def prepare() -> None:
            reset.zero_()
            dist.barrier()
            line_up(token, queued=layer.device.type == "cuda")
            spin_device()
        return median_us(fn, runs=runs, warmup=2, before_each=prepare)

    for way in WAYS:
        mode = MODE_OF[way]
        layer(*inputs, mode=mode)  # the plan this variant's kernels run on
        plan = layer.plan
        if way == "nowait":
            layer.check()  # the figures with waits were honest: no wait gave up
        with layer.without_waits() if way == "nowait" else nullcontext():
            found[f"layer0:{way}"] = time(lambda: layer._launch_layer0(plan, mode), layer.flags)
            found[f"layer1:{way}"] = time(lambda: layer._launch_layer1(plan, mode), layer.counters)
    layer.check()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2-moe-2.7b", help="preset name or a HuggingFace config.json path")
    parser.add_argument("--tokens", default="8192", help="tokens per GPU, comma-separated (bench's routing)")
    parser.add_argument("--rows", type=int, help="calibrate's workload instead: top-1 round-robin, rows per local expert")
    parser.add_argument("--blocks", default="4,8,16,32", help="communication blocks of both layers, comma-separated")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="bench's seed of the weights and inputs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cuda, device = join_ranks()
    rank, world = dist.get_rank(), dist.get_world_size()
    dtype = torch.bfloat16 if cuda else torch.float32
    model = resolve_model(args.model)
    # --rows: calibrate's workload instead of bench's
    workloads = layer_workloads(model, [] if args.rows else [int(t) for t in args.tokens.split(",")],
                                [args.rows] if args.rows else [], args.seed, rank, world, device, dtype)
    rows = []
    for label, local, top_k, inputs in workloads:
        tokens = inputs[0].shape[0]
        for n in (int(b) for b in args.blocks.split(",")):
            layer = FusedMoE(local, top_k, tokens, config=FusedConfig(comm_blocks0=n, comm_blocks1=n), dtype=dtype)
            found = layer_times(layer, inputs, args.runs)
            names = list(found)
            row = {"workload": label, "tokens": tokens, "comm_blocks": n,
                   "us": dict(zip(names, (round(v, 1) for v in slowest([found[k] for k in names], device))))}
            us = row["us"]
            for i in (0, 1):
                row[f"layer{i}_waits"] = round(us[f"layer{i}:full"] / us[f"layer{i}:nowait"], 3)
                row[f"layer{i}_copies_beside_gemm"] = round(us[f"layer{i}:nowait"] / us[f"layer{i}:comm_only"], 3)
            rows.append(row)
            if rank == 0:
                print(json.dumps(row), flush=True)
            del layer
            if cuda:
                torch.cuda.empty_cache()
    write_and_leave(args.out, {"gpus": world, "model": model.name, "runs_per_figure": args.runs,
                               "layer_timing": "spin", "runs": rows})


if __name__ == "__main__":
    main()
