"""`comet`: Comet's fine-grained overlap, one persistent fused kernel per layer.

Each layer's kernel has `comm_blocks` communication thread blocks and SMs - comm_blocks
compute blocks. Layer0 (dispatch -> GEMM0): the communication blocks pull rows source by
source in the layout's row order; a GEMM0 tile (decomposed along M) starts as soon as
every row it reduces over has landed, so compute tiles are taken in arrival order.
Layer1 (GEMM1 -> combine): GEMM1 runs column split by column split (decomposed along N);
once a split is done for a group of rows, the communication blocks send it back to the
rows' source ranks. The communication blocks of one rank move at most
hardware.comm_blocks_GBps(comm_blocks) in all (the measured saturation curve), and share
every link with the other ranks' flows.
Every peer is worked on at once, one lane per peer (source of a pull, destination of a
push) keeping its items in the row order; more than MAX_CONCURRENT_PEERS network peers take
turns (sim/runtime.py). The local copy is dealt over as many lanes as the blocks need to
fill HBM.

With a measured profile the kernels as built (kernels/fused_layer.py, priced in
sim/fused_costs.py): this rank's own tiles need no copy (their GEMM reads the send region)
and are computed first (merged layout: an expert's own full tiles; its own remaining rows share
a tile with the first remote rows and are copied with them, a cost left out); the local rows of layer1 are written in place, not sent; GEMM tiles
slow down while copies run; the pack, the plan and a device barrier come before layer0 and a
device barrier and one combine pass after layer1. comm_blocks0 = 0 is the copy-engine
variant: one peer copy per source on a side stream after a host sync, each source's tiles
ready when its whole segment has landed, every SM computing; the host's launches after layer0's
run beside the layers where calibrate timed them so (copy_engine_covered_us), the barrier after
layer1 waiting for them.

With TP (SimContext.group_sends) a rank pulls each source's tokens routed to its EP group once,
however many of their rows it computes, and sends back one partial per token, pre-reduced over the
token's experts here (the owner adds the TP ranks' partials: a reduce-scatter). Token ids are not
tracked per tile, so tokens are taken spread evenly over a source's rows (RankLayout.row_share), and a
partial is sent with its tile's split: the wait for a token's other experts' tiles is not modelled.

`tile_order="expert"`: both layers' compute blocks take the tiles expert by expert (the layout's
own order) instead, each remote tile still waiting for its rows; the pulls keep their per-source
flows (exact at EP=2, where one peer's rows arrive in expert order anyway). The kernels' GROUP_M
swizzle is not modelled in either order: a tile's column tiles run one after another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from comet_dse.choices import (
    COMM_DEALS,
    MAX_SPLIT_K,
    TILE_LAYOUTS,
    TILE_ORDERS,
    TP_DISPATCH,
    default_layer1_width,
    layer1_pieces,
    layout_that_runs,
    tail_pieces,
)
from comet_dse.sim.baseline_kernels import gemm_shape
from comet_dse.sim.fused_costs import (
    EPILOGUE_OPS,
    PROLOGUE_OPS,
    combine_pass_ns,
    comm_item,
    contended,
    copies_while_computing,
    deal_stretch,
    engine_GBps,
    fused_fixed_ns,
    fused_tile_ns,
    link_rate,
    pack_ns,
    pulled_tile_ends_ns,
    remote_tiles,
)
from comet_dse.sim.fluid import pull_times, push_times
from comet_dse.sim.gemm import item_spans, kernel_time_ns, persistent_schedule, split_tail
from comet_dse.sim.layout import ROW_ORDERS, RankLayout, build_layout
from comet_dse.sim.network import Link
from comet_dse.sim.runtime import Lane, SimContext
from comet_dse.sim.schedules.base import (
    Outcome,
    RankOutcome,
    Schedule,
    bubble,
    column_tiles,
    pair_bytes,
    reduce_ns,
)

from comet_dse.errors import UserError
from comet_dse.hardware import HardwareProfile
from comet_dse.workload import Workload

# A layer1 send groups up to this many compute waves' worth of row tiles: finer costs
# events, coarser exposes more of the last send. One wave is what finishes together anyway.
SEND_WAVES = 1
# the bytes of a split-K piece's partial result per element (fp32)
PARTIAL_BYTES = 4


@dataclass(frozen=True)
class Comet(Schedule):
    name: ClassVar[str] = "comet"
    comm_blocks0: int = 16
    comm_blocks1: int = 16
    row_order: str = "local-first"
    n_splits: int = 4
    # the kernels' row tiles (kernels/fused_plan.py): "merged" (an expert's rows of every source share
    # tiles) or "by-source"; the copy engine (comm_blocks0 = 0) always runs by source
    tile_layout: str = "merged"
    # the order compute blocks visit the row tiles: "layout" (layer0 in arrival order, own tiles first;
    # layer1 remote tiles first) or "expert" (both layers expert by expert, own and remote rows together)
    tile_order: str = "layout"
    # small kernels launched before layer0 (sim/fused_costs.py): validation sets the count of the
    # kernel version a bench file measured
    prologue_launches: int = PROLOGUE_OPS
    # under TP: "tokens" (Comet's design) or "rows" (the EP layer over virtual experts, as kernels/fused_tp.py
    # runs it; sim/api.py simulates it as that layer); comet_dse/choices.py TP_DISPATCH
    tp_dispatch: str = "tokens"
    # how the communication blocks share the remote tiles (comet_dse/choices.py COMM_DEALS): round robin fixed at
    # launch, or each drawing its next tile as it finishes one (sim/fused_costs.deal_stretch prices either)
    comm_deal: str = "static"
    # layer1's split-K (FusedConfig.split_k): the items of its last, partly filled round cut along K into up to this
    # many pieces that fill it; 1: off, as the kernels run by default
    split_k: int = 1

    def validate(self, workload: Workload, hardware: HardwareProfile) -> None:
        super().validate(workload, hardware)
        for field_name, value in (("--comm-blocks0", self.comm_blocks0), ("--comm-blocks1", self.comm_blocks1)):
            # 0 in layer0 is the copy-engine variant, priced from a measured profile only
            low = 0 if field_name == "--comm-blocks0" and hardware.measured is not None else 1
            if not isinstance(value, int) or not low <= value < hardware.sms:
                raise UserError(field_name, f"must be an integer in [{low}, {hardware.sms - 1}] ({hardware.name} has {hardware.sms} SMs), got {value!r}")
        if self.row_order not in ROW_ORDERS:
            raise UserError("--row-order", f"must be one of {', '.join(ROW_ORDERS)}, got {self.row_order!r}")
        if self.tile_order not in TILE_ORDERS:
            raise UserError("--tile-order", f"must be one of {', '.join(TILE_ORDERS)}, got {self.tile_order!r}")
        if self.tile_layout not in TILE_LAYOUTS:
            raise UserError("--tile-layout", f"must be one of {', '.join(TILE_LAYOUTS)}, got {self.tile_layout!r}")
        if self.tp_dispatch not in TP_DISPATCH:
            raise UserError("--tp-dispatch", f"must be one of {', '.join(TP_DISPATCH)}, got {self.tp_dispatch!r}")
        if self.comm_deal not in COMM_DEALS:
            raise UserError("--comm-deal", f"must be one of {', '.join(COMM_DEALS)}, got {self.comm_deal!r}")
        if not isinstance(self.split_k, int) or not 1 <= self.split_k <= MAX_SPLIT_K:
            raise UserError("--split-k", f"must be an integer in [1, {MAX_SPLIT_K}], got {self.split_k!r}")
        hidden = workload.model.hidden
        if not isinstance(self.n_splits, int) or self.n_splits < 1 or column_tiles(hidden, self.block_n) % self.n_splits:
            allowed = ", ".join(map(str, legal_splits(hidden, self.block_n)))
            raise UserError("--n-splits", f"must divide the {column_tiles(hidden, self.block_n)} column tiles of H={hidden} "
                                          f"at block_n={self.block_n}: one of {allowed}; got {self.n_splits!r}")

    def params(self) -> dict:
        out = super().params()
        if self.prologue_launches == PROLOGUE_OPS:  # the kernels as built: not a knob, kept out of plans
            del out["prologue_launches"]
        if self.tp_dispatch == "tokens":  # the default model: plans and outputs name only the other
            del out["tp_dispatch"]
        if self.comm_deal == "static":  # the kernels' default: plans and outputs name only the other
            del out["comm_deal"]
        if self.split_k == 1:  # the kernels' default, as above
            del out["split_k"]
        return out

    def run(self, ctx: SimContext) -> Outcome:
        return Outcome(ranks=_run(ctx, self))


def legal_splits(hidden: int, block_n: int, at_most: int | None = None) -> tuple[int, ...]:
    """Layer1 column splits at this tile width: the divisors of H's column tiles (<= at_most)."""
    tiles = column_tiles(hidden, block_n)
    return tuple(d for d in range(1, min(tiles, at_most or tiles) + 1) if tiles % d == 0)


