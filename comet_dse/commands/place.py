"""`comet-dse place`: an expert-to-GPU placement that keeps traffic inside nodes."""

from __future__ import annotations

import argparse
import json

from comet_dse.choices import SCHEDULE_NAMES
from comet_dse.commands.columns import align_columns
from comet_dse.commands.simulate import DEFAULTS, add_workload_arguments, check_tokens, resolve_workload
from comet_dse.files import check_writable, write_text_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_workload_arguments(parser)
    parser.add_argument("--tokens", type=int, default=DEFAULTS["tokens"], help="tokens per GPU entering the layer")
    parser.add_argument("--schedule", default="all", choices=[*SCHEDULE_NAMES, "all"], help="schedules to simulate")
    parser.add_argument("--out", help="placement JSON path (default results/placements/<workload>.json)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from comet_dse.routing import Routing, make_routing, token_picks
    from comet_dse.search.placement import (
        contiguous,
        cross_node_bytes,
        optimized,
        round_robin,
    )
    from comet_dse.sim import simulate

    model_name, hardware, workload = resolve_workload(args, check_tokens(args.tokens))
    out = check_writable(args.out or f"results/placements/{model_name}-{hardware.name}-ep{args.ep}-tp{args.tp}-tokens{args.tokens}.json",
                         "--out", make_folders=not args.out)  # before any simulation, not after minutes of it
    routing = make_routing(workload)
    if routing.picks is None:  # the tokens formed once: each placement then renames the same tokens' experts
        routing = Routing(routing.counts, routing.shares,
                          np.stack(token_picks(routing, workload.model.top_k, workload.seed)))
    names = SCHEDULE_NAMES if args.schedule == "all" else (args.schedule,)
    placements = [contiguous(workload), round_robin(workload), optimized(workload, routing, hardware.gpus_per_node)]
    rows = []
    for placement in placements:
        placed = placement.apply(routing)
        latency = {n: simulate(workload, hardware, n, routing=placed, record=False).latency_us for n in names}
        rows.append({"placement": placement.name, "cross_node_GB": round(cross_node_bytes(workload, routing, placement, hardware.gpus_per_node) / 1e9, 6),
                     "latency_us": latency, "ep_rank_of_expert": placement.ep_rank_of_expert(workload)})

    payload = {"workload": {**workload.to_dict(), "hardware": hardware.name, "gpus_per_node": hardware.gpus_per_node},
               "before": "round-robin", "after": "optimized", "placements": rows}
    write_text_atomic(out, json.dumps(payload, indent=2) + "\n")
    if args.json:
        print(json.dumps({**payload, "path": str(out)}, indent=2))
        return 0
    nodes = -(-workload.world // hardware.gpus_per_node)
    print(f"{model_name} on {workload.world} GPUs ({nodes} nodes of {hardware.gpus_per_node}), EP={args.ep} TP={args.tp}, "
          f"{args.tokens} tokens/GPU, routing {args.routing}")
    header = ["placement", "cross-node GB"] + [f"{n} µs" for n in names]
    table = [header] + [[r["placement"], f"{r['cross_node_GB']:.3f}"] + [f"{r['latency_us'][n]:.1f}" for n in names] for r in rows]
    print("\n".join(align_columns(table)))
    before, after = rows[1], rows[2]
    for n in names:
        print(f"{n}: {before['latency_us'][n]:.1f} -> {after['latency_us'][n]:.1f} µs "
              f"({before['latency_us'][n] / after['latency_us'][n]:.2f}x) from round-robin to optimized")
    print(f"placement: {out}")
    return 0
