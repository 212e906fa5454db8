"""Measured hardware profiles ("comet-dse-profile/1", written by `comet-dse calibrate`): the reader.

A measured profile is a preset (`base`) with measured scalar `figures` applied, plus tables of
what the kernels really cost on those GPUs: grouped GEMM time over rows per expert, memory-bound
passes, NCCL all-to-all over size, communication blocks -> bandwidth, GEMM slowdown under copies.
The format is specified in the calibration issue's contract; every violation is a UserError
naming the field as a dotted path (`hardware.tables.alltoall[0].bytes_per_rank`).

The lookups here are what the simulator prices kernels with (sim/measured_costs.py):

- `expert_gemm_us`: one expert's share of a grouped GEMM call, by (impl, K, N, swiglu, rows, SMs);
- `grouped_mm_call_us`: one torch._grouped_mm call over groups of uneven rows (its waves of cluster tiles);
- `memory_pass_ns`: a memory-bound pass of a kind over some bytes;
- `alltoall_us`: an NCCL all-to-all by the bytes the busiest rank sends;
- `comm_GBps`: what n communication blocks move (pull or push), through the layer's tile walk if timed;
- `gemm_slowdown`: GEMM time with n blocks copying beside it / alone (layer1's beside pushes where measured);
- `copy_slowdown`: n blocks' copy time (pulls; pushes where measured) beside a GEMM on the other SMs / alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from comet_dse.errors import UserError

if TYPE_CHECKING:
    from comet_dse.hardware import HardwareProfile

FORMAT = "comet-dse-profile/1"
TOP_KEYS = ("format", "name", "base", "gpus", "provenance", "figures", "sources", "tables")
IMPLS = ("grouped_mm", "loop", "fused")  # torch._grouped_mm; one torch.mm per expert (B0's "loop"); the fused kernels
PASS_KINDS = ("gather", "scatter", "elementwise", "fp32_reduce")
PASS_KINDS_OPTIONAL = ("combine",)  # the fused layer's one-pass weighted top-k sum (calibrate since 2026-11-26)
TABLES_REQUIRED = ("grouped_gemm", "alltoall", "memory_pass_GBps")
TABLES_OPTIONAL = ("comm_blocks", "layer_comm_blocks", "gemm_contention", "gemm1_contention", "copy_contention",
                   "push_contention", "b0_host", "host_sync", "layer_copy_contention", "power_state")
GEMM_KEYS = ("impl", "K", "N", "swiglu", "experts", "sms", "block_m", "block_n", "rows_per_expert", "us")
DIRECTIONS = ("pull", "push")
F = "hardware"  # every field path starts here, as the flat profiles' errors do
# torch._grouped_mm on sm90 is a CUTLASS grouped GEMM (torch's aten/src/ATen/native/cuda/GroupMM.cu) with 2x1
# clusters: each group's row tiles run in pairs, and the persistent grid runs SMs / 2 pairs at a time. So a
# group one row past a pair costs a whole pair: on one H200, rows of a uniform routing (multinomial) cost
# 1.1-2.1x equal rows of the same total at 128-2048 rows per expert (results/measurements/ep2_h200/run86/)
GROUPED_MM_CLUSTER = 2


def grouped_mm_tile(mean_rows: float, n: int) -> tuple[int, int]:
    """torch._grouped_mm's tile on sm90: 64x128 where the mean rows per group or N is <= 128, else 128x256."""
    return (64, 128) if mean_rows <= 128 or n <= 128 else (128, 256)


