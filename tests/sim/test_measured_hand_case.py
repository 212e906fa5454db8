"""The hand case of test_hand_case.py on a measured profile (tests/fixtures/profiles/hand.json),
checked to the nanosecond: each schedule's kernels priced from the tables.

The profile: 4 SMs, 1 ns per kernel launch, host sync 1000 ns, link 64 B/ns + 1000 ns latency;
grouped_mm GEMM0 (K 256, N 128, SwiGLU) 1.0/2.0 us at 128/256 rows, GEMM1 half that; fused GEMM0
2.0/4.0 us and GEMM1 1.0/2.0 us on 2 SMs; passes: gather and scatter 256 B/ns, elementwise 128,
fp32 reduce 512; all-to-all 1 us at 65536 B per rank, 4 us at 262144 (log-log: linear);
pull and push 16 B/ns per block; copy engine 32 B/ns; GEMM slowdown 1.25 beside 2 copy blocks.
Each rank: 256 tokens, top-1, half to each rank's one expert, so 256 rows per expert.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from comet_dse.errors import UserError
from comet_dse.hardware import load_hardware
from comet_dse.sim import Chunked, Comet, Sequential, simulate

HAND_PROFILE = Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "hand.json"


def hand_data() -> dict:
    """hand.json as a dict, to edit one figure or table of it."""
    return json.loads(HAND_PROFILE.read_text())


def as_profile(data: dict, path: Path):
    """An edited hand.json written to `path` and read back as any profile file is (its checks included)."""
    path.write_text(json.dumps(data))
    return load_hardware(path)


def ns(us: float) -> int:
    return round(us * 1e3)


# The comet hand case (2 communication blocks a layer, 2 column splits), derived in the tests below: the whole layer
# and layer0 (test_comet_is_the_fused_layer_priced_from_the_tables), and the copy-engine variant
# (test_comet_copy_engine_variant)
COMET, COMET_LAYER0 = 17953, 11128
COPY_ENGINE = 16905


@pytest.fixture
def measured_case(hand_case):
    workload, _ = hand_case
    return workload, load_hardware(HAND_PROFILE)


# gather to send order 256 rows x 512 B read + written / 256 = 1024 (+1); the routing plan before it is
# the host sync (calibrate times B0's whole plan as host_sync_us)
BEFORE_SYNC = 1 + 1024
ALLTOALL = 2000  # busiest rank's bytes 2 x 65536 -> 2.0 us
SWIGLU = 2 + 5 * 256 * 128 * 2 // 128  # silu_ + mul_: 5 R F elements of 2 B at 128 B/ns
# scatter to token order (1 + 1024), weighted sum (2 launches + (256 x 512 + 256 x 256 x 4) / 512)
AFTER_COMBINE = 1 + 1024 + 2 + 768


def test_sequential_is_b0s_kernels_priced_from_the_tables(measured_case):
    workload, hw = measured_case
    r = simulate(workload, hw, Sequential())
    # host sync 1000 -> dispatch -> GEMM0 (1 + 2000 at 256 rows) -> SwiGLU: layer0 ends
    layer0 = BEFORE_SYNC + 1000 + ALLTOALL + 1 + 2000 + SWIGLU
    assert ns(r.layer0_us) == layer0 == 8588
    # GEMM1 (1 + 1000) -> combine -> scatter + weighted sum (no regroup: one expert per rank)
    assert ns(r.latency_us) == layer0 + 1 + 1000 + ALLTOALL + AFTER_COMBINE == 13384
    assert ns(r.compute_alone_us) == 3000
    # communication alone is the links' floor for every schedule (65536 B at 64 B/ns + 1000 latency, each
    # way), not NCCL's measured time
    assert ns(r.comm_alone_us) == 2 * (1024 + 1000)
    assert r.overheads_us == {"permute": 1.024, "host_sync": 1.0, "swiglu": 2.56, "unpermute": 1.024, "reduce": 0.768,
                              "launch": 0.008}
    assert ns(r.exposed_comm_us) == 2 * ALLTOALL


def test_b0_waits_for_the_host_where_it_is_behind(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    # B0's chain after the sync, spread over its 23 launches (sim/baseline_kernels.py): 3000 ns each
    data["tables"]["b0_host"] = {"tokens": 8, "plan_us": 1.0, "b0_us": 1.0 + 23 * 3.0}
    path = tmp_path / "host.json"
    hw = as_profile(data, path)
    r = simulate(workload, hw, Sequential())
    # the host launches, from the sync's end (2025): dispatch (gather + all-to-all) +6000, GEMM0 +9000,
    # SwiGLU (2) +15000, GEMM1 +18000, combine +21000, scatter +24000, weighted sum (2) +30000. Dispatch
    # 8025-10025; GEMM0 waits to 11025 -> 13025; SwiGLU waits to 17025 -> 19585 (layer0); GEMM1 20025 ->
    # 21025; combine 23025 -> 25025; scatter 26025 -> 27049; the weighted sum 32025 -> 32793
    assert ns(r.layer0_us) == 19585
    assert ns(r.latency_us) == 2025 + 30000 + 768 == 32793
    assert ns(r.overheads_us["host_wait"]) == 6000 + 999 + 3998 + 439 + 2000 + 999 + 4974
    # B1 with one chunk launches the same ops in the same order: B0's time
    assert ns(simulate(workload, hw, Chunked(chunks=1)).latency_us) == 32793
    # a host at 1 ns per launch is ahead of every kernel (each pays its 1 ns launch already): only the
    # dispatch, launched 2 ns after the sync, starts 2 ns later than in the hand case's 13384
    data["tables"]["b0_host"]["b0_us"] = 1.0 + 23 * 0.001
    assert ns(simulate(workload, as_profile(data, path), Sequential()).latency_us) == 13384 + 2


def test_the_routing_plan_is_priced_at_the_pairs_it_sorts(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    # measured at top-2: 128 and 384 (token, slot) pairs; the hand case sorts 256 tokens x top-1 = 256 pairs,
    # halfway: 3.0 us where host_sync_us (the one figure) says 1.0
    data["tables"]["host_sync"] = {"top_k": 2, "tokens": [64, 192], "us": [2.0, 4.0]}
    hw = as_profile(data, tmp_path / "plan.json")
    for schedule in (Sequential(), Chunked(chunks=1)):
        r = simulate(workload, hw, schedule)
        assert r.overheads_us["host_sync"] == 3.0 and ns(r.latency_us) == 13384 + 2000
    # beyond the measured pairs the ends hold: 8 tokens sort as few pairs as the first point
    data["tables"]["host_sync"] = {"top_k": 1, "tokens": [512, 1024], "us": [2.0, 4.0]}
    assert simulate(workload, as_profile(data, tmp_path / "plan.json"), Sequential()).overheads_us["host_sync"] == 2.0


def test_chunked_prices_each_chunk_and_overlaps_as_before(measured_case):
    workload, hw = measured_case
    one = simulate(workload, hw, Chunked(chunks=1))
    assert ns(one.latency_us) == 13384  # one chunk is B0
    r = simulate(workload, hw, Chunked(chunks=2))
    # chunk alltoalls: 65536 B -> 1000 each. D0 2025-3025, D1 3025-4025 (it holds 1 of 4 SMs).
    # GEMM0 chunk 0 (128 rows: 1000 on 4 SMs, 4000/3 on 3) from 3026: 999 ns at 3 SMs = 0.74925 done,
    # the rest 251 at 4 -> 4276; SwiGLU 2 + 1280 -> 5558; GEMM1 1 + 500 -> 6059. C0 6059-7059 beside
    # chunk 1's GEMM0 (6060 -> 7310); SwiGLU -> 8592 (layer0); GEMM1 -> 9093; C1 -> 10093; + AFTER_COMBINE
    assert ns(r.layer0_us) == 8592
    assert ns(r.latency_us) == 10093 + AFTER_COMBINE == 11888
    assert r.overheads_us["launch"] == 0.012  # launches: 1 before the sync, 4 per chunk, 3 after the combines


def test_comet_is_the_fused_layer_priced_from_the_tables(measured_case):
    workload, hw = measured_case
    r = simulate(workload, hw, Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    # pack (1024 + 7 launches) -> device barrier 1000 -> layer0 launch: 2032. Own tile: no copy, ready
    # at once; the peer's 65536 B are one row tile, dealt to one of the 2 blocks (round robin), so they move at
    # one block's 16 B/ns, not two's 32 -> 6128, ready 7128. A tile: the table's
    # 4.0 us over its one wave (2 tiles on 2 SMs; its fewest-rows call is all weight stream, so no fixed
    # cost) = 4000 ns; the own tile runs beside the pull: x1.25 -> 2032-7032;
    # the remote one 7128-11128.
    assert ns(r.layer0_us) == 11128 == COMET_LAYER0
    # layer1 from 11129: 2 splits x 2 tiles of 1000 on 2 blocks; split 0 done 12129 and its remote rows
    # (32768 B, one item a block: the 2 splits of the one tile) pushed at 32 B/ns -> 13153; split 1 beside the push
    # (x1.25) done 13379, pushed -> 14403, landed 15403; barrier 1000 -> 16403; cast + combine launches 2; the combine
    # pass reads 256 rows of 512 B with their positions and weights (12 B) and writes 256 fp32 rows of 1024 B:
    # 396288 B at the gather's 256 B/ns (hand.json timed no "combine" pass) = 1548.
    assert ns(r.latency_us) == 16403 + 2 + 1548 == COMET
    assert ns(r.compute_alone_us) == 4000 + 2000
    # the kernels alone, launch to end, as bench times them: layer0 2032 -> 11128, layer1 11129 -> its last push 14403
    assert {k: ns(v) for k, v in r.kernels_us.items()} == {"layer0": 11128 - 2032, "layer1": 14403 - 11129}
    assert r.overheads_us == {"permute": 1.024, "reduce": 1.548, "launch": 0.011}


def test_a_call_bench_starts_after_its_gap_runs_its_tiles_at_the_power_state_tables_factor(measured_case, tmp_path):
    workload, hw = measured_case
    comet = Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2)
    data = hand_data()
    # chains of 1 and 64 calls of 10 us: after bench's gap a stream of up to 640 us ran at half its time at the cap
    data["tables"]["power_state"] = {"model": "hand", "rows_per_expert": 256, "call_us": 10.0, "calls": [1, 64],
                                     "over_sustained": [0.5, 0.5]}
    fresh = as_profile(data, tmp_path / "power.json")
    # inside a model's forward (the default) the tables' time at the cap stands
    assert ns(simulate(workload, fresh, comet).latency_us) == COMET
    # as bench times it: the forward's 17.953 us at the cap reads 0.5 off the table, so each tile takes half: layer0's
    # own tile 2000 beside the pull (x1.25) 2032-4532, the remote one from its rows at 7128 to 9128
    r = simulate(workload, fresh, comet, after_gap=True)
    assert r.gemm_scale == 0.5
    assert ns(r.layer0_us) == 9128 and ns(r.compute_alone_us) == (4000 + 2000) // 2
    assert ns(r.latency_us) < COMET
    # without the table, after the gap as at the cap; the baselines never read it (their GEMMs are timed alone)
    assert ns(simulate(workload, hw, comet, after_gap=True).latency_us) == COMET
    assert simulate(workload, fresh, Sequential(), after_gap=True).latency_us == simulate(workload, hw, Sequential()).latency_us


def test_comet_adds_each_kernels_fixed_cost_beyond_its_tiles_as_calibrate_timed_it(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    # the fused calls each 500 ns (GEMM0) and 300 ns (GEMM1) dearer at every row count: their fewest-rows calls now
    # take that beyond streaming the weights once, the kernel's own cost; their tiles cost what they did
    gemm0, gemm1 = (e for e in data["tables"]["grouped_gemm"] if e["impl"] == "fused")
    gemm0["us"] = [u + 0.5 for u in gemm0["us"]]
    gemm1["us"] = [u + 0.3 for u in gemm1["us"]]
    # a profile from before the graph figures prices these costs inside its eager launches: as before
    before = simulate(workload, as_profile(data, tmp_path / "eager.json"), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    assert ns(before.latency_us) == COMET
    data["figures"]["graph_launch_us"] = 0.001  # the eager 1 ns, so only the kernels' own costs move
    r = simulate(workload, as_profile(data, tmp_path / "fixed.json"), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    # layer0 ends 500 after its last tile; layer1, 500 later, ends 300 after its last push (14903 + 300), before
    # that push lands (15903): the barrier still waits for the landing, so the whole layer is 500 later only
    assert ns(r.layer0_us) == COMET_LAYER0 + 500 and ns(r.latency_us) == COMET + 500
    assert {k: ns(v) for k, v in r.kernels_us.items()} == {"layer0": 11128 - 2032 + 500, "layer1": 14403 - 11129 + 300}
    assert ns(r.compute_alone_us) == 4000 + 2000 + 500 + 300
    # the copy-engine variant's kernels have them too (launched eagerly: 1 ns here either way)
    copy_engine = simulate(workload, as_profile(data, tmp_path / "fixed.json"), Comet(comm_blocks0=0, comm_blocks1=2, n_splits=2))
    assert ns(copy_engine.latency_us) == COPY_ENGINE + 500


def test_comet_slows_layer1s_pushes_by_push_contention_and_layer0s_pulls_by_copy_contention(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    data["tables"]["push_contention"] = {"copy_blocks": [1, 4], "slowdown": [2.0, 2.0]}
    path = tmp_path / "push.json"
    r = simulate(workload, as_profile(data, path), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    assert ns(r.layer0_us) == COMET_LAYER0  # the pulls: hand.json has no copy_contention, so as before
    # layer1's pushes at 32 / 2 = 16 B/ns: split 0's 32768 B 12129 -> 14177; split 1 (done 13379 as before)
    # waits for the engine -> 16225, landed 17225; barrier -> 18225; + 2 launches + the combine 1548
    assert ns(r.latency_us) == 18225 + 2 + 1548
    # without a push table the pushes read the pulls' figure
    del data["tables"]["push_contention"]
    data["tables"]["copy_contention"] = {"copy_blocks": [1, 4], "slowdown": [2.0, 2.0]}
    r = simulate(workload, as_profile(data, path), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    assert ns(r.latency_us) > 18225 + 2 + 1548 and ns(r.layer0_us) > COMET_LAYER0


def test_comet_slows_the_copies_by_the_share_of_the_gemms_span_they_lose_where_calibrate_timed_it(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    data["tables"]["copy_contention"] = {"copy_blocks": [1, 4], "slowdown": [2.0, 2.0]}  # the whole-window figure: unread
    # the hand model's shape (H 256, F 128) loses half of the GEMM's span pulling and a quarter pushing; a far shape all
    shares = {"copy_blocks": [1, 4], "pull": [0.5, 0.5], "push": [0.25, 0.25]}
    data["tables"]["layer_copy_contention"] = [{"model": "hand", "hidden": 256, "ffn": 128, **shares},
                                               {"model": "far", "hidden": 4096, "ffn": 14336, "copy_blocks": [1, 4],
                                                "pull": [1.0, 1.0], "push": [1.0, 1.0]}]
    r = simulate(workload, as_profile(data, tmp_path / "shares.json"), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    # layer0: the pull (C = 65536 B / 16 B/ns = 4096, one block holds the tile) outlasts half the GEMM alone (G = 4000:
    # one 4000 ns tile a block), so it takes C + 0.5 G = 6096 (not 1 / (1 - 0.5) = 2x: it would end after the GEMM):
    # 2032 -> 8128, ready 9128; the own tile beside it x1.25 2032 -> 7032, the remote one 9128 -> 13128
    assert ns(r.layer0_us) == 13128
    # layer1 from 13129: split 0 done 14129; the pushes (C = 2 x 32768 B / 32 = 2048 against G = 2000) take 1 + 0.25 x
    # 2000 / 2048 of their time: 1024 -> 1274 a split: 14129 -> 15403; split 1 beside it (x1.25) done 15379, pushed
    # 15403 -> 16677, landed 17677; barrier -> 18677; + 2 launches + the combine 1548
    assert ns(r.latency_us) == 18677 + 2 + 1548
    assert {k: ns(v) for k, v in r.kernels_us.items()} == {"layer0": 13128 - 2032, "layer1": 16677 - 13129}


def test_comet_slows_layer1s_tiles_by_gemm1_contention_where_measured(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    data["tables"]["gemm1_contention"] = {"copy_blocks": [0, 2], "slowdown": [1.0, 1.5]}
    r = simulate(workload, as_profile(data, tmp_path / "gemm1.json"), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    assert ns(r.layer0_us) == COMET_LAYER0  # layer0's tiles still at gemm_contention's 1.25
    # split 1's tiles beside split 0's push at x1.5: 12129 -> 13629, pushed -> 14653, landed 15653; barrier -> 16653
    assert ns(r.latency_us) == 16653 + 2 + 1548


def test_comet_launches_graph_nodes_where_calibrate_timed_them_and_the_copy_engine_eagerly(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    data["figures"]["graph_launch_us"] = 0.5  # 500 ns a node, where hand.json's eager launch takes 1 ns
    hw = as_profile(data, tmp_path / "graph.json")
    r = simulate(workload, hw, Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    # the 11 launches of the graphed forward (7 before layer0, layer0, layer1, 2 after) at 500 ns, not 1: the
    # prologue's 7 and layer0's launch put layer0 3992 later, layer1's launch 499 more, the epilogue's 2 998
    assert ns(r.overheads_us["launch"]) == 11 * 500
    assert ns(r.layer0_us) == COMET_LAYER0 + 8 * 499 and ns(r.latency_us) == COMET + 11 * 499
    # the copy-engine variant syncs with the host and launches eagerly: as before
    assert ns(simulate(workload, hw, Comet(comm_blocks0=0, comm_blocks1=2, n_splits=2)).latency_us) == COPY_ENGINE


def test_comet_shares_the_forwards_measured_fixed_time_among_its_small_kernels(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    # the graphed forward without its layers took 4.7 us: less its two barriers (1 us link latency each), 2.7 us
    # over the 7 ops before layer0 and the 2 after layer1, 300 ns each; layer0 and layer1 launch at 500 ns a node
    data["figures"].update(graph_launch_us=0.5, forward_fixed_us=4.7)
    hw = as_profile(data, tmp_path / "fixed.json")
    r = simulate(workload, hw, Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    assert ns(r.overheads_us["launch"]) == 9 * 300 + 2 * 500
    # from the eager 1 ns each: the prologue 7 x 299 and layer0's launch 499 later; layer1's 499, the epilogue 2 x 299
    assert ns(r.layer0_us) == COMET_LAYER0 + 7 * 299 + 499 and ns(r.latency_us) == COMET + 9 * 299 + 2 * 499
    # the copy-engine variant runs eagerly (no graph): launches as before
    assert ns(simulate(workload, hw, Comet(comm_blocks0=0, comm_blocks1=2, n_splits=2)).latency_us) == COPY_ENGINE
    # a fixed time below its barriers leaves the small kernels nothing, not a negative time
    data["figures"]["forward_fixed_us"] = 1.5
    r = simulate(workload, as_profile(data, tmp_path / "low.json"), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    assert ns(r.latency_us) == COMET - 9 + 2 * 499


def test_comet_copy_engine_host_time_is_what_calibrate_timed_less_what_is_priced_apart(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    # the copy engine's forward without its layers took 5.0 us: less its two barriers (1 us each) and the 9 eager
    # small kernels (1 ns each), 2991 ns of host time around the sync, where host_sync_us said 1000
    data["figures"]["copy_engine_fixed_us"] = 5.0
    r = simulate(workload, as_profile(data, tmp_path / "ce.json"), Comet(comm_blocks0=0, comm_blocks1=2, n_splits=2))
    assert ns(r.overheads_us["host_sync"]) == 2991 and ns(r.latency_us) == COPY_ENGINE - 1000 + 2991
    # the SM-copy variants do not sync: as before
    assert ns(simulate(workload, as_profile(data, tmp_path / "ce.json"),
                       Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2)).latency_us) == COMET


def test_comet_copy_engine_host_time_after_layer0s_launch_runs_beside_the_layers(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    # with a spin in place of its layers the forward took 3.0 us of its 5.0: 991 ns of host before layer0 (less two
    # barriers and 9 launches of 1 ns), 2000 ns beside the layers, which run ~9000 ns: hidden: 991 in place of host_sync_us's 1000, not 2991
    data["figures"].update(copy_engine_fixed_us=5.0, copy_engine_covered_us=3.0)
    copy_engine = Comet(comm_blocks0=0, comm_blocks1=2, n_splits=2)
    r = simulate(workload, as_profile(data, tmp_path / "covered.json"), copy_engine)
    assert ns(r.overheads_us["host_sync"]) == 991 and ns(r.latency_us) == COPY_ENGINE - 1000 + 991
    # 27000 ns beside them outlasts the layers: layer0 from 3023, the host done 30023, the barrier after layer1
    # leaves at 31023 (+ 1000 ns link latency), then the 2 epilogue launches and the combine (1548) as before
    data["figures"]["copy_engine_fixed_us"] = 30.0
    r = simulate(workload, as_profile(data, tmp_path / "covered.json"), copy_engine)
    assert ns(r.overheads_us["host_sync"]) == 991 and ns(r.latency_us) == 31023 + 2 + 1548
    # queued: the queued pair (1.5 of 4.0 us: -509 ns before, clamped to 0, 2500 beside, hidden); from a host
    # barrier the host pair; a queued fixed time without its covered one: all of it before the layers (1991 ns)
    data["figures"].update(copy_engine_fixed_us=5.0, copy_engine_fixed_queued_us=4.0, copy_engine_covered_queued_us=1.5)
    hw = as_profile(data, tmp_path / "covered.json")
    assert ns(simulate(workload, hw, copy_engine).latency_us) == COPY_ENGINE - 1000
    assert ns(simulate(workload, hw.timed_as("host"), copy_engine).latency_us) == COPY_ENGINE - 1000 + 991
    del data["figures"]["copy_engine_covered_queued_us"]
    assert ns(simulate(workload, as_profile(data, tmp_path / "covered.json"), copy_engine).latency_us) == COPY_ENGINE - 1000 + 1991


def test_comet_prices_the_combine_at_calibrates_combine_rate(measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    data["tables"]["memory_pass_GBps"]["combine"] = 396.288  # the 396288 B pass in 1000 ns
    r = simulate(workload, as_profile(data, tmp_path / "combine.json"), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    assert r.overheads_us["reduce"] == 1.0 and ns(r.latency_us) == COMET - 548


def test_comet_before_the_device_pack_launched_four_more_kernels(measured_case):
    """Bench files of the kernels before step 1 moved to the device are validated with their 11 launches."""
    workload, hw = measured_case
    r = simulate(workload, hw, Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2, prologue_launches=11))
    assert ns(r.latency_us) == COMET + 4
    assert r.overheads_us["launch"] == 0.015


def test_comet_copy_engine_variant(measured_case):
    workload, hw = measured_case
    r = simulate(workload, hw, Comet(comm_blocks0=0, comm_blocks1=2, n_splits=2))
    # + host sync 1000 before the copies: layer0 from 3032 on all 4 SMs (a tile 4000, as the table's
    # SM-time is kept); one copy at 32 B/ns -> 5080, the segment ready 6080 -> remote tile 6080-10080.
    assert ns(r.layer0_us) == 10080
    # layer1 as the SM-copy layer's from a layer0 ending at 9080 (its pull shared by both blocks: 15905), 1000 later
    assert ns(r.latency_us) == 15905 + 1000 == COPY_ENGINE
    assert r.overheads_us["host_sync"] == 1.0


def test_preset_refuses_the_copy_engine(hand_case):
    from comet_dse.errors import UserError

    workload, hw = hand_case
    with pytest.raises(UserError, match="--comm-blocks0"):
        simulate(workload, hw, Comet(comm_blocks0=0, comm_blocks1=2, n_splits=2))


def loop_profile(tmp_path, gemm1_us: list[float]):
    """hand.json with B0's torch.mm loop timed too: GEMM0 twice as fast as torch._grouped_mm (1000 ns at 256
    rows instead of 2000), GEMM1 at `gemm1_us` (grouped_mm: [0.5, 1.0], 1000 ns at 256 rows)."""
    data = hand_data()
    data["tables"]["grouped_gemm"] += [
        {**data["tables"]["grouped_gemm"][0], "impl": "loop", "us": [0.5, 1.0]},
        {**data["tables"]["grouped_gemm"][1], "impl": "loop", "us": gemm1_us},
    ]
    return as_profile(data, tmp_path / "loop.json")


def test_b0_runs_the_expert_gemm_it_is_given_and_best_keeps_the_faster_whole_layer(measured_case, tmp_path):
    workload, _ = measured_case
    hw = loop_profile(tmp_path, [0.75, 1.5])
    grouped = simulate(workload, hw, Sequential(expert_gemm="grouped"))
    assert ns(grouped.latency_us) == 13384
    loop = simulate(workload, hw, Sequential(expert_gemm="loop"))
    # both GEMMs from the loop's table: GEMM0 1000 instead of 2000, GEMM1 1500 instead of 1000
    assert ns(loop.layer0_us) == 8588 - 1000
    assert ns(loop.latency_us) == 13384 - 1000 + 500
    assert ns(loop.compute_alone_us) == 1000 + 1500
    best = simulate(workload, hw, Sequential())
    assert (ns(best.latency_us), best.params["expert_gemm"]) == (13384 - 500, "loop")
    # a loop whose GEMM1 loses more than its GEMM0 gains: the whole layer keeps torch._grouped_mm, where a
    # price per GEMM would have mixed the two (B0 runs one expert GEMM for both)
    best = simulate(workload, loop_profile(tmp_path, [1.75, 3.5]), Sequential())
    assert (ns(best.latency_us), best.params["expert_gemm"]) == (13384, "grouped")
    # B1 as bench runs it, with B0's GEMM: one chunk is B0 with that GEMM
    assert ns(simulate(workload, hw, Chunked(chunks=1, expert_gemm="loop")).latency_us) == 13384 - 500
    # a profile that timed no loop prices every B0 with torch._grouped_mm
    assert ns(simulate(workload, load_hardware(HAND_PROFILE), Sequential(expert_gemm="loop")).latency_us) == 13384


def test_the_loop_costs_the_host_an_eager_launch_per_further_expert_with_rows(measured_case, tmp_path):
    from comet_dse.routing import make_routing
    from comet_dse.sim.baseline_kernels import gemm_kernel
    from comet_dse.sim.layout import rank_groups
    from comet_dse.sim.runtime import SimContext

    workload, _ = measured_case
    data = hand_data()
    data["figures"]["kernel_launch_us"] = 7.0
    data["tables"]["grouped_gemm"] += [{**data["tables"]["grouped_gemm"][0], "impl": "loop", "us": [0.5, 1.0]}]
    ctx = SimContext(workload, as_profile(data, tmp_path / "loop.json"), make_routing(workload), record=False)
    group = rank_groups(workload, ctx.routing, 0)[0]
    for rows, further in (([256, 0, 128], 1), ([0, 0, 0], 0), ([1, 1, 1], 2)):
        loop = gemm_kernel(ctx, "GEMM0", [group] * 3, np.array(rows), 0, 128, 128, expert_gemm="loop")
        # one launch as the GPU sees it (the gaps between the torch.mm kernels are in the loop's measured
        # time) and as B0's chain prices it; each further torch.mm is an eager launch's 7000 ns on the host
        assert (loop.launches, loop.host_extra_ns) == (1, further * 7000)
        grouped = gemm_kernel(ctx, "GEMM0", [group] * 3, np.array(rows), 0, 128, 128, expert_gemm="grouped")
        assert (grouped.launches, grouped.host_extra_ns) == (1, 0.0)
    # where calibrate timed the loop's host cost, that is each further torch.mm's price
    data["figures"]["loop_mm_host_us"] = 25.0
    ctx = SimContext(workload, as_profile(data, tmp_path / "loop.json"), make_routing(workload), record=False)
    loop = gemm_kernel(ctx, "GEMM0", [group] * 3, np.array([256, 0, 128]), 0, 128, 128, expert_gemm="loop")
    assert loop.host_extra_ns == 25000


def test_the_host_clock_adds_an_ops_extra_host_time_to_its_launches():
    from comet_dse.sim.baseline_kernels import HostClock

    overheads: dict[str, float] = {}
    clock = HostClock([("a", 2), ("b", 1, 500.0), ("c", 3, 0.0)], 100.0, overheads)
    clock.synced = 1000.0
    # launched at 200, 200 + 100 + 500 = 800, 800 + 300 = 1100 ns after the sync
    assert [clock.wait(k, 1000.0) for k in "abc"] == [200.0, 800.0, 1100.0]
    assert clock.wait("b", 2000.0) == 0.0  # a stream that gets there after the launch does not wait
    assert overheads["host_wait"] == 2100.0


def test_a_fused_tile_is_its_calls_time_less_the_fixed_cost_over_its_waves(tmp_path):
    data = hand_data()
    gemm0 = data["tables"]["grouped_gemm"][2]
    assert gemm0["impl"] == "fused" and gemm0["sms"] == 2
    # 3 experts on 2 SMs: ceil(3 x tiles / 2) waves; the weights (3 x 256 x 256 x 2 B at 65.536 B/ns)
    # stream in 6.0 us, and the 128-row call took 7.0: 1.0 us of the call is fixed (launch, ramp, tail)
    gemm0.update(experts=3, us=[7.0, 13.0])
    hw = as_profile(data, tmp_path / "waves.json")
    tables = hw.measured
    # 128 rows: 3 tiles -> 2 waves -> (7 - 1) / 2; 256 rows: 6 tiles -> 3 waves -> (13 - 1) / 3
    assert tables.fused_tile_us(256, 128, True, 128, 2, (128, 128), hw.hbm_GBps) == pytest.approx(3.0)
    assert tables.fused_tile_us(256, 128, True, 256, 2, (128, 128), hw.hbm_GBps) == pytest.approx(4.0)
    # a K twice as deep, a tile half as wide: x 2 x 1/2
    assert tables.fused_tile_us(512, 128, True, 256, 2, (128, 64), hw.hbm_GBps) == pytest.approx(4.0)


def test_a_fused_tile_at_one_sm_count_follows_the_line_through_every_sm_count_measured(tmp_path):
    data = hand_data()
    gemm0 = data["tables"]["grouped_gemm"][2]
    # one expert: at 256 rows 2 tiles in one wave on 2+ SMs; the weights stream in 2.0 us, and the least
    # any call at 128 rows took beyond them is 0 (the 2-SM call): no fixed cost, so a 256-row tile takes
    # the call's time, 2 us0: 4, 6, 18 (one slow call), 10, 12 us at 2..6 SMs
    entries = [{**gemm0, "sms": sms, "us": [us, 2 * us]} for sms, us in ((2, 2.0), (3, 3.0), (4, 9.0), (5, 5.0), (6, 6.0))]
    data["tables"]["grouped_gemm"][2:3] = entries
    hw = as_profile(data, tmp_path / "sms.json")

    def tile(hw, sms: int) -> float:
        return hw.measured.fused_tile_us(256, 128, True, 256, sms, (128, 128), hw.hbm_GBps)

    # the robust line through the five is the line through the four regular ones (2 x SMs): the slow
    # call does not set 4 SMs' time, and the line is not extrapolated past the SM counts measured
    assert [tile(hw, s) for s in range(1, 8)] == pytest.approx([4.0, 4.0, 6.0, 8.0, 10.0, 12.0, 12.0])
    # with fewer than 3 SM counts measured, the nearest one is taken as it is: 2 x 9 less the fixed
    # cost of the two, the least of 3 - 2 and 9 - 2
    data["tables"]["grouped_gemm"][2:7] = entries[1:3]
    assert tile(as_profile(data, tmp_path / "two.json"), 4) == pytest.approx(17.0)


def test_a_launch_costs_the_same_at_every_sm_count_so_slower_streaming_is_the_tiles(tmp_path):
    data = hand_data()
    gemm0 = data["tables"]["grouped_gemm"][2]
    # one expert, weights stream in 2.0 us at HBM rate. On 4 SMs the 128-row call takes 3.0 (1.0 fixed);
    # on 2 SMs 5.0: two SMs cannot stream at HBM rate. That excess is the tiles' (each reads its weight
    # slice), so the 2-SM tile at 256 rows (one wave) is 10 - 1 = 9, not 10 - (5 - 2) = 7
    data["tables"]["grouped_gemm"][2:3] = [{**gemm0, "sms": sms, "us": [us, 2 * us]} for sms, us in ((2, 5.0), (4, 3.0))]
    hw = as_profile(data, tmp_path / "stream.json")
    assert hw.measured.fused_tile_us(256, 128, True, 256, 2, (128, 128), hw.hbm_GBps) == pytest.approx(9.0)
    assert hw.measured.fused_tile_us(256, 128, True, 256, 4, (128, 128), hw.hbm_GBps) == pytest.approx(5.0)


def test_merged_tiles_compute_fewer_partial_tiles_than_tiles_by_source(tmp_path):
    # each rank: 64 tokens to expert 0 (rank 0), 192 to expert 1 (rank 1). Rank 0 holds 64 own + 64 remote
    # rows: by source two half tiles, merged one full one; rank 1's 192 + 192: by source 2 + 2 tiles,
    # merged 1 own full tile + a run of 256 rows (2 tiles)
    import numpy as np
    from comet_dse.workload import Workload
    from tests.conftest import HAND_MODEL

    trace = np.array([[0]] * 64 + [[1]] * 192, dtype=np.int64)
    np.save(tmp_path / "t.npy", trace)
    workload = Workload(HAND_MODEL, 256, 2, routing=f"trace:{tmp_path / 't.npy'}")
    hw = load_hardware(HAND_PROFILE)
    merged = simulate(workload, hw, Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    by_source = simulate(workload, hw, Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2, tile_layout="by-source"))
    assert merged.compute_alone_us < by_source.compute_alone_us
    assert merged.latency_us <= by_source.latency_us  # here the pushes of rank 1 bound both
    # the copy engine moves one segment per source: it runs by source whatever is asked
    copy = [simulate(workload, hw, Comet(comm_blocks0=0, comm_blocks1=2, n_splits=2, tile_layout=t)).latency_us
            for t in ("merged", "by-source")]
    assert copy[0] == copy[1]


def test_an_unknown_tile_layout_is_refused(measured_case):
    from comet_dse.errors import UserError

    workload, hw = measured_case
    with pytest.raises(UserError, match="--tile-layout: must be one of merged, by-source"):
        simulate(workload, hw, Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2, tile_layout="mixed"))


def test_an_unknown_tile_order_is_refused(measured_case):
    from comet_dse.errors import UserError

    workload, hw = measured_case
    with pytest.raises(UserError, match="--tile-order: must be one of layout, expert"):
        simulate(workload, hw, Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2, tile_order="random"))


def test_b0s_loop_runs_one_torch_mm_per_source_and_expert_run_without_regrouping(tmp_path):
    """Two experts a rank: B0's loop takes the rows as they arrived, one torch.mm per (source, expert) run with
    rows and no regroup (kernels/baselines.py since 2026-11-27 18:00); loop_regroups prices the loop bench
    files before that timed (the rows regrouped first, one torch.mm per expert)."""
    from dataclasses import replace

    from comet_dse.routing import make_routing
    from comet_dse.sim.baseline_kernels import expert_side
    from comet_dse.sim.layout import rank_groups
    from comet_dse.sim.runtime import SimContext
    from comet_dse.workload import Workload
    from tests.conftest import HAND_MODEL

    # 4 experts, 2 a rank; source 0 sends rank 0's experts 96 and 0 rows, source 1 sends them 32 and 128
    trace = np.array([[0]] * 96 + [[2]] * 160 + [[0]] * 32 + [[1]] * 128 + [[3]] * 96, dtype=np.int64)
    np.save(tmp_path / "two.npy", trace)
    workload = Workload(replace(HAND_MODEL, num_experts=4), 256, 2, routing=f"trace:{tmp_path / 'two.npy'}")
    data = hand_data()
    # the loop's GEMM0 table: 1.0 / 2.0 us for one expert at 128 / 256 rows (log-log: 1.0 * (rows / 128) us)
    data["tables"]["grouped_gemm"] += [{**data["tables"]["grouped_gemm"][0], "impl": "loop", "us": [1.0, 2.0]},
                                       {**data["tables"]["grouped_gemm"][1], "impl": "loop", "us": [0.5, 1.0]}]
    data["figures"]["loop_mm_host_us"] = 25.0
    ctx = SimContext(workload, as_profile(data, tmp_path / "loop.json"), make_routing(workload), record=False)
    groups = rank_groups(workload, ctx.routing, 0)
    source_rows = np.array([g.rows_by_source for g in groups])
    assert source_rows.tolist() == [[96, 32], [0, 128]]
    rows = source_rows.sum(axis=1)

    layer0, layer1 = expert_side(ctx, groups, rows, 128, 128, expert_gemm="loop", source_rows=source_rows)
    assert [k.label for k in layer0 + layer1] == ["GEMM0", "SwiGLU", "GEMM1"]  # nothing regrouped, nothing scattered
    gemm0 = layer0[0]
    # three runs with rows (96, 32, 128): 1.0 us per 128 rows -> 0.75 + 0.25 + 1.0; two further torch.mm on the host
    assert (ns(gemm0.ns / 1e3), gemm0.host_extra_ns) == (2000, 2 * 25000)

    old0, old1 = expert_side(ctx, groups, rows, 128, 128, expert_gemm="loop", source_rows=source_rows, loop_regroups=True)
    assert [k.label for k in old0 + old1] == ["expert-major index", "gather to expert order", "GEMM0", "SwiGLU", "GEMM1",
                                              "scatter to arrival order"]
    # one torch.mm per expert (128 and 128 rows), one further; the index without torch._grouped_mm's group ends
    assert (ns(old0[2].ns / 1e3), old0[2].host_extra_ns, old0[0].launches) == (2000, 25000, 11 - 2)
    # torch._grouped_mm regroups whatever the loop does
    grouped0, _ = expert_side(ctx, groups, rows, 128, 128, expert_gemm="grouped", source_rows=source_rows)
    assert [k.label for k in grouped0][:2] == ["expert-major index", "gather to expert order"]


def test_b0s_loop_takes_a_sources_tp_group_as_one_run():
    """Under TP the baselines all-gather each TP group's tokens before the EP layer: a source's run is its TP group's."""
    from dataclasses import replace
    from types import SimpleNamespace

    from comet_dse.sim.baseline_kernels import loop_runs
    from comet_dse.sim.layout import Group
    from comet_dse.workload import Workload
    from tests.conftest import HAND_MODEL

    workload = Workload(replace(HAND_MODEL, num_experts=4), 256, 2, tp=2)  # ranks 0-1: EP group 0, ranks 2-3: 1
    groups = [Group(0, np.array([3, 5, 0, 0]), 64), Group(1, np.array([0, 0, 2, 0]), 64), Group(2, np.array([1, 0, 0, 4]), 64)]
    runs, rows = loop_runs(SimpleNamespace(workload=workload), groups, np.array([g.rows_by_source for g in groups]))
    assert [g.expert for g in runs] == [0, 1, 2, 2] and rows.tolist() == [8, 2, 1, 4]


