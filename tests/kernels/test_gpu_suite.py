"""The fused layer's GPU suite (benchmarks/gpu_fused_ep.py) on every GPU of this machine, in bf16:
the device plan, adversarial routings, the capacity, graph replays with fresh routings, a slow
producer and one that never signals; expert parallel, and under TP over every GPU. Skips, saying why,
where there is no GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
pytest.importorskip("triton", reason="the kernels need triton (pip install -e '.[kernels]')")

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_fused_ep.py"


@pytest.mark.gpu
@pytest.mark.parametrize("parallel", ["ep", "tp"])
def test_the_gpu_suite_passes_on_every_gpu_here(tmp_path, parallel):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here: the GPU suite needs one (CPU coverage: test_fused_layer.py in the interpreter)")
    gpus = torch.cuda.device_count()
    if parallel == "tp" and gpus < 2:
        pytest.skip("TP needs two GPUs or more")
    out = tmp_path / "suite.json"
    tp = gpus if parallel == "tp" else 1
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus), str(SUITE),
                          "--replays", "200", "--tp", str(tp), "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    checks = json.loads(out.read_text())["checks"]
    assert checks["device_plan"]["equal"]
    assert all(a["max_rel_error"] < 1e-2 and a["over_capacity_raised"] for a in checks["adversarial"].values())
    assert checks["graph_replays"]["max_rel_error"] < 1e-2
    assert checks["delayed_producer"]["max_rel_error"] < 1e-2
    assert "never raised the flag" in (checks["stuck_producer"]["raised"] or "")
