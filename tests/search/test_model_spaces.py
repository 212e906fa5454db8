"""The search space for every MoE family transformers writes: legal values only, derived
from H, and the presets' spaces (hence their studies' digests) as before."""

from __future__ import annotations

import json
from dataclasses import asdict
from itertools import product

import optuna
import pytest
from comet_dse.search.objective import Objective
from comet_dse.search.space import CometSpace
from comet_dse.sim import Comet
from comet_dse.sim.schedules.base import parse_tile

from comet_dse.cli import main
from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import MODEL_PRESETS, load_hf_config
from comet_dse.plan import load_plan
from comet_dse.routing import make_routing
from comet_dse.workload import Workload
from tests.conftest import HF_CONFIGS, ep_for

H800 = HARDWARE_PRESETS["h800"]
FIXTURES = sorted(p.stem for p in HF_CONFIGS.glob("*.json"))
MEASURED_TILES = ("128x128", "128x256", "64x128", "256x128")


def fixture_workload(name: str, tokens: int = 256) -> Workload:
    model = load_hf_config(HF_CONFIGS / f"{name}.json")
    return Workload(model, tokens, ep_for(model.num_experts))


@pytest.mark.parametrize("preset, splits", [("mixtral-8x7b", (1, 2, 4, 8, 16)), ("qwen2-moe-2.7b", (1, 2, 4, 8)),
                                            ("phi-3.5-moe", (1, 2, 4, 8, 16)), ("deepseek-v3", (1, 2, 4, 7, 14))])
def test_preset_spaces_are_unchanged(preset, splits):
    space = CometSpace.for_workload(Workload(MODEL_PRESETS[preset], 1024, 8), H800)
    assert asdict(space) == {"max_comm_blocks": 64, "tiles": MEASURED_TILES, "row_orders": ("local-first", "source-order"),
                             "n_splits": splits}


def test_an_h_that_128_does_not_divide_gets_64_wide_tiles():
    space = CometSpace.for_workload(fixture_workload("gpt-oss-20b"), H800)  # H = 2880 = 45 x 64
    assert (space.tiles, space.n_splits) == (("128x64", "64x64", "256x64"), (1, 3, 5, 9, 15))


@pytest.mark.parametrize("name", FIXTURES)
def test_every_tile_and_split_in_the_space_is_legal(name):
    workload = fixture_workload(name)
    space = CometSpace.for_workload(workload, H800)
    assert space.tiles and space.n_splits and 1 in space.n_splits
    for tile, splits in product(space.tiles, space.n_splits):
        block_m, block_n = parse_tile(tile)
        assert workload.model.hidden % (splits * block_n) == 0  # whole tiles per split, as the fused kernel needs
        Comet(block_m=block_m, block_n=block_n, n_splits=splits, comm_blocks0=space.max_comm_blocks,
              comm_blocks1=space.max_comm_blocks).validate(workload, H800)


@pytest.mark.parametrize("name", FIXTURES)
def test_trials_through_the_objective_simulate(name):
    """The warm-start points and random ones, as a study would run them: no UserError."""
    workload = fixture_workload(name)
    space = CometSpace.for_workload(workload, H800)
    objective = Objective(workload, H800, make_routing(workload), space, ("latency",), target_trials=6)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for point in space.warm_start():
        study.enqueue_trial(point)
    study.optimize(objective, n_trials=6)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_gpt_oss_tunes(tmp_path, capsys):
    """Once crashed at trial 4 on an --n-splits the user never passed."""
    plan_dir, report = tmp_path / "plans", tmp_path / "report.html"
    code = main(["tune", "--model", str(HF_CONFIGS / "gpt-oss-20b.json"), "--hardware", "h800", "--ep", "8",
                 "--tokens", "512", "--trials", "6", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                 "--plan-dir", str(plan_dir), "--report", str(report), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads(out)
    assert payload["buckets"][0]["trials"] == 6 and report.exists()
    config = load_plan(payload["plan"]).lookup(512)
    assert config["block_n"] == 64 and 2880 % (config["n_splits"] * config["block_n"]) == 0


def test_a_measured_profile_offers_only_the_tiles_the_fused_kernels_ran_at():
    # the hand profile calibrated the fused kernels at 128x128 only: a plan tuned on it must run on that GPU
    from pathlib import Path

    from comet_dse.hardware import load_hardware

    hand = load_hardware(Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "hand.json")
    space = CometSpace.for_workload(Workload(MODEL_PRESETS["mixtral-8x7b"], 1024, 2), hand)
    assert space.tiles == ("128x128",)
    assert hand.measured.fused_layer0_tiles() == ((128, 128),)
