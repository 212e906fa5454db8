"""`comet-dse calibrate` on CPU ranks (gloo, Triton's interpreter, a tiny model): the profile it
writes passes the format's checks and holds what was measured; the format's checks themselves;
the fits on curves with known answers."""

from __future__ import annotations

import copy
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
pytest.importorskip("triton", reason="the kernels need triton (pip install -e '.[kernels]')")

from comet_dse.hardware import HARDWARE_PRESETS  # noqa: E402
from tests.conftest import run_ranks  # noqa: E402
from comet_dse.kernels.calibration import (  # noqa: E402
    HOST_ROUNDS,
    ProfileError,
    check_profile,
    fit_alltoall,
    fit_comm_blocks,
    gpu_slug,
    item_cost,
    program_spans,
    share_lost_to_gemm,
)

# E=8, top-2, H=32, F=48: 4 experts per rank on 2 ranks
TINY = {"model_type": "mixtral", "_name_or_path": "tiny-moe", "hidden_size": 32, "intermediate_size": 48,
        "num_local_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 1}
GRID = ["--rows", "16,32", "--comm-blocks", "1", "--copy-blocks", "1,2", "--alltoall-max", "16384", "--copy-kib", "16",
        "--tile", "16x16", "--block-k", "16", "--programs", "4", "--runs", "2", "--warmup", "1"]
# the GPU machines have none of the simulator's dependencies: the whole run must do without them
BLOCKED = ("simpy", "optuna", "plotly", "scipy")
LAUNCH = ("import sys; sys.modules.update(dict.fromkeys({blocked!r})); from comet_dse.cli import main; "
          "sys.exit(main(sys.argv[1:]))").format(blocked=BLOCKED)


def _calibrate(tmp_path, world: int, *extra: str) -> tuple[dict, str, Path]:
    """Run calibrate on `world` CPU ranks; (the profile, rank 0's stdout, its path)."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "hardware"
    ranks = run_ranks([sys.executable, "-c", LAUNCH, "calibrate", "--models", str(config), *GRID, "--out", str(out), *extra],
                      world)
    for code, _, err in ranks:
        assert code == 0, err[-3000:]
    files = list(out.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text()), ranks[0][1], files[0]


def test_two_ranks_write_a_full_profile(tmp_path):
    profile, stdout, path = _calibrate(tmp_path, 2, "--name", "tiny-x2")
    check_profile(profile)
    assert path.name == "tiny-x2.json"
    assert profile["name"] == "tiny-x2" and profile["gpus"] == 2 and profile["base"] == "h100-sxm"
    prov = profile["provenance"]
    assert prov["gpu"] == "cpu" and prov["gpus"] == 2 and prov["quick"] is False and "calibrate" in prov["command"]
    # by default the fused kernels' tables in the GPU's sustained state, the library's alone (--sustained fused)
    gemm_notes = {n.split(":")[0]: n for n in prov["notes"] if n.startswith("grouped_gemm")}
    assert "sustained state" in gemm_notes["grouped_gemm fused"]
    assert "each launch timed alone" in gemm_notes["grouped_gemm grouped_mm and loop"]
    tables = profile["tables"]
    # one grouped_mm and one fused entry per GEMM of the model: GEMM0 (H -> F, SwiGLU) and GEMM1 (F -> H)
    entries = {(e["impl"], e["K"], e["N"], e["swiglu"]): e for e in tables["grouped_gemm"]}
    gemms = ((32, 48, True), (48, 32, False))
    assert set(entries) == {(impl, k, n, sw) for impl in ("grouped_mm", "loop", "fused") for k, n, sw in gemms}
    for e in entries.values():
        assert e["experts"] == 4 and e["rows_per_expert"] == [16, 32] and min(e["us"]) > 0
    for k, n, sw in gemms:
        fused = entries["fused", k, n, sw]
        assert fused["sms"] == 4 - 1 and (fused["block_m"], fused["block_n"]) == (16, 16)  # 4 programs, 1 comm block
        assert entries["grouped_mm", k, n, sw]["block_m"] is None
    # the fused forward's launches in chains timed as bench times a call, over their time at the power cap: the
    # tiny grid's largest rows, chains of 1, 2, 4, ... calls (the interpreter's call outlasts the longest chain's work,
    # so two), each chain's time over its calls at the cap
    power = tables["power_state"]
    assert power["model"] == "tiny-moe" and power["rows_per_expert"] == 32 and power["calls"] == [1, 2]
    assert power["call_us"] > 0 and len(power["over_sustained"]) == 2 and min(power["over_sustained"]) > 0
    assert any(n.startswith("power_state: layer0 + layer1 of a FusedMoE") for n in prov["notes"])
    assert set(tables["memory_pass_GBps"]) == {"gather", "scatter", "elementwise", "fp32_reduce", "combine"}
    assert tables["alltoall"] == [{"world": 2, "bytes_per_rank": [4096, 16384], "us": tables["alltoall"][0]["us"]}]
    cb = tables["comm_blocks"]
    assert cb["pull"]["blocks"] == cb["push"]["blocks"] == [1, 2]
    # the layer's own tile walk, both ways, at the same block counts (all below the 4 programs)
    (lc,) = tables["layer_comm_blocks"]  # one per model: its row width tells them apart
    assert lc["model"] == "tiny-moe" and lc["hidden"] == 32
    assert lc["pull"]["blocks"] == lc["push"]["blocks"] == [1, 2] and min(lc["pull"]["GBps"] + lc["push"]["GBps"]) > 0
    # ... and what a block spends per item beside its rows: the curve's items are whole 16-row tiles
    assert lc["item_rows"] == 16 and set(lc["item_us"]) == {"pull", "push"} and min(lc["item_us"].values()) >= 0
    note = next(n for n in prov["notes"] if n.startswith("layer_comm_blocks:"))
    # timed against the same rows in finer items: halves of tiles pulled, other column splits pushed
    assert re.search(r"per item \(KiB, µs\) at 1, 2 blocks: pull \(([0-9.]+), [0-9.]+\) \(\1, [0-9.]+\) against "
                     r"\(([0-9.]+), [0-9.]+\) \(\2, [0-9.]+\) \(8-row pieces\), push .* splits\)", note)
    assert "combine" in tables["memory_pass_GBps"]
    # B0 at a few tokens and its plan alone: the host's chain after the sync is their difference; both again
    # timed as bench --align queued times B0, and the plan over tokens too; and B0 with no host sync (EP=1 x TP=2)
    # both ways: what the host launches of a whole call, and what it has left where it started behind a spin
    assert set(tables["b0_host"]) == {"tokens", "plan_us", "b0_us", "queued_plan_us", "queued_b0_us", "unsynced_us",
                                      "queued_unsynced_us"}
    assert min(tables["b0_host"].values()) > 0
    note = next(n for n in prov["notes"] if n.startswith("b0_host.unsynced_us:"))
    per_round = [float(v) for v in re.search(r"after a barrier with no spin, as b0_us \(per round: ([0-9, ]+) µs",
                                             note).group(1).split(", ")]
    assert len(per_round) == HOST_ROUNDS and "EP=1 x TP=2" in note
    assert tables["b0_host"]["unsynced_us"] == pytest.approx(statistics.median(per_round), abs=0.5)
    assert len(tables["host_sync"]["queued_us"]) == len(tables["host_sync"]["tokens"])
    # ... each the median of HOST_ROUNDS rounds spread over the run, every round's figure in the note
    note = next(n for n in prov["notes"] if n.startswith("b0_host:"))
    per_round = [float(v) for v in re.search(r"B0 per round: ([0-9, ]+) µs", note).group(1).split(", ")]
    assert len(per_round) == HOST_ROUNDS
    assert tables["b0_host"]["b0_us"] == pytest.approx(statistics.median(per_round), abs=0.5)
    assert stdout.count("host round ") == HOST_ROUNDS
    # B0's plan over tokens, the figure its point at HOST_SYNC_TOKENS (capped at the pass rows' pairs)
    host_sync = tables["host_sync"]
    assert host_sync["top_k"] == 2 and host_sync["tokens"][0] == 8 and len(host_sync["tokens"]) == len(host_sync["us"]) >= 3
    assert profile["figures"]["host_sync_us"] == host_sync["us"][host_sync["tokens"].index(4096)]
    figures = profile["figures"]
    assert {"gemm_tflops", "hbm_GBps", "kernel_launch_us", "host_sync_us", "link_GBps", "comm_saturation"} <= set(figures)
    # the interpreter copies at well under 1 MB/s per block: below what a profile takes, so left out, with a note
    if "comm_block_GBps" not in figures:
        assert min(cb["pull"]["GBps"]) < 1e-3
        assert any(n.startswith("comm_block_GBps: measured") and "left to the base preset" in n for n in prov["notes"])
    assert "sms" not in figures  # no device properties on the CPU: left to the base preset
    assert set(profile["sources"]) == set(figures)
    assert figures["link_GBps"] == max(*cb["pull"]["GBps"], *cb["push"]["GBps"], cb["copy_engine_GBps"])
    # no concurrent kernels in the interpreter: no contention table, and the profile says why
    assert "gemm_contention" not in tables
    assert any(note.startswith("gemm_contention: not measured") for note in prov["notes"])
    # no CUDA graphs on the CPU: the graphed forward's launches keep kernel_launch_us, and the profile says why
    assert "graph_launch_us" not in figures and "kernel_launch_us" in figures
    assert any(note.startswith("graph_launch_us: not measured on the CPU") for note in prov["notes"])
    # nor of the forward without its layers, graphed or with the copy engine (its steps ran eagerly, over both
    # ranks' barriers), from a host barrier or queued behind a spin
    for key in ("forward_fixed_us", "copy_engine_fixed_us", "forward_fixed_queued_us", "copy_engine_fixed_queued_us",
                "copy_engine_covered_us", "copy_engine_covered_queued_us"):
        assert key not in figures
        assert any(note.startswith(f"{key}: not measured on the CPU") for note in prov["notes"])
    # nor B0's loop against its torch._grouped_mm: both run on the host there
    assert "loop_mm_host_us" not in figures
    assert any(note.startswith("loop_mm_host_us: not measured on the CPU") for note in prov["notes"])
    for table in ("dense mm", "memory passes", "alltoall x2", "host sync", "B0 at 8 tokens", "comm blocks pull", "comm blocks push",
                  "grouped_gemm grouped_mm", "grouped_gemm fused"):
        assert f"] {table}" in stdout, stdout
    assert "wrote " in stdout
    # the simulator's reader takes it: figures over the base preset, the tables attached
    measured = pytest.importorskip("comet_dse.measured", reason="the reader (comet_dse/measured.py) is not in this tree")
    loaded = measured.load_measured(path, profile)
    assert loaded.name == "tiny-x2" and loaded.link_GBps == figures["link_GBps"]
    assert loaded.host_sync_us == figures["host_sync_us"] and loaded.measured is not None


def test_one_rank_writes_a_partial_profile_and_says_so(tmp_path):
    profile, stdout, path = _calibrate(tmp_path, 1, "--runs", "1", "--warmup", "0")
    check_profile(profile)
    assert profile["name"] == "cpu-x1" and profile["gpus"] == 1
    assert set(profile["tables"]) == {"grouped_gemm", "memory_pass_GBps", "power_state"}  # what one GPU can measure
    assert not {"link_GBps", "host_sync_us", "collective_efficiency"} & set(profile["figures"])
    assert "note: one GPU: a partial profile" in stdout
    # the same tables claimed for 2 GPUs would lack the all-to-all the simulator needs
    with pytest.raises(ProfileError, match=r"tables\.alltoall: missing \(required\)"):
        check_profile({**profile, "gpus": 2, "provenance": {**profile["provenance"], "gpus": 2}})
    # the simulator's reader takes it for one-GPU workloads and refuses more, naming the missing table
    measured = pytest.importorskip("comet_dse.measured", reason="the reader (comet_dse/measured.py) is not in this tree")
    from comet_dse.errors import UserError

    tables = measured.load_measured(path, profile).measured
    assert tables.alltoall == {} and tables.alltoall_us(1, 1e6) == 0.0
    with pytest.raises(UserError, match=r"hardware\.tables\.alltoall: not measured \(calibrated on one GPU"):
        tables.check_world(2)


# ---- the format's checks on a hand-made profile ------------------------------------------------

VALID = {
    "format": "comet-dse-profile/1", "name": "h100-x2", "base": "h100-sxm", "gpus": 2,
    "provenance": {"gpu": "NVIDIA H100 80GB HBM3", "gpus": 2, "driver": "580", "torch": "2.11", "triton": "3.6",
                   "date": "2026-11-25", "command": "comet-dse calibrate", "quick": True},
    # graph_launch_us, forward_fixed_us: optional figures (float | None), as a GPU's calibrate writes them
    "figures": {"sms": 132, "link_GBps": 350.0, "collective_efficiency": 0.7, "graph_launch_us": 1.9,
                "forward_fixed_us": 48.0, "copy_engine_fixed_us": 700.0, "loop_mm_host_us": 25.0},
    "sources": {"sms": "device properties", "link_GBps": "peer copy_", "collective_efficiency": "fit",
                "graph_launch_us": "a CUDA graph of add_ kernels", "forward_fixed_us": "the graphed forward, no layers",
                "copy_engine_fixed_us": "the copy engine's forward, no layers",
                "loop_mm_host_us": "B0's loop less its torch._grouped_mm"},
    "tables": {
        "grouped_gemm": [
            {"impl": "grouped_mm", "K": 2048, "N": 1408, "swiglu": True, "experts": 32, "sms": 132, "block_m": None,
             "block_n": None, "rows_per_expert": [16, 32], "us": [50.0, 60.0]},
            {"impl": "fused", "K": 2048, "N": 1408, "swiglu": True, "experts": 32, "sms": 116, "block_m": 128,
             "block_n": 128, "rows_per_expert": [16, 32], "us": [80.0, 90.0]}],
        "memory_pass_GBps": {"gather": 2500.0, "scatter": 2400.0, "elementwise": 2700.0, "fp32_reduce": 2200.0},
        "alltoall": [{"world": 2, "bytes_per_rank": [4096, 16384], "us": [20.0, 21.0]}],
        "comm_blocks": {"pull": {"blocks": [1, 2], "GBps": [20.0, 40.0]}, "push": {"blocks": [1, 2], "GBps": [21.0, 41.0]},
                        "copy_engine_GBps": 380.0},
        "gemm_contention": {"copy_blocks": [0, 16], "slowdown": [1.0, 0.99]},
        "copy_contention": {"copy_blocks": [1, 16], "slowdown": [1.01, 1.2]},
        "push_contention": {"copy_blocks": [1, 16], "slowdown": [1.02, 1.3]},
        "layer_copy_contention": [{"model": "tiny-moe", "hidden": 32, "ffn": 48, "copy_blocks": [1, 16], "pull": [1.0, 0.25],
                                   "push": [0.0, 0.4]}],
        "gemm1_contention": {"copy_blocks": [0, 16], "slowdown": [1.0, 1.1]},
        "layer_comm_blocks": {"pull": {"blocks": [1, 2], "GBps": [18.0, 36.0]}, "push": {"blocks": [1, 2], "GBps": [19.0, 38.0]}},
        "b0_host": {"tokens": 8, "plan_us": 300.0, "b0_us": 700.0},
        "host_sync": {"top_k": 4, "tokens": [8, 4096], "us": [250.0, 500.0]},
    },
}


def _set(data: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data[int(key)] if isinstance(data, list) else data[key]
    if value is _DELETE:
        del data[last]
    else:
        data[last] = value


_DELETE = object()


def test_the_hand_made_profile_passes():
    check_profile(copy.deepcopy(VALID))


@pytest.mark.parametrize("path, value, field", [
    ("format", "comet-dse-profile/2", "hardware.format"),
    ("extra", 1, "hardware.: keys must be"),
    ("base", "a100", "hardware.base"),
    ("provenance.driver", "", "hardware.provenance.driver"),
    ("figures.link_GBps", -1.0, "hardware.figures.link_GBps"),
    ("figures.sms", 132.5, "hardware.figures.sms"),
    ("figures.nonsense_GBps", 1.0, "hardware.figures.nonsense_GBps"),
    ("figures.collective_efficiency", 1.5, "hardware.figures.collective_efficiency"),
    ("figures.link_GBps", 1e-4, "hardware.figures.link_GBps: must be in [0.001"),
    ("figures.graph_launch_us", 0.0, "hardware.figures.graph_launch_us: must be finite and > 0"),
    ("figures.nics_per_node", 1.5, "hardware.figures.nics_per_node: must be an integer"),
    ("sources.link_GBps", _DELETE, "hardware.sources"),
    ("tables.grouped_gemm.0.impl", "cublas", "hardware.tables.grouped_gemm[0].impl"),
    ("tables.grouped_gemm.0.rows_per_expert", [32, 16], "hardware.tables.grouped_gemm[0].rows_per_expert"),
    ("tables.grouped_gemm.0.us", [50.0], "hardware.tables.grouped_gemm[0].us"),
    ("tables.grouped_gemm.0.us", [50.0, float("nan")], "hardware.tables.grouped_gemm[0].us[1]"),
    ("tables.grouped_gemm.0.block_m", 128, "hardware.tables.grouped_gemm[0].block_m"),
    ("tables.grouped_gemm.1.block_n", None, "hardware.tables.grouped_gemm[1].block_n"),
    ("tables.grouped_gemm.0.impl", "fused", "hardware.tables.grouped_gemm[0].block_m"),
    ("tables.memory_pass_GBps.gather", 0.0, "hardware.tables.memory_pass_GBps.gather"),
    ("tables.memory_pass_GBps", _DELETE, "hardware.tables.memory_pass_GBps: missing"),
    ("tables.alltoall", _DELETE, "hardware.tables.alltoall: missing"),
    ("tables.alltoall.0.world", 8, "hardware.tables.alltoall[0].world: 8 GPUs, but the profile measured 2"),
    ("tables.alltoall.0.bytes_per_rank", [4096, 4096], "hardware.tables.alltoall[0].bytes_per_rank"),
    ("tables.comm_blocks.pull.GBps", [20.0, -40.0], "hardware.tables.comm_blocks.pull.GBps[1]"),
    ("tables.comm_blocks.copy_engine_GBps", 0, "hardware.tables.comm_blocks.copy_engine_GBps"),
    ("tables.gemm_contention.copy_blocks", [1, 16], "hardware.tables.gemm_contention.copy_blocks: must start at 0"),
    ("tables.gemm_contention.slowdown", [1.1, 1.2], "hardware.tables.gemm_contention.slowdown: must start at 1.0"),
    ("tables.gemm_contention.slowdown", [1.0, 0.0], "hardware.tables.gemm_contention.slowdown[1]"),
    ("tables.copy_contention.slowdown", [1.0, 0.0], "hardware.tables.copy_contention.slowdown[1]"),
    ("tables.layer_comm_blocks.push.GBps", [19.0], "hardware.tables.layer_comm_blocks.push"),
    ("tables.layer_comm_blocks.pull", _DELETE, "hardware.tables.layer_comm_blocks.pull: missing"),
    ("tables.memory_pass_GBps.combine", -1.0, "hardware.tables.memory_pass_GBps.combine"),
    ("tables.memory_pass_GBps.fused", 1.0, "hardware.tables.memory_pass_GBps.fused: unknown key"),
    ("tables.copy_contention.copy_blocks", [16, 1], "hardware.tables.copy_contention.copy_blocks"),
    ("tables.push_contention.slowdown", [1.0, 0.0], "hardware.tables.push_contention.slowdown[1]"),
    ("tables.gemm1_contention.copy_blocks", [1, 16], "hardware.tables.gemm1_contention.copy_blocks: must start at 0"),
    ("tables.layer_copy_contention.0.push", [0.9, 0.4, 0.2], "hardware.tables.layer_copy_contention[0].push: must have as many"),
    ("tables.layer_copy_contention.0.push", [0.5, 1.5], "hardware.tables.layer_copy_contention[0].push[1]: must be in [0, 1]"),
    ("tables.layer_copy_contention.0.pull", _DELETE, "hardware.tables.layer_copy_contention[0].pull: missing"),
    ("tables.layer_copy_contention.0.copy_blocks", [0, 16], "hardware.tables.layer_copy_contention[0].copy_blocks[0]"),
    ("tables.layer_copy_contention.0.ffn", 0, "hardware.tables.layer_copy_contention[0].ffn"),
    ("tables.layer_copy_contention", [], "hardware.tables.layer_copy_contention: must be a JSON object or a non-empty list"),
    ("tables.b0_host.tokens", 8.5, "hardware.tables.b0_host.tokens"),
    ("tables.b0_host.b0_us", 0.0, "hardware.tables.b0_host.b0_us"),
    ("tables.b0_host.plan_us", _DELETE, "hardware.tables.b0_host.plan_us: missing"),
    ("tables.host_sync.top_k", 0, "hardware.tables.host_sync.top_k"),
    ("tables.host_sync.tokens", [4096, 8], "hardware.tables.host_sync.tokens"),
    ("tables.host_sync.us", [250.0], "hardware.tables.host_sync.us"),
    ("tables.host_sync.tokens", _DELETE, "hardware.tables.host_sync.tokens: missing"),
    # beyond the reader: what calibrate writes
    ("tables.grouped_gemm.0.rows_per_expert", [16, 32.5], "hardware.tables.grouped_gemm[0].rows_per_expert[1]: must be an integer"),
    ("tables.comm_blocks.pull.blocks", [1.0, 2], "hardware.tables.comm_blocks.pull.blocks[0]: must be an integer"),
    ("tables.comm_blocks.copy_engine_GBps", _DELETE, "hardware.tables.comm_blocks.copy_engine_GBps: missing"),
])
def test_a_broken_profile_names_its_field(path, value, field):
    data = copy.deepcopy(VALID)
    _set(data, path, value)
    with pytest.raises(ProfileError) as caught:
        check_profile(data)
    assert str(caught.value).startswith(field), str(caught.value)


def test_the_hand_made_profiles_graph_figures_reach_the_simulator(tmp_path):
    # run 70's calibrate measured graph_launch_us and then refused its own profile: optional figures
    # (float | None) were no figures to the check
    measured = pytest.importorskip("comet_dse.measured", reason="the reader (comet_dse/measured.py) is not in this tree")
    path = tmp_path / "h100-x2.json"
    path.write_text(json.dumps(VALID))
    loaded = measured.load_measured(path, copy.deepcopy(VALID))
    assert (loaded.graph_launch_us, loaded.forward_fixed_us, loaded.copy_engine_fixed_us, loaded.loop_mm_host_us) == (
        1.9, 48.0, 700.0, 25.0)


def test_one_entry_per_shape_and_sm_count_whatever_its_tile():
    # the reader would take a second fused tile of a shape (it prefers the tile asked for); calibrate writes one
    data = copy.deepcopy(VALID)
    data["tables"]["grouped_gemm"].append({**data["tables"]["grouped_gemm"][1], "block_n": 256})
    with pytest.raises(ProfileError, match=r"tables\.grouped_gemm\[2\]: repeats \(impl, K, N, swiglu, sms\)"):
        check_profile(data)


def test_grouped_gemm_needs_a_grouped_mm_entry():
    data = copy.deepcopy(VALID)
    data["tables"]["grouped_gemm"] = data["tables"]["grouped_gemm"][1:]
    with pytest.raises(ProfileError, match="needs at least one \"grouped_mm\" entry"):
        check_profile(data)


# ---- fits ----------------------------------------------------------------------------------------


def test_alltoall_fit_recovers_latency_and_bandwidth():
    sizes = [4096 * 4 ** i for i in range(9)]
    world, latency, bandwidth = 2, 25.0, 300.0
    us = [latency + b * (world - 1) / world / (bandwidth * 1e3) for b in sizes]
    fitted = fit_alltoall(sizes, us, world)
    assert fitted == pytest.approx((latency, bandwidth), rel=1e-6)
    assert fit_alltoall(sizes[:2], [30.0, 20.0], world) is None  # faster with more bytes: nothing to fit


@pytest.mark.parametrize("per_block, saturation", [(15.5, 4.0), (30.0, 2.0)])
def test_comm_block_fit_recovers_the_curve_it_came_from(per_block, saturation):
    from dataclasses import replace

    truth = replace(HARDWARE_PRESETS["h100-sxm"], link_GBps=350.0, comm_block_GBps=per_block, comm_saturation=saturation)
    blocks = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 132]
    gbps = [truth.comm_blocks_GBps(b) for b in blocks]
    c, p, worst = fit_comm_blocks(blocks, gbps, 350.0, HARDWARE_PRESETS["h100-sxm"])
    assert c == pytest.approx(per_block, rel=0.03) and p == pytest.approx(saturation, rel=0.1) and worst < 0.02


def test_gpu_slug():
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert gpu_slug("cpu") == "cpu"


# ---- --only STEPS --update PROFILE: a few tables re-measured into an existing profile ------------


def test_the_layers_copies_are_timed_once_per_model_at_the_first_ones_bytes(tmp_path):
    base = copy.deepcopy(VALID)
    base["provenance"].update(gpu="cpu")
    given = tmp_path / "base.json"
    given.write_text(json.dumps(base))
    narrow, wide = tmp_path / "narrow.json", tmp_path / "wide.json"
    narrow.write_text(json.dumps(TINY))
    wide.write_text(json.dumps({**TINY, "_name_or_path": "wide-moe", "hidden_size": 64}))
    out = tmp_path / "hardware"
    ranks = run_ranks([sys.executable, "-c", LAUNCH, "calibrate", "--models", f"{narrow},{wide}", *GRID, "--out", str(out),
                       "--only", "layer_copies", "--update", str(given)], 2)
    for code, _, err in ranks:
        assert code == 0, err[-3000:]
    (path,) = out.glob("*.json")
    profile = json.loads(path.read_text())
    check_profile(profile)
    tables = profile["tables"]["layer_comm_blocks"]
    assert [(t["model"], t["hidden"]) for t in tables] == [("tiny-moe", 32), ("wide-moe", 64)]
    # the wide model's peers' rows fill half a tile an expert: its items are 8 rows, timed against items of 4
    assert [t["item_rows"] for t in tables] == [16, 8]
    # the wide model's rows are twice as long: half as many rows per expert move the first model's bytes
    note = next(n for n in profile["provenance"]["updates"][0]["notes"] if n.startswith("layer_comm_blocks:"))
    assert "tiny-moe 128 tokens per GPU, 64 rows to peers" in note and "wide-moe 64 tokens per GPU, 32 rows to peers" in note


def test_only_some_steps_go_into_the_profile_given(tmp_path):
    base = copy.deepcopy(VALID)
    base["provenance"].update(gpu="cpu", notes=["layer_comm_blocks: the old way", "alltoall: kept"])
    given = tmp_path / "base.json"
    given.write_text(json.dumps(base))
    profile, stdout, path = _calibrate(tmp_path, 2, "--only", "layer_copies", "--update", str(given))
    check_profile(profile)
    assert path.name == "h100-x2-layer_copies.json" and profile["name"] == "h100-x2-layer_copies"
    # the layer's copies measured here (the interpreter's rates), every other table and figure as given
    assert profile["tables"]["layer_comm_blocks"] != base["tables"]["layer_comm_blocks"]
    assert profile["tables"]["layer_comm_blocks"][0]["pull"]["blocks"] == [1, 2]
    assert {k: v for k, v in profile["tables"].items() if k != "layer_comm_blocks"} == \
        {k: v for k, v in base["tables"].items() if k != "layer_comm_blocks"}
    assert profile["figures"] == base["figures"] and profile["sources"] == base["sources"]
    prov = profile["provenance"]
    assert prov["date"] == base["provenance"]["date"] and prov["notes"] == ["alltoall: kept"]  # the stale note went
    update, = prov["updates"]
    assert update["steps"] == ["layer_copies"] and update["replaced"] == ["layer_comm_blocks"]
    assert update["gpu"] == "cpu" and "--only layer_copies" in update["command"]
    assert any(n.startswith("layer_comm_blocks:") for n in update["notes"])
    assert "] dense mm" not in stdout  # nothing else ran


def test_only_the_gemm_tables_sustained_replace_the_grouped_gemm_table(tmp_path):
    base = copy.deepcopy(VALID)
    base["provenance"]["gpu"] = "cpu"
    given = tmp_path / "base.json"
    given.write_text(json.dumps(base))
    profile, stdout, path = _calibrate(tmp_path, 2, "--only", "gemm", "--sustained", "all", "--update", str(given))
    check_profile(profile)
    assert path.name == "h100-x2-gemm.json"
    # every implementation's entries measured here at the tiny shapes; every other table and figure as given
    assert {e["impl"] for e in profile["tables"]["grouped_gemm"]} == {"grouped_mm", "loop", "fused"}
    assert profile["tables"]["grouped_gemm"] != base["tables"]["grouped_gemm"]
    assert {k: v for k, v in profile["tables"].items() if k != "grouped_gemm"} == \
        {k: v for k, v in base["tables"].items() if k != "grouped_gemm"}
    assert profile["figures"] == base["figures"]
    update, = profile["provenance"]["updates"]
    assert update["steps"] == ["gemm"] and update["replaced"] == ["grouped_gemm"] and "--sustained" in update["command"]
    notes = [n for n in update["notes"] if n.startswith("grouped_gemm")]
    assert len(notes) == 2 and all("sustained state" in n and "--sustained all" in n for n in notes)
    assert "] dense mm" not in stdout


def test_only_the_forwards_fixed_time_on_the_cpu_keeps_every_figure_and_says_why(tmp_path):
    base = copy.deepcopy(VALID)
    base["provenance"]["gpu"] = "cpu"
    given = tmp_path / "base.json"
    given.write_text(json.dumps(base))
    profile, stdout, _ = _calibrate(tmp_path, 2, "--only", "forward_fixed", "--update", str(given))
    check_profile(profile)
    # no CUDA graphs on the CPU: the graphed forward is not timed, so the given figures stay
    assert profile["figures"] == base["figures"] and profile["tables"] == base["tables"]
    update, = profile["provenance"]["updates"]
    assert update["steps"] == ["forward_fixed"] and update["replaced"] == []
    assert any(n.startswith("forward_fixed_us: not measured on the CPU") for n in update["notes"])
    assert any(n.startswith("forward_fixed_queued_us: not measured on the CPU") for n in update["notes"])
    # the copy-engine forward is the host rounds' (not this step's): nothing of it here
    assert not any(n.startswith("copy_engine_") for n in update["notes"])


@pytest.mark.parametrize("extra, message", [
    (["--only", "contention"], "--only and --update go together"),
    (["--update", "x.json"], "--only and --update go together"),
    (["--only", "dense", "--update", "x.json"], "--only: must list distinct steps of memory_passes, layer_copies, contention"),
    (["--only", "contention", "--update", "missing.json"], "--update: cannot read missing.json"),
])
def test_bad_only_or_update_is_one_line(tmp_path, extra, message):
    out = subprocess.run([sys.executable, "-m", "comet_dse.cli", "calibrate", "--out", str(tmp_path), *extra],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and out.stdout == "" and out.stderr.strip().count("\n") == 0, out.stderr
    assert message in out.stderr and not list(tmp_path.glob("*.json"))


def test_update_needs_a_profile_on_as_many_gpus(tmp_path):
    given = tmp_path / "base.json"
    given.write_text(json.dumps(VALID))  # 2 GPUs; this run has 1
    out = subprocess.run([sys.executable, "-m", "comet_dse.cli", "calibrate", "--out", str(tmp_path), "--only", "contention",
                          "--update", str(given)], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")})
    assert out.returncode == 2 and "--update" in out.stderr and "measured on 2 GPUs, this run has 1" in out.stderr


def test_update_on_another_kind_of_gpu_is_one_line_and_writes_nothing(tmp_path):
    given = tmp_path / "base.json"
    given.write_text(json.dumps(VALID))  # measured on an H100; these ranks are CPUs
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "hardware"
    ranks = run_ranks([sys.executable, "-c", LAUNCH, "calibrate", "--models", str(config), *GRID, "--out", str(out),
                       "--only", "memory_passes", "--update", str(given)], 2)
    (code, _, err), (other, _, _) = ranks
    assert code == 2 and other == 0 and err.count("\n") == 1, err
    assert err == f"comet-dse: error: --update: {given} was measured on NVIDIA H100 80GB HBM3, this run on cpu: not written\n"
    assert not out.exists() or not list(out.glob("*.json"))


@pytest.mark.parametrize("value, kept", [(0.0, False), (-3.0, False), (12.5, True)])
def test_a_figure_the_profile_loader_would_refuse_is_left_to_the_base_preset_with_a_note(value, kept):
    from types import SimpleNamespace

    from comet_dse.kernels.calibration import Calibration

    # e.g. copy_engine_covered_us: a spin's time subtracted from a forward's, clamped at 0 (the loader takes > 0 only)
    state = SimpleNamespace(notes=[], figures={}, sources={})
    Calibration._figure(state, "copy_engine_covered_us", value, "a source")
    assert ("copy_engine_covered_us" in state.figures) == kept and (len(state.notes) == 0) == kept
    if kept:
        check_profile({**VALID, "figures": {**VALID["figures"], **state.figures},
                       "sources": {**VALID["sources"], **state.sources}})


def test_a_blocks_item_cost_is_the_line_through_two_item_sizes_at_no_rows():
    # 128 KiB an item in 5.3 µs, 64 in 3.6: 1.7 µs for 64 KiB, so 1.9 µs of it is the item's own
    assert item_cost((128, 5.3), (64, 3.6)) == pytest.approx(1.9)
    assert item_cost((128, 5.0), (64, 1.0)) == 0.0  # a line below 0 at no rows is noise


def test_program_spans_run_from_the_first_start_to_each_roles_last_end():
    # programs 0-1 communicate, 2-3 compute; ns stamps (start, end)
    stamps = torch.tensor([[1_000, 91_000], [2_000, 61_000], [1_500, 41_000], [3_000, 51_000]], dtype=torch.int64)
    assert program_spans(stamps.reshape(-1), range(0, 2)) == (90.0, 50.0)
    assert program_spans(stamps.reshape(-1), range(2, 4)) == (50.0, 90.0)


@pytest.mark.parametrize("alone, beside, compute, expected", [
    (100.0, 150.0, 200.0, 1 / 3),  # ended first: two thirds of their pace throughout
    (300.0, 400.0, 200.0, 0.5),  # outlasted a 200 µs GEMM, lost 100 µs of it
    (300.0, 300.0, 200.0, 0.0),  # lost nothing
    (300.0, 290.0, 200.0, 0.0),  # faster beside: noise
    (300.0, 520.0, 200.0, 1.0),  # lost more than the GEMM lasted: at most all of it
])
def test_share_lost_to_gemm(alone, beside, compute, expected):
    assert share_lost_to_gemm(alone, beside, compute) == pytest.approx(expected)
