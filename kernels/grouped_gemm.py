"""Persistent grouped GEMM in Triton: the compute role of the fused MoE kernels.

Rows of all experts sit in one (M, K) tensor, grouped by expert; expert e's weight is
w[e] (K, N). The host writes a tile table, one entry per output tile (expert, first row,
rows, first column), in the order the tiles are to run; the grid is at most one program
per SM, and program p takes entries p, p + NUM_SMS, ... (tile t on block t mod B, as the
simulator's persistent GEMM). A partial row tile is masked on store and costs a full tile,
as the simulator assumes.

Order: inside each expert, groups of GROUP_M row tiles are walked column by column, so
the programs in flight share a weight tile through L2 instead of each streaming the
whole expert (an expert's weight, 4096 x 28672 bf16 for Mixtral, is 4x the L2); group_m=1
is plain row-tile-major order. Loads go through TMA tensor descriptors (zero-padded at the
tensor edges: a row tile that runs past its expert reads the next expert's rows, which only
feed output rows the store masks); `use_tma=False` takes masked pointer loads instead, 3-4x
slower on H100 (results/measurements/grouped_gemm_h100_v2.json).

With SWIGLU the weight is (K, 2N), gate in the first N columns: each program accumulates
the gate and the up tile of the same columns and stores silu(gate) * up, so GEMM0 and the
activation are one pass (the compute half of layer0).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

# ----------------------------------------------------------------------------------------
# kernel
# ----------------------------------------------------------------------------------------


@triton.jit
def grouped_gemm_kernel(
    a_src, w_src, c_ptr, tiles_ptr, total_tiles, N, K,
    stride_am, stride_ak, stride_wr, stride_wn, stride_cm, stride_cn,
    SWIGLU: tl.constexpr, USE_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NUM_SMS: tl.constexpr,
):
    """a_src, w_src: TMA descriptors of a (M, K) and w viewed as (E * K, width) with USE_TMA,
    else plain pointers with their strides."""
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    for tile in range(pid, total_tiles, NUM_SMS):
        expert = tl.load(tiles_ptr + 4 * tile)
        row0 = tl.load(tiles_ptr + 4 * tile + 1)
        rows = tl.load(tiles_ptr + 4 * tile + 2)
        col0 = tl.load(tiles_ptr + 4 * tile + 3)
        w_row0 = expert * K  # expert e's weight rows start at e * K
        offs_n = col0 + tl.arange(0, BLOCK_N)
        mask_m = offs_m < rows
        mask_n = offs_n < N
        if not USE_TMA:
            a_rows = a_src + row0.to(tl.int64) * stride_am + offs_m[:, None] * stride_am
            w_expert = w_src + w_row0.to(tl.int64) * stride_wr
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            if USE_TMA:
                # columns >= K of `a` are zero-padded: a weight tile running into the next
                # expert's rows adds nothing
                a = a_src.load([row0, k0])
                w = w_src.load([w_row0 + k0, col0])
            else:  # 64-bit scalar bases, 32-bit offsets: 64-bit vector addressing ran 4x slower on H100
                mask_k = (k0 + offs_k) < K
                a = tl.load(a_rows + (k0 + offs_k)[None, :] * stride_ak, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
                w_tile = w_expert + (k0 + offs_k)[:, None] * stride_wr + offs_n[None, :] * stride_wn
                w = tl.load(w_tile, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(a, w, acc)
            if SWIGLU:
                if USE_TMA:
                    w_up = w_src.load([w_row0 + k0, col0 + N])
                else:
                    w_up = tl.load(w_tile + N * stride_wn, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
                acc_up = tl.dot(a, w_up, acc_up)
        if SWIGLU:
            acc = acc * tl.sigmoid(acc) * acc_up  # silu(gate) * up
        c = c_ptr + (row0 + offs_m)[:, None] * stride_cm + offs_n[None, :] * stride_cn
        tl.store(c, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# ----------------------------------------------------------------------------------------
# host wrapper
# ----------------------------------------------------------------------------------------


def tile_table(counts: list[int], block_m: int, n_out: int, block_n: int, group_m: int, device) -> torch.Tensor:
    """(tiles, 4) int32 rows (expert, first row, rows, first column) in run order.

    Built with vectorised numpy and cached per shape: a Python loop over tens of thousands
    of tiles costs more host time than the GPU spends on the GEMM."""
    return _tile_table(tuple(int(c) for c in counts), block_m, n_out, block_n, group_m, str(device))


@functools.lru_cache(maxsize=64)
def _tile_table(counts: tuple[int, ...], block_m: int, n_out: int, block_n: int, group_m: int, device: str) -> torch.Tensor:
    n = np.array(counts, dtype=np.int64)
    row_tiles = -(-n // block_m)
    expert = np.repeat(np.arange(len(n)), row_tiles)
    index = np.arange(len(expert)) - np.repeat(np.cumsum(row_tiles) - row_tiles, row_tiles)  # row tile within its expert
    first = np.repeat(np.cumsum(n) - n, row_tiles) + index * block_m
    rows = np.minimum(block_m, np.repeat(n, row_tiles) - index * block_m)
    cols = np.arange(-(-n_out // block_n)) * block_n
    # every (row tile, column) pair, ordered by expert, group of GROUP_M row tiles, column, row tile
    rt, col = np.repeat(np.arange(len(expert)), len(cols)), np.tile(cols, len(expert))
    order = np.lexsort((index[rt], col, index[rt] // group_m, expert[rt]))
    table = np.stack([expert[rt], first[rt], rows[rt], col], axis=1)[order].astype(np.int32)
    return torch.from_numpy(np.ascontiguousarray(table)).to(device)


def sm_count(device) -> int:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter runs programs one after another: a few suffice


def grouped_gemm(a: torch.Tensor, w: torch.Tensor, counts: list[int], swiglu: bool = False, block_m: int = 128,
                 block_n: int = 256, block_k: int = 64, group_m: int = 8, num_sms: int | None = None, num_warps: int = 8,
                 num_stages: int = 3, use_tma: bool = True) -> torch.Tensor:
    """a (M, K) rows grouped by expert (`counts` rows each), w (E, K, N) -> (M, N);
    with `swiglu`, w is (E, K, 2N) and the result silu(a w_gate) * (a w_up), (M, N)."""
    if a.dim() != 2 or w.dim() != 3 or a.shape[1] != w.shape[1]:
        raise ValueError(f"shapes a {tuple(a.shape)} and w {tuple(w.shape)} do not chain")
    if len(counts) != w.shape[0] or sum(counts) != a.shape[0] or min(counts, default=0) < 0:
        raise ValueError(f"counts must give the rows of each of {w.shape[0]} experts and sum to {a.shape[0]}")
    n_out = w.shape[2] // 2 if swiglu else w.shape[2]
    c = torch.empty(a.shape[0], n_out, dtype=a.dtype, device=a.device)
    tiles = tile_table(counts, block_m, n_out, block_n, group_m, a.device)
    if len(tiles) == 0:
        return c
    a, w2d = a.contiguous(), w.contiguous().reshape(-1, w.shape[2])  # (E * K, width)
    if use_tma:
        a_src = TensorDescriptor.from_tensor(a, [block_m, block_k])
        w_src = TensorDescriptor.from_tensor(w2d, [block_k, block_n])
    else:
        a_src, w_src = a, w2d
    grid = (min(num_sms or sm_count(a.device), len(tiles)),)
    grouped_gemm_kernel[grid](
        a_src, w_src, c, tiles, len(tiles), n_out, a.shape[1], a.stride(0), a.stride(1), w2d.stride(0), w2d.stride(1),
        c.stride(0), c.stride(1),
        SWIGLU=swiglu, USE_TMA=use_tma, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, NUM_SMS=grid[0],
        num_warps=num_warps, num_stages=num_stages,
    )
    return c
