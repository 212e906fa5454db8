"""B0 and B1 under tensor parallelism on gloo: EP=1 × TP=2 and EP=2 × TP=1 on two processes, EP=2 ×
TP=2 on four, each rank's output against the fp32 reference of the whole layer, over consecutive
calls with changing routings (the TP-kernels issue's CPU check of its baselines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
import torch.distributed as dist  # noqa: E402
from comet_dse.kernels.reference import MoEWeights, reference_moe, routing_weights  # noqa: E402
from comet_dse.kernels.tp_baselines import moe_chunked_tp, moe_sequential_tp, parallel_groups  # noqa: E402

from tests.kernels.test_baselines import (  # noqa: E402
    CALLS,
    EXPERTS,
    FFN,
    HIDDEN,
    TOLERANCE,
    free_port,
    rank_reports,
    relative_error,
    routings,
)

CASES = [(37, 2), (1, 2), (16, 1), (9, 8)]  # (tokens per rank, top-k), as the EP baselines' minus the large one
GRIDS = {2: [(1, 2), (2, 1)], 4: [(2, 2)]}  # world -> (ep, tp)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    full = MoEWeights.random(EXPERTS, HIDDEN, FFN, seed=1)
    errors = []
    try:
        parallel_groups(world, 2)
        refused = ""
    except ValueError as e:  # raised before any group is made, so the ranks stay in step
        refused = str(e)
    for ep, tp in GRIDS[world]:
        groups = parallel_groups(ep, tp)
        per_rank = EXPERTS // ep
        shard = full.local(groups.ep_rank * per_rank, per_rank).ffn_shard(groups.tp_rank, tp)
        layers = {"B0": lambda *a: moe_sequential_tp(*a, groups), "B1x3": lambda *a: moe_chunked_tp(*a, groups, 3)}
        for tokens, top_k in CASES:
            for call in range(CALLS):
                x = torch.randn(tokens * world, HIDDEN, generator=torch.Generator().manual_seed(tokens * 100 + top_k * 10 + call))
                mine = slice(rank * tokens, (rank + 1) * tokens)
                for name, ids in routings(tokens, top_k, x, full, call).items():
                    ids = ids.repeat(tokens * world // ids.shape[0], 1)  # routings() sizes two ranks' tokens
                    w = routing_weights(x, full.router, ids)
                    expected = reference_moe(x[mine], full, ids[mine], w[mine])
                    for impl, fn in layers.items():
                        got = fn(x[mine], ids[mine], w[mine], shard)
                        errors.append([f"ep{ep}xtp{tp} {impl} {name} tokens={tokens} top_k={top_k} call={call}",
                                       relative_error(got, expected)])
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"errors": errors, "refused": refused}))
    dist.destroy_process_group()


@pytest.fixture(scope="module", params=sorted(GRIDS))
def gloo_reports(request, tmp_path_factory) -> list[dict]:
    world = request.param
    out_dir = tmp_path_factory.mktemp(f"tp_baselines_{world}")
    return rank_reports(_worker, world, out_dir, world, free_port(), str(out_dir))


def test_every_grid_matches_the_reference(gloo_reports):
    errors = [entry for report in gloo_reports for entry in report["errors"]]
    bad = [f"{label}: {err:.2e}" for label, err in errors if not err < TOLERANCE]
    assert not bad, "\n".join(bad)
    grids = {label.split()[0] for label, _ in errors}
    assert grids == {f"ep{ep}xtp{tp}" for ep, tp in GRIDS[len(gloo_reports)]}
    routed = sum(3 if top_k <= 4 else 2 for _, top_k in CASES)  # routings() per case: empty experts up to top-4
    assert len(errors) == len(gloo_reports) * len(grids) * routed * CALLS * 2  # every case ran, both layers


def test_ffn_shards_sum_to_the_whole_expert():
    full = MoEWeights.random(EXPERTS, HIDDEN, FFN, seed=3)
    x = torch.randn(11, HIDDEN, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, EXPERTS, (11, 2), generator=torch.Generator().manual_seed(1))
    w = routing_weights(x, full.router, ids)
    parts = sum(reference_moe(x, full.ffn_shard(t, 3), ids, w) for t in range(3))
    assert relative_error(parts, reference_moe(x, full, ids, w)) < 1e-5
    with pytest.raises(ValueError, match="tp=5 must divide F=48"):
        full.ffn_shard(0, 5)


def test_a_grid_that_is_not_the_world_is_refused(gloo_reports):
    world = len(gloo_reports)
    assert {r["refused"] for r in gloo_reports} == {f"ep={world} x tp=2 must equal the world size {world}"}
