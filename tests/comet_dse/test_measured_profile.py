"""Measured hardware profiles ("comet-dse-profile/1", comet_dse/measured.py): the lookups on hand
values, bad profiles as one CLI line, the study identity, and the old flat format still read."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from comet_dse.cli import main
from comet_dse.errors import UserError
from comet_dse.hardware import HARDWARE_PRESETS, load_hardware, resolve_hardware
from comet_dse.measured import Curve
from comet_dse.models import MODEL_PRESETS
from comet_dse.search.study import TuneSpec
from comet_dse.workload import Workload

PROFILES = Path(__file__).resolve().parents[1] / "fixtures" / "profiles"
HAND = json.loads((PROFILES / "hand.json").read_text())
EXAMPLE = PROFILES / "h100-sxm-x2-synthetic.json"


def write(folder: Path, name: str, data: dict) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def edited(edit) -> dict:
    data = copy.deepcopy(HAND)
    edit(data)
    return data


# ---- the loader --------------------------------------------------------------------------


def test_loads_base_with_figures_and_tables():
    hw = load_hardware(PROFILES / "hand.json")
    base = HARDWARE_PRESETS["h100-sxm"]
    assert hw.name == "hand-measured" and hw.sms == 4 and hw.link_GBps == 64.0
    assert hw.gemm_tflops == base.gemm_tflops and hw.nic_GBps == base.nic_GBps  # not measured: the base's
    assert hw.measured is not None and hw.measured.gpus == 2
    assert hw.to_dict()["measured"]["tables"] == HAND["tables"]
    json.dumps(hw.to_dict())  # the simulate --json and validate outputs can carry it


def test_flat_profiles_still_load(tmp_path):
    hw = resolve_hardware(str(write(tmp_path, "flat", {"base": "h800", "link_GBps": 300})))
    assert hw.link_GBps == 300 and hw.measured is None and "measured" not in hw.to_dict()


# ---- the lookups on hand values ------------------------------------------------------------


def test_curve_loglog_interpolates_and_extrapolates_with_the_end_slopes():
    c = Curve((10.0, 100.0, 1000.0), (1.0, 10.0, 40.0))
    assert c.loglog(10.0) == pytest.approx(1.0)
    assert c.loglog(math.sqrt(10 * 100)) == pytest.approx(math.sqrt(10.0))  # halfway in logs
    assert c.loglog(1.0) == pytest.approx(0.1)  # first slope 1 carried down
    assert c.loglog(10000.0) == pytest.approx(160.0)  # last slope log(4) per decade carried up
    assert c.linear(50.0) == pytest.approx(10.0 * 40 / 90 + 1.0 * 50 / 90)
    assert c.linear(5.0) == 1.0 and c.linear(5.0, through_origin=True) == 0.5 and c.linear(5000.0) == 40.0


def test_grouped_gemm_lookup(tmp_path):
    t = load_hardware(PROFILES / "hand.json").measured
    assert t.expert_gemm_us("grouped_mm", 256, 128, True, 256, 4) == pytest.approx(2.0)
    assert t.expert_gemm_us("grouped_mm", 256, 128, True, 181, 4) == pytest.approx(181 / 128)  # slope 1 in log-log
    assert t.expert_gemm_us("grouped_mm", 256, 128, True, 256, 2) == pytest.approx(4.0)  # half the SMs
    assert t.expert_gemm_us("grouped_mm", 256, 128, True, 0, 4) == 0.0
    # a shape not measured: the nearest shape's TFLOP/s at the same rows (here 2x the FLOPs)
    assert t.expert_gemm_us("grouped_mm", 512, 128, True, 256, 4) == pytest.approx(4.0)
    assert t.expert_gemm_us("fused", 128, 256, False, 128, 2, (128, 128)) == pytest.approx(1.0)
    # an expert's share of a call of several experts
    data = edited(lambda d: d["tables"]["grouped_gemm"][0].update(experts=4))
    t4 = load_hardware_from(data, tmp_path)
    assert t4.expert_gemm_us("grouped_mm", 256, 128, True, 256, 4) == pytest.approx(0.5)


def test_grouped_mm_is_priced_by_its_waves_of_cluster_pairs(tmp_path):
    # one entry: K 1024, N 256, 2 experts, 4 SMs (2 pairs at a time); at 256 / 512 / 1024 rows an expert has
    # 1 / 2 / 4 pairs of 128x256 tiles, so 1 / 2 / 4 waves: 2.0 us per wave at each
    entry = {"impl": "grouped_mm", "K": 1024, "N": 256, "swiglu": False, "experts": 2, "sms": 4, "block_m": None,
             "block_n": None, "rows_per_expert": [256, 512, 1024], "us": [2.0, 4.0, 8.0]}
    t = load_hardware_from(edited(lambda d: d["tables"].update(grouped_gemm=[entry])), tmp_path)
    call = t.grouped_mm_call_us
    assert call(1024, 256, False, [256, 256], 4) == pytest.approx(2.0)
    # 300 rows are 3 tiles, 2 pairs; 212 rows 1 pair: 3 pairs, 2 waves, where each expert's share at its own
    # rows came to about one wave
    assert call(1024, 256, False, [300, 212], 4) == pytest.approx(4.0)
    assert t.expert_gemm_us("grouped_mm", 1024, 256, False, 300, 4) + t.expert_gemm_us(
        "grouped_mm", 1024, 256, False, 212, 4) == pytest.approx(2.0, rel=0.01)
    assert call(1024, 256, False, [0, 512], 4) == pytest.approx(2.0)  # an empty expert runs no tile
    assert call(1024, 256, False, [0, 0], 4) == 0.0
    assert call(1024, 256, False, [256, 256], 2) == pytest.approx(4.0)  # half the SMs
    assert call(2048, 256, False, [256, 256], 4) == pytest.approx(4.0)  # twice K
    # at <= 128 mean rows torch runs 64x128 tiles: none measured, so the 128x256 wave scaled by area (1/4);
    # 64 rows: 1 tile, 1 pair, x 2 column tiles: 4 pairs in 2 waves of 0.5
    assert call(1024, 256, False, [64, 64], 4) == pytest.approx(1.0)


def load_hardware_from(data: dict, folder: Path):
    return load_hardware(write(folder, "p", data)).measured


def test_pass_alltoall_comm_and_contention_lookups(tmp_path):
    t = load_hardware(PROFILES / "hand.json").measured
    assert t.memory_pass_ns("fp32_reduce", 1024) == 2.0
    assert t.alltoall_us(2, 131072) == pytest.approx(2.0)
    assert t.alltoall_us(2, 1 << 20) == pytest.approx(16.0)  # beyond the table: the end slope
    assert t.alltoall_us(1, 1 << 20) == 0.0
    with pytest.raises(UserError, match=r"hardware\.tables\.alltoall: measured for 2 GPUs, not 8"):
        t.alltoall_us(8, 1024)
    assert t.comm_GBps("pull", 2) == 32.0 and t.comm_GBps("push", 3) == 48.0 and t.comm_GBps("pull", 200) == 64.0
    assert t.gemm_slowdown(0) == 1.0 and t.gemm_slowdown(2) == 1.25 and t.gemm_slowdown(8) == 1.5
    bare = load_hardware_from(edited(lambda d: [d["tables"].pop(k) for k in ("comm_blocks", "gemm_contention")]), tmp_path)
    assert bare.comm_GBps("pull", 2) is None and bare.gemm_slowdown(16) == 1.0
    assert t.copy_slowdown(4) == 1.0  # hand.json measured no copy contention


def test_the_layers_own_copy_rate_comes_first(tmp_path):
    layer = {"pull": {"blocks": [1, 4], "GBps": [8.0, 32.0]}, "push": {"blocks": [1, 4], "GBps": [12.0, 48.0]}}
    t = load_hardware_from(edited(lambda d: d["tables"].update(layer_comm_blocks=layer)), tmp_path)
    assert t.comm_GBps("pull", 2) == 16.0 and t.comm_GBps("push", 4) == 48.0  # hand.json's comm_blocks: 32, 64
    assert load_hardware(PROFILES / "hand.json").measured.comm_GBps("pull", 2) == 32.0
    with pytest.raises(UserError, match=r"hardware\.tables\.layer_comm_blocks\.push: missing"):
        load_hardware_from(edited(lambda d: d["tables"].update(layer_comm_blocks={"pull": layer["pull"]})), tmp_path)


def test_a_layer_copy_curve_per_model_is_read_at_the_nearest_row_width(tmp_path):
    narrow = {"pull": {"blocks": [1, 4], "GBps": [8.0, 32.0]}, "push": {"blocks": [1, 4], "GBps": [12.0, 48.0]}}
    wide = {"pull": {"blocks": [1, 4], "GBps": [10.0, 40.0]}, "push": {"blocks": [1, 4], "GBps": [14.0, 56.0]}}
    tables = [{"model": "qwen", "hidden": 2048, **narrow}, {"model": "mixtral", "hidden": 4096, **wide}]
    t = load_hardware_from(edited(lambda d: d["tables"].update(layer_comm_blocks=tables)), tmp_path)
    assert t.comm_GBps("pull", 2, 2048) == 16.0 and t.comm_GBps("pull", 2, 4096) == 20.0
    assert t.comm_GBps("push", 4, 3072) == 56.0 and t.comm_GBps("push", 4, 2800) == 48.0  # nearest by log distance
    assert t.comm_GBps("pull", 2) == 16.0  # no width asked: the first model's, as a single table answers
    assert t.comm_peak_GBps("pull", 4096) == 40.0 and t.comm_peak_GBps("push", 2048) == 48.0  # each curve's highest
    with pytest.raises(UserError, match=r"hardware\.tables\.layer_comm_blocks\[1\]\.hidden: missing"):
        load_hardware_from(edited(lambda d: d["tables"].update(layer_comm_blocks=[tables[0], wide])), tmp_path)
    with pytest.raises(UserError, match=r"hardware\.tables\.layer_comm_blocks\[0\]\.pull\.GBps"):
        bad = [{"model": "qwen", "hidden": 2048, "pull": {"blocks": [1, 4], "GBps": [8.0]}, "push": narrow["push"]}]
        load_hardware_from(edited(lambda d: d["tables"].update(layer_comm_blocks=bad)), tmp_path)
    with pytest.raises(UserError, match=r"hardware\.tables\.layer_comm_blocks: must be a JSON object or a non-empty list"):
        load_hardware_from(edited(lambda d: d["tables"].update(layer_comm_blocks=[])), tmp_path)


def test_a_blocks_cost_per_item_is_read_at_the_nearest_row_width_that_has_one(tmp_path):
    curves = {"pull": {"blocks": [1, 4], "GBps": [8.0, 32.0]}, "push": {"blocks": [1, 4], "GBps": [12.0, 48.0]}}
    narrow = {"model": "qwen", "hidden": 2048, **curves, "item_us": {"pull": 3.5, "push": 1.9}, "item_rows": 128}
    wide = {"model": "mixtral", "hidden": 4096, **curves, "item_us": {"pull": 4.5, "push": 1.2}, "item_rows": 128}
    t = load_hardware_from(edited(lambda d: d["tables"].update(layer_comm_blocks=[narrow, wide])), tmp_path)
    assert t.comm_item("pull", 2048) == (3.5, 128) and t.comm_item("push", 3500) == (1.2, 128)
    older = {"model": "mixtral", "hidden": 4096, **curves}  # calibrate before the per-item cost: the other width's
    t = load_hardware_from(edited(lambda d: d["tables"].update(layer_comm_blocks=[narrow, older])), tmp_path)
    assert t.comm_item("push", 4096) == (1.9, 128)
    assert load_hardware(PROFILES / "hand.json").measured.comm_item("pull", 2048) is None  # none measured
    without_rows = {k: v for k, v in narrow.items() if k != "item_rows"}
    with pytest.raises(UserError, match=r"layer_comm_blocks\[0\]\.item_rows: missing: item_us and item_rows come together"):
        load_hardware_from(edited(lambda d: d["tables"].update(layer_comm_blocks=[without_rows])), tmp_path)
    negative = {**narrow, "item_us": {"pull": -1.0, "push": 1.9}}
    with pytest.raises(UserError, match=r"layer_comm_blocks\[0\]\.item_us\.pull: must be a finite number >= 0"):
        load_hardware_from(edited(lambda d: d["tables"].update(layer_comm_blocks=[negative])), tmp_path)


def test_the_routing_plan_table_is_read_over_pairs(tmp_path):
    table = {"top_k": 4, "tokens": [8, 4096], "us": [246.0, 512.0]}
    t = load_hardware_from(edited(lambda d: d["tables"].update(host_sync=table)), tmp_path)
    assert t.host_sync_us(8 * 4) == 246.0 and t.host_sync_us(4096 * 4) == 512.0  # the measured points
    assert t.host_sync_us(1) == 246.0 and t.host_sync_us(1e6) == 512.0  # flat beyond them
    assert t.host_sync_us(2052 * 4) == 379.0  # linear between: halfway
    assert load_hardware(PROFILES / "hand.json").measured.host_sync_us(32) is None  # one figure only
    with pytest.raises(UserError, match=r"hardware\.tables\.host_sync\.top_k"):
        load_hardware_from(edited(lambda d: d["tables"].update(host_sync={**table, "top_k": 0})), tmp_path)
    with pytest.raises(UserError, match=r"hardware\.tables\.host_sync\.tokens"):
        load_hardware_from(edited(lambda d: d["tables"].update(host_sync={**table, "tokens": [4096, 8]})), tmp_path)


def test_the_power_state_table_is_read_over_a_streams_work_at_the_cap(tmp_path):
    # chains of 1, 2 and 8 calls of 1000 us each at the cap, timed after bench's gap at 0.8, 0.9 and 1.0 of that
    table = {"model": "mixtral-8x7b", "rows_per_expert": 512, "call_us": 1000.0, "calls": [1, 2, 8],
             "over_sustained": [0.8, 0.9, 1.0]}
    t = load_hardware_from(edited(lambda d: d["tables"].update(power_state=table)), tmp_path)
    assert t.after_gap(1000) == pytest.approx(0.8) and t.after_gap(8000) == pytest.approx(1.0)  # the chains
    assert t.after_gap(1500) == pytest.approx(0.85) and t.after_gap(5000) == pytest.approx(0.95)  # linear between
    assert t.after_gap(10) == pytest.approx(0.8) and t.after_gap(1e6) == pytest.approx(1.0)  # flat beyond
    assert load_hardware(PROFILES / "hand.json").measured.after_gap(1000) == 1.0  # not measured: at the cap
    with pytest.raises(UserError, match=r"hardware\.tables\.power_state\.calls"):
        load_hardware_from(edited(lambda d: d["tables"].update(power_state={**table, "calls": [2, 1, 8]})), tmp_path)
    with pytest.raises(UserError, match=r"hardware\.tables\.power_state\.over_sustained\[1\]"):
        load_hardware_from(edited(lambda d: d["tables"].update(power_state={**table, "over_sustained": [0.8, 0, 1]})),
                           tmp_path)
    with pytest.raises(UserError, match=r"hardware\.tables\.power_state"):
        load_hardware_from(edited(lambda d: d["tables"].update(power_state={**table, "calls": None})), tmp_path)


def test_b0_host_chain_is_b0_less_its_plan(tmp_path):
    t = load_hardware_from(edited(lambda d: d["tables"].update(b0_host={"tokens": 8, "plan_us": 300.0, "b0_us": 700.0})),
                           tmp_path)
    assert t.b0_host_chain_us == 400.0
    noisy = load_hardware_from(edited(lambda d: d["tables"].update(b0_host={"tokens": 8, "plan_us": 300.0, "b0_us": 290.0})),
                               tmp_path)
    assert noisy.b0_host_chain_us == 0.0  # two medians: a difference below 0 is noise
    assert load_hardware(PROFILES / "hand.json").measured.b0_host_chain_us is None  # not measured: the host keeps up
    with pytest.raises(UserError, match=r"hardware\.tables\.b0_host\.tokens"):
        load_hardware_from(edited(lambda d: d["tables"].update(b0_host={"tokens": 0, "plan_us": 1.0, "b0_us": 2.0})),
                           tmp_path)


def test_b0_with_no_sync_gives_the_hosts_lead_where_timed_queued(tmp_path):
    b0 = {"tokens": 8, "plan_us": 300.0, "b0_us": 700.0, "unsynced_us": 900.0, "queued_unsynced_us": 550.0}
    hw = load_hardware(write(tmp_path, "p", edited(lambda d: d["tables"].update(b0_host=b0))))
    assert hw.measured.unsynced_lead_us == 350.0
    assert hw.timed_as("host").measured.unsynced_lead_us == 0.0  # started from a host barrier: no lead
    slower = {**b0, "queued_unsynced_us": 950.0}  # two medians: a queued call slower in noise leads by nothing
    assert load_hardware_from(edited(lambda d: d["tables"].update(b0_host=slower)), tmp_path).unsynced_lead_us == 0.0
    assert load_hardware(PROFILES / "hand.json").measured.unsynced_lead_us is None  # not measured
    half = {k: v for k, v in b0.items() if k != "queued_unsynced_us"}  # both or neither
    with pytest.raises(UserError, match=r"hardware\.tables\.b0_host\.queued_unsynced_us: missing"):
        load_hardware_from(edited(lambda d: d["tables"].update(b0_host=half)), tmp_path)
    with pytest.raises(UserError, match=r"hardware\.tables\.b0_host\.unsynced_us: must be a finite number > 0"):
        load_hardware_from(edited(lambda d: d["tables"].update(b0_host={**b0, "unsynced_us": -1.0})), tmp_path)
    # beside the queued plan and chain too
    both = {**b0, "queued_plan_us": 100.0, "queued_b0_us": 450.0}
    assert load_hardware_from(edited(lambda d: d["tables"].update(b0_host=both)), tmp_path).unsynced_lead_us == 350.0


def test_the_queued_timings_of_b0s_plan_and_chain_come_first_and_a_host_started_call_drops_them(tmp_path):
    """calibrate times B0's plan and its host chain both from a host barrier and as bench --align queued times
    them; a bench file started from a host barrier is priced by the first (HardwareProfile.timed_as)."""
    plan = {"top_k": 4, "tokens": [8, 4096], "us": [246.0, 512.0], "queued_us": [90.0, 170.0]}
    b0 = {"tokens": 8, "plan_us": 300.0, "b0_us": 700.0, "queued_plan_us": 100.0, "queued_b0_us": 450.0}
    hw = load_hardware(write(tmp_path, "p", edited(lambda d: d["tables"].update(host_sync=plan, b0_host=b0))))
    t = hw.measured
    assert t.host_sync_us(8 * 4) == 90.0 and t.b0_chain_us == 350.0  # queued
    assert t.b0_host_chain_us == 400.0  # the host-started chain stays readable
    host = hw.timed_as("host").measured
    assert host.host_sync_us(8 * 4) == 246.0 and host.b0_chain_us == 400.0
    assert hw.timed_as("queued").measured is t
    half = {k: v for k, v in b0.items() if k != "queued_b0_us"}  # both or neither
    with pytest.raises(UserError, match=r"hardware\.tables\.b0_host\.queued_b0_us: missing"):
        load_hardware_from(edited(lambda d: d["tables"].update(b0_host=half)), tmp_path)
    with pytest.raises(UserError, match=r"hardware\.tables\.host_sync\.queued_us"):
        load_hardware_from(edited(lambda d: d["tables"].update(host_sync={**plan, "queued_us": [90.0]})), tmp_path)


def test_copy_contention_lookup(tmp_path):
    table = {"copy_blocks": [2, 4, 8], "slowdown": [0.95, 1.2, 1.4]}
    t = load_hardware_from(edited(lambda d: d["tables"].update(copy_contention=table)), tmp_path)
    assert t.copy_slowdown(4) == pytest.approx(1.2) and t.copy_slowdown(6) == pytest.approx(1.3)
    assert t.copy_slowdown(2) == 1.0  # a measured speed-up is noise
    assert t.copy_slowdown(64) == pytest.approx(1.4) and t.copy_slowdown(0) == 1.0  # the copy engine: not SMs
    with pytest.raises(UserError, match=r"hardware\.tables\.copy_contention\.slowdown\[1\]"):
        load_hardware_from(edited(lambda d: d["tables"].update(
            copy_contention={"copy_blocks": [2, 4], "slowdown": [1.0, -1.0]})), tmp_path)


def test_layer1s_gemm_reads_its_own_contention_and_falls_back_to_layer0s(tmp_path):
    gemm1 = {"copy_blocks": [0, 8], "slowdown": [1.0, 1.4]}
    t = load_hardware_from(edited(lambda d: d["tables"].update(gemm1_contention=gemm1)), tmp_path)
    assert t.gemm_slowdown(4, layer=1) == pytest.approx(1.2) and t.gemm_slowdown(4) == t.gemm_slowdown(4, layer=0)
    bare = load_hardware_from(edited(lambda d: None), tmp_path)
    assert bare.gemm_slowdown(4, layer=1) == bare.gemm_slowdown(4)  # not measured: layer0's figure
    with pytest.raises(UserError, match=r"hardware\.tables\.gemm1_contention\.copy_blocks"):
        load_hardware_from(edited(lambda d: d["tables"].update(
            gemm1_contention={"copy_blocks": [2, 8], "slowdown": [1.0, 1.1]})), tmp_path)


def test_pushes_read_their_own_contention_and_fall_back_to_the_pulls(tmp_path):
    pulls = {"copy_blocks": [2, 4, 8], "slowdown": [1.1, 1.2, 1.4]}
    pushes = {"copy_blocks": [2, 8], "slowdown": [1.3, 1.6]}
    t = load_hardware_from(edited(lambda d: d["tables"].update(copy_contention=pulls)), tmp_path)
    assert t.copy_slowdown(4, "push") == pytest.approx(1.2)  # no push table: the pulls' figure
    t = load_hardware_from(edited(lambda d: d["tables"].update(copy_contention=pulls, push_contention=pushes)), tmp_path)
    assert t.copy_slowdown(4, "pull") == pytest.approx(1.2) and t.copy_slowdown(4, "push") == pytest.approx(1.4)
    assert t.copy_slowdown(0, "push") == 1.0
    with pytest.raises(UserError, match=r"hardware\.tables\.push_contention\.copy_blocks"):
        load_hardware_from(edited(lambda d: d["tables"].update(
            push_contention={"copy_blocks": [8, 2], "slowdown": [1.0, 1.1]})), tmp_path)


# ---- bad profiles: one line naming the field, exit 2 -------------------------------------------


def _pop(path: str):
    def edit(d):
        *parents, last = path.split(".")
        for key in parents:
            d = d[key]
        del d[last]
    return edit


BAD = {
    "wrong_format": (lambda d: d.update(format="comet-dse-profile/2"), "hardware.format"),
    "missing_table": (_pop("tables.alltoall"), "hardware.tables.alltoall"),
    "missing_passes": (_pop("tables.memory_pass_GBps"), "hardware.tables.memory_pass_GBps"),
    "negative_bandwidth": (lambda d: d["tables"]["memory_pass_GBps"].update(gather=-5.0),
                           "hardware.tables.memory_pass_GBps.gather"),
    "negative_pull": (lambda d: d["tables"]["comm_blocks"]["pull"].update(GBps=[16.0, -64.0]),
                      "hardware.tables.comm_blocks.pull.GBps[1]"),
    "non_monotone_sizes": (lambda d: d["tables"]["alltoall"][0].update(bytes_per_rank=[262144, 65536]),
                           "hardware.tables.alltoall[0].bytes_per_rank"),
    "non_monotone_rows": (lambda d: d["tables"]["grouped_gemm"][1].update(rows_per_expert=[128, 128]),
                          "hardware.tables.grouped_gemm[1].rows_per_expert"),
    "lengths_differ": (lambda d: d["tables"]["grouped_gemm"][0].update(us=[1.0, 2.0, 3.0]),
                       "hardware.tables.grouped_gemm[0].us"),
    "zero_time": (lambda d: d["tables"]["alltoall"][0].update(us=[0.0, 4.0]), "hardware.tables.alltoall[0].us[0]"),
    "world_over_gpus": (lambda d: d["tables"]["alltoall"][0].update(world=4), "hardware.tables.alltoall[0].world"),
    "no_grouped_mm": (lambda d: d["tables"].update(grouped_gemm=d["tables"]["grouped_gemm"][2:]),
                      "hardware.tables.grouped_gemm"),
    "unknown_key": (lambda d: d.update(extra=1), "hardware.extra"),
    "unknown_figure": (lambda d: d["figures"].update(warp_GBps=1.0), "hardware.figures.warp_GBps"),
    "bad_figure": (lambda d: d["figures"].update(link_GBps=float("inf")), "hardware.figures.link_GBps"),
    "bad_base": (lambda d: d.update(base="a100"), "hardware.base"),
    "contention_not_from_0": (lambda d: d["tables"]["gemm_contention"].update(copy_blocks=[1, 4]),
                              "hardware.tables.gemm_contention.copy_blocks"),
    "duplicate_gemm": (lambda d: d["tables"]["grouped_gemm"].append(dict(d["tables"]["grouped_gemm"][0])),
                       "hardware.tables.grouped_gemm[4]"),
    "contention_not_from_1": (lambda d: d["tables"]["gemm_contention"].update(slowdown=[1.1, 1.2]),
                              "hardware.tables.gemm_contention.slowdown"),
    "library_entry_with_a_tile": (lambda d: d["tables"]["grouped_gemm"][0].update(block_m=128),
                                  "hardware.tables.grouped_gemm[0].block_m"),
    "fused_entry_without_a_tile": (lambda d: d["tables"]["grouped_gemm"][2].update(block_n=None),
                                   "hardware.tables.grouped_gemm[2].block_n"),
}
SIMULATE = ["simulate", "--model", "mixtral-8x7b", "--ep", "2", "--tokens", "512"]


@pytest.mark.parametrize("name", BAD)
def test_bad_profile_is_one_line_naming_the_field(tmp_path, capsys, name):
    edit, field = BAD[name]
    path = write(tmp_path, name, edited(edit))
    assert main([*SIMULATE, "--hardware", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"comet-dse: error: {field}:"), err


def test_a_table_for_another_gpu_count(capsys):
    for schedule in ("sequential", "chunked", "comet"):
        code = main(["simulate", "--model", "mixtral-8x7b", "--ep", "8", "--tokens", "512", "--schedule", schedule,
                     "--hardware", str(EXAMPLE)])
        _, err = capsys.readouterr()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith("comet-dse: error: hardware.tables.alltoall: measured for 2 GPUs, not 8"), err


def test_example_profile_simulates_every_schedule(capsys):
    assert main([*SIMULATE, "--hardware", str(EXAMPLE), "--schedule", "all", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert set(results) == {"sequential", "chunked", "comet"}
    assert all(r["latency_us"] > 0 for r in results.values())


# ---- the study identity ------------------------------------------------------------------------


def spec(hw) -> TuneSpec:
    wl = Workload(MODEL_PRESETS["mixtral-8x7b"], 1024, 2)
    return TuneSpec("mixtral-8x7b", hw, wl, 10, 0, ("latency",), "sqlite:///:memory:")


def test_study_identity_follows_the_tables(tmp_path):
    hw = load_hardware(PROFILES / "hand.json")
    same = load_hardware(write(tmp_path, "renamed", edited(lambda d: d.update(name="other"))))
    slower = load_hardware(write(tmp_path, "slower", edited(
        lambda d: d["tables"]["alltoall"][0].update(us=[1.0, 5.0]))))
    assert spec(hw).identity(1024).digest == spec(same).identity(1024).digest
    assert spec(hw).identity(1024).digest != spec(slower).identity(1024).digest
    assert hw.measured == same.measured and hw.measured != slower.measured
    without = replace(hw, measured=None)  # the same figures without tables: another study
    assert spec(hw).identity(1024).digest != spec(without).identity(1024).digest


def test_preset_identity_has_no_tables_entry():
    assert "measured_tables" not in HARDWARE_PRESETS["h100-sxm"].figures()
