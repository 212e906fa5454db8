"""`simulate(workload, hardware, schedule) -> Result`: the Python face of `comet-dse simulate`."""

from __future__ import annotations

from dataclasses import replace

from comet_dse.sim.result import Result, summarize
from comet_dse.sim.runtime import SimContext
from comet_dse.sim.schedules import SCHEDULES
from comet_dse.sim.schedules.base import Schedule, comm_alone_ns, default_tile, parse_tile
from comet_dse.sim.schedules.comet import Comet, default_n_splits

from comet_dse.choices import EXPERT_GEMMS, FLOWS_UP_TO_GPUS, NETWORK_ENGINES
from comet_dse.errors import UserError
from comet_dse.hardware import HardwareProfile
from comet_dse.routing import Routing, make_routing, virtual_experts
from comet_dse.workload import Workload


def default_schedule(name: str, hidden: int) -> Schedule:
    """A schedule at its default knobs, with the tile (and comet's splits) made legal for H."""
    if name not in SCHEDULES:
        raise UserError("--schedule", f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)} or all")
    block_m, block_n = parse_tile(default_tile(hidden))
    knobs = {"block_m": block_m, "block_n": block_n}
    if name == Comet.name:
        knobs["n_splits"] = default_n_splits(hidden, block_n)
    return SCHEDULES[name](**knobs)


def as_schedule(schedule: str | Schedule, hidden: int) -> Schedule:
    return schedule if isinstance(schedule, Schedule) else default_schedule(schedule, hidden)


def simulate(workload: Workload, hardware: HardwareProfile, schedule: str | Schedule = "comet",
             routing: Routing | None = None, record: bool = True, network: str = "auto",
             after_gap: bool = False) -> Result:
    """Simulate one MoE layer forward on all ranks under one schedule.

    `routing` may be passed to share one drawn routing between schedules; by default it
    is drawn from the workload's routing spec and seed. `record=False` skips the timeline.
    `network` prices comet's copies (NETWORK_ENGINES): "auto" is "flows" up to FLOWS_UP_TO_GPUS GPUs, else "fluid".
    `after_gap`: the forward as `comet-dse bench` times it, started after a host barrier and a device spin rather than
    inside a model's forward at the power cap: comet's GEMM tiles at the profile's power_state table read at the
    forward's length at the cap (one run more; MeasuredTables.after_gap). No effect without that table.
    """
    sched = as_schedule(schedule, workload.model.hidden)
    sched.validate(workload, hardware)
    routing = routing if routing is not None else make_routing(workload)
    gemm_scale = 1.0
    if after_gap and isinstance(sched, Comet) and hardware.measured is not None \
            and hardware.measured.power_after_gap is not None:
        at_cap = simulate(workload, hardware, sched, routing, record=False, network=network)
        gemm_scale = hardware.measured.after_gap(at_cap.latency_us)
    if getattr(sched, "expert_gemm", None) == "best" and hardware.measured is not None:
        # B0's and B1's expert GEMM as a user keeps it: the faster of the two for this schedule, on one routing
        if not hardware.measured.has_impl("loop"):
            return simulate(workload, hardware, replace(sched, expert_gemm="grouped"), routing, record, network)
        return min((simulate(workload, hardware, replace(sched, expert_gemm=g), routing, record, network)
                    for g in EXPERT_GEMMS), key=lambda result: result.latency_us)
    if isinstance(sched, Comet) and sched.tp_dispatch == "rows" and workload.tp > 1:
        # a row per (token, expert) to each TP rank: the EP layer over the virtual experts, on the same draw
        workload, routing = virtual_experts(workload, routing)
    ctx = SimContext(workload, hardware, routing, record=record, engine=network_engine(network, workload.world),
                     gemm_scale=gemm_scale)
    outcome = sched.run(ctx)
    result = summarize(sched.name, sched.params(), outcome, comm_alone_ns(ctx), ctx.timeline, ctx.env.events_scheduled,
                       ctx.engine)
    return replace(result, gemm_scale=gemm_scale) if gemm_scale != 1.0 else result


def network_engine(network: str, world: int) -> str:
    """The engine `network` names at `world` GPUs: "auto" resolved (NETWORK_ENGINES)."""
    if network not in NETWORK_ENGINES:
        raise UserError("--network", f"must be one of {', '.join(NETWORK_ENGINES)}, got {network!r}")
    if network == "auto":
        return "flows" if world <= FLOWS_UP_TO_GPUS else "fluid"
    return network
