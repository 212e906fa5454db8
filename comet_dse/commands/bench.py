"""`comet-dse bench`: the fused layer, its variants and the baselines on one node of GPUs,
launched once per GPU:

    torchrun --nproc-per-node 2 -m comet_dse.cli bench --model qwen2-moe-2.7b --tokens 1024,8192 \
        --comm-blocks 0,8,16,32

Per token count: the baselines (`naive`, the simplest correct torch layer; `b0`, sequential;
`b1_c<C>`, chunked with C chunks; each the faster of its two expert GEMMs, `b0_grouped` / `b0_loop` and
`b1_c<C>_grouped` / `b1_c<C>_loop`: torch._grouped_mm, or one torch.mm per expert) and, per fused configuration, `fused`, `compute_only` (the
same GEMM kernels and tile order, nothing moved) and `comm_only` (the same data movement and
flags, no GEMM work), all three captured in CUDA graphs on GPUs; `--comm-blocks 0` is the
copy-engine variant (timed eagerly: it syncs with the host). Beside them the limits:
`grouped_mm` (torch._grouped_mm GEMM0 + GEMM1 on the same rows per expert, also a graph) and
`comm_floor_us` (bytes this rank sends over the link / the peer-copy bandwidth measured in the
same run). Every figure is the median of --runs timed runs (CUDA events, inputs rotated over 3
sets, a barrier before each) on the slowest rank; `per_rank_us` keeps every rank's.

Every rank runs; rank 0 writes one JSON under --out. Imports only torch, triton, numpy and the
package (no simulator dependencies), so it runs on the GPU machines as they are.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from comet_dse.choices import ALIGNS, COMM_DEALS, DTYPES, GATE_UP_LAYOUTS, MAX_SPLIT_K, ROW_ORDERS, TILE_LAYOUTS, TILE_ORDERS
from comet_dse.commands.launch import (
    add_gpus_argument,
    check_gpu_launch,
    check_tile_size,
    parse_choices,
    parse_ints,
    parse_tile,
    relaunch_per_gpu,
)
from comet_dse.errors import UserError

KINDS = ("all", "fused", "baselines")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="qwen2-moe-2.7b", help="preset name or a HuggingFace config.json path")
    parser.add_argument("--shape", help="E,top_k,H,F instead of the model's, e.g. 8,2,256,512 for small test layers "
                                        "(default: the model's)")
    parser.add_argument("--tokens", default="1024,4096", help="token counts, in tokens per GPU, comma-separated")
    parser.add_argument("--kind", default="all", choices=KINDS, help="what to time: everything, the fused layer or the baselines")
    parser.add_argument("--comm-blocks", default="16",
                        help="communication thread blocks of both fused layers, comma-separated; 0 = the copy engine moves layer0's rows")
    parser.add_argument("--comm-blocks1", type=int,
                        help="layer1's communication blocks when they should differ from --comm-blocks "
                             "(default: the same; 16 where --comm-blocks is 0)")
    parser.add_argument("--plan", help="a comet-dse plan JSON: its configuration for each token count, instead of --comm-blocks "
                                       "(default: none)")
    parser.add_argument("--tile", default="128x128", help="fused GEMM tile BMxBN (default 128x128)")
    parser.add_argument("--block-k", type=int, default=64, help="fused GEMM K step, in elements (default 64)")
    parser.add_argument("--block-n1", type=int, help="layer1's tile width (default: 256 where H / --n-splits is a multiple of it, else the tile's BN)")
    parser.add_argument("--flatten", action="store_true", help="software-pipeline the fused GEMMs across tiles where no wait intervenes")
    parser.add_argument("--gate-up", default="pairs", choices=GATE_UP_LAYOUTS,
                        help="GEMM0's gate/up weight layout: halves (two dots per K step) or pairs (interleaved "
                             "columns, one dot of twice the width) (default pairs)")
    parser.add_argument("--tma-store", action=argparse.BooleanOptionalAction, default=True,
                        help="layer0's full tiles leave through an asynchronous TMA store (default on)")
    parser.add_argument("--stages1", type=int,
                        help="layer1's pipeline depth (default: 4 where the FFN width is <= 2048, else 3 as layer0)")
    parser.add_argument("--dedup", action=argparse.BooleanOptionalAction, default=False,
                        help="layer0 brings a token to a rank once, not once per expert slot there, where communication "
                             "blocks pull (not the copy engine); the JSON's config says whether it ran (default off)")
    parser.add_argument("--prereduce", action=argparse.BooleanOptionalAction, default=False,
                        help="layer1 sends a token's rows at a rank home as one row, their weighted sum (the top-k "
                             "pre-reduction; under TP the reduce-scatter's bytes); a split leaves once every tile has it "
                             "(default off)")
    parser.add_argument("--pull-rows",
                        help="rows a communication block pulls as one piece of layer0's work, dividing the tile's BM, "
                             "comma-separated to time several (default: a whole row tile)")
    parser.add_argument("--split-k",
                        help="layer1 cuts the items of its last, partly filled round along K into up to this many pieces "
                             "that fill it (FusedConfig.split_k; each piece at least --split-k-min of F), comma-separated to "
                             "time several (default 1: off)")
    parser.add_argument("--split-k-min", type=int, default=1024,
                        help="the least of F a split-K piece takes (FusedConfig.split_k_min; default 1024)")
    parser.add_argument("--group-m", type=int, default=8, help="row tiles sharing each weight tile through L2 (default 8)")
    parser.add_argument("--copy-elems", type=int,
                        help="elements a communication block moves per step, a power of two (default: the kernels', 16384)")
    parser.add_argument("--n-splits", type=int, default=4, help="layer1 column splits of H (default 4)")
    parser.add_argument("--row-order", default="local-first", choices=ROW_ORDERS,
                        help="the fused layer's row order on each rank: its own rows first, or by source rank")
    parser.add_argument("--tile-order", default="layout",
                        help=f"the fused kernels' tile orders to time, comma-separated: {' or '.join(TILE_ORDERS)} "
                             "(layout: own tiles first in layer0, remote first in layer1; expert: expert by expert, each "
                             "expert's weights read once) (default layout)")
    parser.add_argument("--tile-layout", default="merged",
                        help=f"the fused kernels' row-tile layouts to time, comma-separated: {' or '.join(TILE_LAYOUTS)} "
                             "(merged: an expert's rows of every source share tiles; by-source: a tile holds one source's "
                             "rows; the copy engine, --comm-blocks 0, always runs by-source) (default merged)")
    parser.add_argument("--comm-deal", default="static",
                        help=f"how the communication blocks share the remote row tiles, comma-separated to time several: "
                             f"{' or '.join(COMM_DEALS)} (static: round robin fixed at launch; dynamic: each block draws "
                             "its next tile from a counter as it finishes one) (default static)")
    parser.add_argument("--tp", type=int, default=1,
                        help="tensor-parallel ranks per expert (its FFN width split over them): B0 and B1 under EP x TP "
                             "(kernels/tp_baselines.py) and the fused layer through virtual experts "
                             "(kernels/fused_tp.py) (default 1)")
    parser.add_argument("--ep", type=int, help="expert-parallel ranks; EP x TP must be the ranks launched (default: ranks / TP)")
    parser.add_argument("--chunks", default="2,4", help="chunk counts of B1, comma-separated (default 2,4)")
    parser.add_argument("--capacity", type=int, help="fused layer's max_tokens (default: the largest --tokens)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs, median reported (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    # (not --start: torchrun's own parser reads any prefix of --start-method, even after the module)
    parser.add_argument("--align", default="queued", choices=ALIGNS,
                        help="how each timed call starts: queued (default) enqueued while the GPUs spin ~500 µs, "
                             "then a one-element all-reduce on the GPUs, so every GPU starts it together with its "
                             "launch already queued, as a layer inside a model's forward (run 102: repeats within "
                             "0.5%%); host, right after a host barrier (every run before 102, 2026-11-27: the "
                             "graph's launch and the later host's lateness are in the figure, repeats 2-18%% apart); "
                             "devices, host plus the all-reduce")
    parser.add_argument("--dtype", choices=DTYPES, help="weights and activations (default: bfloat16 on GPU, float32 on CPU)")
    parser.add_argument("--programs", type=int, help="fused grid size (default: the SM count)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, inputs and routings (default 0)")
    parser.add_argument("--out", default="results/measurements", help="folder of the bench JSON (default results/measurements)")
    add_gpus_argument(parser)


@dataclass
class _Settings:
    tokens: list[int]
    comm_blocks: list[int]
    tile_orders: list[str]
    tile_layouts: list[str]
    comm_deals: list[str]
    pull_rows: list[int | None]
    split_ks: list[int]
    chunks: list[int]
    block_m: int
    block_n: int
    experts: int
    top_k: int
    hidden: int
    ffn: int
    model_name: str
    capacity: int
    plan: object | None
    ep: int | None
    tp: int


def _settings(args: argparse.Namespace) -> _Settings:
    """Every input checked before any GPU work."""
    tokens = parse_ints(args.tokens, "--tokens")
    comm_blocks = parse_ints(args.comm_blocks, "--comm-blocks", minimum=0)
    chunks = parse_ints(args.chunks, "--chunks")
    tile_orders = parse_choices(args.tile_order, "--tile-order", TILE_ORDERS)
    tile_layouts = parse_choices(args.tile_layout, "--tile-layout", TILE_LAYOUTS)
    comm_deals = parse_choices(args.comm_deal, "--comm-deal", COMM_DEALS)
    for name in ("runs", "block_k", "group_m", "n_splits"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')}", f"must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise UserError("--warmup", f"must be >= 0, got {args.warmup}")
    if args.copy_elems is not None and not (256 <= args.copy_elems <= 131072 and args.copy_elems & (args.copy_elems - 1) == 0):
        raise UserError("--copy-elems", f"must be a power of two in [256, 131072], got {args.copy_elems}")
    if args.comm_blocks1 is not None and args.comm_blocks1 < 1:
        raise UserError("--comm-blocks1", f"must be >= 1, got {args.comm_blocks1}")
    if args.stages1 is not None and not 1 <= args.stages1 <= 4:  # 5 stages of 128x64 + 64x256 tiles: 240 KB
        raise UserError("--stages1", f"must be an integer in [1, 4] (more do not fit in an SM's shared memory), got {args.stages1}")
    if args.programs is not None and args.programs < 2:
        raise UserError("--programs", f"must be >= 2 (communication and compute blocks), got {args.programs}")
    block_m, block_n = parse_tile(args.tile)
    pull_rows: list[int | None] = [None]
    if args.pull_rows:
        pull_rows = parse_ints(args.pull_rows, "--pull-rows")
        if any(block_m % r for r in pull_rows):
            raise UserError("--pull-rows", f"each must divide the tile's BM {block_m}, got {args.pull_rows}")
    split_ks = parse_ints(args.split_k, "--split-k") if args.split_k else [1]
    if any(not 1 <= k <= MAX_SPLIT_K for k in split_ks):
        raise UserError("--split-k", f"each must be an integer in [1, {MAX_SPLIT_K}], got {args.split_k}")
    if args.split_k_min < 1:
        raise UserError("--split-k-min", f"must be >= 1, got {args.split_k_min}")
    check_tile_size(args.block_k, "--block-k")
    if args.block_n1:  # 0 or none: the default width
        check_tile_size(args.block_n1, "--block-n1")
    if args.shape:
        experts, top_k, hidden, ffn = (parse_ints(args.shape, "--shape") + [0] * 4)[:4]
        if len(args.shape.split(",")) != 4:
            raise UserError("--shape", f"expected E,top_k,H,F, got {args.shape!r}")
        model_name = f"shape-{args.shape.replace(',', 'x')}"
    else:
        from comet_dse.models import resolve_model

        m = resolve_model(args.model)
        experts, top_k, hidden, ffn, model_name = m.num_experts, m.top_k, m.hidden, m.ffn, m.name
    if args.tp < 1 or ffn % args.tp or (ffn // args.tp) % 16:
        raise UserError("--tp", f"must be >= 1 and cut F={ffn} into multiples of 16, got {args.tp}")
    if args.ep is not None and (args.ep < 1 or experts % args.ep):
        raise UserError("--ep", f"must be an integer >= 1 that divides the {experts} experts, got {args.ep}")
    if args.gpus is not None and (args.gpus < 1 or args.gpus % args.tp or experts % (args.gpus // args.tp)):
        raise UserError("--gpus", f"must be an integer >= 1, a multiple of --tp {args.tp}, whose quotient divides the "
                                  f"{experts} experts, got {args.gpus}")
    if args.gpus is not None and args.ep is not None and args.ep * args.tp != args.gpus:
        raise UserError("--ep", f"EP x TP must equal --gpus {args.gpus}, got {args.ep} x {args.tp}")
    if top_k > experts:
        raise UserError("--shape" if args.shape else "--model", f"top_k={top_k} exceeds the {experts} experts")
    if hidden % 16 or ffn % 16:
        raise UserError("--shape" if args.shape else "--model", f"H={hidden} and F={ffn} must be multiples of 16")
    width1 = args.block_n1 or block_n
    if args.kind != "baselines" and (hidden % args.n_splits or (hidden // args.n_splits) % width1):  # the fused layer's
        raise UserError("--n-splits", f"must cut H={hidden} into multiples of layer1's tile width {width1}, got {args.n_splits}")
    capacity = args.capacity or max(tokens)
    if capacity < max(tokens):
        raise UserError("--capacity", f"must hold the largest --tokens ({max(tokens)}), got {capacity}")
    plan = None
    if args.plan:
        from comet_dse.plan import load_plan

        plan = load_plan(args.plan)
        if not args.shape and plan.model != model_name:
            raise UserError("--plan", f"the plan is for model {plan.model!r}, not {model_name!r}")
        if plan.tp != args.tp or (args.ep is not None and plan.ep != args.ep):
            raise UserError("--plan", f"the plan is for EP={plan.ep} x TP={plan.tp}, not this run's --ep/--tp")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError("--out", f"{out} exists and is not a directory")
    return _Settings(tokens, comm_blocks, tile_orders, tile_layouts, comm_deals, pull_rows, split_ks, chunks, block_m, block_n,
                     experts, top_k, hidden, ffn, model_name, capacity, plan, args.ep, args.tp)


def run(args: argparse.Namespace) -> int:
    s = _settings(args)
    relaunched = relaunch_per_gpu("bench", args)
    if relaunched is not None:
        return relaunched
    plan = s.plan
    if plan is not None and plan.tp > 1 and any(e.config.get("tp_dispatch") != "rows" for e in plan.entries) \
            and os.environ.get("RANK", "0") == "0":  # once: in the process that runs, rank 0
        # a note, not a refusal: timing Comet's design's picks on these kernels is a fair question too
        print("comet-dse bench: note: the plan was tuned on Comet's TP layer (a token once per TP rank); the fused "
              "kernels under TP move a row per (token, expert): `comet-dse tune --tp-dispatch rows` tunes that",
              file=sys.stderr)
    check_gpu_launch("bench")
    from comet_dse.kernels.bench_runner import BenchRunner

    runner = BenchRunner(s, args)
    try:
        result = runner.run_all()
    finally:
        runner.close()
    if result is not None:
        grid = f"ep{result['ep']}" + (f"-tp{result['tp']}" if result["tp"] > 1 else "")
        out = Path(args.out) / f"bench-{s.model_name}-{grid}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        from comet_dse.files import json_text, write_text_atomic

        write_text_atomic(out, json_text(result))
        print(f"wrote {out}")
    return 0