def hand_tokens(tmp_path, ep: int, tp: int):
    """The hand case's tokens (per rank 128 to expert 0, 128 to expert 1) at EP x TP: at EP=1 x TP=2 both ranks
    hold both experts, half of F each."""
    from comet_dse.workload import Workload
    from tests.conftest import HAND_MODEL

    trace = np.array([[0]] * 128 + [[1]] * 128, dtype=np.int64)
    np.save(tmp_path / "tokens.npy", trace)
    return Workload(HAND_MODEL, 256, ep, tp=tp, routing=f"trace:{tmp_path / 'tokens.npy'}")


def test_at_one_ep_rank_b0_regroups_nothing_and_syncs_only_for_the_loop(tmp_path):
    """Under TP at EP=1 the EP layer of the TP baselines has one rank: the rows it gathered are already in expert
    order, and with torch._grouped_mm it reads nothing on the host (kernels/baselines.py _plan); its loop still
    reads the runs' row counts there, one sync."""
    workload = hand_tokens(tmp_path, 1, 2)
    grouped = simulate(workload, load_hardware(HAND_PROFILE), Sequential(expert_gemm="grouped"))
    labels = {s.name for s in grouped.timeline.slices}
    assert "host_sync" not in grouped.overheads_us
    assert not labels & {"expert-major index", "gather to expert order", "scatter to arrival order"}
    assert {"gather to send order", "scatter to token order", "weighted top-k sum", "cast to fp32"} <= labels
    loop = simulate(workload, loop_profile(tmp_path, [0.5, 1.0]), Sequential(expert_gemm="loop"))
    assert loop.overheads_us["host_sync"] == 1.0
    # the same layer at EP=2 (the hand case: one expert a rank, so nothing to regroup either) syncs
    ep2 = simulate(hand_tokens(tmp_path, 2, 1), load_hardware(HAND_PROFILE), Sequential(expert_gemm="grouped"))
    assert ep2.overheads_us["host_sync"] == 1.0


