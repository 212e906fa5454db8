"""Step 1 of the fused forward on the GPU: this rank's (token, slot) pairs in expert order.

A stable counting sort in two launches, instead of a torch sort, a searchsorted, a difference,
a division and a scatter (each its own kernel, 40-50 us of GPU time per call at 4096 pairs on
H200: results/measurements/ep2_h200/profile/):

1. `count_kernel`: one program per chunk of pairs (`chunk_size`) writes its chunk's per-expert counts.
2. `order_kernel`: each program sums the chunk counts into every expert's first send row (and
   program 0 publishes the counts), sorts its chunk's (expert, pair) keys in registers, and writes
   every pair's send row (`pos`) and every send row's token (`token_of_row`).

Pairs keep their order inside an expert (stable, as torch.sort(stable=True) would give), so the
send region is the same as the torch ops made. The token rows are then gathered into the send
region by one `torch.index_select` (bandwidth-bound, already at HBM speed).
Expert ids outside [0, experts) are counted nowhere: their pairs sort after every expert's (rows
no tile reads), so every send row still has a token and the gather stays in bounds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_CHUNK = 512  # pairs per program: its sort stays in registers
CHUNK_ROWS = 32  # chunk counts order_kernel sums per step


@triton.jit
def _chunk_experts(ids_ptr, chunk, pairs, EXPERTS: tl.constexpr, CHUNK: tl.constexpr):
    """The chunk's expert ids; ids outside [0, EXPERTS) (and the padding past `pairs`) read EXPERTS."""
    offs = chunk * CHUNK + tl.arange(0, CHUNK)
    expert = tl.load(ids_ptr + offs, mask=offs < pairs, other=EXPERTS).to(tl.int32)
    return tl.where((expert >= 0) & (expert < EXPERTS), expert, EXPERTS), offs < pairs


@triton.jit
def count_kernel(ids_ptr, chunk_counts_ptr, pairs, EXPERTS: tl.constexpr, E_P2: tl.constexpr, CHUNK: tl.constexpr):
    expert, real = _chunk_experts(ids_ptr, tl.program_id(0), pairs, EXPERTS, CHUNK)
    counts = tl.histogram(expert, E_P2, mask=real)
    cols = tl.arange(0, E_P2)
    tl.store(chunk_counts_ptr + tl.program_id(0) * E_P2 + cols, counts)


@triton.jit
def order_kernel(ids_ptr, chunk_counts_ptr, counts_ptr, pos_ptr, token_of_row_ptr, pairs, chunks,
                 TOP_K: tl.constexpr, EXPERTS: tl.constexpr, E_P2: tl.constexpr, CHUNK: tl.constexpr,
                 CHUNK_ROWS: tl.constexpr):
    chunk = tl.program_id(0)
    cols = tl.arange(0, E_P2)
    total = tl.zeros((E_P2,), dtype=tl.int32)
    before = tl.zeros((E_P2,), dtype=tl.int32)  # this expert's pairs in earlier chunks
    for c0 in range(0, chunks, CHUNK_ROWS):
        rows = c0 + tl.arange(0, CHUNK_ROWS)
        block = tl.load(chunk_counts_ptr + rows[:, None] * E_P2 + cols[None, :], mask=(rows < chunks)[:, None], other=0)
        total += tl.sum(block, axis=0)
        before += tl.sum(tl.where((rows < chunk)[:, None], block, 0), axis=0)
    if chunk == 0:
        tl.store(counts_ptr + cols, total, mask=cols < EXPERTS)
    # sort the chunk's pairs by (expert, pair): unique keys, so the order inside an expert is kept
    local = tl.arange(0, CHUNK)
    expert, real = _chunk_experts(ids_ptr, chunk, pairs, EXPERTS, CHUNK)
    here = tl.histogram(expert, E_P2, mask=real)
    # send row of the j-th sorted pair of expert e: (e's first row) + (earlier chunks') + j - (e's first sort slot)
    row_base = tl.cumsum(total, axis=0) - total + before - (tl.cumsum(here, axis=0) - here)
    keys = tl.sort(expert * CHUNK + local)
    key_expert = keys // CHUNK
    pair = chunk * CHUNK + keys % CHUNK
    send_row = tl.gather(row_base, key_expert, 0) + local
    keep = pair < pairs
    tl.store(pos_ptr + pair, send_row.to(pos_ptr.dtype.element_ty), mask=keep)
    tl.store(token_of_row_ptr + send_row, (pair // TOP_K).to(token_of_row_ptr.dtype.element_ty), mask=keep)


def chunk_size(pairs: int) -> int:
    """Pairs per program: MAX_CHUNK, or fewer for a small call (a shorter sort)."""
    return min(MAX_CHUNK, max(16, triton.next_power_of_2(pairs)))


def chunk_count(pairs: int) -> int:
    return triton.cdiv(pairs, chunk_size(pairs))


def _bins(experts: int) -> int:
    return triton.next_power_of_2(experts + 1)  # one more: the left-out pairs' bin


def scratch_size(pairs: int, experts: int) -> int:
    """int32 entries order_pairs needs for calls of up to `pairs` pairs."""
    return chunk_count(pairs) * _bins(experts)


def order_pairs(ids: torch.Tensor, experts: int, chunk_counts: torch.Tensor, counts: torch.Tensor, pos: torch.Tensor,
                token_of_row: torch.Tensor) -> None:
    """ids (T, top_k) global expert ids -> counts[e] (E,), pos[pair] = its send row, token_of_row[row] = its
    token. chunk_counts: int32 scratch of at least `scratch_size(T * top_k, E)` (a layer keeps one)."""
    pairs, top_k = ids.numel(), ids.shape[-1]
    if pairs == 0:
        counts.zero_()
        return
    chunk, chunks = chunk_size(pairs), chunk_count(pairs)
    e_p2 = _bins(experts)
    flat = ids.reshape(-1)
    count_kernel[(chunks,)](flat, chunk_counts, pairs, EXPERTS=experts, E_P2=e_p2, CHUNK=chunk, num_warps=4)
    order_kernel[(chunks,)](flat, chunk_counts, counts, pos, token_of_row, pairs, chunks, TOP_K=top_k,
                            EXPERTS=experts, E_P2=e_p2, CHUNK=chunk, CHUNK_ROWS=CHUNK_ROWS, num_warps=8)
