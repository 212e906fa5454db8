"""The fused layer's routing plan, computed on the GPU from every rank's per-expert counts.

Every rank sorts its (token, slot) pairs by expert and packs the token rows in that order
into its send region (expert-major is destination-rank-major), then publishes its per-expert
counts. The rows rank r receives from source s are therefore one contiguous run of s's send
region, starting at the sum of s's counts for the experts before r's.

Rank r lays its received rows out as one *segment* per source, sources in the row order
(`local-first`: itself first, then the peers in rotation; `source-order`: 0, 1, ...), and
inside a segment one *group* per local expert. Row tiles of BLOCK_M rows never cross a group,
so every tile has one expert and one source: it becomes ready at once, and its rows are
contiguous at the source too (one bulk copy, no per-row indices).

`device_plan` is one Triton program (`plan_kernel`): a handful of vector scans over the
(source, expert) groups and one pass over the tile table, so it runs without a host sync and
inside a CUDA graph, in one launch (the fixed-shape torch ops it replaces were ~30 launches,
100+ us per call on H100: results/measurements/ep2_h100/profile/). `reference_plan` is the
same layout written as plain Python loops, for the tests.

A tile-table row (int32): expert, first row, rows, source rank, first row at the source.
Rows past the tile count have rows = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from comet_dse.choices import ROW_ORDERS


def source_rotation(rank: int, world: int, row_order: str) -> list[int]:
    """The sources in the order their segments are laid out (and their tiles computed)."""
    if row_order not in ROW_ORDERS:
        raise ValueError(f"row_order must be one of {', '.join(ROW_ORDERS)}, got {row_order!r}")
    return [(rank + i) % world for i in range(world)] if row_order == "local-first" else list(range(world))


def max_row_tiles(max_rows: int, groups: int, block_m: int) -> int:
    """Row tiles a layout of at most `max_rows` rows in `groups` groups can need."""
    return -(-max_rows // block_m) + groups


@dataclass
class DevicePlan:
    tiles: torch.Tensor  # (max_tiles, 5) int32 in layout order (layer0's compute order)
    num_tiles: torch.Tensor  # (1,) int32
    order1: torch.Tensor  # (max_tiles,) int32: layer1's tile order, remote tiles first (expert_order: both layers')
    remote: torch.Tensor  # (max_tiles,) int32: the remote tiles (the first num_tiles - own) in the order they move
    local_tiles: torch.Tensor  # (2,) int32: this rank's own tiles are [first, end) (one segment)
    segments: torch.Tensor  # (W, 3) int64 per source rank: first row, rows, first row at the source

    @classmethod
    def empty(cls, max_tiles: int, world: int, device) -> DevicePlan:
        i32 = dict(dtype=torch.int32, device=device)
        return cls(torch.empty(max_tiles, 5, **i32), torch.empty(1, **i32), torch.empty(max_tiles, **i32),
                   torch.empty(max_tiles, **i32), torch.empty(2, **i32), torch.empty(world, 3, dtype=torch.int64, device=device))


@triton.jit
def _pick(onehot, values):
    """values[g] for each row's one-hot group g (0 where the row has none): a gather from registers."""
    return tl.sum(tl.where(onehot, values[None, :], 0), axis=1)


@triton.jit
def _expert_major_starts(group_tiles, G: tl.constexpr):
    """(W_P2, E_P2) tiles per (layout position, expert) -> each group's first position in expert-major
    order (experts in turn, layout positions inside an expert), flattened p-major."""
    expert_tiles = tl.sum(group_tiles, axis=0)
    starts = (tl.cumsum(expert_tiles, axis=0) - expert_tiles)[None, :] + tl.cumsum(group_tiles, axis=0) - group_tiles
    return tl.reshape(starts, (G,))