def default_n_splits(hidden: int, block_n: int) -> int:
    """The largest legal split count up to Comet's default (4): the default where it is legal."""
    return legal_splits(hidden, block_n, at_most=Comet.n_splits)[-1]


def _layer1_sends(layout: RankLayout, tile_order: np.ndarray, split_end: np.ndarray, bytes_per_row: int,
                  tiles_per_send: int) -> list[tuple[float, int, float]]:
    """(ready time, destination, bytes) of every layer1 send, in production order.

    split_end[j, i] is when column split j of the i-th m-tile (in `tile_order`) is done.
    The tiles are taken in batches of `tiles_per_send` (about one compute wave, which
    finishes together anyway); a batch's rows for one destination go in one send. With TP
    a token's rows here go back as one partial (pre-reduced over its experts here), so a
    destination gets its token share (layout.row_share) of the rows' bytes.
    """
    share, world = layout.row_share, len(layout.flow_bytes)
    if not len(tile_order):
        return []
    # every part (source, rows) of the tiles in `tile_order`, flat, and the batch of its tile
    first, last = layout.part_start[tile_order], layout.part_start[tile_order + 1]
    counts = last - first
    parts = np.repeat(first - np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + np.arange(counts.sum())
    batch = np.repeat(np.arange(len(tile_order)) // tiles_per_send, counts)
    # a batch's rows per destination, the destinations in the order the batch's tiles first name them
    keys = batch * world + layout.part_source[parts]
    unique, first_seen, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rows = np.bincount(inverse, weights=layout.part_rows[parts], minlength=len(unique))
    order = np.argsort(first_seen, kind="stable")
    key_batch, dest = unique[order] // world, unique[order] % world
    rows = rows[order].astype(np.int64)
    sizes = (rows * bytes_per_row if share is None else rows * share[dest] * bytes_per_row).tolist()
    batch_starts = np.arange(0, len(tile_order), tiles_per_send)
    sends: list[tuple[float, int, float]] = []
    dests = dest.tolist()
    for j in range(split_end.shape[0]):
        ready = np.maximum.reduceat(split_end[j], batch_starts)[key_batch].tolist()
        sends.extend(zip(ready, dests, sizes))
    sends.sort(key=lambda s: s[0])  # stable: production order
    return sends


def _copy_engine_host_ns(hw: HardwareProfile, prologue_launches: int) -> tuple[float, float]:
    """The copy-engine variant's host time in ns, (before layer0, beside the layers): the host sync and what the host
    does around it (the copies' issue, the eager forward's torch ops). Where calibrate timed that forward without its
    layers at a few tokens (copy_engine_fixed_us), its time less its two barriers and the eager launches priced apart
    (the small kernels before and after); of that, the part after layer0's launch (layer1's, the barrier's and the
    combine's) runs beside the layers where calibrate timed it so (copy_engine_covered_us: a device spin in their
    place), else all of it comes before them; without those figures, B0's host sync (host_sync_us)."""
    queued = hw.copy_engine_fixed_queued_us is not None  # the pair timed as the forward is timed, never mixed
    fixed = hw.copy_engine_fixed_queued_us if queued else hw.copy_engine_fixed_us
    covered = hw.copy_engine_covered_queued_us if queued else hw.copy_engine_covered_us
    if fixed is None:
        return hw.host_sync_us * 1e3, 0.0
    launches = (prologue_launches + EPILOGUE_OPS) * hw.kernel_launch_us
    before = fixed if covered is None else min(covered, fixed)
    return max(0.0, before - 2 * hw.link_latency_us - launches) * 1e3, (fixed - before) * 1e3


def _queued_or_host(queued_us: float | None, host_us: float | None) -> float | None:
    """A forward's fixed time as timed enqueued behind a device spin (a layer inside a model's forward) where the
    profile has it, else from a host barrier (HardwareProfile.timed_as("host") drops the queued figures)."""
    return queued_us if queued_us is not None else host_us


def _run(ctx: SimContext, knobs: Comet) -> list[RankOutcome]:
    env, hw, wl = ctx.env, ctx.hardware, ctx.workload
    world = wl.world
    tables = hw.measured
    copy_engine = knobs.comm_blocks0 == 0
    # the fused forward as built runs as one CUDA graph: its kernels launch as graph nodes where calibrate timed
    # them (graph_launch_us); the copy-engine variant syncs with the host per call, so it launches eagerly
    graphed = tables is not None and not copy_engine and hw.graph_launch_us is not None
    launch = (hw.graph_launch_us if graphed else hw.kernel_launch_us) * 1e3
    # the small kernels before layer0 and after layer1: where calibrate timed them (the graphed forward without
    # its layers, at a few tokens), each op a share of that time less its two barriers (priced below as
    # barriers) and its bytes (the pack and the combine, priced by size below, next to nothing there)
    op = launch
    forward_fixed = _queued_or_host(hw.forward_fixed_queued_us, hw.forward_fixed_us)
    if graphed and forward_fixed is not None:
        op = max(0.0, forward_fixed - 2 * hw.link_latency_us) * 1e3 / (PROLOGUE_OPS + EPILOGUE_OPS)
    blocks0, blocks1 = hw.sms - knobs.comm_blocks0, hw.sms - knobs.comm_blocks1
    cap0, cap1 = engine_GBps(ctx, "pull", knobs.comm_blocks0), engine_GBps(ctx, "push", knobs.comm_blocks1)
    slow0 = 1.0 if tables is None else tables.gemm_slowdown(knobs.comm_blocks0)
    slow1 = 1.0 if tables is None else tables.gemm_slowdown(knobs.comm_blocks1, layer=1)
    block_n1 = knobs.block_n if tables is None else default_layer1_width(wl.model.hidden, knobs.n_splits, knobs.block_n)
    barrier0 = ctx.collective("device barrier", hw.link_latency_us * 1e3)
    arrivals = np.zeros(world)  # last combine data landed, per destination rank
    state: list[dict] = [{} for _ in range(world)]
    fluid = None
    if ctx.fluid is not None:  # each layer's link loads: the dispatch pulled, the combine pushed (sim/fluid.py)
        sends = pair_bytes(ctx)
        if tables is not None:  # own rows need no copy in either layer (read in place, written in place)
            np.fill_diagonal(sends, 0.0)
        fluid = (ctx.fluid.loads(sends), ctx.fluid.loads(sends.T.copy()))
        del sends

    # the kernels' layout: by source, a row tile holds one source's rows; merged, an expert's rows of
    # every source share tiles (local-first: own rows first, so its own full tiles need no copy)
    by_source = layout_that_runs(knobs.tile_layout, knobs.comm_blocks0, world) == "by-source"

    def rank_process(rank: int):
        layout = build_layout(wl, ctx.routing, rank, knobs.block_m, knobs.row_order, hw.gpus_per_node,
                              split_by_source=by_source,
                              sent_tokens=None if wl.tp == 1 else ctx.group_sends[:, rank // wl.tp])
        groups = layout.groups
        group_rows = np.array([g.rows_by_source.sum() for g in groups])
        tile_ns0, n_tiles0 = fused_tile_ns(ctx, groups, group_rows, knobs.block_m, knobs.block_n, 0, blocks0)
        tile_ns1, n_tiles1 = fused_tile_ns(ctx, groups, group_rows, knobs.block_m, block_n1, 1, blocks1)
        ffn1 = max((gemm_shape(ctx, group, 1)[0] for group in groups), default=1)  # GEMM1's K, as split-K cuts it
        # each kernel's own cost beyond its tiles (ramp-up and tail, as calibrate's calls had it): after its last
        # work. Profiles from before the graph figures (no graph_launch_us) priced it inside their eager launches,
        # and keep predicting as they were validated (the project's rule for figures added later)
        fixed0 = fixed1 = 0.0
        if hw.graph_launch_us is not None:
            fixed0 = fused_fixed_ns(ctx, groups, knobs.block_m, knobs.block_n, 0, blocks0)
            fixed1 = fused_fixed_ns(ctx, groups, knobs.block_m, block_n1, 1, blocks1)
        overheads: dict[str, float] = {}
        host_beside = 0.0

        # ---- before layer0: today's launch, or the pack, the barrier and the plan (measured) ----
        if tables is None:
            yield env.timeout(launch)
        else:
            overheads["permute"] = pack_ns(ctx, rank)
            yield env.timeout(knobs.prologue_launches * op + overheads["permute"])
            ctx.add_slice(rank, "stream", "pack rows + plan", 0, env.now)
            yield barrier0.arrive(rank)
            if copy_engine:  # the segment sizes go to the host before the copies are issued
                overheads["host_sync"], host_beside = _copy_engine_host_ns(hw, knobs.prologue_launches)
                yield env.timeout(overheads["host_sync"])
            yield env.timeout(launch)
        start0 = env.now
        host_done = start0 + host_beside  # the host's launches after layer0's: the barrier after layer1 waits for them

        # ---- layer0: pull rows source by source; tiles start when their rows have landed ----
        pull_bytes = layout.flow_bytes.astype(float)
        if tables is not None:
            pull_bytes[rank] = 0.0  # own tiles are read where they were packed: no copy
        every0 = layout.tile_group  # GEMM0's tiles, one per (row tile, column tile)
        # the kernels as built deal the remote tiles to their blocks (round robin, or as each finishes one): the most
        # loaded block ends the copies
        # (the copy-engine variant's pulls are one copy per source, but its layer1 pushes are dealt the same way)
        stretch0 = stretch1 = 1.0
        if tables is not None:
            remote0, moved = remote_tiles(layout, knobs.block_m, merged=not by_source)  # layer0's landings read them too
            dynamic = knobs.comm_deal == "dynamic"
            row_bytes = wl.model.hidden * wl.dtype_bytes  # a whole row; layer1 moves a split of it per item
            pull_item = comm_item(ctx, "pull", row_bytes)
            if not copy_engine:
                stretch0 = deal_stretch(moved, knobs.comm_blocks0, lambda k: link_rate(ctx, "pull", k), dynamic=dynamic,
                                        item=pull_item)
            stretch1 = deal_stretch(moved, knobs.comm_blocks1, lambda k: link_rate(ctx, "push", k), knobs.n_splits,
                                    dynamic=dynamic, item=comm_item(ctx, "push", row_bytes / knobs.n_splits))
        rank_cap0 = cap0 / stretch0 / copies_while_computing(
            ctx, "pull", knobs.comm_blocks0, lambda: kernel_time_ns(np.repeat(tile_ns0[every0], n_tiles0[every0]), blocks0),
            pull_bytes.sum() * stretch0 / cap0)
        engine0 = Link(f"comm-blocks0-rank{rank}", rank_cap0)
        # a tile is ready when its last row has landed: read off its source's flow as that flow ends, so no
        # finished flow (one per source, with its rate history) is kept for the rest of the run
        tile_ready = np.full(len(layout.tile_rows), float(start0))
        latency_in = ctx.latencies_ns(rank, incoming=True)

        def pull(lane: Lane, holds_turn: bool):
            for src in lane.items:
                if lane.gate is not None and not holds_turn:
                    yield lane.gate.acquire(lane.port)
                holds_turn = False
                flow = ctx.network.transfer([engine0, *ctx.path(src, rank)], float(layout.flow_bytes[src]))
                yield flow.done
                if lane.gate is not None:
                    lane.gate.release()
                for i in tiles_by_source[np.searchsorted(sorted_source, src):np.searchsorted(sorted_source, src, "right")]:
                    at = flow.size if copy_engine else layout.tile_last_offset[i]  # copy engine: one flag per segment
                    tile_ready[i] = flow.time_at(at) + latency_in[src]
                ctx.add_slice(rank, f"comm0 {lane.name}", f"pull from rank {src}", flow.start, env.now,
                              bytes=int(layout.flow_bytes[src]))

        pulls = [src for src in layout.source_order if pull_bytes[src] > 0]
        if copy_engine:  # one copy per source, in rank order, one after another on the side stream
            pulls.sort()
        if fluid is not None:  # the fluid network: each source's landing priced at once, no flows
            begin, end = np.full(world, float(start0)), np.full(world, float(start0))
            begin[pulls], end[pulls] = pull_times(ctx, rank, pulls, pull_bytes[pulls], rank_cap0, start0, fluid[0],
                                                  copy_engine)
            src = layout.tile_last_source
            pulled = (src >= 0) & (pull_bytes[np.maximum(src, 0)] > 0)  # own tiles (measured) stay ready at start0
            src = src[pulled]
            landed = 1.0 if copy_engine else np.minimum(1.0, layout.tile_last_offset[pulled] / pull_bytes[src])
            tile_ready[pulled] = begin[src] + (end[src] - begin[src]) * landed + latency_in[src]
            for src in pulls:
                ctx.add_slice(rank, "comm0 fluid", f"pull from rank {src}", begin[src], end[src], bytes=int(pull_bytes[src]))
            pulls_end = float(end.max(initial=start0))
        else:  # the flows: `pull` reads each source's tiles off these as its flow ends
            tiles_by_source = np.argsort(layout.tile_last_source, kind="stable")  # source -1 (shared experts) first
            sorted_source = layout.tile_last_source[tiles_by_source]
            lanes = [Lane("copy engine", pulls)] if copy_engine else ctx.lanes(pulls, lambda src: src, rank, rank_cap0,
                                                                                pull=True)
            yield ctx.start_lanes(lanes, pull)
            del lanes, tiles_by_source, sorted_source
            pulls_end = env.now
        if tables is not None:
            if not copy_engine:  # a tile lands when the one block dealt it has moved it
                beside = rank_cap0 * stretch0 / link_rate(ctx, "pull", knobs.comm_blocks0)  # the curve's pace beside the GEMM
                landed = pulled_tile_ends_ns(moved, knobs.comm_blocks0, lambda k: link_rate(ctx, "pull", k) * beside,
                                             row_bytes, pull_item, dynamic)
                tile_ready[remote0] = np.maximum(tile_ready[remote0], start0 + landed)
                del landed
            del remote0, moved
        del pull_bytes, pulls, latency_in
        expert_order = knobs.tile_order == "expert"
        n_tiles = len(tile_ready)

        # The compute plans below run in functions: every rank's generator lives for the whole run, and the
        # per-tile arrays (tens of thousands of column tiles a rank at scale) must not stay in its frame.
        def layer0_compute() -> tuple[float, float, float, tuple | None]:
            """(end of the last tile, the tiles' busy time, GEMM0 alone, (starts, ends) to record or None)."""
            # compute takes tiles in arrival order (own tiles first), or expert by expert: the layout's own order
            order0 = np.arange(n_tiles) if expert_order else np.argsort(tile_ready, kind="stable")
            g0 = layout.tile_group[order0]
            dur0 = np.repeat(tile_ns0[g0], n_tiles0[g0])
            ready0 = np.repeat(tile_ready[order0], n_tiles0[g0])
            starts0, ends0 = persistent_schedule(ready0, dur0, blocks0, start0)
            if slow0 != 1.0 and not copy_engine:  # tiles that ran beside the pulls, once more at their slower pace
                starts0, ends0 = persistent_schedule(ready0, contended(starts0, dur0, (start0, pulls_end), slow0), blocks0, start0)
            return (float(ends0.max(initial=start0)), float(dur0.sum()), kernel_time_ns(dur0, blocks0),
                    (starts0, ends0) if ctx.record else None)

        compute0_end, busy0, alone0, counter0 = layer0_compute()
        del tile_ready
        layer0_end = max(compute0_end, pulls_end) + fixed0  # (the flows: env.now is pulls_end)
        yield env.timeout(layer0_end - env.now)
        ctx.add_slice(rank, "compute", "GEMM0 + SwiGLU (fused)", start0, layer0_end)
        if counter0 is not None:
            ctx.timeline.add_busy_counter(rank, "busy compute blocks", *counter0)
        del counter0

        # ---- layer1: GEMM1 split by split; each finished split of rows is sent home ----
        start1 = layer0_end + launch

        def layer1_plan() -> tuple[list[tuple[float, int, float]], float, float, float, tuple | None]:
            """(the sends, end of the last tile, the tiles' busy time, GEMM1 alone, (starts, ends) to record or None)."""
            position = np.empty(world, dtype=np.int64)
            position[layout.source_order] = np.arange(world)
            # a tile's place by its first source; the kernels as built (measured profile) go by its last: a merged
            # tile holding own and remote rows is pushed home, so it is computed with the remote ones
            placed_by = layout.tile_first_source if tables is None else np.maximum(layout.tile_last_source, 0)
            source_rank = position[placed_by]
            if knobs.row_order == "local-first":
                source_rank = (source_rank - 1) % world  # remote rows first, local last
            source_rank = np.where(layout.tile_last_source < 0, world, source_rank)  # shared experts last
            order1 = np.arange(n_tiles) if expert_order else np.lexsort((np.arange(len(source_rank)), source_rank))
            g1 = layout.tile_group[order1]
            per_split = n_tiles1[g1] // knobs.n_splits
            dur1 = np.concatenate([np.repeat(tile_ns1[g1], per_split) for _ in range(knobs.n_splits)])
            # split-K: the last round's items in pieces; an item ends when its last piece has read every piece's fp32
            # partial tile and summed them, at an SM's share of HBM (on 1x H200, worked by hand from run 140's unsplit
            # round times, its cut layer1 alone within 10% at 4-14 pieces: results/measurements/ep2_h200/split_k/)
            pieces = tail_pieces(len(dur1), blocks1, layer1_pieces(knobs.split_k, ffn1))
            dur1, item1 = split_tail(dur1, blocks1, pieces)
            n_items1 = int(item1[-1]) + 1 if len(item1) else 0
            finish1 = pieces * knobs.block_m * block_n1 * PARTIAL_BYTES / (hw.hbm_GBps / hw.sms)

            def item_schedule(durations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                """Each piece's start, each item's first start and its end."""
                starts, ends = persistent_schedule(np.zeros(len(durations)), durations, blocks1, start1)
                return (starts, *item_spans(starts, ends, item1, n_items1, finish1))

            piece_starts, starts1, ends1 = item_schedule(dur1)
            bounds = np.cumsum(np.tile(per_split, knobs.n_splits))
            routed = order1[layout.tile_last_source[order1] >= 0]
            routed_pos = np.flatnonzero(layout.tile_last_source[order1] >= 0)
            waves_tiles = max(1, SEND_WAVES * blocks1 // max(1, int(per_split.max(initial=1))))
            bytes_per_row = wl.model.hidden // knobs.n_splits * wl.dtype_bytes

            def layer1_sends(ends: np.ndarray) -> list[tuple[float, int, float]]:
                # end of split j of the i-th tile in order1: the last of its per_split column tiles
                split_end = (ends[bounds - 1] if len(bounds) else np.zeros(0)).reshape(knobs.n_splits, len(order1))
                found = _layer1_sends(layout, routed, split_end[:, routed_pos], bytes_per_row, waves_tiles)
                if tables is not None:  # local rows are written in place in the combine region, not sent
                    found = [s for s in found if s[1] != rank]
                return found

            sends = layer1_sends(ends1)
            if slow1 != 1.0 and sends:  # tiles that ran once the pushes began, once more at their slower pace
                _, starts1, ends1 = item_schedule(contended(piece_starts, dur1, (sends[0][0], np.inf), slow1))
                sends = layer1_sends(ends1)
            cut_items = (len(item1) - n_items1) // (pieces - 1) if pieces > 1 else 0
            return (sends, float(ends1.max(initial=start1)), float(dur1.sum()) + cut_items * finish1,
                    kernel_time_ns(dur1, blocks1) + (finish1 if cut_items else 0.0), (starts1, ends1) if ctx.record else None)

        sends, compute1_end, busy1, alone1, counter1 = layer1_plan()
        del layout, groups, group_rows  # nothing below reads the layout
        rank_cap1 = cap1 / stretch1 / copies_while_computing(ctx, "push", knobs.comm_blocks1, lambda: alone1,
                                                             sum(size for _, _, size in sends) * stretch1 / cap1)
        engine1 = Link(f"comm-blocks1-rank{rank}", rank_cap1)

        latency_out = ctx.latencies_ns(rank, incoming=False)

        def push(lane: Lane):
            lane_sends: list[tuple[float, int, float]] = lane.items
            i = 0
            while i < len(lane_sends):
                ready, dest, size = lane_sends[i]
                i += 1
                if ready > env.now:
                    yield env.timeout(ready - env.now)
                if lane.gate is not None:
                    yield lane.gate.acquire(lane.port)
                    # a lane that takes turns sends every split of its peer ready by now in one flow: the same
                    # bytes on the same path back to back, at a fraction of the events (its turn is then longer)
                    while i < len(lane_sends) and lane_sends[i][0] <= env.now:
                        size += lane_sends[i][2]
                        i += 1
                flow = ctx.network.transfer([engine1, *ctx.path(rank, dest)], size)
                yield flow.done
                if lane.gate is not None:
                    lane.gate.release()
                arrivals[dest] = max(arrivals[dest], env.now + latency_out[dest])
                ctx.add_slice(rank, f"comm1 {lane.name}", f"send to rank {dest}", flow.start, env.now, bytes=int(size))
                del flow  # not held while the lane waits for its next split: W lanes a rank, each flow with its history

        if fluid is not None:
            lefts = push_times(ctx, rank, sends, rank_cap1, fluid[1])
            if len(sends):
                dests = np.array([dest for _, dest, _ in sends], dtype=np.int64)
                np.maximum.at(arrivals, dests, lefts + latency_out[dests])
                if ctx.record:
                    for (_, dest, size), left in zip(sends, lefts.tolist()):
                        ctx.add_slice(rank, "comm1 fluid", f"send to rank {dest}", left - size / rank_cap1, left,
                                      bytes=int(size))
                if lefts.max() > env.now:
                    yield env.timeout(float(lefts.max()) - env.now)
        else:
            lanes = ctx.lanes(sends, lambda send: send[1], rank, rank_cap1, pull=False)
            yield env.all_of([env.process(push(lane)) for lane in lanes])
        if compute1_end > env.now:
            yield env.timeout(compute1_end - env.now)
        yield env.timeout(fixed1)
        ctx.add_slice(rank, "compute", "GEMM1 (fused, column splits)", start1, compute1_end)
        if counter1 is not None:
            ctx.timeline.add_busy_counter(rank, "busy compute blocks", *counter1)
        state[rank] = dict(
            layer0_end=layer0_end, own_end=env.now, host_done=host_done, compute_alone=alone0 + alone1 + fixed0 + fixed1,
            busy0=busy0, busy1=busy1, overheads=overheads,
            kernels={"layer0": layer0_end - start0, "layer1": env.now - start1},
        )

    for rank in range(world):
        env.process(rank_process(rank))
    env.run()

    # measured: the device barrier after layer1 lets every rank go once every rank's pushes have landed
    released = max(max(max(s["own_end"], s["host_done"]) for s in state), float(arrivals.max())) + hw.link_latency_us * 1e3
    outcomes = []
    for rank in range(world):
        s = state[rank]
        if tables is None:
            reduce, launches = reduce_ns(ctx, rank), 3 * launch
            received = max(s["own_end"], arrivals[rank])
            end = received + reduce + launch
            ctx.add_slice(rank, "stream", "top-k reduce", received + launch, end)
        else:
            reduce = combine_pass_ns(ctx, rank)
            launches = (knobs.prologue_launches + EPILOGUE_OPS) * op + 2 * launch  # + layer0's and layer1's
            received = released
            end = received + EPILOGUE_OPS * op + reduce
            ctx.add_slice(rank, "comm", "device barrier", max(s["own_end"], arrivals[rank]), released)
            ctx.add_slice(rank, "stream", "weighted top-k sum", end - reduce, end)
        ctx.add_slice(rank, "layer", "layer0", 0, s["layer0_end"])
        ctx.add_slice(rank, "layer", "layer1", s["layer0_end"], end)
        idle = bubble(s["layer0_end"], s["busy0"], blocks0) + bubble(received - s["layer0_end"], s["busy1"], blocks1)
        outcomes.append(RankOutcome(
            end_ns=end, layer0_end_ns=s["layer0_end"], compute_alone_ns=s["compute_alone"], bubble_ns=idle,
            overheads_ns={**s["overheads"], "reduce": reduce, "launch": launches}, kernels_ns=s["kernels"],
        ))
    return outcomes
