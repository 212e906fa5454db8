"""Comet's copies run to every peer at once: one lane per peer (source of a layer0 pull, destination
of a layer1 push), the comm blocks' engine link capping the rank's total and each peer's port shared
by its senders. Before, a rank walked its NVLink peers one at a time, ranks collided on one receiver
while others idled, and the latency jumped ±10% between neighbouring comm_blocks.

Hand-sized cases: 4 GPUs on NVLink (64 B/ns; or two nodes of 2, with 16 B/ns NICs), one comm block
16 B/ns with a hard saturation, GEMMs and HBM free; every rank routes 128 of its 512 tokens to each of the 4 experts (expert e on rank e), so
every copy between two ranks, its own included, is 128 rows x 256 x 2 B = 65536 B.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import simpy
from comet_dse.sim import Comet, simulate
from comet_dse.sim.network import FlowNetwork, Link
from comet_dse.sim.runtime import MAX_CONCURRENT_PEERS, Lane, LaneGate, SimContext

from comet_dse.hardware import HARDWARE_PRESETS, HardwareProfile
from comet_dse.models import MODEL_PRESETS, ModelConfig
from comet_dse.routing import make_routing
from comet_dse.workload import Workload
from tests.conftest import hand_hardware

H800 = HARDWARE_PRESETS["h800"]

# ---- (a) the latency is smooth in comm_blocks ------------------------------------------------

# How far a latency may rise above the mean of its two neighbours (block counts `step` apart), as a
# fraction of it. A spike, not any jump: with few blocks the copies are block-bound and the latency
# rightly falls 10-20% a step, and one block more or less can lose or win a compute wave (Mixtral:
# a 1.8% step, a 0.9% spike). Every peer at once: at most 0.87% (that Mixtral step); Qwen2 at most
# 0.68% (EP=8, step 2) and 0.15% (EP=16, step 4). One peer at a time failed every Qwen2 curve:
# 10.2% and 11.7% (EP=8, comm_blocks1 and comm_blocks0), 5.4% and 2.3% (EP=16).
SPIKE_BOUND = 0.015


def largest_spike(latencies: list[float]) -> float:
    return max((mid - (before + after) / 2) / mid for before, mid, after in zip(latencies, latencies[1:], latencies[2:]))


@pytest.mark.parametrize("model, ep, step, network", [
    ("qwen2-moe-2.7b", 8, 2, "flows"),
    ("mixtral-8x7b", 8, 2, "flows"),
    ("qwen2-moe-2.7b", 16, 4, "flows"),  # two nodes of 8: NVLink and network peers at once
    ("qwen2-moe-2.7b", 16, 4, "fluid"),  # the same on the fluid network (sim/fluid.py)
    ("deepseek-v3", 64, 8, "auto"),  # eight nodes: the fluid network by default
])
@pytest.mark.parametrize("knob", ["comm_blocks1", "comm_blocks0"])
def test_latency_is_smooth_in_comm_blocks(model, ep, step, network, knob):
    workload = Workload(MODEL_PRESETS[model], 4096, ep)
    routing = make_routing(workload)
    latencies = [simulate(workload, H800, Comet(**{knob: blocks}), routing=routing, record=False, network=network).latency_us
                 for blocks in range(4, 49, step)]
    assert largest_spike(latencies) < SPIKE_BOUND, [round(x) for x in latencies]


# ---- (b) a hand-counted case: 4 ranks, 65536 B between every two --------------------------------

MODEL = ModelConfig("peers-hand", num_experts=4, top_k=1, hidden=256, ffn=128, num_layers=1)
TOKENS = 512
COPY = 128 * 256 * 2  # bytes of each copy


@pytest.fixture
def four_ranks(tmp_path) -> Workload:
    path = tmp_path / "round-robin.npy"
    np.save(path, (np.arange(TOKENS) % 4).reshape(-1, 1).astype(np.int64))  # token t -> expert t % 4
    return Workload(MODEL, TOKENS, 4, routing=f"trace:{path}")


def links_only() -> HardwareProfile:
    """hand_hardware on 16 SMs with free GEMMs, HBM and host, no link latency: only the copies take time."""
    return replace(hand_hardware(), sms=16, gemm_tflops=1e9, hbm_GBps=1e12, host_sync_us=0.0, link_latency_us=0.0)


def copies(result, rank: int, layer: int) -> dict[str, list[tuple[float, float]]]:
    """(start, end) of each copy of one rank's layer, by peer lane."""
    lanes: dict[str, list[tuple[float, float]]] = {}
    for s in result.timeline.slices:
        if s.rank == rank and s.role.startswith(f"comm{layer} "):
            lanes.setdefault(s.role.removeprefix(f"comm{layer} "), []).append((s.start_ns, s.end_ns))
    return lanes