@triton.jit
def plan_kernel(counts_ptr, rotation_ptr, tiles_ptr, num_tiles_ptr, order1_ptr, remote_ptr, local_tiles_ptr,
                segments_ptr, rank, experts_per_rank, max_tiles,
                WORLD: tl.constexpr, W_P2: tl.constexpr, E_P2: tl.constexpr, ET_P2: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_U: tl.constexpr, EXPERT_ORDER: tl.constexpr):
    """One program. Groups are indexed (layout position p, local expert e); flattened p-major,
    which is layout order (padding groups have no rows, hence no tiles). EXPERT_ORDER: both layers
    visit the tiles expert by expert (sources in layout order inside an expert), and the remote tiles
    move in that order; else layer0's own tiles come first, layer1's remote ones, and the remote
    tiles move in layout order. The communication blocks walk only `remote`: every one of them
    has work (own and remote tiles alternate in expert order)."""
    G: tl.constexpr = W_P2 * E_P2
    p = tl.arange(0, W_P2)
    e = tl.arange(0, E_P2)
    p_ok = p < WORLD
    src = tl.load(rotation_ptr + p, mask=p_ok, other=0).to(tl.int32)  # source of layout position p
    total = WORLD * experts_per_rank
    row_of_src = counts_ptr + src[:, None] * total
    rows = tl.load(row_of_src + rank * experts_per_rank + e[None, :],
                   mask=p_ok[:, None] & (e < experts_per_rank)[None, :], other=0)  # (W_P2, E_P2)
    c = tl.arange(0, ET_P2)
    before = tl.load(row_of_src + c[None, :], mask=p_ok[:, None] & (c < rank * experts_per_rank)[None, :], other=0)
    base = tl.sum(before, axis=1)  # where my run starts in each source's send region
    seg_rows = tl.sum(rows, axis=1)
    seg_start = tl.cumsum(seg_rows, axis=0) - seg_rows
    within = tl.cumsum(rows, axis=1) - rows  # a group's first row inside its segment
    group_tiles = (rows + BLOCK_M - 1) // BLOCK_M
    seg_tiles = tl.sum(group_tiles, axis=1)
    seg_tile_start = tl.cumsum(seg_tiles, axis=0) - seg_tiles
    num_tiles = tl.sum(seg_tiles, axis=0)
    zeros = tl.zeros((W_P2, E_P2), dtype=tl.int32)
    f_rows = tl.reshape(rows, (G,))
    f_tiles = tl.reshape(group_tiles, (G,))
    f_tile_end = tl.reshape(seg_tile_start[:, None] + tl.cumsum(group_tiles, axis=1), (G,))
    f_start = tl.reshape(seg_start[:, None] + within, (G,))
    f_src_start = tl.reshape(base[:, None] + within, (G,))
    f_src = tl.reshape(src[:, None] + zeros, (G,))
    f_expert = tl.reshape(e[None, :] + zeros, (G,))
    # expert-major position of a group's first tile: the tiles of the experts before, then of this
    # expert's groups in the segments before; the same among the remote tiles only
    f_em_start = _expert_major_starts(group_tiles, G)
    f_em_remote_start = _expert_major_starts(tl.where((p_ok & (src != rank))[:, None], group_tiles, 0), G)
    # this rank's own segment: tiles [own_start, own_end) of the layout
    own = p_ok & (src == rank)
    own_start = tl.sum(tl.where(own, seg_tile_start, 0), axis=0)
    n_own = tl.sum(tl.where(own, seg_tiles, 0), axis=0)
    n_remote = num_tiles - n_own
    groups = tl.arange(0, G)
    for u0 in range(0, max_tiles, BLOCK_U):
        u = u0 + tl.arange(0, BLOCK_U)
        in_table = u < max_tiles
        group = tl.sum((f_tile_end[None, :] <= u[:, None]).to(tl.int32), axis=1)  # first group ending after u
        onehot = group[:, None] == groups[None, :]  # no group past the last tile: padding rows are 0
        index = u - (_pick(onehot, f_tile_end) - _pick(onehot, f_tiles))  # row tile within its group
        first = index * BLOCK_M
        entry = tiles_ptr + 5 * u
        tl.store(entry, _pick(onehot, f_expert), mask=in_table)
        tl.store(entry + 1, _pick(onehot, f_start) + first, mask=in_table)
        tl.store(entry + 2, tl.minimum(_pick(onehot, f_rows) - first, BLOCK_M) * (u < num_tiles), mask=in_table)
        tl.store(entry + 3, _pick(onehot, f_src), mask=in_table)
        tl.store(entry + 4, _pick(onehot, f_src_start) + first, mask=in_table)
        own_end = own_start + n_own
        is_remote = ((u < own_start) | (u >= own_end)) & (u < num_tiles)
        if EXPERT_ORDER:
            at = tl.where(u < num_tiles, _pick(onehot, f_em_start) + index, u)
            remote_at = _pick(onehot, f_em_remote_start) + index
        else:  # layer1: remote tiles first in layout order, then this rank's own, then the padding
            at = tl.where(u < own_start, u,
                          tl.where(u < own_end, n_remote + u - own_start, tl.where(u < num_tiles, u - n_own, u)))
            remote_at = at
        tl.store(order1_ptr + at, u, mask=in_table)
        tl.store(remote_ptr + remote_at, u, mask=in_table & is_remote)
    tl.store(num_tiles_ptr, num_tiles)
    tl.store(local_tiles_ptr, own_start)
    tl.store(local_tiles_ptr + 1, own_start + n_own)
    seg = segments_ptr + 3 * src
    tl.store(seg, seg_start.to(tl.int64), mask=p_ok)
    tl.store(seg + 1, seg_rows.to(tl.int64), mask=p_ok)
    tl.store(seg + 2, base.to(tl.int64), mask=p_ok)