def test_without_a_sync_the_host_launches_b0_from_the_calls_start(tmp_path):
    """EP=1 x TP=2 with torch._grouped_mm and B0's host chain at 3000 ns a launch: the host launches, from the call's
    start, the TP all-gathers (3), the routing plan and the group ends (8), the send-order gather (1), GEMM0 (1),
    SwiGLU (2), GEMM1 (1), the scatter to token order (1), the weighted sum (2), the reduce-scatter (1; ready at
    20 x 3000 = 60000 ns), then the cast (1). Every GPU step is done long before its launch, so the
    reduce-scatter runs 60000-64000 (4.0 us: every rank's 256 tokens x 512 B to both TP ranks, 262144 B) and the
    cast (256 tokens, bf16 read and fp32 written, 393216 B at 128 B/ns: 3072 ns) after its 1 ns launch."""
    workload = hand_tokens(tmp_path, 1, 2)
    data = hand_data()
    data["tables"]["b0_host"] = {"tokens": 8, "plan_us": 1.0, "b0_us": 1.0 + 23 * 3.0}
    hw = as_profile(data, tmp_path / "host.json")
    r = simulate(workload, hw, Sequential(expert_gemm="grouped"))
    assert ns(r.latency_us) == 20 * 3000 + 4000 + 1 + 3072 == 67073
    assert "host_sync" not in r.overheads_us
    # B1 with one chunk launches the same ops in the same order: B0's time
    assert ns(simulate(workload, hw, Chunked(chunks=1, expert_gemm="grouped")).latency_us) == 67073
    # two chunks exchange nothing between them (one all-gather before, one reduce-scatter after): the second
    # chunk adds its gather (1), GEMM0 (1), SwiGLU (2), GEMM1 (1) and the first chunk's final passes (3)
    assert ns(simulate(workload, hw, Chunked(chunks=2, expert_gemm="grouped")).latency_us) == 67073 + 8 * 3000


