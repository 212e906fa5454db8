"""benchmarks/sim_sides.py: each side profile speeds up only its own side, and the committed table is what the
script computes from the committed files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "results" / "validation" / "sides_run61_h200-x2-run39-contention63.json"


def test_each_side_profile_speeds_up_only_its_own_side(load_script):
    sides = load_script("sim_sides")
    profile = json.loads((ROOT / "tests" / "fixtures" / "profiles" / "hand.json").read_text())
    comm_side, compute_side = sides.side_profiles(profile)
    gemm, fast_gemm = profile["tables"]["grouped_gemm"][0]["us"], comm_side["tables"]["grouped_gemm"][0]["us"]
    assert fast_gemm == pytest.approx([us / sides.SPEEDUP for us in gemm])
    assert compute_side["tables"]["grouped_gemm"] == profile["tables"]["grouped_gemm"]
    pull = profile["tables"]["comm_blocks"]["pull"]["GBps"]
    assert compute_side["tables"]["comm_blocks"]["pull"]["GBps"] == pytest.approx([g * sides.SPEEDUP for g in pull])
    assert comm_side["tables"]["comm_blocks"] == profile["tables"]["comm_blocks"]
    assert profile == json.loads((ROOT / "tests" / "fixtures" / "profiles" / "hand.json").read_text())  # not edited


def test_the_copy_side_speeds_up_every_models_layer_curve(load_script):
    sides = load_script("sim_sides")
    profile = json.loads((ROOT / "tests" / "fixtures" / "profiles" / "hand.json").read_text())
    curve = {"pull": {"blocks": [1, 4], "GBps": [8.0, 32.0]}, "push": {"blocks": [1, 4], "GBps": [12.0, 48.0]}}
    profile["tables"]["layer_comm_blocks"] = [{"model": m, "hidden": h, **json.loads(json.dumps(curve))}
                                              for m, h in (("a", 256), ("b", 512))]
    _, compute_side = sides.side_profiles(profile)
    for table in compute_side["tables"]["layer_comm_blocks"]:
        assert table["pull"]["GBps"] == pytest.approx([8.0 * sides.SPEEDUP, 32.0 * sides.SPEEDUP])
        assert table["push"]["GBps"] == pytest.approx([12.0 * sides.SPEEDUP, 48.0 * sides.SPEEDUP])


def test_the_committed_table_is_reproduced(tmp_path):
    committed = json.loads(COMMITTED.read_text())
    out = tmp_path / "sides.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sim_sides.py"), "--measurements",
                    *committed["measurements"], "--hardware", committed["hardware"], "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    assert json.loads(out.read_text())["rows"] == committed["rows"]
    assert len(committed["rows"]) == 18


def test_the_summary_is_each_figures_ratios_over_the_block_configurations(load_script):
    sides = load_script("sim_sides")
    rows = [{"comm_blocks": 8, "comm_only_predicted_us": 110.0, "comm_only_measured_us": 100.0},
            {"comm_blocks": 16, "comm_only_predicted_us": 90.0, "comm_only_measured_us": 100.0},
            {"comm_blocks": 32, "comm_only_predicted_us": 100.0, "comm_only_measured_us": 100.0},
            {"comm_blocks": 0, "comm_only_predicted_us": 300.0, "comm_only_measured_us": 100.0}]  # the copy engine: apart
    assert sides.summary(rows) == {"comm_only": {"n": 3, "median": 1.0, "min": 0.9, "max": 1.1, "mape_pct": 6.7}}
