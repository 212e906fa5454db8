"""Ctrl-C raises only inside a trial's simulation; elsewhere (the objective's own storage calls, Optuna's
bookkeeping) it is noted and raised at the next safe point. Landing in the storage it had left a trial
RUNNING under load (2 of 40 runs of test_tune_feedback's Ctrl-C test with two busy cores), and once the
run did not end within 60 s of the signal (a connection left mid-transaction holds SQLite's lock)."""

import optuna
import pytest
from comet_dse.search import interrupt as interrupt_module
from comet_dse.search import objective as objective_module
from comet_dse.search.interrupt import INTERRUPTED, interrupt, interruptible, raise_if_interrupted
from comet_dse.search.objective import Objective
from comet_dse.search.space import CometSpace
from optuna.trial import TrialState

from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import MODEL_PRESETS
from comet_dse.routing import make_routing
from comet_dse.workload import Workload


@pytest.fixture(autouse=True)
def clear():
    INTERRUPTED.clear()
    yield
    INTERRUPTED.clear()


def test_outside_a_simulation_ctrl_c_is_noted_and_raised_at_the_next_safe_point():
    interrupt()  # as the signal handler: in bookkeeping, nothing raised here
    assert INTERRUPTED.is_set()
    with pytest.raises(KeyboardInterrupt):
        raise_if_interrupted()


def test_inside_a_simulation_ctrl_c_raises_at_once_and_a_noted_one_stops_the_next_before_it_runs():
    ran = []
    with pytest.raises(KeyboardInterrupt):
        with interruptible():
            ran.append(0)
            interrupt()  # the signal arriving mid-simulation
            ran.append(1)
    assert ran == [0] and interrupt_module._IN_SIMULATION == [False]
    with pytest.raises(KeyboardInterrupt):
        with interruptible():
            ran.append(2)
    assert ran == [0]


def _objective_and_study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workload = Workload(MODEL_PRESETS["qwen2-moe-2.7b"], 256, 4)
    space = CometSpace(max_comm_blocks=8, tiles=("128x128",), n_splits=(1,))
    hw = HARDWARE_PRESETS["h800"]
    return Objective(workload, hw, make_routing(workload), space, ("latency",), 10), optuna.create_study()


def test_ctrl_c_in_the_objectives_storage_calls_does_not_raise_there(monkeypatch):
    objective, study = _objective_and_study()
    storage = study._storage
    set_param, landed = storage.set_trial_param, []

    def set_param_then_signal(*args, **kwargs):
        set_param(*args, **kwargs)
        interrupt()  # the signal arriving while the storage records a suggestion
        landed.append(True)  # not cut short: the storage call returns whole

    monkeypatch.setattr(storage, "set_trial_param", set_param_then_signal)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=3)
    assert landed and objective.simulations == 0  # raised at the simulation's start, before it ran
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert len(study.trials[0].params) == len(landed)  # every suggestion stored


def test_ctrl_c_in_the_simulation_raises_there(monkeypatch):
    objective, study = _objective_and_study()
    after = []

    def simulate_then_signal(*args, **kwargs):
        interrupt()
        after.append(True)

    monkeypatch.setattr(objective_module, "simulate", simulate_then_signal)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=3)
    assert after == [] and [t.state for t in study.trials] == [TrialState.FAIL]
