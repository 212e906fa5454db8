"""The one interface every schedule implements, and what a run hands back.

A schedule is a frozen dataclass of its knobs. `validate` turns impossible knobs into a
UserError before anything runs; `run` starts its processes in the shared SimContext and,
once the environment has run dry, returns per-rank outcomes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
from comet_dse.sim.layout import Group, group_tile_ns
from comet_dse.sim.runtime import SimContext

from comet_dse.choices import SIM_EXPERT_GEMMS
from comet_dse.errors import UserError
from comet_dse.hardware import HardwareProfile
from comet_dse.workload import Workload

TILE_SIZES = (64, 128, 256)
# Tiles offered for a model, in order of preference: those the fused kernel was measured
# with, then 64-wide ones for an H that 128 does not divide (GPT-OSS: 2880 = 45 x 64).
TILES = ("128x128", "128x256", "64x128", "256x128")
NARROW_TILES = ("128x64", "64x64", "256x64")
DEFAULT_TILE = "128x128"


@dataclass
class RankOutcome:
    end_ns: float  # the layer's end on this rank
    layer0_end_ns: float
    compute_alone_ns: float  # the GEMM kernels alone, all rows present, same blocks
    bubble_ns: float  # mean idle time of one compute block within [0, end]
    overheads_ns: dict[str, float] = field(default_factory=dict)  # permute, host sync, launches, reduce
    # the fused layer's two kernels, launch to end (comet: compute and sends), for comparing with bench's
    # per-layer timings; empty for the schedules of stock kernels
    kernels_ns: dict[str, float] = field(default_factory=dict)


@dataclass
class Outcome:
    ranks: list[RankOutcome]


def parse_tile(text: str, field_name: str = "--tile") -> tuple[int, int]:
    try:
        m, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(field_name, f"expected BMxBN such as 128x128, got {text!r}") from None
    if m not in TILE_SIZES or n not in TILE_SIZES:
        raise UserError(field_name, f"tile sides must be in {TILE_SIZES}, got {text!r}")
    return m, n


def column_tiles(hidden: int, block_n: int) -> int:
    """Tiles across H, layer1's output columns; a ragged last tile counts as one."""
    return -(-hidden // block_n)


def model_tiles(hidden: int) -> tuple[str, ...]:
    """The tiles whose width cuts H into whole column tiles: the fused kernel's layer1 needs
    that (kernels/fused_layer.py), and a ragged tile costs a full one. If no 64-multiple
    width divides H, the measured tiles, ragged. GEMM0's width 2F/TP may be ragged: the
    kernel masks it, so F rules out no tile."""
    for candidates in (TILES, NARROW_TILES):
        fitting = tuple(t for t in candidates if hidden % parse_tile(t)[1] == 0)
        if fitting:
            return fitting
    return TILES


def default_tile(hidden: int) -> str:
    """128x128 where it fits H, else the first tile that does."""
    tiles = model_tiles(hidden)
    return DEFAULT_TILE if DEFAULT_TILE in tiles else tiles[0]


@dataclass(frozen=True)
class Schedule(ABC):
    name: ClassVar[str]
    block_m: int = 128
    block_n: int = 128

    def validate(self, workload: Workload, hardware: HardwareProfile) -> None:
        if self.block_m not in TILE_SIZES or self.block_n not in TILE_SIZES:
            raise UserError("--tile", f"tile sides must be in {TILE_SIZES}, got {self.block_m}x{self.block_n}")
        if hardware.measured is not None:  # the collectives are priced for the world sizes measured only
            hardware.measured.check_world(workload.world)

    def params(self) -> dict:
        return asdict(self)

    @abstractmethod
    def run(self, ctx: SimContext) -> Outcome: ...


# ---- helpers shared by the collective-based schedules -------------------------------------


def check_expert_gemm(expert_gemm: str) -> None:
    if expert_gemm not in SIM_EXPERT_GEMMS:
        raise UserError("--expert-gemm", f"must be one of {', '.join(SIM_EXPERT_GEMMS)}, got {expert_gemm!r}")


def grouped_gemm_runs(ctx: SimContext, groups: list[Group], rows: np.ndarray, block_m: int, block_n: int,
                      layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Tile times of one grouped GEMM in expert-major order (all rows present), as runs (tile time, tiles)
    per group: np.repeat of them gives the tiles."""
    tile_ns, n_tiles = group_tile_ns(ctx.hardware, ctx.workload, groups, rows, block_m, block_n, layer)
    m_tiles = -(-rows // block_m)
    return tile_ns, m_tiles * n_tiles


def pair_bytes(ctx: SimContext, per_group: np.ndarray | None = None) -> np.ndarray:
    """(W, W) bytes each rank sends each rank in the dispatch; the combine is its transpose. Every TP
    rank of an EP group gets what the source sends the group: `per_group` (W, EP) rows, by default
    ctx.group_sends (EP only: (token, expert) rows; with TP: tokens, each once per group)."""
    wl = ctx.workload
    per_group = ctx.group_sends if per_group is None else per_group
    return np.repeat(per_group, wl.tp, axis=1).astype(float) * wl.model.hidden * wl.dtype_bytes


def sent_rows(ctx: SimContext, rank: int) -> int:
    """Rows this rank packs for the dispatch; the combine brings back TP times as many partial rows."""
    return int(ctx.group_sends[rank].sum())


def collective_names(ctx: SimContext) -> tuple[str, str]:
    """The dispatch and combine as NCCL would run them: all-to-alls of rows (EP only), an all-gather and a
    reduce-scatter of tokens (TP only), both at once where EP and TP mix (priced as one exchange)."""
    wl = ctx.workload
    if wl.tp == 1:
        return "dispatch all-to-all", "combine all-to-all"
    if wl.ep == 1:
        return "dispatch all-gather", "combine reduce-scatter"
    return "dispatch all-to-all + all-gather", "combine reduce-scatter + all-to-all"


def link_floor_ns(ctx: SimContext, sends: np.ndarray) -> float:
    """One all-to-all's bytes `sends` (W, W) alone on the links at their full rate: the busiest NVLink
    and NIC ports (sends or receives of one GPU; the ports work at once), each at its capacity plus
    its path latency. Local rows move no link."""
    hw = ctx.hardware
    nvlink, nic = hw.busiest_ports(sends)
    return max(nvlink / hw.link_GBps + hw.link_latency_us * 1e3 if nvlink > 0 else 0.0,
               nic / hw.nic_GBps + hw.nic_latency_us * 1e3 if nic > 0 else 0.0)


def comm_alone_ns(ctx: SimContext) -> float:
    """The layer's communication alone, one definition for every schedule: the dispatch and the
    combine (the same bytes, `pair_bytes`) each at the links' full rate (`link_floor_ns`)."""
    sends = pair_bytes(ctx)
    return link_floor_ns(ctx, sends) + link_floor_ns(ctx, sends.T)


def permute_ns(ctx: SimContext, rank: int) -> float:
    """Gather this rank's rows to send (`sent_rows`) into expert order: read + write."""
    wl = ctx.workload
    rows = sent_rows(ctx, rank)
    return float(np.ceil(ctx.hardware.hbm_pass_ns(2 * rows * wl.model.hidden * wl.dtype_bytes)))


def reduce_ns(ctx: SimContext, rank: int) -> float:
    """Weighted top-k (and TP partial) sum of the returned rows into the token order."""
    wl = ctx.workload
    rows_back = sent_rows(ctx, rank) * wl.tp
    moved = (rows_back + wl.tokens) * wl.model.hidden * wl.dtype_bytes
    return float(np.ceil(ctx.hardware.hbm_pass_ns(moved)))


def bubble(span_ns: float, busy_ns: float, blocks: int) -> float:
    """Mean idle time of a block over `span_ns`, given the blocks' summed tile times."""
    return max(0.0, span_ns - busy_ns / blocks)
