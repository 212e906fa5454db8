import pytest

pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
pytest.importorskip("triton", reason="the kernels need triton (pip install -e '.[kernels]')")

from comet_dse.kernels.fused_layer import FusedConfig, plan_rows  # noqa: E402

from comet_dse.plan import Plan, PlanEntry  # noqa: E402


def test_the_fused_layer_takes_its_configuration_from_a_plan():
    entries = [PlanEntry(t, {"block_m": 128, "block_n": 128, "comm_blocks0": n0, "comm_blocks1": n1,
                             "row_order": "local-first", "n_splits": s}, {}, {}, {}, 40)
               for t, n0, n1, s in ((1024, 4, 12, 8), (8192, 20, 24, 2))]
    plan = Plan("m", "h", 2, 1, entries)
    small, large = FusedConfig.from_plan(plan, 1500), FusedConfig.from_plan(plan, 6000, programs=8)
    assert (small.comm_blocks0, small.comm_blocks1, small.n_splits) == (4, 12, 8)
    assert (large.comm_blocks0, large.comm_blocks1, large.n_splits, large.programs) == (20, 24, 2, 8)


def test_plan_pulls_local_rows_first_and_sends_remote_rows_first():
    import numpy as np

    # 2 ranks, 2 experts each, top-1, 3 tokens per rank; rank 0 holds experts 0 and 1
    all_ids = np.array([[[0], [1], [2]], [[0], [0], [3]]])
    cfg = FusedConfig(block_m=2, block_n=2, n_splits=2)
    plan = plan_rows(all_ids, rank=0, experts_per_rank=2, cfg=cfg, ffn=4, hidden=4)
    # expert 0 rows: rank 0's token 0, then rank 1's tokens 0 and 1; expert 1: rank 0's token 1
    assert plan.row_src.tolist() == [0, 1, 1, 0]
    assert plan.row_tok.tolist() == [0, 0, 1, 1]
    assert plan.counts == [3, 1]
    # row tiles: [0,2) ends with a rank-1 row, [2,3) rank 1, [3,4) local: the local-only tile is pulled first
    assert plan.pull.tolist() == [[3, 1], [0, 2], [2, 1]]
    # layer1 sends start with tiles whose first row is remote
    assert plan.sends[0].tolist()[:2] == [2, 1]


def _plan_by_loops(all_ids, rank, experts_per_rank, cfg, ffn, hidden):
    """The plan written plainly, one row and one tile at a time: the oracle for the vectorised one."""
    world, tokens, top_k = all_ids.shape
    order = [(rank + i) % world for i in range(world)] if cfg.row_order == "local-first" else list(range(world))
    rot = {s: i for i, s in enumerate(order)}
    src, pair, counts, tiles = [], [], [], []
    for e in range(experts_per_rank):
        start = len(src)
        for s in order:
            for j in range(tokens):
                for k in range(top_k):
                    if all_ids[s, j, k] == rank * experts_per_rank + e:
                        src.append(s)
                        pair.append(j * top_k + k)
        counts.append(len(src) - start)
        for r in range(start, len(src), cfg.block_m):
            m = min(cfg.block_m, len(src) - r)
            tiles.append((e, r, m, rot[src[r]], rot[src[r + m - 1]]))
    pull_order = sorted(range(len(tiles)), key=lambda t: (tiles[t][4], t))
    key = [((t[3] - 1) % world if cfg.row_order == "local-first" else t[3]) for t in tiles]
    order1 = sorted(range(len(tiles)), key=lambda t: (key[t], t))
    split = hidden // cfg.n_splits
    tiles0 = [(tiles[t][0], tiles[t][1], tiles[t][2], c, i) for i, t in enumerate(pull_order) for c in range(0, ffn, cfg.block_n)]
    tiles1 = [(tiles[t][0], tiles[t][1], tiles[t][2], j * split + c, i * cfg.n_splits + j)
              for j in range(cfg.n_splits) for i, t in enumerate(order1) for c in range(0, split, cfg.block_n)]
    sends = [(tiles[t][1], tiles[t][2], j, i * cfg.n_splits + j) for j in range(cfg.n_splits) for i, t in enumerate(order1)]
    pull = [(tiles[t][1], tiles[t][2]) for t in pull_order]
    return src, pair, counts, pull, tiles0, tiles1, sends


@pytest.mark.parametrize("row_order", ["local-first", "source-order"])
@pytest.mark.parametrize("seed", range(4))
def test_vectorised_plan_equals_the_plain_one(seed, row_order):
    import numpy as np

    rng = np.random.default_rng(seed)
    world, tokens, top_k, experts = 3, int(rng.integers(1, 40)), 2, 6
    all_ids = np.stack([np.stack([rng.choice(experts, top_k, replace=False) for _ in range(tokens)]) for _ in range(world)])
    cfg = FusedConfig(block_m=4, block_n=2, n_splits=2, row_order=row_order)
    for rank in range(world):
        plan = plan_rows(all_ids, rank, 2, cfg, ffn=6, hidden=8)
        src, pair, counts, pull, tiles0, tiles1, sends = _plan_by_loops(all_ids, rank, 2, cfg, 6, 8)
        assert plan.row_src.tolist() == src and plan.row_slot.tolist() == pair and plan.counts == counts
        assert plan.row_tok.tolist() == [p // top_k for p in pair]
        assert [tuple(r) for r in plan.pull.tolist()] == pull
        assert [tuple(r) for r in plan.tiles0.tolist()] == tiles0
        assert [tuple(r) for r in plan.tiles1.tolist()] == tiles1
        assert [tuple(r) for r in plan.sends.tolist()] == sends
