"""What the `comet` schedule charges for the pieces of the fused layer (kernels/fused_layer.py).

Without measured tables: the tile model of the figures (sim/layout.py group_tile_ns), the
blocks -> bandwidth curve of the figures, one launch per kernel. With a measured profile, what
the fused layer as built does, priced from the tables:

- GEMM tiles from the "fused" grouped GEMM table at the compute SM count: a tile costs the
  measured call's time over its waves, at the expert's rows per expert
  (MeasuredTables.fused_tile_us); GEMM0 is one tile per BLOCK_N columns of F doing gate and up
  (SwiGLU fused), GEMM1 uses the kernel's layer1 width (256 where it divides a split);
- the pulls (layer0) and pushes (layer1) at the comm_blocks tables' bandwidth, stretched by how unevenly the
  plan deals the remote tiles to the communication blocks (`deal_stretch`: round robin, the link shared by the
  blocks still moving);
- a remote tile of layer0 ready when the one block dealt it has moved it, at that block's share of the pace while
  the others still move (`pulled_tile_ends_ns`): the first tile of every block lands after a whole tile, not after
  its bytes at all the blocks' pace;
- GEMM tiles that run while copies run slowed by gemm_contention at that many copy blocks (layer1's
  beside its pushes by gemm1_contention where calibrate timed it), and the copies slowed by the
  GEMM's share of their span where calibrate timed them beside it in one kernel (layer_copy_contention,
  copies_while_computing), else the communication blocks' bandwidth divided over the whole span by
  copy_contention (layer0's pulls beside a GEMM) or push_contention (layer1's pushes; the pulls'
  figure where a profile lacks it);
- the plan's small kernels, the pack gather and a device barrier before layer0, a device
  barrier after layer1 and one combine pass at the owner (calibrate's "combine" rate).
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable

import numpy as np
from comet_dse.sim.baseline_kernels import OUT_BYTES, gemm_shape, pass_ns
from comet_dse.sim.layout import Group, RankLayout, group_tile_ns
from comet_dse.sim.runtime import SimContext
from comet_dse.sim.schedules.base import sent_rows

# The fused forward's small kernels (kernels/fused_layer.py FusedMoE.__call__), one launch each:
# before layer0: epoch += 1, the pairs' counting sort (2: kernels/fused_pack.py), counters.zero_,
# the barrier, the stack of the peers' counts, the plan (the row gather is priced as a pass);
PROLOGUE_OPS = 7
# the same before the counting sort (bench files of kernels until 2026-11-26, without "pack"): the
# sort (2), searchsorted, the counts (sub + copy) and the pair positions (scatter_) in its place
TORCH_PACK_PROLOGUE_OPS = 11
# after layer1 and its barrier (whose launch hides behind layer1): the weights' fp32 cast, the combine kernel.
EPILOGUE_OPS = 2


def fused_tile_ns(ctx: SimContext, groups: list[Group], rows: np.ndarray, block_m: int, block_n: int,
                  layer: int, sms: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group: (tile time in ns, tiles along N) of the fused kernel's GEMM on `sms` compute SMs."""
    hw = ctx.hardware
    if hw.measured is None:
        return group_tile_ns(hw, ctx.workload, groups, rows, block_m, block_n, layer)
    times, n_tiles = [], []
    for group, group_rows in zip(groups, rows):
        k, n, swiglu = gemm_shape(ctx, group, layer)
        tile_us = hw.measured.fused_tile_us(k, n, swiglu, max(int(group_rows), 1), sms, (block_m, block_n), hw.hbm_GBps,
                                            ctx.workload.dtype_bytes)
        times.append(np.ceil(tile_us * ctx.gemm_scale * 1e3))
        n_tiles.append(-(-n // block_n))
    return np.array(times), np.array(n_tiles, dtype=np.int64)


def fused_fixed_ns(ctx: SimContext, groups: list[Group], block_m: int, block_n: int, layer: int, sms: int) -> float:
    """The fused kernel's own cost beyond its tiles (launch, ramp-up, tail), as calibrate's calls of the same
    GEMM code had it (MeasuredTables.fused_fixed_us): the dearest of the layer's GEMM shapes, in ns; none
    without measured tables (a preset's tiles carry the whole kernel)."""
    tables = ctx.hardware.measured
    if tables is None:
        return 0.0
    shapes = {gemm_shape(ctx, group, layer) for group in groups}
    return max((tables.fused_fixed_us(k, n, swiglu, sms, (block_m, block_n), ctx.hardware.hbm_GBps,
                                      ctx.workload.dtype_bytes) for k, n, swiglu in shapes), default=0.0) * 1e3


def link_rate(ctx: SimContext, direction: str, blocks: int) -> float:
    """What `blocks` communication blocks move pulling or pushing with nothing beside them: the measured curve of the
    nearest row width (MeasuredTables.comm_GBps), else the figures' (HardwareProfile.comm_blocks_GBps)."""
    tables = ctx.hardware.measured
    measured = None if tables is None else tables.comm_GBps(direction, blocks, ctx.workload.model.hidden)
    return ctx.hardware.comm_blocks_GBps(blocks) if measured is None else measured


def comm_item(ctx: SimContext, direction: str, row_bytes: float) -> tuple[float, int, float, float] | None:
    """deal_stretch's `item` for pulls or pushes of rows of `row_bytes` bytes: the per-item cost (ns) calibrate timed
    for the nearest row width, the rows of its curve's items, and that curve's highest rate (the link's limit, as
    link_rate reads the same curve); None where the profile has none."""
    tables = ctx.hardware.measured
    hidden = ctx.workload.model.hidden
    found = None if tables is None else tables.comm_item(direction, hidden)
    return None if found is None else (found[0] * 1e3, found[1], row_bytes, tables.comm_peak_GBps(direction, hidden))


def engine_GBps(ctx: SimContext, direction: str, blocks: int) -> float:
    """What `blocks` communication blocks move pulling (layer0) or pushing (layer1); blocks = 0:
    the copy engine."""
    hw, tables = ctx.hardware, ctx.hardware.measured
    if blocks == 0:
        return tables.copy_engine_GBps or hw.link_GBps
    if tables is None:
        return hw.comm_blocks_GBps(blocks)
    rate = link_rate(ctx, direction, blocks)
    if tables.copy_share_lost(blocks, direction, ctx.workload.model.hidden, ctx.workload.ffn_per_rank) is not None:
        return rate  # slowed per rank by the GEMM's share of the copies' span (copies_while_computing)
    return rate / tables.copy_slowdown(blocks, direction)  # the blocks copy beside the compute blocks' GEMM tiles


def remote_tiles(layout: RankLayout, block_m: int, merged: bool) -> tuple[np.ndarray, np.ndarray]:
    """(the layout's remote row tiles as indices into its tiles, the rows each moves across a link), in the order the
    communication blocks of the kernels' plan (kernels/fused_plan.py) walk them: merged, every tile but an expert's own
    full ones (a tile of its run holding only own rows moves none, but is dealt all the same), expert by expert; by
    source, the tiles of other sources, source by source in the layout's order. With TP a source's rows count at its
    tokens' share (RankLayout.row_share)."""
    n_tiles = len(layout.tile_rows)
    tile_of_part = np.repeat(np.arange(n_tiles), np.diff(layout.part_start))
    own = layout.part_source == layout.rank
    weight = np.ones(len(own)) if layout.row_share is None else layout.row_share[layout.part_source]
    moved = np.bincount(tile_of_part, weights=np.where(own, 0.0, layout.part_rows * weight), minlength=n_tiles)
    own_rows = np.bincount(tile_of_part, weights=np.where(own, layout.part_rows, 0), minlength=n_tiles)
    own_only = own_rows == layout.tile_rows
    routed = layout.tile_last_source >= 0  # the shared experts' tiles are the rank's own tokens
    if merged:
        remote = np.flatnonzero(routed & ~(own_only & (layout.tile_rows == block_m)))
    else:
        remote = np.flatnonzero(routed & ~own_only)
        position = np.empty(len(layout.source_order), dtype=np.int64)
        position[layout.source_order] = np.arange(len(layout.source_order))
        remote = remote[np.argsort(position[layout.tile_first_source[remote]], kind="stable")]
    return remote, moved[remote]


def _row_ns(row_bytes: float, GBps: float, item_ns: float, curve_rows: int) -> float:
    """A row's time at `GBps` (bytes/ns) less its share of the per-item cost that rate carried (a curve timed with items
    of `curve_rows` rows), kept above a thousandth of the row's time at that rate."""
    whole = row_bytes / GBps
    return max(whole - item_ns / curve_rows, 1e-3 * whole)


def dealt_blocks(items: np.ndarray, blocks: int, dynamic: bool, item_ns: float = 0.0, row_ns: float = 1.0) -> np.ndarray:
    """The block each item (`items` rows each, in walk order) goes to: round robin, or (dynamic) the block free first,
    a block being busy `item_ns` per item and `row_ns` per row (by default: the one with the fewest rows so far)."""
    if not dynamic:
        return np.arange(len(items)) % blocks
    owner = np.empty(len(items), dtype=np.int64)
    free = [(0.0, b) for b in range(blocks)]  # (busy until, block)
    for i, rows in enumerate(items.tolist()):
        at, block = heapq.heappop(free)
        owner[i] = block
        heapq.heappush(free, (at + item_ns + rows * row_ns, block))
    return owner


def _share(faster_ns: float, now_ns: float) -> float:
    """What is left of an item at the faster pace, as a share of what was left at the pace before."""
    return faster_ns / now_ns if now_ns > 0 else 1.0


def pulled_tile_ends_ns(moved: np.ndarray, blocks: int, rate: Callable[[int], float], row_bytes: float,
                        item: tuple[float, int, float, float] | None, dynamic: bool) -> np.ndarray:
    """When each remote row tile of layer0 (`moved` rows each, in walk order: remote_tiles) has landed, in ns from
    layer0's start. Each tile is moved whole by the one communication block it is dealt to, and each block moves at
    rate(k) / k while k blocks still move (`rate`: bytes/ns of k blocks beside the GEMM; deal_stretch shares the link
    so). The first tile of every block lands after a whole tile at one block's share, not after its bytes at all the
    blocks' pace, and the last blocks speed up as the others finish. With `item` (comm_item: the calibrated per-item
    cost), a block spends that on each tile beside its rows, which then move faster than its share by what the
    curve's rate carried of it.

    What this prices (run 127, `benchmarks/gpu_layer_waits.py`, 2x H200): at Qwen2-MoE 1024 tokens layer0's tiles waited
    22-33 µs for their rows at 16-48 blocks (FULL against the same kernel with its waits given up), where the rows
    landing at the blocks' aggregate pace left them waiting 2-13 µs in the simulator; at 2048+ tokens they waited
    ~nothing at 16+ blocks. Each block kept a fixed share to the end under cost model 19, which put layer0's comm-only
    kernel a median 15% over its measurements on run 122 (MAPE 23%), its blocks' last tiles landing as late as the
    first blocks' pace makes them; as here, a median 0.999 (MAPE 5.2%)."""
    item_ns, curve_rows = (0.0, 1) if item is None else (item[0], item[1])

    @functools.cache
    def row_ns(active: int) -> float:  # a row's time with `active` blocks moving (one curve lookup per count)
        return _row_ns(row_bytes, rate(active) / active, item_ns, curve_rows)

    def item_time(i: int, active: int) -> float:  # item i's time with `active` blocks moving
        return item_ns + moved[i] * row_ns(active)

    ends = np.empty(len(moved))
    owner = dealt_blocks(moved, blocks, dynamic, item_ns, row_ns(blocks))
    queues = [np.flatnonzero(owner == block).tolist()[::-1] for block in range(blocks)]  # each block's items, last first
    active = sum(1 for queue in queues if queue)
    heap = [(item_time(queue[-1], active), block) for block, queue in enumerate(queues) if queue]
    heapq.heapify(heap)
    while heap:
        now, block = heapq.heappop(heap)
        ends[queues[block].pop()] = now
        if queues[block]:
            heapq.heappush(heap, (now + item_time(queues[block][-1], active), block))
            continue
        # this block is done: the others' items in hand go on at the faster share, from what is left of them (an item
        # of no rows, a tile whose rows all stay, takes no time at any share)
        if active > 1:
            heap = [(now + (end - now) * _share(item_time(queues[b][-1], active - 1), item_time(queues[b][-1], active)),
                     b) for end, b in heap]
            heapq.heapify(heap)
        active -= 1
    return ends


def deal_stretch(tile_rows: np.ndarray, blocks: int, rate: Callable[[int], float], splits: int = 1,
                 dynamic: bool = False, item: tuple[float, int, float, float] | None = None) -> float:
    """How much longer `blocks` communication blocks take to move the remote tiles (`tile_rows` rows each, in walk
    order) than the same bytes at `rate(blocks)`: the kernels deal the work round robin (layer0: item i is tile i;
    layer1: item i is split i // n of tile i % n), so a block may hold more than its share, and each block moves at
    rate(k) / k while k blocks still move (the link shared among them). On 2x H200 this reproduced each block's
    end within 2-6% on Qwen2-MoE's routing at 4-32 blocks, where bytes at the curve's rate came 8-18% short
    (results/measurements/ep2_h200/run114/). `dynamic` (FusedConfig.comm_deal): each block draws the next item in
    walk order as it finishes one, so an item goes to the block with the fewest rows so far.

    `item` = (ns a block spends per item beside moving its rows, the rows of an item of the curve's workload, bytes
    of an item's row, the link's limit in GB/s: the curve's highest rate; comm_item): a block then takes that per item
    plus its rows at its own pace, and the link, at its limit, is shared in proportion to what each block asks
    (`_item_paced_ns`)."""
    if blocks <= 0 or len(tile_rows) == 0 or tile_rows.sum() <= 0:
        return 1.0
    items = np.tile(tile_rows, splits)
    if item is not None and item[0] > 0:
        item_ns, curve_rows, row_bytes, link = item
        alone_ns = items.sum() * row_bytes / rate(blocks)
        return _item_paced_ns(items, blocks, rate, dynamic, item_ns, curve_rows, row_bytes, link) / alone_ns
    dealt = np.sort(_deal(items, blocks, dynamic)[1])
    time, done = 0.0, 0.0
    for i, level in enumerate(dealt.tolist()):
        if level > done:
            active = blocks - i
            time += (level - done) * active / rate(active)
            done = level
    return max(1.0, time / (dealt.sum() / rate(blocks)))


def _deal(items: np.ndarray, blocks: int, dynamic: bool, item_ns: float = 0.0,
          row_ns: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(items, rows) each of `blocks` blocks moves, dealt as dealt_blocks says."""
    owner = dealt_blocks(items, blocks, dynamic, item_ns, row_ns)
    return np.bincount(owner, minlength=blocks).astype(float), np.bincount(owner, weights=items, minlength=blocks)


def _item_paced_ns(items: np.ndarray, blocks: int, rate: Callable[[int], float], dynamic: bool, item_ns: float,
                   curve_rows: int, row_bytes: float, link: float) -> float:
    """When the last of `blocks` blocks ends moving `items` (rows each, dealt as deal_stretch says), each block
    spending `item_ns` per item beside moving its rows at its own pace: one block's time per row at the curve's
    workload (items of `curve_rows` rows) less the per-item share, rate(1) being one block alone. Blocks between items
    ask nothing of the link, so a block with fewer, larger items asks more of it; where what they ask passes the
    link's limit (`link`, bytes/ns), every block's rows slow by one factor, which shares the link in
    proportion to what each asks (on run 114's spans the blocks with more rows moved them faster: 24 against 16 GB/s
    at 16 blocks). Phase by phase: the blocks go on at that pace until the next one ends."""
    row_ns = _row_ns(row_bytes, rate(1), item_ns, curve_rows)  # a row, one block alone
    count, rows = _deal(items, blocks, dynamic, item_ns, row_ns)
    fixed = count * item_ns  # what each block has left: its items' own time, and its rows
    busy = (fixed + rows) > 0
    fixed, rows = fixed[busy], rows[busy]
    time = 0.0
    while len(rows):
        def asked(slow: float) -> float:  # bytes/ns the blocks ask with their rows slowed by `slow`
            return float((rows * row_bytes / (fixed + rows * row_ns * slow)).sum())
        slow = 1.0
        if asked(1.0) > link:  # one factor that brings what they ask down to the link's limit
            low, high = 1.0, 2.0
            while asked(high) > link:
                low, high = high, 2 * high
            for _ in range(40):
                middle = (low + high) / 2
                low, high = (middle, high) if asked(middle) > link else (low, middle)
            slow = high
        left = fixed + rows * row_ns * slow
        step = float(left.min())
        time += step
        kept = left > step * (1 + 1e-9)  # the blocks still moving go on with the rest of their work
        share = 1 - step / left[kept]
        fixed, rows = fixed[kept] * share, rows[kept] * share
    return time


def copies_while_computing(ctx: SimContext, direction: str, blocks: int, gemm_ns: Callable[[], float],
                           copy_ns: float) -> float:
    """How much slower a layer's copies (`copy_ns` at engine_GBps) end beside its GEMM (`gemm_ns()` alone), where
    calibrate timed them beside the GEMM in one kernel (layer_copy_contention at the nearest GEMM shape, H and the
    FFN width a rank holds: the share d of the GEMM's span they lose; 1 elsewhere, engine_GBps carrying the
    whole-window figure). Copies that outlast the GEMM lose d of its span: (C + d G) / C; copies that end first run
    at 1 - d of their pace throughout: 1 / (1 - d); the lesser holds. On 2x H200 the layer's copies took the same time with their waits given up (results/measurements/ep2_h200/run110:
    the GEMM's share of their span, not where its tiles fall, is what slows them)."""
    tables, wl = ctx.hardware.measured, ctx.workload
    d = None if tables is None else tables.copy_share_lost(blocks, direction, wl.model.hidden, wl.ffn_per_rank)
    if not d or copy_ns <= 0:
        return 1.0
    outlasting = 1.0 + d * gemm_ns() / copy_ns
    return outlasting if d >= 1.0 else min(1.0 / (1.0 - d), outlasting)


def contended(starts: np.ndarray, durations: np.ndarray, window: tuple[float, float], slowdown: float) -> np.ndarray:
    """Tile times with those starting inside the copies' window slowed (HBM and L2 shared)."""
    if slowdown == 1.0:
        return durations
    inside = (starts >= window[0]) & (starts < window[1])
    return np.where(inside, np.ceil(durations * slowdown), durations)


def pack_ns(ctx: SimContext, rank: int) -> float:
    """The pack of this rank's rows to send (`sent_rows`) in expert order into its send region (a gather)."""
    wl = ctx.workload
    pairs = sent_rows(ctx, rank)
    return pass_ns(ctx, "gather", 2 * pairs * wl.model.hidden * wl.dtype_bytes)


def combine_pass_ns(ctx: SimContext, rank: int) -> float:
    """The weighted top-k sum of the combine region (fused_moe.combine_kernel, one pass): bf16 rows
    read by position, their positions and weights, fp32 rows written. At calibrate's "combine"
    rate; a profile from before it timed that kernel takes the gather's (index_select: also one
    pass reading rows by index), not B0's three-pass fp32_reduce."""
    wl = ctx.workload
    pairs = sent_rows(ctx, rank) * wl.tp
    kind = "combine" if "combine" in ctx.hardware.measured.memory_pass_GBps else "gather"
    return pass_ns(ctx, kind, pairs * (wl.model.hidden * wl.dtype_bytes + 12) + wl.tokens * wl.model.hidden * OUT_BYTES)
