"""benchmarks/gpu_comm_spans.py: the rows dealt to each communication block (host arithmetic over the plan), and the
script on two CPU ranks (gloo, Triton's interpreter) for both workloads, where the stamps read 0 (no globaltimer)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.conftest import run_ranks

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_comm_spans.py"
TINY = {"model_type": "tiny", "num_experts": 8, "num_experts_per_tok": 2, "hidden_size": 512,
        "moe_intermediate_size": 128, "num_hidden_layers": 1}


@pytest.fixture(scope="module")
def spans_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_comm_spans
        yield gpu_comm_spans
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_blocks_are_dealt_the_remote_tiles_round_robin(spans_module):
    # five tiles over two blocks: tiles 0, 2, 4 to block 0, tiles 1, 3 to block 1
    assert spans_module.rows_per_block([128, 128, 100, 128, 7], 2) == [235, 256]
    # layer1: item i is split i // 5 of tile i % 5, so over 4 splits block 0 meets every tile twice
    assert spans_module.rows_per_block([128, 128, 100, 128, 7], 2, splits=4) == [2 * 491, 2 * 491]
    assert spans_module.rows_per_block([128], 3) == [128, 0, 0]


@pytest.mark.parametrize("workload", [["--tokens", "96"], ["--tokens", "", "--rows", "32"]])
def test_both_layers_report_every_rank_on_two_cpu_ranks(tmp_path, workload):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "spans.json"
    cmd = [sys.executable, str(SCRIPT), "--model", str(config), *workload, "--blocks", "2", "--runs", "1",
           "--out", str(out)]
    for code, _, err in run_ranks(cmd, 2):
        assert code == 0, err[-3000:]
    (entry,) = json.loads(out.read_text())["runs"]
    assert entry["comm_blocks"] == 2 and entry["tokens"] == (96 if workload[1] else 4 * 32)
    for which in ("layer0", "layer1"):
        ranks = entry[which]["ranks"]
        assert len(ranks) == 2
        for r in ranks:
            assert len(r["block_end_us"]) == len(r["block_rows"]) == 2
            splits = 1 if which == "layer0" else 4
            assert sum(r["block_rows"]) == splits * r["rows_moved"]  # every row dealt once per split
            assert r["rows_max"] == max(r["block_rows"]) and r["rows_min"] == min(r["block_rows"])
    if not workload[1]:  # round robin, top-1: each rank sends half its 128 rows to the peer's 4 experts
        assert [r["rows_moved"] for r in entry["layer0"]["ranks"]] == [64, 64]


def test_a_dynamic_deal_is_timed_beside_the_static_one(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "spans.json"
    cmd = [sys.executable, str(SCRIPT), "--model", str(config), "--tokens", "96", "--comm-deal", "static,dynamic",
           "--blocks", "2", "--runs", "1", "--out", str(out)]
    for code, _, err in run_ranks(cmd, 2):
        assert code == 0, err[-3000:]
    static, dynamic = json.loads(out.read_text())["runs"]
    assert (static["comm_deal"], dynamic["comm_deal"]) == ("static", "dynamic")
    for which, splits in (("layer0", 1), ("layer1", 4)):
        for s, d in zip(static[which]["ranks"], dynamic[which]["ranks"]):
            # the same plan either way: the tiles' rows in walk order are kept for the simulator's deal of both
            assert s["tile_rows"] == d["tile_rows"] and sum(s["tile_rows"]) == s["rows_moved"] and s["splits"] == splits
            assert d["block_rows"] is None and "rows_max" not in d  # decided on the device as the blocks ran


def test_an_unknown_deal_is_one_clear_line(tmp_path):
    import subprocess
    run = subprocess.run([sys.executable, str(SCRIPT), "--comm-deal", "static,greedy", "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--comm-deal: must be comma-separated values of static, dynamic" in run.stderr
    assert "Traceback" not in run.stderr
