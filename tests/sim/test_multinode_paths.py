"""Paths between nodes: direct NIC to NIC, DeepEP's rail forwarding, NCCL's PXN; NICs shared by the
GPUs of a rail; incast at a receiving NIC; the NIC's own collective efficiency.

Hand-sized cases: 2 nodes of 2 or 4 GPUs, NIC 16 B/ns (16 GB/s), NVLink 64 B/ns, flows of
1.6 MB, so one flow alone on a NIC takes 100 us. GPU (node a, local i) is rank a * g + i.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
from comet_dse.sim import Comet, simulate
from comet_dse.sim.network import FlowNetwork
from comet_dse.sim.runtime import SimContext

from comet_dse.cli import main
from comet_dse.hardware import HARDWARE_PRESETS, OPTIONAL_FIGURE_DEFAULTS, HardwareProfile, resolve_hardware
from comet_dse.models import ModelConfig
from comet_dse.routing import make_routing
from comet_dse.workload import Workload
from tests.conftest import hand_hardware

MODEL = ModelConfig("multinode-hand", num_experts=8, top_k=2, hidden=256, ffn=128, num_layers=1)
SIZE = 1_600_000  # bytes of one flow
NIC = 16.0  # B/ns
ALONE_NS = SIZE / NIC  # 100_000 ns: one flow alone on a NIC


def hardware(gpus_per_node: int, internode: str = "direct", nics_per_node: int | None = None) -> HardwareProfile:
    return replace(hand_hardware(), gpus_per_node=gpus_per_node, nic_GBps=NIC, internode=internode,
                   nics_per_node=nics_per_node)


def context(hw: HardwareProfile, world: int) -> SimContext:
    wl = Workload(MODEL, 4, world)
    return SimContext(wl, hw, make_routing(wl))


def names(ctx: SimContext, src: int, dst: int) -> list[str]:
    return [link.name for link in ctx.path(src, dst)]


def finish_ns(ctx: SimContext, sends: list[tuple[int, int]]) -> list[float]:
    """Each (src, dst) moves SIZE bytes, all starting at 0: when each lands."""
    flows = [ctx.network.transfer(ctx.path(src, dst), SIZE) for src, dst in sends]
    ctx.env.run()
    return [flow.history[-1][0] for flow in flows]


# ---- the links of each path -----------------------------------------------------------------


@pytest.mark.parametrize("internode, expected", [
    ("direct", ["nic-out0", "nic-in3"]),
    ("rail", ["nic-out0", "nic-in2", "nvlink-out2", "nvlink-in3"]),  # to 1:0 on rank 0's rail, NVLink to 1:1
    ("pxn", ["nvlink-out0", "nvlink-in1", "nic-out1", "nic-in3"]),  # NVLink to 0:1 on rank 3's rail, then NIC
])
def test_a_cross_rail_pair_takes_the_route_named(internode, expected):
    ctx = context(hardware(2, internode), 4)
    assert names(ctx, 0, 3) == expected
    # the same rail needs no hop; inside a node NVLink; to itself an HBM copy: in every route
    assert names(ctx, 0, 2) == ["nic-out0", "nic-in2"]
    assert names(ctx, 0, 1) == ["nvlink-out0", "nvlink-in1"]
    assert names(ctx, 0, 0) == ["hbm0"]
    assert ctx.latency_ns(0, 3) == (1000 if internode == "direct" else 2000)  # the hop adds NVLink's 1 us


def reference_path(src: int, dst: int, g: int, nics: int, internode: str) -> list[str]:
    """The routes as the docstrings state them, written out pair by pair."""
    (a, i), (b, j) = divmod(src, g), divmod(dst, g)
    if src == dst:
        return [f"hbm{src}"]
    if a == b:
        return [f"nvlink-out{src}", f"nvlink-in{dst}"]
    rail_i, rail_j = i * nics // g, j * nics // g
    if internode == "direct" or rail_i == rail_j:
        return [f"nic-out{a * nics + rail_i}", f"nic-in{b * nics + rail_j}"]
    if internode == "rail":
        return [f"nic-out{a * nics + rail_i}", f"nic-in{b * nics + rail_i}", f"nvlink-out{b * g + i}", f"nvlink-in{dst}"]
    return [f"nvlink-out{src}", f"nvlink-in{a * g + j}", f"nic-out{a * nics + rail_j}", f"nic-in{b * nics + rail_j}"]


@pytest.mark.parametrize("internode", ["direct", "rail", "pxn"])
@pytest.mark.parametrize("nics", [4, 2, 1])
def test_every_pair_of_two_nodes_of_four_follows_the_reference(internode, nics):
    ctx = context(hardware(4, internode, nics), 8)
    assert len(ctx.nic_out) == len(ctx.nic_in) == 2 * nics
    for src in range(8):
        for dst in range(8):
            assert names(ctx, src, dst) == reference_path(src, dst, 4, nics, internode), (src, dst)


def test_shared_nics_serve_their_rail():
    # 2 NICs for 4 GPUs: locals 0, 1 on NIC 0 and 2, 3 on NIC 1 of their node
    ctx = context(hardware(4, "direct", nics_per_node=2), 8)
    assert names(ctx, 1, 6) == ["nic-out0", "nic-in3"]
    assert names(ctx, 3, 4) == ["nic-out1", "nic-in2"]


# ---- bytes on links and completion times -----------------------------------------------------


def test_shared_nic_halves_each_gpus_rate():
    # 0 -> 2 and 1 -> 3 cross nodes together: own NICs, 100 us each; one NIC per node, both 200 us
    assert finish_ns(context(hardware(2), 4), [(0, 2), (1, 3)]) == [ALONE_NS, ALONE_NS]
    shared = context(hardware(2, nics_per_node=1), 4)
    assert names(shared, 1, 3) == ["nic-out0", "nic-in1"]
    assert finish_ns(shared, [(0, 2), (1, 3)]) == [2 * ALONE_NS, 2 * ALONE_NS]


@pytest.mark.parametrize("internode, end_ns", [
    ("direct", 3 * ALONE_NS),  # all three into NIC 4's in-link: total bytes / its rate
    ("pxn", 3 * ALONE_NS),  # forwarded to 0:0 first, then all on NIC 0 -> NIC 4
    ("rail", ALONE_NS),  # each on its own rail into NICs 4, 5, 6; NVLink (64) takes the two forwarded
])
def test_incast_into_one_gpu_is_bounded_by_the_nic_it_crosses(internode, end_ns):
    ctx = context(hardware(4, internode), 8)
    ends = finish_ns(ctx, [(0, 4), (1, 4), (2, 4)])
    assert max(ends) == end_ns
    assert max(ends) >= SIZE / ctx.hardware.nic_GBps


def test_under_rail_the_destinations_nvlink_bounds_the_forwarded_incast():
    # NIC 64 = NVLink: the three rails land at full speed, the two forwarded flows share NVLink-in 4
    hw = replace(hardware(4, "rail"), nic_GBps=64.0)
    ends = finish_ns(context(hw, 8), [(0, 4), (1, 4), (2, 4)])
    assert ends == [SIZE / 64, SIZE / 32, SIZE / 32]


ROW = 256 * 2  # bytes of one bf16 row of H = 256


def comet_pulls(tmp_path, monkeypatch, hw: HardwareProfile, picks: list[list[int]]) -> list[tuple[list[str], float]]:
    """The links and bytes of comet's layer0 pulls (the engine link left out) when every rank's token t
    picks experts picks[t] (8 experts on 8 ranks: expert e on rank e)."""
    pulls: list[tuple[list[str], float]] = []
    transfer = FlowNetwork.transfer

    def spy(self, path, size):
        if path[0].name.startswith("comm-blocks0"):
            pulls.append(([link.name for link in path[1:]], size))
        return transfer(self, path, size)

    monkeypatch.setattr(FlowNetwork, "transfer", spy)
    np.save(tmp_path / "picks.npy", np.array(picks, dtype=np.int64))
    wl = Workload(MODEL, len(picks), 8, routing=f"trace:{tmp_path / 'picks.npy'}")
    simulate(wl, hw, Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    return pulls


def link_bytes(pulls: list[tuple[list[str], float]]) -> dict[str, float]:
    moved: dict[str, float] = defaultdict(float)
    for links, size in pulls:
        for name in links:
            moved[name] += size
    return moved


def test_rail_forwarding_moves_the_hand_counted_bytes(tmp_path, monkeypatch):
    """Every rank sends one row to each expert 0..7 (rank e): one row per (source, destination).
    Under rail, GPU a:i reaches node b through NIC a:i -> NIC b:i, then NVLink b:i -> b:j."""
    picks = [[0, 5], [1, 6], [4, 7], [2, 3]]
    direct = link_bytes(comet_pulls(tmp_path, monkeypatch, hardware(4), picks))
    rail = link_bytes(comet_pulls(tmp_path, monkeypatch, hardware(4, "rail"), picks))
    for nic in range(8):  # each GPU sends one row to each of the 4 GPUs of the other node
        assert direct[f"nic-out{nic}"] == rail[f"nic-out{nic}"] == 4 * ROW
        assert direct[f"nic-in{nic}"] == rail[f"nic-in{nic}"] == 4 * ROW  # rail: the 4 rows of its rail
    for gpu in range(8):
        # NVLink: 3 rows to its node's peers; under rail, forwarded too: the 3 rows its rail brought
        # for its node's other GPUs, and the 3 rows the other rails brought it
        assert direct[f"nvlink-out{gpu}"] == direct[f"nvlink-in{gpu}"] == 3 * ROW
        assert rail[f"nvlink-out{gpu}"] == rail[f"nvlink-in{gpu}"] == 6 * ROW


@pytest.mark.parametrize("internode", ["rail", "pxn"])
def test_forwarded_traffic_stays_on_one_rail(tmp_path, monkeypatch, internode):
    """Every rank's two tokens go to experts 4..7 (node 1), one row to each: node 0 sends 16 rows across."""
    picks = [[4, 5], [6, 7]]
    pulls = comet_pulls(tmp_path, monkeypatch, hardware(4, internode), picks)
    crossing = [(links, size) for links, size in pulls if any(name.startswith("nic") for name in links)]
    assert len(crossing) == 16 and all(size == ROW for _, size in crossing)
    for links, _ in crossing:  # out of NIC 0:r (index r), into NIC 1:r (index 4 + r)
        out, into = (name for name in links if name.startswith("nic"))
        assert into == f"nic-in{4 + int(out.removeprefix('nic-out'))}", links
    moved = link_bytes(pulls)
    assert {name for name in moved if name.startswith("nic")} == {f"nic-out{k}" for k in range(4)} | {
        f"nic-in{k}" for k in range(4, 8)}
    assert all(moved[f"nic-out{k}"] == moved[f"nic-in{4 + k}"] == 4 * ROW for k in range(4))
    hops = 3 * 4 * ROW  # 12 of the 16 pairs change rail, one row each: each takes one NVLink hop
    intra = 4 * 3 * ROW  # node 1's ranks send each other one row each
    assert sum(v for name, v in moved.items() if name.startswith("nvlink-out")) == hops + intra
    direct = comet_pulls(tmp_path, monkeypatch, hardware(4), picks)
    assert any(links[-1] != f"nic-in{4 + int(links[0].removeprefix('nic-out'))}"
               for links, _ in direct if links[0].startswith("nic"))  # direct crosses rails


