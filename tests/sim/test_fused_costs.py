"""sim/fused_costs: copies_while_computing, a layer's copies slowed by the share of its GEMM's span they lose, in the
two regimes (copies outlasting the GEMM, copies ending first) and where a profile has no such table; remote_tiles
and deal_stretch, the remote tiles as the kernels' plan deals them to the communication blocks; dealt_blocks, which block
moves each, and pulled_tile_ends_ns, when each of them has landed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import pytest
from comet_dse.measured import Curve
from comet_dse.models import ModelConfig
from comet_dse.routing import Routing
from comet_dse.sim.fused_costs import (
    copies_while_computing,
    deal_stretch,
    dealt_blocks,
    pulled_tile_ends_ns,
    remote_tiles,
)
from comet_dse.sim.layout import build_layout
from comet_dse.workload import Workload


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


def _link(k: int) -> float:
    """A link curve that saturates: 10 per block up to 4 blocks, 40 beyond."""
    return 10.0 * min(k, 4)


def test_an_even_deal_moves_at_the_curves_rate():
    assert deal_stretch(np.full(8, 128), 4, _link) == 1.0  # two tiles a block
    assert deal_stretch(np.full(8, 128), 0, _link) == 1.0  # the copy engine: nothing dealt
    assert deal_stretch(np.zeros(3), 2, _link) == 1.0


def test_the_most_loaded_block_ends_the_copies_at_its_own_pace():
    # 3 tiles on 2 blocks: block 0 holds 2, block 1 one. Both move at 10 until block 1 is done (128 / 10), then block 0
    # alone at 10: 256 / 10 in all, where 384 rows at 2 blocks' 20 would take 384 / 20
    assert deal_stretch(np.full(3, 128), 2, _link) == pytest.approx((256 / 10) / (384 / 20))
    # beyond the link's saturation the blocks left speed up: 5 tiles on 8 blocks (40 for any 4 or more): 5 blocks at 8
    # each; nothing waits on the 3 idle ones: 128 / 8 against 640 / 40, no stretch at all
    assert deal_stretch(np.full(5, 128), 8, _link) == pytest.approx(1.0)
    # layer1 deals each tile once per split: 3 tiles x 2 splits on 2 blocks is 3 items each, an even deal
    assert deal_stretch(np.full(3, 128), 2, _link, splits=2) == pytest.approx(1.0)
    # uneven tiles: [128, 10, 128, 10] on 2 blocks is 256 against 20 rows: 20 at 10 each, then 236 alone at 10
    assert deal_stretch(np.array([128, 10, 128, 10]), 2, _link) == pytest.approx((20 / 10 + 236 / 10) / (276 / 20))


def _per_block(k: int) -> float:
    """One byte a ns a block, the link never its limit (256 blocks reach 256)."""
    return float(k)


def test_a_blocks_items_cost_their_own_time_beside_their_rows():
    # a block alone moves a 100-row item of the curve's workload in 100 ns, 10 of them the item's own: a row is 0.9 ns.
    # Tiles [100, 50] on 2 blocks: 10 + 90 and 10 + 45 ns; the first ends the copies at 100, where the 150 bytes at 2
    # blocks' 2 a ns take 75
    item = (10.0, 100, 1.0, 256.0)  # the link: 256 blocks' 256 a ns
    assert deal_stretch(np.array([100, 50]), 2, _per_block, item=item) == pytest.approx(100 / 75)
    # without the item's own time the same deal is rows at the curve's pace: 100 of 150 rows, as before
    assert deal_stretch(np.array([100, 50]), 2, _per_block) == pytest.approx(100 / 75)
    # more, smaller items take longer than the same rows in fewer: 4 items of 25 rows on one block, 4 x 10 + 90
    assert deal_stretch(np.full(4, 25), 1, _per_block, item=item) == pytest.approx(130 / 100)
    assert deal_stretch(np.full(4, 25), 1, _per_block, item=(0.0, 100, 1.0, 256.0)) == pytest.approx(1.0)  # none: as before


def test_at_the_links_limit_the_blocks_share_it_by_what_they_ask():
    # the link carries 1.5 a ns however many blocks move; one block alone 1 a ns (0.9 ns a row beside 10 ns an item).
    # Two equal items of 100 rows ask 100 / 100 each, 2 in all: their rows slow alike until they ask 1.5, and both end
    # together when the link has carried the 200 bytes, 200 / 1.5 ns: no stretch over the curve's 1.5
    def capped(k: int) -> float:
        return min(float(k), 1.5)
    assert deal_stretch(np.full(2, 100), 2, capped, item=(10.0, 100, 1.0, 1.5)) == pytest.approx(1.0)
    # uneven items: the block with more rows asks more of the link and gets more of it, so it ends sooner than at an
    # equal share: [100, 20] on 2 blocks ends before the larger item alone at half the link (10 + 100 / 0.75)
    uneven = deal_stretch(np.array([100, 20]), 2, capped, item=(10.0, 100, 1.0, 1.5)) * 120 / 1.5
    assert 100 < uneven < 10 + 100 / 0.75


def test_a_dynamic_deal_gives_the_next_item_to_the_block_free_first():
    # items [100, 10, 10, 10] on 2 blocks (0.9 ns a row, 10 an item): block 0 takes the 100-row item (ends at 100),
    # block 1 the three small ones one after another (19 each, ends at 57); a static deal gives block 0 the third too
    item = (10.0, 100, 1.0, 256.0)  # the link: 256 blocks' 256 a ns
    assert deal_stretch(np.array([100, 10, 10, 10]), 2, _per_block, dynamic=True, item=item) == pytest.approx(100 / 65)
    assert deal_stretch(np.array([100, 10, 10, 10]), 2, _per_block, item=item) == pytest.approx(119 / 65)


def _layout(merged: bool):
    """Rank 0 of two, two experts each, top-1: rank 0 routes 200 rows to its expert 0 and 100 to expert 1, rank 1 50
    and 300 there."""
    workload = Workload(ModelConfig("four", num_experts=4, top_k=1, hidden=256, ffn=128, num_layers=1), 300, 2)
    counts = np.zeros((2, 4), dtype=np.int64)
    counts[0, :2] = [200, 100]
    counts[1, :2] = [50, 300]
    return build_layout(workload, Routing(counts, np.full(4, 0.25)), 0, 128, "local-first", 8, split_by_source=not merged)


def test_remote_tiles_as_the_plan_lays_them_out():
    # merged (kernels/fused_plan.reference_plan): expert 0's 250 rows are one own full tile (0-127), then its run: own
    # rows 128-199 with rank 1's 50 (one tile, 50 moved); expert 1's 400: no own full tile, its run 100 own + 300
    # remote in tiles of 128: 28, 128, 128, 16 moved
    assert remote_tiles(_layout(merged=True), 128, merged=True)[1].tolist() == [50, 28, 128, 128, 16]
    # by source: only rank 1's rows are remote, tile by tile of its own pieces: 50; 128, 128, 44
    assert remote_tiles(_layout(merged=False), 128, merged=False)[1].tolist() == [50, 128, 128, 44]


@pytest.mark.parametrize("merged", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_remote_tiles_match_the_kernels_plan(merged, seed):
    """The simulator's layout and the kernels' own plan (kernels/fused_plan.reference_plan, walked as fused_moe._move_tile
    does) agree on every remote tile's moved rows, in the communication blocks' order, on random routings of 3 ranks."""
    from comet_dse.kernels.fused_plan import reference_plan, source_rotation
    rng = np.random.default_rng(seed)
    world, per, block_m = 3, 4, 16
    counts = rng.integers(0, 60, size=(world, world * per))
    counts[rng.random(counts.shape) < 0.2] = 0  # empty pieces too
    workload = Workload(ModelConfig("twelve", num_experts=world * per, top_k=1, hidden=64, ffn=32, num_layers=1), 1000, world)
    for rank in range(world):
        layout = build_layout(workload, Routing(counts, np.full(world * per, 1 / (world * per))), rank, block_m,
                              "local-first", 8, split_by_source=not merged)
        rotation = source_rotation(rank, world, "local-first")
        tiles, _, pieces = reference_plan(counts.tolist(), rank, per, block_m, rotation, merged=merged)
        own_pos = rotation.index(rank)
        moved = [sum(max(0, min(row0 + rows, p[0] + p[1]) - max(row0, p[0])) for j, p in enumerate(pieces[e]) if j != own_pos)
                 for e, row0, rows, src, _ in tiles if src != rank]
        assert remote_tiles(layout, block_m, merged=merged)[1].tolist() == moved


def test_each_item_goes_to_its_block_round_robin_or_to_the_block_free_first():
    # items [100, 10, 10, 10] on 2 blocks, 10 ns an item and 1 a row: round robin, block 0 takes items 0 and 2, block
    # 1 items 1 and 3; dealt to the block free first, item 2 goes to block 1 (free at 20, block 0 at 110) and item 3
    # too (free at 40)
    items = np.array([100, 10, 10, 10])
    assert dealt_blocks(items, 2, dynamic=False).tolist() == [0, 1, 0, 1]
    assert dealt_blocks(items, 2, dynamic=True, item_ns=10.0, row_ns=1.0).tolist() == [0, 1, 1, 1]
    # by default the block with the fewest rows so far
    assert dealt_blocks(np.array([5, 7, 1, 1]), 2, dynamic=True).tolist() == [0, 1, 0, 0]


def test_the_remote_tiles_are_indexed_in_walk_order():
    layout = _layout(merged=True)
    order, moved = remote_tiles(layout, 128, merged=True)
    # the own full tile (expert 0's first) moves nothing and is not dealt; the rest are, in the layout's order
    assert order.tolist() == [1, 2, 3, 4, 5]
    assert layout.tile_rows[order].tolist() == [122, 128, 128, 128, 16]
    assert moved.tolist() == [50, 28, 128, 128, 16]
    by_source = _layout(merged=False)
    assert by_source.tile_last_source[remote_tiles(by_source, 128, merged=False)[0]].tolist() == [1, 1, 1, 1]


def test_a_pulled_tile_lands_after_its_whole_item_at_one_blocks_share():
    # each block moving 1 byte a ns whatever the others do (rate(k) = k); rows of 256 x 2 bytes, so 512 ns a row; no
    # per-item cost. Merged, the moved rows [50, 28, 128, 128, 16] dealt round robin: block 0 items 0, 2, 4, block 1
    # items 1, 3
    tiles, moved = remote_tiles(_layout(merged=True), 128, merged=True)
    assert tiles.tolist() == [1, 2, 3, 4, 5]
    ends = pulled_tile_ends_ns(moved, 2, lambda k: 1.0 * k, 512.0, None, dynamic=False)
    assert ends.tolist() == [512 * r for r in (50, 28, 50 + 128, 28 + 128, 50 + 128 + 16)]
    # a calibrated per-item cost (100 ns an item of 10 rows in the curve's workload): the curve's rate carried 10 ns a
    # row of it, so a row moves in 502 ns and each item costs 100 beside its rows
    ends = pulled_tile_ends_ns(moved, 2, lambda k: 1.0 * k, 512.0, (100.0, 10, 512.0, 2.0), dynamic=False)
    assert ends[:2].tolist() == [100 + 502 * 50, 100 + 502 * 28]


def test_the_last_block_moving_takes_the_whole_link():
    # the link moves 2 bytes a ns however many blocks share it (rate(k) = 2): 1 each while both move. Block 1 ends its
    # items 1 and 3 at (28 + 128) x 512 = 79872 ns; block 0 is then 11264 ns short of item 2's end (at 91136 with
    # both moving), which it covers at twice the pace, and moves item 4's 16 rows at 256 ns a row
    _, moved = remote_tiles(_layout(merged=True), 128, merged=True)
    ends = pulled_tile_ends_ns(moved, 2, lambda k: 2.0, 512.0, None, dynamic=False)
    assert ends.tolist() == pytest.approx([512 * 50, 512 * 28, 79872 + 11264 / 2, 79872, 79872 + 11264 / 2 + 16 * 256])


def test_a_tile_with_no_rows_to_pull_lands_at_once_while_another_block_finishes():
    # tiles whose rows all stay (none moved) in a block's hands when another block finishes: what is left of them is
    # nothing at either pace (it priced 0/0, NaN, and stalled the simulation: DeepSeek-V3 at TP=2, one token)
    # (the link moves 2 bytes a ns, shared: once the two empty tiles' blocks are done, the third has it all, 256 ns a row)
    ends = pulled_tile_ends_ns(np.array([0.0, 0.0, 1.0]), 3, lambda k: 2.0, 512.0, None, dynamic=False)
    assert ends.tolist() == [0, 0, 256]
