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


def test_neighbours_change_one_knob_to_a_legal_value(enumerated):
    *_, space, _ = enumerated
    point = {"tile": "128x128", "comm_blocks0": 1, "comm_blocks1": 16, "row_order": "local-first", "n_splits": 2}
    found = space.neighbours(point)
    assert found[0]["row_order"] == "source-order"  # the other row order first, then tiles, splits, blocks
    legal = list(space.points())
    for p in found:
        assert p in legal and sum(p[k] != point[k] for k in point) == 1
    # the block counts step by one inside [1, max]: 1 - 1 and 16 + 1 are out of the space
    assert {(p["comm_blocks0"], p["comm_blocks1"]) for p in found} == {(1, 16), (2, 16), (1, 15)}
    assert len(found) == 1 + 1 + 2 + 2


def test_the_last_trials_polish_the_best_point(enumerated):
    from comet_dse.search.study import POLISH_BATCH, enqueue_polish, polish_trials

    hw, workload, routing, space, _ = enumerated
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = 16  # polish_trials(16) = 4: TPE first, then the best point's neighbours
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    objective = Objective(workload, hw, routing, space, ("latency",), budget)
    study.optimize(objective, n_trials=budget - polish_trials(budget) - 1)
    enqueue_polish(study, space, budget)
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # not yet: one TPE trial is left
    study.optimize(objective, n_trials=1)
    best = study.best_trial.params
    enqueue_polish(study, space, budget)
    waiting = [t.system_attrs["fixed_params"] for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,))]
    tried = [t.params for t in study.trials if t.state != optuna.trial.TrialState.WAITING]
    assert waiting == [p for p in space.neighbours(best) if p not in tried][:POLISH_BATCH]
    enqueue_polish(study, space, budget)  # a batch is queued: nothing more until it has run
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == POLISH_BATCH