def test_without_a_sync_a_queued_call_starts_its_host_ahead_by_what_calibrate_saw_queuing_save(tmp_path):
    """The test above with calibrate's B0 with no sync (b0_host.unsynced_us, EP=1 x TP=2) timed at 63 us from a host
    barrier and 40 us queued: a queued call's host starts 23 us ahead of the GPU, at B0's pace after its sync (3000 ns a
    launch), so the reduce-scatter is ready at 20 x 3000 - 23000 = 37000 ns and everything after it runs as above
    (4000 + 1 + 3072). A call timed from a host barrier starts level with it (67073 above)."""
    workload = hand_tokens(tmp_path, 1, 2)
    data = hand_data()
    data["tables"]["b0_host"] = {"tokens": 8, "plan_us": 1.0, "b0_us": 1.0 + 23 * 3.0, "unsynced_us": 63.0,
                                 "queued_unsynced_us": 40.0}
    hw = as_profile(data, tmp_path / "host.json")
    assert hw.measured.unsynced_lead_us == 23.0
    queued = simulate(workload, hw, Sequential(expert_gemm="grouped"))
    assert ns(queued.latency_us) == 20 * 3000 - 23000 + 4000 + 1 + 3072 == 44073
    assert ns(simulate(workload, hw, Chunked(chunks=1, expert_gemm="grouped")).latency_us) == 44073
    # two chunks: eight more launches (test above), the same lead
    assert ns(simulate(workload, hw, Chunked(chunks=2, expert_gemm="grouped")).latency_us) == 44073 + 8 * 3000
    assert ns(simulate(workload, hw.timed_as("host"), Sequential(expert_gemm="grouped")).latency_us) == 67073
    # with a sync (EP=2) the host's chain after it has no lead: the figures change nothing
    del data["tables"]["b0_host"]["unsynced_us"], data["tables"]["b0_host"]["queued_unsynced_us"]
    without = as_profile(data, tmp_path / "without.json")
    ep2 = [simulate(hand_tokens(tmp_path, 2, 1), p, Sequential(expert_gemm="grouped")) for p in (hw, without)]
    assert ep2[0].latency_us == ep2[1].latency_us and ep2[0].overheads_us["host_wait"] > 10