def grouped_mm_waves(rows: list[float], n: int, sms: int) -> int:
    """The waves of cluster tiles torch._grouped_mm runs for groups of `rows` rows, N output columns, on `sms` SMs."""
    block_m, block_n = grouped_mm_tile(sum(rows) / len(rows), n)
    pairs = sum(-(-math.ceil(r / block_m) // GROUPED_MM_CLUSTER) for r in rows) * -(-n // block_n)
    return -(-pairs // max(sms // GROUPED_MM_CLUSTER, 1))


# ---- curves --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """y over strictly increasing x (both > 0 where a log is taken)."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def loglog(self, at: float) -> float:
        """Log-log interpolation; beyond either end, the end segment's slope carries on."""
        lx, ly = np.log(self.x), np.log(self.y)
        t = math.log(at)
        i = int(np.clip(np.searchsorted(lx, t) - 1, 0, len(lx) - 2))  # the segment at t, or the end one
        slope = (ly[i + 1] - ly[i]) / (lx[i + 1] - lx[i])
        return float(math.exp(ly[i] + slope * (t - lx[i])))

    def linear(self, at: float, through_origin: bool = False) -> float:
        """Linear interpolation, flat beyond the ends; `through_origin`: proportional below the first point."""
        if through_origin and at < self.x[0]:
            return self.y[0] * at / self.x[0]
        return float(np.interp(at, self.x, self.y))


@dataclass(frozen=True)
class GemmEntry:
    impl: str
    k: int
    n: int  # output columns; with swiglu the weight has 2n
    swiglu: bool
    experts: int
    sms: int
    block_m: int | None
    block_n: int | None
    us: Curve  # over rows per expert: the whole grouped call

    def flops_per_expert(self, rows: float) -> float:
        return 2.0 * rows * self.k * self.n * (2 if self.swiglu else 1)


def _weights_us(entry: GemmEntry, weight_GBps: float, dtype_bytes: int) -> float:
    """Streaming the entry's experts' weights once at `weight_GBps`."""
    return entry.experts * entry.k * entry.n * (2 if entry.swiglu else 1) * dtype_bytes / weight_GBps / 1e3


def _fixed_us(peers: list[GemmEntry], weight_GBps: float, dtype_bytes: int) -> float:
    """A launch's own cost (launch, ramp-up, tail), the same at every SM count: the least any of the
    shape's calls at its fewest rows took beyond streaming the weights once. Fewer SMs stream them
    slower, but that is work of the tiles (each reads its weight slice), not of the launch."""
    return min(max(0.0, e.us.y[0] - _weights_us(e, weight_GBps, dtype_bytes)) for e in peers)


def _per_wave(entry: GemmEntry, tile: tuple[int, int]) -> Curve:
    """A grouped_mm entry's time per wave of `tile` over rows per expert, from the rows it measured at that tile
    (where none ran at it, from all of them, scaled by the tiles' areas); one point is held flat."""
    cols = entry.n * (2 if entry.swiglu else 1)
    tiles = [grouped_mm_tile(r, cols) for r in entry.us.x]
    at_tile = [i for i, t in enumerate(tiles) if t == tile] or range(len(tiles))
    x = tuple(entry.us.x[i] for i in at_tile)
    y = tuple(entry.us.y[i] / grouped_mm_waves([entry.us.x[i]] * entry.experts, cols, entry.sms)
              * tile[0] * tile[1] / (tiles[i][0] * tiles[i][1]) for i in at_tile)
    return Curve(x, y) if len(x) > 1 else Curve((x[0], 2 * x[0]), (y[0], y[0]))


def _per_tile(entry: GemmEntry, fixed: float) -> Curve:
    """A fused entry's time per tile over rows per expert, its launch's `fixed` cost taken off
    (see MeasuredTables.fused_tile_us)."""
    tiles_n = -(-entry.n // entry.block_n)
    per_tile = [(us - fixed) / -(-(entry.experts * -(-int(r) // entry.block_m) * tiles_n) // entry.sms)
                for r, us in zip(entry.us.x, entry.us.y)]
    return Curve(entry.us.x, tuple(per_tile))


# ---- the tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShareTable:
    """One layer_copy_contention table: its GEMM shape (None: every shape) and "pull" / "push" shares over blocks."""

    hidden: int | None
    ffn: int | None
    shares: dict[str, Curve]

    def distance(self, hidden: int, ffn: int) -> float:
        if self.hidden is None or self.ffn is None:
            return 0.0
        return abs(math.log(hidden / self.hidden)) + abs(math.log(ffn / self.ffn))


@dataclass(frozen=True, eq=False)
class MeasuredTables:
    """The tables of a measured profile. Equal (and hashed) by a digest of their JSON, which is
    also what a tuning study's identity sees (HardwareProfile.figures)."""

    gpus: int
    grouped_gemm: tuple[GemmEntry, ...]
    memory_pass_GBps: dict[str, float]
    alltoall: dict[int, Curve]  # world size -> us over bytes per rank
    comm: dict[str, Curve]  # "pull" / "push" -> GB/s over blocks; empty: the scalar figures' curve
    layer_comm: dict[str, Curve]  # the same through the fused layer's own tile walk (COMM_ONLY); empty: not measured
    copy_engine_GBps: float | None
    contention: Curve | None  # GEMM slowdown over copy blocks
    gemm1_contention: Curve | None  # layer1's GEMM beside the layer's pushes; None: `contention` stands in
    copy_contention: Curve | None  # the copies' slowdown beside a GEMM, over copy blocks
    push_contention: Curve | None  # the same for layer1's pushes; None: the pulls' figure stands in
    b0_host_chain_us: float | None  # B0's time past its plan at a few tokens: the host's launches after the sync
    host_sync: Curve | None  # B0's routing plan (µs) over the (token, slot) pairs it sorts per rank; None: one figure
    raw: dict = field(repr=False)  # the "tables" object as read (and "gpus"), for the digest and to_dict
    # the same two timed as bench --align queued times B0 (its launches before the sync enqueued behind a device
    # spin); None: not measured, the host-started ones stand in (`timed_from_host` drops these)
    b0_host_chain_queued_us: float | None = None
    host_sync_queued: Curve | None = None
    # B0 with no host sync (EP=1 x TP=GPUs) at a few tokens: the host's launches of the whole call from its start, and
    # the same timed queued (`timed_from_host` drops it); None: not measured (calibrate since 2026-11-28)
    b0_unsynced_us: float | None = None
    b0_unsynced_queued_us: float | None = None
    # per GEMM shape, the share of the GEMM's span the layer's own copies lose beside it in the same kernel, over copy
    # blocks (calibrate since 2026-11-28); empty: not measured, the whole-window copy/push_contention stand in
    layer_copy_contention: tuple[ShareTable, ...] = ()
    # per row width (the model's H), layer_comm's curves (calibrate since 2026-11-28, one per model); empty: the one
    # layer_comm stands for every width
    layer_comm_by_hidden: tuple[tuple[int, dict[str, Curve]], ...] = ()
    # per row width, what a communication block spends on each item of its walk beside moving its rows, pull and
    # push (µs), and the rows of an item of the curve's workload (calibrate's layer_comm_blocks "item_us" and
    # "item_rows"); empty: not measured, the curve's rate carries it at that workload's item size
    layer_comm_items: tuple[tuple[int, dict[str, float], int], ...] = ()
    # the fused kernels' time over a stream of calls started as bench starts a call (after a host barrier and a device
    # spin), over the same calls back to back at the power cap (the sustained tables), by the stream's work in µs
    # at the cap (calibrate's power_state table, since 2026-11-28); None: not measured, every call at the cap
    power_after_gap: Curve | None = None
    # fused_tile_us by its arguments: a simulation asks for the same tiles rank after rank, and each
    # answer fits a line through every SM count measured (the tables never change once read)
    _tiles: dict = field(default_factory=dict, repr=False, init=False)
    _waves: dict = field(default_factory=dict, repr=False, init=False)  # grouped_mm's time per wave, by entry and tile

    @property
    def digest(self) -> str:
        text = json.dumps({"gpus": self.gpus, "tables": self.raw}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MeasuredTables) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def to_dict(self) -> dict:
        return {"gpus": self.gpus, "digest": self.digest, "tables": self.raw}

    # ---- lookups -------------------------------------------------------------------------

    def expert_gemm_us(self, impl: str, k: int, n: int, swiglu: bool, rows: float, sms: int,
                       tile: tuple[int, int] | None = None) -> float:
        """One expert's share of a grouped GEMM call: `rows` rows of (K -> N) on `sms` SMs, in µs.

        The measured call took us(rows) for `experts` experts of `rows` rows each: an expert's
        share is us / experts (B0's loop of torch.mm prices uneven experts expert by expert and sums them;
        a torch._grouped_mm call over uneven experts is grouped_mm_call_us).
        Rows per expert interpolate log-log. The nearest measured SM count is scaled by SMs (a
        grouped GEMM's tiles spread over every SM). A (K, N) not measured takes the nearest
        measured shape's TFLOP/s at the same rows per expert: that is how a held-out model shape
        is priced. `impl` "fused" falls back to "grouped_mm" entries when none was measured;
        `tile` prefers the fused entries of that tile shape.
        """
        if rows <= 0:
            return 0.0
        entry = self._nearest_gemm(impl, k, n, swiglu, sms, tile)
        share = entry.us.loglog(rows) / entry.experts * entry.sms / sms
        wanted = 2.0 * rows * k * n * (2 if swiglu else 1)
        return share * wanted / entry.flops_per_expert(rows)

    def grouped_mm_call_us(self, k: int, n: int, swiglu: bool, rows: list[float], sms: int) -> float:
        """One torch._grouped_mm call over groups of `rows` rows each (K -> N; with swiglu a 2N-column weight), in µs.

        The call runs grouped_mm_waves waves of cluster tiles; each wave is priced at the table's time per wave at
        the call's mean rows per group (the measured call's time over its own waves at equal rows, log-log between
        the rows measured at the same tile, scaled by K). So uneven groups cost the waves their pairs add, which
        pricing each group's share at its own rows missed (run 86). The waves are counted at the SMs of the
        measured call and the time scaled to `sms` as expert_gemm_us does (the library sizes its grid to every
        SM; fewer are what a collective beside it leaves). A (K, N) not measured takes the nearest measured
        shape's, as expert_gemm_us."""
        total = float(sum(rows))
        if total <= 0:
            return 0.0
        cols = n * (2 if swiglu else 1)
        entry = self._nearest_gemm("grouped_mm", k, n, swiglu, sms, None)
        tile = grouped_mm_tile(total / len(rows), cols)
        if (entry, tile) not in self._waves:
            self._waves[entry, tile] = _per_wave(entry, tile)
        waves = grouped_mm_waves(list(rows), cols, entry.sms)  # at the SMs measured, then scaled by SMs as expert_gemm_us
        return self._waves[entry, tile].loglog(total / len(rows)) * (k / entry.k) * waves * entry.sms / sms

    def fused_tile_us(self, k: int, n: int, swiglu: bool, rows: float, sms: int, tile: tuple[int, int],
                      weight_GBps: float, dtype_bytes: int = 2) -> float:
        """One output tile (tile = (block_m, block_n), all of K) of the fused kernels' GEMM for an
        expert of `rows` rows, in µs of one SM.

        A measured call ran experts x ceil(rows / block_m) x ceil(N / block_n) tiles on its SMs in
        ceil(tiles / SMs) waves, so a tile took the call's time, less the call's own fixed cost, over
        its waves (not over tiles / SMs: a last partial wave costs a whole one, and the simulator's
        persistent schedule charges that again). The fixed cost (launch, ramp-up, tail of a kernel
        timed alone) is what the call at its fewest rows took beyond streaming its experts' weights
        once at `weight_GBps` (HBM), there the weights being all the work: the least of it over the
        SM counts measured (at fewer SMs the weights stream slower, a cost of the tiles; taking it
        as the launch's made a tile at 84 SMs 35% cheaper than measured at 128 rows per expert).
        Per-tile times interpolate log-log in rows per expert; another tile shape or K scales by its
        area and K. Where 3+ SM counts were measured, the time at `sms` is read from a robust line
        through all of them."""
        if rows <= 0:
            return 0.0
        key = (k, n, swiglu, rows, sms, tile, weight_GBps, dtype_bytes)
        if key not in self._tiles:
            self._tiles[key] = self._fused_tile_us(*key)
        return self._tiles[key]

    def fused_fixed_us(self, k: int, n: int, swiglu: bool, sms: int, tile: tuple[int, int], weight_GBps: float,
                       dtype_bytes: int = 2) -> float:
        """What a launch of the fused kernels' GEMM costs beyond its tiles (launch, ramp-up, tail: see
        fused_tile_us), in µs, for the shape calibrate timed nearest; 0 without a fused entry (a
        grouped_mm call's time then goes wholly to its tiles)."""
        entry = self._nearest_gemm("fused", k, n, swiglu, sms, tile)
        return 0.0 if entry.block_m is None else _fixed_us(self._peers(entry), weight_GBps, dtype_bytes)

    def _peers(self, entry: GemmEntry) -> list[GemmEntry]:
        """The entries of `entry`'s implementation, shape and tile at every SM count measured."""
        return [e for e in self.grouped_gemm if (e.impl, e.k, e.n, e.swiglu, e.block_m, e.block_n)
                == (entry.impl, entry.k, entry.n, entry.swiglu, entry.block_m, entry.block_n)]

    def _fused_tile_us(self, k: int, n: int, swiglu: bool, rows: float, sms: int, tile: tuple[int, int],
                       weight_GBps: float, dtype_bytes: int) -> float:
        entry = self._nearest_gemm("fused", k, n, swiglu, sms, tile)
        if entry.block_m is None:  # no fused entry at all: a grouped_mm call's time per (expert, column tile)
            return self.expert_gemm_us("fused", k, n, swiglu, rows, sms, tile) * sms / -(-n // tile[1])
        scale = (k / entry.k) * (tile[0] * tile[1]) / (entry.block_m * entry.block_n)
        # Every SM count measured for that shape and tile, not just the nearest: a tile's time
        # changes smoothly with the SMs at work (clocks and HBM shared by fewer SMs), while one
        # timed call can be 15% off (h200-x2-run9.json: Mixtral GEMM0 at 124 SMs, 4096 rows). A robust
        # line through them (Theil-Sen) keeps such a point from setting the time of one SM count.
        peers = self._peers(entry)
        fixed = _fixed_us(peers, weight_GBps, dtype_bytes)
        at_rows = [_per_tile(e, fixed).loglog(rows) for e in peers]
        if len(peers) < 3:
            return at_rows[peers.index(entry)] * scale
        from scipy.stats import theilslopes  # here: calibrate reads profiles without the simulator's dependencies

        counts = [e.sms for e in peers]
        slope, intercept, _, _ = theilslopes(at_rows, counts, method="joint")
        at = min(max(sms, min(counts)), max(counts))  # no extrapolation past the measured SM counts
        return max(intercept + slope * at, min(at_rows)) * scale

    def has_impl(self, impl: str) -> bool:
        return any(e.impl == impl for e in self.grouped_gemm)

    def fused_layer0_tiles(self) -> tuple[tuple[int, int], ...]:
        """The (block_m, block_n) tiles at which calibrate ran the fused kernels' layer0 (GEMM0 +
        SwiGLU): the tiles those kernels are known to run at, sorted."""
        return tuple(sorted({(e.block_m, e.block_n) for e in self.grouped_gemm
                             if e.impl == "fused" and e.swiglu and e.block_m is not None and e.block_n is not None}))

    def _nearest_gemm(self, impl: str, k: int, n: int, swiglu: bool, sms: int, tile: tuple[int, int] | None) -> GemmEntry:
        entries = [e for e in self.grouped_gemm if e.impl == impl] or [e for e in self.grouped_gemm if e.impl == "grouped_mm"]
        if tile is not None:
            entries = [e for e in entries if (e.block_m, e.block_n) == tile] or entries
        cols = n * (2 if swiglu else 1)  # the weight's columns: what sets the shape's efficiency
        def key(e: GemmEntry) -> tuple:
            shape = abs(math.log(e.k / k)) + abs(math.log(e.n * (2 if e.swiglu else 1) / cols)) + (e.swiglu != swiglu)
            return (round(shape, 9), abs(e.sms - sms), -e.sms)
        return min(entries, key=key)

    def host_sync_us(self, pairs: float) -> float | None:
        """B0's routing plan at `pairs` (token, slot) pairs per rank: linear between the measured points, flat
        beyond them. (On 2x H200 it did not grow with tokens up to 8192 x top-4, runs 78-79: each point is then
        one more sample of the host's time, read where a call sorts as many pairs.) None where the profile has
        one figure (host_sync_us) only."""
        curve = self.host_sync_queued if self.host_sync_queued is not None else self.host_sync
        return None if curve is None else curve.linear(pairs)

    @property
    def b0_chain_us(self) -> float | None:
        """B0's time past its plan at a few tokens (the host's launches after the sync), timed queued where the
        profile has it."""
        return self.b0_host_chain_queued_us if self.b0_host_chain_queued_us is not None else self.b0_host_chain_us

    @property
    def unsynced_lead_us(self) -> float | None:
        """How far ahead of the GPU the host starts a B0 call with no host sync where the call is timed queued (behind
        a device spin): b0_host.unsynced_us - queued_unsynced_us, what the queued timing saved (0 where started from a
        host barrier, or where noise made it the slower). None: not measured."""
        if self.b0_unsynced_us is None:
            return None
        queued = self.b0_unsynced_queued_us
        return 0.0 if queued is None else max(0.0, self.b0_unsynced_us - queued)

    def after_gap(self, work_us: float) -> float:
        """What a call that starts after bench's gap takes, over its time at the power cap, where `work_us` is that
        time at the cap: read off power_after_gap (linear between its chains, flat beyond them); 1.0 where the
        profile has no such table."""
        return 1.0 if self.power_after_gap is None else self.power_after_gap.linear(work_us)

    def timed_from_host(self) -> MeasuredTables:
        """These tables without the queued timings of B0's plan and host chain: a call started from a host barrier
        (bench --align host) is priced by the host-started ones."""
        return replace(self, b0_host_chain_queued_us=None, host_sync_queued=None, b0_unsynced_queued_us=None)

    def memory_pass_ns(self, kind: str, bytes_moved: float) -> float:
        """A memory-bound pass of `kind` moving `bytes_moved` (read + written), in ns."""
        return bytes_moved / self.memory_pass_GBps[kind]  # GB/s = bytes/ns

    def check_world(self, world: int) -> None:
        """A world size the all-to-all table measured (one GPU exchanges nothing)."""
        if world > 1 and world not in self.alltoall:
            measured = (f"measured for {', '.join(map(str, sorted(self.alltoall)))} GPUs, not {world}" if self.alltoall else
                        f"not measured (calibrated on one GPU: it prices one-GPU workloads only), needed for {world}")
            raise UserError(f"{F}.tables.alltoall", f"{measured}: calibrate on {world} GPUs or use a preset")

    def alltoall_us(self, world: int, bytes_per_rank: float) -> float:
        """An NCCL all-to-all over `world` GPUs where the busiest rank sends `bytes_per_rank`."""
        self.check_world(world)
        if world == 1:
            return 0.0
        return self.alltoall[world].loglog(max(bytes_per_rank, 1.0))

    def comm_GBps(self, direction: str, blocks: int, hidden: int | None = None) -> float | None:
        """What `blocks` communication blocks move, pulling or pushing (None: not measured): through
        the fused layer's own tile walk where calibrate timed it (layer_comm_blocks; per model, the curve of the
        nearest row width `hidden`: 8 KiB rows move 8-11% faster a block than 4 KiB ones below the link's limit,
        results/measurements/ep2_h200/run114/), else the bare copy code's rate (comm_blocks)."""
        curve = self._comm_curve(direction, hidden)
        return None if curve is None else curve.linear(blocks, through_origin=True)

    def comm_peak_GBps(self, direction: str, hidden: int | None = None) -> float | None:
        """The most comm_GBps reaches at any block count: the link's limit as the blocks' curve measured it."""
        curve = self._comm_curve(direction, hidden)
        return None if curve is None else max(curve.y)

    def _comm_curve(self, direction: str, hidden: int | None) -> Curve | None:
        layer_comm = self.layer_comm
        if self.layer_comm_by_hidden and hidden:
            layer_comm = _nearest_width(self.layer_comm_by_hidden, hidden)[1]
        return layer_comm.get(direction) or self.comm.get(direction)

    def comm_item(self, direction: str, hidden: int) -> tuple[float, int] | None:
        """(µs a communication block spends per item of its walk beside moving the item's rows, the rows of an item
        of the layer-copy curve's workload) pulling or pushing, from the table of the nearest row width `hidden`
        that has it; None where calibrate did not time it (calibrate before 2026-11-28)."""
        if not self.layer_comm_items:
            return None
        _, item_us, rows = _nearest_width(self.layer_comm_items, hidden)
        return item_us[direction], rows

    def gemm_slowdown(self, copy_blocks: int, layer: int = 0) -> float:
        """GEMM time with `copy_blocks` blocks copying over NVLink beside it / alone (1 if not measured):
        layer0's GEMM beside pulls, layer1's beside the layer's pushes where calibrate timed it
        (gemm1_contention), else the layer0 figure. At least 1: copies on other SMs cannot speed a
        GEMM up, so a measured ratio below 1 is noise."""
        return _slowdown(self.gemm1_contention if layer == 1 and self.gemm1_contention is not None else self.contention,
                         copy_blocks)

    def copy_share_lost(self, copy_blocks: int, direction: str, hidden: int, ffn: int) -> float | None:
        """The share of the GEMM's span the layer's copies (pulls in layer0, pushes in layer1) on `copy_blocks` blocks
        lose beside it in one kernel, in [0, 1], from the table of the nearest GEMM shape (hidden, ffn) measured (log
        distance); None where calibrate did not time it (the whole-window figure stands in)."""
        if not self.layer_copy_contention or copy_blocks <= 0:
            return None
        table = min(self.layer_copy_contention, key=lambda t: t.distance(hidden, ffn))
        return min(1.0, max(0.0, table.shares[direction].linear(copy_blocks)))

    def copy_slowdown(self, copy_blocks: int, direction: str = "pull") -> float:
        """Copy time of `copy_blocks` communication blocks pulling (layer0) or pushing (layer1) beside
        a GEMM on the other SMs / alone (1 if not measured; at least 1, as for the GEMM). Pushes read
        push_contention where calibrate measured it, else the pulls' copy_contention."""
        return _slowdown(self.push_contention if direction == "push" and self.push_contention is not None
                         else self.copy_contention, copy_blocks)


def _nearest_width(tables: tuple[tuple, ...], hidden: int) -> tuple:
    """Of tables led by the row width H they were timed at, the one nearest `hidden` (log distance)."""
    return min(tables, key=lambda table: abs(math.log(hidden / table[0])))


def _slowdown(curve: Curve | None, copy_blocks: int) -> float:
    """A contention table's slowdown at `copy_blocks` (none measured, or no blocks: 1), never below 1."""
    if curve is None or copy_blocks <= 0:
        return 1.0
    return max(1.0, curve.linear(copy_blocks))


# ---- validation ----------------------------------------------------------------------------


def _object(value, path: str) -> dict:
    if not isinstance(value, dict):
        raise UserError(path, f"must be a JSON object, got {type(value).__name__}")
    return value


def _keys(obj: dict, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    missing = [k for k in required if k not in obj]
    if missing:
        raise UserError(f"{path}.{missing[0]}", "missing (required)")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise UserError(f"{path}.{unknown[0]}", f"unknown key; allowed: {', '.join((*required, *optional))}")


def _both_or_neither(obj: dict, path: str, pair: tuple[str, str]) -> tuple[float, float] | None:
    """Two figures of `obj` that come together: both as numbers > 0, or None where neither is there."""
    if not any(k in obj for k in pair):
        return None
    _keys(obj, path, pair, tuple(obj))  # the other keys are the caller's to check
    return _number(obj[pair[0]], f"{path}.{pair[0]}"), _number(obj[pair[1]], f"{path}.{pair[1]}")


def _number(value, path: str, low: float = 0.0, strict: bool = True) -> float:
    """A finite number > low (>= low with strict False); bools are not numbers."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        raise UserError(path, f"must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


def _integer(value, path: str, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UserError(path, f"must be an integer >= {low}, got {value!r}")
    return value


def _curve(obj: dict, path: str, xs: str, ys: str, x_low: float = 0.0, x_strict: bool = True) -> Curve:
    """Two lists of one length, >= 2 points, x strictly increasing, y > 0."""
    x, y = obj[xs], obj[ys]
    for name, values in ((xs, x), (ys, y)):
        if not isinstance(values, list) or len(values) < 2:
            raise UserError(f"{path}.{name}", f"must be a list of at least 2 numbers, got {values!r}")
    if len(x) != len(y):
        raise UserError(f"{path}.{ys}", f"must have as many points as {xs} ({len(x)}), got {len(y)}")
    xv = [_number(v, f"{path}.{xs}[{i}]", x_low, x_strict) for i, v in enumerate(x)]
    yv = [_number(v, f"{path}.{ys}[{i}]") for i, v in enumerate(y)]
    bad = next((i for i in range(1, len(xv)) if xv[i] <= xv[i - 1]), None)
    if bad is not None:
        raise UserError(f"{path}.{xs}", f"must be strictly increasing, got {xv[bad - 1]:g} then {xv[bad]:g} at [{bad}]")
    return Curve(tuple(xv), tuple(yv))


def _directions(tables: dict, path: str, name: str, extra: tuple[str, ...] = ()) -> dict[str, Curve]:
    """An optional table of "pull" and "push" curves of GB/s over blocks (comm_blocks, layer_comm_blocks)."""
    if name not in tables:
        return {}
    at = f"{path}.{name}"
    return _direction_curves(_object(tables[name], at), at, extra)


def _direction_curves(blocks: dict, at: str, extra: tuple[str, ...] = ()) -> dict[str, Curve]:
    """The "pull" and "push" curves of GB/s over blocks of one table object at `at`."""
    _keys(blocks, at, DIRECTIONS, extra)
    curves = {}
    for direction in DIRECTIONS:
        curve_obj = _object(blocks[direction], f"{at}.{direction}")
        _keys(curve_obj, f"{at}.{direction}", ("blocks", "GBps"))
        curves[direction] = _curve(curve_obj, f"{at}.{direction}", "blocks", "GBps", 1.0, x_strict=False)
    return curves


def _slowdowns(tables: dict, path: str, name: str, x_low: float) -> Curve | None:
    """An optional {"copy_blocks", "slowdown"} table (gemm_contention, gemm1_contention, copy_contention, push_contention)."""
    if name not in tables:
        return None
    at = f"{path}.{name}"
    obj = _object(tables[name], at)
    _keys(obj, at, ("copy_blocks", "slowdown"))
    return _curve(obj, at, "copy_blocks", "slowdown", x_low, x_strict=False)


def _gemm_entry(obj, path: str) -> GemmEntry:
    obj = _object(obj, path)
    _keys(obj, path, GEMM_KEYS)
    if obj["impl"] not in IMPLS:
        raise UserError(f"{path}.impl", f"must be one of {', '.join(IMPLS)}, got {obj['impl']!r}")
    if not isinstance(obj["swiglu"], bool):
        raise UserError(f"{path}.swiglu", f"must be true or false, got {obj['swiglu']!r}")
    for b in ("block_m", "block_n"):  # the library's calls have no tile of ours; the fused kernels' entries name theirs
        if obj["impl"] != "fused" and obj[b] is not None:
            raise UserError(f"{path}.{b}", f"must be null for {obj['impl']}, got {obj[b]!r}")
    blocks = [None if obj["impl"] != "fused" else _integer(obj[b], f"{path}.{b}") for b in ("block_m", "block_n")]
    for i, rows in enumerate(obj["rows_per_expert"] if isinstance(obj["rows_per_expert"], list) else []):
        _number(rows, f"{path}.rows_per_expert[{i}]", 1.0, strict=False)
    return GemmEntry(obj["impl"], _integer(obj["K"], f"{path}.K"), _integer(obj["N"], f"{path}.N"), obj["swiglu"],
                     _integer(obj["experts"], f"{path}.experts"), _integer(obj["sms"], f"{path}.sms"), *blocks,
                     us=_curve(obj, path, "rows_per_expert", "us"))


def parse_tables(tables, gpus: int, partial: bool = False) -> MeasuredTables:
    """The tables of a profile on `gpus` GPUs; `partial`: a one-GPU calibration's, without an all-to-all (calibrate
    checks what it writes with this; the simulator refuses such a profile at MeasuredTables.check_world)."""
    path = f"{F}.tables"
    tables = _object(tables, path)
    required = tuple(t for t in TABLES_REQUIRED if not (partial and t == "alltoall"))
    _keys(tables, path, required, (*TABLES_OPTIONAL, *(t for t in TABLES_REQUIRED if t not in required)))

    gemm_list = tables["grouped_gemm"]
    if not isinstance(gemm_list, list) or not gemm_list:
        raise UserError(f"{path}.grouped_gemm", "must be a non-empty list of entries")
    gemm = tuple(_gemm_entry(e, f"{path}.grouped_gemm[{i}]") for i, e in enumerate(gemm_list))
    seen: dict[tuple, int] = {}
    for i, e in enumerate(gemm):  # a lookup takes the nearest entry: two of one kind would be a silent pick
        key = (e.impl, e.k, e.n, e.swiglu, e.sms, e.block_m, e.block_n)
        if key in seen:
            raise UserError(f"{path}.grouped_gemm[{i}]", f"measures what entry {seen[key]} measured "
                                                         "(impl, K, N, swiglu, sms, tile): one entry each")
        seen[key] = i
    if not any(e.impl == "grouped_mm" for e in gemm):
        raise UserError(f"{path}.grouped_gemm", "needs at least one \"grouped_mm\" entry (the baselines' GEMM)")

    passes = _object(tables["memory_pass_GBps"], f"{path}.memory_pass_GBps")
    _keys(passes, f"{path}.memory_pass_GBps", PASS_KINDS, PASS_KINDS_OPTIONAL)
    memory = {k: _number(v, f"{path}.memory_pass_GBps.{k}") for k, v in passes.items()}

    alltoall: dict[int, Curve] = {}
    if "alltoall" in tables:  # absent only from a partial profile
        a2a_list = tables["alltoall"]
        if not isinstance(a2a_list, list) or not a2a_list:
            raise UserError(f"{path}.alltoall", "must be a non-empty list of entries, one per world size")
        for i, entry in enumerate(a2a_list):
            at = f"{path}.alltoall[{i}]"
            entry = _object(entry, at)
            _keys(entry, at, ("world", "bytes_per_rank", "us"))
            world = _integer(entry["world"], f"{at}.world", 2)
            if world > gpus:
                raise UserError(f"{at}.world", f"{world} GPUs, but the profile measured {gpus} (\"gpus\")")
            if world in alltoall:
                raise UserError(f"{at}.world", f"{world} GPUs measured twice")
            alltoall[world] = _curve(entry, at, "bytes_per_rank", "us")

    comm, engine = _directions(tables, path, "comm_blocks", ("copy_engine_GBps",)), None
    if "copy_engine_GBps" in tables.get("comm_blocks", {}):
        engine = _number(tables["comm_blocks"]["copy_engine_GBps"], f"{path}.comm_blocks.copy_engine_GBps")
    layer_comm, layer_comm_by_hidden, layer_comm_items = _layer_comm(tables, path)

    contention, gemm1 = (_slowdowns(tables, path, name, 0.0) for name in ("gemm_contention", "gemm1_contention"))
    for name, curve in (("gemm_contention", contention), ("gemm1_contention", gemm1)):
        if curve is not None and curve.x[0] != 0:
            raise UserError(f"{path}.{name}.copy_blocks", f"must start at 0 (the GEMM alone), got {curve.x[0]:g}")
        if curve is not None and curve.y[0] != 1.0:
            raise UserError(f"{path}.{name}.slowdown", f"must start at 1.0 (the GEMM alone), got {curve.y[0]:g}")
    copies = _slowdowns(tables, path, "copy_contention", 1.0)
    pushes = _slowdowns(tables, path, "push_contention", 1.0)
    in_layer = _layer_copy_contention(tables, path)
    chain = chain_queued = unsynced = unsynced_queued = None
    if "b0_host" in tables:
        at = f"{path}.b0_host"
        b0_host = _object(tables["b0_host"], at)
        _keys(b0_host, at, ("tokens", "plan_us", "b0_us"), ("queued_plan_us", "queued_b0_us", "unsynced_us",
                                                             "queued_unsynced_us"))
        _integer(b0_host["tokens"], f"{at}.tokens")
        plan_us, b0_us = (_number(b0_host[k], f"{at}.{k}") for k in ("plan_us", "b0_us"))
        chain = max(0.0, b0_us - plan_us)  # medians of two timings: the difference may dip below 0 in noise
        queued = _both_or_neither(b0_host, at, ("queued_plan_us", "queued_b0_us"))
        if queued is not None:
            chain_queued = max(0.0, queued[1] - queued[0])
        unsynced, unsynced_queued = _both_or_neither(b0_host, at, ("unsynced_us", "queued_unsynced_us")) or (None, None)
    host_sync, host_sync_queued = _host_sync(tables, path)
    power = _power_state(tables, path)
    return MeasuredTables(gpus, gemm, memory, alltoall, comm, layer_comm, engine, contention, gemm1, copies, pushes, chain,
                          host_sync, raw=json.loads(json.dumps(tables)), b0_host_chain_queued_us=chain_queued,
                          host_sync_queued=host_sync_queued, b0_unsynced_us=unsynced,
                          b0_unsynced_queued_us=unsynced_queued, layer_copy_contention=in_layer,
                          layer_comm_by_hidden=layer_comm_by_hidden, layer_comm_items=layer_comm_items,
                          power_after_gap=power)


def _layer_comm(tables: dict, path: str) -> tuple[dict[str, Curve], tuple[tuple[int, dict[str, Curve]], ...],
                                                 tuple[tuple[int, dict[str, float], int], ...]]:
    """The optional layer_comm_blocks: one {"pull", "push"} object (every row width), or a list of them per model,
    each with its "model" and "hidden" (calibrate since 2026-11-28), and optionally its per-item cost "item_us"
    {"pull", "push"} with the curve workload's "item_rows" (calibrate since 2026-11-28, later). (the first table,
    every table by its hidden, the per-item costs by hidden)."""
    if "layer_comm_blocks" not in tables:
        return {}, (), ()
    found = tables["layer_comm_blocks"]
    if isinstance(found, dict):
        return _directions(tables, path, "layer_comm_blocks"), (), ()
    at = f"{path}.layer_comm_blocks"
    if not isinstance(found, list) or not found:
        raise UserError(at, f"must be a JSON object or a non-empty list of them, got {found!r}")
    by_hidden, items = [], []
    for i, entry in enumerate(found):
        here = f"{at}[{i}]"
        obj = _object(entry, here)
        extra = ("model", "item_us", "item_rows")
        _keys(obj, here, (*DIRECTIONS, "hidden"), extra)  # a list's tables are told apart by row width
        hidden = _integer(obj["hidden"], f"{here}.hidden")
        by_hidden.append((hidden, _direction_curves(obj, here, ("model", "hidden", *extra[1:]))))
        if ("item_us" in obj) != ("item_rows" in obj):
            raise UserError(f"{here}.{'item_rows' if 'item_us' in obj else 'item_us'}",
                            "missing: item_us and item_rows come together")
        if "item_us" in obj:
            cost = _object(obj["item_us"], f"{here}.item_us")
            _keys(cost, f"{here}.item_us", DIRECTIONS)
            items.append((hidden, {d: _number(cost[d], f"{here}.item_us.{d}", strict=False) for d in DIRECTIONS},
                          _integer(obj["item_rows"], f"{here}.item_rows")))
    return by_hidden[0][1], tuple(by_hidden), tuple(items)


def _layer_copy_contention(tables: dict, path: str) -> tuple[ShareTable, ...]:
    """The optional layer_copy_contention: one {"copy_blocks", "pull", "push"} object (calibrate on 2026-11-28, for
    every shape), or a list of them per model, each with its "model", "hidden" and "ffn"."""
    if "layer_copy_contention" not in tables:
        return ()
    at = f"{path}.layer_copy_contention"
    found = tables["layer_copy_contention"]
    if isinstance(found, dict):
        return (_share_table(found, at, ()),)
    if not isinstance(found, list) or not found:
        raise UserError(at, f"must be a JSON object or a non-empty list of them, got {found!r}")
    return tuple(_share_table(_object(entry, f"{at}[{i}]"), f"{at}[{i}]", ("model", "hidden", "ffn"))
                 for i, entry in enumerate(found))


def _share_table(obj: dict, at: str, shape_keys: tuple[str, ...]) -> ShareTable:
    _keys(obj, at, ("copy_blocks", *DIRECTIONS, *shape_keys))
    blocks = _curve(obj, at, "copy_blocks", "copy_blocks", 1.0, x_strict=False).x  # the block counts' checks
    curves = {}
    for direction in DIRECTIONS:  # shares, not times: 0 (nothing lost) is a measurement
        shares = obj[direction]
        if not isinstance(shares, list) or len(shares) != len(blocks):
            raise UserError(f"{at}.{direction}", f"must have as many points as copy_blocks ({len(blocks)}), got {shares!r}")
        for i, v in enumerate(shares):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise UserError(f"{at}.{direction}[{i}]", f"must be in [0, 1] (a share of the GEMM's span), got {v!r}")
        curves[direction] = Curve(blocks, tuple(float(v) for v in shares))
    if not shape_keys:
        return ShareTable(None, None, curves)
    if not isinstance(obj["model"], str):
        raise UserError(f"{at}.model", f"must be a model name, got {obj['model']!r}")
    return ShareTable(_integer(obj["hidden"], f"{at}.hidden"), _integer(obj["ffn"], f"{at}.ffn"), curves)


def _host_sync(tables: dict, path: str) -> tuple[Curve | None, Curve | None]:
    """The optional {"top_k", "tokens", "us"[, "queued_us"]} table of B0's plan, as curves over (token, slot) pairs
    per rank: timed from a host barrier, and (where measured) as bench --align queued times it."""
    if "host_sync" not in tables:
        return None, None
    at = f"{path}.host_sync"
    obj = _object(tables["host_sync"], at)
    _keys(obj, at, ("top_k", "tokens", "us"), ("queued_us",))
    top_k = _integer(obj["top_k"], f"{at}.top_k")
    curves = [_curve(obj, at, "tokens", ys, 1.0, x_strict=False) for ys in ("us", "queued_us") if ys in obj]
    pairs = [Curve(tuple(t * top_k for t in curve.x), curve.y) for curve in curves]
    return pairs[0], (pairs[1] if len(pairs) > 1 else None)


def _power_state(tables: dict, path: str) -> Curve | None:
    """The optional {"model", "rows_per_expert", "call_us", "calls", "over_sustained"} table: chains of `calls` calls
    of the fused kernels (call_us each at the power cap) timed as bench times a call, each chain's time over its
    time at the cap, as a curve over the chain's work at the cap (calls x call_us)."""
    if "power_state" not in tables:
        return None
    at = f"{path}.power_state"
    obj = _object(tables["power_state"], at)
    _keys(obj, at, ("model", "rows_per_expert", "call_us", "calls", "over_sustained"))
    _integer(obj["rows_per_expert"], f"{at}.rows_per_expert")
    call_us = _number(obj["call_us"], f"{at}.call_us")
    curve = _curve(obj, at, "calls", "over_sustained", 1.0, x_strict=False)
    # a stream's mean speed since the gap can only fall as it runs on toward the cap: where a longer chain read faster
    # (run 134: 1 call 0.928, 2 calls 0.872, the single call carrying its graph launch and tail alone), the two are
    # pooled, so a longer forward is never priced as faster for it than a shorter one
    return Curve(tuple(k * call_us for k in curve.x), non_decreasing(curve.y))


def non_decreasing(values: tuple[float, ...]) -> tuple[float, ...]:
    """The closest non-decreasing sequence in least squares (pool adjacent violators: a run that falls is replaced
    by its mean, until none falls)."""
    blocks: list[list[float]] = []  # [sum, count] of each pooled run
    for v in values:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return tuple(total / count for total, count in blocks for _ in range(int(count)))


def load_measured(path: Path, data: dict) -> HardwareProfile:
    """A "comet-dse-profile/1" object: its base preset, the measured figures over it, the tables."""
    from comet_dse.hardware import HARDWARE_PRESETS, HardwareProfile, check_json_figures

    if data.get("format") != FORMAT:
        raise UserError(f"{F}.format", f"must be {FORMAT!r}, got {data.get('format')!r}")
    _keys(data, F, ("format", "base", "gpus", "figures", "tables"), ("name", "provenance", "sources"))
    base = data["base"]
    if not isinstance(base, str) or base not in HARDWARE_PRESETS:
        raise UserError(f"{F}.base", f"unknown preset {base!r}; choose one of {', '.join(HARDWARE_PRESETS)}")
    name = data.get("name", path.stem)
    if not isinstance(name, str):
        raise UserError(f"{F}.name", f"must be a string, got {name!r}")
    gpus = _integer(data["gpus"], f"{F}.gpus")
    _object(data.get("provenance", {}), f"{F}.provenance")
    figures = _object(data["figures"], f"{F}.figures")
    scalar = {f.name for f in fields(HardwareProfile)} - {"name", "sources", "measured"}
    unknown = sorted(set(figures) - scalar)
    if unknown:
        raise UserError(f"{F}.figures.{unknown[0]}", f"not a figure of a profile; allowed: {', '.join(sorted(scalar))}")
    check_json_figures(path, figures, prefix=f"{F}.figures")
    sources = data.get("sources", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise UserError(f"{F}.sources", f"must be an object of figure -> source text, got {sources!r}")
    tables = parse_tables(data["tables"], gpus, partial=gpus == 1)  # one GPU: no all-to-all, for one-GPU workloads
    preset = HARDWARE_PRESETS[base]
    merged = {**preset.sources, **{k: f"{path}" for k in figures}, **sources, "measured": f"{path}: tables"}
    return replace(preset, name=name, **figures, sources=merged, measured=tables)