# ---- the collectives' closed form -----------------------------------------------------------

B = 1.6e6  # bytes per off-diagonal pair of a 2x2 all-to-all


@pytest.mark.parametrize("internode, nics, ports", [
    ("direct", None, (B, 2 * B)),  # a GPU: one NVLink peer, two NIC peers
    ("rail", None, (2 * B, 2 * B)),  # + one forwarded pair on NVLink; a NIC in takes its rail's two
    ("pxn", None, (2 * B, 2 * B)),
    ("direct", 1, (B, 4 * B)),  # one NIC carries its node's 4 cross pairs
])
def test_busiest_ports_follow_the_route(internode, nics, ports):
    pairs = np.full((4, 4), B) - np.diag(np.full(4, B))
    assert hardware(2, internode, nics).busiest_ports(pairs) == ports


def test_the_nic_has_its_own_collective_efficiency():
    pairs = np.full((4, 4), B) - np.diag(np.full(4, B))
    hw = hardware(2)  # NIC bound: 2B over 16 B/ns = 200 us, + 1 us collective + 1 us NIC latency
    assert hw.alltoall_ns(pairs) == pytest.approx(202_000)
    assert replace(hw, nic_collective_efficiency=0.5).alltoall_ns(pairs) == pytest.approx(402_000)
    # NVLink-bound work keeps the NVLink figure: one node of 4
    one_node = replace(hw, gpus_per_node=4, nic_collective_efficiency=0.5)
    assert one_node.alltoall_ns(pairs) == pytest.approx(3 * B / 64 + 1000)


