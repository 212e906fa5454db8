"""Baselines on real torch.distributed (NCCL on GPUs, gloo on CPU), expert parallelism.

B0 `moe_sequential`: permute -> exchange split sizes (host sync) -> all_to_all_single ->
grouped GEMM0 + SwiGLU -> grouped GEMM1 -> all_to_all_single back -> weighted unpermute.
B1 `moe_chunked`: the same per chunk of tokens, chunk i+1's dispatch in flight while chunk
i computes (async collectives; on CUDA NCCL runs them on its own stream).

Every rank holds E/W experts (EP = world size; TP comes with the fused kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from comet_dse.kernels.reference import MoEWeights, swiglu


def grouped_matmul(rows: torch.Tensor, weight: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """rows (M, K) grouped by expert with `counts` rows each, weight (E, K, N) -> (M, N)."""
    if rows.is_cuda and rows.dtype == torch.bfloat16 and hasattr(torch, "_grouped_mm"):
        ends = torch.tensor(counts, device=rows.device).cumsum(0).to(torch.int32)
        return torch._grouped_mm(rows, weight, offs=ends)
    out = rows.new_empty(rows.shape[0], weight.shape[-1])
    start = 0
    for e, n in enumerate(counts):
        out[start:start + n] = rows[start:start + n] @ weight[e]
        start += n
    return out


@dataclass
class _Dispatch:
    order: torch.Tensor  # permutation of the (token, slot) pairs into destination order
    send: list[int]
    recv: list[int]
    local_order: torch.Tensor  # received rows -> local expert order
    local_counts: list[int]


def _plan(ids: torch.Tensor, experts_per_rank: int, world: int, group) -> _Dispatch:
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)  # expert-major = destination-rank-major
    send_counts = torch.bincount(flat // experts_per_rank, minlength=world)
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts, group=group)  # exchanged split sizes
    send, recv = send_counts.tolist(), recv_counts.tolist()  # the host sync
    recv_experts = torch.empty(sum(recv), dtype=flat.dtype, device=flat.device)
    dist.all_to_all_single(recv_experts, flat[order].contiguous(), recv, send, group=group)
    local = recv_experts % experts_per_rank
    local_order = torch.argsort(local, stable=True)
    local_counts = torch.bincount(local, minlength=experts_per_rank).tolist()
    return _Dispatch(order, send, recv, local_order, local_counts)


def _experts(rows: torch.Tensor, plan: _Dispatch, weights: MoEWeights) -> torch.Tensor:
    grouped = rows[plan.local_order]
    h = swiglu(grouped_matmul(grouped, weights.w_gate_up, plan.local_counts))
    y = grouped_matmul(h.to(rows.dtype), weights.w_down, plan.local_counts).to(rows.dtype)
    out = torch.empty_like(y)
    out[plan.local_order] = y  # back to arrival order
    return out


def _combine(back: torch.Tensor, plan: _Dispatch, topk_weights: torch.Tensor, tokens: int, top_k: int) -> torch.Tensor:
    token_of_row = plan.order // top_k
    scaled = back.float() * topk_weights.reshape(-1)[plan.order, None].float()
    out = torch.zeros(tokens, back.shape[1], dtype=torch.float32, device=back.device)
    return out.index_add_(0, token_of_row, scaled)


def moe_sequential(x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, weights: MoEWeights, group=None) -> torch.Tensor:
    """B0. x (T, H) this rank's tokens, ids/topk_weights (T, k); weights: this rank's experts. Returns fp32."""
    world = dist.get_world_size(group)
    plan = _plan(ids, weights.num_experts, world, group)
    permuted = x[plan.order // ids.shape[1]].contiguous()
    recv = x.new_empty(sum(plan.recv), x.shape[1])
    dist.all_to_all_single(recv, permuted, plan.recv, plan.send, group=group)
    y = _experts(recv, plan, weights)
    back = x.new_empty(permuted.shape)
    dist.all_to_all_single(back, y, plan.send, plan.recv, group=group)
    return _combine(back, plan, topk_weights, x.shape[0], ids.shape[1])


def moe_chunked(x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, weights: MoEWeights, chunks: int,
                group=None) -> torch.Tensor:
    """B1: tokens in `chunks` parts; dispatch i+1 is in flight while part i computes."""
    world = dist.get_world_size(group)
    bounds = torch.linspace(0, x.shape[0], chunks + 1).round().long().tolist()
    parts = [(bounds[i], bounds[i + 1]) for i in range(chunks)]
    plans = [_plan(ids[a:b], weights.num_experts, world, group) for a, b in parts]  # all split sizes up front

    def start_dispatch(i: int):
        a, b = parts[i]
        permuted = x[a:b][plans[i].order // ids.shape[1]].contiguous()
        recv = x.new_empty(sum(plans[i].recv), x.shape[1])
        work = dist.all_to_all_single(recv, permuted, plans[i].recv, plans[i].send, group=group, async_op=True)
        return recv, work

    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32, device=x.device)
    pending = start_dispatch(0)
    combines = []
    for i, (a, b) in enumerate(parts):
        recv, work = pending
        work.wait()
        if i + 1 < chunks:
            pending = start_dispatch(i + 1)
        y = _experts(recv, plans[i], weights)
        back = x.new_empty(sum(plans[i].send), x.shape[1])
        combines.append((i, back, dist.all_to_all_single(back, y, plans[i].send, plans[i].recv, group=group, async_op=True)))
    for i, back, work in combines:
        work.wait()
        a, b = parts[i]
        out[a:b] = _combine(back, plans[i], topk_weights[a:b], b - a, ids.shape[1])
    return out
