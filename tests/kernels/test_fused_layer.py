"""The fused kernels, two ranks (gloo processes, shared-memory peer buffers), Triton's
CPU interpreter in fp32 / fp16, against the fp32 reference on adversarial routings."""

from __future__ import annotations

import os
import socket

import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
pytest.importorskip("triton", reason="the kernels need triton (pip install -e '.[kernels]')")
if torch.cuda.is_available():
    pytest.skip("this suite runs two CPU ranks through the interpreter; the GPU suite is the benchmark's", allow_module_level=True)

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE  # noqa: E402
from comet_dse.kernels.reference import (  # noqa: E402
    MoEWeights,
    reference_moe,
    route,
    routing_weights,
)

WORLD = 2
EXPERTS, HIDDEN, FFN = 8, 32, 48
SMALL = FusedConfig(comm_blocks0=2, comm_blocks1=2, block_m=16, block_n=16, block_k=16, n_splits=2, programs=4,
                    max_spins=50)


def _routings(total: int, top_k: int, x, weights) -> dict:
    base = torch.arange(top_k).repeat(total, 1)  # expert 0 gets every token; experts >= k none
    return {"router": route(x, weights.router, top_k)[0], "all-to-one-expert": base}


def _worker(rank: int, port: int, dtype_name: str, cases, row_order: str, weight_tma: bool) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    dtype = getattr(torch, dtype_name)
    weights = MoEWeights.random(EXPERTS, HIDDEN, FFN, seed=2)
    local = weights.local(rank * EXPERTS // WORLD, EXPERTS // WORLD)
    layer = FusedMoE(local, top_k=max(k for _, k in cases), max_tokens=max(t for t, _ in cases), dtype=dtype,
                     config=FusedConfig(**{**SMALL.__dict__, "row_order": row_order, "weight_tma": weight_tma}))
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for tokens, top_k in cases:
        layer.top_k = top_k
        x = torch.randn(tokens * WORLD, HIDDEN, generator=torch.Generator().manual_seed(tokens + 100 * top_k))
        x = x.to(dtype).float()  # the reference sees the same rounded inputs
        for name, ids in _routings(tokens * WORLD, top_k, x, weights).items():
            w = routing_weights(x, weights.router, ids)
            mine = slice(rank * tokens, (rank + 1) * tokens)
            expected = reference_moe(x, weights, ids, w)[mine]
            got = layer(x[mine], ids[mine], w[mine])
            err = ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-6)).item()
            assert err < tol, f"{dtype_name} {row_order} {name} tokens={tokens} top_k={top_k}: relative error {err:.2e}"
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("dtype_name, row_order, weight_tma",
                         [("float32", "local-first", True), ("float16", "source-order", False)])
def test_fused_layer_matches_the_reference(dtype_name, row_order, weight_tma):
    # one token; a token count that is no multiple of the 16-row tile; top-1; top-8 (every expert)
    cases = [(1, 2), (21, 2), (16, 1), (5, 8)]
    mp.spawn(_worker, args=(_free_port(), dtype_name, cases, row_order, weight_tma), nprocs=WORLD, join=True)


def _stuck_worker(rank: int, port: int) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    weights = MoEWeights.random(EXPERTS, HIDDEN, FFN, seed=2)
    layer = FusedMoE(weights.local(rank * 4, 4), top_k=2, max_tokens=8, dtype=torch.float32, config=SMALL)
    original = layer.launch_layer0
    layer.launch_layer0 = lambda *a, **k: original(*a, **{**k, "num_pull": 0})  # the communication blocks pull nothing
    x = torch.randn(8, HIDDEN)
    ids, w = route(x, weights.router, 2)
    with pytest.raises(RuntimeError, match="layer0: a compute block waited 50 spins for row tile"):
        layer(x, ids, w)
    dist.destroy_process_group()


def test_a_stuck_wait_raises_instead_of_hanging():
    mp.spawn(_stuck_worker, args=(_free_port(),), nprocs=WORLD, join=True)