def test_the_engine_is_shared_by_every_peer_at_once(four_ranks):
    # 2 comm blocks: 32 B/ns for the rank's 4 copies (3 peers and its own rows): 8 B/ns each, well
    # under a receiver's NVLink (3 senders x 8 = 24 of 64): all four end together at 4 x 65536 / 32
    r = simulate(four_ranks, links_only(), Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    for rank in range(4):
        pulls = copies(r, rank, 0)
        peers = {f"nvlink from {p}" for p in range(4) if p != rank}
        assert set(pulls) == peers | {"local 0"}
        assert all(spans == [(0.0, 4 * COPY / 32)] for spans in pulls.values())  # 8192 ns
        # layer1: each peer's two column splits back to back, the peers side by side; the splits are
        # ready a nanosecond or two apart, so each copy ends within 2 ns of the hand count
        pushes = copies(r, rank, 1)
        assert set(pushes) == {f"nvlink to {p}" for p in range(4) if p != rank} | {"local 0"}
        start = min(s for spans in pushes.values() for s, _ in spans)
        for spans in pushes.values():
            assert len(spans) == 2 and spans[0][1] == spans[1][0]
            assert spans[-1][1] - start == pytest.approx(4 * COPY / 32, abs=2)


def test_each_nic_is_shared_by_its_copies_and_the_engine_by_the_rest(four_ranks):
    # two nodes of 2 GPUs, NICs of 16 B/ns; 6 comm blocks: 64 B/ns (the blocks' curve stops at NVLink).
    # A rank's 2 network copies share its NIC (out for pushes, in for pulls): 8 B/ns each, 65536 / 8 =
    # 8192 ns, and each far NIC takes exactly its 2 senders' 8 + 8. Its NVLink and own copies share the
    # engine's rest, 64 - 16 = 48 B/ns: 24 each, done at 65536 / 24 = 2730.7 ns (2731: whole ns)
    hw = replace(links_only(), gpus_per_node=2, nic_GBps=16.0)
    r = simulate(four_ranks, hw, Comet(comm_blocks0=6, comm_blocks1=6, n_splits=2))
    for rank in range(4):
        node_peer, far = rank ^ 1, [p for p in range(4) if p // 2 != rank // 2]
        assert copies(r, rank, 0) == {"local 0": [(0.0, 2731.0)], f"nvlink from {node_peer}": [(0.0, 2731.0)],
                                      **{f"network from {p}": [(0.0, COPY / 8)] for p in far}}
        pushes = copies(r, rank, 1)
        start = min(s for spans in pushes.values() for s, _ in spans)
        assert set(pushes) == {"local 0", f"nvlink to {node_peer}", *(f"network to {p}" for p in far)}
        for lane, spans in pushes.items():
            assert spans[-1][1] - start == pytest.approx(COPY / 8 if lane.startswith("network") else COPY / 24, abs=2)


# ---- (c) one peer: one lane, as before ----------------------------------------------------------


def one_lane_per_kind(self: SimContext, items, peer_of, rank, engine_GBps, pull) -> list[Lane]:
    """The old split where one lane filled a path (the comm blocks no faster than one link): each kind
    of path one lane, its items in order; the local copy as ever."""
    by_kind: dict[str, list] = {}
    for item in items:
        by_kind.setdefault(self.lane(peer_of(item), rank), []).append(item)
    return [lane for kind, work in by_kind.items()
            for lane in (self._local_lanes(work, engine_GBps) if kind == "local" else [Lane(f"{kind} 0", work)])]


@pytest.mark.parametrize("model", ["qwen2-moe-2.7b", "mixtral-8x7b"])
@pytest.mark.parametrize("blocks", [(16, 16), (4, 40)])
def test_two_ranks_predict_what_one_lane_per_kind_did(model, blocks, monkeypatch):
    workload = Workload(MODEL_PRESETS[model], 4096, 2)
    knobs = Comet(comm_blocks0=blocks[0], comm_blocks1=blocks[1])
    now = simulate(workload, H800, knobs, record=False)
    monkeypatch.setattr(SimContext, "lanes", one_lane_per_kind)
    before = simulate(workload, H800, knobs, record=False)
    assert (now.latency_us, now.layer0_us, now.events) == (before.latency_us, before.layer0_us, before.events)


def test_one_peer_is_one_lane_in_order(four_ranks):
    ctx = SimContext(four_ranks, links_only(), make_routing(four_ranks))
    sends = [(0.0, 1, 10.0), (1.0, 0, 20.0), (2.0, 1, 30.0)]
    lanes = ctx.lanes(sends, lambda send: send[1], 0, 32.0, pull=False)
    assert [(lane.name, lane.items, lane.gate) for lane in lanes] == [
        ("nvlink to 1", [(0.0, 1, 10.0), (2.0, 1, 30.0)], None), ("local 0", [(1.0, 0, 20.0)], None)]


# ---- beyond MAX_CONCURRENT_PEERS peers of a kind, the lanes take turns --------------------------


def test_a_freed_turn_goes_to_the_least_served_peer():
    env = simpy.Environment()
    gate = LaneGate(env, 1)
    busy, quiet, idle = Link("busy", 1.0), Link("quiet", 1.0), Link("idle", 1.0)
    busy.flows.update(dict.fromkeys(["a", "b"]))  # stand-ins: the gate only counts them
    quiet.flows.update(dict.fromkeys(["c"]))
    first = gate.acquire(busy)
    waiting = [gate.acquire(port) for port in (busy, quiet, idle, quiet)]
    assert first.triggered and not any(turn.triggered for turn in waiting)
    gate.release()
    env.run()
    assert [turn.triggered for turn in waiting] == [False, False, True, False]  # no flows on `idle`
    gate.release()
    env.run()
    assert [turn.triggered for turn in waiting] == [False, True, True, False]  # `quiet`, first come


def test_many_network_peers_take_turns(tmp_path, monkeypatch):
    # 32 ranks, 2 per node: 30 network peers each; every rank sends each of them rows, and gets rows back
    world = 32
    trace = tmp_path / "spread.npy"
    np.save(trace, (np.arange(4 * world) % world).reshape(-1, 1).astype(np.int64))
    workload = Workload(replace(MODEL, num_experts=world), 4 * world, world, routing=f"trace:{trace}")
    in_flight: dict[str, int] = {}  # network copies by engine: comm-blocks{0,1}-rank{r}
    most: dict[str, int] = {}
    transfer = FlowNetwork.transfer

    def counting(self, path, size):
        flow = transfer(self, path, size)
        engine = path[0].name
        if any(link.name.startswith("nic") for link in path):
            in_flight[engine] = in_flight.get(engine, 0) + 1
            most[engine] = max(most.get(engine, 0), in_flight[engine])
            flow.done.callbacks.append(lambda _: in_flight.__setitem__(engine, in_flight[engine] - 1))
        return flow

    monkeypatch.setattr(FlowNetwork, "transfer", counting)
    hw = replace(links_only(), gpus_per_node=2, nic_GBps=16.0)
    r = simulate(workload, hw, Comet(comm_blocks0=6, comm_blocks1=6, n_splits=2))
    assert len(most) == 2 * world and set(most.values()) == {MAX_CONCURRENT_PEERS}  # both layers, every rank
    far = range(2, world)
    assert {s.name for s in r.timeline.slices if s.rank == 0 and s.role.startswith("comm0 network")} == {
        f"pull from rank {p}" for p in far}
    assert {s.name for s in r.timeline.slices if s.rank == 0 and s.role.startswith("comm1 network")} == {
        f"send to rank {p}" for p in far}  # every peer got its turn
    # and every byte: 4 rows of each far rank come in (layer0) and go back (layer1, a turn's ready splits as one copy)
    row = MODEL.hidden * workload.dtype_bytes
    for layer in ("comm0 network", "comm1 network"):
        moved = sum(s.args["bytes"] for s in r.timeline.slices if s.rank == 0 and s.role.startswith(layer))
        assert moved == 4 * len(far) * row, (layer, moved)
