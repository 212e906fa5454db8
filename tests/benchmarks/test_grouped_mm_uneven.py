"""benchmarks/grouped_mm_uneven.py: the row counts it compares, and a run on the CPU (fp32, a tiny shape)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the benchmark needs torch")
ROOT = Path(__file__).resolve().parents[2]


def test_equal_and_uneven_rows_hold_as_many_rows(load_script):
    script = load_script("grouped_mm_uneven")
    counts = script.row_counts(128, 4, seed=3)
    assert counts["equal"] == [128] * 4 and sum(counts["uneven"]) == 512 and counts["uneven"] != counts["equal"]
    assert script.row_counts(128, 4, seed=3) == counts  # seeded: the same draw


def test_a_cpu_run_writes_every_timing_of_both_row_counts(tmp_path):
    out = tmp_path / "uneven.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grouped_mm_uneven.py"), "--shape", "8,2,32,48",
                          "--rows", "16", "--runs", "2", "--warmup", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [(p["gemm"], p["K"], p["N"], p["experts"]) for p in result["points"]] == [("gemm0", 32, 96, 4), ("gemm1", 48, 32, 4)]
    for p in result["points"]:
        assert sum(p["uneven_rows"]) == sum(p["equal_rows"]) == 64
        assert min(p[f"{k}_{how}_us"] for k in ("equal", "uneven") for how in ("alone", "graph", "back_to_back")) > 0
    assert set(result["summary"]) == {"uneven_over_equal_alone", "uneven_over_equal_graph", "graph_over_alone_equal",
                                      "back_to_back_over_alone_equal"}


@pytest.mark.parametrize("argv, message", [
    (["--shape", "8,2"], "--shape: expected 4 positive integers"),
    (["--rows", "0,16"], "--rows: expected comma-separated positive integers"),
    (["--models", "nope"], "--models: unknown preset 'nope'"),
    (["--shape", "8,2,32,48", "--ep", "3"], "--ep: must be >= 1 and divide every shape's experts"),
])
def test_a_bad_input_is_one_line_and_exit_2(tmp_path, argv, message):
    out = tmp_path / "uneven.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grouped_mm_uneven.py"), *argv, "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
    assert not out.exists()
