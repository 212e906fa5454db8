"""The ground truth: a plain PyTorch MoE layer computed in fp32.

router (top-k over the logits, softmax over the k picked logits, as Mixtral) -> for every
(token, expert) pair: SwiGLU expert, silu(x W_gate) * (x W_up) W_down -> weighted sum of the
k expert outputs. Shapes: x (T, H); w_gate_up (E, H, 2F) with the gate in the first F
columns; w_down (E, F, H); router (H, E).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MoEWeights:
    router: torch.Tensor  # (H, E)
    w_gate_up: torch.Tensor  # (E, H, 2F)
    w_down: torch.Tensor  # (E, F, H)

    @classmethod
    def random(cls, experts: int, hidden: int, ffn: int, seed: int, dtype=torch.float32, device="cpu") -> MoEWeights:
        g = torch.Generator().manual_seed(seed)
        scale_in, scale_mid = hidden ** -0.5, ffn ** -0.5  # keeps activations O(1) through both GEMMs
        router = torch.randn(hidden, experts, generator=g) * scale_in
        w13 = torch.randn(experts, hidden, 2 * ffn, generator=g) * scale_in
        w2 = torch.randn(experts, ffn, hidden, generator=g) * scale_mid
        return cls(*(t.to(device=device, dtype=dtype) for t in (router, w13, w2)))

    @property
    def num_experts(self) -> int:
        return self.w_gate_up.shape[0]

    def local(self, first_expert: int, count: int) -> MoEWeights:
        """The slice of experts one EP rank holds (the router stays whole)."""
        return MoEWeights(self.router, self.w_gate_up[first_expert:first_expert + count], self.w_down[first_expert:first_expert + count])

    def of_rank(self, rank: int, world: int) -> MoEWeights:
        """This EP rank's experts out of `world` equal shares."""
        per_rank = self.num_experts // world
        return self.local(rank * per_rank, per_rank)

    def ffn_shard(self, tp_rank: int, tp: int) -> MoEWeights:
        """This TP rank's share of every expert's FFN width (Megatron's column/row split): the gate and
        up columns [tp_rank * F / tp, (tp_rank + 1) * F / tp) and the same rows of w_down. The shards'
        outputs sum to the whole expert's, as SwiGLU acts column by column."""
        ffn = self.w_down.shape[1]
        if tp < 1 or ffn % tp or not 0 <= tp_rank < tp:
            raise ValueError(f"tp={tp} must divide F={ffn} and tp_rank={tp_rank} lie in [0, tp)")
        width = ffn // tp
        cols = slice(tp_rank * width, (tp_rank + 1) * width)
        gate, up = self.w_gate_up[..., :ffn], self.w_gate_up[..., ffn:]
        return MoEWeights(self.router, torch.cat([gate[..., cols], up[..., cols]], dim=-1).contiguous(),
                          self.w_down[:, cols].contiguous())


def round_robin_ids(tokens: int, top_k: int, experts: int, device=None) -> torch.Tensor:
    """(tokens, top_k) expert ids dealt in turn: slot j of token t goes to expert (t * top_k + j) mod experts, so
    every expert gets rows (as evenly as they divide) whatever the inputs."""
    return (torch.arange(tokens * top_k, device=device) % experts).view(tokens, top_k)


def route(x: torch.Tensor, router: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-k expert ids (T, k) int64, their weights (T, k) fp32)."""
    logits = x.float() @ router.float()  # (T, E)
    picked, ids = torch.topk(logits, top_k, dim=-1)
    return ids, torch.softmax(picked, dim=-1)


def routing_weights(x: torch.Tensor, router: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Weights of a given (possibly adversarial) choice of experts: softmax over their logits."""
    logits = x.float() @ router.float()
    return torch.softmax(torch.gather(logits, 1, ids), dim=-1)


def swiglu(h: torch.Tensor) -> torch.Tensor:
    """(rows, 2F) -> (rows, F): silu(gate) * up."""
    ffn = h.shape[-1] // 2
    return torch.nn.functional.silu(h[..., :ffn]) * h[..., ffn:]


def reference_moe(x: torch.Tensor, weights: MoEWeights, ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
    """(T, H) fp32 output of the MoE layer for the given routing."""
    x32 = x.float()
    out = torch.zeros_like(x32)
    for e in range(weights.num_experts):
        token, slot = torch.nonzero(ids == e, as_tuple=True)
        if len(token) == 0:
            continue
        h = swiglu(x32[token] @ weights.w_gate_up[e].float())  # (rows, F)
        y = h @ weights.w_down[e].float()  # (rows, H)
        out.index_add_(0, token, y * topk_weights[token, slot, None].float())
    return out
