"""comet under TP as the fused kernels run it (`tp_dispatch="rows"`): the EP layer over virtual experts, a row
per (token, expert) to each TP rank, against Comet's design (`"tokens"`, the default)."""

from __future__ import annotations

import pytest

from comet_dse.errors import UserError
from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import ModelConfig
from comet_dse.routing import make_routing, virtual_experts
from comet_dse.sim import Comet, simulate
from comet_dse.workload import Workload

MODEL = ModelConfig("m", 8, 2, 1024, 2048, num_layers=1)
HW = HARDWARE_PRESETS["h800"]


def test_virtual_experts_carry_every_row_of_an_ep_by_tp_layer():
    layer = Workload(MODEL, 100, ep=2, tp=2)
    routing = make_routing(layer)
    virtual, counts = virtual_experts(layer, routing)
    assert (virtual.ep, virtual.tp, virtual.model.num_experts, virtual.model.top_k, virtual.model.ffn) == (4, 1, 16, 4, 1024)
    # virtual expert (g * 2 + t) * 4 + i is expert g * 4 + i's shard t: the same rows from every source
    for g in range(2):
        for t in range(2):
            for i in range(4):
                assert (counts.counts[:, (g * 2 + t) * 4 + i] == routing.counts[:, g * 4 + i]).all()
    assert counts.counts.sum() == 2 * routing.counts.sum()  # a row per slot to each TP rank
    assert counts.shares.sum() == pytest.approx(1.0)


def test_rows_is_the_virtual_expert_layer_and_moves_more_than_tokens():
    layer = Workload(MODEL, 2048, ep=1, tp=4)
    routing = make_routing(layer)
    rows = simulate(layer, HW, Comet(block_n=128, tp_dispatch="rows"), routing=routing, record=False)
    virtual, virtual_routing = virtual_experts(layer, routing)
    direct = simulate(virtual, HW, Comet(block_n=128), routing=virtual_routing, record=False)
    assert rows.latency_us == direct.latency_us  # the same layer, simulated the same way
    tokens = simulate(layer, HW, Comet(block_n=128), routing=routing, record=False)
    # top-2: each TP rank gets two rows of a token instead of the token once, and returns two partials
    assert rows.comm_alone_us > tokens.comm_alone_us


def test_rows_changes_nothing_without_tp():
    layer = Workload(MODEL, 512, ep=4)
    routing = make_routing(layer)
    a = simulate(layer, HW, Comet(block_n=128, tp_dispatch="rows"), routing=routing, record=False)
    b = simulate(layer, HW, Comet(block_n=128), routing=routing, record=False)
    assert a.latency_us == b.latency_us


def test_an_unknown_dispatch_is_refused_naming_the_option():
    with pytest.raises(UserError, match="--tp-dispatch: must be one of tokens, rows, got 'pairs'"):
        simulate(Workload(MODEL, 64, ep=2, tp=2), HW, Comet(block_n=128, tp_dispatch="pairs"), record=False)
