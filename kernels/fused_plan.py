"""The fused layer's routing plan, computed on the GPU from every rank's per-expert counts.

Every rank sorts its (token, slot) pairs by expert and packs the token rows in that order
into its send region (expert-major is destination-rank-major), then publishes its per-expert
counts. The rows rank r receives from source s are therefore one contiguous run of s's send
region, starting at the sum of s's counts for the experts before r's.

Rank r lays its received rows out in one of two layouts (both have every tile hold one expert):

- *by source*: one *segment* per source, sources in the row order (`local-first`: itself first,
  then the peers in rotation; `source-order`: 0, 1, ...), and inside a segment one *group* per
  local expert. Row tiles of BLOCK_M rows never cross a group, so every tile has one source and
  its rows are one contiguous run there. Each (expert, source) group ends in a partial tile: with
  few rows per expert that is up to half the GEMM work wasted (64 own + 64 remote rows: two tiles
  for 128 rows). The copy engine needs it (one copy per source).
- *merged* (the default with communication blocks): first each expert's own rows that fill whole
  tiles (read in place, no copy, no wait); then per expert one *run*: its own remaining rows and
  every peer's rows, sources in the row order, tiled across the sources. A run tile's rows come in
  up to W *pieces*; the communication blocks move the remote ones piece by piece (the own piece is
  put in place by a local copy on every SM before layer0: fused_moe.place_own_kernel).
  An expert then wastes at most one partial tile.

`device_plan` is one Triton kernel (`plan_kernel`): a handful of vector scans over the
(source, expert) groups, then the tile table, a block of entries per program, so it runs without
a host sync and inside a CUDA graph, in one launch (the fixed-shape torch ops it replaces were ~30
launches, 100+ us per call on H100: results/measurements/ep2_h100/profile/). `reference_plan` is the
same layout written as plain Python loops, for the tests.

A tile-table row (int32): expert, first row, rows, source rank, first row at the source; a
merged run's tile has source -1 (its rows are in `pieces`). Rows past the tile count have rows = 0.
The pieces table describes both layouts: per local expert and layout position, the rows one source
contributes (first layout row, rows, source, first row at the source); the kernels copy a tile's
rows by intersecting it with its expert's pieces.
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


def layout_groups(world: int, experts_per_rank: int, merged: bool) -> int:
    """Groups a layout cuts its tiles from: per expert one per source, or (merged) own full tiles + run."""
    return (2 if merged else world) * experts_per_rank


@dataclass
class DevicePlan:
    tiles: torch.Tensor  # (max_tiles, 5) int32 in layout order (layer0's compute order)
    num_tiles: torch.Tensor  # (1,) int32
    order1: torch.Tensor  # (max_tiles,) int32: layer1's tile order, remote tiles first (expert_order: both layers')
    remote: torch.Tensor  # (max_tiles,) int32: the remote tiles (the first num_tiles - own) in the order they move
    local_tiles: torch.Tensor  # (2,) int32: this rank's own tiles are [first, end) (one segment)
    segments: torch.Tensor  # (W, 3) int64 per source rank: first row, rows, first row at the source (by source)
    pieces: torch.Tensor  # (E_l, W, 4) int32 per local expert, per layout position: first row, rows, source, row there

    def remote_count(self) -> int:
        """The plan's remote row tiles (a host sync): what layer0's communication blocks pull one by one, and layer1
        pushes each once per column split."""
        first, end = self.local_tiles.tolist()
        return int(self.num_tiles.item()) - (end - first)

    @classmethod
    def empty(cls, max_tiles: int, world: int, experts_per_rank: int, device) -> DevicePlan:
        i32 = dict(dtype=torch.int32, device=device)
        return cls(torch.empty(max_tiles, 5, **i32), torch.empty(1, **i32), torch.empty(max_tiles, **i32),
                   torch.empty(max_tiles, **i32), torch.empty(2, **i32), torch.empty(world, 3, dtype=torch.int64, device=device),
                   torch.zeros(experts_per_rank, world, 4, **i32))


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
                segments_ptr, pieces_ptr, rank, experts_per_rank, max_tiles,
                WORLD: tl.constexpr, W_P2: tl.constexpr, E_P2: tl.constexpr, ET_P2: tl.constexpr, Q_P2: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_U: tl.constexpr, EXPERT_ORDER: tl.constexpr, MERGED: tl.constexpr):
    """One program per BLOCK_U entries of the tile table (grid cdiv(max_tiles, BLOCK_U)): each redoes
    the few scans over the groups and writes its entries; program 0 also writes the scalars, the
    segments and the pieces. Tiles are cut from *groups* on a (Q_P2, E_P2) grid, flattened q-major,
    which is layout order (padding groups have no rows, hence no tiles): by source, q is the layout position
    (Q_P2 = W_P2); MERGED, q = 0 holds each expert's own full tiles and q = 1 its merged run (Q_P2 = 2).
    EXPERT_ORDER: both layers visit the tiles expert by expert (groups in layout order inside an
    expert), and the remote tiles move in that order; else layer0's own tiles come first, layer1's
    remote ones, and the remote tiles move in layout order. The communication blocks walk only
    `remote`: every one of them has work (own and remote tiles alternate in expert order)."""
    G: tl.constexpr = Q_P2 * E_P2
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
    within = tl.cumsum(rows, axis=1) - rows  # a (source, expert) block's first row inside its source's run
    at_src = base[:, None] + within  # ... and in the source's send region
    own_p = (p_ok & (src == rank))[:, None]
    if MERGED:
        own_rows = tl.sum(tl.where(own_p, rows, 0), axis=0)
        full = own_rows // BLOCK_M * BLOCK_M  # own rows in full tiles (q = 0), read in place
        piece_rows = tl.where(own_p, rows - full[None, :], rows)  # the rest: each source's piece of the run
        piece_at_src = at_src + tl.where(own_p, full[None, :], 0)
        run = tl.sum(piece_rows, axis=0)
        run_start = tl.sum(full, axis=0) + tl.cumsum(run, axis=0) - run
        piece_row = run_start[None, :] + tl.cumsum(piece_rows, axis=0) - piece_rows
        q = tl.arange(0, Q_P2)[:, None] + tl.zeros((Q_P2, E_P2), dtype=tl.int32)
        g_rows = tl.where(q == 0, full[None, :], run[None, :])
        g_start = tl.where(q == 0, (tl.cumsum(full, axis=0) - full)[None, :], run_start[None, :])
        g_src = tl.where(q == 0, rank, -1)  # -1: the run's rows come from its pieces
        g_src_start = tl.where(q == 0, tl.sum(tl.where(own_p, at_src, 0), axis=0)[None, :], 0)
        g_remote = q == 1
    else:
        piece_rows, piece_at_src = rows, at_src
        piece_row = seg_start[:, None] + within
        g_rows, g_start, g_src_start = rows, piece_row, at_src
        g_src = src[:, None] + tl.zeros((W_P2, E_P2), dtype=tl.int32)
        g_remote = (p_ok & (src != rank))[:, None] & (e < E_P2)[None, :]
    group_tiles = (g_rows + BLOCK_M - 1) // BLOCK_M  # (Q_P2, E_P2)
    q_tiles = tl.sum(group_tiles, axis=1)
    q_tile_start = tl.cumsum(q_tiles, axis=0) - q_tiles
    num_tiles = tl.sum(q_tiles, axis=0)
    f_rows = tl.reshape(g_rows, (G,))
    f_tiles = tl.reshape(group_tiles, (G,))
    f_tile_end = tl.reshape(q_tile_start[:, None] + tl.cumsum(group_tiles, axis=1), (G,))
    f_start = tl.reshape(g_start, (G,))
    f_src_start = tl.reshape(g_src_start, (G,))
    f_src = tl.reshape(g_src, (G,))
    f_expert = tl.reshape(e[None, :] + tl.zeros((Q_P2, E_P2), dtype=tl.int32), (G,))
    # expert-major position of a group's first tile: the tiles of the experts before, then of this
    # expert's groups before it; the same among the remote tiles only
    f_em_start = _expert_major_starts(group_tiles, G)
    f_em_remote_start = _expert_major_starts(tl.where(g_remote, group_tiles, 0), G)
    # this rank's own tiles: [own_start, own_end) of the layout (by source: its own segment; merged: q = 0)
    n_remote = tl.sum(tl.sum(tl.where(g_remote, group_tiles, 0), axis=1), axis=0)
    n_own = num_tiles - n_remote
    if MERGED:
        own_start = 0
    else:
        own_start = tl.sum(tl.where(p_ok & (src == rank), q_tile_start, 0), axis=0)
    groups = tl.arange(0, G)
    pid = tl.program_id(0)
    if pid == 0:  # the per-call scalars and tables, once
        tl.store(num_tiles_ptr, num_tiles)
        tl.store(local_tiles_ptr, own_start)
        tl.store(local_tiles_ptr + 1, own_start + n_own)
        seg = segments_ptr + 3 * src
        tl.store(seg, seg_start.to(tl.int64), mask=p_ok)
        tl.store(seg + 1, seg_rows.to(tl.int64), mask=p_ok)
        tl.store(seg + 2, base.to(tl.int64), mask=p_ok)
        # every (expert, layout position) piece: its first layout row, rows, source, first row at the source
        piece = pieces_ptr + (e[None, :] * WORLD + p[:, None]) * 4
        piece_ok = p_ok[:, None] & (e < experts_per_rank)[None, :]
        tl.store(piece, piece_row, mask=piece_ok)
        tl.store(piece + 1, piece_rows, mask=piece_ok)
        tl.store(piece + 2, src[:, None] + tl.zeros((W_P2, E_P2), dtype=tl.int32), mask=piece_ok)
        tl.store(piece + 3, piece_at_src, mask=piece_ok)
    # this program's BLOCK_U entries of the tile table and of both orders
    u = pid * BLOCK_U + tl.arange(0, BLOCK_U)
    in_table = u < max_tiles
    group = tl.sum((f_tile_end[None, :] <= u[:, None]).to(tl.int32), axis=1)  # first group ending after u
    onehot = group[:, None] == groups[None, :]  # no group past the last tile: padding rows are 0
    index = u - (_pick(onehot, f_tile_end) - _pick(onehot, f_tiles))  # row tile within its group
    first = index * BLOCK_M
    entry = tiles_ptr + 5 * u
    tl.store(entry, _pick(onehot, f_expert), mask=in_table)
    tl.store(entry + 1, _pick(onehot, f_start) + first, mask=in_table)
    tl.store(entry + 2, tl.minimum(_pick(onehot, f_rows) - first, BLOCK_M) * (u < num_tiles), mask=in_table)
    tile_src = _pick(onehot, f_src)
    tl.store(entry + 3, tile_src, mask=in_table)
    tl.store(entry + 4, tl.where(tile_src < 0, 0, _pick(onehot, f_src_start) + first), mask=in_table)
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


def plan_block_u(groups: int) -> int:
    """Tiles per program of plan_kernel: its one-hot (tiles x groups) matrix stays in registers
    (8192 entries over 8 warps: no spills at 8 ranks x 32 experts, tests/kernels/test_fused_compiles.py)."""
    return max(16, min(64, 8192 // groups))


def device_plan(counts: torch.Tensor, rank: int, experts_per_rank: int, block_m: int, rotation: torch.Tensor,
                max_tiles: int, out: DevicePlan | None = None, expert_order: bool = False, merged: bool = False) -> DevicePlan:
    """counts (W, E) int32: counts[s, e] = pairs source s routes to global expert e; rotation (W,)
    on the same device (made once: a host-to-device copy cannot be captured in a CUDA graph).
    `out`: buffers to fill (a layer keeps one set); new ones otherwise. `merged`: the merged layout
    (module docstring); max_tiles must then allow for 2 groups per expert (`layout_groups`)."""
    world = counts.shape[0]
    plan = out if out is not None else DevicePlan.empty(max_tiles, world, experts_per_rank, counts.device)
    p2 = lambda n: max(2, triton.next_power_of_2(n))  # noqa: E731
    q_p2 = 2 if merged else p2(world)
    block_u = plan_block_u(q_p2 * p2(experts_per_rank))
    plan_kernel[(triton.cdiv(max_tiles, block_u),)](
        counts.to(torch.int32).contiguous(), rotation, plan.tiles, plan.num_tiles, plan.order1, plan.remote,
        plan.local_tiles, plan.segments, plan.pieces, rank, experts_per_rank, max_tiles,
        WORLD=world, W_P2=p2(world), E_P2=p2(experts_per_rank), ET_P2=p2(counts.shape[1]), Q_P2=q_p2,
        BLOCK_M=block_m, BLOCK_U=block_u, EXPERT_ORDER=expert_order, MERGED=merged, num_warps=8)
    return plan


Tile = tuple[int, int, int, int, int]
Piece = tuple[int, int, int, int]


def reference_plan(counts: list[list[int]], rank: int, experts_per_rank: int, block_m: int, rotation: list[int],
                   expert_order: bool = False, merged: bool = False) -> tuple[list[Tile], list[int], list[list[Piece]]]:
    """The same layout from plain loops: tile rows (expert, row0, rows, src, src_row0); layer1's order
    (with expert_order the order of both layers; the remote tiles move in its remote entries); and
    per local expert, per layout position, its piece (first layout row, rows, source, first row there)."""
    per = experts_per_rank
    n = lambda src, e: counts[src][rank * per + e]  # noqa: E731
    at = lambda src, e: sum(counts[src][:rank * per + e])  # noqa: E731
    tiles: list[Tile] = []
    pieces: list[list[Piece]] = [[(0, 0, 0, 0)] * len(rotation) for _ in range(per)]
    row = 0
    if not merged:
        for j, src in enumerate(rotation):
            for e in range(per):
                pieces[e][j] = (row, n(src, e), src, at(src, e))
                tiles += [(e, row + f, min(block_m, n(src, e) - f), src, at(src, e) + f) for f in range(0, n(src, e), block_m)]
                row += n(src, e)
    else:
        full = [n(rank, e) // block_m * block_m for e in range(per)]
        for e in range(per):  # own full tiles, read where they are
            tiles += [(e, row + f, block_m, rank, at(rank, e) + f) for f in range(0, full[e], block_m)]
            row += full[e]
        for e in range(per):  # the run: own remainder and remote rows, in layout order
            start = row
            for j, src in enumerate(rotation):
                skip = full[e] if src == rank else 0
                pieces[e][j] = (row, n(src, e) - skip, src, at(src, e) + skip)
                row += n(src, e) - skip
            tiles += [(e, start + f, min(block_m, row - start - f), -1, 0) for f in range(0, row - start, block_m)]
    if expert_order:
        return tiles, sorted(range(len(tiles)), key=lambda i: (tiles[i][0], i)), pieces
    order1 = [i for i, t in enumerate(tiles) if t[3] != rank] + [i for i, t in enumerate(tiles) if t[3] == rank]
    return tiles, order1, pieces
