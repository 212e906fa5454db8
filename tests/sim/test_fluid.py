"""The fluid network (sim/fluid.py): hand-computed shares, turns and loads, and its distance from the
flow engine where that engine is exact."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from comet_dse.sim import simulate
from comet_dse.sim.api import default_schedule, network_engine
from comet_dse.sim.fluid import class_progress, class_rates, push_times, shared_turns
from comet_dse.sim.runtime import SimContext

from comet_dse.errors import UserError
from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import MODEL_PRESETS
from comet_dse.routing import make_routing
from comet_dse.workload import Workload


def test_turns_share_the_class_equally_and_a_freed_turn_goes_to_the_next():
    # two at once: flows 0 (4 B) and 1 (1 B) share; 1 ends once each had 1 B (2 B delivered), flow 2 (2 B)
    # starts; it ends once it had 2 B (each of 0 and 2 had 2 more: 6 B); flow 0's last byte at 7 B
    begin, end = shared_turns([4.0, 1.0, 2.0], concurrent=2)
    assert begin.tolist() == [0.0, 0.0, 2.0]
    assert end.tolist() == [7.0, 2.0, 6.0]


def test_one_at_a_time_is_first_come_first_served():
    begin, end = shared_turns([3.0, 1.0, 2.0], concurrent=1)
    assert begin.tolist() == [0.0, 3.0, 4.0]
    assert end.tolist() == [3.0, 4.0, 6.0]


def test_engine_shares_are_max_min_between_flows():
    # 4 flows at once: 15 a flow; class a wants only 10, so b's 3 flows get the other 50
    assert class_rates({"a": 10.0, "b": 100.0}, {"a": 1, "b": 3}, 60.0) == {"a": 10.0, "b": 50.0}
    # both want more than their share: by flows, 1 : 3
    assert class_rates({"a": 100.0, "b": 100.0}, {"a": 1, "b": 3}, 40.0) == {"a": 10.0, "b": 30.0}
    assert class_rates({"a": 5.0}, {"a": 1}, math.inf) == {"a": 5.0}


def test_a_finished_class_hands_its_share_back():
    # 15 B/ns each until nvlink's 100 B are in (6.67 ns, network has 100 B too), then network alone at its 20
    progress = class_progress({"nvlink": 100.0, "network": 300.0}, {"nvlink": math.inf, "network": 20.0},
                              {"nvlink": 1, "network": 1}, 30.0, start=0.0)
    times, done = progress["network"]
    assert times == pytest.approx([0.0, 100 / 15, 100 / 15 + 10.0])
    assert done == pytest.approx([0.0, 100.0, 300.0])
    assert progress["nvlink"][0] == pytest.approx([0.0, 100 / 15])


class _Nodes:
    """A stand-in for SimContext: ranks 0-1 share a node, 2-3 another."""

    node_of = np.array([0, 0, 1, 1])


class _Loads:
    pair_ns = np.full((4, 4), 10.0)


def test_sends_leave_in_order_no_earlier_than_ready():
    # one class at the engine's 10 B/ns (the links would allow 300 B / 10 ns): 10, 20, then the third waits for 50
    ends = push_times(_Nodes, 0, [(0.0, 1, 100.0), (0.0, 1, 100.0), (50.0, 1, 100.0)], 10.0, _Loads)
    assert ends == pytest.approx([10.0, 20.0, 60.0])


class _FastNVLink:
    pair_ns = np.full((4, 4), 10.0)
    pair_ns[0, 1] = 1.0  # 0 -> 1's busiest link is busy 1 ns: NVLink wants up to 150 B/ns


def test_an_idle_class_leaves_the_engine_to_the_busy_one():
    # network's send is ready at 0 and wants at most 20 B/ns (200 B over its link's 10 ns); nvlink's at 5. Engine 30:
    # network alone 20 B/ns to 5 ns (100 B), then 15 each: network's last 100 B at 5 + 6.67, nvlink's 150 B by then
    # 100 B, then nvlink alone at 30: its last 50 B at 11.67 + 1.67
    ends = push_times(_Nodes, 0, [(0.0, 2, 200.0), (5.0, 1, 150.0)], 30.0, _FastNVLink)
    assert ends == pytest.approx([5 + 100 / 15, 5 + 100 / 15 + 50 / 30])


def test_link_loads_are_hand_counted():
    hardware = replace(HARDWARE_PRESETS["h800"], gpus_per_node=2)
    workload = Workload(MODEL_PRESETS["mixtral-8x7b"], 64, 4)
    ctx = SimContext(workload, hardware, make_routing(workload), record=False, engine="fluid")
    sends = np.zeros((4, 4))
    sends[0, 1] = hardware.link_GBps  # NVLink 0 -> 1: 1 ns on each port
    sends[0, 2] = 2 * hardware.nic_GBps  # NIC of 0 out -> NIC of 2 in: 2 ns
    sends[1, 2] = hardware.nic_GBps  # NIC of 1 out (1 ns) -> NIC of 2 in: now 3 ns
    loads = ctx.fluid.loads(sends)
    assert loads.pair_ns[0, 1] == pytest.approx(1.0)
    assert loads.pair_ns[0, 2] == pytest.approx(3.0)
    assert loads.pair_ns[1, 2] == pytest.approx(3.0)
    assert loads.pair_ns[2, 0] == 0.0  # nothing sent: no bound
    assert loads.busy_ns.sum() == pytest.approx(2 * 1.0 + 2.0 + 1.0 + 3.0)


@pytest.mark.parametrize("ep, blocks, tolerance", [(8, 4, 0.001), (8, 32, 0.001), (16, 8, 0.01), (16, 32, 0.01)])
def test_fluid_lands_near_the_exact_flows(monkeypatch, ep, blocks, tolerance):
    # the flow engine re-rating whole components (exact max-min however many flows) as the reference. One node:
    # every copy its own pair of ports, the fluid is the flows; two nodes of DeepSeek-V3: within 1%
    monkeypatch.setattr("comet_dse.sim.network.EXACT_LIMIT", 10**9)
    model = "mixtral-8x7b" if ep == 8 else "deepseek-v3"
    workload = Workload(MODEL_PRESETS[model], 4096 if ep == 8 else 1024, ep)
    routing = make_routing(workload)
    comet = replace(default_schedule("comet", workload.model.hidden), comm_blocks0=blocks, comm_blocks1=blocks)
    hardware = HARDWARE_PRESETS["h800"]
    flows = simulate(workload, hardware, comet, routing=routing, record=False, network="flows")
    fluid = simulate(workload, hardware, comet, routing=routing, record=False, network="fluid")
    assert (flows.network, fluid.network) == ("flows", "fluid")
    assert fluid.latency_us == pytest.approx(flows.latency_us, rel=tolerance)


def test_auto_runs_flows_up_to_32_gpus_and_fluid_beyond():
    assert network_engine("auto", 32) == "flows"
    assert network_engine("auto", 33) == "fluid"
    assert network_engine("flows", 1024) == "flows"
    with pytest.raises(UserError, match="--network"):
        network_engine("packets", 8)


def test_the_cli_names_the_network_in_the_table_and_the_json(capsys):
    from comet_dse.cli import main

    args = ["simulate", "--model", "mixtral-8x7b", "--ep", "8", "--tokens", "512", "--schedule", "comet", "--quiet"]
    assert main([*args, "--network", "fluid", "--json"]) == 0
    fluid = json.loads(capsys.readouterr().out)["results"]["comet"]
    assert main([*args, "--json"]) == 0  # auto: 8 GPUs run the flows
    flows = json.loads(capsys.readouterr().out)["results"]["comet"]
    assert (fluid["network"], flows["network"]) == ("fluid", "flows")
    assert fluid["latency_us"] == pytest.approx(flows["latency_us"], rel=0.001)  # one node: the same
    assert main(args) == 0
    assert "network flows" in capsys.readouterr().out
