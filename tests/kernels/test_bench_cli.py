"""`comet-dse bench` on two CPU ranks (gloo, interpreter), a tiny layer: the JSON it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_ranks

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
pytest.importorskip("triton", reason="the kernels need triton (pip install -e '.[kernels]')")
if torch.cuda.is_available():
    pytest.skip("a CPU test: on GPUs the benchmark runs through torchrun", allow_module_level=True)


def test_bench_writes_one_json_with_every_timing(tmp_path):
    cmd = [sys.executable, "-m", "comet_dse.cli", "bench", "--shape", "8,2,32,48", "--tokens", "5,16",
           "--comm-blocks", "0,2", "--comm-blocks1", "2", "--chunks", "2", "--programs", "4", "--tile", "16x16", "--block-k", "16",
           "--n-splits", "2", "--runs", "2", "--warmup", "1", "--tile-order", "layout,expert", "--tile-layout", "merged,by-source",
           "--out", str(tmp_path)]
    for code, out, err in run_ranks(cmd, 2):
        assert code == 0, err[-2000:]
    files = list(tmp_path.glob("bench-*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    assert {"gpu", "gpus", "driver", "torch", "triton", "command", "model", "ep", "tp", "kind", "runs"} <= set(result)
    assert result["gpus"] == 2 and result["ep"] == 2 and result["align"] == "queued"  # the default: behind a spin and an all-reduce
    # one run per token count and configuration: each tile layout and order with the copy engine (0) and 2
    # communication blocks; the copy engine runs by source whatever was asked, so once per order
    assert [(r["tokens"], r["config"]["tile_layout"], r["config"]["tile_order"], r["config"]["comm_blocks0"])
            for r in result["runs"]] == [
        (t, "by-source" if b == 0 else layout, order, b) for t in (5, 16) for layout in ("merged", "by-source")
        for order in ("layout", "expert") for b in (0, 2) if b or layout == "merged"]
    per_layer = {f"layer{i}:{v}" for i in (0, 1) for v in ("fused", "compute_only", "comm_only")}
    for r in result["runs"]:
        # each variant's two layer kernels timed alone too, where the blocks move the rows (not the copy engine)
        assert set(r["timings_us"]) == {"naive", "b0_grouped", "b0_loop", "b0", "b1_c2_grouped", "b1_c2_loop", "b1_c2",
                                        "fused", "compute_only", "comm_only"} | (per_layer if r["config"]["comm_blocks0"] else set())
        # B0 and B1 each keep the faster of their two expert GEMMs (slowest-rank figures, decided alike on every rank)
        assert r["timings_us"]["b0"] == min(r["timings_us"]["b0_grouped"], r["timings_us"]["b0_loop"])
        assert r["timings_us"]["b1_c2"] == min(r["timings_us"]["b1_c2_grouped"], r["timings_us"]["b1_c2_loop"])
        assert all(v > 0 for v in r["timings_us"].values())
        assert all(len(v) == 2 for v in r["per_rank_us"].values())  # every rank's figure is kept
        assert r["timings_us"]["fused"] == max(r["per_rank_us"]["fused"])  # the slowest rank's
        assert r["capacity"] == 16 and r["graphs"] is False  # no CUDA graphs on the CPU
        assert set(r["max_rel_error"]) == {"naive", "b0_grouped", "b0_loop", "b0", "b1_c2_grouped", "b1_c2_loop", "b1_c2",
                                           "fused"}
        assert max(r["max_rel_error"].values()) < 1e-4  # fp32 on the CPU
        assert r["remote_bytes_out"] > 0


def _small_fused_runs(tmp_path, *options: str) -> list[dict]:
    """bench --kind fused on two CPU ranks at a tiny shape with `options`; the runs of its JSON, each checked
    against the reference."""
    cmd = [sys.executable, "-m", "comet_dse.cli", "bench", "--shape", "8,2,32,48", "--tokens", "12", *options,
           "--kind", "fused", "--programs", "4", "--tile", "16x16", "--block-k", "16", "--n-splits", "2", "--runs", "1",
           "--warmup", "1", "--out", str(tmp_path)]
    for code, out, err in run_ranks(cmd, 2):
        assert code == 0, err[-2000:]
    runs = json.loads(next(tmp_path.glob("bench-*.json")).read_text())["runs"]
    assert all(r["max_rel_error"]["fused"] < 1e-4 for r in runs)
    return runs


def test_bench_times_layer0s_pulls_in_pieces_beside_whole_tiles(tmp_path):
    runs = _small_fused_runs(tmp_path, "--comm-blocks", "0,2", "--comm-blocks1", "2", "--pull-rows", "16,4")
    # each piece size with 2 blocks; the copy engine pulls nothing itself, so it runs once
    assert [(r["config"]["comm_blocks0"], r["config"]["pull_rows"]) for r in runs] == [(0, 16), (2, 16), (2, 4)]


def test_bench_times_both_deals_of_the_remote_tiles(tmp_path):
    runs = _small_fused_runs(tmp_path, "--comm-blocks", "0,2", "--comm-blocks1", "2", "--comm-deal", "static,dynamic")
    # every configuration with each deal (the copy engine's pushes deal too), the deal recorded in the config
    assert [(r["config"]["comm_deal"], r["config"]["comm_blocks0"]) for r in runs] == [
        ("static", 0), ("static", 2), ("dynamic", 0), ("dynamic", 2)]


def test_bench_times_each_split_k_and_records_the_pieces_that_ran(tmp_path):
    runs = _small_fused_runs(tmp_path, "--comm-blocks", "2", "--split-k", "1,4", "--split-k-min", "16")
    # F = 48 holds three 16-wide pieces at most: split_k 4 runs as 3
    assert [(r["config"]["split_k"], r["config"]["layer1_pieces"]) for r in runs] == [(1, 1), (4, 3)]


@pytest.mark.parametrize("argv, message", [
    (["--tokens", "0"], "--tokens: must be integers >= 1"),
    (["--gpus", "3", "--shape", "8,2,32,48"], "--gpus: must be an integer >= 1, a multiple of --tp 1, whose quotient divides the 8 experts"),
    (["--tp", "2", "--shape", "8,2,32,48"], "--tp: must be >= 1 and cut F=48 into multiples of 16, got 2"),
    (["--gpus", "4", "--tp", "2", "--ep", "4", "--kind", "baselines"], "--ep: EP x TP must equal --gpus 4, got 4 x 2"),
    (["--ep", "3", "--shape", "8,2,32,48"], "--ep: must be an integer >= 1 that divides the 8 experts, got 3"),
    (["--model", "mixtral-8x7b", "--tp", "2", "--plan", "results/examples/mixtral-8x7b-h800-ep8-tp1.json"],
     "--plan: the plan is for EP=8 x TP=1, not this run's --ep/--tp"),
    (["--comm-blocks", "-1"], "--comm-blocks: must be integers >= 0"),
    (["--chunks", "0"], "--chunks: must be integers >= 1"),
    (["--block-k", "0"], "--block-k: must be >= 1"),
    (["--warmup", "-1"], "--warmup: must be >= 0"),
    (["--copy-elems", "1000"], "--copy-elems: must be a power of two in [256, 131072]"),
    (["--stages1", "5"], "--stages1: must be an integer in [1, 4] (more do not fit in an SM's shared memory), got 5"),
    (["--programs", "0"], "--programs: must be >= 2"),
    (["--tile", "100x100"], "--tile: tile sizes must be powers of two"),
    (["--block-n1", "96"], "--block-n1: tile sizes must be powers of two"),
    (["--tile", "big"], "--tile: expected BMxBN"),
    (["--pull-rows", "48"], "--pull-rows: each must divide the tile's BM 128, got 48"),
    (["--pull-rows", "0"], "--pull-rows: must be integers >= 1"),
    (["--split-k", "0"], "--split-k: must be integers >= 1"),
    (["--split-k", "4,17"], "--split-k: each must be an integer in [1, 16], got 4,17"),
    (["--split-k-min", "0"], "--split-k-min: must be >= 1, got 0"),
    (["--tile-order", "layout,random"], "--tile-order: must be comma-separated values of layout, expert"),
    (["--tile-layout", "mixed"], "--tile-layout: must be comma-separated values of merged, by-source"),
    (["--comm-deal", "static,greedy"], "--comm-deal: must be comma-separated values of static, dynamic"),
    (["--shape", "8,2,32"], "--shape: expected E,top_k,H,F"),
    (["--shape", "4,8,32,48"], "--shape: top_k=8 exceeds the 4 experts"),
    (["--capacity", "4", "--tokens", "8"], "--capacity: must hold the largest --tokens (8)"),
    (["--tokens", "8"], "bench: launch it once per GPU"),
])
def test_bad_bench_input_is_one_line_before_any_work(argv, message):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    out = subprocess.run([sys.executable, "-m", "comet_dse.cli", "bench", *argv], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr


def test_bench_needs_no_simulator_dependencies():
    code = ("import sys; sys.modules['simpy'] = sys.modules['optuna'] = sys.modules['plotly'] = None; "
            "from comet_dse.cli import build_parser; build_parser().parse_args(['bench', '--tokens', '8']); "
            "import comet_dse.commands.bench, comet_dse.kernels.bench_runner; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert out.stdout.strip() == "ok", out.stderr


def test_bench_gpus_launches_its_own_ranks(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "comet_dse.cli", "bench", "--gpus", "2", "--shape", "8,2,32,48", "--tokens", "5",
           "--comm-blocks", "2", "--chunks", "2", "--programs", "4", "--tile", "16x16", "--block-k", "16", "--n-splits", "2",
           "--runs", "1", "--warmup", "0", "--kind", "fused", "--dedup", "--prereduce", "--align", "host",
           "--out", str(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    files = list(tmp_path.glob("bench-*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    assert result["gpus"] == 2 and result["runs"][0]["max_rel_error"]["fused"] < 1e-4
    assert result["align"] == "host"  # each timed call right after a host barrier, as every run before 102
    assert result["runs"][0]["config"]["dedup"] and result["runs"][0]["config"]["prereduce"]  # asked for; off by default
    assert result["runs"][0]["remote_bytes_out"] is None  # the every-slot count would overstate a pre-reduced layer1


def test_bench_times_the_layers_under_tensor_parallelism(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "comet_dse.cli", "bench", "--gpus", "2", "--tp", "2", "--shape", "8,2,32,64", "--tokens", "5,16",
           "--comm-blocks", "2", "--chunks", "2", "--programs", "4", "--tile", "16x16", "--block-k", "16", "--n-splits", "2",
           "--runs", "1", "--warmup", "0", "--out", str(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    files = list(tmp_path.glob("bench-*-ep1-tp2-*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    assert (result["gpus"], result["ep"], result["tp"]) == (2, 1, 2)
    for r in result["runs"]:  # no naive layer under TP; the fused layer through virtual experts
        assert set(r["timings_us"]) == {"b0_grouped", "b0_loop", "b0", "b1_c2_grouped", "b1_c2_loop", "b1_c2", "fused",
                                        "compute_only", "comm_only",
                                        *(f"layer{i}:{v}" for i in (0, 1) for v in ("fused", "compute_only", "comm_only"))}
        assert set(r["max_rel_error"]) == {"b0_grouped", "b0_loop", "b0", "b1_c2_grouped", "b1_c2_loop", "b1_c2", "fused"}
        assert max(r["max_rel_error"].values()) < 1e-4 and r["remote_bytes_out"] is None
        assert not r["config"]["dedup"] and not r["config"]["prereduce"]  # the default: every row over the link


def test_a_tp_plan_tuned_on_comets_tp_layer_gets_a_note(tmp_path):
    plan = json.loads((Path(__file__).resolve().parents[2] / "results/examples/mixtral-8x7b-h800-ep8-tp1.json").read_text())
    plan["ep"], plan["tp"] = 1, 2
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    argv = ["--model", "mixtral-8x7b", "--tp", "2", "--plan", str(path)]
    out = subprocess.run([sys.executable, "-m", "comet_dse.cli", "bench", *argv], capture_output=True, text=True, env=env)
    # the note, then the launch refusal (no GPU here): the plan itself is accepted
    assert out.returncode == 2 and "tune --tp-dispatch rows" in out.stderr and "launch it once per GPU" in out.stderr
    for bucket in plan["buckets"]:
        bucket["config"]["tp_dispatch"] = "rows"
    path.write_text(json.dumps(plan))
    out = subprocess.run([sys.executable, "-m", "comet_dse.cli", "bench", *argv], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "tp-dispatch" not in out.stderr
