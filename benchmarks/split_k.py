"""layer1 with and without split-K (FusedConfig.split_k) on one GPU: the GEMM1 launch, compute-only, on a model's EP=2
local experts at a sweep of rows per expert and communication blocks, and the whole compute-only forward at the
rows where the kernel cuts its items.

    torchrun --nproc-per-node 1 benchmarks/split_k.py --out results/measurements/<...>/split_k.json

layer1's compute blocks take its (row tile, column tile) items round by round. Few items on a wide FFN fill the last
round poorly: Mixtral-8x7B at 1024 tokens per GPU, EP=2, gives 256 items of 128 x 256 on 124 compute blocks, 3 rounds
for 2.06 rounds of work (calibrate's fused GEMM1 table climbs in those steps). Split-K cuts the items of that last,
partly filled round along K into up to `--split-k` pieces that fill it (`fused_moe._tail_pieces`). Each figure is
timed two ways: alone (after a device spin, as calibrate's grouped_mm table and bench's per-layer figures) and back to
back at the power cap (as calibrate's fused tables). Each split layer's output is checked against the unsplit one's on
the same rows. Imports only torch, triton, numpy and the package.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from comet_dse.files import json_text
from comet_dse.kernels.calibration import plan_for_rows
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE
from comet_dse.kernels.fused_moe import COMPUTE_ONLY
from comet_dse.kernels.reference import MoEWeights
from comet_dse.kernels.timing import capture_graph, environment, join_gpus, median_us, spin_device, sustained_us
from comet_dse.models import resolve_model

DTYPE = torch.bfloat16


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mixtral-8x7b,phi-3.5-moe", help="Qwen2-MoE's F = 1408 is never split")
    p.add_argument("--rows", default="256,384,512,640,768,1024,1536,2048", help="rows per local expert")
    p.add_argument("--comm-blocks", default="8,16,24", help="layer1's communication blocks (idle here: compute-only)")
    p.add_argument("--split-k", default="4,16", help="the most pieces, each timed against 1")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="timings of each layer, taken in turn; the median is kept")
    p.add_argument("--out", required=True)
    return p.parse_args()


def layers(model_name: str, max_rows: int, split_ks: list[int]) -> tuple[dict[int, FusedMoE], int, int]:
    """One FusedMoE per split_k (1 first) on the same EP=2 local experts: {split_k: layer}, local experts, hidden."""
    model = resolve_model(model_name)
    local = model.num_experts // 2
    g = torch.Generator("cuda").manual_seed(0)
    w13 = torch.randn(local, model.hidden, 2 * model.ffn, generator=g, device="cuda", dtype=DTYPE) * model.hidden ** -0.5
    w2 = torch.randn(local, model.ffn, model.hidden, generator=g, device="cuda", dtype=DTYPE) * model.ffn ** -0.5
    weights = MoEWeights(torch.empty(model.hidden, local, device="cuda"), w13, w2)  # the router is not used
    made = {k: FusedMoE(weights, 1, local * max_rows, None, config=FusedConfig(split_k=k), dtype=DTYPE)
            for k in [1, *split_ks]}
    return made, local, model.hidden


def alone_us(fn, runs: int) -> float:
    """Median µs of fn launched alone behind a device spin (its host time hidden)."""
    return median_us(fn, runs=runs, before_each=spin_device)


def rel_diff(got: torch.Tensor, unsplit: torch.Tensor) -> float:
    """The largest difference from the unsplit layer's output, over its largest value."""
    return round(((got - unsplit).abs().max() / unsplit.abs().max().clamp_min(1e-6)).item(), 6)


