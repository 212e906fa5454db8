"""Persistent grouped GEMM on a fixed number of thread blocks, one tile at a time.

Tiles are taken in the schedule's order and assigned statically, tile t to block t mod B
(as in Triton's persistent matmul): a tile starts when its rows are ready and its block
has finished the previous tile, so tile quantization and waves follow from B.
"""

from __future__ import annotations

import numpy as np


def persistent_schedule(ready_ns: np.ndarray, duration_ns: np.ndarray, blocks: int, start_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """Start and end time of every tile; start_t = max(ready_t, start, end_{t-B})."""
    n = len(duration_ns)
    starts = np.empty(n)
    ends = np.empty(n)
    block_free = np.full(blocks, float(start_ns))
    ready = np.maximum(ready_ns, start_ns)
    for first in range(0, n, blocks):  # one wave of B tiles per step, vectorised
        last = min(first + blocks, n)
        width = last - first
        s = np.maximum(ready[first:last], block_free[:width])
        e = s + duration_ns[first:last]
        starts[first:last] = s
        ends[first:last] = e
        block_free[:width] = e
    return starts, ends


def kernel_time_ns(duration_ns: np.ndarray, blocks: int) -> float:
    """Time of a persistent GEMM whose inputs are all ready: the busiest block's sum of tiles."""
    if len(duration_ns) == 0:
        return 0.0
    per_block = np.bincount(np.arange(len(duration_ns)) % blocks, weights=duration_ns, minlength=blocks)
    return float(per_block.max())


def split_tail(duration_ns: np.ndarray, blocks: int, pieces: int) -> tuple[np.ndarray, np.ndarray]:
    """The fused layer1's split-K (kernels/fused_moe.py): the items of the last, partly filled round of `blocks`,
    each cut into `pieces` consecutive pieces of 1/pieces of its time. (durations of the items and pieces in
    order, the item of each)."""
    n = len(duration_ns)
    whole = n - n % blocks if pieces > 1 else n
    tail = np.repeat(np.ceil(duration_ns[whole:] / pieces), pieces)
    item = np.concatenate([np.arange(whole), np.repeat(np.arange(whole, n), pieces)])
    return np.concatenate([duration_ns[:whole], tail]), item


def item_spans(starts: np.ndarray, ends: np.ndarray, item: np.ndarray, n: int, finish_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """Per item, its first piece's start and its last piece's end, plus `finish_ns` where it was cut (the last piece
    to arrive sums the pieces' partials before the tile is done)."""
    if len(item) == n:  # nothing cut
        return starts, ends
    first = np.full(n, np.inf)
    last = np.zeros(n)
    np.minimum.at(first, item, starts)
    np.maximum.at(last, item, ends)
    cut = np.bincount(item, minlength=n) > 1
    return first, last + np.where(cut, finish_ns, 0.0)
