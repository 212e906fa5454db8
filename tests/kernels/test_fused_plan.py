"""The device-side plan (fixed-shape torch ops) against the same layout written as plain loops,
on random and adversarial routings, for every rank of 1-4 rank groups."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")

from comet_dse.kernels.fused_plan import (  # noqa: E402
    DevicePlan,
    device_plan,
    layout_groups,
    max_row_tiles,
    reference_plan,
    source_rotation,
)


def _counts(all_ids: list[torch.Tensor], experts: int) -> torch.Tensor:
    """(W, E): pairs each source routes to each expert."""
    return torch.stack([torch.bincount(ids.reshape(-1), minlength=experts) for ids in all_ids])


def _check(all_ids: list[torch.Tensor], experts: int, block_m: int, row_order: str) -> None:
    for merged in (False, True):
        for expert_order in (False, True):
            _check_order(all_ids, experts, block_m, row_order, expert_order, merged)


def _tile_rows(tile: tuple, pieces: list[tuple]) -> list[tuple[int, int]]:
    """(source, send row) of each of a tile's rows: in place, or from its expert's pieces."""
    expert, row0, rows, src, at_src = tile
    if src >= 0:
        return [(src, at_src + i) for i in range(rows)]
    found = []
    for row in range(row0, row0 + rows):
        holders = [(p_src, p_at + row - first) for first, n, p_src, p_at in pieces[expert] if first <= row < first + n]
        assert len(holders) == 1, (tile, row)
        found += holders
    return found


def _check_order(all_ids: list[torch.Tensor], experts: int, block_m: int, row_order: str, expert_order: bool,
                 merged: bool) -> None:
    world = len(all_ids)
    per_rank = experts // world
    counts = _counts(all_ids, experts)
    max_tokens = max(ids.shape[0] for ids in all_ids)
    top_k = all_ids[0].shape[1]
    max_tiles = max_row_tiles(world * max_tokens * min(top_k, per_rank), layout_groups(world, per_rank, merged), block_m)
    for rank in range(world):
        rotation = source_rotation(rank, world, row_order)
        plan = device_plan(counts.to(torch.int32), rank, per_rank, block_m, torch.tensor(rotation), max_tiles,
                           expert_order=expert_order, merged=merged)
        tiles, order1, pieces = reference_plan(counts.tolist(), rank, per_rank, block_m, rotation, expert_order, merged)
        n = int(plan.num_tiles.item())
        assert n == len(tiles) <= max_tiles
        assert [tuple(t) for t in plan.tiles[:n].tolist()] == tiles
        assert (plan.tiles[n:, 2] == 0).all()  # padding tiles have no rows
        assert plan.order1[:n].tolist() == order1
        assert sorted(plan.order1.tolist()) == list(range(max_tiles))
        assert [[tuple(p) for p in e] for e in plan.pieces.tolist()] == pieces
        if expert_order:  # experts never go back
            assert [tiles[u][0] for u in order1] == sorted(t[0] for t in tiles)
        own = [i for i, t in enumerate(tiles) if t[3] == rank]  # this rank's tiles: one contiguous run
        # the remote tiles move in the order's remote entries, and only they
        assert plan.remote[:n - len(own)].tolist() == [u for u in order1 if tiles[u][3] != rank]
        first, end = plan.local_tiles.tolist()
        assert own == list(range(first, end)) and (first == end or own)
        if merged:  # own tiles are full and first; an expert has at most one partial tile
            assert first == 0 and all(tiles[u][2] == block_m for u in own)
            assert all(sum(t[0] == e and t[2] < block_m for t in tiles) <= 1 for e in range(per_rank))
        elif not own:  # an empty own segment sits where its position in the rotation puts it
            assert first == sum(1 for t in tiles if rotation.index(t[3]) < rotation.index(rank))
        # every pair routed to this rank is in exactly one tile row, at its source's send row
        covered = [row for t in tiles for row in _tile_rows(t, pieces)]
        expected = set()
        for src, ids in enumerate(all_ids):
            order = torch.sort(ids.reshape(-1), stable=True).indices
            for send_row, pair in enumerate(order.tolist()):
                if ids.reshape(-1)[pair] // per_rank == rank:
                    expected.add((src, send_row))
        assert sorted(covered) == sorted(expected)
        # layout rows: tiles never overlap and fill [0, rows received) (h and the receive region)
        assert sorted(r for t in tiles for r in range(t[1], t[1] + t[2])) == list(range(len(expected)))
        segments = plan.segments.tolist()
        for src in range(world):
            assert segments[src][1] == int(counts[src, rank * per_rank:(rank + 1) * per_rank].sum())


def _random_ids(g: torch.Generator, tokens: int, top_k: int, experts: int) -> torch.Tensor:
    return torch.stack([torch.randperm(experts, generator=g)[:top_k] for _ in range(tokens)]) if tokens else \
        torch.zeros(0, top_k, dtype=torch.int64)


@pytest.mark.parametrize("row_order", ["local-first", "source-order"])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(3))
def test_device_plan_equals_the_plain_one_on_random_routings(seed, world, row_order):
    g = torch.Generator().manual_seed(seed * 10 + world)
    experts = (4, 3, 5)[seed] * world  # 3 and 5 per rank: the plan kernel's padded groups (Qwen2-MoE has 30 per GPU at EP=2)
    top_k = int(torch.randint(1, experts + 1, (1,), generator=g))
    all_ids = [_random_ids(g, int(torch.randint(0, 40, (1,), generator=g)), top_k, experts) for _ in range(world)]
    _check(all_ids, experts, block_m=4, row_order=row_order)


ADVERSARIAL = {
    "all tokens to experts 0..k-1": lambda t, k, e: torch.arange(k).repeat(t, 1),
    "one token": lambda t, k, e: torch.arange(k)[None] + 1,
    "top-1": lambda t, k, e: (torch.arange(t)[:, None] * 5) % e,
    "top-8, every expert": lambda t, k, e: torch.arange(e).repeat(t, 1),
    "last experts only (first ranks get nothing)": lambda t, k, e: (e - 1 - torch.arange(k)).repeat(t, 1),
}


@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_device_plan_on_adversarial_routings(case):
    experts, world = 8, 2
    top_k = {"top-1": 1, "top-8, every expert": 8}.get(case, 2)
    tokens = 1 if case == "one token" else 37  # 37: no multiple of the 16-row tile
    all_ids = [ADVERSARIAL[case](tokens, top_k, experts) for _ in range(world)]
    for row_order in ("local-first", "source-order"):
        _check(all_ids, experts, block_m=16, row_order=row_order)


def test_a_full_capacity_call_fits_the_tile_table():
    # every token of every rank to one rank's experts, top-k = experts per rank: the worst case
    world, experts, tokens = 2, 8, 64
    all_ids = [torch.arange(4).repeat(tokens, 1) for _ in range(world)]
    _check(all_ids, experts, block_m=16, row_order="local-first")
    _check(all_ids, experts, block_m=128, row_order="local-first")


def test_a_plans_remote_tiles_are_its_tiles_but_its_own():
    plan = DevicePlan.empty(16, 2, 4, "cpu")
    plan.num_tiles.fill_(12)
    plan.local_tiles.copy_(torch.tensor([3, 7]))
    assert plan.remote_count() == 8


def test_local_first_puts_own_rows_first_and_layer1_sends_remote_rows_first():
    # 2 ranks, 2 experts each, top-1; rank 0 holds experts 0 and 1
    ids0, ids1 = torch.tensor([[0], [1], [2]]), torch.tensor([[0], [0], [3]])
    counts = _counts([ids0, ids1], 4)
    tiles, order1, _ = reference_plan(counts.tolist(), 0, 2, 2, source_rotation(0, 2, "local-first"))
    # own segment: expert 0 (1 row), expert 1 (1 row); then rank 1's: expert 0 (2 rows, send rows 0-1)
    assert tiles == [(0, 0, 1, 0, 0), (1, 1, 1, 0, 1), (0, 2, 2, 1, 0)]
    assert order1 == [2, 0, 1]
    plan = device_plan(counts.to(torch.int32), 0, 2, 2, torch.tensor([0, 1]), 8)
    assert [tuple(t) for t in plan.tiles[:3].tolist()] == tiles


def test_merged_runs_put_an_experts_rows_of_every_source_in_one_tile():
    # the same routing, 2-row tiles, merged: no own row fills a whole tile, so everything is in the runs;
    # expert 0's run = its own row (send row 0) + rank 1's two rows -> 2 tiles instead of 2 + 1 by source
    ids0, ids1 = torch.tensor([[0], [1], [2]]), torch.tensor([[0], [0], [3]])
    counts = _counts([ids0, ids1], 4)
    tiles, order1, pieces = reference_plan(counts.tolist(), 0, 2, 2, [0, 1], merged=True)
    assert tiles == [(0, 0, 2, -1, 0), (0, 2, 1, -1, 0), (1, 3, 1, -1, 0)]
    assert pieces == [[(0, 1, 0, 0), (1, 2, 1, 0)], [(3, 1, 0, 1), (4, 0, 1, 2)]]
    assert order1 == [0, 1, 2]
    plan = device_plan(counts.to(torch.int32), 0, 2, 2, torch.tensor([0, 1]), 8, merged=True)
    assert [tuple(t) for t in plan.tiles[:3].tolist()] == tiles
    # with 1-row tiles rank 0's own rows fill whole tiles: read in place, first
    tiles, _, _ = reference_plan(counts.tolist(), 0, 2, 1, [0, 1], merged=True)
    assert tiles[:2] == [(0, 0, 1, 0, 0), (1, 1, 1, 0, 1)] and {t[3] for t in tiles[2:]} == {-1}


class _NoHostSync(torch.utils._python_dispatch.TorchDispatchMode):
    """Fails on any op that reads a tensor's value on the host: inside a CUDA graph capture
    those are errors, and outside they are syncs."""

    HOST_READS = ("_local_scalar_dense", "nonzero", "item", "equal", "is_nonzero")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        assert func.__name__.split(".")[0] not in self.HOST_READS, f"{func} reads a device value on the host"
        return func(*args, **(kwargs or {}))


def test_the_device_plan_never_reads_a_value_on_the_host():
    counts = torch.tensor([[3, 0, 5, 1], [2, 2, 0, 7]], dtype=torch.int32)
    for rank in range(2):
        rotation = torch.tensor(source_rotation(rank, 2, "local-first"))
        for merged in (False, True):
            with _NoHostSync():
                device_plan(counts, rank, 2, 2, rotation, 16, merged=merged)
    with pytest.raises(AssertionError, match="reads a device value on the host"), _NoHostSync():
        torch.arange(3)[torch.tensor(1)]  # the mode does catch a 0-d index (what broke a capture once)
