"""`comet-dse simulate`: one MoE layer, every rank, one or all schedules; a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from comet_dse.choices import COMM_DEALS, FLOWS_UP_TO_GPUS, INTERNODE_ROUTES, NETWORK_ENGINES, ROUTING_FORMS, ROW_ORDERS, SCHEDULE_NAMES, SIM_EXPERT_GEMMS, TILE_LAYOUTS, TILE_ORDERS, TP_DISPATCH
from comet_dse.commands.columns import align_columns
from comet_dse.errors import UserError
from comet_dse.files import check_writable

DEFAULTS = {"model": "mixtral-8x7b", "hardware": "h800", "ep": 8, "tp": 1, "tokens": 4096}
# tokens per GPU: 32x the largest prefill chunk in use (32k); beyond it the per-row arrays of
# one simulation outgrow memory (10^12 asked for 25 TiB) instead of failing in one line
MAX_TOKENS = 1 << 20
LONG_EP = 32  # from here a simulation takes tens of seconds (EP=256: 1.5 min), so say so at once


def check_tokens(tokens: int, field: str = "--tokens") -> int:
    if not 1 <= tokens <= MAX_TOKENS:
        raise UserError(field, f"must be in [1, {MAX_TOKENS}] tokens per GPU, got {tokens}")
    return tokens


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULTS["model"], help="preset name or a HuggingFace config.json path")
    parser.add_argument("--hardware", default=DEFAULTS["hardware"], help="preset name or a hardware profile .json")
    add_gpus_per_node_argument(parser)
    parser.add_argument("--internode", choices=INTERNODE_ROUTES,
                        help="how a token crosses nodes: direct (its GPU's NIC to the destination GPU's NIC), rail "
                             "(DeepEP: NIC to the same-rail GPU of the destination node, then NVLink) or pxn (NCCL PXN: "
                             "NVLink to the GPU on the destination's rail, then NIC to NIC) (default: the hardware "
                             "profile's internode, direct in the presets)")
    parser.add_argument("--ep", type=int, default=DEFAULTS["ep"], help="expert-parallel size, in GPUs")
    parser.add_argument("--tp", type=int, default=DEFAULTS["tp"], help="tensor-parallel size, in GPUs (splits F); EP x TP GPUs in all")
    parser.add_argument("--routing", default="uniform", help=f"expert load: {ROUTING_FORMS}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the routing draw")


def add_gpus_per_node_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus-per-node", type=int, metavar="N",
                        help="GPUs per node, joined by NVLink (between nodes: the NIC); EP x TP must fit in one node "
                             "or fill whole nodes (default: the hardware profile's gpus_per_node, 8 in the presets)")


def resolve_workload(args: argparse.Namespace, tokens: int, priced: bool = True):
    """(model label for file names, hardware profile, workload) from the shared options; `priced`: the profile can
    price the workload's GPU count (a measured one, only the world sizes it measured), checked before any output."""
    from comet_dse.hardware import check_node_size, resolve_hardware
    from comet_dse.models import MODEL_PRESETS, resolve_model
    from comet_dse.workload import Workload

    model = resolve_model(args.model)
    hardware = resolve_hardware(args.hardware, args.gpus_per_node, args.internode)
    label = args.model if args.model in MODEL_PRESETS else model.name.replace("/", "_")
    workload = Workload(model, tokens, args.ep, args.tp, routing=args.routing, seed=args.seed)
    if args.gpus_per_node is not None:
        check_node_size(workload.world, hardware)
    if priced and hardware.measured is not None:
        hardware.measured.check_world(workload.world)
    return label, hardware, workload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_workload_arguments(parser)
    parser.add_argument("--tokens", type=int, default=DEFAULTS["tokens"], help="tokens per GPU entering the layer")
    parser.add_argument("--schedule", default="all", choices=[*SCHEDULE_NAMES, "all"], help="schedules to simulate")
    parser.add_argument("--comm-blocks", type=int, help="communication thread blocks of both comet layers (default 16)")
    parser.add_argument("--comm-blocks0", type=int, help="communication thread blocks of comet layer0, dispatch + GEMM0 "
                                                         "(default --comm-blocks)")
    parser.add_argument("--comm-blocks1", type=int, help="communication thread blocks of comet layer1, GEMM1 + combine "
                                                         "(default --comm-blocks)")
    parser.add_argument("--chunks", type=int, help="chunk count of the chunked pipeline (default 4)")
    parser.add_argument("--expert-gemm", choices=SIM_EXPERT_GEMMS, default="best",
                        help="the sequential and chunked schedules' expert GEMM on a measured profile: torch._grouped_mm "
                             "(grouped), one torch.mm per expert (loop), or the faster for the schedule (default best)")
    parser.add_argument("--tile", help="GEMM tile BMxBN, sides in 64/128/256 (default 128x128, or for an H that "
                                       "128 does not divide the first tile whose width does, e.g. 128x64)")
    parser.add_argument("--row-order", default="local-first", choices=ROW_ORDERS,
                        help="comet's row order on each rank: its own rows first, or by source rank")
    parser.add_argument("--tile-order", default="layout", choices=TILE_ORDERS,
                        help="comet's tile order: layer0 own tiles first and layer1 remote first, or expert by expert "
                             "(as the fused kernels' --tile-order)")
    parser.add_argument("--tile-layout", default="merged", choices=TILE_LAYOUTS,
                        help="comet's row tiles: an expert's rows of every source together, or one source's rows per "
                             "tile (as the fused kernels' --tile-layout; the copy engine runs by source)")
    parser.add_argument("--tp-dispatch", default="tokens", choices=TP_DISPATCH,
                        help="comet under TP: a token once to each TP rank, partials pre-reduced (Comet's design), or "
                             "a row per (token, expert), partials per row (what comet-dse's fused kernels run) (default tokens)")
    parser.add_argument("--comm-deal", default="static", choices=COMM_DEALS,
                        help="comet's communication blocks: the remote tiles dealt round robin at launch, or each block "
                             "drawing its next as it finishes one (as the fused kernels' --comm-deal; priced from a "
                             "measured profile) (default static)")
    parser.add_argument("--split-k", type=int, default=1,
                        help="comet's layer1 cuts the items of its last, partly filled round along K into up to this "
                             "many pieces that fill it (as the fused kernels' --split-k) (default 1: off)")
    parser.add_argument("--n-splits", type=int, help="comet layer1 column splits of H; must divide H's column tiles "
                                                     "(default: the largest such count up to 4)")
    parser.add_argument("--layers", metavar="all|I,J",
                        help="with --routing counts:<file>: the file's MoE layers to simulate, each with its own routing, "
                             "and their sum ('all' or indices from 0; default: every layer of a file of several)")
    parser.add_argument("--network", default="auto", choices=NETWORK_ENGINES,
                        help=f"how comet's copies are priced: flows (every copy a flow at max-min fair rates; exact, "
                             f"W^2 flows), fluid (each layer's link loads at once, seconds at 1024 GPUs; within 3%% of "
                             f"flows on the cases in results/bench/fluid_check.txt) or auto (flows up to "
                             f"{FLOWS_UP_TO_GPUS} GPUs, fluid beyond) (default auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--trace", metavar="FILE", help="write a Chrome trace JSON (Perfetto) of all ranks (default: none)")
    parser.add_argument("--html", metavar="FILE", help="write a Plotly timeline, self-contained HTML: a heat strip of all ranks and "
                                                       "the tracks of the --html-ranks (default: none)")
    parser.add_argument("--html-ranks", default="slowest,fastest,0", metavar="LIST",
                        help="ranks whose tracks the --html timeline draws: integers, 'slowest', 'fastest' (default: slowest,fastest,0)")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr (shown only on a terminal anyway)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the simulation (cProfile) and print its hot spots on stderr: where the time goes")


