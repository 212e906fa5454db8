"""`comet-dse bench`: B0, B1 and the fused layer (plus its compute-only and communication-only
variants) on one node of GPUs, launched once per GPU:

    torchrun --nproc-per-node 2 -m comet_dse.cli bench --model qwen2-moe-2.7b --tokens 1024,8192 --comm-blocks 8,16,32

Every rank runs; rank 0 writes one JSON under --out. Imports only torch, triton, numpy and
the package (no simulator dependencies), so it runs on the GPU machines as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from comet_dse.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="qwen2-moe-2.7b", help="preset name or a HuggingFace config.json path")
    parser.add_argument("--shape", help="E,top_k,H,F instead of the model's (small test layers)")
    parser.add_argument("--tokens", default="1024,4096", help="tokens per GPU, comma-separated")
    parser.add_argument("--comm-blocks", default="16", help="communication blocks of both fused layers, comma-separated")
    parser.add_argument("--plan", help="a comet-dse plan: its configuration for each token count, instead of --comm-blocks")
    parser.add_argument("--tile", default="128x128", help="fused GEMM tile BMxBN")
    parser.add_argument("--block-k", type=int, default=64)
    parser.add_argument("--n-splits", type=int, default=4, help="layer1 column splits of H")
    parser.add_argument("--row-order", default="local-first", choices=["local-first", "source-order"])
    parser.add_argument("--chunks", type=int, default=4, help="chunk count of B1")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"], help="default bf16 on GPU, fp32 on CPU")
    parser.add_argument("--programs", type=int, help="fused grid size (default: the SM count)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/measurements")


def _ints(text: str, field: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(field, f"must be comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise UserError(field, f"must be positive integers, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    tokens_list = _ints(args.tokens, "--tokens")
    blocks_list = _ints(args.comm_blocks, "--comm-blocks")
    if args.runs <= 0:
        raise UserError("--runs", f"must be > 0, got {args.runs}")
    try:
        block_m, block_n = (int(v) for v in args.tile.lower().split("x"))
    except ValueError:
        raise UserError("--tile", f"expected BMxBN such as 128x128, got {args.tile!r}") from None
    if args.shape:
        experts, top_k, hidden, ffn = _ints(args.shape, "--shape")
        model_name = f"shape-{args.shape.replace(',', 'x')}"
    else:
        from comet_dse.models import resolve_model

        m = resolve_model(args.model)
        experts, top_k, hidden, ffn, model_name = m.num_experts, m.top_k, m.hidden, m.ffn, m.name
    plan = None
    if args.plan:
        from comet_dse.plan import load_plan

        plan = load_plan(args.plan)

    import torch
    import torch.distributed as dist
    import triton

    from comet_dse.kernels.baselines import moe_chunked, moe_sequential
    from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE
    from comet_dse.kernels.fused_moe import COMM_ONLY, COMPUTE_ONLY
    from comet_dse.kernels.reference import MoEWeights, reference_moe, route
    from comet_dse.kernels.timing import median_us

    for var, value in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
        os.environ.setdefault(var, value)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if experts % world:
        raise UserError("--model", f"{experts} experts do not divide over {world} ranks")
    device = torch.device("cuda") if cuda else torch.device("cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if cuda else torch.float32)
    per_rank = experts // world
    weights = MoEWeights.random(experts, hidden, ffn, seed=args.seed, device=device, dtype=dtype)
    local = weights.local(rank * per_rank, per_rank)

    def timed_us(fn) -> float:
        return round(median_us(fn, runs=args.runs, warmup=args.warmup, before_each=dist.barrier), 2)

    runs = []
    for tokens in tokens_list:
        g = torch.Generator().manual_seed(args.seed * 7919 + tokens * 31 + rank)
        inputs = [torch.randn(tokens, hidden, generator=g).to(device, dtype) for _ in range(3)]  # rotated
        routed = [route(x, weights.router, top_k) for x in inputs]
        knobs = {"programs": args.programs, "block_k": args.block_k}
        configs = [FusedConfig.from_plan(plan, tokens, **knobs)] if plan else [
            FusedConfig(comm_blocks0=b, comm_blocks1=b, block_m=block_m, block_n=block_n, n_splits=args.n_splits,
                        row_order=args.row_order, **knobs) for b in blocks_list]
        for cfg in configs:
            try:
                layer = FusedMoE(local, top_k, max_tokens=tokens, group=None, config=cfg, dtype=dtype)
            except ValueError as exc:
                raise UserError("config", str(exc)) from None
            turn = {"i": 0}

            def rotating(fn):
                def call():
                    turn["i"] = (turn["i"] + 1) % len(inputs)
                    x = inputs[turn["i"]]
                    ids, w = routed[turn["i"]]
                    return fn(x, ids, w)
                return call

            timings = {
                "b0": timed_us(rotating(lambda x, ids, w: moe_sequential(x, ids, w, local))),
                "b1": timed_us(rotating(lambda x, ids, w: moe_chunked(x, ids, w, local, args.chunks))),
                "fused": timed_us(rotating(lambda x, ids, w: layer(x, ids, w))),
                "compute_only": timed_us(rotating(lambda x, ids, w: layer(x, ids, w, mode=COMPUTE_ONLY))),
                "comm_only": timed_us(rotating(lambda x, ids, w: layer(x, ids, w, mode=COMM_ONLY))),
            }
            # correctness of this configuration on fresh inputs, against the fp32 reference
            x = torch.randn(tokens, hidden, generator=g).to(device, dtype)
            ids, w = route(x, weights.router, top_k)
            all_x = [torch.empty_like(x) for _ in range(world)]
            all_ids = [torch.empty_like(ids) for _ in range(world)]
            all_w = [torch.empty_like(w) for _ in range(world)]
            dist.all_gather(all_x, x)
            dist.all_gather(all_ids, ids)
            dist.all_gather(all_w, w)
            expected = reference_moe(torch.cat(all_x), weights, torch.cat(all_ids), torch.cat(all_w))[rank * tokens:(rank + 1) * tokens]
            got = layer(x, ids, w)
            error = torch.tensor([((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()], device=device)
            dist.all_reduce(error, op=dist.ReduceOp.MAX)
            timing = torch.tensor(list(timings.values()), device=device, dtype=torch.float64)
            dist.all_reduce(timing, op=dist.ReduceOp.MAX)  # the slowest rank sets the layer's time
            runs.append({"tokens": tokens, "config": {k: v for k, v in cfg.__dict__.items() if k != "max_spins"},
                         "timings_us": dict(zip(timings, (round(v, 2) for v in timing.tolist()))),
                         "max_rel_error": float(error.item())})
            if rank == 0:
                print(json.dumps(runs[-1]), flush=True)
    if rank == 0:
        driver = ""
        if cuda:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True).stdout.strip().splitlines()[0]
        result = {
            "gpu": torch.cuda.get_device_name() if cuda else "cpu", "gpus": world, "driver": driver,
            "torch": torch.__version__, "triton": triton.__version__, "command": " ".join(sys.argv),
            "model": model_name, "shape": {"experts": experts, "top_k": top_k, "hidden": hidden, "ffn": ffn},
            "ep": world, "tp": 1, "dtype": str(dtype).removeprefix("torch."), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "runs": runs,
        }
        out = Path(args.out) / f"bench-{model_name}-ep{world}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        from comet_dse.files import write_text_atomic

        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    dist.barrier()
    dist.destroy_process_group()
    return 0
