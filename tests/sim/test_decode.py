"""Small batches (decode, 1 ... 256 tokens per GPU): where latencies, not bandwidth, set the layer's time."""

from __future__ import annotations

from dataclasses import replace

import pytest
from comet_dse.sim import simulate

from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import MODEL_PRESETS
from comet_dse.workload import Workload

DECODE_TOKENS = (1, 2, 8, 32, 128, 256)
H800 = HARDWARE_PRESETS["h800"]
# everything but the links free: what is left of a layer is its latency chain
LINKS_ONLY = replace(H800, gemm_tflops=1e9, hbm_GBps=1e12, kernel_launch_us=0.0, host_sync_us=0.0)


@pytest.mark.parametrize("schedule", ["sequential", "chunked", "comet"])
@pytest.mark.parametrize("ep", [8, 16])  # one node; two nodes (8 GPUs each): the NIC's latency
def test_latency_is_never_below_the_link_latency_chain(schedule, ep):
    between_nodes = ep > H800.gpus_per_node
    if schedule == "comet":  # dispatch and combine each cross a link at least once
        chain_us = 2 * (H800.nic_latency_us if between_nodes else H800.link_latency_us)
    else:  # two collectives, each its fixed latency (the NIC's on top between nodes)
        chain_us = 2 * (H800.collective_latency_us + (H800.nic_latency_us if between_nodes else 0.0))
    for tokens in DECODE_TOKENS:
        r = simulate(Workload(MODEL_PRESETS["qwen2-moe-2.7b"], tokens, ep), LINKS_ONLY, schedule, record=False)
        assert r.latency_us >= chain_us, (tokens, r.latency_us, chain_us)


@pytest.mark.parametrize("schedule", [
    "sequential",
    pytest.param("comet", marks=pytest.mark.xfail(strict=True, reason=(
        "a cost-model quirk: at 256 tokens the GEMMs alone come out faster than at 128 (the shared expert's "
        "second row tile spreads its weight streaming over more SMs: comet's compute alone 155.1 -> 152.4 us), "
        "and since concurrent peers the copies no longer hide it (167.9 -> 166.1 us)"))),
])
def test_latency_never_falls_as_tokens_grow(schedule):
    latencies = [simulate(Workload(MODEL_PRESETS["qwen2-moe-2.7b"], tokens, 8), H800, schedule, record=False).latency_us
                 for tokens in DECODE_TOKENS]
    assert latencies == sorted(latencies)  # more tokens touch more experts' weights and move more rows


def test_comet_exposed_communication_never_falls_as_tokens_grow():
    results = [simulate(Workload(MODEL_PRESETS["qwen2-moe-2.7b"], tokens, 8), H800, "comet", record=False)
               for tokens in DECODE_TOKENS]
    exposed = [r.latency_us - r.compute_alone_us for r in results]
    assert exposed == sorted(exposed)  # more tokens move more rows
