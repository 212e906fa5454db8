"""How the fused layer's communication blocks share out their work: layer0 (pulls) and layer1 (pushes) each launched
alone in COMM_ONLY mode as bench times them (a host barrier, the GPUs lined up, a device spin), every program stamping
its start and end (`FusedMoE.stamps`), with the rows each communication block was dealt by the plan beside its span.

The simulator prices a layer's copies as bytes over calibrate's curve at n blocks. On bench's routing at 16 blocks
they ran ~18% slower than that, and ~12% slower than calibrate's own workload (top-1 round-robin) timed the same way
(runs 110, 113). Whether the blocks share the rows unevenly (the last block decides), or each moves its rows slower,
is what the spans tell: a block's end against the rows it moved.

    torchrun --nproc-per-node 2 benchmarks/gpu_comm_spans.py --model qwen2-moe-2.7b --tokens 8192 --rows 1024,1000 \\
        --out results/measurements/comm_spans_qwen.json

Imports only torch, triton and the package.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.distributed as dist
from comet_dse.choices import COMM_DEALS
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE
from comet_dse.kernels.fused_moe import COMM_ONLY
from comet_dse.kernels.timing import join_ranks, line_up, spin_device, write_and_leave
from comet_dse.models import resolve_model
from gpu_layer_copies import layer_workloads  # bench's and calibrate's workloads (benchmarks/)


def moved_rows_per_tile(layer: FusedMoE) -> list[int]:
    """Rows each remote tile of the layer's last plan moves across the link, in the plan's order of remote tiles
    (`remote`): the tile's rows that lie in a piece not this rank's own (fused_moe._move_tile's intersection)."""
    plan = layer.plan
    tiles = plan.tiles.cpu().tolist()
    pieces = plan.pieces.cpu().tolist()  # (local experts, layout positions, 4): first row, rows, source, row there
    n_remote = plan.remote_count()
    moved = []
    for u in plan.remote[:n_remote].cpu().tolist():
        expert, row0, rows = tiles[u][:3]
        moved.append(sum(max(0, min(row0 + rows, p[0] + p[1]) - max(row0, p[0]))
                         for j, p in enumerate(pieces[expert]) if j != layer.own_pos))
    return moved


def rows_per_block(moved: list[int], blocks: int, splits: int = 1) -> list[int]:
    """Rows each of `blocks` communication blocks moves when they walk the remote tiles round robin (layer0: item i is
    tile i; layer1: item i is split i // n of tile i % n, so a block's rows count once per split it moves)."""
    n = len(moved)
    dealt = [0] * blocks
    for i in range(n * splits):
        dealt[i % blocks] += moved[i % n]
    return dealt


def stamped_launches(layer: FusedMoE, which: int, runs: int) -> tuple[float, list[float]]:
    """Layer `which` in COMM_ONLY mode `runs` times (one more to warm up), each from reset flags / counters behind a
    barrier, the GPUs lined up and a device spin: (median µs by CUDA events, per communication block the median µs
    from the launch's first program start to that block's end)."""
    plan, n = layer.plan, layer.cfg.comm_blocks0
    reset = layer.flags if which == 0 else layer.counters
    launch = layer._launch_layer0 if which == 0 else layer._launch_layer1
    comm = range(n) if which == 0 else range(layer.programs - n, layer.programs)
    token = torch.zeros(1, device=layer.device)
    cuda = layer.device.type == "cuda"
    times, ends = [], []
    for i in range(runs + 1):
        reset.zero_()
        dist.barrier()
        line_up(token, queued=cuda)
        spin_device()
        if cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        launch(plan, COMM_ONLY)
        if cuda:
            stop.record()
            torch.cuda.synchronize()
        if i == 0:
            continue
        times.append(start.elapsed_time(stop) * 1e3 if cuda else 0.0)
        if layer.stamps is None:
            ends.append([0.0] * n)
            continue
        t = layer.stamps.view(-1, 2).to(torch.float64).cpu()
        ends.append([(float(t[p, 1]) - float(t[:, 0].min())) / 1e3 for p in comm])
    layer.check()
    return statistics.median(times), [statistics.median(col) for col in zip(*ends)]


def summary(ends: list[float], dealt: list[int] | None, row_bytes: int) -> dict:
    """What the blocks' ends say: the last, the mean, and (where the deal is known) the rows of the most and least
    loaded block and the GB/s each block reached (its bytes over its end) as min/median/max."""
    found = {"last_end_us": round(max(ends), 1), "mean_end_us": round(statistics.fmean(ends), 1)}
    if dealt is None:
        return found
    rates = [r * row_bytes / e / 1e3 for r, e in zip(dealt, ends) if e > 0 and r > 0]
    return {**found,
            "rows_max": max(dealt), "rows_mean": round(statistics.fmean(dealt), 1), "rows_min": min(dealt),
            "block_GBps": [round(min(rates), 2), round(statistics.median(rates), 2), round(max(rates), 2)] if rates else []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2-moe-2.7b", help="preset name or a HuggingFace config.json path")
    parser.add_argument("--tokens", default="8192", help="tokens per GPU of bench's routing, comma-separated ('' none)")
    parser.add_argument("--rows", default="", help="also calibrate's workload: top-1 round-robin, rows per local expert, "
                        "comma-separated (one not a multiple of the tile rows leaves partial tiles)")
    parser.add_argument("--blocks", default="4,8,16,32", help="communication blocks of both layers, comma-separated")
    parser.add_argument("--comm-deal", default="static", help="the deals to time, comma-separated: static (round robin: "
                        "the rows each block moves are known on the host) or dynamic (each block draws its next tile)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="bench's seed of the weights and inputs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if not set(args.comm_deal.split(",")) <= set(COMM_DEALS):
        parser.error(f"--comm-deal: must be comma-separated values of {', '.join(COMM_DEALS)}, got {args.comm_deal!r}")
    cuda, device = join_ranks()
    rank, world = dist.get_rank(), dist.get_world_size()
    dtype = torch.bfloat16 if cuda else torch.float32
    model = resolve_model(args.model)
    workloads = layer_workloads(model, [int(t) for t in args.tokens.split(",") if t],
                                [int(r) for r in args.rows.split(",") if r], args.seed, rank, world, device, dtype)
    row_bytes = model.hidden * torch.empty(0, dtype=dtype).element_size()
    found = []
    for label, local, top_k, inputs in workloads:
        tokens = inputs[0].shape[0]
        for deal, n in ((d, int(b)) for d in args.comm_deal.split(",") for b in args.blocks.split(",")):
            config = FusedConfig(comm_blocks0=n, comm_blocks1=n, comm_deal=deal)
            layer = FusedMoE(local, top_k, tokens, config=config, dtype=dtype)
            layer(*inputs, mode=COMM_ONLY)  # the plan the launches run on
            if cuda:  # the interpreter has no globaltimer (no inline assembly): its ends read 0
                layer.stamps = torch.zeros(2 * layer.programs, dtype=torch.int64, device=device)
            moved = moved_rows_per_tile(layer)
            entry = {"workload": label, "tokens": tokens, "comm_blocks": n, "comm_deal": deal}
            for which, splits in ((0, 1), (1, layer.cfg.n_splits)):
                us, ends = stamped_launches(layer, which, args.runs)
                # layer1 moves a split's columns of each row per item: a row's bytes over the splits. A dynamic deal's
                # rows per block are decided on the device as the blocks run: not known here
                dealt = rows_per_block(moved, n, splits) if deal == "static" else None
                mine = {"us": round(us, 1), **summary(ends, dealt, row_bytes // splits),
                        "block_end_us": [round(e, 1) for e in ends], "block_rows": dealt}
                ranks = [None] * world  # each rank's own plan: bench's routing deals the ranks different rows
                dist.all_gather_object(ranks, {"rows_moved": sum(moved), "remote_tiles": len(moved), "splits": splits,
                                               "tile_rows": moved,
                                               "partial_tiles": sum(1 for r in moved if r < layer.cfg.block_m), **mine})
                slowest_us = max(r["us"] for r in ranks)
                entry[f"layer{which}"] = {"us": slowest_us, "ranks": ranks}
            found.append(entry)
            if rank == 0:
                lists = ("block_end_us", "block_rows", "tile_rows")  # the file has them; the log the rest
                print(json.dumps({**entry, **{f"layer{i}": [{k: v for k, v in r.items() if k not in lists}
                                                             for r in entry[f"layer{i}"]["ranks"]] for i in (0, 1)}}),
                      flush=True)
            del layer
            if cuda:
                torch.cuda.empty_cache()
    write_and_leave(args.out, {"gpus": world, "model": model.name, "runs_per_figure": args.runs,
                               "layer_timing": "queued", "runs": found})


if __name__ == "__main__":
    main()
