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

`device_plan` is made of fixed-shape torch ops only (cumsum, searchsorted, one sort of the
tile keys), so it runs without a host sync and inside a CUDA graph. `reference_plan` is the same layout
written as plain Python loops, for the tests.

A tile-table row (int32): expert, first row, rows, source rank, first row at the source.
Rows past the tile count have rows = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
    order1: torch.Tensor  # (max_tiles,) int32: layer1's tile order, tiles of remote sources first
    local_tiles: torch.Tensor  # (2,) int32: this rank's own tiles are [first, end) (one segment)
    segments: torch.Tensor  # (W, 3) int64 per source rank: first row, rows, first row at the source


def device_plan(counts: torch.Tensor, rank: int, experts_per_rank: int, block_m: int, rotation: torch.Tensor,
                max_tiles: int) -> DevicePlan:
    """counts (W, E): counts[s, e] = pairs source s routes to global expert e; rotation (W,) int64
    on the same device (made once: a host-to-device copy cannot be captured in a CUDA graph)."""
    world = counts.shape[0]
    dev = counts.device
    counts = counts.to(torch.int64)
    mine = counts[:, rank * experts_per_rank:(rank + 1) * experts_per_rank]  # (W, E_l) rows s sends me
    src_base = counts[:, :rank * experts_per_rank].sum(dim=1)  # (W,) my run's start in s's send region
    rot = rotation
    group_rows = mine[rot].reshape(-1)  # (W * E_l,) groups in layout order: segment-major, expert-minor
    group_end = torch.cumsum(group_rows, 0)
    group_start = group_end - group_rows
    seg_start = group_start.view(world, experts_per_rank)[:, 0]  # (W,) by layout position
    group_tiles = (group_rows + block_m - 1) // block_m
    tile_end = torch.cumsum(group_tiles, 0)
    num_tiles = tile_end[-1:]
    u = torch.arange(max_tiles, device=dev)
    group = torch.searchsorted(tile_end, u, right=True).clamp_(max=group_rows.numel() - 1)  # (max_tiles,)
    index = u - (tile_end - group_tiles)[group]  # row tile within its group
    row0 = group_start[group] + index * block_m
    rows = (group_rows[group] - index * block_m).clamp_(0, block_m)
    rows = torch.where(u < num_tiles, rows, torch.zeros_like(rows))
    pos = group // experts_per_rank
    src = rot[pos]
    src_row0 = src_base[src] + row0 - seg_start[pos]
    tiles = torch.stack([group % experts_per_rank, row0, rows, src, src_row0], dim=1).to(torch.int32)
    # layer1: remote tiles first (their results travel), then local, then the padding
    key = torch.where(u < num_tiles, (src == rank).to(torch.int64), torch.full_like(u, 2))
    order1 = torch.sort(key * max_tiles + u).indices.to(torch.int32)
    seg_tile_end = tile_end.view(world, experts_per_rank)[:, -1]  # (W,) by layout position
    seg_tile_start = seg_tile_end - group_tiles.view(world, experts_per_rank).sum(dim=1)
    # the layout position of this rank's segment, as a 1-element index: a 0-d tensor index would be
    # read on the host (a sync, and an error inside a CUDA graph capture)
    own = torch.argmax((rot == rank).to(torch.int32)).view(1)
    local_tiles = torch.cat([seg_tile_start[own], seg_tile_end[own]]).to(torch.int32)
    by_rank = torch.empty(world, 3, dtype=torch.int64, device=dev)
    by_rank[rot] = torch.stack([seg_start, mine[rot].sum(dim=1), src_base[rot]], dim=1)
    return DevicePlan(tiles, num_tiles.to(torch.int32), order1, local_tiles, by_rank)


def reference_plan(counts: list[list[int]], rank: int, experts_per_rank: int, block_m: int,
                   rotation: list[int]) -> tuple[list[tuple[int, ...]], list[int]]:
    """The same layout from plain loops: (tile rows (expert, row0, rows, src, src_row0), layer1 order)."""
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
    order1 = [i for i, t in enumerate(tiles) if t[3] != rank] + [i for i, t in enumerate(tiles) if t[3] == rank]
    return tiles, order1
