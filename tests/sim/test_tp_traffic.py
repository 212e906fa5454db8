"""Bytes moved with tensor parallelism, counted by hand on 8 GPUs.

Every rank holds the same 4 tokens (top-2 of 8 experts, H = 256 bf16: 512 B a row):
t0 -> (0, 1), t1 -> (0, 4), t2 -> (2, 3), t3 -> (6, 7). With TP a token goes once to each TP
rank of an EP group however many of its experts live there, and comes back as one pre-reduced
partial per (token, EP group) from each TP rank; EP only, every (token, expert) row travels.

EP groups and what one source sends each (rows at TP = 1, tokens otherwise):
- 8x1: experts 0..7 alone            -> [2, 1, 1, 1, 1, 0, 1, 1]  (rows: e0 has t0 and t1)
- 4x2: {0,1} {2,3} {4,5} {6,7}       -> [2, 1, 1, 1]  (t0 once in {0,1}; rows there were 3)
- 2x4: {0..3} {4..7}                 -> [3, 2]  (t0, t1, t2 | t1, t3; rows 5 | 3)
- 1x8: {0..7}                        -> [4]  (every token once; rows 8)
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from comet_dse.sim import Chunked, Comet, Sequential, simulate
from comet_dse.sim.network import FlowNetwork
from comet_dse.sim.runtime import SimContext
from comet_dse.sim.schedules.base import pair_bytes, sent_rows

from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import MODEL_PRESETS, ModelConfig
from comet_dse.routing import Routing, make_routing, tokens_per_group
from comet_dse.workload import Workload
from comet_dse.search.placement import Placement
from tests.conftest import hand_hardware

MODEL = ModelConfig("tp-hand", num_experts=8, top_k=2, hidden=256, ffn=128, num_layers=1)
PICKS = [[0, 1], [0, 4], [2, 3], [6, 7]]
ROW = 256 * 2  # bytes of one H-wide bf16 row
TOKENS = 4

# (EP, TP) -> what one source sends each EP group (the same from every source), hand-counted above
GROUP_SENDS = {(8, 1): [2, 1, 1, 1, 1, 0, 1, 1], (4, 2): [2, 1, 1, 1], (2, 4): [3, 2], (1, 8): [4]}
# the old model's rows per group (every (token, expert) row to every TP rank), for the 1/top-k check
GROUP_ROWS = {(8, 1): [2, 1, 1, 1, 1, 0, 1, 1], (4, 2): [3, 2, 1, 2], (2, 4): [5, 3], (1, 8): [8]}
# the busiest NVLink port of the dispatch (and, transposed, the combine) at 64 B/ns, + 1000 ns latency:
# a rank receives its group's count from the 7 others: 7 x max(count) rows
COLLECTIVE_NS = {(8, 1): 7 * 2 * ROW // 64 + 1000, (4, 2): 7 * 2 * ROW // 64 + 1000,
                 (2, 4): 7 * 3 * ROW // 64 + 1000, (1, 8): 7 * 4 * ROW // 64 + 1000}
LAYOUTS = list(GROUP_SENDS)
IDS = [f"ep{ep}xtp{tp}" for ep, tp in LAYOUTS]


@pytest.fixture
def trace(tmp_path) -> str:
    path = tmp_path / "tp-hand.npy"
    np.save(path, np.array(PICKS, dtype=np.int64))  # 4 rows: rank r's token j uses row j
    return f"trace:{path}"


def workload(trace: str, ep: int, tp: int) -> Workload:
    return Workload(MODEL, TOKENS, ep, tp, routing=trace)


def hand_pairs(ep: int, tp: int) -> np.ndarray:
    """(W, W) bytes source s sends rank d: its group's count, to each TP rank of the group."""
    per_rank = np.repeat(GROUP_SENDS[ep, tp], tp) * ROW  # (W,) by destination rank
    return np.tile(per_rank, (8, 1)).astype(float)


