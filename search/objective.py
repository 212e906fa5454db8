"""The thin objective: trial -> configuration -> simulate() -> user attrs -> value(s).

Repeated configurations are answered from a cache instead of re-simulated: the cache is
filled from the study's completed trials (a resumed study, other workers) and from this
process's own runs.
"""

from __future__ import annotations

from dataclasses import replace

import optuna
from comet_dse.search.interrupt import interruptible, raise_if_interrupted
from comet_dse.search.space import CometSpace
from comet_dse.sim import simulate
from optuna.trial import TrialState

from comet_dse.hardware import HardwareProfile
from comet_dse.routing import Routing
from comet_dse.workload import Workload

OBJECTIVES = ("latency", "comm_sms")
ATTRS = ("latency_us", "layer0_us", "layer1_us", "compute_alone_us", "comm_alone_us", "hidden_comm_fraction", "bubble_us")


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


class Objective:
    def __init__(self, workload: Workload, hardware: HardwareProfile, routing: Routing, space: CometSpace,
                 objectives: tuple[str, ...], target_trials: int, tp_dispatch: str = "tokens") -> None:
        self.workload, self.hardware, self.routing, self.space = workload, hardware, routing, space
        self.tp_dispatch = tp_dispatch  # not searched: how comet moves rows under TP (sim Comet.tp_dispatch)
        self.objectives = objectives
        self.target_trials = target_trials
        self.cache: dict[tuple, dict] = {}
        self.simulations = 0

    def _learn(self, study: optuna.Study) -> None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if "latency_us" in t.user_attrs:
                self.cache.setdefault(_key(t.params), {k: t.user_attrs[k] for k in ATTRS})

    def values(self, attrs: dict, params: dict) -> float | tuple[float, ...]:
        out = []
        for name in self.objectives:
            out.append(attrs["latency_us"] if name == "latency" else float(max(params["comm_blocks0"], params["comm_blocks1"])))
        return out[0] if len(out) == 1 else tuple(out)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        raise_if_interrupted()  # noted in bookkeeping: this trial fails before it starts
        self._stop_at_target(trial)
        schedule = replace(self.space.suggest(trial), tp_dispatch=self.tp_dispatch)
        key = _key(trial.params)
        if key not in self.cache:
            self._learn(trial.study)
        attrs = self.cache.get(key)
        trial.set_user_attr("cached", attrs is not None)
        if attrs is None:
            with interruptible():  # Ctrl-C raises only here: every other line calls the storage
                result = simulate(self.workload, self.hardware, schedule, routing=self.routing, record=False)
            self.simulations += 1
            attrs = {k: getattr(result, k) for k in ATTRS}
            self.cache[key] = attrs
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        return self.values(attrs, trial.params)

    def _stop_at_target(self, trial: optuna.Trial) -> None:
        """With several workers on one study, end exactly at the target: a trial that would
        go past it (counting the others' trials in flight) is pruned and the worker stops."""
        study = trial.study
        others = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if sum(1 for t in others if t.number != trial.number) >= self.target_trials:
            trial.set_user_attr("pruned_because", "target number of trials reached")
            study.stop()
            raise optuna.TrialPruned()
