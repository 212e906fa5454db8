"""Median time of a GPU (CUDA events) or CPU (wall clock) callable, in microseconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_us(fn: Callable[[], object], runs: int = 20, warmup: int = 3, before_each: Callable[[], object] | None = None) -> float:
    """Warm up, then time `runs` calls (each after `before_each`, e.g. a barrier) and take the median."""
    for _ in range(warmup):
        fn()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        if before_each is not None:
            before_each()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)
