"""The kernels one rank of the collective-based schedules runs, each with its price.

Two price lists. Without measured tables (presets, flat profiles) the cost model of the
figures: permute and reduce as HBM passes, GEMMs as persistent tiles on all SMs, the
collectives from the bottleneck model. With a measured profile (comet_dse/measured.py), the
kernels B0 really launches (kernels/baselines.py moe_chunked), each priced from the tables: the
passes by kind, the expert GEMM by rows per expert (`torch._grouped_mm`, one launch, or one
`torch.mm` launch per (source, local expert) run with rows, the rows as they arrived and so no
regroup: expert_gemm "loop"), the all-to-all by the busiest rank's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from comet_dse.sim.gemm import kernel_time_ns
from comet_dse.sim.layout import Group
from comet_dse.sim.runtime import SimContext
from comet_dse.sim.schedules.base import grouped_gemm_runs, sent_rows

from comet_dse.hardware import HardwareProfile

# Small torch ops of B0 (kernels/baselines.py) that do no pass over rows, each charged one
# kernel launch (figures.kernel_launch_us, which calibrate measures as a small kernel's cost).
# B0's routing plan (sort, searchsorted, the split sizes, their exchange and the host sync) is not
# among them: calibrate times that whole function as figures.host_sync_us.
# the expert-major gather index (_expert_major: 2 reshapes, 2 cumsums, 2 subs, arange,
# repeat_interleave, add) and the group ends (sum, cumsum; torch._grouped_mm's offsets, which the loop did
# without when it regrouped too: bench files before 2026-11-27 18:00, see loop_regroups); only when rows are
# regrouped;
REGROUP_INDEX_OPS = 11
GROUP_ENDS_OPS = 2
# the cast of the top-k weights before the weighted sum.
REDUCE_OPS = 1
OUT_BYTES = 4  # the layer's output is fp32 (out_dtype), as in the bench
# What the host launches after B0's one sync (kernels/baselines.py; the steps here put the send-order
# gather before the sync, where the GPU time is the same): a dispatch is the gather and its all-to-all,
# a combine its all-to-all, the final passes the token-order scatter and the weighted sum.
DISPATCH_LAUNCHES = 2
COMBINE_LAUNCHES = 1
REDUCE_LAUNCHES = 1 + 1 + REDUCE_OPS
# Where B0 reads nothing on the host (one EP rank, torch._grouped_mm: kernels/baselines.py _plan) there is no
# sync and the host launches the whole call from its start: first the routing plan (sort, arange, searchsorted,
# the counts' difference, their transposed copy, the pairs' tokens) and torch._grouped_mm's group ends (sum,
# cumsum); under TP (kernels/tp_baselines.py) the all-gathers of tokens, expert ids and weights come before the
# plan, the reduce-scatter and the cast to out_dtype after the weighted sum.
PLAN_LAUNCHES = 6
TP_GATHER_LAUNCHES = 3
TP_SCATTER_LAUNCHES = 1  # the reduce-scatter; its cast is a step of combine_side
# B0's launches after the sync with rows regrouped (several ranks, several local experts: what
# calibrate's b0_host times): dispatch, the regroup index ops and gather, GEMM0, SwiGLU's two
# passes, GEMM1, the scatter back, combine, the final passes.
B0_LAUNCHES_AFTER_SYNC = DISPATCH_LAUNCHES + REGROUP_INDEX_OPS + 1 + 1 + 2 + 1 + 1 + COMBINE_LAUNCHES + REDUCE_LAUNCHES


@dataclass
class Kernel:
    """One kernel (or a run of small ones) on a rank's stream."""

    role: str  # timeline role: "stream" (memory passes, small ops) or "compute" (GEMMs)
    label: str
    ns: float  # its body, after its launches
    overhead: str | None  # the overheads_ns key it counts under; None: a GEMM (compute alone)
    launches: int = 1
    # a GEMM's tile times (preset model) as runs (tile time, tiles), for bubbles: every rank's kernels live for
    # the whole run, and the tiles themselves are tens of thousands a rank at scale
    tile_runs: tuple[np.ndarray, np.ndarray] | None = None
    shared_ns: float | None = None  # a GEMM's time while a collective holds its SMs (chunked)
    # the host's time for it beyond its launches at B0's price per launch: B0's torch.mm loop launches one torch.mm
    # per expert with rows, each further one at loop_mm_host_us (kernel_launch_us where not measured), where its
    # measured table already holds the GPU's gaps between them (the GPU is charged one launch)
    host_extra_ns: float = 0.0

    @property
    def host_op(self) -> tuple[int, int, float]:
        """What the host launches for it, as HostClock takes an op: (key, launches, extra ns)."""
        return id(self), self.launches, self.host_extra_ns

    def busy_tiles(self, sms: int) -> np.ndarray:
        """Per-SM busy time as tiles: the tiles, or every SM busy for the whole kernel."""
        return np.repeat(*self.tile_runs) if self.tile_runs is not None else np.full(sms, self.ns)


