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


def test_gate_up_pairs_interleave_the_gate_and_up_columns():
    import torch
    from comet_dse.kernels.fused_layer import gate_up_weight

    w = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)  # (E, H, 2F), F = 4: gate | up
    pairs = gate_up_weight(w, "pairs")
    assert torch.equal(pairs[..., 0::2], w[..., :4]) and torch.equal(pairs[..., 1::2], w[..., 4:])
    assert torch.equal(gate_up_weight(w, "halves"), w)
    with pytest.raises(ValueError, match="gate_up must be one of halves, pairs, got 'mixed'"):
        gate_up_weight(w, "mixed")


def test_layer1_runs_four_stages_where_its_k_is_short_unless_told():
    assert FusedConfig().layer1_stages(1408) == 4  # Qwen2-MoE's FFN width
    assert FusedConfig().layer1_stages(14336) == 3  # Mixtral's: layer0's depth
    assert FusedConfig(num_stages=2).layer1_stages(14336) == 2
    assert FusedConfig(num_stages1=3).layer1_stages(1408) == 3
    # other tiles, K steps or depths than the one measured keep their own (128-deep K at 4 stages would not fit)
    assert FusedConfig(num_stages=2, block_k=128).layer1_stages(1408) == 2
    assert FusedConfig(block_m=64).layer1_stages(1408) == 3
