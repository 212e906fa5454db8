from itertools import permutations

import numpy as np
import pytest
from comet_dse.search.placement import (
    Placement,
    cross_node_bytes,
    optimized,
    round_robin,
)
from comet_dse.sim import Comet, Sequential, simulate

from comet_dse.cli import main
from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import ModelConfig
from comet_dse.routing import make_routing
from comet_dse.workload import Workload

MODEL = ModelConfig("blocky", num_experts=32, top_k=2, hidden=2048, ffn=1408, num_layers=1)


@pytest.fixture
def blocky(tmp_path):
    """Tokens of node 0 use experts that round-robin places on node 1, and vice versa."""
    tokens, world = 512, 16
    node1_experts = [e for e in range(32) if (e % 16) // 8 == 1]
    node0_experts = [e for e in range(32) if (e % 16) // 8 == 0]
    rows = []
    for rank in range(world):
        pool = node1_experts if rank < 8 else node0_experts
        rows += [[pool[(j + rank) % 16], pool[(j + rank + 5) % 16]] for j in range(tokens)]
    np.save(tmp_path / "blocky.npy", np.array(rows))
    return Workload(MODEL, tokens, world, routing=f"trace:{tmp_path / 'blocky.npy'}")


def test_solver_cuts_cross_node_traffic_and_the_layer_gets_faster(blocky):
    hw = HARDWARE_PRESETS["h800"]
    routing = make_routing(blocky)
    before, after = round_robin(blocky), optimized(blocky, routing, hw.gpus_per_node)
    assert sorted(after.slot_of_expert) == list(range(32))  # a placement: every slot used once
    assert cross_node_bytes(blocky, routing, after, 8) < 0.1 * cross_node_bytes(blocky, routing, before, 8)
    for schedule in (Sequential(), Comet()):
        slow = simulate(blocky, hw, schedule, routing=before.apply(routing), record=False).latency_us
        fast = simulate(blocky, hw, schedule, routing=after.apply(routing), record=False).latency_us
        assert fast < 0.8 * slow, (schedule.name, slow, fast)


def test_solver_matches_brute_force_on_a_tiny_cluster():
    model = ModelConfig("tiny", num_experts=4, top_k=1, hidden=64, ffn=64, num_layers=1)
    workload = Workload(model, 64, 4, routing="zipf:1.5", seed=3)
    routing = make_routing(workload)
    best = min(cross_node_bytes(workload, routing, Placement("p", np.array(p)), 2) for p in permutations(range(4)))
    assert cross_node_bytes(workload, routing, optimized(workload, routing, 2), 2) == best


def test_place_cli_writes_the_placement(tmp_path, monkeypatch, capsys, blocky):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.json"
    config.write_text('{"num_local_experts": 32, "num_experts_per_tok": 2, "hidden_size": 2048, '
                      '"intermediate_size": 1408, "num_hidden_layers": 1, "model_type": "blocky"}')
    code = main(["place", "--model", str(config), "--ep", "16", "--tokens", "512", "--routing", blocky.routing,
                 "--schedule", "comet"])
    out = capsys.readouterr().out
    assert code == 0 and "round-robin" in out and "placement: results/placements/blocky-h800-ep16-tp1-tokens512.json" in out