def busiest_bytes(sends: np.ndarray) -> float:
    """What the busiest rank of an all-to-all sends or receives, its own share included."""
    return float(max(sends.sum(axis=1).max(), sends.sum(axis=0).max()))


def alltoall_ns(ctx: SimContext, sends: np.ndarray) -> float:
    hw = ctx.hardware
    if hw.measured is None:
        return hw.alltoall_ns(sends)
    return hw.measured.alltoall_us(ctx.workload.world, busiest_bytes(sends)) * 1e3


def gemm_shape(ctx: SimContext, group: Group, layer: int) -> tuple[int, int, bool]:
    """(K, N, swiglu) of a group's GEMM: GEMM0 H -> 2F with SwiGLU (N = F), GEMM1 F -> H."""
    hidden = ctx.workload.model.hidden
    return (hidden, group.ffn, True) if layer == 0 else (group.ffn, hidden, False)


def gemm_impl(ctx: SimContext, expert_gemm: str) -> str:
    """The measured table an expert GEMM reads: the loop's where asked for and timed, else torch._grouped_mm's
    (a profile without the loop's table prices B0 with torch._grouped_mm alone: validate compares it with
    b0_grouped). "best" is resolved before a schedule runs (sim/api.py simulates both)."""
    return "loop" if expert_gemm == "loop" and ctx.hardware.measured.has_impl("loop") else "grouped_mm"


def loop_mm_host_ns(hw: HardwareProfile) -> float:
    """What each further torch.mm of B0's loop costs the host: measured, or an eager launch."""
    return (hw.kernel_launch_us if hw.loop_mm_host_us is None else hw.loop_mm_host_us) * 1e3


def measured_gemm_ns(ctx: SimContext, groups: list[Group], rows: np.ndarray, layer: int, sms: int,
                     impl: str = "grouped_mm") -> float:
    """B0's expert GEMM over uneven experts: torch._grouped_mm as one call per shape over its experts' rows (its
    waves of cluster tiles, MeasuredTables.grouped_mm_call_us); the loop of torch.mm expert by expert, each
    expert's share of a measured call at its own rows (time(rows_e) / experts of the measurement), summed."""
    tables = ctx.hardware.measured
    if impl == "grouped_mm":
        by_shape: dict[tuple[int, int, bool], list[float]] = {}
        for g, r in zip(groups, rows):
            by_shape.setdefault(gemm_shape(ctx, g, layer), []).append(float(r))
        return float(sum(tables.grouped_mm_call_us(*shape, shape_rows, sms) for shape, shape_rows in by_shape.items())) * 1e3
    return float(sum(tables.expert_gemm_us(impl, *gemm_shape(ctx, g, layer), int(r), sms) for g, r in zip(groups, rows))) * 1e3


def loop_runs(ctx: SimContext, groups: list[Group], source_rows: np.ndarray) -> tuple[list[Group], np.ndarray]:
    """B0's torch.mm loop over the rows as they arrived: one GEMM per (EP source, local expert) run with rows,
    as (the run's group, its rows) in launch order. `source_rows` (groups, W): rows by source rank; a source's
    TP group arrives as one (the TP baselines all-gather its tokens before the EP layer)."""
    wl = ctx.workload
    per_run = source_rows.reshape(len(groups), wl.ep, wl.tp).sum(axis=2)  # (groups, EP), rank = ep * tp + tp rank
    return [g for g, runs in zip(groups, per_run) for n in runs if n > 0], per_run[per_run > 0]