def check_tp_dispatch(args: argparse.Namespace) -> None:
    """`--tp-dispatch rows` names a TP layout: without TP it would change nothing, so it is refused, not ignored."""
    if args.tp_dispatch != "tokens" and args.tp == 1:
        raise UserError("--tp-dispatch", f"{args.tp_dispatch} needs --tp > 1: without TP every row moves as a "
                                         "(token, expert) pair already")


def build_schedules(args: argparse.Namespace, hidden: int):
    """The schedules asked for, then those whose own options were given (to be checked too,
    so `--schedule sequential --comm-blocks0 -1` is refused, not ignored); a tile or split
    count not given is the one legal for H."""
    from comet_dse.sim import Chunked, Comet, Sequential
    from comet_dse.sim.schedules.base import default_tile, parse_tile
    from comet_dse.sim.schedules.comet import default_n_splits

    check_tp_dispatch(args)
    block_m, block_n = parse_tile(args.tile or default_tile(hidden))
    n_splits = args.n_splits if args.n_splits is not None else default_n_splits(hidden, block_n)
    if args.comm_blocks is not None and (args.comm_blocks0 is not None or args.comm_blocks1 is not None):
        raise UserError("--comm-blocks", "give either --comm-blocks or --comm-blocks0/--comm-blocks1, not both")
    both = args.comm_blocks if args.comm_blocks is not None else Comet.comm_blocks0
    comet = Comet(
        block_m=block_m, block_n=block_n,
        comm_blocks0=args.comm_blocks0 if args.comm_blocks0 is not None else both,
        comm_blocks1=args.comm_blocks1 if args.comm_blocks1 is not None else both,
        row_order=args.row_order, n_splits=n_splits, tile_layout=args.tile_layout, tile_order=args.tile_order,
        tp_dispatch=args.tp_dispatch, comm_deal=args.comm_deal, split_k=args.split_k,
    )
    every = {
        "sequential": Sequential(block_m=block_m, block_n=block_n, expert_gemm=args.expert_gemm),
        "chunked": Chunked(block_m=block_m, block_n=block_n, chunks=Chunked.chunks if args.chunks is None else args.chunks,
                           expert_gemm=args.expert_gemm),
        "comet": comet,
    }
    names = SCHEDULE_NAMES if args.schedule == "all" else (args.schedule,)
    given = {"chunked": args.chunks is not None,
             "comet": any(v is not None for v in (args.comm_blocks, args.comm_blocks0, args.comm_blocks1, args.n_splits))
             or args.row_order != "local-first" or args.tile_layout != "merged" or args.tile_order != "layout"
             or args.tp_dispatch != "tokens" or args.comm_deal != "static" or args.split_k != 1}
    also = [every[name] for name in SCHEDULE_NAMES if name not in names and given.get(name)]
    return [every[name] for name in names], also


