"""The fused layer's two GEMM launches under kernel variants, beside torch._grouped_mm on the same rows.

    torchrun --nproc-per-node 2 benchmarks/gpu_gemm_variants.py --out results/measurements/ep2_h200/gemm_variants/gemm_variants.json

Each rank works alone (a one-rank process group, as calibrate's fused GEMM table): layer0
(GEMM0 + SwiGLU) and layer1 (GEMM1) of a FusedMoE with a model's EP=2 local experts, compute-only,
each launch timed alone behind a ~500 µs device spin (the launch is enqueued before the GPU gets
there), at the grid minus `--comm-blocks` compute programs. Rows per local expert: "equal" (every
expert `--equal-rows`) and "routed" (the rows one rank receives in `comet-dse bench` at
`--tokens` tokens per GPU, multinomial over the experts, seeded). Variants are FusedConfig
overrides; the baseline runs on every rank and the others are dealt round-robin, so each variant
compares with the baseline measured on its own GPU. Imports only torch, triton, numpy and the package.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from comet_dse.kernels.calibration import plan_for_rows
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE
from comet_dse.kernels.fused_moe import COMPUTE_ONLY
from comet_dse.kernels.grouped_gemm import sm_count
from comet_dse.kernels.reference import MoEWeights
from comet_dse.kernels.timing import SPIN_CYCLES, environment, join_gpus, join_ranks, median_us
from comet_dse.models import resolve_model

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"  # the CPU (Triton's interpreter, fp32) only checks that the script runs
DTYPE = torch.bfloat16 if CUDA else torch.float32
BASE = "base"
HALVES = {"gate_up": "halves", "tma_store": False, "num_stages": 3}  # the kernels before 2026-11-26's defaults
PAIRS_TMA = {"gate_up": "pairs", "tma_store": True, "num_stages": 3}  # the defaults of 2026-11-26 (before layer1's own stages)
# name -> FusedConfig overrides ("programs" as a multiple of the SM count); each states both GEMM0 knobs and
# the pipeline depth, and layer1 runs the variant's num_stages unless it names num_stages1 (time_variant): the
# knobs the variants compare do not move with FusedConfig's defaults (tile sizes, block_n1 and the rest do)
VARIANTS = {
    BASE: HALVES,
    "stages4": {**HALVES, "num_stages": 4},
    "pairs": {**HALVES, "gate_up": "pairs"},
    "tma_store": {**HALVES, "tma_store": True},
    "pairs_tma": PAIRS_TMA,
    "pairs_tma_stages4": {**PAIRS_TMA, "num_stages": 4},
    "pairs_tma_layer1_stages4": {**PAIRS_TMA, "num_stages1": 4},  # the defaults since, where F <= 2048
    "k128_stages2": {**HALVES, "block_k": 128, "num_stages": 2},
    "m64_two_per_sm": {**HALVES, "block_m": 64, "num_warps": 4, "num_stages": 2, "programs": 2},
    "m64_two_per_sm_pairs": {**HALVES, "block_m": 64, "num_warps": 4, "num_stages": 2, "programs": 2, "gate_up": "pairs"},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="qwen2-moe-2.7b:1024,mixtral-8x7b:4096",
                   help="MODEL:EQUAL_ROWS pairs, comma-separated")
    p.add_argument("--tokens", type=int, default=8192, help="tokens per GPU of the routed rows")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"from {', '.join(VARIANTS)}")
    p.add_argument("--comm-blocks", type=int, default=8, help="programs left to communication (per SM)")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    unknown = [v for v in a.variants.split(",") if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return a


def routed_counts(experts: int, rows: int, seed: int) -> list[int]:
    """`rows` rows over `experts` experts, each row to one expert uniformly at random."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, experts, (rows,), generator=g)
    return torch.bincount(picks, minlength=experts).tolist()


def time_launch(fn) -> float:
    return median_us(fn, runs=ARGS.runs, warmup=3, before_each=lambda: CUDA and torch.cuda._sleep(SPIN_CYCLES))


