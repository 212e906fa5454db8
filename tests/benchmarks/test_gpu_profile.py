"""benchmarks/gpu_profile.py's reading of a traced graph replay (the GPU part runs on the device only)."""

from __future__ import annotations

import pytest


def test_a_replays_span_busy_time_and_gaps(load_script):
    profile = load_script("gpu_profile")
    kernels = [(0.0, 10.0, "layer0_kernel"), (12.0, 20.0, "barrier_kernel"), (15.0, 18.0, "elementwise_kernel"),
               (30.0, 35.0, "layer1_kernel"), (31.0, 33.0, "combine_kernel")]
    t = profile.kernel_timeline(kernels)
    assert t["span_us"] == 35.0 and t["kernels"] == 5
    # at least one kernel running: 0-10, 12-20 (the elementwise kernel inside it), 30-35
    assert t["busy_us"] == 23.0 and t["idle_us"] == 12.0
    # the largest gap first, named by the kernel the GPU was busy with until then (the barrier, not the shorter
    # elementwise kernel that started after it) and the one after
    assert t["largest_gaps"] == [{"us": 10.0, "after": "barrier_kernel", "before": "layer1_kernel"},
                                 {"us": 2.0, "after": "layer0_kernel", "before": "barrier_kernel"}]
    assert t["by_category"] == pytest.approx({"layer0": 10.0, "barrier": 8.0, "plan and packing (torch ops)": 3.0,
                                              "layer1": 5.0, "combine": 2.0})
