"""One contract every schedule must keep (Optuna's habit: one suite, parametrized over all)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from comet_dse.sim import Chunked, Comet, Sequential, simulate
from comet_dse.sim.schedules.base import Schedule

from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import MODEL_PRESETS
from comet_dse.workload import Workload
from tests.conftest import infinite_links

SCHEDULES = [Sequential(), Chunked(chunks=4), Comet(comm_blocks0=16, comm_blocks1=16)]
WORKLOADS = [
    Workload(MODEL_PRESETS["mixtral-8x7b"], 2048, 8),
    Workload(MODEL_PRESETS["qwen2-moe-2.7b"], 4096, 8, routing="std:0.01", seed=3),
    Workload(MODEL_PRESETS["phi-3.5-moe"], 1024, 4, tp=2),
]
IDS = [s.name for s in SCHEDULES]


def max_tile_us(workload: Workload, hw, schedule: Schedule) -> float:
    m = workload.model
    k = max(m.hidden, workload.ffn_per_rank, m.shared_ffn)
    return hw.gemm_tile_ns(schedule.block_m, schedule.block_n, k, 1, 1, workload.dtype_bytes) / 1e3


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=["mixtral", "qwen-skewed", "phi-tp2"])
def test_infinite_links_leave_only_compute(schedule, workload):
    hw = infinite_links(HARDWARE_PRESETS["h800"])
    r = simulate(workload, hw, schedule)
    # with free links, what is left is the GEMMs and the listed passes, up to one tile's rounding
    # (comet's first tiles still wait for the local rows' HBM copy)
    assert r.latency_us - sum(r.overheads_us.values()) == pytest.approx(r.compute_alone_us, abs=max_tile_us(workload, hw, schedule) + 0.01)
    assert r.latency_us >= r.compute_alone_us


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=["mixtral", "qwen-skewed", "phi-tp2"])
def test_metric_invariants(schedule, workload):
    hw = HARDWARE_PRESETS["h800"]
    r = simulate(workload, hw, schedule)
    assert 0.0 <= r.hidden_comm_fraction <= 1.0
    assert r.latency_us == max(p.latency_us for p in r.per_rank)
    assert r.layer0_us + r.layer1_us == pytest.approx(r.latency_us, abs=0.002)
    assert r.latency_us + 0.001 >= max(r.compute_alone_us, r.comm_alone_us)
    assert r.bubble_us >= 0
    assert len(r.per_rank) == workload.world


@pytest.mark.parametrize("workload", WORKLOADS, ids=["mixtral", "qwen-skewed", "phi-tp2"])
def test_sequential_hides_nothing_and_its_collectives_never_beat_the_links(workload):
    r = simulate(workload, HARDWARE_PRESETS["h800"], Sequential())
    # exposed = latency - compute - overheads: here the two collectives, which move the same bytes as the
    # links' floor (comm alone) at NCCL's efficiency; ranks differ a little, hence the 1%
    assert r.exposed_comm_us >= 0.99 * r.comm_alone_us
    assert r.hidden_comm_fraction < 0.02


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_every_schedule_reports_the_same_communication_alone(schedule):
    workload = WORKLOADS[0]
    hw = HARDWARE_PRESETS["h800"]
    assert simulate(workload, hw, schedule).comm_alone_us == simulate(workload, hw, Sequential()).comm_alone_us


def test_a_communication_bound_run_says_so_and_keeps_its_hidden_share():
    """Slow links: communication outlasts compute; comet still hides part of what compute could cover."""
    from dataclasses import replace

    workload = WORKLOADS[0]
    hw = replace(HARDWARE_PRESETS["h800"], link_GBps=HARDWARE_PRESETS["h800"].link_GBps / 8)
    comet = simulate(workload, hw, Comet())
    assert comet.comm_bound and comet.comm_alone_us > comet.compute_alone_us
    assert comet.hidden_comm_fraction > 0.3
    fast = simulate(workload, HARDWARE_PRESETS["h800"], Comet())
    assert not fast.comm_bound


@pytest.mark.parametrize("workload", WORKLOADS, ids=["mixtral", "qwen-skewed", "phi-tp2"])
def test_comet_is_bounded_by_its_two_halves(workload):
    hw = HARDWARE_PRESETS["h800"]
    for blocks in (4, 16, 40):
        r = simulate(workload, hw, Comet(comm_blocks0=blocks, comm_blocks1=blocks))
        alone_compute = simulate(workload, infinite_links(hw), Comet(comm_blocks0=blocks, comm_blocks1=blocks))
        assert r.latency_us + 0.001 >= max(r.compute_alone_us, r.comm_alone_us)
        assert r.compute_alone_us == alone_compute.compute_alone_us  # compute on SMs - n_comm, links aside
        assert r.latency_us >= alone_compute.latency_us


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_more_bandwidth_or_sms_is_never_slower(schedule):
    workload = WORKLOADS[0]
    hw = HARDWARE_PRESETS["h800"]
    base = simulate(workload, hw, schedule).latency_us

    def more_sms(extra: int, **changes):  # SMs of the same kind: the GEMM rate grows with them
        return replace(hw, sms=hw.sms + extra, gemm_tflops=hw.gemm_tflops * (hw.sms + extra) / hw.sms, **changes)

    for faster in (replace(hw, link_GBps=hw.link_GBps * 2), replace(hw, comm_block_GBps=hw.comm_block_GBps * 2),
                   replace(hw, nic_GBps=hw.nic_GBps * 2), more_sms(12), more_sms(1, link_GBps=hw.link_GBps * 1.3)):
        assert simulate(workload, faster, schedule).latency_us <= base + 1e-6, faster


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_same_seed_same_json_other_seed_other_routing(schedule):
    hw = HARDWARE_PRESETS["h800"]
    workload = Workload(MODEL_PRESETS["qwen2-moe-2.7b"], 1024, 8, routing="zipf:1.0", seed=7)
    first = json.dumps(simulate(workload, hw, schedule).to_dict(), sort_keys=True)
    again = json.dumps(simulate(workload, hw, schedule).to_dict(), sort_keys=True)
    other = json.dumps(simulate(replace(workload, seed=8), hw, schedule).to_dict(), sort_keys=True)
    assert first == again
    assert first != other
