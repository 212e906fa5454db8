"""What happened when: slices (rank, role, name, start, end) and counters, in nanoseconds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Slice:
    rank: int
    role: str  # one track per role: "layer", "compute", "comm0", "comm1", "stream", "host"
    name: str
    start_ns: float
    end_ns: float
    args: dict = field(default_factory=dict, compare=False)


@dataclass
class Counter:
    rank: int
    name: str
    times_ns: np.ndarray
    values: np.ndarray


@dataclass
class Timeline:
    slices: list[Slice] = field(default_factory=list)
    counters: list[Counter] = field(default_factory=list)

    def add(self, rank: int, role: str, name: str, start_ns: float, end_ns: float, **args) -> None:
        self.slices.append(Slice(rank, role, name, float(start_ns), float(end_ns), args))

    def add_busy_counter(self, rank: int, name: str, starts: np.ndarray, ends: np.ndarray, max_points: int = 400) -> None:
        """Number of busy compute blocks over time, from tile start/end times (downsampled)."""
        if len(starts) == 0:
            return
        times = np.concatenate([starts, ends])
        steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
        order = np.lexsort((steps, times))  # at equal times, ends (-1) before starts (+1)
        times, level = times[order], np.cumsum(steps[order])
        keep = np.r_[times[1:] != times[:-1], True]  # last value at each distinct time
        times, level = times[keep], level[keep]
        if len(times) > max_points:
            pick = np.unique(np.linspace(0, len(times) - 1, max_points).astype(int))
            times, level = times[pick], level[pick]
        self.counters.append(Counter(rank, name, times, level))
