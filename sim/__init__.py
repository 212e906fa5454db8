"""The discrete-event simulator of one MoE layer on every rank (SimPy)."""

from comet_dse.sim.api import default_schedule, simulate
from comet_dse.sim.result import RankResult, Result
from comet_dse.sim.schedules import SCHEDULES, Chunked, Comet, Schedule, Sequential

# Part of every tuning study's identity (search/study.py): bump it whenever a change to the
# simulator or the hardware cost formulas alters predictions, so stored studies stop answering.
COST_MODEL_VERSION = 21  # 2: measured profiles price the fused kernels as built (per-source tiles, waves);
# 3: comet's row tiles merged across sources unless tile_layout='by-source'; measured: layer1 by last source;
# 4: measured: 7 small kernels before layer0 (step 1 on the device); one communication-alone floor for every
# schedule, hidden fraction of the hideable part, comm_bound; a measured GEMM slowdown below 1 read as 1;
# 5: measured: a fused tile from a robust line through every SM count measured; copy_contention slows the copies;
# 6: measured: the combine at calibrate's "combine" rate (else the gather's); the layer's own copy rate first;
# 7: measured: B0's host chain (b0_host) paces sequential and chunked after their sync;
# 8: links re-rated once per instant (beyond exact_limit flows the local max-min steps differ)
# 9: TP moves tokens, once per EP group, and pre-reduced partials back, not every (token, expert) row
# 10: measured: a fused GEMM launch's fixed cost is the least over its SM counts (slower weight streaming at
# fewer SMs is the tiles' work, not the launch's)
# 11: layer0/layer1 copies run to every peer at once (one lane per peer; network peers 8 at a time, by turns)
# 12: beyond 32 GPUs comet's copies priced by the fluid network (sim/fluid.py; --network auto), not flows
# 13: measured with the graph figures (graph_launch_us): each fused kernel's own cost beyond its tiles (calibrate's
# fixed cost of the same GEMM code) ends its span; forward_fixed_us, where measured, prices the forward's small kernels
# 14: measured, with the loop's table: sequential and chunked run one expert GEMM for the whole layer (expert_gemm;
# "best" the faster layer), not the cheaper table per GEMM; the loop's further torch.mm launches cost the host
# 15: measured: a torch._grouped_mm call over uneven experts runs the waves of its 2x1 cluster tiles (the table's
# time per wave at the mean rows), not each expert's share at its own rows summed (run 86: 1.1-2.1x at 128-2048 rows)
# 16: measured, B0's and B1's loop GEMM as kernels/baselines.py runs it since 2026-11-27 18:00: one torch.mm per
# (source, expert) run as the rows arrived, no regroup (loop_regroups: bench files before, which validate reads)
# 17: measured, B0 and B1 under TP at one EP rank as kernels/tp_baselines.py runs them: no regroup, no host sync
# with torch._grouped_mm (the host launches the call from its start, the TP all-gathers first), the TP group's every
# (token, slot) row permuted, the partials summed in the activations' dtype and cast after; B1 one all-gather and one
# reduce-scatter around its chunks
# 18: measured, comet's copies as the plan deals its remote tiles to the communication blocks (round robin; the
# most loaded block ends them, the link shared among the blocks still moving: fused_costs.deal_stretch)
# 19: measured, a remote tile of layer0 lands when the one communication block dealt it has moved it, at that block's
# share of the blocks' pace (fused_costs.pulled_tile_ends_ns), not when the blocks' aggregate flow reaches its bytes
# 20: measured, those blocks move at rate(k) / k while k of them still move, so the last speed up as the others finish
# (fused_costs.pulled_tile_ends_ns), not at a fixed share to the end
# 21: comet on one GPU lays its tiles out by source, as the kernels do there (FusedConfig.layout: merged tiles need a
# peer), whatever tile_layout asks; a pulled tile of no rows in a block's hands takes no time when another block
# finishes (it priced 0/0: NaN)
# (not a version: simulate(after_gap=True), which `validate --after-gap` asks for, prices comet's tiles off the power
# cap where a profile has calibrate's power_state table; simulate and tune leave it off: a study's predictions stay)

__all__ = ["COST_MODEL_VERSION", "SCHEDULES", "Chunked", "Comet", "RankResult", "Result", "Schedule", "Sequential",
           "default_schedule", "simulate"]
