"""Comet's two fused MoE kernels in Triton, expert parallel, over peer-addressable buffers.

Layer0 (dispatch + GEMM0 + SwiGLU): one persistent grid; programs [0, n_comm0) are
communication blocks, the rest compute blocks. Communication blocks pull the rows of the
shared tensor (this rank's experts, expert-major, sources in the row order) straight from
the peers' token buffers, one row tile at a time, then raise that tile's flag to the
call's epoch (rising epochs: flags are never reset). Compute blocks take GEMM tiles in
the order the row tiles are pulled (decomposed along M), spin on the tile's flag with a
bounded wait, then run the tile with SwiGLU fused.

Layer1 (GEMM1 + combine): compute blocks run GEMM1 column split by column split
(decomposed along N) and count finished tiles per (row tile, split); communication
blocks wait for a (row tile, split) to complete and store its rows into the owner rank's
combine buffer, at the (token, slot) position of each row. After a barrier each rank
takes the weighted top-k sum of its combine buffer.

Producers get the lowest program ids (communication in layer0, compute in layer1): on the
GPU every program is resident (grid <= SMs), and in Triton's CPU interpreter, which runs
programs one after another, producers then finish before any consumer spins.

Peers are addressed as the local buffer's pointer plus an element offset (peer address -
local address): symmetric memory maps every peer buffer into this process's address
space, and so does a shared-memory file on the CPU; the interpreter cannot turn an
integer into a pointer, but it can add an offset to one.

A wait that spins past `max_spins` writes the stuck tile into an error slot and gives up;
the host turns that into a clear exception instead of a hang.

MODE selects the benchmark variants of the same kernels: FULL; COMPUTE_ONLY (the
communication blocks move nothing and only raise the flags); COMM_ONLY (the compute
blocks skip their GEMM tiles and only publish them as done).
"""

from __future__ import annotations

import triton
import triton.language as tl

FULL, COMPUTE_ONLY, COMM_ONLY = 0, 1, 2  # for the host
_COMPUTE_ONLY = tl.constexpr(COMPUTE_ONLY)  # the same, as the compiler must see globals
_COMM_ONLY = tl.constexpr(COMM_ONLY)

# ----------------------------------------------------------------------------------------
# one GEMM tile, shared by both kernels
# ----------------------------------------------------------------------------------------