def time_variant(name: str, model, weights: MoEWeights, rows: dict[str, list[int]], group) -> dict:
    knobs = dict(VARIANTS[name])
    sms = sm_count(DEVICE)
    per_sm = knobs.pop("programs", 1)
    knobs.setdefault("num_stages1", knobs.get("num_stages", FusedConfig.num_stages))  # not the default's rule
    cfg = FusedConfig(comm_blocks0=ARGS.comm_blocks * per_sm, comm_blocks1=ARGS.comm_blocks * per_sm,
                      programs=sms * per_sm, **knobs)
    most = max(sum(c) for c in rows.values())
    layer = FusedMoE(weights, 1, most, group, config=cfg, dtype=DTYPE)
    x = torch.randn(most, model.hidden, device=DEVICE, dtype=DTYPE)
    out = {}
    for kind, counts in rows.items():
        plan = plan_for_rows(layer, x, counts)
        out[kind] = {"layer0_us": round(time_launch(lambda: layer._launch_layer0(plan, COMPUTE_ONLY)), 1),
                     "layer1_us": round(time_launch(lambda: layer._launch_layer1(plan, COMPUTE_ONLY)), 1)}
    return {"config": dict(cfg.__dict__), **out}


def grouped_mm(weights: MoEWeights, rows: dict[str, list[int]], hidden: int) -> dict:
    """torch._grouped_mm GEMM0 (on the (K, 2F) weight) and GEMM1 on the same rows."""
    w13, w2 = weights.w_gate_up.to(DTYPE), weights.w_down.to(DTYPE)
    out = {}
    for kind, counts in rows.items():
        total = sum(counts)
        ends = torch.tensor(counts, device=DEVICE).cumsum(0).to(torch.int32)
        a = torch.randn(total, hidden, device=DEVICE, dtype=DTYPE)
        h = torch.randn(total, w2.shape[1], device=DEVICE, dtype=DTYPE)
        out[kind] = {"gemm0_us": round(time_launch(lambda: torch._grouped_mm(a, w13, offs=ends)), 1),
                     "gemm1_us": round(time_launch(lambda: torch._grouped_mm(h, w2, offs=ends)), 1)}
    return out


def main() -> None:
    if CUDA:
        rank, world = join_gpus()
    else:
        join_ranks()
        rank, world = dist.get_rank(), dist.get_world_size()
    single = dist.new_subgroups(1)[0] if world > 1 else None
    names = ARGS.variants.split(",")
    others = [n for n in names if n != BASE]
    # in the order given (a paired run can alternate which kernel goes first); base on every rank
    mine = [n for n in names if n == BASE or n in others[rank::world]]
    result = {**environment(), "rank": rank, "comm_blocks": ARGS.comm_blocks, "tokens": ARGS.tokens,
              "spin_cycles": SPIN_CYCLES, "models": {}}
    for spec in ARGS.models.split(","):
        name, equal = spec.split(":")
        model = resolve_model(name)
        local = model.num_experts // 2  # EP=2's local experts
        g = torch.Generator(DEVICE).manual_seed(ARGS.seed)
        w13 = torch.randn(local, model.hidden, 2 * model.ffn, generator=g, device=DEVICE, dtype=DTYPE)
        w2 = torch.randn(local, model.ffn, model.hidden, generator=g, device=DEVICE, dtype=DTYPE)
        weights = MoEWeights(torch.empty(model.hidden, local, device=DEVICE), w13 * model.hidden ** -0.5,
                             w2 * model.ffn ** -0.5)  # the router is not used
        rows = {"equal": [int(equal)] * local,
                "routed": routed_counts(local, ARGS.tokens * model.top_k, ARGS.seed)}  # 2 ranks x tokens x top_k / 2
        entry = {"rows": rows, "grouped_mm": grouped_mm(weights, rows, model.hidden), "variants": {}}
        for v in mine:
            entry["variants"][v] = time_variant(v, model, weights, rows, single)
            if CUDA:
                torch.cuda.empty_cache()  # the variant's layer is gone
            print(f"rank {rank} {name} {v}: " + ", ".join(
                f"{k} {r['layer0_us']:.0f} + {r['layer1_us']:.0f}" for k, r in entry["variants"][v].items() if k != "config"),
                flush=True)
        result["models"][name] = entry
    every = [None] * world
    dist.all_gather_object(every, result)
    if rank == 0:
        Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
        Path(ARGS.out).write_text(json.dumps({"ranks": every}, indent=1) + "\n")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    ARGS = parse_args()
    main()
