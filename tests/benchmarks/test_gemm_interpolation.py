"""benchmarks/gemm_interpolation.py: leave-one-out errors of a calibrated GEMM table, each call priced the way the
simulator prices that implementation, and the committed figures are what the committed profiles give."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gemm_interpolation.py"
HAND = json.loads((ROOT / "tests" / "fixtures" / "profiles" / "hand.json").read_text())
HBM_GBPS = HAND["figures"]["hbm_GBps"]  # 65.536: 64 KiB of weights stream in 1 µs


def tables_with(*entries: dict) -> dict:
    """The hand profile's tables with these GEMM entries beside its library entry."""
    tables = copy.deepcopy(HAND["tables"])
    tables["grouped_gemm"] = [tables["grouped_gemm"][0], *entries]
    return tables


def entry(impl: str, rows: list[int], us: list[float], sms: int = 2, **shape) -> dict:
    tile = {"block_m": 128, "block_n": 128} if impl == "fused" else {"block_m": None, "block_n": None}
    return {"impl": impl, "K": 256, "N": 128, "swiglu": False, "experts": 1, "sms": sms, **tile,
            "rows_per_expert": rows, "us": us} | shape


def errors(loo, tables: dict, at: int) -> list[float]:
    return [p["error_pct"] for p in loo(tables, at, 2, HBM_GBPS)]


def test_the_loop_of_torch_mm_is_log_log_in_rows(load_script):
    loo = load_script("gemm_interpolation").leave_one_out
    line = tables_with(entry("loop", [16, 32, 64, 128], [10.0, 20.0, 40.0, 80.0]))  # straight in log-log
    assert errors(loo, line, 1) == [0.0, 0.0]
    knee = tables_with(entry("loop", [16, 32, 64, 128], [10.0, 10.0, 20.0, 40.0]))  # flat, then linear
    # dropping 32 predicts it from 16 and 64 on one segment: sqrt(10 * 20) = 14.14 against 10 measured
    assert errors(loo, knee, 1) == [41.42, 0.0]


def test_a_fused_call_is_its_fixed_cost_and_waves_of_tiles(load_script):
    script = load_script("gemm_interpolation")
    # one 128x128 tile per 128 rows on 2 SMs: waves 1, 1, 1, 2, 2; the weights (64 KiB) stream in 1 µs, all the work
    # at 16 rows, so the fixed cost is 5 - 1 = 4 µs and every tile takes 1 µs
    rows, us = [16, 128, 256, 384, 512], [5.0, 5.0, 5.0, 6.0, 6.0]
    tables = tables_with(entry("fused", rows, us))
    assert errors(script.leave_one_out, tables, 1) == [0.0, 0.0, 0.0]
    assert [p["error_pct"] for p in script.in_sample(tables, 1, 2, HBM_GBPS)] == [0.0] * 5
    # log-log between the calls' own times misses the second wave: 5 * (6 / 5) ** log2(1.5) against 6
    from comet_dse.measured import Curve
    assert Curve((256, 512), (5.0, 6.0)).loglog(384) == pytest.approx(5.563, abs=0.001)


def test_a_dropped_row_count_leaves_a_fused_table_at_every_sm_count(load_script):
    script = load_script("gemm_interpolation")
    rows = [16, 128, 256]
    tables = tables_with(entry("fused", rows, [5.0, 5.0, 5.0]), entry("fused", rows, [5.0, 5.0, 5.0], sms=4),
                         entry("fused", rows, [5.0, 5.0, 5.0], K=512), entry("loop", rows, [1.0, 2.0, 3.0]))
    cut = script.without_rows(tables, 1, 128)["grouped_gemm"]
    assert [e["rows_per_expert"] for e in cut] == [[128, 256], [16, 256], [16, 256], rows, rows]
    assert [e["us"] for e in cut[1:]] == [[5.0, 5.0], [5.0, 5.0], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0]]
    cut = script.without_rows(tables, 4, 128)["grouped_gemm"]  # the loop's table alone
    assert [e["rows_per_expert"] for e in cut[1:]] == [rows, rows, rows, [16, 256]]


@pytest.mark.parametrize("name", ["gemm_interpolation.json", "gemm_interpolation_run118.json"])
def test_the_committed_figures_follow_from_the_committed_profile(tmp_path, name):
    committed = json.loads((ROOT / "results" / "validation" / name).read_text())
    out = tmp_path / "now.json"
    subprocess.run([sys.executable, str(SCRIPT), str(ROOT / committed["profile"]), "--out", str(out)], check=True,
                   capture_output=True, cwd=ROOT)
    now = json.loads(out.read_text())
    keys = ("points", "mean_abs_error_pct", "max_abs_error_pct", "within_5_pct", "by_impl")
    assert {k: now[k] for k in keys} == {k: committed[k] for k in keys}


def test_a_profile_that_cannot_be_read_is_one_clear_line(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "none.json")], capture_output=True, text=True)
    assert run.returncode == 2 and "profile: cannot read" in run.stderr and "Traceback" not in run.stderr
