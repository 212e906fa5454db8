"""`simulate(workload, hardware, schedule) -> Result`: the Python face of `comet-dse simulate`."""

from __future__ import annotations

from comet_dse.sim.result import Result, summarize
from comet_dse.sim.runtime import SimContext
from comet_dse.sim.schedules import SCHEDULES
from comet_dse.sim.schedules.base import Schedule

from comet_dse.errors import UserError
from comet_dse.hardware import HardwareProfile
from comet_dse.routing import Routing, make_routing
from comet_dse.workload import Workload


def as_schedule(schedule: str | Schedule) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    if schedule not in SCHEDULES:
        raise UserError("--schedule", f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)} or all")
    return SCHEDULES[schedule]()


def simulate(workload: Workload, hardware: HardwareProfile, schedule: str | Schedule = "comet",
             routing: Routing | None = None, record: bool = True) -> Result:
    """Simulate one MoE layer forward on all ranks under one schedule.

    `routing` may be passed to share one drawn routing between schedules; by default it
    is drawn from the workload's routing spec and seed. `record=False` skips the timeline.
    """
    sched = as_schedule(schedule)
    sched.validate(workload, hardware)
    routing = routing if routing is not None else make_routing(workload)
    ctx = SimContext(workload, hardware, routing, record=record)
    outcome = sched.run(ctx)
    return summarize(sched.name, sched.params(), outcome, ctx.timeline, ctx.env.events_scheduled)
