"""Persistent grouped GEMM in Triton: the compute role of the fused MoE kernels.

Rows of all experts sit in one (M, K) tensor, grouped by expert; expert e's weight is
w[e] (K, N). The host cuts every expert's rows into BLOCK_M row tiles and writes a tile
table (expert, first row, rows); the grid is at most one program per SM, and program p
takes tiles p, p + NUM_SMS, ... in row-tile-major order, exactly as the simulator's
persistent GEMM does (tile t on block t mod B). A partial row tile is masked, and costs a
full tile, as the simulator assumes.

With SWIGLU the weight is (K, 2N) with the gate in the first N columns: each program
accumulates the gate and the up tile of the same columns and stores silu(gate) * up, so
GEMM0 and the activation are one pass (the first half of layer0's compute).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# ----------------------------------------------------------------------------------------
# kernel
# ----------------------------------------------------------------------------------------


@triton.jit
def grouped_gemm_kernel(
    a_ptr, w_ptr, c_ptr, tile_expert_ptr, tile_row_ptr, tile_rows_ptr,
    total_tiles, col_tiles, N, K,
    stride_am, stride_ak, stride_we, stride_wk, stride_wn, stride_cm, stride_cn,
    SWIGLU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NUM_SMS: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_k = tl.arange(0, BLOCK_K)
    for tile in range(pid, total_tiles, NUM_SMS):
        tile_m = tile // col_tiles
        tile_n = tile % col_tiles
        expert = tl.load(tile_expert_ptr + tile_m)
        row0 = tl.load(tile_row_ptr + tile_m)
        rows = tl.load(tile_rows_ptr + tile_m)
        offs_m = tl.arange(0, BLOCK_M)
        offs_n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < rows
        mask_n = offs_n < N
        a_rows = a_ptr + (row0 + offs_m)[:, None] * stride_am
        w_cols = w_ptr + expert.to(tl.int64) * stride_we + offs_n[None, :] * stride_wn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            mask_k = (k0 + offs_k) < K
            a = tl.load(a_rows + (k0 + offs_k)[None, :] * stride_ak, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            w = tl.load(w_cols + (k0 + offs_k)[:, None] * stride_wk, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(a, w, acc)
            if SWIGLU:
                w_up = tl.load(w_cols + N * stride_wn + (k0 + offs_k)[:, None] * stride_wk,
                               mask=mask_k[:, None] & mask_n[None, :], other=0.0)
                acc_up = tl.dot(a, w_up, acc_up)
        if SWIGLU:
            acc = acc * tl.sigmoid(acc) * acc_up  # silu(gate) * up
        c = c_ptr + (row0 + offs_m)[:, None] * stride_cm + offs_n[None, :] * stride_cn
        tl.store(c, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# ----------------------------------------------------------------------------------------
# host wrapper
# ----------------------------------------------------------------------------------------


def tile_table(counts: list[int], block_m: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(expert, first row, rows) of every row tile, expert by expert."""
    experts, firsts, rows = [], [], []
    start = 0
    for e, n in enumerate(counts):
        for r in range(0, n, block_m):
            experts.append(e)
            firsts.append(start + r)
            rows.append(min(block_m, n - r))
        start += n
    as_tensor = lambda v: torch.tensor(v, dtype=torch.int32, device=device)  # noqa: E731
    return as_tensor(experts), as_tensor(firsts), as_tensor(rows)


def sm_count(device) -> int:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter runs programs one after another: a few suffice


def grouped_gemm(a: torch.Tensor, w: torch.Tensor, counts: list[int], swiglu: bool = False, block_m: int = 128,
                 block_n: int = 128, block_k: int = 64, num_sms: int | None = None, num_warps: int = 8,
                 num_stages: int = 3) -> torch.Tensor:
    """a (M, K) rows grouped by expert (`counts` rows each), w (E, K, N) -> (M, N);
    with `swiglu`, w is (E, K, 2N) and the result silu(a w_gate) * (a w_up), (M, N)."""
    if a.dim() != 2 or w.dim() != 3 or a.shape[1] != w.shape[1]:
        raise ValueError(f"shapes a {tuple(a.shape)} and w {tuple(w.shape)} do not chain")
    if len(counts) != w.shape[0] or sum(counts) != a.shape[0] or min(counts, default=0) < 0:
        raise ValueError(f"counts must give the rows of each of {w.shape[0]} experts and sum to {a.shape[0]}")
    n_out = w.shape[2] // 2 if swiglu else w.shape[2]
    c = torch.empty(a.shape[0], n_out, dtype=a.dtype, device=a.device)
    experts, firsts, rows = tile_table(counts, block_m, a.device)
    if len(experts) == 0:
        return c
    sms = num_sms or sm_count(a.device)
    col_tiles = triton.cdiv(n_out, block_n)
    total = len(experts) * col_tiles
    grid = (min(sms, total),)
    grouped_gemm_kernel[grid](
        a, w, c, experts, firsts, rows, total, col_tiles, n_out, a.shape[1],
        a.stride(0), a.stride(1), w.stride(0), w.stride(1), w.stride(2), c.stride(0), c.stride(1),
        SWIGLU=swiglu, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, NUM_SMS=grid[0],
        num_warps=num_warps, num_stages=num_stages,
    )
    return c
