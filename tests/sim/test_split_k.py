"""The comet schedule's split-K of layer1's last round (FusedConfig.split_k), on run 134's measured 2x H200 profile:
Mixtral-8x7B at 1024 tokens per GPU, EP=2, the case the kernels' split-K was built for."""

from __future__ import annotations

from pathlib import Path

import pytest
from comet_dse.sim import Comet, simulate

from comet_dse.choices import layer1_pieces, tail_pieces
from comet_dse.errors import UserError
from comet_dse.hardware import load_hardware
from comet_dse.models import MODEL_PRESETS
from comet_dse.routing import make_routing
from comet_dse.workload import Workload

PROFILE = Path(__file__).resolve().parents[2] / "results" / "hardware" / "h200-x2-run134.json"


@pytest.fixture(scope="module")
def mixtral():
    workload = Workload(MODEL_PRESETS["mixtral-8x7b"], 1024, 2)
    return workload, load_hardware(PROFILE), make_routing(workload)


def test_pieces_follow_the_ffn_width_and_the_last_rounds_items():
    assert [layer1_pieces(k, 14336) for k in (1, 4, 16)] == [1, 4, 14]  # Mixtral: 224 K steps, 16 a piece at least
    assert [layer1_pieces(k, 1408) for k in (4, 16)] == [1, 1]  # Qwen2-MoE: 22 steps, never cut
    assert layer1_pieces(16, 6400) == 6 and layer1_pieces(3, 48, block_k=16, split_k_min=16) == 3
    assert [tail_pieces(256, 124, m) for m in (1, 4, 16)] == [1, 4, 15]
    assert tail_pieces(248, 124, 4) == 1 and tail_pieces(190, 124, 4) == 1


def test_split_k_shortens_layer1_by_the_cut_rounds_and_nothing_else(mixtral):
    workload, hw, routing = mixtral
    base = Comet(comm_blocks0=8, comm_blocks1=8)
    whole = simulate(workload, hw, base, routing=routing, record=False)
    cut = simulate(workload, hw, Comet(comm_blocks0=8, comm_blocks1=8, split_k=4), routing=routing, record=False)
    assert cut.layer0_us == whole.layer0_us  # layer0 is not cut
    # one of layer1's three rounds of ~150 us done in quarters, less the summing of four fp32 tiles
    assert 60 < whole.kernels_us["layer1"] - cut.kernels_us["layer1"] < 150
    assert cut.latency_us < whole.latency_us
    assert cut.params["split_k"] == 4 and "split_k" not in whole.params


def test_split_k_where_the_rounds_come_out_even_changes_nothing(mixtral):
    workload, hw, routing = mixtral
    # Qwen2-MoE's F = 1408 is never cut: any split_k simulates as 1
    qwen = Workload(MODEL_PRESETS["qwen2-moe-2.7b"], 1024, 2)
    qwen_routing = make_routing(qwen)
    one = simulate(qwen, hw, Comet(comm_blocks0=8, comm_blocks1=8), routing=qwen_routing, record=False)
    four = simulate(qwen, hw, Comet(comm_blocks0=8, comm_blocks1=8, split_k=4), routing=qwen_routing, record=False)
    assert four.latency_us == one.latency_us


@pytest.mark.parametrize("split_k", [0, 17, 2.5])
def test_a_split_k_out_of_range_is_refused(mixtral, split_k):
    workload, hw, _ = mixtral
    with pytest.raises(UserError, match=r"--split-k: must be an integer in \[1, 16\]"):
        simulate(workload, hw, Comet(split_k=split_k))
