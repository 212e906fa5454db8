"""benchmarks/grouped_mm_gap.py: the committed comparison is what the script computes from the committed files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("run", ["27", "28"])
def test_the_committed_gap_is_reproduced(load_script, run):
    gap = load_script("grouped_mm_gap")
    from comet_dse.hardware import load_hardware
    from comet_dse.measurements import bench_paths, load_bench

    committed = json.loads((ROOT / "results" / "validation" / f"grouped_mm_gap_run{run}.json").read_text())
    hardware = load_hardware(str(ROOT / committed["profile"]))
    benches = {load_bench(p).model: load_bench(p) for p in bench_paths([str(ROOT / committed["measurements"])])}
    checked = 0
    for point in committed["points"]:
        if point["model"] not in ("qwen2-moe-2.7b", "mixtral-8x7b"):
            continue
        priced = gap.priced_us(benches[point["model"]], point["tokens"], hardware)
        assert round(priced, 1) == point["priced_us"]
        assert point["ratio"] == pytest.approx(point["measured_us"] / priced, abs=2e-3)  # measured_us is rounded
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("measurements, profile, message", [
    ("results/measurements/ep2_h200/run79", "/nonexistent.json", "--hardware: cannot read /nonexistent.json"),
    ("results/hardware", "results/hardware/h200-x2-run79.json", "--measurements: results/hardware holds no bench-*.json"),
])
def test_a_bad_input_is_one_line_and_exit_2(tmp_path, measurements, profile, message):
    out = tmp_path / "gap.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grouped_mm_gap.py"), measurements, profile,
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and run.stderr.startswith(f"grouped_mm_gap.py: error: {message}"), run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not out.exists()
