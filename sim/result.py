"""The metrics of one schedule's run, in microseconds, for the slowest rank and per rank."""

from __future__ import annotations

from dataclasses import dataclass, field

from comet_dse.sim.schedules.base import Outcome
from comet_dse.sim.timeline import Timeline


def _us(ns: float) -> float:
    return round(float(ns) / 1e3, 3)


@dataclass
class RankResult:
    rank: int
    latency_us: float
    layer0_us: float
    layer1_us: float
    compute_alone_us: float
    bubble_us: float


@dataclass
class Result:
    schedule: str
    latency_us: float  # the slowest rank's end of the layer
    layer0_us: float
    layer1_us: float
    compute_alone_us: float  # GEMM kernels alone (all rows present, this schedule's blocks), slowest rank
    comm_alone_us: float  # dispatch + combine bytes alone at the links' full rate, every schedule alike (base.comm_alone_ns)
    exposed_comm_us: float  # latency - compute alone - listed overheads (>= 0)
    # of the communication that compute could hide (min(comm, compute) alone), the share hidden: 1 - (exposed
    # beyond what no overlap can hide) / that, in [0, 1]; with comm_bound the rest is exposed whatever the schedule
    hidden_comm_fraction: float
    comm_bound: bool  # the communication alone takes longer than the compute alone
    bubble_us: float  # mean idle time of a compute block on the slowest rank
    overheads_us: dict[str, float]
    params: dict
    per_rank: list[RankResult]
    events: int = 0
    network: str = "flows"  # the engine that priced comet's copies (sim/api.network_engine)
    # the fused layer's kernels alone, launch to end, slowest rank each (comet; empty otherwise): not in
    # to_dict, what `comet-dse validate` compares with bench's per-layer timings
    kernels_us: dict[str, float] = field(default_factory=dict)
    gemm_scale: float = 1.0  # the fused GEMM tiles' time over the power cap's (simulate after_gap): not in to_dict
    timeline: Timeline = field(default_factory=Timeline, repr=False)

    def to_dict(self) -> dict:
        return {
            "latency_us": self.latency_us,
            "layer0_us": self.layer0_us,
            "layer1_us": self.layer1_us,
            "compute_alone_us": self.compute_alone_us,
            "comm_alone_us": self.comm_alone_us,
            "exposed_comm_us": self.exposed_comm_us,
            "hidden_comm_fraction": self.hidden_comm_fraction,
            "comm_bound": self.comm_bound,
            "bubble_us": self.bubble_us,
            "overheads_us": self.overheads_us,
            "params": self.params,
            "network": self.network,
            "per_rank": [vars(r) for r in self.per_rank],
        }


def summarize(schedule: str, params: dict, outcome: Outcome, comm_ns: float, timeline: Timeline, events: int,
              network: str = "flows") -> Result:
    per_rank = [
        RankResult(
            rank=i,
            latency_us=_us(r.end_ns),
            layer0_us=_us(r.layer0_end_ns),
            layer1_us=_us(r.end_ns - r.layer0_end_ns),
            compute_alone_us=_us(r.compute_alone_ns),
            bubble_us=_us(r.bubble_ns),
        )
        for i, r in enumerate(outcome.ranks)
    ]
    slowest = max(range(len(outcome.ranks)), key=lambda i: (outcome.ranks[i].end_ns, -i))
    worst = outcome.ranks[slowest]
    overheads = sum(worst.overheads_ns.values())
    compute_alone = max(r.compute_alone_ns for r in outcome.ranks)
    exposed = max(0.0, worst.end_ns - compute_alone - overheads)
    hideable = min(comm_ns, compute_alone)  # perfect overlap hides this much and exposes the rest
    unavoidable = comm_ns - hideable
    hidden = 1.0 if hideable <= 0 else min(1.0, max(0.0, 1.0 - (exposed - unavoidable) / hideable))
    return Result(
        schedule=schedule,
        latency_us=_us(worst.end_ns),
        layer0_us=_us(worst.layer0_end_ns),
        layer1_us=_us(worst.end_ns - worst.layer0_end_ns),
        compute_alone_us=_us(compute_alone),
        comm_alone_us=_us(comm_ns),
        exposed_comm_us=_us(exposed),
        hidden_comm_fraction=round(float(hidden), 6),
        comm_bound=bool(comm_ns > compute_alone),
        bubble_us=_us(worst.bubble_ns),
        overheads_us={k: _us(v) for k, v in worst.overheads_ns.items()},
        params={"schedule": schedule, "slowest_rank": slowest, **params},
        per_rank=per_rank,
        events=events,
        network=network,
        timeline=timeline,
        kernels_us={k: _us(max(r.kernels_ns[k] for r in outcome.ranks)) for k in worst.kernels_ns},
    )
