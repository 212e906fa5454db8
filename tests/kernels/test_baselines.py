"""B0 and B1 on gloo with two processes match the fp32 reference on adversarial routings."""

from __future__ import annotations

import os
import socket

import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from comet_dse.kernels.baselines import moe_chunked, moe_sequential  # noqa: E402
from comet_dse.kernels.reference import (  # noqa: E402
    MoEWeights,
    reference_moe,
    route,
    routing_weights,
)

WORLD = 2
EXPERTS, HIDDEN, FFN = 8, 32, 48


def routings(tokens: int, top_k: int, x: torch.Tensor, weights: MoEWeights) -> dict[str, torch.Tensor]:
    """Global (tokens * WORLD, top_k) expert ids for each adversarial case."""
    total = tokens * WORLD
    base = torch.arange(top_k).repeat(total, 1)  # every token picks experts 0..k-1: expert 0 gets all
    sparse = torch.stack([torch.tensor([0, 2, 5, 7])[torch.randperm(4, generator=torch.Generator().manual_seed(i))[:top_k]]
                          for i in range(total)]) if top_k <= 4 else base
    return {"router": route(x, weights.router, top_k)[0], "all-to-one-expert": base, "empty-experts": sparse}


def _worker(rank: int, port: int, cases: list[tuple[int, int]]) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    weights = MoEWeights.random(EXPERTS, HIDDEN, FFN, seed=1)
    local = weights.local(rank * EXPERTS // WORLD, EXPERTS // WORLD)
    for tokens, top_k in cases:
        x = torch.randn(tokens * WORLD, HIDDEN, generator=torch.Generator().manual_seed(tokens * 10 + top_k))
        for name, ids in routings(tokens, top_k, x, weights).items():
            w = routing_weights(x, weights.router, ids)
            expected = reference_moe(x, weights, ids, w)[rank * tokens:(rank + 1) * tokens]
            mine = slice(rank * tokens, (rank + 1) * tokens)
            for label, got in (("B0", moe_sequential(x[mine], ids[mine], w[mine], local)),
                               ("B1", moe_chunked(x[mine], ids[mine], w[mine], local, chunks=3))):
                err = (got - expected).abs().max().item()
                assert err < 1e-4, f"{label} {name} tokens={tokens} top_k={top_k}: max error {err}"
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_b0_and_b1_match_the_reference_on_gloo():
    # (tokens per rank, top-k): a token count that is no multiple of a tile, one token, top-1, top-8
    cases = [(37, 2), (1, 2), (16, 1), (9, 8), (64, 4)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(free_port(), cases), nprocs=WORLD, join=True)


def test_reference_is_the_dense_computation():
    weights = MoEWeights.random(4, 8, 6, seed=0)
    x = torch.randn(5, 8)
    ids, w = route(x, weights.router, 2)
    out = reference_moe(x, weights, ids, w)
    for t in range(5):  # one token at a time, no indexing tricks
        expect = sum(w[t, j] * (torch.nn.functional.silu(x[t] @ weights.w_gate_up[ids[t, j], :, :6])
                                * (x[t] @ weights.w_gate_up[ids[t, j], :, 6:])) @ weights.w_down[ids[t, j]] for j in range(2))
        assert torch.allclose(out[t], expect, atol=1e-5)
