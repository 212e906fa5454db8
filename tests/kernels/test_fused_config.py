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
