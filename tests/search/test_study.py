"""A study's identity: every input that changes its answer changes its digest, nothing else does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import optuna
import pytest
from comet_dse.search import study as study_module
from comet_dse.search.study import TuneSpec, load_or_create, superseded

from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import MODEL_PRESETS
from comet_dse.workload import Workload

MIXTRAL = MODEL_PRESETS["mixtral-8x7b"]
H800 = HARDWARE_PRESETS["h800"]


def make_spec(model=MIXTRAL, hardware=H800, ep: int = 8, tp: int = 1, routing: str = "uniform", seed: int = 0,
              objectives: tuple[str, ...] = ("latency",), model_name: str = "mixtral-8x7b") -> TuneSpec:
    workload = Workload(model, 1024, ep, tp, routing=routing, seed=seed)
    return TuneSpec(model_name, hardware, workload, 10, seed, objectives, "sqlite:///:memory:")


BASE = make_spec()

CHANGES = {
    "model ffn": make_spec(model=replace(MIXTRAL, ffn=7168)),
    "model hidden": make_spec(model=replace(MIXTRAL, hidden=2048)),
    "model experts": make_spec(model=replace(MIXTRAL, num_experts=16)),
    "model top-k": make_spec(model=replace(MIXTRAL, top_k=1)),
    "shared experts": make_spec(model=replace(MIXTRAL, shared_ffn=1024)),
    "hardware link": make_spec(hardware=replace(H800, link_GBps=20.0)),
    "hardware latency": make_spec(hardware=replace(H800, kernel_launch_us=5.0)),
    "ep": make_spec(ep=4),
    "tp": make_spec(tp=2),
    "routing": make_spec(routing="std:0.03"),
    "seed": make_spec(seed=1),
    "objectives": make_spec(objectives=("latency", "comm_sms")),
}


@pytest.mark.parametrize("changed", CHANGES.values(), ids=CHANGES.keys())
def test_every_input_that_changes_the_answer_changes_the_digest(changed):
    assert changed.identity(1024).digest != BASE.identity(1024).digest


def test_the_token_bucket_and_the_search_space_are_inputs(monkeypatch):
    assert BASE.identity(1024).digest != BASE.identity(2048).digest
    digest = BASE.identity(1024).digest
    monkeypatch.setattr(study_module, "CometSpace", replace_space(max_comm_blocks=32))
    assert BASE.identity(1024).digest != digest


def replace_space(**changes):
    """CometSpace with some legal values changed, as a later release might offer."""
    real = study_module.CometSpace

    class Space(real):
        @classmethod
        def for_workload(cls, workload, hardware, max_comm_blocks=64):
            return replace(real.for_workload(workload, hardware), **changes)

    return Space


def test_the_cost_model_version_is_an_input(monkeypatch):
    digest = BASE.identity(1024).digest
    monkeypatch.setattr(study_module, "COST_MODEL_VERSION", study_module.COST_MODEL_VERSION + 1)
    assert BASE.identity(1024).digest != digest


def test_names_sources_and_unused_fields_are_not_inputs():
    renamed = make_spec(model=replace(MIXTRAL, name="my-mixtral", source="elsewhere", num_layers=2),
                        hardware=replace(H800, name="lab", sources={}))
    assert renamed.identity(1024).digest == BASE.identity(1024).digest
    # a profile JSON's integer 154 and a preset's 154.0 are one figure
    assert make_spec(hardware=replace(H800, link_GBps=154)).identity(1024).digest == BASE.identity(1024).digest


def test_a_trace_routing_is_known_by_its_content(tmp_path):
    path = tmp_path / "trace.npy"
    np.save(path, np.zeros((64, 2), dtype=np.int64))
    before = make_spec(routing=f"trace:{path}").identity(1024)
    np.save(path, np.ones((64, 2), dtype=np.int64))
    after = make_spec(routing=f"trace:{path}").identity(1024)
    assert before.prefix == after.prefix and before.digest != after.digest


def test_the_name_is_the_readable_prefix_and_the_digest():
    identity = BASE.identity(4096)
    assert identity.prefix == "mixtral-8x7b-h800-ep8-tp1-tokens4096"
    assert identity.name == f"{identity.prefix}-{identity.digest}" and len(identity.digest) == 10
    assert identity.inputs["hardware"]["link_GBps"] == 154.0 and identity.inputs["tokens"] == 4096


def test_a_study_records_its_inputs_and_a_changed_one_is_reported():
    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    old = load_or_create(BASE, storage, 1024)
    assert old.user_attrs["inputs"] == BASE.identity(1024).inputs
    assert old.user_attrs["digest"] == BASE.identity(1024).digest
    assert superseded(BASE, storage, [1024]) == {}  # its own study: nothing changed
    slower = make_spec(hardware=replace(H800, link_GBps=20.0))
    assert superseded(slower, storage, [1024, 2048]) == {1024: old.study_name}
    load_or_create(slower, storage, 1024)
    assert superseded(slower, storage, [1024]) == {}  # resumed, not new
