"""benchmarks/profile_spread.py: one measurement set validated against several profiles, each's summary kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "profile_spread.py"
RUN85 = "results/measurements/ep2_h200/run85"  # two bench runs of each of two models, 24 points in all


def test_each_profile_gets_the_same_points_scored(tmp_path):
    out = tmp_path / "spread.json"
    profiles = ["results/hardware/h200-x2-run78.json", "results/hardware/h200-x2-run79.json"]
    run = subprocess.run([sys.executable, str(SCRIPT), "--measurements", RUN85, "--profiles", *profiles, "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    spread = json.loads(out.read_text())["profiles"]
    assert list(spread) == profiles
    for summary in spread.values():
        assert {s: v["n"] for s, v in summary["all"].items()} == {"sequential": 8, "chunked": 8, "comet": 8}
        # the two align modes of run 85 repeat each point: their medians are scored too
        assert summary["medians"]["comet"]["n"] == 4
    # the same points on another machine's figures: other errors
    assert spread[profiles[0]]["all"]["sequential"] != spread[profiles[1]]["all"]["sequential"]


def test_a_bad_profile_ends_it_with_validates_one_line_and_exit_code(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--measurements", RUN85, "--profiles", "missing.json",
                          "--out", str(tmp_path / "spread.json")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "--hardware" in run.stderr
    assert not (tmp_path / "spread.json").exists()
