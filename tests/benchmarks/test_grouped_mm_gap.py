"""benchmarks/grouped_mm_gap.py: the committed comparison is what the script computes from the committed files."""

from __future__ import annotations

import json
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
