"""kernels/timing.py on the CPU: what the GPU-only timings fall back to where there is no GPU."""

import pytest
import torch

from comet_dse.kernels import timing


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback; on a GPU the graph path runs")
def test_sustained_timing_on_the_cpu_is_per_call(monkeypatch):
    seen = []
    monkeypatch.setattr(timing, "median_us", lambda fn, runs, warmup: seen.append((runs, warmup)) or 12.0)
    # fn makes 3 calls (calibrate's rotated inputs): the figure is per call
    assert timing.sustained_us(lambda: None, runs=5, calls=3) == pytest.approx(4.0)
    assert seen == [(5, 1)]
