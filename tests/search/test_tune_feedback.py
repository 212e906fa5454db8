"""What a person sees: a progress line on a terminal only, one line on Ctrl-C with no trial
left running, and no filler trials after a crash."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.search.test_tune_cli import PREFIX, _tune_cmd, study_named

SMALL = [sys.executable, "-m", "comet_dse.cli", "tune", "--tokens", "1024,2048", "--trials", "6", "--no-report"]


def _stderr_on_pty(cmd: list[str], cwd) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (as in a shell); its text, carriage returns kept."""
    parent, child = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    out = b""
    while True:
        try:
            data = os.read(parent, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(parent)
    return proc.wait(timeout=60), out.decode()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_progress_line_on_a_terminal(tmp_path, workers):
    code, err = _stderr_on_pty([*SMALL, "--storage", f"sqlite:///{tmp_path / 's.db'}", "--workers", workers], tmp_path)
    assert code == 0, err
    assert "\r" in err  # rewritten in place
    assert "comet-dse tune: tokens 1024 (bucket 1/2):" in err
    assert "comet-dse tune: tokens 2048 (bucket 2/2): 6/6 trials, best " in err and " µs" in err
    assert "comet-dse tune: simulating chunked and sequential baselines …\n" in err.replace("\r\n", "\n")


def test_no_progress_with_quiet_or_off_a_terminal(tmp_path):
    code, err = _stderr_on_pty([*SMALL, "--storage", f"sqlite:///{tmp_path / 'a.db'}", "--quiet"], tmp_path)
    assert (code, err) == (0, "")
    piped = subprocess.run([*SMALL, "--storage", f"sqlite:///{tmp_path / 'b.db'}"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert (piped.returncode, piped.stderr) == (0, "")


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_named(url, PREFIX), storage=url).get_trials(deepcopy=False)


def _wait_for_completed(url: str, proc: subprocess.Popen, count: int, limit_s: float = 60) -> None:
    deadline = time.time() + limit_s
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            if sum(t.state == TrialState.COMPLETE for t in _trials(url)) >= count:
                return
        except Exception:  # noqa: BLE001 - the storage or study is not created yet
            continue
    raise AssertionError(f"no {count} completed trials within {limit_s} s")


# Known gap, kept visible rather than dropped: with local workers the relayed SIGTERM raises
# inside whatever the worker is doing (opening the storage, SQLAlchemy's pool reset, Optuna's
# bookkeeping), which can print a traceback and leave the trial RUNNING until its heartbeat goes
# stale (seen in about 1 of 3 runs). A worker that stops after its trial on a flag would close it.
SEVERAL_WORKERS = pytest.param("3", marks=pytest.mark.xfail(
    reason="Ctrl-C with several local workers: a worker can print a traceback or leave its trial RUNNING",
    strict=False))


@pytest.mark.parametrize("workers", ["1", SEVERAL_WORKERS])
def test_ctrl_c_one_line_exit_130_no_trial_left_running(tmp_path, workers):
    url = f"sqlite:///{tmp_path / 'int.db'}"
    proc = subprocess.Popen(_tune_cmd(url, 200, "--workers", workers), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    _wait_for_completed(url, proc, 4)  # past the warm-start points: the workers are running trials
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # where it hangs: faulthandler prints every thread's stack on SIGABRT
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"tune still running 60 s after Ctrl-C; its threads:\n{err[-6000:]}") from None
    assert proc.returncode == 130
    assert err == "comet-dse: interrupted\n"
    assert TrialState.RUNNING not in [t.state for t in _trials(url)]


def test_rerun_right_after_a_crash_adds_no_filler(tmp_path):
    """SIGKILL mid-study, rerun at once: the dead trial is failed once it goes stale (3
    heartbeats) and retried; meanwhile the rerun waits instead of pruning filler trials."""
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    proc = subprocess.Popen(_tune_cmd(url, 16), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_completed(url, proc, 6)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sum(t.state == TrialState.COMPLETE for t in _trials(url)) < 16, "the kill must land mid-study"
    rerun = subprocess.run(_tune_cmd(url, 16), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    states = [t.state for t in _trials(url)]
    assert states.count(TrialState.COMPLETE) == 16
    assert states.count(TrialState.PRUNED) <= 2, states  # a race with the dead trial's retry at most
    assert TrialState.RUNNING not in states


def test_a_trial_killed_before_its_first_heartbeat_goes_stale(tmp_path):
    """A worker killed while the sampler proposes its trial leaves it RUNNING with no
    heartbeat; Optuna alone never fails it, so a rerun would wait for it forever."""
    url = f"sqlite:///{tmp_path / 'silent.db'}"
    first = subprocess.run(_tune_cmd(url, 4), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name=study_named(url, PREFIX), storage=url)
    study._storage.create_new_trial(study._study_id)  # RUNNING, never a heartbeat
    time.sleep(3.5)  # > the grace period of --heartbeat 1
    rerun = subprocess.run(_tune_cmd(url, 8), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    states = [t.state for t in _trials(url)]
    assert states.count(TrialState.COMPLETE) == 8 and TrialState.RUNNING not in states
