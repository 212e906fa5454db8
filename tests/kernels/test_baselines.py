"""B0, B1 and the naive layer on gloo with two processes: they match the fp32 reference on
adversarial routings, and B0/B1 wait for the device once per call.

One spawn of two ranks runs every case and writes what it saw to a JSON file per rank; the
tests below read those files.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from comet_dse.kernels.baselines import _grouped_mm, moe_chunked, moe_naive, moe_sequential  # noqa: E402
from comet_dse.kernels.reference import (  # noqa: E402
    MoEWeights,
    reference_moe,
    route,
    routing_weights,
)
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

WORLD = 2
EXPERTS, HIDDEN, FFN = 8, 32, 48
ODD_HIDDEN, ODD_FFN = 20, 13  # 2F * 4 bytes is no multiple of 16: the loop GEMM instead of torch._grouped_mm
TOLERANCE = 1e-4  # max error relative to the largest output, fp32
# (tokens per rank, top-k): no multiple of anything, one token, top-1, top-8 (every expert), a larger batch
CASES = [(37, 2), (1, 2), (16, 1), (9, 8), (64, 4)]
CALLS = 3  # consecutive calls per case, each with a new routing


def layers(tokens: int) -> dict:
    """Every implementation under test, as f(x, ids, w, weights, group)."""
    def chunked(chunks: int):
        return lambda x, ids, w, weights, group: moe_chunked(x, ids, w, weights, chunks, group)
    return {"B0": moe_sequential, "B1x1": chunked(1), "B1x2": chunked(2), "B1x3": chunked(3),
            "B1x(tokens+2)": chunked(tokens + 2), "naive": moe_naive}


def routings(tokens: int, top_k: int, x: torch.Tensor, weights: MoEWeights, call: int) -> dict[str, torch.Tensor]:
    """Global (tokens * WORLD, top_k) expert ids for each case; `call` changes every routing."""
    total, experts = tokens * WORLD, weights.num_experts
    g = torch.Generator().manual_seed(call)
    one = (torch.arange(top_k) + call) % experts  # every token on the same k experts
    out = {"router": route(x, weights.router, top_k)[0], "all-to-one-expert": one.repeat(total, 1)}
    if top_k <= 4:  # experts 1, 3, 4, 6 get nothing: an empty expert on each rank
        out["empty-experts"] = torch.stack([torch.tensor([0, 2, 5, 7])[torch.randperm(4, generator=g)[:top_k]]
                                            for _ in range(total)])
    return out


class HostWaits(TorchDispatchMode):
    """Counts, on CPU tensors, what would make the host wait for a GPU: values read on the host
    (.tolist(), .cpu(), .numpy(), .item()), ops whose output size depends on values, tensors
    built from host data (a blocking host-to-device copy); and the collectives."""

    SYNCING = {"aten::_local_scalar_dense", "aten::nonzero", "aten::bincount", "aten::masked_select", "aten::equal",
               "aten::lift_fresh", "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive"}
    READS = ("tolist", "cpu", "numpy")

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []
        self.collectives: list[str] = []
        self._originals = {name: getattr(torch.Tensor, name) for name in self.READS}

    def __enter__(self):
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, self._counted(name, original))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)

    def _counted(self, name, original):
        def read(tensor, *args, **kwargs):
            self.syncs.append(name)
            return original(tensor, *args, **kwargs)
        return read

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name.startswith("c10d::"):
            self.collectives.append(name)
        elif (name in self.SYNCING
              or (name == "aten::repeat_interleave" and kwargs.get("output_size") is None)
              or (name == "aten::index" and any(i is not None and i.dtype == torch.bool for i in args[1]))):
            self.syncs.append(name)
        return func(*args, **kwargs)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    alone = [dist.new_group([r]) for r in range(WORLD)][rank]  # a world of one: nothing to exchange
    report: dict = {"errors": [], "waits": {}, "dtypes": {}}
    weights = MoEWeights.random(EXPERTS, HIDDEN, FFN, seed=1)
    odd = MoEWeights.random(EXPERTS, ODD_HIDDEN, ODD_FFN, seed=2)
    per_rank = EXPERTS // WORLD

    def check(label: str, full: MoEWeights, tokens: int, top_k: int, call: int, impls: dict, group=None) -> None:
        hidden = full.w_down.shape[2]
        x = torch.randn(tokens * WORLD, hidden, generator=torch.Generator().manual_seed(tokens * 100 + top_k * 10 + call))
        mine = slice(rank * tokens, (rank + 1) * tokens)
        local = full if group is alone else full.local(rank * per_rank, per_rank)
        for name, ids in routings(tokens, top_k, x, full, call).items():
            w = routing_weights(x, full.router, ids)
            expected = reference_moe(x[mine], full, ids[mine], w[mine])
            for impl, fn in impls.items():
                err = relative_error(fn(x[mine], ids[mine], w[mine], local, group), expected)
                report["errors"].append([f"{label} {impl} {name} tokens={tokens} top_k={top_k} call={call}", err])

    for tokens, top_k in CASES:
        for call in range(CALLS):
            check("ep2", weights, tokens, top_k, call, layers(tokens))
    for call in range(CALLS):
        check("ep2-loop-gemm", odd, 37, 2, call, {k: v for k, v in layers(37).items() if k in ("B0", "B1x3", "naive")})
        check("ep1", weights, 37, 4, call, {k: v for k, v in layers(37).items() if k in ("B0", "B1x3", "naive")}, alone)

    # bf16 in, fp32 (default) or bf16 out; the reference sees the same rounded inputs
    x = torch.randn(16, HIDDEN, generator=torch.Generator().manual_seed(rank)).bfloat16()
    ids, w = route(x.float(), weights.router, 2)
    half = MoEWeights(weights.router, weights.w_gate_up.bfloat16(), weights.w_down.bfloat16())
    halves = MoEWeights(half.router, half.w_gate_up.float(), half.w_down.float())
    expected = reference_moe(x.float(), halves, ids, w)
    for out_dtype in (torch.float32, torch.bfloat16):
        got = moe_sequential(x, ids, w, half.local(rank * per_rank, per_rank), out_dtype=out_dtype)
        report["dtypes"][str(out_dtype)] = [str(got.dtype), relative_error(got, expected)]

    # what waits for the device, per call
    x = torch.randn(24, HIDDEN, generator=torch.Generator().manual_seed(rank))
    ids, w = route(x, weights.router, 4)
    local = weights.local(rank * per_rank, per_rank)
    odd_x = torch.randn(24, ODD_HIDDEN, generator=torch.Generator().manual_seed(rank))
    for label, fn in {"B0": lambda: moe_sequential(x, ids, w, local),
                      "B1x3": lambda: moe_chunked(x, ids, w, local, 3),
                      "B0-loop-gemm": lambda: moe_sequential(odd_x, ids, w, odd.local(rank * per_rank, per_rank)),
                      "B0-ep1": lambda: moe_sequential(x, ids, w, weights, alone)}.items():
        with HostWaits() as waits:
            fn()
        report["waits"][label] = {"syncs": waits.syncs, "collectives": waits.collectives}

    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_reports(worker, world: int, out_dir: Path, *args) -> list:
    """Run `worker(rank, *args)` on `world` gloo processes, each writing out_dir/rank<r>.json; their contents."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=args, nprocs=world, join=True)
    return [json.loads((Path(out_dir) / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def gloo_reports(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("baselines")
    return rank_reports(_worker, WORLD, out_dir, free_port(), str(out_dir))


def test_every_layer_matches_the_reference(gloo_reports):
    errors = [entry for report in gloo_reports for entry in report["errors"]]
    bad = [f"{label}: {err:.2e}" for label, err in errors if not err < TOLERANCE]
    assert not bad, "\n".join(bad)
    labels = {label.split()[1] for label, _ in errors}
    assert labels == {"B0", "B1x1", "B1x2", "B1x3", "B1x(tokens+2)", "naive"}


def test_out_dtype(gloo_reports):
    for report in gloo_reports:
        assert report["dtypes"]["torch.float32"][0] == "torch.float32"
        assert report["dtypes"]["torch.bfloat16"][0] == "torch.bfloat16"
        assert all(err < 2e-2 for _, err in report["dtypes"].values()), report["dtypes"]


def test_b0_waits_for_the_device_once(gloo_reports):
    # counts exchange, dispatch, combine; one .tolist() of the split sizes
    for report in gloo_reports:
        for label in ("B0", "B0-loop-gemm"):
            assert report["waits"][label] == {"syncs": ["tolist"], "collectives": ["c10d::alltoall_base_"] * 3}, label


def test_b1_exchanges_all_counts_at_once(gloo_reports):
    for report in gloo_reports:
        assert report["waits"]["B1x3"] == {"syncs": ["tolist"], "collectives": ["c10d::alltoall_base_"] * 7}


def test_one_rank_needs_no_exchange_and_no_sync(gloo_reports):
    for report in gloo_reports:
        assert report["waits"]["B0-ep1"] == {"syncs": [], "collectives": []}


def test_reference_is_the_dense_computation():
    weights = MoEWeights.random(4, 8, 6, seed=0)
    x = torch.randn(5, 8)
    ids, w = route(x, weights.router, 2)
    out = reference_moe(x, weights, ids, w)
    for t in range(5):  # one token at a time, no indexing tricks
        expect = sum(w[t, j] * (torch.nn.functional.silu(x[t] @ weights.w_gate_up[ids[t, j], :, :6])
                                * (x[t] @ weights.w_gate_up[ids[t, j], :, 6:])) @ weights.w_down[ids[t, j]] for j in range(2))
        assert torch.allclose(out[t], expect, atol=1e-5)


def _many_ranks_worker(rank: int, port: int, world: int, out_dir: str) -> None:
    """B0, B1 and the naive layer on a 4- or 8-rank group (the eight-GPU issue's code paths on the CPU)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    weights = MoEWeights.random(EXPERTS, HIDDEN, FFN, seed=3)
    per_rank = EXPERTS // world
    local = weights.local(rank * per_rank, per_rank)
    errors = []
    for call, tokens in enumerate((11, 1, 24)):
        x = torch.randn(tokens * world, HIDDEN, generator=torch.Generator().manual_seed(world * 100 + call))
        ids, w = route(x, weights.router, 2)
        mine = slice(rank * tokens, (rank + 1) * tokens)
        expected = reference_moe(x[mine], weights, ids[mine], w[mine])
        for impl, fn in layers(tokens).items():
            errors.append([f"{world} ranks {impl} call={call}", relative_error(fn(x[mine], ids[mine], w[mine], local, None), expected)])
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(errors))
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [4, 8])
def test_four_and_eight_ranks_match_the_reference(tmp_path, world):
    reports = rank_reports(_many_ranks_worker, world, tmp_path, free_port(), world, str(tmp_path))
    errors = [e for report in reports for e in report]
    assert len(errors) == world * 3 * len(layers(1))
    bad = [f"{label}: {err:.2e}" for label, err in errors if not err < TOLERANCE]
    assert not bad, bad


def test_the_loop_gemm_runs_one_mm_per_run_in_row_order_an_expert_any_number_of_times():
    """B0's loop over the rows as they arrived: runs (expert, rows) per source, so an expert comes back once per
    source; each run's rows meet their own expert's weight."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 8, 5, generator=g)
    runs = [(0, 2), (2, 0), (1, 3), (0, 1), (2, 2)]  # source 0: experts 0, 2 (none), 1; source 1: experts 0, 2
    rows = torch.randn(sum(n for _, n in runs), 8, generator=g)
    expert_of_row = [e for e, n in runs for _ in range(n)]
    expected = torch.stack([rows[i] @ weight[e] for i, e in enumerate(expert_of_row)])
    torch.testing.assert_close(_grouped_mm(rows, weight, None, runs), expected)
