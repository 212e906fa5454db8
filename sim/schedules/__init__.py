"""The schedules, one module each, behind the `Schedule` interface."""

from comet_dse.sim.schedules.base import Schedule
from comet_dse.sim.schedules.chunked import Chunked
from comet_dse.sim.schedules.comet import Comet
from comet_dse.sim.schedules.sequential import Sequential

SCHEDULES: dict[str, type[Schedule]] = {s.name: s for s in (Sequential, Chunked, Comet)}

__all__ = ["SCHEDULES", "Chunked", "Comet", "Schedule", "Sequential"]
