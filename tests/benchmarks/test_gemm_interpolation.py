"""benchmarks/gemm_interpolation.py: leave-one-out errors of a calibrated GEMM table, and the
committed figures are what the committed profile gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gemm_interpolation.py"


def test_a_power_law_is_predicted_exactly_and_a_knee_is_not(load_script):
    loo = load_script("gemm_interpolation").leave_one_out
    line = {"rows_per_expert": [16, 32, 64, 128], "us": [10.0, 20.0, 40.0, 80.0]}  # straight in log-log
    assert [p["error_pct"] for p in loo(line)] == [0.0, 0.0]
    knee = {"rows_per_expert": [16, 32, 64, 128], "us": [10.0, 10.0, 20.0, 40.0]}  # flat, then linear
    # dropping 32 predicts it from 16 and 64 on one segment: sqrt(10 * 20) = 14.14 against 10 measured
    assert [p["error_pct"] for p in loo(knee)] == [41.42, 0.0]


def test_the_committed_figures_follow_from_the_committed_profile(tmp_path):
    committed = json.loads((ROOT / "results" / "validation" / "gemm_interpolation.json").read_text())
    out = tmp_path / "now.json"
    subprocess.run([sys.executable, str(SCRIPT), str(ROOT / committed["profile"]), "--out", str(out)], check=True,
                   capture_output=True)
    now = json.loads(out.read_text())
    keys = ("points", "mean_abs_error_pct", "max_abs_error_pct", "within_5_pct")
    assert {k: now[k] for k in keys} == {k: committed[k] for k in keys}
