"""One GPU: the comet schedule lays its tiles out as the kernels do there, and a profile calibrated on one GPU
prices one-GPU workloads only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from comet_dse.sim import Chunked, Comet, Sequential, simulate

from comet_dse.errors import UserError
from comet_dse.hardware import load_hardware
from comet_dse.models import MODEL_PRESETS
from comet_dse.routing import make_routing
from comet_dse.workload import Workload

HARDWARE = Path(__file__).resolve().parents[2] / "results" / "hardware"


@pytest.mark.parametrize("model, tokens", [("qwen2-moe-2.7b", 1024), ("mixtral-8x7b", 4096)])
def test_comet_on_one_gpu_runs_by_source_whatever_the_layout_asked(model, tokens):
    # merged tiles need a peer (FusedConfig.layout): on the H100 profile the merged default priced NaN before
    workload = Workload(MODEL_PRESETS[model], tokens, 1)
    hw, routing = load_hardware(HARDWARE / "h100-80gb-hbm3-x2.json"), make_routing(workload)
    merged, by_source = (simulate(workload, hw, Comet(comm_blocks0=8, comm_blocks1=8, tile_layout=layout),
                                  routing=routing, record=False).latency_us for layout in ("merged", "by-source"))
    assert math.isfinite(merged) and merged > 0
    assert merged == by_source


def test_a_one_gpu_profile_prices_one_gpu_workloads_and_refuses_more():
    hw = load_hardware(HARDWARE / "h200-x1-run147.json")  # calibrate --quick on one H200: no all-to-all table
    assert hw.measured.alltoall == {}
    one = Workload(MODEL_PRESETS["qwen2-moe-2.7b"], 1024, 1)
    for schedule in (Sequential(), Chunked(chunks=2), Comet(comm_blocks0=8, comm_blocks1=8)):
        latency = simulate(one, hw, schedule, routing=make_routing(one), record=False).latency_us
        assert math.isfinite(latency) and latency > 0, schedule
    two = Workload(MODEL_PRESETS["qwen2-moe-2.7b"], 1024, 2)
    with pytest.raises(UserError, match=r"hardware\.tables\.alltoall: not measured \(calibrated on one GPU"):
        simulate(two, hw, Sequential(), routing=make_routing(two), record=False)
