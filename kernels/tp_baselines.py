"""B0 and B1 under tensor parallelism (EP × TP on one node), from stock collectives as Megatron does.

`world = ep * tp` ranks, rank = ep_rank * tp + tp_rank. The ranks of one TP group (same ep_rank)
hold the same experts, `ep_rank`'s E / ep of them, each cut along its FFN width
(`MoEWeights.ffn_shard(tp_rank, tp)`); the ranks with the same tp_rank form an EP group. Every rank
brings its own T tokens (equal across a TP group, as with sequence parallelism). Per call:

1. all-gather the TP group's tokens, expert ids and routing weights (`all_gather_into_tensor`), so
   every TP rank sees the group's tp * T tokens;
2. the EP layer of `baselines.py` (B0, or B1 with `chunks`) over the EP group, on this rank's
   FFN shard: each gathered token's partial output, weighted and summed over its top-k;
3. reduce-scatter the partials over the TP group (`reduce_scatter_tensor`): rank tp_rank keeps the
   sum for its own T tokens.

With tp = 1 this is the EP layer itself; with ep = 1 step 2 exchanges nothing (no split-size exchange;
the loop GEMM still reads its row counts on the host once). The partials are reduced in the
activations' dtype (bf16 on GPUs), then cast to `out_dtype`.
gloo has no reduce-scatter: on CPU groups step 3 is an all-reduce and a slice (same result).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from comet_dse.kernels.baselines import moe_chunked
from comet_dse.kernels.reference import MoEWeights


@dataclass(frozen=True)
class ParallelGroups:
    """This rank's place in an ep × tp grid and the process groups of its row and column."""

    ep: int
    tp: int
    ep_rank: int
    tp_rank: int
    ep_group: object  # the ranks with this tp_rank: tokens cross it to their experts
    tp_group: object  # the ranks with this ep_rank: they share experts, split along F


def parallel_groups(ep: int, tp: int) -> ParallelGroups:
    """Every rank calls this with the same (ep, tp); ep * tp must be the world size."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if ep < 1 or tp < 1 or ep * tp != world:
        raise ValueError(f"ep={ep} x tp={tp} must equal the world size {world}")
    # every rank creates every group, in the same order (torch.distributed requires it)
    ep_groups = [dist.new_group([e * tp + t for e in range(ep)]) for t in range(tp)]
    tp_groups = [dist.new_group([e * tp + t for t in range(tp)]) for e in range(ep)]
    ep_rank, tp_rank = divmod(rank, tp)
    return ParallelGroups(ep, tp, ep_rank, tp_rank, ep_groups[tp_rank], tp_groups[ep_rank])


def moe_chunked_tp(x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, shard: MoEWeights, groups: ParallelGroups,
                   chunks: int = 1, *, out_dtype: torch.dtype = torch.float32, expert_gemm: str = "grouped") -> torch.Tensor:
    """B1 under EP × TP (module docstring); chunks=1 is B0. `shard`: this rank's experts, its FFN
    shard. Collectives: 3 all-gathers and 1 reduce-scatter over TP, plus the EP layer's."""
    if groups.tp == 1:
        return moe_chunked(x, ids, topk_weights, shard, chunks, groups.ep_group, out_dtype=out_dtype, expert_gemm=expert_gemm)
    gathered = [_all_gather(t, groups.tp, groups.tp_group) for t in (x, ids, topk_weights)]
    # the partials in the activations' dtype, as Megatron reduces them (bf16 on GPUs: half fp32's bytes)
    partial = moe_chunked(*gathered, shard, chunks, groups.ep_group, out_dtype=x.dtype, expert_gemm=expert_gemm)
    return _reduce_scatter(partial, groups.tp, groups.tp_rank, groups.tp_group).to(out_dtype)


def moe_sequential_tp(x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, shard: MoEWeights,
                      groups: ParallelGroups, *, out_dtype: torch.dtype = torch.float32, expert_gemm: str = "grouped") -> torch.Tensor:
    """B0 under EP × TP."""
    return moe_chunked_tp(x, ids, topk_weights, shard, groups, 1, out_dtype=out_dtype, expert_gemm=expert_gemm)


def _all_gather(t: torch.Tensor, tp: int, group) -> torch.Tensor:
    out = t.new_empty(tp * t.shape[0], *t.shape[1:])
    dist.all_gather_into_tensor(out, t.contiguous(), group=group)
    return out


def _reduce_scatter(partial: torch.Tensor, tp: int, tp_rank: int, group) -> torch.Tensor:
    tokens = partial.shape[0] // tp
    if dist.get_backend(group) == "gloo":  # no reduce-scatter there
        dist.all_reduce(partial, group=group)
        return partial[tp_rank * tokens:(tp_rank + 1) * tokens].clone()
    out = partial.new_empty(tokens, *partial.shape[1:])
    dist.reduce_scatter_tensor(out, partial, group=group)
    return out
