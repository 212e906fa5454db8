"""The workload: a model shape, tokens per GPU, the EP x TP layout and the routing.

Convention: `tokens` counts the tokens one GPU holds when the MoE layer starts, before
dispatch. The paper's M (tokens of the whole layer input) is tokens x EP x TP.
Ranks are numbered rank = ep_index * TP + tp_index, so TP peers sit next to each other
(on one node while TP divides the node size). Rank r holds the routed experts
[ep_index * E/EP, (ep_index + 1) * E/EP), each cut F/TP wide.
"""

from __future__ import annotations

from dataclasses import dataclass

from comet_dse.errors import UserError
from comet_dse.models import ModelConfig


@dataclass(frozen=True)
class Workload:
    model: ModelConfig
    tokens: int
    ep: int
    tp: int = 1
    routing: str = "uniform"
    seed: int = 0
    dtype_bytes: int = 2  # bf16

    def __post_init__(self) -> None:
        if not isinstance(self.tokens, int) or self.tokens <= 0:
            raise UserError("--tokens", f"must be a positive integer (tokens per GPU), got {self.tokens!r}")
        if not isinstance(self.ep, int) or self.ep <= 0:
            raise UserError("--ep", f"must be a positive integer, got {self.ep!r}")
        if not isinstance(self.tp, int) or self.tp <= 0:
            raise UserError("--tp", f"must be a positive integer, got {self.tp!r}")
        if self.model.num_experts % self.ep:
            raise UserError("--ep", f"must divide the model's {self.model.num_experts} experts, got {self.ep}")
        if self.model.ffn % self.tp:
            raise UserError("--tp", f"must divide the expert width F={self.model.ffn}, got {self.tp}")
        if self.dtype_bytes not in (1, 2, 4):
            raise UserError("dtype_bytes", f"must be 1, 2 or 4, got {self.dtype_bytes}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError("--seed", f"must be an integer >= 0, got {self.seed!r}")

    @property
    def world(self) -> int:
        return self.ep * self.tp

    @property
    def experts_per_rank(self) -> int:
        return self.model.num_experts // self.ep

    @property
    def ffn_per_rank(self) -> int:
        return self.model.ffn // self.tp

    def expert_ranks(self, expert: int) -> range:
        """The TP ranks holding a slice of `expert`."""
        ep_index = expert // self.experts_per_rank
        return range(ep_index * self.tp, (ep_index + 1) * self.tp)

    def local_experts(self, rank: int) -> range:
        ep_index = rank // self.tp
        return range(ep_index * self.experts_per_rank, (ep_index + 1) * self.experts_per_rank)

    def to_dict(self) -> dict:
        return {
            "model": self.model.to_dict(),
            "tokens": self.tokens,
            "ep": self.ep,
            "tp": self.tp,
            "world": self.world,
            "routing": self.routing,
            "seed": self.seed,
            "dtype_bytes": self.dtype_bytes,
        }
