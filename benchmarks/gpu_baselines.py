"""The torch baselines over expert-parallel ranks: the naive layer, B0 and B1 (chunks 2, 4, 8),
timed on the Qwen2-MoE and Mixtral expert shapes and checked against the fp32 reference.

    torchrun --nproc-per-node 2 benchmarks/gpu_baselines.py --out results/measurements/baselines_h100x2.json
    torchrun --nproc-per-node 2 benchmarks/gpu_baselines.py --tokens 64 --shape 8,2,32,48 --out /tmp/x.json  # CPU, gloo

Only torch, triton, numpy and comet_dse.kernels are imported. Each layer: a barrier before
every run, CUDA events (wall clock on CPU), median of --runs after --warmup, inputs rotated
over 3 sets, the slowest rank's median. Error: max |got - ref| / max |ref| on one fresh input,
the worst rank (an expert's output depends on its own token only, so each rank checks its
tokens against the reference with the whole weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

for var, value in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ.setdefault(var, value)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from comet_dse.kernels.baselines import moe_chunked, moe_naive, moe_sequential  # noqa: E402
from comet_dse.kernels.reference import MoEWeights, reference_moe, route  # noqa: E402
from comet_dse.kernels.timing import environment, median_us  # noqa: E402

SHAPES = {"qwen2-moe-2.7b": (64, 4, 2048, 1408), "mixtral-8x7b": (8, 2, 4096, 14336)}  # E, top-k, H, F
TOLERANCE = 3e-2  # bf16 against the fp32 reference, as the fused layer's check


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def environment_of(world: int) -> dict:
    return {**environment(f"torchrun --nproc-per-node {world} {' '.join(sys.argv)}"), "gpus": world,
            "backend": dist.get_backend()}


def worst(values: list[float], device: torch.device) -> list[float]:
    """Each value's maximum over the ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--tokens", default="1024,4096,16384", help="tokens per rank, comma-separated")
    parser.add_argument("--shape", help="E,k,H,F instead of the two model shapes")
    parser.add_argument("--chunks", default="2,4,8", help="B1 chunk counts")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dtype = torch.bfloat16 if cuda else torch.float32
    shapes = {f"shape-{args.shape.replace(',', 'x')}": tuple(ints(args.shape))} if args.shape else SHAPES
    report = {**environment_of(world), "dtype": str(dtype).removeprefix("torch."), "runs": []}

    for name, (experts, top_k, hidden, ffn) in shapes.items():
        if experts % world:
            raise SystemExit(f"{name}: {experts} experts do not divide over {world} ranks")
        per_rank = experts // world
        weights = MoEWeights.random(experts, hidden, ffn, seed=args.seed, device=device, dtype=dtype)
        local = weights.local(rank * per_rank, per_rank)
        layers: dict[str, Callable[..., torch.Tensor]] = {
            "naive": lambda x, ids, w: moe_naive(x, ids, w, local),
            "b0": lambda x, ids, w: moe_sequential(x, ids, w, local),
            **{f"b1_c{c}": (lambda x, ids, w, c=c: moe_chunked(x, ids, w, local, c)) for c in ints(args.chunks)},
        }
        for tokens in ints(args.tokens):
            g = torch.Generator().manual_seed(args.seed * 7919 + tokens * 31 + rank)
            inputs = [torch.randn(tokens, hidden, generator=g).to(device, dtype) for _ in range(4)]
            routed = [route(x, weights.router, top_k) for x in inputs]
            check_x, (check_ids, check_w) = inputs.pop(), routed.pop()  # a fourth input, never timed
            expected = reference_moe(check_x, weights, check_ids, check_w)
            turn = {"i": 0}

            def rotating(fn: Callable[..., torch.Tensor]) -> Callable[[], torch.Tensor]:
                def call() -> torch.Tensor:
                    turn["i"] = (turn["i"] + 1) % len(inputs)
                    return fn(inputs[turn["i"]], *routed[turn["i"]])
                return call

            errors, timings = [], []
            for fn in layers.values():
                got = fn(check_x, check_ids, check_w)
                errors.append(((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item())
                timings.append(median_us(rotating(fn), runs=args.runs, warmup=args.warmup, before_each=dist.barrier))
            errors, timings = worst(errors, device), worst(timings, device)
            timed = dict(zip(layers, (round(t, 1) for t in timings)))
            best_b1 = min((v for k, v in timed.items() if k.startswith("b1_")), default=None)
            row = {"model": name, "experts": experts, "top_k": top_k, "hidden": hidden, "ffn": ffn, "tokens": tokens,
                   "timings_us": timed, "max_rel_error": dict(zip(layers, errors)), "ok": max(errors) < TOLERANCE,
                   "b0_over_naive": round(timed["b0"] / timed["naive"], 3),
                   "best_b1_over_b0": None if best_b1 is None else round(best_b1 / timed["b0"], 3)}
            report["runs"].append(row)
            if rank == 0:
                print(json.dumps(row), flush=True)
            del inputs, routed, expected
        del weights, local, layers
        if cuda:
            torch.cuda.empty_cache()

    if rank == 0:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
