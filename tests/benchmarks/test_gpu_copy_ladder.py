"""benchmarks/gpu_copy_ladder.py on two CPU ranks (gloo, Triton's interpreter): every rung runs, and
the walk kernel pulls exactly the rows layer0 pulled (the script's own check raises otherwise)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import run_ranks

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_copy_ladder.py"
TINY = {"model_type": "tiny", "num_experts": 8, "num_experts_per_tok": 2, "hidden_size": 512,
        "moe_intermediate_size": 128, "num_hidden_layers": 1}
RUNGS = {"bare", "bare_xbuf", "walk", "walk_flags", "waiters_few", "waiters_all", "waiters_all_nofence", "layer0_few",
         "layer0_all", "push_bare", "layer1_few", "layer1_all", "copy_engine"}


def test_the_ladder_runs_on_two_cpu_ranks(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "ladder.json"
    cmd = [sys.executable, str(SCRIPT), "--model", str(config), "--rows", "64", "--blocks", "2", "--warps", "4",
           "--runs", "1", "--out", str(out)]
    for code, _, err in run_ranks(cmd, 2):
        assert code == 0, err[-3000:]
    data = json.loads(out.read_text())
    # 8 experts, 4 per rank, 64 rows each: half of each rank's 256 rows go to the peer, 512 bf16 elements a row
    assert data["gpus"] == 2 and data["bytes_to_peers"] == 128 * 512 * 2
    (row,) = data["runs"]
    assert (row["warps"], row["comm_blocks"]) == (4, 2)
    assert RUNGS <= set(row) and set(row["host_launch_us"]) == RUNGS