def gemm_kernel(ctx: SimContext, label: str, groups: list[Group], rows: np.ndarray, layer: int,
                block_m: int, block_n: int, shared_sms: int | None = None, expert_gemm: str = "grouped",
                source_rows: np.ndarray | None = None) -> Kernel:
    """A grouped GEMM on all SMs; `shared_sms`: also its time on that many (a collective holds the rest).
    Measured, the loop (expert_gemm "loop") is one launch per expert with rows, or with `source_rows` (groups, W)
    one per (source, expert) run with rows (loop_runs): the host's work grows with them."""
    hw = ctx.hardware
    if hw.measured is not None:
        impl = gemm_impl(ctx, expert_gemm)
        if impl == "loop" and source_rows is not None:
            groups, rows = loop_runs(ctx, groups, source_rows)
        shared = None if shared_sms is None else measured_gemm_ns(ctx, groups, rows, layer, shared_sms, impl)
        return Kernel("compute", label, measured_gemm_ns(ctx, groups, rows, layer, hw.sms, impl), None, shared_ns=shared,
                      host_extra_ns=max(int(np.count_nonzero(rows)) - 1, 0) * loop_mm_host_ns(hw) if impl == "loop" else 0.0)
    runs = grouped_gemm_runs(ctx, groups, rows, block_m, block_n, layer)
    tiles = np.repeat(*runs)
    shared = None if shared_sms is None else kernel_time_ns(tiles, shared_sms)
    return Kernel("compute", label, kernel_time_ns(tiles, hw.sms), None, tile_runs=runs, shared_ns=shared)


def pass_ns(ctx: SimContext, kind: str, bytes_moved: float) -> float:
    return float(np.ceil(ctx.hardware.measured.memory_pass_ns(kind, bytes_moved)))


def regroups(ctx: SimContext) -> bool:
    """B0 regroups received rows into expert order only with several EP ranks and several local experts (under
    TP at EP=1 the EP layer has one rank: the rows it gathered are already in expert order)."""
    return ctx.workload.ep > 1 and ctx.workload.experts_per_rank > 1


def host_syncs(ctx: SimContext, expert_gemm: str) -> bool:
    """Whether B0 (and B1) waits for the host once per call: it reads the split sizes there with several EP
    ranks, and the loop GEMM its runs' row counts always (kernels/baselines.py _plan); with one EP rank
    torch._grouped_mm reads nothing there. Without measured tables the figures' one host sync stays."""
    return ctx.hardware.measured is None or ctx.workload.ep > 1 or gemm_impl(ctx, expert_gemm) == "loop"


def unsynced_plan(ctx: SimContext) -> Kernel:
    """The routing plan where no host sync follows it (host_syncs False): its small kernels, launched first."""
    return Kernel("stream", "routing plan", 0.0, "launch", launches=PLAN_LAUNCHES + GROUP_ENDS_OPS)


def collective_launches(ctx: SimContext, syncs: bool) -> tuple[int, int]:
    """What the host launches for the dispatch and for the combine. After a sync: the dispatch's send-order gather
    (a step before the sync, launched after it) and all-to-all, the all-to-all back. Without one (one EP rank) the
    gather is its own step on the host clock and the dispatch is the TP all-gathers, the combine the
    reduce-scatter and its cast."""
    if syncs:
        return DISPATCH_LAUNCHES, COMBINE_LAUNCHES
    tp = ctx.workload.tp > 1
    return TP_GATHER_LAUNCHES * tp, TP_SCATTER_LAUNCHES * tp


def permuted_pairs(ctx: SimContext, rank: int) -> int:
    """The (token, slot) rows B0 gathers into send order and scatters back into (token, slot) order: its own
    tokens' with EP (sent_rows); under TP its TP group's, which the TP baselines all-gather before the EP
    layer (kernels/tp_baselines.py), every slot of every token."""
    wl = ctx.workload
    return sent_rows(ctx, rank) if wl.tp == 1 else wl.tp * wl.tokens * wl.model.top_k


