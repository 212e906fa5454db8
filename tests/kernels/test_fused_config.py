import pytest

pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
pytest.importorskip("triton", reason="the kernels need triton (pip install -e '.[kernels]')")

from comet_dse.kernels.fused_layer import FusedConfig  # noqa: E402

from comet_dse.plan import Plan, PlanEntry  # noqa: E402


def test_the_fused_layer_takes_its_configuration_from_a_plan():
    entries = [PlanEntry(t, {"block_m": 128, "block_n": 128, "comm_blocks0": n0, "comm_blocks1": n1,
                             "row_order": "local-first", "n_splits": s}, {}, {}, {}, 40)
               for t, n0, n1, s in ((1024, 4, 12, 8), (8192, 20, 24, 2))]
    plan = Plan("m", "h", 2, 1, entries)
    small, large = FusedConfig.from_plan(plan, 1500), FusedConfig.from_plan(plan, 6000, programs=8)
    assert (small.comm_blocks0, small.comm_blocks1, small.n_splits) == (4, 12, 8)
    assert (large.comm_blocks0, large.comm_blocks1, large.n_splits, large.programs) == (20, 24, 2, 8)
