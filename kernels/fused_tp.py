"""Tensor parallelism (EP × TP on one node) through the expert-parallel fused kernels.

`world = ep * tp` ranks, rank = ep_rank * tp + tp_rank (as kernels/tp_baselines.py). Each rank holds
its EP group's experts on its TP share of their FFN width (`MoEWeights.ffn_shard`). Every such
(expert, shard) is a *virtual expert*, rank r holding virtual experts [r * E_l, (r + 1) * E_l); a
token's slot on expert e becomes `tp` slots, one per shard of e, with the same routing weight. The
EP layer then moves every token's rows to each TP rank of its experts' group (layer0), each rank's
GEMMs run on its shard, and the weighted sum over the `top_k * tp` returned partials at the token's
owner is the sum over TP and over top-k at once (SwiGLU acts column by column, so the shards'
outputs add up to the expert's).

What it moves: a token routed to k experts of one group reaches each TP rank k times (once per slot),
and its partials come back k * tp rows wide instead of pre-reduced over the rank's experts: k times the
bytes of an all-gather of tokens and a reduce-scatter. `FusedConfig(dedup=True)` brings the token to a
rank once (its other rows there are local copies, once the first has landed); on 2x H200 it ran no faster
(results/measurements/tp2_h200/README.md), so it is off by default. `FusedConfig(prereduce=True)` sends a
token's partials from a rank as one row, summed over its slots there (the reduce-scatter's bytes); also no
faster there (results/measurements/prereduce_h200/README.md), also off.
"""

from __future__ import annotations

import torch
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE, GraphedForward, capture_forward
from comet_dse.kernels.fused_moe import FULL
from comet_dse.kernels.reference import MoEWeights


def virtual_routing(ids: torch.Tensor, topk_weights: torch.Tensor, ep: int, tp: int,
                    experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, k) expert ids and weights over `experts` real experts -> (T, k * tp) virtual ones: slot
    j's shard t at column j * tp + t, on rank owner(e) * tp + t."""
    per_rank = experts // ep
    owner, within = ids // per_rank, ids % per_rank
    shard = torch.arange(tp, device=ids.device)
    virtual = (owner[..., None] * tp + shard) * per_rank + within[..., None]  # (T, k, tp)
    tokens, top_k = ids.shape
    return (virtual.reshape(tokens, top_k * tp),
            topk_weights[..., None].expand(tokens, top_k, tp).reshape(tokens, top_k * tp))


class TensorParallelFused:
    """The fused layer under EP × TP: `layer(x, ids, weights, mode)` with real expert ids, as FusedMoE."""

    def __init__(self, shard: MoEWeights, top_k: int, max_tokens: int, ep: int, tp: int, group=None,
                 config: FusedConfig = FusedConfig(), dtype: torch.dtype = torch.bfloat16,
                 out_dtype: torch.dtype = torch.float32) -> None:
        self.ep, self.tp, self.top_k = ep, tp, top_k
        # a token's tp shards of one slot go to tp different ranks: any one rank gets at most top_k of its rows
        self.inner = FusedMoE(shard, top_k * tp, max_tokens, group, config, dtype, out_dtype, rows_per_token=top_k)
        if self.inner.world != ep * tp:
            raise ValueError(f"ep={ep} x tp={tp} must equal the group's {self.inner.world} ranks")
        self.experts = ep * self.inner.experts  # real experts

    def __call__(self, x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, mode: int = FULL) -> torch.Tensor:
        return self.inner(x, *virtual_routing(ids, topk_weights, self.ep, self.tp, self.experts), mode=mode)

    def graphed(self, tokens: int, mode: int = FULL, warmup: int = 2) -> GraphedForward:
        """The forward, the routing's mapping included, in a CUDA graph."""
        return capture_forward(self, self.inner, tokens, self.top_k, self.experts, mode, warmup)

    def check(self) -> None:
        self.inner.check()