def dispatch_side(ctx: SimContext, rank: int) -> list[Kernel]:
    """Measured B0 before the dispatch (after the routing plan, priced as the host sync): the
    gather of this rank's rows into send order (read + write) (permuted_pairs)."""
    wl = ctx.workload
    pairs = permuted_pairs(ctx, rank)
    row = wl.model.hidden * wl.dtype_bytes
    return [Kernel("stream", "gather to send order", pass_ns(ctx, "gather", 2 * pairs * row), "permute")]


def expert_side(ctx: SimContext, groups: list[Group], rows: np.ndarray, block_m: int, block_n: int,
                shared_sms: int | None = None, suffix: str = "", expert_gemm: str = "grouped", *,
                source_rows: np.ndarray, loop_regroups: bool = False) -> tuple[list[Kernel], list[Kernel]]:
    """Measured B0 between dispatch and combine, as (layer0 kernels, layer1 kernels): regroup
    gather, GEMM0, SwiGLU (silu_ then mul_: 5 R F elements moved), GEMM1, scatter back; the loop GEMM
    takes the rows as they arrived, one torch.mm per (source, expert) run of `source_rows` (groups, W), with
    no regroup, where `loop_regroups` is False (B0 since 2026-11-27 18:00; before, its loop regrouped too and
    ran one torch.mm per expert)."""
    wl = ctx.workload
    impl = gemm_impl(ctx, expert_gemm)
    index_ops = REGROUP_INDEX_OPS - (GROUP_ENDS_OPS if impl == "loop" else 0)
    received = int(rows.sum())
    row = wl.model.hidden * wl.dtype_bytes
    ffn_elems = sum(int(r) * g.ffn for g, r in zip(groups, rows))
    by_runs = impl == "loop" and not loop_regroups
    regroup = regroups(ctx) and received > 0 and not by_runs
    runs = source_rows if by_runs else None
    layer0: list[Kernel] = []
    if regroup:
        layer0 += [Kernel("stream", f"expert-major index{suffix}", 0.0, "launch", launches=index_ops),
                   Kernel("stream", f"gather to expert order{suffix}", pass_ns(ctx, "gather", 2 * received * row), "permute")]
    layer0 += [gemm_kernel(ctx, f"GEMM0{suffix}", groups, rows, 0, block_m, block_n, shared_sms, expert_gemm, runs),
               Kernel("stream", f"SwiGLU{suffix}", pass_ns(ctx, "elementwise", 5 * ffn_elems * wl.dtype_bytes), "swiglu",
                      launches=2)]
    layer1 = [gemm_kernel(ctx, f"GEMM1{suffix}", groups, rows, 1, block_m, block_n, shared_sms, expert_gemm, runs)]
    if regroup:
        layer1.append(Kernel("stream", f"scatter to arrival order{suffix}", pass_ns(ctx, "scatter", 2 * received * row),
                             "unpermute"))
    return layer0, layer1


def combine_side(ctx: SimContext, rank: int) -> list[Kernel]:
    """Measured B0 after the combine: the returned rows scattered into (token, slot) order, then
    the weighted top-k sum (bf16 rows read, fp32 accumulated and written). Under TP the sum is of the TP
    group's tokens, written in the activations' dtype, and the reduce-scattered partials are cast to fp32
    (kernels/tp_baselines.py; around_combine says which come before the combine)."""
    wl = ctx.workload
    pairs = permuted_pairs(ctx, rank)
    hidden = wl.model.hidden
    row = hidden * wl.dtype_bytes
    written = wl.tokens * hidden * OUT_BYTES if wl.tp == 1 else wl.tp * wl.tokens * row
    kernels = [Kernel("stream", "scatter to token order", pass_ns(ctx, "scatter", 2 * pairs * row), "unpermute"),
               Kernel("stream", "weighted top-k sum", pass_ns(ctx, "fp32_reduce", pairs * row + written), "reduce",
                      launches=1 + REDUCE_OPS)]
    if wl.tp > 1:
        kernels.append(Kernel("stream", "cast to fp32", pass_ns(ctx, "elementwise", wl.tokens * (row + hidden * OUT_BYTES)),
                              "reduce"))
    return kernels


