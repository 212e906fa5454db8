"""benchmarks/copy_engine_trace.py's reading of a traced copy-engine forward (the GPU part runs on the device only)."""

from __future__ import annotations


def test_host_steps_and_gpu_spans_from_the_first_kernel(load_script):
    trace = load_script("copy_engine_trace")

    def x(cat: str, name: str, ts: float, dur: float) -> dict:
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}
    events = [
        x("kernel", "ncclDevKernel_AllReduce_Sum_f32", 90.0, 5.0),  # the line-up's, queued behind the spin: left out
        x("user_annotation", "forward", 100.0, 400.0),
        x("kernel", "count_kernel", 110.0, 2.0),
        x("user_annotation", "copy-engine dispatch", 105.0, 60.0),
        x("gpu_memcpy", "Memcpy PtoP (Device -> Device)", 170.0, 30.0),
        x("user_annotation", "launch layer0", 165.0, 40.0),
        x("kernel", "layer0_kernel", 205.0, 100.0),
        x("user_annotation", "launch layer1", 205.0, 45.0),
        x("kernel", "layer1_kernel", 305.0, 50.0),
        x("kernel", "barrier_kernel", 120.0, 1.0),
        x("kernel", "barrier_kernel", 380.0, 2.0),  # the last one: after layer1, waiting for the host's launch
        x("kernel", "combine_kernel", 420.0, 10.0),
        {"ph": "i", "name": "instant", "ts": 0.0},
    ]
    out = trace.read_trace(events)
    assert out["host forward start"] == -10.0 and out["host forward end"] == 390.0
    assert out["host copy-engine dispatch end"] == 55.0 and out["host launch layer0 end"] == 95.0
    assert out["host launch layer1 end"] == 140.0
    assert (out["gpu layer0_kernel start"], out["gpu layer0_kernel end"]) == (95.0, 195.0)
    assert (out["gpu barrier_kernel start"], out["gpu layer1_kernel end"]) == (270.0, 245.0)
    assert (out["gpu copies start"], out["gpu copies end"]) == (60.0, 90.0)
    assert out["gpu end"] == 320.0 and out["gpu combine_kernel start"] == 310.0