def recorded_flows(monkeypatch) -> dict[str, dict[tuple[int, int], float]]:
    """Bytes of comet's flows by layer and (source, destination), read off their links' names."""
    moved: dict[str, dict[tuple[int, int], float]] = {"layer0": defaultdict(float), "layer1": defaultdict(float)}
    transfer = FlowNetwork.transfer

    def spy(self, path, size):
        engine, *links = path
        owner = int(engine.name.rsplit("rank", 1)[1])  # comm-blocks{0,1}-rank{r}: the rank whose blocks move it
        peer = int(links[0].name.removeprefix("hbm").removeprefix("nvlink-out").removeprefix("nic-out"))
        last = int(links[-1].name.removeprefix("hbm").removeprefix("nvlink-in").removeprefix("nic-in"))
        if engine.name.startswith("comm-blocks0"):
            moved["layer0"][peer, owner] += size  # pulled from peer into owner
        else:
            moved["layer1"][owner, last] += size  # pushed from owner to last
        return transfer(self, path, size)

    monkeypatch.setattr(FlowNetwork, "transfer", spy)
    return moved


def as_matrix(moved: dict[tuple[int, int], float]) -> np.ndarray:
    out = np.zeros((8, 8))
    for (src, dst), size in moved.items():
        out[src, dst] = size
    return out


@pytest.mark.parametrize("ep, tp", LAYOUTS, ids=IDS)
def test_each_source_sends_each_group_its_tokens_once(trace, ep, tp):
    wl = workload(trace, ep, tp)
    ctx = SimContext(wl, hand_hardware(), make_routing(wl))
    assert ctx.group_sends.tolist() == [GROUP_SENDS[ep, tp]] * 8
    assert np.array_equal(pair_bytes(ctx), hand_pairs(ep, tp))
    # packed once per EP group: 8 rows at 8x1, 5 tokens at 4x2 and 2x4, 4 at 1x8; TP partials come back
    assert [sent_rows(ctx, r) for r in range(8)] == [sum(GROUP_SENDS[ep, tp])] * 8


