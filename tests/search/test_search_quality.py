"""The study finds what enumeration finds: within 1% of the optimum in 60 trials."""

from __future__ import annotations

import optuna
import pytest
from comet_dse.search.objective import Objective
from comet_dse.search.space import CometSpace, comet_from_params
from comet_dse.search.study import TuneSpec, make_sampler
from comet_dse.sim import simulate

from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import MODEL_PRESETS
from comet_dse.routing import make_routing
from comet_dse.workload import Workload

TRIAL_BUDGET = 60  # documented in the README


@pytest.fixture(scope="module")
def enumerated():
    hw = HARDWARE_PRESETS["h800"]
    workload = Workload(MODEL_PRESETS["qwen2-moe-2.7b"], 512, 4)
    routing = make_routing(workload)
    space = CometSpace(max_comm_blocks=16, tiles=("128x128", "64x128"), n_splits=(1, 2, 4))  # 3072 points
    optimum = min(simulate(workload, hw, comet_from_params(p), routing=routing, record=False).latency_us for p in space.points())
    return hw, workload, routing, space, optimum


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_study_reaches_the_enumerated_optimum(enumerated, seed):
    hw, workload, routing, space, optimum = enumerated
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = TuneSpec("qwen2-moe-2.7b", hw, workload, TRIAL_BUDGET, seed, ("latency",), "sqlite:///:memory:")
    study = optuna.create_study(sampler=make_sampler(spec, 0, 0))
    for point in space.warm_start():
        study.enqueue_trial(point)
    objective = Objective(workload, hw, routing, space, ("latency",), TRIAL_BUDGET)
    study.optimize(objective, n_trials=TRIAL_BUDGET)
    assert len(study.trials) == TRIAL_BUDGET
    assert study.best_value <= optimum * 1.01
    assert objective.simulations <= TRIAL_BUDGET  # repeats came from the cache


def test_repeated_configurations_come_from_the_cache(enumerated):
    hw, workload, routing, space, _ = enumerated
    study = optuna.create_study()
    point = space.warm_start()[0]
    for _ in range(3):
        study.enqueue_trial(point)
    objective = Objective(workload, hw, routing, space, ("latency",), 10)
    study.optimize(objective, n_trials=3)
    assert objective.simulations == 1
    assert [t.user_attrs["cached"] for t in study.trials] == [False, True, True]
    assert len({t.value for t in study.trials}) == 1
