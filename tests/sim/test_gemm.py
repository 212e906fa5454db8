import numpy as np
from comet_dse.sim.gemm import kernel_time_ns, persistent_schedule


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