@pytest.mark.parametrize("ep, tp", LAYOUTS, ids=IDS)
def test_comet_moves_the_hand_counted_bytes_per_link(trace, ep, tp, monkeypatch):
    moved = recorded_flows(monkeypatch)
    simulate(workload(trace, ep, tp), hand_hardware(), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    # layer0: every rank pulls what each source sends its group (own rows too, by a local copy)
    assert np.array_equal(as_matrix(moved["layer0"]), hand_pairs(ep, tp))
    # layer1: the same back, one partial per (token, group) from each TP rank (split in two column halves)
    assert as_matrix(moved["layer1"]) == pytest.approx(hand_pairs(ep, tp).T, rel=1e-12)
    per_source = 8 * ROW * tp * sum(GROUP_SENDS[ep, tp])  # per layer: 32768, 40960, 81920, 131072 B
    assert sum(moved["layer0"].values()) == per_source == {(8, 1): 32768, (4, 2): 40960, (2, 4): 81920,
                                                           (1, 8): 131072}[ep, tp]


@pytest.mark.parametrize("ep, tp", LAYOUTS, ids=IDS)
def test_comet_moves_a_top_k_th_of_the_rows_at_pure_tp(trace, ep, tp, monkeypatch):
    moved = recorded_flows(monkeypatch)
    simulate(workload(trace, ep, tp), hand_hardware(), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    old = 8 * ROW * tp * sum(GROUP_ROWS[ep, tp])  # every (token, expert) row to every TP rank
    new = sum(moved["layer0"].values())
    assert new / old == {(8, 1): 1.0, (4, 2): 10 / 16, (2, 4): 20 / 32, (1, 8): 1 / MODEL.top_k}[ep, tp]
    assert sum(moved["layer1"].values()) == pytest.approx(new, rel=1e-12)


def collective_ns(result, rank: int = 0) -> dict[str, float]:
    return {s.name: s.end_ns - s.start_ns for s in result.timeline.slices
            if s.rank == rank and s.role == "comm" and not s.name.startswith(("wait", "host"))}


@pytest.mark.parametrize("ep, tp", LAYOUTS, ids=IDS)
def test_sequential_collectives_move_the_hand_counted_bytes(trace, ep, tp):
    r = simulate(workload(trace, ep, tp), hand_hardware(), Sequential())
    names = {(8, 1): ("dispatch all-to-all", "combine all-to-all"),
             (1, 8): ("dispatch all-gather", "combine reduce-scatter")}.get(
        (ep, tp), ("dispatch all-to-all + all-gather", "combine reduce-scatter + all-to-all"))
    assert collective_ns(r) == {names[0]: COLLECTIVE_NS[ep, tp], names[1]: COLLECTIVE_NS[ep, tp]}
    # communication alone: the same bytes at the link's full rate, both ways
    assert round(r.comm_alone_us * 1e3) == 2 * COLLECTIVE_NS[ep, tp]


def test_chunked_cuts_tokens_into_chunks(trace):
    """2x4, 2 chunks: the 3 | 2 tokens per group cut into 2 | 1 and 1 | 1."""
    r = simulate(workload(trace, 2, 4), hand_hardware(), Chunked(chunks=2))
    assert collective_ns(r) == {
        "dispatch all-to-all + all-gather 0": 7 * 2 * ROW // 64 + 1000,
        "combine reduce-scatter + all-to-all 0": 7 * 2 * ROW // 64 + 1000,
        "dispatch all-to-all + all-gather 1": 7 * 1 * ROW // 64 + 1000,
        "combine reduce-scatter + all-to-all 1": 7 * 1 * ROW // 64 + 1000,
    }


def test_pure_tp_halves_mixtral_traffic_under_uniform_routing():
    """EP=1, TP=8, top-2: every token lives in the one group, so exactly half of the rows travel."""
    wl = Workload(MODEL_PRESETS["mixtral-8x7b"], 512, 1, 8, seed=3)
    ctx = SimContext(wl, HARDWARE_PRESETS["h800"], make_routing(wl))
    rows = ctx.routing.counts.sum(axis=1)  # (W,) 1024 each
    assert ctx.group_sends[:, 0].tolist() == (rows // 2).tolist() == [512] * 8
    assert pair_bytes(ctx).sum() == 8 * 8 * 512 * 4096 * 2


def test_tokens_from_counts_follow_the_sampler_and_the_seed():
    """Uniform top-2 over 8 experts, EP=4: a token reaches a group of 2 experts with 1 - (3/4)^2."""
    wl = Workload(MODEL_PRESETS["mixtral-8x7b"], 4096, 4, 2, seed=5)
    routing = make_routing(wl)
    found = tokens_per_group(wl, routing)
    rows = routing.counts.reshape(8, 4, 2).sum(axis=2)
    assert (found <= rows).all() and (2 * found >= rows).all()
    assert found.mean() == pytest.approx(4096 * (1 - 0.75 ** 2), rel=0.01)
    assert np.array_equal(found, tokens_per_group(wl, routing))  # the same seed, the same tokens
    other = Workload(MODEL_PRESETS["mixtral-8x7b"], 4096, 4, 2, seed=6)
    assert not np.array_equal(found, tokens_per_group(other, routing))
    # the tokens' own stream: TP leaves the counts' draw as it was
    assert np.array_equal(routing.counts, make_routing(Workload(MODEL_PRESETS["mixtral-8x7b"], 4096, 8, 1, seed=5)).counts)


def test_a_placement_moves_the_tokens_with_their_experts(trace):
    wl = workload(trace, 4, 2)
    swapped = Placement("swap", np.array([0, 2, 1, 3, 4, 5, 6, 7])).apply(make_routing(wl))  # experts 1 and 2 trade
    assert isinstance(swapped, Routing) and swapped.picks[0].tolist() == [[0, 2], [0, 4], [1, 3], [6, 7]]
    # {0,1}: t0 (0), t1 (0), t2 (1); {2,3}: t0 (2), t2 (3)
    assert tokens_per_group(wl, swapped)[0].tolist() == [3, 2, 1, 1]
