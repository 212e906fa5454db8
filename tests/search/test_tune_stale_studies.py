"""`comet-dse tune` after an input changed under the same names: a fresh study, the right numbers.

Each case reruns tune in the same storage with the same names (profile path, model_type)
but other contents; before studies carried an input digest, the rerun answered from the
old study (or crashed on its search space).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from comet_dse.sim import Comet, Sequential, simulate

from comet_dse.cli import main
from comet_dse.hardware import resolve_hardware
from comet_dse.models import resolve_model
from comet_dse.plan import load_plan
from comet_dse.workload import Workload

SMALL = ["--ep", "8", "--tokens", "256,512", "--no-report", "--json"]


def tune(capsys, *args: str) -> tuple[dict, str]:
    assert main(["tune", *args]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


def fresh_us(model: str, hardware: str, tokens: int, schedule) -> float:
    workload = Workload(resolve_model(model), tokens, 8)
    return simulate(workload, resolve_hardware(hardware), schedule, record=False).latency_us


def assert_plan_matches_a_fresh_simulation(out: dict, model: str, hardware: str) -> None:
    plan = load_plan(out["plan"])
    for entry, bucket in zip(plan.entries, out["buckets"]):
        assert entry.predicted_us["comet"] == pytest.approx(fresh_us(model, hardware, entry.tokens, Comet(**entry.config)), rel=1e-9)
        assert entry.predicted_us["sequential"] == pytest.approx(fresh_us(model, hardware, entry.tokens, Sequential()), rel=1e-9)
        assert entry.digest == bucket["digest"] and bucket["study"].endswith(entry.digest)
    assert plan.meta["inputs"]["hardware"] == resolve_hardware(hardware).figures()


def write_json(path: Path, data: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def mixtral_config(folder: Path, **changes) -> str:
    config = {"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2, "hidden_size": 4096,
              "intermediate_size": 14336, "num_hidden_layers": 32, **changes}
    return write_json(folder / "config.json", config)


def tune_before_and_after_a_link_change(path: Path, capsys, trials: int) -> tuple[str, dict, dict, str]:
    """Tune with the profile at `path` at 300 GB/s, then again after it changed to 20 GB/s:
    (profile, first output, second output, second stderr)."""
    profile = write_json(path, {"base": "h800", "link_GBps": 300})
    fast, _ = tune(capsys, "--hardware", profile, "--trials", str(trials), *SMALL)
    write_json(path, {"base": "h800", "link_GBps": 20})
    slow, err = tune(capsys, "--hardware", profile, "--trials", str(trials), *SMALL)
    return profile, fast, slow, err


def test_a_changed_hardware_profile_starts_a_new_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    profile, fast, slow, err = tune_before_and_after_a_link_change(tmp_path / "hw.json", capsys, trials=5)
    assert_plan_matches_a_fresh_simulation(slow, "mixtral-8x7b", profile)
    assert slow["plan"] == fast["plan"]  # same names, same plan file: only the digest tells them apart
    for old, new in zip(fast["buckets"], slow["buckets"]):
        assert new["study"] != old["study"] and new["replaces"] == old["study"] and new["trials"] == 5
        assert f"inputs changed since study {old['study']}: starting a new study {new['study']}" in err
    assert load_plan(slow["plan"]).meta["hardware_profile"]["link_GBps"] == 20


def test_two_configs_of_one_model_type_get_their_own_studies(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    wide = mixtral_config(tmp_path / "wide", intermediate_size=14336)
    narrow = mixtral_config(tmp_path / "narrow", intermediate_size=7168)
    first, _ = tune(capsys, "--model", wide, "--trials", "4", *SMALL)
    second, err = tune(capsys, "--model", narrow, "--trials", "4", *SMALL)
    assert_plan_matches_a_fresh_simulation(second, narrow, "h800")
    assert "inputs changed since study" in err
    for a, b in zip(first["buckets"], second["buckets"]):
        assert a["study"] != b["study"] and a["predicted_us"]["comet"] != b["predicted_us"]["comet"]


def test_a_changed_hidden_size_reruns_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tune(capsys, "--model", mixtral_config(tmp_path / "m", hidden_size=4096), "--trials", "4", *SMALL)
    # a narrower H offers fewer column splits: the old study's space cannot take the new one's trials
    out, _ = tune(capsys, "--model", mixtral_config(tmp_path / "m", hidden_size=2048), "--trials", "6", *SMALL)
    assert all(b["trials"] == 6 for b in out["buckets"])
    assert_plan_matches_a_fresh_simulation(out, str(tmp_path / "m" / "config.json"), "h800")


def test_list_prints_every_study_with_its_inputs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    profile, fast, slow, _ = tune_before_and_after_a_link_change(tmp_path / "lab.json", capsys, trials=3)
    # the same flags as tune find its default storage; --storage alone finds it too
    assert main(["tune", "--list", "--hardware", profile, "--ep", "8"]) == 0
    by_flags = capsys.readouterr().out.splitlines()
    assert main(["tune", "--list", "--storage", "sqlite:///results/studies/mixtral-8x7b-lab-ep8-tp1.db"]) == 0
    assert capsys.readouterr().out.splitlines() == by_flags
    header, *lines = by_flags
    assert header.split()[:3] == ["study", "digest", "trials"] and len(lines) == 4
    for run, link in ((fast, "link_GBps=300"), (slow, "link_GBps=20")):
        for bucket in run["buckets"]:
            line = next(line for line in lines if line.startswith(bucket["study"] + " "))
            assert bucket["digest"] in line and link in line and "H=4096 F=14336" in line
            assert line.split()[2] == "3" and f" {bucket['tokens']} " in line and "uniform seed 0" in line


def test_list_without_a_storage_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--list", "--model", "qwen2-moe-2.7b"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "qwen2-moe-2.7b-h800-ep8-tp1.db" in err
    assert not (tmp_path / "results").exists()  # listing creates no storage