def plan_block_u(groups: int) -> int:
    """Tiles per step of plan_kernel: its one-hot (tiles x groups) matrix stays in registers
    (8192 entries over 8 warps: no spills at 8 ranks x 32 experts, tests/kernels/test_fused_compiles.py)."""
    return max(16, min(64, 8192 // groups))


def device_plan(counts: torch.Tensor, rank: int, experts_per_rank: int, block_m: int, rotation: torch.Tensor,
                max_tiles: int, out: DevicePlan | None = None, expert_order: bool = False) -> DevicePlan:
    """counts (W, E) int32: counts[s, e] = pairs source s routes to global expert e; rotation (W,)
    on the same device (made once: a host-to-device copy cannot be captured in a CUDA graph).
    `out`: buffers to fill (a layer keeps one set); new ones otherwise."""
    world = counts.shape[0]
    plan = out if out is not None else DevicePlan.empty(max_tiles, world, counts.device)
    p2 = lambda n: max(2, triton.next_power_of_2(n))  # noqa: E731
    plan_kernel[(1,)](counts.to(torch.int32).contiguous(), rotation, plan.tiles, plan.num_tiles, plan.order1, plan.remote,
                      plan.local_tiles, plan.segments, rank, experts_per_rank, max_tiles,
                      WORLD=world, W_P2=p2(world), E_P2=p2(experts_per_rank), ET_P2=p2(counts.shape[1]),
                      BLOCK_M=block_m, BLOCK_U=plan_block_u(p2(world) * p2(experts_per_rank)), EXPERT_ORDER=expert_order,
                      num_warps=8)
    return plan


def reference_plan(counts: list[list[int]], rank: int, experts_per_rank: int, block_m: int,
                   rotation: list[int], expert_order: bool = False) -> tuple[list[tuple[int, ...]], list[int]]:
    """The same layout from plain loops: (tile rows (expert, row0, rows, src, src_row0), layer1 order;
    with expert_order the order of both layers). The remote tiles move in that order's remote entries."""
    tiles = []
    row = 0
    for src in rotation:
        at_src = sum(counts[src][:rank * experts_per_rank])
        for e in range(experts_per_rank):
            n = counts[src][rank * experts_per_rank + e]
            for first in range(0, n, block_m):
                tiles.append((e, row + first, min(block_m, n - first), src, at_src + first))
            row += n
            at_src += n
    if expert_order:
        return tiles, sorted(range(len(tiles)), key=lambda i: (tiles[i][0], i))
    order1 = [i for i, t in enumerate(tiles) if t[3] != rank] + [i for i, t in enumerate(tiles) if t[3] == rank]
    return tiles, order1
