import numpy as np
from comet_dse.sim.gemm import item_spans, kernel_time_ns, persistent_schedule, split_tail


def test_all_ready_tiles_make_waves():
    dur = np.full(10, 100.0)
    starts, ends = persistent_schedule(np.zeros(10), dur, blocks=4, start_ns=0)
    assert list(starts) == [0, 0, 0, 0, 100, 100, 100, 100, 200, 200]
    assert ends.max() == kernel_time_ns(dur, 4) == 300


def test_a_tile_waits_for_its_rows_and_its_block():
    ready = np.array([0, 50, 500, 0])
    starts, ends = persistent_schedule(ready, np.full(4, 100.0), blocks=2, start_ns=10)
    # block 0: tile 0 at 10-110, tile 2 waits for rows until 500; block 1: tile 1 50-150, tile 3 150-250
    assert list(starts) == [10, 50, 500, 150]
    assert list(ends) == [110, 150, 600, 250]


def test_partial_last_wave_uses_the_busiest_block():
    dur = np.array([100.0, 300.0, 100.0])
    assert kernel_time_ns(dur, 2) == 300
    assert kernel_time_ns(np.array([]), 2) == 0


def test_split_tail_cuts_only_the_last_rounds_items_into_consecutive_pieces():
    dur = np.array([100.0, 100.0, 100.0, 100.0, 90.0])  # 5 items on 2 blocks: the fifth alone in round 3
    pieces, item = split_tail(dur, blocks=2, pieces=2)
    assert list(pieces) == [100, 100, 100, 100, 45, 45] and list(item) == [0, 1, 2, 3, 4, 4]
    starts, ends = persistent_schedule(np.zeros(len(pieces)), pieces, blocks=2, start_ns=0)
    first, last = item_spans(starts, ends, item, 5, finish_ns=7)
    # the fifth item's halves run side by side from 200; the one ending last sums them (+7)
    assert list(first) == [0, 0, 100, 100, 200] and list(last) == [100, 100, 200, 200, 252]
    # one piece: the items as they were, their spans the schedule's own
    same, item1 = split_tail(dur, blocks=2, pieces=1)
    assert list(same) == list(dur) and list(item1) == [0, 1, 2, 3, 4]
    s, e = persistent_schedule(np.zeros(5), dur, 2, 0)
    first, last = item_spans(s, e, item1, 5, finish_ns=7)
    assert first is s and last is e
