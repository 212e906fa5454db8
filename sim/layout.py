"""Where every row of the shared tensor lives on a rank, and which tiles it feeds.

The shared tensor of rank r holds the rows (token, expert) routed to r's experts:
expert-major (a GEMM tile never spans two experts), and inside an expert sorted by
source rank in the schedule's row order. With `local-first` r's own rows come first, so
compute starts on local tiles while remote rows arrive; then the peers of r's node, then
each other node in turn, and inside every node the GPUs rotated by r's own index in its
node. So at any moment the ranks of a node read different peers over NVLink and
different GPUs of another node over the network, like a pairwise exchange, instead of
queueing on one GPU's ports. `source-order` keeps 0..W-1 for everyone, as a plain
all-to-all lays rows out.

Shared experts are one more local group of rows: the rank's own tokens, ready at once,
never communicated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from comet_dse.choices import ROW_ORDERS  # noqa: F401  (the schedules and the search space import it from here)
from comet_dse.hardware import HardwareProfile
from comet_dse.routing import Routing
from comet_dse.workload import Workload


@dataclass(frozen=True)
class Group:
    """One GEMM group on a rank: a routed expert (its F/TP slice) or the shared experts."""

    expert: int  # -1 for the shared experts
    rows_by_source: np.ndarray  # (W,) rows from each source rank
    ffn: int  # intermediate width computed on this rank


@dataclass
class RankLayout:
    rank: int
    groups: list[Group]
    source_order: np.ndarray  # (W,) the order in which sources' rows are laid out and pulled
    flow_bytes: np.ndarray  # (W,) bytes pulled from each source in layer0
    # one entry per m-tile (block_m rows of one group), in memory order
    tile_group: np.ndarray
    tile_rows: np.ndarray
    tile_last_source: np.ndarray  # source of the tile's last row; -1: ready at once (shared experts)
    tile_last_offset: np.ndarray  # bytes of that source's flow that must have arrived
    tile_first_source: np.ndarray
    # (source, rows) per tile, for layer1 sends, flat: tile i's are part_source/part_rows[part_start[i]:part_start[i + 1]]
    # (a list of tuples per tile is ~10x the memory, for every rank at once)
    part_start: np.ndarray
    part_source: np.ndarray
    part_rows: np.ndarray
    # (W,) with TP: tokens each source sends this rank per row of its (tokens / rows), the share of a
    # tile's rows that travel (layer0) and come back pre-reduced (layer1); None: every row (EP only)
    row_share: np.ndarray | None = None

    @property
    def routed_rows(self) -> int:
        return int(sum(g.rows_by_source.sum() for g in self.groups if g.expert >= 0))


def source_order(rank: int, world: int, row_order: str, gpus_per_node: int) -> np.ndarray:
    if row_order != "local-first":
        return np.arange(world)
    node_size = min(gpus_per_node, world)
    nodes = -(-world // node_size)
    node, index = divmod(rank, node_size)
    order = [((node + hop) % nodes) * node_size + (index + j) % node_size for hop in range(nodes) for j in range(node_size)]
    return np.array([peer for peer in order if peer < world])  # a last node may be partly filled


def rank_groups(workload: Workload, routing: Routing, rank: int) -> list[Group]:
    groups = [Group(e, routing.counts[:, e].copy(), workload.ffn_per_rank) for e in workload.local_experts(rank)]
    if workload.model.shared_ffn:
        own = np.zeros(workload.world, dtype=np.int64)
        own[rank] = workload.tokens
        groups.append(Group(-1, own, workload.model.shared_ffn))
    return groups


def token_share(rows: np.ndarray, tokens: np.ndarray | None) -> np.ndarray | None:
    """(W,) tokens per row of each source (0 where it sends none); None without tokens (EP only)."""
    if tokens is None:
        return None
    return np.divide(tokens, rows, out=np.zeros(len(rows)), where=rows > 0)


def build_layout(workload: Workload, routing: Routing, rank: int, block_m: int, row_order: str,
                 gpus_per_node: int, split_by_source: bool = False, sent_tokens: np.ndarray | None = None) -> RankLayout:
    """`split_by_source`: row tiles never cross from one source's rows to the next (the fused kernels
    as built: a tile is one contiguous copy from one source); else they run on across sources.
    `sent_tokens` (W,): with TP, the tokens each source sends this rank (SimContext.group_sends), each
    once however many of its rows here it feeds. Which rows share a token is not tracked here, so a
    source's tokens are taken to arrive spread evenly over its rows: a tile waits for its share."""
    world = workload.world
    row_bytes = workload.model.hidden * workload.dtype_bytes
    order = source_order(rank, world, row_order, gpus_per_node)
    groups = rank_groups(workload, routing, rank)
    routed = [g for g in groups if g.expert >= 0]
    # layer0 pulls source by source; inside one source's flow, the rows of each expert in turn
    per_source = np.array([g.rows_by_source for g in routed]).reshape(len(routed), world)  # (groups, W)
    offset_in_flow = np.vstack([np.zeros((1, world), dtype=np.int64), np.cumsum(per_source, axis=0)[:-1]])  # rows
    share = token_share(per_source.sum(axis=0), sent_tokens)
    flow_bytes = (per_source.sum(axis=0) if sent_tokens is None else np.asarray(sent_tokens)) * row_bytes

    tile_group, tile_rows, last_src, last_off, first_src = [], [], [], [], []
    part_counts, part_source, part_rows = [], [], []
    for gi, group in enumerate(groups):
        rows = group.rows_by_source[order]  # rows per source, in layout order
        ends = np.cumsum(rows)
        starts = ends - rows
        total = int(ends[-1]) if len(ends) else 0
        if split_by_source:  # block_m spans inside each source's rows
            pieces = -(-rows // block_m)
            span_start = np.repeat(starts, pieces) + (np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * block_m
            span_end = np.minimum(span_start + block_m, np.repeat(ends, pieces))
        else:
            span_start = np.arange(0, total, block_m)
            span_end = np.minimum(span_start + block_m, total)
        first = np.searchsorted(ends, span_start, side="right")
        last = np.searchsorted(ends, span_end - 1, side="right")
        tile_group.append(np.full(len(span_start), gi))
        tile_rows.append(span_end - span_start)
        first_src.append(order[first])
        # a tile's parts: the sources first..last of it that have rows here, each with its rows in the span
        width = last - first + 1
        tile_of = np.repeat(np.arange(len(span_start)), width)
        source_index = np.repeat(first, width) + np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width)
        kept = rows[source_index] > 0
        tile_of, source_index = tile_of[kept], source_index[kept]
        part_counts.append(np.bincount(tile_of, minlength=len(span_start)))
        part_source.append(order[source_index])
        part_rows.append(np.minimum(span_end[tile_of], ends[source_index]) - np.maximum(span_start[tile_of], starts[source_index]))
        if group.expert < 0:
            last_src.append(np.full(len(span_start), -1))
            last_off.append(np.zeros(len(span_start), dtype=np.int64))
        else:
            src = order[last]
            last_src.append(src)
            # bytes of src's flow that carry its rows up to the tile's last one
            up_to = offset_in_flow[gi, src] + span_end - starts[last]
            if share is None:
                last_off.append(up_to * row_bytes)
            else:
                tokens = np.minimum(np.ceil(up_to * share[src] - 1e-9).astype(np.int64), np.asarray(sent_tokens)[src])
                last_off.append(tokens * row_bytes)
    flat = (lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64))
    part_start = np.concatenate(([0], np.cumsum(flat(part_counts))))
    return RankLayout(
        rank=rank,
        groups=groups,
        source_order=order,
        flow_bytes=flow_bytes,
        tile_group=flat(tile_group),
        tile_rows=flat(tile_rows),
        tile_last_source=flat(last_src),
        tile_last_offset=flat(last_off),
        tile_first_source=flat(first_src),
        part_start=part_start.astype(np.int64),
        part_source=flat(part_source),
        part_rows=flat(part_rows),
        row_share=share,
    )


def group_tile_ns(hardware: HardwareProfile, workload: Workload, groups: list[Group], rows: np.ndarray,
                  block_m: int, block_n: int, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group: (tile time in ns, tiles along N) for GEMM0 (H -> 2F, SwiGLU) or GEMM1 (F -> H)."""
    hidden = workload.model.hidden
    times, n_tiles = [], []
    for group, group_rows in zip(groups, rows):
        k, n = (hidden, 2 * group.ffn) if layer == 0 else (group.ffn, hidden)
        m_tiles = max(1, -(-int(group_rows) // block_m))
        nt = -(-n // block_n)
        times.append(np.ceil(hardware.gemm_tile_ns(block_m, block_n, k, m_tiles, nt, workload.dtype_bytes)))
        n_tiles.append(nt)
    return np.array(times), np.array(n_tiles, dtype=np.int64)