def main() -> None:
    args = parse_args()
    join_gpus()
    split_ks = [int(k) for k in args.split_k.split(",")]
    rows_list = [int(r) for r in args.rows.split(",")]
    blocks_list = [int(b) for b in args.comm_blocks.split(",")]
    result = {**environment(), "split_k": split_ks, "rows_per_expert": rows_list, "comm_blocks1": blocks_list,
              "points": [], "forward": []}
    for model in args.models.split(","):
        made, local, hidden = layers(model, max(rows_list), split_ks)
        x = torch.randn(local * max(rows_list), hidden, device="cuda", dtype=DTYPE)
        for rows in rows_list:
            plans = {k: plan_for_rows(layer, x, [rows] * local) for k, layer in made.items()}
            for blocks in blocks_list:
                point = {"model": model, "rows_per_expert": rows, "comm_blocks1": blocks, "pieces_max": {},
                         "alone_us": {}, "sustained_us": {}, "max_rel_diff": {}}
                outputs, alone, sustained, launches = {}, {k: [] for k in made}, {k: [] for k in made}, {}
                for k, layer in made.items():
                    layer.cfg = replace(layer.cfg, comm_blocks0=blocks, comm_blocks1=blocks)  # run-time arguments
                    launches[k] = (lambda layer=layer, plan=plans[k]: layer._launch_layer1(plan, COMPUTE_ONLY))
                    launches[k]()
                    torch.cuda.synchronize()
                    outputs[k] = layer.ybuf.local[:local * rows].float().clone()
                    point["pieces_max"][k] = layer.split_k
                for _ in range(args.rounds):  # the layers in turn, round after round: the board's drift hits each alike
                    for k, launch in launches.items():
                        alone[k].append(alone_us(launch, args.runs))
                        sustained[k].append(sustained_us(launch, runs=args.runs))
                for k in made:
                    point["alone_us"][k] = round(statistics.median(alone[k]), 2)
                    point["sustained_us"][k] = round(statistics.median(sustained[k]), 2)
                for k in split_ks:
                    point["max_rel_diff"][k] = rel_diff(outputs[k], outputs[1])
                result["points"].append(point)
                print(f"{model} rows {rows} blocks {blocks}: layer1 alone "
                      + " ".join(f"k{k} {u:.0f}" for k, u in point["alone_us"].items()) + " µs; sustained "
                      + " ".join(f"k{k} {u:.0f}" for k, u in point["sustained_us"].items())
                      + f" µs; diff {point['max_rel_diff']}", flush=True)
            # the whole compute-only forward (pack, plan, both layers, combine) as a graph, at the default 16 blocks
            forward = {"model": model, "rows_per_expert": rows, "alone_us": {}, "sustained_us": {}, "max_rel_diff": {}}
            ids = torch.repeat_interleave(torch.arange(local, device="cuda"), rows).view(-1, 1)
            ones = torch.ones(len(ids), 1, device="cuda")
            calls, graphs, alone, sustained = {}, {}, {k: [] for k in made}, {k: [] for k in made}
            for k, layer in made.items():
                layer.cfg = replace(layer.cfg, comm_blocks0=16, comm_blocks1=16)
                calls[k] = (lambda layer=layer: layer(x[:len(ids)], ids, ones, mode=COMPUTE_ONLY))
                graphs[k], out = capture_graph(calls[k])
                graphs[k].replay()
                torch.cuda.synchronize()
                outputs[k] = out.float().clone()
                if k != 1:
                    forward["max_rel_diff"][k] = rel_diff(outputs[k], outputs[1])
            for _ in range(args.rounds):
                for k, call in calls.items():
                    alone[k].append(alone_us(graphs[k].replay, args.runs))
                    sustained[k].append(sustained_us(call, runs=args.runs))  # its own graph, replayed back to back
            del graphs, out
            for k in made:
                forward["alone_us"][k] = round(statistics.median(alone[k]), 2)
                forward["sustained_us"][k] = round(statistics.median(sustained[k]), 2)
            result["forward"].append(forward)
            print(f"{model} rows {rows} forward (16 blocks): alone "
                  + " ".join(f"k{k} {u:.0f}" for k, u in forward["alone_us"].items()) + " µs; sustained "
                  + " ".join(f"k{k} {u:.0f}" for k, u in forward["sustained_us"].items())
                  + f" µs; diff {forward['max_rel_diff']}", flush=True)
        del made, x
        torch.cuda.empty_cache()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json_text(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
