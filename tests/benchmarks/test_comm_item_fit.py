"""benchmarks/comm_item_fit.py on run 114's committed spans: each block's end as items x a per-item cost + rows x a
per-row cost, the check on calibrate's item_us."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "comm_item_fit.py"


def test_a_fit_recovers_the_costs_it_was_made_from(load_script):
    fit = load_script("comm_item_fit").fit
    items, rows = [6, 6, 5, 5], [700, 500, 640, 300]
    ends = [i * 2.0 + r * 0.026 for i, r in zip(items, rows)]  # 2 µs an item, 26 ns a row
    per_item, per_row, residual = fit(ends, rows, items)
    assert per_item == pytest.approx(2.0) and per_row == pytest.approx(26.0) and residual == pytest.approx(0.0, abs=1e-9)


def test_qwens_blocks_spend_about_two_us_a_pushed_item_and_four_a_pulled_one(tmp_path):
    out = tmp_path / "fit.json"
    run = subprocess.run([sys.executable, str(SCRIPT), str(ROOT / "results" / "measurements" / "ep2_h200" / "run114" /
                                                            "comm_spans_qwen.json"), "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = json.loads(out.read_text())["summary"]
    # 4096 and 8192 tokens at 8 and 16 blocks, both ranks; the round-robin workloads deal every block the same rows
    assert summary["qwen2-moe-2.7b layer1"]["fits"] == summary["qwen2-moe-2.7b layer0"]["fits"] == 8
    assert 1.5 <= summary["qwen2-moe-2.7b layer1"]["item_us_median"] <= 2.5
    assert 3.0 <= summary["qwen2-moe-2.7b layer0"]["item_us_median"] <= 5.0


def test_bad_input_is_one_clear_line(tmp_path):
    for extra, message in (([str(tmp_path / "none.json")], "spans: cannot read"),
                           ([str(ROOT / "results" / "measurements" / "ep2_h200" / "run114" / "comm_spans_qwen.json"),
                             "--blocks", "8,x"], "--blocks: must be comma-separated whole numbers")):
        run = subprocess.run([sys.executable, str(SCRIPT), *extra, "--out", str(tmp_path / "x.json")],
                             capture_output=True, text=True)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
        assert not (tmp_path / "x.json").exists()
