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


@pytest.mark.parametrize("schedule", ["sequential", "comet"])
def test_latency_never_falls_as_tokens_grow(schedule):
    results = [simulate(Workload(MODEL_PRESETS["qwen2-moe-2.7b"], tokens, 8), H800, schedule, record=False)
               for tokens in DECODE_TOKENS]
    exposed = [r.latency_us - r.compute_alone_us for r in results]
    assert exposed == sorted(exposed)  # more tokens move more rows
    # more tokens touch more experts' weights; the GEMMs alone may still get faster (at 256 tokens the shared
    # expert's second row tile spreads its weight streaming over twice the SMs), and the layer with them
    for fewer, more in zip(results, results[1:]):
        if more.compute_alone_us >= fewer.compute_alone_us:
            assert more.latency_us >= fewer.latency_us, (fewer.latency_us, more.latency_us)
