"""benchmarks/gpu_layer_waits.py on two CPU ranks (gloo, Triton's interpreter): both workloads run every way of
both kernels, the waits with their patience give up nowhere (the script checks the layer), and the ratios are
the figures' quotients."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.conftest import run_ranks

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_layer_waits.py"
TINY = {"model_type": "tiny", "num_experts": 8, "num_experts_per_tok": 2, "hidden_size": 512,
        "moe_intermediate_size": 128, "num_hidden_layers": 1}


@pytest.mark.parametrize("workload", [["--tokens", "96"], ["--rows", "32"]])
def test_every_way_of_both_layers_runs_on_two_cpu_ranks(tmp_path, workload):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "waits.json"
    cmd = [sys.executable, str(SCRIPT), "--model", str(config), *workload, "--blocks", "2", "--runs", "1",
           "--out", str(out)]
    for code, _, err in run_ranks(cmd, 2):
        assert code == 0, err[-3000:]
    data = json.loads(out.read_text())
    (row,) = data["runs"]
    assert row["comm_blocks"] == 2 and row["tokens"] == (96 if workload[0] == "--tokens" else 4 * 32)
    us = row["us"]
    assert set(us) == {f"layer{i}:{way}" for i in (0, 1) for way in ("full", "nowait", "compute_only", "comm_only")}
    assert all(v > 0 for v in us.values())
    for i in (0, 1):
        assert row[f"layer{i}_waits"] == pytest.approx(us[f"layer{i}:full"] / us[f"layer{i}:nowait"], abs=1e-3)
        assert row[f"layer{i}_copies_beside_gemm"] == pytest.approx(us[f"layer{i}:nowait"] / us[f"layer{i}:comm_only"],
                                                                    abs=1e-3)
