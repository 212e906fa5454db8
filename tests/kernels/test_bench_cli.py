"""`comet-dse bench` on two CPU ranks (gloo, interpreter), a tiny layer: the JSON it writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
pytest.importorskip("triton", reason="the kernels need triton (pip install -e '.[kernels]')")
if torch.cuda.is_available():
    pytest.skip("a CPU test: on GPUs the benchmark runs through torchrun", allow_module_level=True)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bench_writes_one_json_with_every_timing(tmp_path):
    port = _port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "TRITON_INTERPRET": "1", "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "comet_dse.cli", "bench", "--shape", "8,2,32,48", "--tokens", "5,16",
               "--comm-blocks", "2", "--programs", "4", "--tile", "16x16", "--block-k", "16", "--n-splits", "2", "--runs", "2", "--warmup", "1", "--out", str(tmp_path)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    files = list(tmp_path.glob("bench-*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    assert {"gpu", "gpus", "driver", "torch", "triton", "command", "model", "ep", "tp", "runs"} <= set(result)
    assert result["gpus"] == 2 and result["ep"] == 2
    assert [r["tokens"] for r in result["runs"]] == [5, 16]
    for r in result["runs"]:
        assert set(r["timings_us"]) == {"b0", "b1", "fused", "compute_only", "comm_only"}
        assert all(v > 0 for v in r["timings_us"].values())
        assert r["max_rel_error"] < 1e-4  # fp32 on the CPU


def test_bench_needs_no_simulator_dependencies():
    code = ("import sys; sys.modules['simpy'] = sys.modules['optuna'] = sys.modules['plotly'] = None; "
            "from comet_dse.cli import build_parser; build_parser().parse_args(['bench', '--tokens', '8']); "
            "import comet_dse.commands.bench, comet_dse.kernels.fused_layer, comet_dse.kernels.baselines; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert out.stdout.strip() == "ok", out.stderr