def format_table(results, workload) -> str:
    base = next((r.latency_us for r in results if r.schedule == "sequential"), None)
    header = ["schedule", "latency µs", "layer0 µs", "layer1 µs", "compute µs", "comm µs", "exposed µs",
              "hidden", "bound", "bubble µs"] + (["vs sequential"] if base else [])
    rows = []
    for r in results:
        row = [r.schedule, f"{r.latency_us:.1f}", f"{r.layer0_us:.1f}", f"{r.layer1_us:.1f}", f"{r.compute_alone_us:.1f}",
               f"{r.comm_alone_us:.1f}", f"{r.exposed_comm_us:.1f}", f"{100 * r.hidden_comm_fraction:.1f}%",
               "comm" if r.comm_bound else "compute", f"{r.bubble_us:.1f}"]
        if base:
            row.append(f"{base / r.latency_us:.2f}x")
        rows.append(row)
    m = workload.model
    lines = [
        f"{m.name}: E={m.num_experts} top-{m.top_k} H={m.hidden} F={m.ffn}"
        + (f" shared={m.shared_ffn}" if m.shared_ffn else "")
        + f" | EP={workload.ep} TP={workload.tp} | {workload.tokens} tokens/GPU | routing {workload.routing} seed {workload.seed}",
        *align_columns([header, *rows]),
    ]
    for r in results:
        knobs = ", ".join(f"{k}={v}" for k, v in r.params.items() if k not in ("schedule", "slowest_rank"))
        network = f"; network {r.network}" if r.schedule == "comet" else ""
        lines.append(f"  {r.schedule}: {knobs}; slowest rank {r.params['slowest_rank']}{network}")
    return "\n".join(lines)