@triton.jit
def _gemm_tile(a_ptr, stride_am, row0, rows, w_ptr, stride_wk, stride_wn, col0, K, N, w_desc, w_row0,
               SWIGLU: tl.constexpr, W_TMA: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc (BLOCK_M, BLOCK_N) fp32 of rows [row0, row0 + rows) of `a` times w[:, col0:...];
    with SWIGLU, silu(a w[:, cols]) * (a w[:, N + cols]). With W_TMA the weight tiles come
    through the descriptor `w_desc` of all experts' weights as (E * K, width), this expert's
    rows from w_row0 (a K tail reading into the next expert meets a's zero-masked columns)."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = col0 + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < rows
    mask_n = offs_n < N
    a_rows = a_ptr + row0.to(tl.int64) * stride_am + offs_m[:, None] * stride_am
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + offs_k) < K
        a = tl.load(a_rows + (k0 + offs_k)[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        if W_TMA:
            w = w_desc.load([w_row0 + k0, col0])
        else:
            w_tile = w_ptr + (k0 + offs_k)[:, None] * stride_wk + offs_n[None, :] * stride_wn
            w = tl.load(w_tile, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, w, acc)
        if SWIGLU:
            if W_TMA:
                w_up = w_desc.load([w_row0 + k0, col0 + N])
            else:
                w_up = tl.load(w_tile + N * stride_wn, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc_up = tl.dot(a, w_up, acc_up)
    if SWIGLU:
        acc = acc * tl.sigmoid(acc) * acc_up
    return acc


@triton.jit
def _tile_entry(tiles_ptr, t):
    """(expert, first row, rows, first column, flag or counter index) of work-list entry t."""
    entry = tiles_ptr + 5 * t
    return tl.load(entry), tl.load(entry + 1), tl.load(entry + 2), tl.load(entry + 3), tl.load(entry + 4)


@triton.jit
def _expert_tile(a_ptr, out_ptr, expert, row0, rows, col0, K, N, w_ptr, stride_we, stride_wk, stride_wn, w_desc,
                 SWIGLU: tl.constexpr, W_TMA: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One output tile of `expert`: rows of a (., K) times its weight, stored into out (., N)."""
    acc = _gemm_tile(a_ptr, K, row0, rows, w_ptr + expert.to(tl.int64) * stride_we, stride_wk, stride_wn,
                     col0, K, N, w_desc, expert * K, SWIGLU, W_TMA, BLOCK_M, BLOCK_N, BLOCK_K)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = col0 + tl.arange(0, BLOCK_N)
    out = out_ptr + (row0 + offs_m).to(tl.int64)[:, None] * N + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(offs_m < rows)[:, None] & (offs_n < N)[None, :])


@triton.jit
def _copy_rows(src_ptr, src_rows, dst_ptr, dst_rows, valid, col0, cols, BLOCK_H: tl.constexpr):
    """Copy columns [col0, col0 + cols) of COPY_ROWS rows: src_rows / dst_rows are the rows'
    element offsets from src_ptr / dst_ptr (a peer's offset included), `valid` masks rows."""
    offs_h = tl.arange(0, BLOCK_H)
    for h0 in range(0, cols, BLOCK_H):
        m = valid[:, None] & ((h0 + offs_h) < cols)[None, :]
        c = col0 + h0 + offs_h
        tl.store(dst_ptr + dst_rows[:, None] + c[None, :], tl.load(src_ptr + src_rows[:, None] + c[None, :], mask=m), mask=m)


@triton.jit
def _wait(flag_ptr, target, err_ptr, err_code, max_spins):
    """Spin until *flag_ptr == target (acquire, system scope); past max_spins record err_code."""
    spins = 0
    while (tl.atomic_add(flag_ptr, 0, sem="acquire", scope="sys") != target) & (spins < max_spins):
        spins += 1
    if spins >= max_spins:
        tl.atomic_xchg(err_ptr, err_code, sem="relaxed", scope="gpu")
    tl.debug_barrier()


# ----------------------------------------------------------------------------------------
# layer0: dispatch (pull) + GEMM0 + SwiGLU
# ----------------------------------------------------------------------------------------


@triton.jit
def layer0_kernel(
    x_ptr, x_deltas_ptr, row_src_ptr, row_tok_ptr, shared_ptr, pull_ptr, num_pull,
    tiles_ptr, num_tiles, w_ptr, w_desc, h_ptr, flags_ptr, err_ptr, epoch, max_spins,
    H, F, stride_we, stride_wk, stride_wn,
    N_COMM: tl.constexpr, N_PROGRAMS: tl.constexpr, COPY_ROWS: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr, W_TMA: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid < N_COMM:
        # ---- communication blocks: pull row tiles from the peers' token buffers ----
        for i in range(pid, num_pull, N_COMM):
            row0 = tl.load(pull_ptr + 2 * i)
            rows = tl.load(pull_ptr + 2 * i + 1)
            if MODE != _COMPUTE_ONLY:
                for r0 in range(0, BLOCK_M, COPY_ROWS):
                    offs_r = r0 + tl.arange(0, COPY_ROWS)
                    valid = offs_r < rows
                    src = tl.load(row_src_ptr + row0 + offs_r, mask=valid, other=0)
                    tok = tl.load(row_tok_ptr + row0 + offs_r, mask=valid, other=0)
                    peer_row = tl.load(x_deltas_ptr + src, mask=valid, other=0) + tok.to(tl.int64) * H
                    _copy_rows(x_ptr, peer_row, shared_ptr, (row0 + offs_r).to(tl.int64) * H, valid, 0, H, BLOCK_H)
            tl.debug_barrier()
            tl.atomic_xchg(flags_ptr + i, epoch, sem="release", scope="sys")
    else:
        # ---- compute blocks: GEMM0 + SwiGLU tiles in pull order, each after its flag ----
        for t in range(pid - N_COMM, num_tiles, N_PROGRAMS - N_COMM):
            expert, row0, rows, col0, flag = _tile_entry(tiles_ptr, t)
            _wait(flags_ptr + flag, epoch, err_ptr, flag + 1, max_spins)
            if MODE != _COMM_ONLY:
                _expert_tile(shared_ptr, h_ptr, expert, row0, rows, col0, H, F, w_ptr, stride_we, stride_wk, stride_wn,
                             w_desc, True, W_TMA, BLOCK_M, BLOCK_N, BLOCK_K)


# ----------------------------------------------------------------------------------------
# layer1: GEMM1 (column splits) + combine (push to the owners)
# ----------------------------------------------------------------------------------------


@triton.jit
def layer1_kernel(
    h_ptr, w_ptr, w_desc, y_ptr, tiles_ptr, num_tiles, sends_ptr, num_sends, counts_ptr, err_ptr, max_spins,
    row_src_ptr, row_slot_ptr, comb_ptr, comb_deltas_ptr,
    H, F, stride_we, stride_wk, stride_wn, SPLIT_COLS, COL_TILES_PER_SPLIT,
    N_COMPUTE: tl.constexpr, N_PROGRAMS: tl.constexpr, COPY_ROWS: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr, W_TMA: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid < N_COMPUTE:
        # ---- compute blocks: GEMM1 split by split; count finished tiles per (row tile, split) ----
        for t in range(pid, num_tiles, N_COMPUTE):
            expert, row0, rows, col0, counter = _tile_entry(tiles_ptr, t)
            if MODE != _COMM_ONLY:
                _expert_tile(h_ptr, y_ptr, expert, row0, rows, col0, F, H, w_ptr, stride_we, stride_wk, stride_wn,
                             w_desc, False, W_TMA, BLOCK_M, BLOCK_N, BLOCK_K)
            tl.debug_barrier()
            tl.atomic_add(counts_ptr + counter, 1, sem="release", scope="gpu")
    else:
        # ---- communication blocks: send each finished (row tile, split) to the rows' owners ----
        for i in range(pid - N_COMPUTE, num_sends if MODE != _COMPUTE_ONLY else 0, N_PROGRAMS - N_COMPUTE):
            row0 = tl.load(sends_ptr + 4 * i)
            rows = tl.load(sends_ptr + 4 * i + 1)
            split = tl.load(sends_ptr + 4 * i + 2)
            counter = tl.load(sends_ptr + 4 * i + 3)
            _wait(counts_ptr + counter, COL_TILES_PER_SPLIT, err_ptr, -(counter + 1), max_spins)
            for r0 in range(0, BLOCK_M, COPY_ROWS):
                offs_r = r0 + tl.arange(0, COPY_ROWS)
                valid = offs_r < rows
                dest = tl.load(row_src_ptr + row0 + offs_r, mask=valid, other=0)
                slot = tl.load(row_slot_ptr + row0 + offs_r, mask=valid, other=0)
                remote_row = tl.load(comb_deltas_ptr + dest, mask=valid, other=0) + slot.to(tl.int64) * H
                _copy_rows(y_ptr, (row0 + offs_r).to(tl.int64) * H, comb_ptr, remote_row, valid, split * SPLIT_COLS,
                           SPLIT_COLS, BLOCK_H)