@pytest.mark.parametrize("internode", ["rail", "pxn"])
def test_route_accounting_agrees_with_per_gpu_sums_where_nothing_is_forwarded(internode):
    rng = np.random.default_rng(0)
    pairs = rng.uniform(0, 1e6, (8, 8))
    rail = np.arange(8) % 4
    pairs[(np.arange(8)[:, None] // 4 != np.arange(8)[None, :] // 4) & (rail[:, None] != rail[None, :])] = 0.0
    assert hardware(4, internode).busiest_ports(pairs) == pytest.approx(hardware(4).busiest_ports(pairs))


# ---- the defaults change nothing ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HARDWARE_PRESETS))
def test_presets_keep_their_identity(name):
    hw = HARDWARE_PRESETS[name]
    assert (hw.nics_per_node, hw.nic_collective_efficiency, hw.internode, hw.graph_launch_us) == (None, None, "direct", None)
    assert not set(OPTIONAL_FIGURE_DEFAULTS) & set(hw.figures())  # tuning studies keep their digests
    assert not set(OPTIONAL_FIGURE_DEFAULTS) & (set(hw.to_dict()) - {"sources"})
    assert set(OPTIONAL_FIGURE_DEFAULTS) <= set(hw.sources)
    rail = resolve_hardware(name, internode="rail")
    assert rail.figures()["internode"] == "rail" and rail.sources["internode"] == "--internode"


@pytest.mark.parametrize("schedule", ["sequential", "chunked", "comet"])
def test_default_figures_given_explicitly_predict_the_same(schedule):
    wl = Workload(MODEL, 256, 8)
    hw = hardware(4)
    explicit = replace(hw, nics_per_node=4, nic_collective_efficiency=hw.collective_efficiency, internode="direct")
    sched = Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2) if schedule == "comet" else schedule
    assert simulate(wl, hw, sched).to_dict() == simulate(wl, explicit, sched).to_dict()


def test_cli_internode_rail(capsys):
    args = ["simulate", "--model", "deepseek-v3", "--ep", "16", "--tokens", "256", "--schedule", "comet", "--json"]
    assert main(args) == 0
    default = json.loads(capsys.readouterr().out)
    assert main([*args, "--internode", "direct"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert main([*args, "--internode", "rail"]) == 0
    rail = json.loads(capsys.readouterr().out)
    assert default["results"] == direct["results"]
    assert "internode" not in default["hardware"] and rail["hardware"]["internode"] == "rail"
    assert rail["results"]["comet"]["latency_us"] != direct["results"]["comet"]["latency_us"]
