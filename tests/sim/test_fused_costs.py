"""sim/fused_costs.copies_while_computing: a layer's copies slowed by the share of its GEMM's span they lose, in the
two regimes (copies outlasting the GEMM, copies ending first) and where a profile has no such table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from comet_dse.measured import Curve
from comet_dse.sim.fused_costs import copies_while_computing


def _ctx(shares: dict[str, Curve] | None):
    tables = None if shares is None else SimpleNamespace(
        copy_share_lost=lambda blocks, way, hidden, ffn: None if way not in shares else
        min(1.0, max(0.0, shares[way].linear(blocks))))
    return SimpleNamespace(hardware=SimpleNamespace(measured=tables),
                           workload=SimpleNamespace(model=SimpleNamespace(hidden=2048), ffn_per_rank=1408))


PULL = {"pull": Curve((1.0, 8.0), (1.0, 0.5))}


@pytest.mark.parametrize("blocks, gemm, copies, expected", [
    (8, 200.0, 400.0, (400 + 0.5 * 200) / 400),  # copies outlast the GEMM: they lose half of its 200 ns
    (8, 400.0, 100.0, 2.0),  # copies end first: half their pace throughout, 1 / (1 - 0.5)
    (1, 200.0, 400.0, 1.5),  # they stand still while it runs (share 1): only the outlasting form holds
    (4, 300.0, 600.0, 1 + (1.0 - 0.5 * 3 / 7) * 300 / 600),  # the share read between the block counts measured
])
def test_copies_lose_their_share_of_the_gemms_span(blocks, gemm, copies, expected):
    assert copies_while_computing(_ctx(PULL), "pull", blocks, lambda: gemm, copies) == pytest.approx(expected)


def test_no_table_no_blocks_or_no_share_leave_the_copies_alone():
    never = lambda: pytest.fail("the GEMM's span is not needed")  # noqa: E731
    assert copies_while_computing(_ctx(None), "pull", 8, never, 100.0) == 1.0
    assert copies_while_computing(_ctx(PULL), "push", 8, never, 100.0) == 1.0  # no push table here
    assert copies_while_computing(_ctx({"pull": Curve((1.0, 8.0), (0.0, 0.0))}), "pull", 8, never, 100.0) == 1.0


def test_the_nearest_gemm_shapes_table_answers():
    from comet_dse.measured import ShareTable, _layer_copy_contention
    qwen, mixtral = ({"model": name, "hidden": h, "ffn": f, "copy_blocks": [1, 8], "pull": [1.0, p], "push": [1.0, p]}
                     for name, h, f, p in (("qwen", 2048, 1408, 0.4), ("mixtral", 4096, 14336, 0.1)))
    tables = _layer_copy_contention({"layer_copy_contention": [qwen, mixtral]}, "hardware.tables")
    assert [t.hidden for t in tables] == [2048, 4096]
    nearest = lambda h, f: min(tables, key=lambda t: t.distance(h, f)).shares["pull"].linear(8)  # noqa: E731
    assert nearest(4096, 6400) == 0.1  # Phi-3.5-MoE's shape: Mixtral's table
    assert nearest(2048, 1408) == 0.4
    (every,) = _layer_copy_contention({"layer_copy_contention": {k: qwen[k] for k in ("copy_blocks", "pull", "push")}}, "t")
    assert every == ShareTable(None, None, every.shares) and every.distance(4096, 6400) == 0.0