def around_combine(ctx: SimContext, kernels: list[Kernel]) -> tuple[list[Kernel], list[Kernel]]:
    """combine_side's kernels as (before the combine, after it). With one EP rank under TP nothing comes back
    by all-to-all: the scatter and the weighted sum run before the reduce-scatter, the cast after
    (kernels/tp_baselines.py). Otherwise all come after."""
    if ctx.workload.ep == 1 and ctx.workload.tp > 1:
        return kernels[:-1], kernels[-1:]
    return [], kernels


def host_sync_ns(ctx: SimContext) -> float:
    """B0's (and B1's) routing plan up to its one host sync: measured over the (token, slot) pairs it sorts
    where the profile has the table (the rows of the TP group: TP baselines all-gather them first), else the
    one figure host_sync_us."""
    wl, hw = ctx.workload, ctx.hardware
    measured = None if hw.measured is None else hw.measured.host_sync_us(wl.tokens * wl.tp * wl.model.top_k)
    return (hw.host_sync_us if measured is None else measured) * 1e3


def host_launch_ns(ctx: SimContext) -> float | None:
    """The host's time per launch after B0's (and B1's) one sync: calibrate's b0_host chain spread
    over B0's launches. None without that table: the host is taken to keep ahead of the GPU."""
    tables = ctx.hardware.measured
    if tables is None or tables.b0_chain_us is None:
        return None
    return tables.b0_chain_us * 1e3 / B0_LAUNCHES_AFTER_SYNC


def host_lead_ns(ctx: SimContext, syncs: bool) -> float:
    """How far ahead of the GPU the host starts B0 or B1 where it has no host sync (host_syncs False): where calibrate
    timed B0 with no sync both ways, what the call timed queued saved (MeasuredTables.unsynced_lead_us): the host
    launched that much while the GPUs still ran the spin before the call (bench --align queued; in a model's forward,
    the layers before it). Its pace stays host_launch_ns. Without the figure, or after a sync, no lead: on 2x H200
    that priced the TP B0 of Qwen2-MoE 10-57% over measured (runs 117, 121 and 122). The call's figure spread over its
    own 21 launches as the pace (65 us a launch on run 122) priced B1's extra chunks' kernels, cheap to launch beside
    the collectives, too high (TP `chunked` 12.8-24.8% against 7.7-17.0% on run 122's profile,
    results/measurements/tp2_h200/run123/README.md)."""
    tables = ctx.hardware.measured
    lead_us = None if syncs or tables is None else tables.unsynced_lead_us
    return 0.0 if lead_us is None else lead_us * 1e3


class HostClock:
    """The host after B0's (or B1's) one sync. It launches `ops` ((key, launches[, extra ns]), in program
    order) one after another, `per_launch_ns` each plus the op's extra host time, and never waits for the
    GPU (no sync follows), so when each op is launched depends on the program order only. `per_launch_ns` None: the host keeps
    ahead of the GPU and nothing waits. `lead_ns`: how far ahead of the GPU the host starts a call with no sync
    (host_lead_ns). Waits add up under overheads["host_wait"]."""

    def __init__(self, ops: list[tuple[object, int] | tuple[object, int, float]], per_launch_ns: float | None,
                 overheads: dict[str, float], lead_ns: float = 0.0) -> None:
        self.ready: dict[object, float] = {}  # ns from the sync's end until each op is launched
        if per_launch_ns is not None:
            t = -lead_ns
            for key, launches, *extra_ns in ops:
                t += launches * per_launch_ns + sum(extra_ns)
                self.ready[key] = t
        self.synced = 0.0  # when the sync ended: set by the schedule
        self.overheads = overheads

    def wait(self, key: object, earliest: float) -> float:
        """How long a stream waits past `earliest` for the host to have launched `key`."""
        if key not in self.ready:
            return 0.0
        wait = max(0.0, self.synced + self.ready[key] - earliest)
        self.overheads["host_wait"] = self.overheads.get("host_wait", 0.0) + wait
        return wait