@contextmanager
def hot_spots(enabled: bool, top: int = 15):
    """With `enabled`, the functions the block spent most time in (own time), on stderr."""
    if not enabled:
        yield
        return
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        stats = pstats.Stats(profiler)
        total = stats.total_tt  # type: ignore[attr-defined]
        print(f"hot spots: {total:.2f} s profiled, the {top} functions with the most own time", file=sys.stderr)
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
        for (path, line, name), (_, calls, own, cumulative, _) in rows:
            where = f"{Path(path).name}:{line}" if line else path
            print(f"  {own:7.2f} s own {cumulative:7.2f} s total {calls:>9} calls  {name} ({where})", file=sys.stderr)


def layer_routings(args: argparse.Namespace, workload) -> list[tuple[int, str]] | None:
    """(layer, routing spec) per layer to simulate, or None for one routing as given."""
    from comet_dse.routing import counts_layers, split_counts_spec

    kind, _, arg = workload.routing.partition(":")
    if kind != "counts":
        if args.layers is not None:
            raise UserError("--layers", "needs --routing counts:<file> (the tokens per expert of each layer)")
        return None
    path, picked = split_counts_spec(arg)
    if picked is not None:
        if args.layers is not None:
            raise UserError("--layers", f"give the layer either in --routing (counts:{path}#{picked}) or with --layers, "
                                        "not both")
        return None
    total = counts_layers(workload.routing, workload.model.num_experts)
    if args.layers is None and total == 1:
        return None
    text = "all" if args.layers is None else args.layers.strip()
    if text == "all":
        return [(i, f"counts:{path}#{i}") for i in range(total)]
    try:
        layers = [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError("--layers", f"must be 'all' or comma-separated layer indices, got {args.layers!r}") from None
    bad = [i for i in layers if not 0 <= i < total]
    if bad or len(set(layers)) != len(layers):
        raise UserError("--layers", f"must be distinct layers in 0 … {total - 1} of {path}, got {args.layers!r}")
    return [(i, f"counts:{path}#{i}") for i in layers]


def format_layers_table(per_layer: list[tuple[int, list]], workload) -> str:
    """One line per layer (latency per schedule, comet's speedup over sequential) and their sum."""
    names = [r.schedule for r in per_layer[0][1]]
    saving = {"sequential", "comet"} <= set(names)  # the question asked: what comet saves
    header = ["layer", *(f"{n} µs" for n in names)] + (["comet vs sequential"] if saving else [])
    totals = dict.fromkeys(names, 0.0)

    def row(label: str, latencies: dict[str, float]) -> list[str]:
        cells = [label, *(f"{latencies[n]:.1f}" for n in names)]
        if saving:
            cells.append(f"{latencies['sequential'] / latencies['comet']:.2f}x")
        return cells

    rows = []
    for layer, results in per_layer:
        latencies = {r.schedule: r.latency_us for r in results}
        for name, us in latencies.items():
            totals[name] += us
        rows.append(row(str(layer), latencies))
    rows.append(row("sum", totals))
    m = workload.model
    lines = [f"{m.name}: E={m.num_experts} top-{m.top_k} H={m.hidden} F={m.ffn}"
             + (f" shared={m.shared_ffn}" if m.shared_ffn else "")
             + f" | EP={workload.ep} TP={workload.tp} | {workload.tokens} tokens/GPU | "
             f"{len(per_layer)} layer{'s' if len(per_layer) > 1 else ''} of {workload.routing}", *align_columns([header, *rows])]
    for r in per_layer[0][1]:
        knobs = ", ".join(f"{k}={v}" for k, v in r.params.items() if k not in ("schedule", "slowest_rank"))
        lines.append(f"  {r.schedule}: {knobs}" + (f"; network {r.network}" if r.schedule == "comet" else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from comet_dse.progress import Progress, SlowNotice, wanted
    from comet_dse.routing import make_routing
    from comet_dse.sim import simulate
    from comet_dse.sim.export import parse_html_ranks, write_chrome_trace, write_timeline_html

    for path, field in ((args.trace, "--trace"), (args.html, "--html")):
        if path is not None:
            check_writable(path, field)
    _, hardware, workload = resolve_workload(args, check_tokens(args.tokens))
    html_ranks = parse_html_ranks(args.html_ranks, workload.world)
    schedules, unused = build_schedules(args, workload.model.hidden)
    for schedule in (*schedules, *unused):  # every knob checked before any simulation runs
        schedule.validate(workload, hardware)
    layers = layer_routings(args, workload)
    if layers is not None:
        return _run_layers(args, hardware, workload, schedules, layers)
    routing = make_routing(workload)
    record = bool(args.trace or args.html)
    names = ", ".join(s.name for s in schedules)
    notice = f"simulating {names} on {workload.ep * workload.tp} GPUs ({workload.tokens} tokens each) …"
    with SlowNotice(Progress(wanted(args.quiet), prefix="comet-dse simulate"), notice, long=workload.ep >= LONG_EP):
        with hot_spots(args.profile):
            results = [simulate(workload, hardware, s, routing=routing, record=record, network=args.network) for s in schedules]

    if args.trace:
        write_chrome_trace(results, args.trace)
    if args.html:
        write_timeline_html(results, args.html, html_ranks)
    if args.json:
        payload = {
            "workload": {**workload.to_dict(), "hardware": hardware.name, "routing_load_std": round(routing.load_std, 6)},
            "hardware": hardware.to_dict(),
            "results": {r.schedule: r.to_dict() for r in results},
        }
        print(json.dumps(payload, indent=2))
    else:
        print(format_table(results, workload))
        for path in (args.trace, args.html):
            if path:
                print(f"wrote {path}")
    return 0


def _run_layers(args: argparse.Namespace, hardware, workload, schedules, layers: list[tuple[int, str]]) -> int:
    """Every layer with its own routing: the per-layer table and the sum."""
    from dataclasses import replace

    from comet_dse.progress import Progress, wanted
    from comet_dse.routing import make_routing
    from comet_dse.sim import simulate

    for path, field in ((args.trace, "--trace"), (args.html, "--html")):
        if path is not None:
            raise UserError(field, "draws one layer: pick it with --routing counts:<file>#<layer>")
    workloads = [(layer, replace(workload, routing=spec)) for layer, spec in layers]
    routings = [make_routing(wl) for _, wl in workloads]  # every layer's counts checked before any simulation
    per_layer = []
    progress = Progress(wanted(args.quiet), prefix="comet-dse simulate")
    for i, ((layer, wl), routing) in enumerate(zip(workloads, routings, strict=True)):
        progress.status(f"layer {layer} ({i + 1}/{len(workloads)})")
        per_layer.append((layer, [simulate(wl, hardware, s, routing=routing, record=False, network=args.network)
                                  for s in schedules]))
    progress.end()
    if args.json:
        names = [r.schedule for r in per_layer[0][1]]
        payload = {
            "workload": {**workload.to_dict(), "hardware": hardware.name},
            "hardware": hardware.to_dict(),
            "layers": [{"layer": layer, "routing": wl.routing, "routing_load_std": round(routing.load_std, 6),
                        "results": {r.schedule: r.to_dict() for r in results}}
                       for (layer, wl), routing, (_, results) in zip(workloads, routings, per_layer, strict=True)],
            "total_latency_us": {n: round(sum(r.latency_us for _, rs in per_layer for r in rs if r.schedule == n), 3)
                                 for n in names},
        }
        print(json.dumps(payload, indent=2))
    else:
        print(format_layers_table(per_layer, workload))
    return 0
