"""The discrete-event simulator of one MoE layer on every rank (SimPy)."""

from comet_dse.sim.api import simulate
from comet_dse.sim.result import RankResult, Result
from comet_dse.sim.schedules import SCHEDULES, Chunked, Comet, Schedule, Sequential

__all__ = ["SCHEDULES", "Chunked", "Comet", "RankResult", "Result", "Schedule", "Sequential", "simulate"]
