"""Does B0's host-bound time depend on what the machine did just before? (calibrate's b0_host vs bench's B0)

    torchrun --nproc-per-node 2 benchmarks/host_warmth.py --out $OUT/host_warmth.json

On runs 71, 73 and 78 calibrate timed B0 at 8 tokens per GPU (Qwen2-MoE) at 1783-1981 µs while bench's B0
at 256-512 tokens on the same machines took 1100-1150 µs; on runs 76-77 the two agreed within 3-15%. Both
time B0 the same way (a barrier, no spin, CUDA events, median of 20 after 3 warm-ups); what differs is what
ran before: a GPU-bound step in calibrate, a host-bound one (the naive layer) in bench. Here B0 and its
routing plan at 8 tokens are timed, `--rounds` times each, right after each of:
  idle      the host sleeps 1 s (GPU idle too)
  host_busy the host spins in Python for 1 s (GPU idle)
  gpu_busy  the GPU spins ~1 s while the host waits in a synchronize
  b0_busy   B0 itself runs for 1 s (both busy, as in bench after the naive layer)
Prints and writes the medians per condition, slowest rank. Needs torch and the package only.
Run 79 (2x H200, results/measurements/ep2_h200/run79/): the four medians within 11% of each other, one
condition's rounds up to 54% apart: the state before does not matter, the host-bound time is noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from comet_dse.errors import UserError
from comet_dse.kernels.baselines import _plan as b0_plan
from comet_dse.kernels.baselines import moe_sequential
from comet_dse.kernels.reference import MoEWeights
from comet_dse.kernels.timing import environment, join_gpus, median_us
from comet_dse.models import resolve_model

CONDITION_S = 1.0
GPU_SPIN_CYCLES = 2_000_000  # torch.cuda._sleep cycles per call (~1 ms at H200 clocks)


def settle(condition: str, b0) -> None:
    """Put the machine in `condition` for CONDITION_S seconds."""
    end = time.perf_counter() + CONDITION_S
    if condition == "idle":
        time.sleep(CONDITION_S)
    elif condition == "host_busy":
        while time.perf_counter() < end:
            sum(range(1000))
    elif condition == "gpu_busy":
        while torch.cuda.is_available() and time.perf_counter() < end:
            torch.cuda._sleep(GPU_SPIN_CYCLES)
            torch.cuda.synchronize()
    elif condition == "b0_busy":
        while time.perf_counter() < end:
            b0()
        if torch.cuda.is_available():
            torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2-moe-2.7b")
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    try:  # before joining the ranks: a bad name is one line and exit 2 on every rank, nothing left waiting
        m = resolve_model(args.model)
    except UserError as exc:
        print(f"host_warmth.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
    rank, world = join_gpus()  # on a CPU: gloo, a smoke run (the loop instead of torch._grouped_mm; "gpu_busy" is idle)
    cuda = torch.cuda.is_available()
    device, dtype = (torch.device("cuda"), torch.bfloat16) if cuda else (torch.device("cpu"), torch.float32)
    local = m.num_experts // world
    weights = MoEWeights.random(m.num_experts, m.hidden, m.ffn, seed=0, device=device,
                                dtype=dtype).of_rank(rank, world)
    g = torch.Generator().manual_seed(7 + rank)
    ids = torch.randint(0, m.num_experts, (args.tokens, m.top_k), generator=g).to(device)
    x = torch.randn(args.tokens, m.hidden, device=device, dtype=dtype)
    topk_w = torch.rand(args.tokens, m.top_k, device=device).softmax(-1)
    calls = {"plan": lambda: b0_plan(ids, 1, local, world, None, False),
             "b0": lambda: moe_sequential(x, ids, topk_w, weights, None)}
    conditions = ("idle", "host_busy", "gpu_busy", "b0_busy")
    us: dict[str, dict[str, list[float]]] = {c: {name: [] for name in calls} for c in conditions}
    for _ in range(args.rounds):
        for condition in conditions:
            for name, fn in calls.items():
                dist.barrier()
                settle(condition, calls["b0"])
                t = median_us(fn, runs=args.runs, warmup=args.warmup, before_each=dist.barrier)
                worst = torch.tensor([t], device=device, dtype=torch.float64)
                dist.all_reduce(worst, op=dist.ReduceOp.MAX)
                us[condition][name].append(worst.item())
    if rank == 0:
        print(f"{args.model}, {args.tokens} tokens x top-{m.top_k} per GPU, {world} GPUs; median of {args.runs} "
              f"after {args.warmup} warm-ups, slowest rank, {args.rounds} rounds (µs):")
        for condition in conditions:
            print(f"  {condition:10s} " + "  ".join(
                f"{name} {statistics.median(v):7.0f} ({' '.join(f'{t:.0f}' for t in v)})" for name, v in us[condition].items()))
        if args.out:
            Path(args.out).write_text(json.dumps({"environment": environment(), "model": args.model, "tokens": args.tokens,
                                                  "world": world, "runs": args.runs, "warmup": args.warmup,
                                                  "condition_s": CONDITION_S, "us": us}, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