def test_at_one_ep_rank_b1_runs_its_chunks_between_one_all_gather_and_one_reduce_scatter(tmp_path):
    workload = hand_tokens(tmp_path, 1, 2)
    r = simulate(workload, load_hardware(HAND_PROFILE), Chunked(chunks=4, expert_gemm="grouped"))
    collectives = [s for s in r.timeline.slices if s.rank == 0 and ("all-gather" in s.name or "reduce-scatter" in s.name)]
    assert [s.name for s in collectives] == ["dispatch all-gather", "combine reduce-scatter"]
    gemms = [s for s in r.timeline.slices if s.rank == 0 and s.name.startswith("GEMM")]
    assert len(gemms) == 8 and collectives[0].end_ns <= min(s.start_ns for s in gemms)
    assert max(s.end_ns for s in gemms) <= collectives[1].start_ns


def test_comet_prices_the_forward_as_timed_queued_where_calibrate_did_and_as_from_a_host_barrier_on_request(
        measured_case, tmp_path):
    workload, _ = measured_case
    data = hand_data()
    # queued behind a spin the forward without its layers took 2.9 us (no graph launch, no late host): less its two
    # barriers, 0.9 us over the 9 small kernels, 100 ns each; from a host barrier 4.7 us, 300 ns each (above)
    data["figures"].update(graph_launch_us=0.5, forward_fixed_us=4.7, forward_fixed_queued_us=2.9,
                           copy_engine_fixed_us=5.0, copy_engine_fixed_queued_us=4.0)
    hw = as_profile(data, tmp_path / "queued.json")
    fused = Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2)
    assert ns(simulate(workload, hw, fused).overheads_us["launch"]) == 9 * 100 + 2 * 500
    for align in ("host", "devices"):  # a bench file timed from a host barrier: the host figures
        assert ns(simulate(workload, hw.timed_as(align), fused).overheads_us["launch"]) == 9 * 300 + 2 * 500
    assert hw.timed_as("queued") is hw
    # the copy engine's host time: 4.0 us less two barriers and 9 eager launches of 1 ns (2991 ns from 5.0 us)
    copy_engine = Comet(comm_blocks0=0, comm_blocks1=2, n_splits=2)
    assert ns(simulate(workload, hw, copy_engine).overheads_us["host_sync"]) == 1991
    assert ns(simulate(workload, hw.timed_as("host"), copy_engine).overheads_us["host_sync"]) == 2991
    with pytest.raises(UserError, match="align: must be one of host, devices, queued"):
        hw.timed_as("late")
