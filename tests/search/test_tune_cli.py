"""`comet-dse tune` end to end: resume, plan, report, crash safety, workers, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from comet_dse.cli import main

FAST = ["--model", "mixtral-8x7b", "--hardware", "h800", "--ep", "8"]


def completed_trials(url: str, name: str) -> dict[int, float]:
    study = optuna.load_study(study_name=name, storage=url)
    return {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}


def study_named(url: str, prefix: str) -> str:
    """The one study of a readable prefix (its name ends in the inputs' digest); KeyError before it exists."""
    names = [n for n in optuna.get_all_study_names(url) if n.startswith(prefix + "-")]
    if len(names) != 1:
        raise KeyError(f"{len(names)} studies named {prefix}-<digest>")
    return names[0]


def test_tune_writes_plan_and_report_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", *FAST, "--tokens", "1024,2048", "--trials", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [b["tokens"] for b in out["buckets"]] == [1024, 2048]
    assert all(b["trials"] == 12 for b in out["buckets"])
    plan_path, report_path = Path(out["plan"]), Path(out["report"])
    assert plan_path == Path("results/plans/mixtral-8x7b-h800-ep8-tp1.json")
    assert "Plotly.newPlot" in report_path.read_text()
    bucket = out["buckets"][0]
    assert bucket["speedup"]["vs_sequential"] == pytest.approx(bucket["predicted_us"]["sequential"] / bucket["predicted_us"]["comet"], rel=1e-3)
    url = "sqlite:///results/studies/mixtral-8x7b-h800-ep8-tp1.db"
    name = bucket["study"]
    assert name == study_named(url, "mixtral-8x7b-h800-ep8-tp1-tokens1024") == f"mixtral-8x7b-h800-ep8-tp1-tokens1024-{bucket['digest']}"
    first = completed_trials(url, name)
    # the same command again: nothing to add; a larger count: adds, keeping every trial
    assert main(["tune", *FAST, "--tokens", "1024,2048", "--trials", "12", "--no-report"]) == 0
    assert completed_trials(url, name) == first
    assert main(["tune", *FAST, "--tokens", "1024", "--trials", "16", "--no-report"]) == 0
    more = completed_trials(url, name)
    assert len(more) == 16 and all(more[n] == v for n, v in first.items())
    table = capsys.readouterr().out
    assert "vs sequential" in table and "plan:" in table


def test_single_worker_run_is_reproducible(tmp_path, monkeypatch, capsys):
    outs = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        monkeypatch.chdir(tmp_path / run)
        assert main(["tune", *FAST, "--tokens", "1024", "--trials", "15", "--seed", "3", "--json", "--no-report"]) == 0
        outs.append(json.loads(capsys.readouterr().out)["buckets"])
    assert outs[0] == outs[1]


def test_tp_dispatch_rows_tunes_the_layer_the_fused_kernels_run_in_its_own_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tp = ["--model", "mixtral-8x7b", "--hardware", "h800", "--ep", "2", "--tp", "4", "--tokens", "1024", "--trials", "8",
          "--json", "--no-report"]
    assert main(["tune", *tp]) == 0
    tokens = json.loads(capsys.readouterr().out)["buckets"][0]
    assert main(["tune", *tp, "--tp-dispatch", "rows"]) == 0
    rows = json.loads(capsys.readouterr().out)["buckets"][0]
    # a study of its own (not the tokens one resumed), and the plan says which model it was tuned on
    assert rows["study"].startswith("mixtral-8x7b-h800-ep2-tp4-tokens1024-rows-") and "-rows-" not in tokens["study"]
    plan = json.loads(Path("results/plans/mixtral-8x7b-h800-ep2-tp4-rows.json").read_text())
    assert plan["buckets"][0]["config"]["tp_dispatch"] == "rows"
    # the default's plan is its own file, untouched
    assert "tp_dispatch" not in json.loads(Path("results/plans/mixtral-8x7b-h800-ep2-tp4.json").read_text())["buckets"][0]["config"]
    # without TP there is nothing to choose: refused, naming the option, before any study
    assert main(["tune", *FAST, "--tokens", "1024", "--trials", "4", "--tp-dispatch", "rows"]) == 2
    assert "--tp-dispatch: rows needs --tp > 1" in capsys.readouterr().err
    assert rows["predicted_us"]["comet"] > tokens["predicted_us"]["comet"]  # more rows move


def test_two_objectives_give_a_pareto_front(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", *FAST, "--tokens", "1024", "--trials", "20", "--objectives", "latency,comm_sms", "--json"]) == 0
    bucket = json.loads(capsys.readouterr().out)["buckets"][0]
    front = bucket["pareto"]
    assert len(front) >= 2
    # a front: sorted by latency, communication SMs strictly fall
    assert [p["latency_us"] for p in front] == sorted(p["latency_us"] for p in front)
    assert all(a["comm_sms"] > b["comm_sms"] for a, b in zip(front, front[1:]))
    assert bucket["predicted_us"]["comet"] == front[0]["latency_us"]


PREFIX = "deepseek-v3-h800-ep16-tp1-tokens256"  # the study _tune_cmd runs, less its digest


def _tune_cmd(url: str, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "comet_dse.cli", "tune", "--model", "deepseek-v3", "--ep", "16", "--tokens", "256",
            "--trials", str(trials), "--storage", url, "--heartbeat", "1", "--no-report", *extra]


def test_sigkill_mid_study_loses_nothing_and_the_rerun_finishes(tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    proc = subprocess.Popen(_tune_cmd(url, 30), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    before: dict[int, float] = {}
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            before = completed_trials(url, study_named(url, PREFIX))
        except (KeyError, Exception):  # the study is not created yet
            continue
        if len(before) >= 5:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    name = study_named(url, PREFIX)
    before = completed_trials(url, name)
    assert 5 <= len(before) < 30, "the kill must land mid-study"
    time.sleep(3.5)  # > 3 heartbeats: the killed trial is stale now
    rerun = subprocess.run(_tune_cmd(url, 30), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    after = completed_trials(url, name)
    assert len(after) == 30
    assert all(after[n] == v for n, v in before.items())  # no completed trial lost or changed
    states = [t.state for t in optuna.load_study(study_name=name, storage=url).trials]
    assert TrialState.RUNNING not in states  # the killed trial was failed (and its config retried)


def test_local_workers_share_one_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    proc = subprocess.run(_tune_cmd(url, 18, "--workers", "3"), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert len(completed_trials(url, study_named(url, PREFIX))) == 18


POSTGRES = os.environ.get("COMET_DSE_TEST_POSTGRES")


@pytest.mark.skipif(not POSTGRES, reason="set COMET_DSE_TEST_POSTGRES to a PostgreSQL URL (.ci/run starts one)")
def test_postgres_workers_on_many_machines(tmp_path):
    """Three independent processes (as on three machines) plus --workers on one study."""
    for old in optuna.get_all_study_names(POSTGRES):  # the server outlives test runs
        if old.startswith(PREFIX):
            optuna.delete_study(study_name=old, storage=POSTGRES)
    cmd = _tune_cmd(POSTGRES, 24)
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    name = study_named(POSTGRES, PREFIX)
    fresh = optuna.load_study(study_name=name, storage=POSTGRES)
    assert len(fresh.get_trials(states=(TrialState.COMPLETE,))) == 24
    # more trials from three local workers on the same study
    more = subprocess.run(cmd[:cmd.index("--trials") + 1] + ["36"] + cmd[cmd.index("--trials") + 2:] + ["--workers", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert more.returncode == 0, more.stderr
    fresh = optuna.load_study(study_name=name, storage=POSTGRES)
    assert len(fresh.get_trials(states=(TrialState.COMPLETE,))) == 36


BAD = [
    (["--objectives", "speed"], "--objectives"),
    (["--objectives", "comm_sms"], "--objectives"),
    (["--storage", "postgresql://nobody:x@127.0.0.1:1/none"], "--storage"),
    (["--storage", "redis://localhost"], "--storage"),
    (["--tokens", ""], "--tokens"),
    (["--tokens", "1024,abc"], "--tokens"),
    (["--tokens", "0,1024"], "--tokens"),
    (["--trials", "0"], "--trials"),
    (["--trials", "-3"], "--trials"),
    (["--workers", "0"], "--workers"),
    (["--routing", "zipf"], "--routing"),
]


@pytest.mark.parametrize("extra, field", BAD, ids=[" ".join(b[0]) or "empty" for b in BAD])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, extra, field):
    monkeypatch.chdir(tmp_path)
    code = main(["tune", *FAST, "--tokens", "1024", "--trials", "5", *extra])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and field in err, err
    assert not (tmp_path / "results").exists()  # no study, plan or report
