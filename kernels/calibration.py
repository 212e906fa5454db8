"""The work behind `comet-dse calibrate` (comet_dse/commands/calibrate.py checks the inputs first):
micro-benchmarks of what the simulator's cost model needs, written as a measured hardware profile
in the format "comet-dse-profile/1" (checked here by `check_profile` before it is written).

Every rank runs the same sequence of collectives and measures its own GPU; each figure is the
slowest rank's. Times are medians of CUDA-event-timed runs after a warm-up (wall clock on the
CPU, kernels in Triton's interpreter there); a single launch is timed behind a ~500 µs device spin,
so the host's launch cost stays out of the kernel's time. Imports only torch, triton, numpy and
the package.

- grouped GEMM: `torch._grouped_mm` at all SMs (inputs and weights rotated over 3 sets), and the
  fused kernels' own GEMM code: layer0 (GEMM0 + SwiGLU) and layer1 (GEMM1) of a FusedMoE on a
  single-rank process group in MODE=COMPUTE_ONLY, so every row tile is the rank's own and nothing
  moves; each launch is timed alone, at `programs - n` compute programs for each n of --comm-blocks.
- memory passes: the torch ops B0 (kernels/baselines.py) runs, in GB/s of bytes read + written.
- all-to-all: NCCL all_to_all_single with equal splits, fitted as latency + bytes / bandwidth.
- copies: `copy_blocks_kernel` below runs the fused kernels' `_copy_block` on n programs, pulling
  (as layer0) or pushing (as layer1) over peer memory addressed as in fused_moe.py; the copy
  engine is one peer `copy_` on a side stream.
- contention: layer0's GEMM on the compute programs alone vs beside n copy programs on a side stream,
  and the other way round: the layer's n communication programs pulling (layer0) alone vs beside
  that GEMM and pushing (layer1) alone vs beside layer1's GEMM, and that GEMM beside the pushes
  (gemm_contention, copy_contention, push_contention, gemm1_contention).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import itertools
import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import fields, replace

import numpy as np
import torch
import torch.distributed as dist
import triton
import triton.language as tl
from comet_dse.choices import default_layer1_width
from comet_dse.errors import UserError
from comet_dse.hardware import HARDWARE_PRESETS, JSON_FIGURE_MAX, JSON_RATE_MIN, NUMBER_TYPES, HardwareProfile
from comet_dse.kernels.baselines import _grouped_mm as b0_expert_gemm
from comet_dse.kernels.baselines import _plan as b0_plan
from comet_dse.kernels.baselines import _weighted_sum, moe_sequential
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE, PeerBuffer, combine_rows
from comet_dse.kernels.fused_moe import COMM_ONLY, COMPUTE_ONLY, FULL, NO_LAYERS, _copy_block
from comet_dse.kernels.grouped_gemm import sm_count
from comet_dse.kernels.reference import MoEWeights, round_robin_ids
from comet_dse.kernels.tp_baselines import ParallelGroups, moe_sequential_tp, parallel_groups
from comet_dse.kernels.timing import (
    SUSTAIN_S,
    capture_graph,
    environment,
    join_ranks,
    line_up,
    median_us,
    spin_device,
    sustained_us,
)
from comet_dse.measured import parse_tables
from comet_dse.models import ModelConfig

FORMAT = "comet-dse-profile/1"
ROTATE = 3  # input sets rotated through the grouped_mm runs
LAUNCHES = 200  # back-to-back launches per kernel-launch timing
PASS_ROWS = 32768  # rows of the memory-pass tensors (128 MiB at H=2048 bf16: far beyond L2)
HOST_SYNC_TOKENS = 4096  # the host_sync_us figure's point (profiles without the table: the one price)
HOST_SYNC_GRID = (8, 64, 512, 4096, 16384)  # tokens per rank of the host_sync table (capped at PASS_ROWS pairs)
B0_HOST_TOKENS = 8  # per rank: B0's kernels do next to nothing, its time past the plan is the host's
# power_state: the fused forward's two launches on the largest model's local experts at this many rows each (~1 ms on
# an H200 at Mixtral's shapes), in chains of 1, 2, 4, ... calls up to this much work at the power cap
POWER_ROWS = 512
POWER_CHAIN_US = 40_000
HOST_ROUNDS = 5  # rounds of the host-bound timings, spread over the run (Calibration.host_round)
FORWARD_FIXED_TOKENS = 8  # per rank: the fused forward's small kernels move next to nothing
FROM_HOST, QUEUED = "from a host barrier (--align host)", "enqueued behind a device spin (--align queued)"
# ~3 ms at 1.98 GHz: the stand-in for the copy-engine forward's layers outlasts the host's launches after layer0
# (the whole copy-engine forward without layers took 615-1022 µs on run 105's host)
STAND_IN_CYCLES = 6_000_000
# communication blocks of the layer_copy_contention table, whatever --comm-blocks: the share the copies lose falls
# from ~1 at 1 block to 0.25-0.4 at 8 on 2x H200 (run 111), so the sweeps' 4 (and 2, 24) are timed, not read between
LAYER_CONTENTION_BLOCKS = (1, 2, 4, 8, 16, 24, 32, 48)
CONTENTION_ROWS = 1024  # rows per expert of the contention GEMM (the nearest --rows value)
# communication blocks at which a block's per-item cost is timed: few enough that the link is far from its limit
ITEM_BLOCKS = (1, 2, 4)


class _LayersStandIn(FusedMoE):
    """The fused forward with one device spin (STAND_IN_CYCLES) where its two layer kernels would run, each spin's
    GPU time kept (CUDA events in `spins`): what the forward costs beside layers that outlast the host's launches
    after them. Only calibrate's host rounds use it (Calibration._copy_engine_forward)."""

    def __init__(self, weights: MoEWeights, top_k: int, max_tokens: int, cfg: FusedConfig, dtype: torch.dtype) -> None:
        super().__init__(weights, top_k, max_tokens, config=cfg, dtype=dtype)
        self.spins: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def _launch_layer0(self, plan, mode: int) -> None:  # noqa: ARG002 - the layer's signature
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(STAND_IN_CYCLES)
        end.record()
        self.spins.append((start, end))

    def _launch_layer1(self, plan, mode: int) -> None:  # noqa: ARG002 - the spin stood in for both layers
        return


# ----------------------------------------------------------------------------------------
# the copy kernel: the fused layers' own copy code on n programs
# ----------------------------------------------------------------------------------------


@triton.jit
def copy_blocks_kernel(buf_ptr, deltas_ptr, peer, rows, cols, split_cols, repeats,
                       PUSH: tl.constexpr, TILE_ROWS: tl.constexpr, COPY_ROWS: tl.constexpr, COPY_COLS: tl.constexpr):
    """Rows [0, rows) of one rank's buffer to rows [rows, 2 rows) of another's: PUSH local -> peer
    (layer1), else peer -> local (layer0). Work items are (row tile, column split), split-major as
    layer1 pushes them (one split of whole rows: layer0's pull), dealt to the programs round-robin
    as the fused kernels deal tiles; `repeats` passes (contention keeps copies running)."""
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    n_tiles = tl.cdiv(rows, TILE_ROWS)
    n_items = n_tiles * (cols // split_cols)
    delta = tl.multiple_of(tl.load(deltas_ptr + peer), 16)
    if PUSH:
        src_ptr = buf_ptr
        dst_ptr = buf_ptr + delta
    else:
        src_ptr = buf_ptr + delta
        dst_ptr = buf_ptr
    for _ in range(repeats):
        for i in range(pid, n_items, n_programs):
            split = i // n_tiles
            row0 = (i % n_tiles) * TILE_ROWS
            _copy_block(src_ptr, row0, dst_ptr, rows + row0, tl.minimum(rows - row0, TILE_ROWS), split * split_cols,
                        split_cols, cols, COPY_ROWS, COPY_COLS)


def push_once(layer: FusedMoE, plan) -> None:
    """layer1 in COMM_ONLY mode from zeroed counters (its pushes wait for each counter to reach the
    tile's column count, so a second launch on the first one's counts would wait forever): the
    memset (one small kernel) is timed with it."""
    layer.counters.zero_()
    layer._launch_layer1(plan, COMM_ONLY)


def item_cost(full: tuple[float, float], small: tuple[float, float]) -> float:
    """A communication block's time per item beside moving its bytes, from (size, µs) per item of two ways of moving
    the same data in items of different sizes: the line through them at size 0, never below 0 (below is noise)."""
    (size_full, us_full), (size_small, us_small) = full, small
    per_unit = (us_full - us_small) / (size_full - size_small)
    return max(0.0, us_small - size_small * per_unit)


def program_spans(stamps: torch.Tensor, comm: range) -> tuple[float, float]:
    """(the communication programs' span, the compute programs' span) in µs of one stamped launch (`FusedMoE.stamps`:
    (start, end) ns per program), each from the launch's first start to that role's last end; `comm`: the
    communication programs' ids."""
    t = stamps.view(-1, 2).to(torch.float64).cpu()
    is_comm = torch.zeros(len(t), dtype=torch.bool)
    is_comm[comm.start:comm.stop] = True
    first = t[:, 0].min()
    return float(t[is_comm, 1].max() - first) / 1e3, float(t[~is_comm, 1].max() - first) / 1e3


def share_lost_to_gemm(alone_us: float, beside_us: float, compute_us: float) -> float:
    """The share of the GEMM's span that copies lose beside it in one kernel (0: none, 1: they stand still while it
    runs): copies taking `alone_us` with no GEMM and `beside_us` in a launch whose GEMM took `compute_us`. Copies
    that outlasted the GEMM lost `beside_us - alone_us` of its span; copies that ended first ran slowed throughout,
    at 1 - alone / beside of their pace (the same share of every µs the GEMM ran beside them). In [0, 1]: below is
    noise, above is copies slower even after the GEMM (run 111 at 1 block: the SM clock after a whole-GPU GEMM?)."""
    if beside_us <= compute_us:
        return min(1.0, max(0.0, 1.0 - alone_us / beside_us))
    return min(1.0, max(0.0, (beside_us - alone_us) / compute_us))


def copy_shape(width: int, copy_elems: int) -> tuple[int, int]:
    """(COPY_ROWS, COPY_COLS) of a copy `width` elements wide, as fused_layer.py sizes its launches."""
    copy_cols = min(triton.next_power_of_2(width), 2048, copy_elems)
    return max(1, copy_elems // copy_cols), copy_cols


# ----------------------------------------------------------------------------------------
# fits
# ----------------------------------------------------------------------------------------


def plan_for_rows(layer: FusedMoE, x: torch.Tensor, counts: list[int]):
    """Run a one-rank, top-1 layer once (compute-only) with counts[e] rows on local expert e; its plan,
    for timing the layer's launches alone on those rows."""
    ids = torch.repeat_interleave(torch.arange(len(counts), device=x.device),
                                  torch.tensor(counts, device=x.device)).view(-1, 1)
    layer(x[:len(ids)], ids, torch.ones(len(ids), 1, device=x.device), mode=COMPUTE_ONLY)
    return layer.plan


def fit_alltoall(bytes_per_rank: list[int], us: list[float], world: int) -> tuple[float, float] | None:
    """(latency µs, bandwidth GB/s) of us = latency + bytes leaving each GPU / bandwidth, least
    squares on relative error (small and large messages count alike); None without a positive slope."""
    sent = np.asarray(bytes_per_rank, dtype=float) * (world - 1) / world  # the diagonal stays local
    t = np.asarray(us, dtype=float)
    design = np.stack([np.ones_like(sent), sent], axis=1) / t[:, None]
    (latency, slope), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    if slope <= 0:
        return None
    return float(latency), float(1.0 / (slope * 1e3))


def fit_comm_blocks(blocks: list[int], gbps: list[float], link_GBps: float, base: HardwareProfile) -> tuple[float, float, float]:
    """(comm_block_GBps, comm_saturation, worst relative error) of HardwareProfile.comm_blocks_GBps
    with link_GBps fixed, fitted to a measured blocks -> GB/s curve: least squares in log space over
    a grid, refined twice around the best point."""
    n = np.asarray(blocks, dtype=float)
    g = np.asarray(gbps, dtype=float)

    def error(c: float, p: float) -> float:
        model = replace(base, link_GBps=link_GBps, comm_block_GBps=c, comm_saturation=p)
        predicted = np.array([model.comm_blocks_GBps(int(b)) for b in n])
        return float(np.sum(np.log(predicted / g) ** 2))

    c_lo, c_hi = 0.25 * float(np.min(g / n)), max(float(link_GBps), float(np.max(g / n)) * 4)
    p_lo, p_hi = 0.5, 32.0
    best = (math.inf, c_lo, p_lo)
    for _ in range(3):
        for c in np.geomspace(c_lo, c_hi, 60):
            for p in np.geomspace(p_lo, p_hi, 30):
                best = min(best, (error(float(c), float(p)), float(c), float(p)))
        _, c, p = best
        c_lo, c_hi, p_lo, p_hi = c / 1.3, c * 1.3, max(0.1, p / 1.3), p * 1.3
    _, c, p = best
    model = replace(base, link_GBps=link_GBps, comm_block_GBps=c, comm_saturation=p)
    worst = max(abs(model.comm_blocks_GBps(int(b)) / v - 1) for b, v in zip(n, g))
    return c, p, float(worst)


# ----------------------------------------------------------------------------------------
# the format: "comet-dse-profile/1"
# ----------------------------------------------------------------------------------------


class ProfileError(ValueError):
    """A profile that breaks the format; the message starts with the field's dotted path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"hardware.{path}: {message}")


TOP_KEYS = {"format", "name", "base", "gpus", "provenance", "figures", "sources", "tables"}
PROVENANCE_KEYS = {"gpu", "gpus", "driver", "torch", "triton", "date", "command", "quick"}

# optional figures (graph_launch_us: float | None) alike
INT_FIGURES = {f.name for f in fields(HardwareProfile) if NUMBER_TYPES.get(f.type) is int}
SCALAR_FIGURES = {f.name for f in fields(HardwareProfile) if f.type in NUMBER_TYPES}  # not name, sources, tables


def figure_range(key: str) -> tuple[float, float]:
    """(exclusive low, high) of a figure as the profile loader takes it: rates (GB/s, TFLOP/s) from
    JSON_RATE_MIN, everything up to JSON_FIGURE_MAX (comet_dse/hardware.py)."""
    return (JSON_RATE_MIN if key.endswith(("GBps", "tflops")) else 0.0), JSON_FIGURE_MAX


def _positive(value, path: str, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ProfileError(path, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ProfileError(path, f"must be finite and > 0, got {value!r}")


def _check_figures(data: dict) -> None:
    figures, sources = data["figures"], data["sources"]
    if not isinstance(figures, dict) or not isinstance(sources, dict):
        raise ProfileError("figures", "figures and sources must be objects")
    for key, value in figures.items():
        if key not in SCALAR_FIGURES:
            raise ProfileError(f"figures.{key}", f"is no HardwareProfile figure; allowed: {sorted(SCALAR_FIGURES)}")
        _positive(value, f"figures.{key}", integer=key in INT_FIGURES)
        low, high = figure_range(key)
        if not low <= value <= high:
            raise ProfileError(f"figures.{key}", f"must be in [{low:g}, {high:g}], got {value!r}")
    try:  # what the loader will make of them: the base preset with these figures
        replace(HARDWARE_PRESETS[data["base"]], **figures)
    except UserError as exc:
        raise ProfileError(f"figures.{exc.field.removeprefix('hardware.')}", exc.message) from None
    if set(sources) != set(figures):
        raise ProfileError("sources", f"needs one entry per figure: missing {sorted(set(figures) - set(sources))}, "
                                      f"extra {sorted(set(sources) - set(figures))}")
    for key, text in sources.items():
        if not isinstance(text, str) or not text.strip():
            raise ProfileError(f"sources.{key}", f"must say what measured it, got {text!r}")


def _check_tables(tables: dict, gpus: int) -> None:
    """The tables as the simulator's reader takes them (comet_dse/measured.py parse_tables: one checker for the
    writer and the reader; one GPU measures no all-to-all, so such a profile is partial, its notes say so), and
    what calibrate writes beyond that: integer axes, the copy engine's rate beside the copy curves, one
    grouped_gemm entry per (impl, K, N, swiglu, sms)."""
    try:
        parse_tables(tables, gpus, partial=gpus == 1)
    except UserError as exc:
        raise ProfileError(exc.field.removeprefix("hardware."), exc.message) from None
    for path, axis in _axes(tables):
        bad = next((i for i, v in enumerate(axis) if not isinstance(v, int) or isinstance(v, bool)), None)
        if bad is not None:
            raise ProfileError(f"{path}[{bad}]", f"must be an integer, got {axis[bad]!r}")
    if "comm_blocks" in tables and "copy_engine_GBps" not in tables["comm_blocks"]:
        raise ProfileError("tables.comm_blocks.copy_engine_GBps", "missing (calibrate times the copy engine with the blocks)")
    seen: dict[tuple, int] = {}
    for i, e in enumerate(tables["grouped_gemm"]):
        key = (e["impl"], e["K"], e["N"], e["swiglu"], e["sms"])
        if key in seen:
            raise ProfileError(f"tables.grouped_gemm[{i}]", f"repeats (impl, K, N, swiglu, sms) = {key} of entry {seen[key]}")
        seen[key] = i


def _axes(tables: dict) -> list[tuple[str, list]]:
    """(path, values) of every table's x axis: rows, bytes, blocks and tokens, counted in whole units."""
    axes = [(f"tables.grouped_gemm[{i}].rows_per_expert", e["rows_per_expert"]) for i, e in enumerate(tables["grouped_gemm"])]
    axes += [(f"tables.alltoall[{i}].bytes_per_rank", e["bytes_per_rank"]) for i, e in enumerate(tables.get("alltoall", []))]
    axes += [(f"tables.comm_blocks.{way}.blocks", tables["comm_blocks"][way]["blocks"])
             for way in ("pull", "push") if "comm_blocks" in tables]
    layer = tables.get("layer_comm_blocks", [])
    for at, table in ([("", layer)] if isinstance(layer, dict) else [(f"[{i}]", t) for i, t in enumerate(layer)]):
        axes += [(f"tables.layer_comm_blocks{at}.{way}.blocks", table[way]["blocks"]) for way in ("pull", "push")]
    for name in ("gemm_contention", "gemm1_contention", "copy_contention", "push_contention"):
        axes += [(f"tables.{name}.copy_blocks", tables[name]["copy_blocks"])] if name in tables else []
    if "host_sync" in tables:
        axes.append(("tables.host_sync.tokens", tables["host_sync"]["tokens"]))
    if "power_state" in tables:
        axes.append(("tables.power_state.calls", tables["power_state"]["calls"]))
    return axes


def check_profile(data: dict) -> None:
    """Raise ProfileError naming the first field that breaks "comet-dse-profile/1"."""
    if not isinstance(data, dict):
        raise ProfileError("", "a profile is a JSON object")
    if data.get("format") != FORMAT:
        raise ProfileError("format", f"must be {FORMAT!r}, got {data.get('format')!r}")
    if set(data) != TOP_KEYS:
        raise ProfileError("", f"keys must be {sorted(TOP_KEYS)}: missing {sorted(TOP_KEYS - set(data))}, "
                               f"unknown {sorted(set(data) - TOP_KEYS)}")
    if not isinstance(data["name"], str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", data["name"]):
        raise ProfileError("name", f"must be a file stem, got {data['name']!r}")
    if data["base"] not in HARDWARE_PRESETS:
        raise ProfileError("base", f"must be one of {', '.join(HARDWARE_PRESETS)}, got {data['base']!r}")
    _positive(data["gpus"], "gpus", integer=True)
    prov = data["provenance"]
    if not isinstance(prov, dict) or PROVENANCE_KEYS - set(prov):
        raise ProfileError("provenance", f"must record {sorted(PROVENANCE_KEYS)}")
    for key in PROVENANCE_KEYS - {"gpus", "quick"}:
        if not isinstance(prov[key], str) or not prov[key]:
            raise ProfileError(f"provenance.{key}", f"must be a non-empty string, got {prov[key]!r}")
    if prov["gpus"] != data["gpus"] or not isinstance(prov["quick"], bool):
        raise ProfileError("provenance", "gpus must match the profile's and quick must be true or false")
    _check_figures(data)
    _check_tables(data["tables"], data["gpus"])
    if "alltoall" in data["tables"] and all(e["world"] != data["gpus"] for e in data["tables"]["alltoall"]):
        raise ProfileError("tables.alltoall", f"measured no entry for the profile's {data['gpus']} GPUs")


# ----------------------------------------------------------------------------------------
# the measurements
# ----------------------------------------------------------------------------------------


def merge_profile(base: dict, partial: dict, steps: list[str]) -> dict:
    """`base` with the tables, figures and sources `partial` measured (calibrate --only STEPS --update BASE) in place
    of its own, named as `partial`. Base notes about a replaced table or figure go; the run is recorded under
    provenance.updates (what ran, where, when, its notes), the base's own provenance staying as it was."""
    merged = copy.deepcopy(base)
    merged["name"] = partial["name"]
    replaced = set(partial["tables"]) | set(partial["figures"])
    for key in ("tables", "figures", "sources"):
        merged[key].update(partial[key])
    prov = merged["provenance"]
    prov["notes"] = [n for n in prov.get("notes", []) if n.split(":", 1)[0] not in replaced]
    run = partial["provenance"]
    prov.setdefault("updates", []).append({"steps": steps, "replaced": sorted(replaced),
                                           **{k: run[k] for k in ("gpu", "driver", "torch", "triton", "date", "command")},
                                           "notes": run.get("notes", [])})
    return merged


def _pairs(points: list[tuple[float, float]]) -> str:
    return " ".join(f"({size:.0f}, {us:.2f})" for size, us in points)


def _sig(value: float) -> float:
    """Four significant digits: readable, and never rounds a positive figure to 0."""
    return float(f"{value:.4g}")


def gpu_slug(gpu: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3': the default profile name's stem."""
    words = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-").split("-")
    return "-".join(w for w in words if w and w != "nvidia") or "gpu"


class Calibration:
    def __init__(self, settings) -> None:
        self.s = s = settings
        self.cuda, self.device = join_ranks()
        self.align_token = torch.zeros(1, device=self.device)  # the all-reduce of queued timings
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        # bf16 as the layers run on GPUs; fp32 on the CPU (the interpreter computes bf16 wrongly)
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.elem = torch.empty(0, dtype=self.dtype).element_size()
        self.sms = sm_count(self.device)
        self.programs = s.programs or self.sms
        if max(s.comm_blocks) >= self.programs:
            raise UserError("--comm-blocks",
                            f"must be < the {self.programs} programs of the fused grid, got {max(s.comm_blocks)}")
        self.copy_blocks = [b for b in s.copy_blocks if b <= self.sms]  # the defaults reach 132; fewer SMs drop some
        if len(self.copy_blocks) < 2:
            raise UserError("--copy-blocks", f"needs at least 2 counts <= the {self.sms} SMs, got {s.copy_blocks}")
        # the fused GEMMs run on a process group of this rank alone: every row tile is its own
        self.single = dist.new_subgroups(1)[0] if self.world > 1 else None
        self.notes: list[str] = []
        self.figures: dict[str, float] = {}
        self.sources: dict[str, str] = {}
        self.tables: dict = {}
        self.best_grouped: tuple[float, str] = (0.0, "")
        self.host_rounds: list[dict[str, list[float]]] = []  # host_round's figures, one entry per round
        self.b0_weights: MoEWeights | None = None  # host_round's layer, until host_tables
        # host_round's B0 without a host sync (EP=1 x TP=world: this rank's FFN shard of every expert), until host_tables
        self.b0_unsynced: tuple[MoEWeights, ParallelGroups] | None = None
        self.copy_engine_layers: tuple[FusedMoE, _LayersStandIn] | None = None  # host_round's, until host_tables
        self.started = time.perf_counter()

    def close(self) -> None:
        dist.barrier()
        dist.destroy_process_group()

    # ---- timing and reporting ----------------------------------------------------------------

    def _time(self, fn: Callable[[], object], before: Callable[[], object] | None = None, together: bool = False,
              spin: bool = True, queued: bool = False) -> float:
        """Median µs of fn on this rank. together: a barrier first (every rank starts at once);
        before: after the barrier (contention launches its copies there); spin: the device spins
        ~500 µs first, so the timed launch is enqueued before the GPU reaches it; queued: after the
        barrier, a spin and an all-reduce on the GPUs (bench --align queued: they start it together)."""
        def prepare() -> None:
            if together:
                dist.barrier()
            if before is not None:
                before()
            if queued:
                line_up(self.align_token, queued=True)
            elif spin:
                spin_device()
        return median_us(fn, runs=self.s.runs, warmup=self.s.warmup, before_each=prepare)

    def _slowest(self, values: list[float]) -> list[float]:
        """Each value's maximum over the ranks (every rank calls this with as many values)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def _say(self, text: str) -> None:
        if self.rank == 0:
            print(f"calibrate [{time.perf_counter() - self.started:6.1f} s] {text}", flush=True)

    def _figure(self, key: str, value: float, source: str) -> None:
        low, high = figure_range(key)
        # e.g. copies in Triton's interpreter: measured, but no figure a profile takes (the loader takes > 0 only)
        if not low <= value <= high or value <= 0:
            self.notes.append(f"{key}: measured {value:.4g}, outside the profile's range [{low:g}, {high:g}]: "
                              f"left to the base preset")
            return
        self.figures[key] = value if key in INT_FIGURES else _sig(value)
        self.sources[key] = f"comet-dse calibrate: {source}"

    def _random(self, *shape: int, seed: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(self.s.seed * 1_000_003 + seed * 101 + self.rank)
        return torch.randn(*shape, generator=g, device=self.device, dtype=dtype or self.dtype)

    def _free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    # ---- the whole run ---------------------------------------------------------------------

    def run_all(self) -> dict | None:
        if self.s.only:  # a few steps, their tables to go into an existing profile (merge_profile)
            for name in self.s.only:
                getattr(self, name)()
                self._free()
            return self._profile() if self.rank == 0 else None
        steps = [self.dense, self.launch, self.memory_passes]
        if self.world > 1:  # the host-bound rounds between the GPU steps, the last after the longest ones
            steps += [self.alltoall, self.host_round, self.forward_fixed, self.host_round, self.copies, self.host_round,
                      self.layer_copies, self.host_round]
        steps += [self.gemm, self.power_state, self.gemm_rate]
        if self.world > 1:
            steps += [self.contention, self.host_round, self.host_tables]
        assert steps.count(self.host_round) in (0, HOST_ROUNDS)
        for step in steps:
            step()
            self._free()  # each step's tensors: gone with its frame
        if self.world == 1:
            self.notes.append("one GPU: a partial profile without the alltoall, comm_blocks and gemm_contention tables "
                              "or the link, collective and host-sync figures: the simulator prices one-GPU workloads "
                              "on it; for more, calibrate on 2+ GPUs of one node (torchrun --nproc-per-node N)")
        return self._profile() if self.rank == 0 else None

    def _profile(self) -> dict:
        # the command as typed: under `python -m` (torchrun) the first word is the module's path
        launcher = "comet-dse" if sys.argv[0].endswith("cli.py") or sys.argv[0] == "-c" else sys.argv[0]
        command = " ".join([launcher, *sys.argv[1:]])
        env = environment(command)
        provenance = {"gpu": env["gpu"], "gpus": self.world, "driver": env["driver"] or "none (CPU)",
                      "torch": env["torch"], "triton": env["triton"], "date": env["date"], "command": env["command"],
                      "quick": self.s.quick, "notes": self.notes}
        name = self.s.name or f"{gpu_slug(env['gpu'])}-x{self.world}"
        return {"format": FORMAT, "name": name, "base": self.s.base, "gpus": self.world, "provenance": provenance,
                "figures": self.figures, "sources": self.sources, "tables": self.tables}

    # ---- one GPU: dense GEMM, HBM, launches, memory passes ----------------------------------

    def dense(self) -> None:
        n = 8192 if self.cuda else 256
        a, b = self._random(n, n, seed=1), self._random(n, n, seed=2)
        c = torch.empty(n, n, device=self.device, dtype=self.dtype)
        mm_us, = self._slowest([self._time(lambda: torch.mm(a, b, out=c))])
        self.mm_tflops, self.mm_n = 2 * n ** 3 / mm_us / 1e6, n
        elems = (512 << 20) // self.elem if self.cuda else (16 << 20) // self.elem
        src = torch.zeros(elems, device=self.device, dtype=self.dtype)
        dst = torch.empty_like(src)
        copy_us, = self._slowest([self._time(lambda: dst.copy_(src))])
        self.hbm = 2 * elems * self.elem / copy_us / 1e3
        self._figure("hbm_GBps", self.hbm, f"device-to-device copy_ of {elems * self.elem >> 20} MiB, read + write "
                                            f"counted, median of {self.s.runs}, slowest of {self.world} GPUs")
        if self.cuda:
            self._figure("sms", self.sms, "torch.cuda.get_device_properties().multi_processor_count")
        self._say(f"dense mm {n}^3: {self.mm_tflops:.0f} TFLOP/s; copy: {self.hbm:.0f} GB/s")

    def gemm_rate(self) -> None:
        """gemm_tflops: the best dense rate seen, a large torch.mm or a grouped_mm run."""
        dtype = str(self.dtype).removeprefix("torch.")
        rate, how = max((self.mm_tflops, f"torch.mm {self.mm_n}^3 {dtype}"), self.best_grouped)
        self._figure("gemm_tflops", rate, f"best {dtype} rate seen: {how}, median of {self.s.runs}, "
                                          f"slowest of {self.world} GPUs")

    def launch(self) -> None:
        t = torch.zeros(1, device=self.device)

        def launches() -> None:
            for _ in range(LAUNCHES):
                t.add_(1)

        us, = self._slowest([self._time(launches, spin=False) / LAUNCHES])
        what = "CUDA kernel" if self.cuda else "CPU op (no GPU: a dispatch, not a launch)"
        self._figure("kernel_launch_us", us, f"{LAUNCHES} back-to-back launches of a 1-element add_ ({what}), "
                                             f"host-bound, median of {self.s.runs} per launch")
        self._say(f"kernel launch: {us:.2f} µs")
        # the same launches as the nodes of one CUDA graph, replayed behind a device spin: what a kernel of the
        # graphed fused forward costs beyond its own work (no host in it); NaN where it could not be timed
        graph_us = math.nan
        if self.cuda:
            try:
                graph, _ = capture_graph(launches)
                torch.cuda.synchronize()
                graph_us = self._time(graph.replay) / LAUNCHES
            except RuntimeError as exc:  # a capture the driver refuses: the profile keeps kernel_launch_us for it
                self.notes.append(f"graph_launch_us: not measured ({str(exc).splitlines()[0]})")
        else:
            self.notes.append("graph_launch_us: not measured on the CPU (no CUDA graphs)")
        graph_us, = self._slowest([graph_us])  # every rank joins, whatever happened on it
        if math.isfinite(graph_us):
            self._figure("graph_launch_us", graph_us, f"{LAUNCHES} launches of a 1-element add_ captured in one CUDA graph, "
                                                      f"the replay behind a device spin, median of {self.s.runs} per launch")
            self._say(f"graph node launch: {graph_us:.2f} µs")

    def memory_passes(self) -> None:
        """B0's memory-bound torch ops on the first model's rows (kernels/baselines.py moe_sequential)."""
        m = self.s.models[0]
        local = m.num_experts // self.world
        tokens = max(1, min(PASS_ROWS, max(self.s.rows) * local) // m.top_k)
        pairs, hidden, ffn, k = tokens * m.top_k, m.hidden, m.ffn, m.top_k
        g = torch.Generator().manual_seed(self.s.seed)
        token_of = (torch.randperm(pairs, generator=g) // k).to(self.device)  # each token k times, expert order
        perm = torch.randperm(pairs, generator=g).to(self.device)
        x, rows = self._random(tokens, hidden, seed=3), self._random(pairs, hidden, seed=4)
        out = torch.empty(pairs, hidden, device=self.device, dtype=self.dtype)
        h = self._random(pairs, 2 * ffn, seed=5)
        topk_w = self._random(tokens, k, seed=6, dtype=torch.float32).softmax(-1)
        reduced = torch.empty(tokens, hidden, device=self.device, dtype=torch.float32)
        slots = perm.view(tokens, k)  # each token's k rows, anywhere in the region (as the send rows are)
        e = self.elem
        row_bytes = pairs * hidden * e
        passes = {  # kind: (the op, bytes read + written)
            "gather": (lambda: torch.index_select(x, 0, token_of, out=out), 2 * row_bytes + 8 * pairs),
            "scatter": (lambda: out.index_copy_(0, perm, rows), 2 * row_bytes + 8 * pairs),
            # SwiGLU in place as B0: silu_ of the gate half (read + write), mul_ by the up half (2 reads + write)
            "elementwise": (lambda: torch.nn.functional.silu(h[:, :ffn], inplace=True).mul_(h[:, ffn:]), 5 * pairs * ffn * e),
            "fp32_reduce": (lambda: _weighted_sum(topk_w, rows.view(tokens, k, hidden), reduced),
                            row_bytes + 4 * pairs + 4 * tokens * hidden),
            # the fused layer's combine: rows read by position, weighted, summed in fp32 in one pass
            "combine": (lambda: combine_rows(rows, slots, topk_w, reduced), row_bytes + 12 * pairs + 4 * tokens * hidden),
        }
        us = self._slowest([self._time(fn) for fn, _ in passes.values()])
        self.tables["memory_pass_GBps"] = {kind: _sig(b / t / 1e3) for (kind, (_, b)), t in zip(passes.items(), us)}
        self.notes.append(f"memory_pass_GBps: B0's ops on {m.name}'s rows ({tokens} tokens x top-{k}, H={hidden}, F={ffn}): "
                          "index_select (gather), index_copy_ (scatter), silu_ + mul_ (elementwise), the top-k bmm "
                          "into fp32 (fp32_reduce); and the fused layer's combine_kernel (combine); bytes read + "
                          "written / median time")
        self._say("memory passes GB/s: " + ", ".join(f"{k_}={v:.0f}" for k_, v in self.tables["memory_pass_GBps"].items()))

    # ---- grouped GEMM tables -----------------------------------------------------------------

    def gemm(self) -> None:
        """The grouped GEMM tables: torch._grouped_mm and the loop per shape, then the fused kernels per model."""
        def timed(impl: str) -> str:
            if self._sustained(impl):
                return (f"timed back to back in the GPU's sustained state (one CUDA graph replayed for {SUSTAIN_S} s, "
                        f"then {self.s.runs} replays together: --sustained {self.s.sustained})")
            return f"each launch timed alone (--sustained {self.s.sustained})"
        for shape in self.s.shapes:
            self.grouped_mm(shape)
            self._free()
        self.notes.append("grouped_gemm grouped_mm and loop: torch._grouped_mm, and one torch.mm per expert (B0's "
                          "expert_gemm='loop'), at all SMs, SwiGLU entries on the (K, 2N) weight "
                          f"(the SwiGLU itself is the elementwise pass), inputs and weights rotated over {ROTATE} sets; "
                          f"{timed('grouped_mm')}")
        for model in self.s.models:
            self.fused(model)
            self._free()
        self.notes.append("grouped_gemm fused: layer0 (GEMM0 + SwiGLU) and layer1 (GEMM1) of a FusedMoE in compute-only "
                          "mode on a one-rank process group, every local expert given rows_per_expert rows; "
                          f"{timed('fused')}; sms = the compute programs (grid - communication blocks); one set of inputs "
                          "(the weights exceed L2 at model shapes)")

    def _sustained(self, impl: str) -> bool:
        """Whether `impl`'s table is timed in the GPU's sustained state (--sustained fused|all|none)."""
        return self.s.sustained == "all" or (self.s.sustained == "fused" and impl == "fused")

    def _time_gemm(self, impl: str, fn: Callable[[], object], rotate: int = 1) -> float:
        """µs of one call of `impl`'s GEMM table: alone behind a device spin (fn once per timed run: it rotates its
        inputs itself), or back to back in the GPU's sustained state (one graph of `rotate` calls, each on its own
        inputs, replayed)."""
        if self._sustained(impl):
            return sustained_us(lambda: [fn() for _ in range(rotate)], runs=self.s.runs, calls=rotate)
        return self._time(fn)

    def grouped_mm(self, shape) -> None:
        """torch._grouped_mm over rows per expert at all SMs, inputs and weights rotated."""
        width = 2 * shape.N if shape.swiglu else shape.N
        most = shape.experts * max(self.s.rows)
        sets = [(self._random(most, shape.K, seed=10 + i),
                 self._random(shape.experts, shape.K, width, seed=20 + i) * shape.K ** -0.5) for i in range(ROTATE)]
        turn = itertools.count()
        us = []
        for r in self.s.rows:
            ends = (torch.arange(1, shape.experts + 1, device=self.device) * r).to(torch.int32)
            total = shape.experts * r

            def call(ends=ends, total=total) -> torch.Tensor:
                a, w = sets[next(turn) % ROTATE]
                return torch._grouped_mm(a[:total], w, offs=ends)

            us.append(self._time_gemm("grouped_mm", call, rotate=ROTATE))
        # B0's other expert GEMM: one torch.mm per expert (baselines' "loop"), faster with few large experts
        loop_us = []
        for r in self.s.rows:
            counts = [r] * shape.experts

            def call_loop(counts=counts, total=shape.experts * r) -> torch.Tensor:
                a, w = sets[next(turn) % ROTATE]
                return b0_expert_gemm(a[:total], w, None, list(enumerate(counts)))

            loop_us.append(self._time_gemm("loop", call_loop, rotate=ROTATE))
        us, loop_us = self._slowest(us), self._slowest(loop_us)
        flops = [2 * shape.experts * r * shape.K * width for r in self.s.rows]
        rate, at = max((f / t / 1e6, r) for f, t, r in zip(flops, us, self.s.rows))
        if rate > self.best_grouped[0]:
            self.best_grouped = (rate, f"torch._grouped_mm K={shape.K} N={width} x {shape.experts} experts, {at} rows each")
        sms = self.sms if self.cuda else torch.get_num_threads()  # CPU: the threads it ran on
        self._gemm_entry("grouped_mm", shape, sms, None, None, us)
        self._gemm_entry("loop", shape, sms, None, None, loop_us)

    def _gemm_entry(self, impl: str, shape, sms: int, block_m: int | None, block_n: int | None, us: list[float]) -> None:
        self.tables.setdefault("grouped_gemm", []).append(
            {"impl": impl, "K": shape.K, "N": shape.N, "swiglu": shape.swiglu, "experts": shape.experts, "sms": sms,
             "block_m": block_m, "block_n": block_n, "rows_per_expert": list(self.s.rows), "us": [_sig(t) for t in us]})
        self._say(f"grouped_gemm {impl} {shape.model} K={shape.K} N={shape.N}{' swiglu' if shape.swiglu else ''} "
                  f"x{shape.experts} sms={sms}: " + " ".join(f"{r}:{t:.0f}" for r, t in zip(self.s.rows, us)) + " µs")

    def _fused_layer(self, model, max_rows: int, comm_blocks: int, every_rank: bool = False, **config) -> FusedMoE:
        """The model's local experts in a FusedMoE on this rank alone (top-1: rows = tokens), or
        (every_rank) over every rank, `max_rows` tokens per local expert and rank; `config`: FusedConfig fields to
        change from calibrate's."""
        local = model.num_experts // self.world
        hidden, ffn = model.hidden, model.ffn
        w13 = self._random(local, hidden, 2 * ffn, seed=30) * hidden ** -0.5
        w2 = self._random(local, ffn, hidden, seed=31) * ffn ** -0.5
        weights = MoEWeights(torch.empty(hidden, local, device=self.device), w13, w2)  # the router is not used
        cfg = FusedConfig(comm_blocks0=comm_blocks, comm_blocks1=comm_blocks, block_m=self.s.block_m,
                          block_n=self.s.block_n, block_k=self.s.block_k, n_splits=self._splits(hidden),
                          programs=self.programs)
        cfg = replace(cfg, **config)
        try:
            return FusedMoE(weights, 1, local * max_rows, None if every_rank else self.single, config=cfg, dtype=self.dtype)
        except ValueError as exc:
            raise UserError("--tile", f"{model.name}: {exc}") from None

    def _splits(self, hidden: int) -> int:
        """layer1's column splits: the default 4 where they cut H into whole tiles, else fewer."""
        for n in (4, 3, 2, 1):
            width = default_layer1_width(hidden, n, self.s.block_n)
            if hidden % n == 0 and (hidden // n) % width == 0:
                return n
        return 1

    def _plan_rows(self, layer: FusedMoE, x: torch.Tensor, rows: int):
        """Run the layer once (compute-only) with `rows` rows on each local expert; its plan."""
        return plan_for_rows(layer, x, [rows] * layer.experts)

    def fused(self, model) -> None:
        """layer0 (GEMM0 + SwiGLU) and layer1 (GEMM1) launches alone, compute-only, at programs - n."""
        s = self.s
        base = min(s.comm_blocks)
        layer = self._fused_layer(model, max(s.rows), base)
        x = self._random(layer.max_tokens, model.hidden, seed=32)
        us = {(n, gemm): [] for n in s.comm_blocks for gemm in (0, 1)}
        for r in s.rows:
            plan = self._plan_rows(layer, x, r)
            for n in s.comm_blocks:
                layer.cfg = replace(layer.cfg, comm_blocks0=n, comm_blocks1=n)  # a run-time argument: no recompile
                us[n, 0].append(self._time_gemm("fused", lambda: layer._launch_layer0(plan, COMPUTE_ONLY)))
                us[n, 1].append(self._time_gemm("fused", lambda: layer._launch_layer1(plan, COMPUTE_ONLY)))
        local = model.num_experts // self.world
        shapes = {0: (model.hidden, model.ffn, True), 1: (model.ffn, model.hidden, False)}
        block_n = {0: s.block_n, 1: layer.block_n1}
        for (n, gemm), values in us.items():
            k, width, swiglu = shapes[gemm]
            shape = next(sh for sh in s.shapes if (sh.K, sh.N, sh.swiglu, sh.experts) == (k, width, swiglu, local))
            self._gemm_entry("fused", shape, self.programs - n, s.block_m, block_n[gemm], self._slowest(values))

    def power_state(self) -> None:
        """The fused kernels over a stream of calls that starts as bench starts a call (after a host barrier, a
        device spin and an all-reduce), against the same calls back to back at the power cap (as the sustained
        tables are timed). On one H200 (run 133, benchmarks/power_state.py) a stream of 1-3 ms started so ran at
        0.89-0.91 of its time at the cap, one of 10 ms at 0.99: the board had power in hand after the gap."""
        model = max(self.s.models, key=lambda m: m.hidden * m.ffn)  # the longest, most compute-bound calls
        rows = min(POWER_ROWS, max(self.s.rows))  # (a tiny grid's rows on the CPU: the interpreter is slow)
        layer = self._fused_layer(model, rows, min(self.s.comm_blocks))
        x = self._random(layer.max_tokens, model.hidden, seed=33)
        plan = self._plan_rows(layer, x, rows)

        def call() -> None:
            layer._launch_layer0(plan, COMPUTE_ONLY)
            layer._launch_layer1(plan, COMPUTE_ONLY)

        call_us = self._slowest([sustained_us(lambda: [call() for _ in range(ROTATE)], runs=self.s.runs,
                                              calls=ROTATE)])[0]
        calls = [1 << i for i in range(16) if (1 << i) * call_us <= max(POWER_CHAIN_US, 2 * call_us)]
        times = []
        for k in calls:
            def chain(k=k) -> None:
                for _ in range(k):
                    call()
            timed = chain
            if torch.cuda.is_available():  # one graph: no host launch between the calls (the CPU has no graphs)
                timed = capture_graph(chain)[0].replay
            times.append(self._time(timed, together=True, queued=True))
        over = [round(t / (k * call_us), 4) for k, t in zip(calls, self._slowest(times))]
        self.tables["power_state"] = {"model": model.name, "rows_per_expert": rows, "call_us": _sig(call_us),
                                      "calls": calls, "over_sustained": over}
        self.notes.append(
            f"power_state: layer0 + layer1 of a FusedMoE in compute-only mode on {model.name}'s "
            f"{layer.experts} local experts at {rows} rows each, call_us back to back at the power cap (as the "
            f"sustained tables; slowest of {self.world} GPUs); over_sustained: a CUDA graph of `calls` calls timed as "
            f"bench --align queued times a call (after a host barrier, a device spin and an all-reduce on the GPUs), "
            f"median of {self.s.runs}, slowest GPU, over calls x call_us; the simulator reads it at a fused forward's "
            "length for the calls bench timed (comet-dse validate --after-gap)")
        self._say("power_state: " + ", ".join(f"{k} calls {o:.3f}" for k, o in zip(calls, over)))

    # ---- between GPUs: all-to-all, host sync, copies, contention -----------------------------

    def alltoall(self) -> None:
        us, sizes = [], []
        for size in self.s.alltoall_sizes:
            elems = size // self.elem // self.world * self.world  # equal splits: a multiple of the world size
            inp = torch.zeros(elems, device=self.device, dtype=self.dtype)
            out = torch.empty_like(inp)
            us.append(self._time(lambda: dist.all_to_all_single(out, inp), together=True))
            sizes.append(elems * self.elem)
        us = self._slowest(us)
        self.tables["alltoall"] = [{"world": self.world, "bytes_per_rank": sizes, "us": [_sig(t) for t in us]}]
        self.alltoall_sizes, self.alltoall_us = sizes, us
        self._say(f"alltoall x{self.world}: " + " ".join(f"{b >> 10}K:{t:.0f}" for b, t in zip(sizes, us)) + " µs")

    # ---- the host-bound timings, in rounds ------------------------------------------------------

    def host_round(self) -> None:
        """One round of the host-bound timings: B0's routing plan over tokens (host_sync), B0 and its plan at
        B0_HOST_TOKENS (b0_host), B0's loop at one run and at a run per expert per source (loop_mm_host_us). The host's speed drifts over a
        run (2x H200: rounds of one state up to 54% apart, run 79's host_warmth.py; one calibrate timed the
        plan at 8 tokens at 290 and at 454 µs, run 91), so run_all spreads HOST_ROUNDS rounds between the GPU
        steps and host_tables keeps each figure's median over them."""
        m = self.s.models[0]
        if self.b0_weights is None:  # drawn on the host once (seconds for a model's every expert), kept for each round
            every = MoEWeights.random(m.num_experts, m.hidden, m.ffn, seed=self.s.seed, device=self.device,
                                      dtype=self.dtype)
            self.b0_weights = every.of_rank(self.rank, self.world)
            if m.ffn % self.world == 0:  # (every rank creates the TP groups, in the same order)
                self.b0_unsynced = (every.ffn_shard(self.rank, self.world), parallel_groups(1, self.world))
        weights = self.b0_weights
        self.host_rounds.append({"plan": self._plan_over_tokens(), "b0": self._b0_and_plan(weights),
                                 "plan_queued": self._plan_over_tokens(queued=True),
                                 "b0_queued": self._b0_and_plan(weights, queued=True),
                                 "unsynced": self._b0_unsynced(),
                                 "loop": self._b0_loop_few_and_every_run(weights),
                                 "copy_engine": self._copy_engine_forward()})
        self._say(f"host round {len(self.host_rounds)}: B0 at {B0_HOST_TOKENS} tokens "
                  f"{self.host_rounds[-1]['b0'][1]:.0f} µs, its plan {self.host_rounds[-1]['b0'][0]:.0f} µs")

    def _host_grid(self) -> list[int]:
        cap = max(1, PASS_ROWS // self.s.models[0].top_k)
        return sorted({min(t, cap) for t in HOST_SYNC_GRID})

    def _plan_over_tokens(self, queued: bool = False) -> list[float]:
        """B0's split-size exchange and its one host sync (baselines._plan, one chunk) at each token count of
        the grid, slowest rank: the plan sorts every (token, slot) pair on the GPU before the sync (on 2x H200
        that did not show up to 8192 tokens x top-4, runs 78-79: the points are the host's time). queued: timed
        as bench --align queued times B0 (its launches enqueued behind a device spin)."""
        m = self.s.models[0]
        local = m.num_experts // self.world
        us = []
        for tokens in self._host_grid():
            g = torch.Generator().manual_seed(self.s.seed + self.rank + tokens)
            ids = torch.randint(0, m.num_experts, (tokens, m.top_k), generator=g).to(self.device)
            # as bench times B0: after a barrier, no spin (the host's launches of the plan are part of it), or queued
            us.append(self._time(lambda ids=ids: b0_plan(ids, 1, local, self.world, None, False), together=True,
                                 spin=False, queued=queued))
        return self._slowest(us)

    def _b0_and_plan(self, weights: MoEWeights, queued: bool = False) -> list[float]:
        """(B0's plan, B0 (baselines.moe_sequential)) at B0_HOST_TOKENS tokens per rank, slowest rank, timed as
        bench times B0 (after a barrier, no spin; queued: as bench --align queued times it). B0's kernels then do
        next to nothing, so what it takes past its plan is the host's chain of launches after the sync."""
        m = self.s.models[0]
        local = m.num_experts // self.world
        g = torch.Generator().manual_seed(self.s.seed + 7 * self.rank)
        ids = torch.randint(0, m.num_experts, (B0_HOST_TOKENS, m.top_k), generator=g).to(self.device)
        x = self._random(B0_HOST_TOKENS, m.hidden, seed=35)
        topk_w = self._random(B0_HOST_TOKENS, m.top_k, seed=36, dtype=torch.float32).softmax(-1)
        return self._slowest([
            self._time(lambda: b0_plan(ids, 1, local, self.world, None, False), together=True, spin=False,
                       queued=queued),
            self._time(lambda: moe_sequential(x, ids, topk_w, weights, None), together=True, spin=False,
                       queued=queued)])

    def _b0_unsynced(self) -> list[float] | None:
        """(B0 with no host sync, the same timed queued) at B0_HOST_TOKENS tokens per rank, slowest rank: B0 of the TP
        baselines at EP=1 x TP=world (kernels/tp_baselines.py; on one GPU, B0 itself), whose EP layer has one rank, so
        torch._grouped_mm reads nothing on the host and nothing waits for it. Its kernels then do next to nothing: the
        first is the host's launches of the whole call, from its start; the second is shorter by what the host had
        launched while the GPUs still ran the spin before it (bench --align queued). None where F does not split
        over the ranks."""
        if self.b0_unsynced is None:
            return None
        m = self.s.models[0]
        shard, groups = self.b0_unsynced
        g = torch.Generator().manual_seed(self.s.seed + 11 * self.rank)
        ids = torch.randint(0, m.num_experts, (B0_HOST_TOKENS, m.top_k), generator=g).to(self.device)
        x = self._random(B0_HOST_TOKENS, m.hidden, seed=39)
        topk_w = self._random(B0_HOST_TOKENS, m.top_k, seed=40, dtype=torch.float32).softmax(-1)
        return self._slowest([self._time(lambda: moe_sequential_tp(x, ids, topk_w, shard, groups), together=True,
                                         spin=False, queued=queued) for queued in (False, True)])

    def _b0_loop_few_and_every_run(self, weights: MoEWeights) -> list[float]:
        """(B0's loop with one run of rows per source, B0's loop with a run per (source, local expert)), slowest rank,
        timed as bench times B0; NaN where not measured (loop_mm_host_us in host_tables). The loop launches one
        torch.mm per run with rows (kernels/baselines.py). Every run: slot j of token t to expert (t * top_k + j)
        mod experts, one token per expert and rank; one run per source: the same slots to the first local expert
        of rank (t * top_k + j) mod W. The same rows cross the same links either way."""
        m = self.s.models[0]
        local = m.num_experts // self.world
        tokens = m.num_experts
        every_run = round_robin_ids(tokens, m.top_k, m.num_experts, self.device)
        one_run = every_run % self.world * local
        x = self._random(tokens, m.hidden, seed=37)
        topk_w = self._random(tokens, m.top_k, seed=38, dtype=torch.float32).softmax(-1)
        # on GPUs, with several local experts (on the CPU B0's kernels run on the host too)
        runs = self.cuda and local > 1
        times = [self._time(lambda ids=ids: moe_sequential(x, ids, topk_w, weights, None, expert_gemm="loop"),
                            together=True, spin=False) if runs else math.nan for ids in (one_run, every_run)]
        return self._slowest(times)  # every rank joins, whatever ran on it

    def host_tables(self) -> None:
        """The host-bound tables and figures from the rounds: each the median over the rounds of its figure
        (each round's the median of --runs calls). The simulator reads b0_us - plan_us as the host's chain
        after B0's sync, spread over B0's launches (the GPU waits where the host is behind)."""
        rounds, m = self.host_rounds, self.s.models[0]
        self.b0_weights = self.b0_unsynced = self.copy_engine_layers = None  # the rounds are done: their memory goes
        n = len(rounds)
        median = lambda values: float(np.median(values))  # noqa: E731
        grid = self._host_grid()
        plan = [median([r["plan"][i] for r in rounds]) for i in range(len(grid))]
        plan_queued = [median([r["plan_queued"][i] for r in rounds]) for i in range(len(grid))]
        what = (f"B0's routing plan (baselines._plan: sort by expert, counts all_to_all_single, .tolist() of the split "
                f"sizes) at {{tokens}} tokens x top-{m.top_k} of {m.name} per GPU, {self.world} GPUs, after a barrier, "
                f"median of {self.s.runs}, slowest GPU, median of {n} rounds spread over the run")
        self.tables["host_sync"] = {"top_k": m.top_k, "tokens": grid, "us": [_sig(t) for t in plan],
                                    "queued_us": [_sig(t) for t in plan_queued]}
        self.notes.append("host_sync: " + what.format(tokens="each") + "; the simulator reads it at the (token, slot) "
                          "pairs a call sorts; queued_us: timed as bench --align queued times B0 (enqueued behind a "
                          "device spin, started by an all-reduce on the GPUs)")
        at = min(grid, key=lambda t: abs(t - HOST_SYNC_TOKENS))
        self._figure("host_sync_us", plan[grid.index(at)], what.format(tokens=at))
        self._say("host sync: " + " ".join(f"{t}:{u:.0f}" for t, u in zip(grid, plan)) + " µs; queued: "
                  + " ".join(f"{t}:{u:.0f}" for t, u in zip(grid, plan_queued)) + " µs")

        plan_us, b0_us = (median([r["b0"][i] for r in rounds]) for i in (0, 1))
        queued_plan_us, queued_b0_us = (median([r["b0_queued"][i] for r in rounds]) for i in (0, 1))
        self.tables["b0_host"] = {"tokens": B0_HOST_TOKENS, "plan_us": _sig(plan_us), "b0_us": _sig(b0_us),
                                  "queued_plan_us": _sig(queued_plan_us), "queued_b0_us": _sig(queued_b0_us)}
        unsynced = [r["unsynced"] for r in rounds if r["unsynced"] is not None]
        if unsynced:
            unsynced_us, queued_unsynced_us = (median([u[i] for u in unsynced]) for i in (0, 1))
            self.tables["b0_host"].update(unsynced_us=_sig(unsynced_us), queued_unsynced_us=_sig(queued_unsynced_us))
            self.notes.append(
                f"b0_host.unsynced_us: B0 with no host sync, that of the TP baselines at EP=1 x TP={self.world} "
                f"(kernels/tp_baselines.py moe_sequential_tp; on one GPU B0 itself) on {m.name} at {B0_HOST_TOKENS} "
                f"tokens x top-{m.top_k} per GPU, after a barrier with no spin, as b0_us (per round: "
                + ", ".join(f"{u[0]:.0f}" for u in unsynced) + " µs): the host's launches of the whole call; "
                "queued_unsynced_us: the same timed as bench --align queued times it (per round: "
                + ", ".join(f"{u[1]:.0f}" for u in unsynced) + " µs), shorter by what the host launched while the "
                "GPUs still ran the spin before it")
        self.notes.append(
            f"b0_host: B0 (moe_sequential) and its routing plan (baselines._plan) alone on {m.name} at {B0_HOST_TOKENS} "
            f"tokens x top-{m.top_k} per GPU, each after a barrier with no spin, median of {self.s.runs}, slowest of "
            f"{self.world} GPUs, median of {n} rounds spread over the run (B0 per round: "
            + ", ".join(f"{r['b0'][1]:.0f}" for r in rounds) + " µs; its plan: "
            + ", ".join(f"{r['b0'][0]:.0f}" for r in rounds) + " µs); b0_us - plan_us is the host's chain after the sync; "
            "queued_plan_us and queued_b0_us: the same timed as bench --align queued times B0 (B0 per round: "
            + ", ".join(f"{r['b0_queued'][1]:.0f}" for r in rounds) + " µs)")
        self._say(f"B0 at {B0_HOST_TOKENS} tokens: {b0_us:.0f} µs, its plan {plan_us:.0f} µs (medians of {n} rounds); "
                  f"queued {queued_b0_us:.0f} and {queued_plan_us:.0f} µs"
                  + (f"; with no sync (EP=1 x TP={self.world}) {unsynced_us:.0f}, queued {queued_unsynced_us:.0f} µs"
                     if unsynced else ""))
        self._loop_mm_host([r["loop"] for r in rounds])
        self._copy_engine_fixed([r["copy_engine"] for r in rounds])

    def _copy_engine_fixed(self, rounds: list[list[float]]) -> None:
        """copy_engine_fixed_us, _queued_us (its forward without its layers) and copy_engine_covered_us, _queued_us
        (with a spin in their place: the part before them), each the median over the host rounds
        (_copy_engine_forward): host-bound, they drift with the host (runs 105 and 106 timed the queued one once
        each, at 615 and 290 µs)."""
        m = self.s.models[0]
        keys = ("copy_engine_fixed_us", "copy_engine_fixed_queued_us", "copy_engine_covered_us",
                "copy_engine_covered_queued_us")
        if any(math.isnan(t) for r in rounds for t in r):
            for key in keys:
                self.notes.append(f"{key}: not measured on the CPU (no copy engine; the steps ran in the interpreter)")
            return
        what = (f"the fused forward (FusedMoE, {m.name}, top-{m.top_k}, {min(self.s.comm_blocks)} communication blocks "
                f"in layer1) with the copy engine moving layer0's rows, eagerly, at {FORWARD_FIXED_TOKENS} tokens per "
                f"GPU, median of {self.s.runs}, slowest of {self.world} GPUs, median of {len(rounds)} rounds spread over "
                "the run")
        without = "without its two layer kernels"
        covered = ("with a device spin of ~3 ms in place of its two layer kernels, less the spin's GPU time (the host's "
                   "launches after layer0's covered by it, as by layers that outlast them)")
        for i, (key, how) in enumerate(zip(keys, (f"{without}; {FROM_HOST}", f"{without}; {QUEUED}",
                                                  f"{covered}; {FROM_HOST}", f"{covered}; {QUEUED}"))):
            us = float(np.median([r[i] for r in rounds]))
            self._figure(key, us, f"{what}, {how} (rounds: " + ", ".join(f"{r[i]:.0f}" for r in rounds) + " µs)")
        self._say("copy-engine forward without its layers: " + ", ".join(
            f"{key.removeprefix('copy_engine_')} {self.figures.get(key, math.nan):.0f}" for key in keys) + " µs")

    def _loop_mm_host(self, rounds: list[list[float]]) -> None:
        """loop_mm_host_us: B0's loop with a run per (source, local expert) less with one run per source (the
        median of the rounds' differences), over the further torch.mm launches (2 GEMMs x W x (local experts - 1)).
        Each torch.mm moves a few rows there, so what the further ones add is the host's."""
        m = self.s.models[0]
        local = m.num_experts // self.world
        if any(math.isnan(t) for r in rounds for t in r):
            why = ("on the CPU (B0's kernels run on the host)" if not self.cuda else
                   "(one local expert: every source sends one run either way)")
            self.notes.append(f"loop_mm_host_us: not measured {why}")
            return
        few_us, every_us = (float(np.median([r[i] for r in rounds])) for i in (0, 1))
        further = 2 * self.world * (local - 1)
        us = float(np.median([every - few for few, every in rounds])) / further
        if us <= 0:  # no slower with more runs: nothing of the host's to charge (a profile takes figures > 0 only)
            self.notes.append(f"loop_mm_host_us: not measured (B0's loop took {every_us:.0f} µs with a run per source and "
                              f"expert, no more than the {few_us:.0f} with one run per source)")
            return
        self._figure("loop_mm_host_us", us, f"B0 (moe_sequential, expert_gemm='loop') on {m.name} with a run of rows per "
                                            f"(source, local expert) ({every_us:.0f} µs) less with one run per source "
                                            f"({few_us:.0f} µs), over its {further} further torch.mm launches; "
                                            f"{m.num_experts} tokens x top-{m.top_k} per GPU, after a barrier, no spin, "
                                            f"median of {self.s.runs}, slowest of {self.world} GPUs, the median of "
                                            f"{len(rounds)} rounds' differences")
        self._say(f"B0's expert loop: {us:.1f} µs of host per further torch.mm")

    def forward_fixed(self) -> None:
        """forward_fixed_us: the fused forward with its two layer kernels left out (the pack, the plan, the
        barriers, the combine) at FORWARD_FIXED_TOKENS tokens per rank, captured in a CUDA graph and timed as
        bench times the fused layer (each replay after a barrier, no spin: the graph's launch counts).
        forward_fixed_queued_us: the same as bench --align queued times it (enqueued behind a device spin, started
        by an all-reduce on the GPUs): without the graph's launch and the other host's lateness. The copy-engine
        variant's forward is host-bound: host_round times it (_copy_engine_forward)."""
        m = self.s.models[0]
        tokens, blocks = FORWARD_FIXED_TOKENS, min(self.s.comm_blocks)
        if not self.cuda:  # no CUDA graphs on the CPU
            for key in ("forward_fixed_us", "forward_fixed_queued_us"):
                self.notes.append(f"{key}: not measured on the CPU (no CUDA graphs)")
            return
        weights = MoEWeights.random(m.num_experts, m.hidden, m.ffn, seed=self.s.seed, device=self.device,
                                    dtype=self.dtype).of_rank(self.rank, self.world)
        layer = FusedMoE(weights, m.top_k, tokens, config=self._fixed_config(blocks), dtype=self.dtype)
        graph = layer.graphed(tokens, NO_LAYERS)
        measured = self._slowest([self._time(graph.replay, together=True, spin=False, queued=queued)
                                  for queued in (False, True)])
        del graph, layer
        what = (f"the fused forward (FusedMoE, {m.name}, top-{m.top_k}, {blocks} communication blocks in each layer) "
                f"without its two layer kernels at {tokens} tokens per GPU, in a CUDA graph, median of {self.s.runs}, "
                f"slowest of {self.world} GPUs, timed as bench times the layer")
        for key, us, how in (("forward_fixed_us", measured[0], FROM_HOST), ("forward_fixed_queued_us", measured[1], QUEUED)):
            self._figure(key, us, f"{what} {how}")
            self._say(f"forward without its layers at {tokens} tokens, {how}: {us:.1f} µs")

    def _fixed_config(self, comm_blocks0: int) -> FusedConfig:
        """The forward-fixed timings' layer: comm_blocks0 in layer0 (0: the copy engine), the fewest blocks in layer1."""
        m = self.s.models[0]
        return FusedConfig(comm_blocks0=comm_blocks0, comm_blocks1=min(self.s.comm_blocks), block_m=self.s.block_m,
                           block_n=self.s.block_n, block_k=self.s.block_k, n_splits=self._splits(m.hidden),
                           programs=self.programs)

    def _copy_engine_forward(self) -> list[float]:
        """One host round's copy-engine forward at FORWARD_FIXED_TOKENS tokens per rank, slowest rank, each as bench
        times it (eagerly: a host sync before its copies): [without its layers from a host barrier, the same
        queued, with a ~3 ms device spin in their place less the spin's GPU time from a host barrier, the same
        queued] (_LayersStandIn: the host's launches after layer0's run while the GPU spins, as beside real
        layers that outlast them). NaN on the CPU (the interpreter's time; no spin, no copy engine)."""
        if not self.cuda:
            return [math.nan] * 4
        m = self.s.models[0]
        tokens = FORWARD_FIXED_TOKENS
        if self.copy_engine_layers is None:  # made once (symmetric memory), kept for each round
            cfg = self._fixed_config(0)
            self.copy_engine_layers = (FusedMoE(self.b0_weights, m.top_k, tokens, config=cfg, dtype=self.dtype),
                                       _LayersStandIn(self.b0_weights, m.top_k, tokens, cfg, self.dtype))
        layer, stand_in = self.copy_engine_layers
        x = self._random(tokens, m.hidden, seed=37)
        ids = round_robin_ids(tokens, m.top_k, m.num_experts, self.device)
        topk_w = torch.full((tokens, m.top_k), 1.0 / m.top_k, device=self.device)
        us = [self._time(lambda: layer(x, ids, topk_w, mode=NO_LAYERS), together=True, spin=False, queued=queued)
              for queued in (False, True)]
        for queued in (False, True):
            stand_in.spins.clear()
            total = self._time(lambda: stand_in(x, ids, topk_w), together=True, spin=False, queued=queued)
            torch.cuda.synchronize()
            spin = statistics.median(start.elapsed_time(end) * 1e3 for start, end in stand_in.spins)
            us.append(max(0.0, total - spin))
        return self._slowest(us)

    def _copy_buffer(self) -> tuple[PeerBuffer, int, int]:
        cols = self.s.models[0].hidden
        rows = max(self.s.block_m, self.s.copy_bytes // (cols * self.elem))
        buf = PeerBuffer(2 * rows, cols, self.dtype, self.device, None)
        pattern = torch.arange(rows * cols, device=self.device) % 251 + 3 * self.rank  # exact in bf16
        buf.local[:rows].copy_(pattern.view(rows, cols))
        dist.barrier()
        return buf, rows, cols

    def _copy_launcher(self, buf: PeerBuffer, rows: int, cols: int, push: bool) -> Callable[[int, int], None]:
        split_cols = cols // self._splits(cols) if push else cols  # layer1 pushes column splits, layer0 pulls rows
        copy_rows, copy_cols = copy_shape(split_cols, FusedConfig().copy_elems)
        peer = (self.rank + 1) % self.world

        def launch(blocks: int, repeats: int = 1) -> None:
            copy_blocks_kernel[(blocks,)](buf.local, buf.deltas, peer, rows, cols, split_cols, repeats, PUSH=push,
                                          TILE_ROWS=self.s.block_m, COPY_ROWS=copy_rows, COPY_COLS=copy_cols)
        return launch

    def _check_copied(self, buf: PeerBuffer, rows: int, push: bool) -> None:
        """The destination holds the source's rows: pull from the next rank, push from the previous."""
        if self.cuda:
            torch.cuda.synchronize()
        dist.barrier()
        source = (self.rank - 1) % self.world if push else (self.rank + 1) % self.world
        if not torch.equal(buf.local[rows:], buf.peer(source)[:rows]):
            raise RuntimeError(f"copy_blocks_kernel ({'push' if push else 'pull'}) did not copy the rows")
        dist.barrier()

    def copies(self) -> None:
        buf, rows, cols = self._copy_buffer()
        nbytes = rows * cols * self.elem
        curves = {}
        for way in ("pull", "push"):
            launch = self._copy_launcher(buf, rows, cols, way == "push")
            us = []
            for blocks in self.copy_blocks:
                buf.local[rows:].zero_()
                dist.barrier()
                us.append(self._time(lambda: launch(blocks), together=True))
                self._check_copied(buf, rows, way == "push")
            curves[way] = [nbytes / t / 1e3 for t in self._slowest(us)]
            self._say(f"comm blocks {way}: " + " ".join(f"{b}:{v:.0f}" for b, v in zip(self.copy_blocks, curves[way])) + " GB/s")
        src, dst = buf.peer((self.rank + 1) % self.world)[:rows], buf.local[rows:]
        side = torch.cuda.Stream() if self.cuda else None

        def engine() -> None:
            if side is None:
                dst.copy_(src)
                return
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                dst.copy_(src, non_blocking=True)
            torch.cuda.current_stream().wait_stream(side)

        engine_us, = self._slowest([self._time(engine, together=True)])
        engine_GBps = nbytes / engine_us / 1e3
        self.tables["comm_blocks"] = {
            "pull": {"blocks": list(self.copy_blocks), "GBps": [_sig(v) for v in curves["pull"]]},
            "push": {"blocks": list(self.copy_blocks), "GBps": [_sig(v) for v in curves["push"]]},
            "copy_engine_GBps": _sig(engine_GBps)}
        both = (f"{self.world} GPUs copying at once, each with its next rank, {nbytes / (1 << 20):.4g} MiB, "
                f"median of {self.s.runs}")
        link, how = max((max(curves["pull"]), "copy_blocks_kernel pull"), (max(curves["push"]), "copy_blocks_kernel push"),
                        (engine_GBps, "peer copy_ on a side stream (copy engine)"))
        self.link = link
        self._figure("link_GBps", link, f"best peer-copy bandwidth measured: {how}; {both}")
        c, p, worst = fit_comm_blocks(self.copy_blocks, curves["pull"], link, HARDWARE_PRESETS[self.s.base])
        fitted = (f"HardwareProfile.comm_blocks_GBps fitted to the pull curve (layer0's _copy_block over "
                  f"{self.copy_blocks} blocks; the push curve is in tables.comm_blocks), worst error {100 * worst:.0f}%; {both}")
        self._figure("comm_block_GBps", c, fitted)
        self._figure("comm_saturation", p, fitted)
        self._say(f"copy engine {engine_GBps:.0f} GB/s; link {link:.0f} GB/s; per block {c:.1f} GB/s, saturation {p:.2f}")
        self._fit_collective()

    def layer_copies(self) -> None:
        """The fused layer's own communication path at n blocks: layer0 (pull) and layer1 (push) of
        a FusedMoE over every rank in COMM_ONLY mode (the compute blocks skip their GEMMs), each
        launch timed with every rank launching at once. Unlike `copies`, this includes what the
        blocks do per tile: the tile table, the pieces, the flags and the counters they wait on. Once per model:
        a block moves a model's wider rows faster (8 KiB against 4 KiB: 8-11% below the link's limit, run 114), each
        model at the first one's bytes (as many rows per local expert as make them)."""
        blocks = [b for b in self.copy_blocks if b < self.programs]
        first = self.s.models[0]
        first_rows = self._contention_rows()
        entries, notes = [], []
        for m in self.s.models:
            scale = (first.num_experts * first.hidden) / (m.num_experts * m.hidden)
            rows = max(1, round(first_rows * scale))
            layer, plan, remote_rows = self._copies_layer(blocks[0], m, rows)
            nbytes = remote_rows * m.hidden * self.elem
            us = self._launch_times(layer, plan, blocks)
            curves = {way: [nbytes / t / 1e3 for t in self._slowest([by_blocks[n] for n in blocks])]
                      for way, by_blocks in us.items()}
            # the curve's own launches where it timed the item counts of blocks
            full = self._item_times(layer, plan, nbytes, self._launch_times(layer, plan, self._item_blocks(), us))
            tokens, item_rows = layer.max_tokens, remote_rows // plan.remote_count()
            del layer, plan
            self._free()
            # the same rows in finer items: layer0's tiles pulled in halves, layer1's rows pushed in more (or fewer)
            # column splits; the same bytes from the same buffers, so only the items' count and size differ
            finer = self._finer_items(m.hidden)
            entry = {"model": m.name, "hidden": m.hidden,
                     **{way: {"blocks": blocks, "GBps": [_sig(v) for v in curves[way]]} for way in ("pull", "push")}}
            note = f"{m.name} {tokens} tokens per GPU, {remote_rows} rows to peers"
            if finer:
                small_layer, small_plan, _ = self._copies_layer(blocks[0], m, rows, **finer)
                small = self._item_times(small_layer, small_plan, nbytes,
                                         self._launch_times(small_layer, small_plan, self._item_blocks()))
                del small_layer, small_plan
                self._free()
                entry["item_us"] = {way: _sig(statistics.median(item_cost(f, s) for f, s in zip(full[way], small[way])))
                                    for way in ("pull", "push")}
                entry["item_rows"] = item_rows
                note += (f"; per item (KiB, µs) at {', '.join(map(str, self._item_blocks()))} blocks: pull "
                         f"{_pairs(full['pull'])} against {_pairs(small['pull'])} ({finer['pull_rows']}-row pieces), "
                         f"push {_pairs(full['push'])} against {_pairs(small['push'])} ({finer['n_splits']} splits)")
            else:
                note += f" (no finer items for H = {m.hidden} at tile {self.s.block_m}: no per-item cost)"
            entries.append(entry)
            notes.append(note)
            for way in ("pull", "push"):
                self._say(f"layer comm {way}, {m.name}: " + " ".join(f"{b}:{v:.0f}" for b, v in zip(blocks, curves[way]))
                          + " GB/s" + (f"; {entry['item_us'][way]:.2f} µs per item" if "item_us" in entry else ""))
        self.tables["layer_comm_blocks"] = entries
        self.notes.append(f"layer_comm_blocks: per model (its row width H), layer0 (pull) and layer1 (push) of a FusedMoE "
                          f"over {self.world} GPUs in COMM_ONLY mode, top-1 round-robin over the experts ({'; '.join(notes)}); "
                          f"bytes moved / median launch time (layer1's with the memset of its counters), slowest rank. "
                          f"item_us: what a block spends per item of its walk (layer0: a remote row tile; layer1: a tile's "
                          f"column split) beside moving the item's bytes, from the time per item at few blocks of that "
                          f"workload (item_rows rows an item) and of the same rows in finer items (layer0 pulling each tile "
                          f"in halves, layer1 in other column splits): the line through the two at 0 bytes, the median "
                          f"over the block counts (kernels/calibration.item_cost)")

    def _finer_items(self, hidden: int) -> dict[str, int] | None:
        """FusedConfig changes that move the same rows in other items: layer0's tiles pulled in halves (pull_rows),
        layer1's rows in twice the column splits where they cut H into whole tiles, else half; None where neither
        gives layer1 another split count or a tile cannot be halved."""
        splits = self._splits(hidden)
        other = [n for n in (2 * splits, splits // 2) if n >= 1 and n != splits and hidden % n == 0
                 and (hidden // n) % default_layer1_width(hidden, n, self.s.block_n) == 0]
        if not other or self.s.block_m % 2:
            return None
        return {"pull_rows": self.s.block_m // 2, "n_splits": other[0]}

    def _item_blocks(self) -> list[int]:
        return [n for n in ITEM_BLOCKS if n < self.programs]

    def _launch_times(self, layer: FusedMoE, plan, counts: list[int],
                      known: dict[str, dict[int, float]] | None = None) -> dict[str, dict[int, float]]:
        """This rank's median µs of layer0 (pull) and layer1 (push, with the memset of its counters) in COMM_ONLY mode
        by count of communication blocks, every rank launching at once: `known`'s, and the other `counts` timed."""
        found = {way: dict(known[way]) if known else {} for way in ("pull", "push")}
        for n in (n for n in counts if n not in found["pull"]):
            layer.cfg = replace(layer.cfg, comm_blocks0=n, comm_blocks1=n)  # run-time arguments: no recompile
            found["pull"][n] = self._time(lambda: layer._launch_layer0(plan, COMM_ONLY), together=True)
            found["push"][n] = self._time(lambda: push_once(layer, plan), together=True)
        layer.check()  # a wait that gave up would make these times meaningless
        return found

    def _item_times(self, layer: FusedMoE, plan, nbytes: int,
                    launches: dict[str, dict[int, float]]) -> dict[str, list[tuple[float, float]]]:
        """Per direction, (KiB, µs) per item a communication block moves at each of ITEM_BLOCKS, slowest rank: the
        layer's launch time there (`launches`, _launch_times) times the blocks over the items (every block as many,
        each item alike), the `nbytes` it moves either way over the items. Items: layer0 a remote tile's pieces
        (FusedConfig.pull_rows), layer1 a remote tile's column splits."""
        tiles = plan.remote_count()
        if tiles == 0:
            raise RuntimeError("layer_copies: the workload moves no rows to time a block's items by")
        items = {"pull": tiles * layer.pull_parts, "push": tiles * layer.cfg.n_splits}
        return {way: [(nbytes / items[way] / 1024, us)
                      for us in self._slowest([launches[way][n] * n / items[way] for n in self._item_blocks()])]
                for way in ("pull", "push")}

    def _copies_layer(self, comm_blocks: int, m: ModelConfig | None = None, rows: int | None = None, **config):
        """A FusedMoE over every rank for timing its copies (`m`, default the first model, `rows` (default
        CONTENTION_ROWS) tokens per local expert, top-1 round-robin over the experts: every rank alike; `config`:
        FusedConfig fields to change), run once in COMM_ONLY mode; it, its plan and the rows each rank pulls from (and
        pushes to) its peers."""
        m = m or self.s.models[0]
        layer = self._fused_layer(m, rows or self._contention_rows(), comm_blocks, every_rank=True, **config)
        tokens, experts = layer.max_tokens, m.num_experts
        ids = round_robin_ids(tokens, 1, experts, self.device)
        layer(self._random(tokens, m.hidden, seed=34), ids, torch.ones(tokens, 1, device=self.device), mode=COMM_ONLY)
        remote_rows = sum(1 for e in range(experts) if e // layer.experts != self.rank) * (tokens // experts)
        return layer, layer.plan, remote_rows

    def _layer_copy_contention(self) -> None:
        """Per model (its GEMM shapes, CONTENTION_ROWS rows per local expert, top-1 round-robin): the share of the
        GEMM's span the layer's copies lose beside it in one kernel, at LAYER_CONTENTION_BLOCKS."""
        blocks = self._layer_contention_blocks()
        entries, spans_by_model = [], []
        for m in self.s.models:
            layer, plan, _ = self._copies_layer(min(self.s.comm_blocks), m)
            spans = self._in_layer_spans(layer, plan)
            layer.check()
            del layer, plan
            self._free()
            shares = {way: [_sig(share_lost_to_gemm(*row[3 * i:3 * i + 3])) for row in spans]
                      for i, way in enumerate(("pull", "push"))}
            entries.append({"model": m.name, "hidden": m.hidden, "ffn": m.ffn, "copy_blocks": blocks, **shares})
            spans_by_model.append(f"{m.name}: " + "; ".join(f"{n}: " + " ".join(f"{v:.0f}" for v in row)
                                                            for n, row in zip(blocks, spans)))
            self._say(f"layer copies' share lost to the GEMM (pull/push), {m.name}: " + " ".join(
                f"{n}:{a:.3f}/{b:.3f}" for n, a, b in zip(blocks, shares["pull"], shares["push"])))
        self.tables["layer_copy_contention"] = entries
        self.notes.append(
            f"layer_copy_contention: per model, the copies of a FusedMoE over {self.world} GPUs ({self._contention_rows()} "
            f"rows per local expert, top-1 round-robin, every rank alike) beside the GEMM tiles of the same kernel's "
            f"compute programs, as the share of the GEMM's span they lose (0: none, 1: they stand still while it runs), at "
            f"{', '.join(map(str, blocks))} blocks: each layer launched in FULL mode with its waits given up at once "
            f"(max_spins 0: the GEMM runs at its own pace beside the copies) and in COMM_ONLY mode, every program stamping "
            f"its start and end (globaltimer); copies alone C, copies beside the GEMM T and the GEMM G, each from the "
            f"launch's first start to that role's last end, median of 5 launches, slowest rank: 1 - C / T where the copies "
            f"ended first, else (T - C) / G, within [0, 1] (kernels/calibration.share_lost_to_gemm). The share depends on "
            f"the GEMM's shape (run 112: Qwen2-MoE's 0.44 at 4 blocks over-slowed Phi-3.5-MoE's copies). Spans (C, T, G µs, "
            f"layer0 then layer1) per block count: " + " | ".join(spans_by_model))

    def _in_layer_spans(self, layer: FusedMoE, plan, runs: int = 5) -> list[list[float]]:
        """Per communication block count: (copies alone, copies beside the GEMM, the GEMM) spans in µs of layer0, then
        of layer1, inside the kernel (program stamps), slowest rank: COMM_ONLY, then FULL with every wait given up at
        once (max_spins 0), so the compute programs run their tiles at their own pace beside the copies (the timing
        only: rows are read before they land)."""
        patient = layer.cfg
        layer.programs = self.programs
        layer.stamps = torch.zeros(2 * self.programs, dtype=torch.int64, device=self.device)
        found = []
        for n in self._layer_contention_blocks():
            layer.cfg = replace(patient, comm_blocks0=n, comm_blocks1=n)
            row = []
            for launch, reset, comm in ((layer._launch_layer0, layer.flags, range(n)),
                                        (layer._launch_layer1, layer.counters, range(self.programs - n, self.programs))):
                for mode in (COMM_ONLY, FULL):  # COMM_ONLY's waits are checked by the caller
                    spans = []
                    with layer.without_waits() if mode == FULL else contextlib.nullcontext():
                        for _ in range(runs + 1):  # the first warms up
                            reset.zero_()
                            torch.cuda.synchronize()
                            dist.barrier()
                            launch(plan, mode)
                            torch.cuda.synchronize()
                            spans.append(program_spans(layer.stamps, comm))
                    comm_us, compute_us = (statistics.median(v) for v in zip(*spans[1:]))
                    row += [comm_us] if mode == COMM_ONLY else [comm_us, compute_us]
            found.append(row)
        layer.cfg, layer.stamps = patient, None
        flat = self._slowest([v for row in found for v in row])
        return [flat[6 * i:6 * i + 6] for i in range(len(found))]

    def _layer_contention_blocks(self) -> list[int]:
        return [n for n in LAYER_CONTENTION_BLOCKS if n < self.programs]

    def _contention_rows(self) -> int:
        """The --rows value nearest CONTENTION_ROWS: the rows per expert of the layers timed beside copies."""
        return min(self.s.rows, key=lambda r: abs(math.log(r / CONTENTION_ROWS)))

    def _fit_collective(self) -> None:
        sizes, us = self.alltoall_sizes, self.alltoall_us
        fit = fit_alltoall(sizes, us, self.world)
        if fit is None:
            self.notes.append("all-to-all: no positive bandwidth fits the times; collective figures left to the base preset")
            return
        latency, bandwidth = fit
        what = (f"fit of latency + bytes sent to peers / bandwidth to NCCL all_to_all_single, equal splits, "
                f"{sizes[0]}..{sizes[-1]} bytes per rank, {self.world} GPUs")
        if latency > 0:
            self._figure("collective_latency_us", latency, what)
        else:
            self._figure("collective_latency_us", min(us), f"smallest measured all-to-all time (the fitted "
                                                           f"intercept {latency:.1f} µs was not positive); {what}")
        efficiency = bandwidth / self.link
        clamp = "" if efficiency <= 1 else f" (fitted {efficiency:.2f} > 1: kept at 1)"
        self._figure("collective_efficiency", min(1.0, efficiency),
                     f"fitted all-to-all bandwidth {bandwidth:.0f} GB/s / link_GBps{clamp}; {what}")

    def contention(self) -> None:
        """layer0's GEMM alone on programs - n compute programs vs beside n copy programs pulling
        over NVLink on a side stream (the copies outlast the GEMM), both ranks at once; and the other
        way round, the layer's own pulls (layer0) and pushes (layer1) on n communication programs
        alone vs beside the GEMM."""
        if not self.cuda:
            self.notes.append("gemm_contention: not measured on the CPU (no concurrent kernels in the interpreter)")
            return
        m, s = self.s.models[0], self.s
        rows = self._contention_rows()
        layer = self._fused_layer(m, rows, min(s.comm_blocks))
        x = self._random(layer.max_tokens, m.hidden, seed=33)
        plan = self._plan_rows(layer, x, rows)
        buf, buf_rows, cols = self._copy_buffer()
        pull = self._copy_launcher(buf, buf_rows, cols, push=False)
        side = torch.cuda.Stream()
        spin = median_us(spin_device, runs=5, warmup=1)  # µs
        copier, copier_plan, _ = self._copies_layer(min(s.comm_blocks))
        # per slowdown: its kernel's time alone and beside the other side, one of each per block count
        timed: dict[str, tuple[list[float], list[float]]] = {
            name: ([], []) for name in ("gemm", "proxy_copy", "copy", "push", "gemm1")}

        def settle() -> None:  # before both timings alike: this rank idle, every rank at the same point
            torch.cuda.synchronize()
            dist.barrier()

        def beside(side_launch: Callable[[int], object], repeats: int) -> Callable[[], None]:
            """What to run before a timed launch: every rank settled, then `side_launch(repeats)` on the side stream
            (the timed launch follows the device spin, so the side's work starts first)."""
            def launch() -> None:
                settle()  # the previous run's side work is done, and every rank starts it together
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    side_launch(repeats)
            return launch

        def both(name: str, fn: Callable[[], object], alone_us: float, side_launch: Callable[[int], object],
                 side_once_us: float, times: int) -> None:
            """`fn` (`alone_us` alone) timed beside `side_launch` repeated to outlast the spin and `times` x it."""
            timed[name][0].append(alone_us)
            repeats = max(1, math.ceil((times * alone_us + spin) / side_once_us))
            timed[name][1].append(self._time(fn, before=beside(side_launch, repeats)))
            torch.cuda.synchronize()

        def repeated(fn: Callable[[], object]) -> Callable[[int], None]:
            return lambda repeats: [fn() for _ in range(repeats)]

        for n in s.comm_blocks:
            layer.cfg = replace(layer.cfg, comm_blocks0=n)

            def gemm() -> None:
                layer._launch_layer0(plan, COMPUTE_ONLY)

            gemm_alone = self._time(gemm, before=settle)
            pull_alone = self._time(lambda: pull(n), together=True)
            # the copy kernel repeats inside one launch: pull(n, repeats)
            both("gemm", gemm, gemm_alone, lambda repeats, n=n: pull(n, repeats), pull_alone, 3)
            # the other way round: the copies timed beside GEMMs that outlast them, as layer0's pulls
            # run beside its compute blocks (HBM, L2 and the memory system shared with the tiles); the spin
            # lets the GEMM take its SMs first
            both("proxy_copy", lambda: pull(n), pull_alone, repeated(gemm), gemm_alone, 2)
            # the fused layer's own pulls (layer0 COMM_ONLY on a grid of n communication programs and one compute
            # program that only follows the flags) beside the GEMM on all but n + 1 SMs: the programs of both kernels
            # take an SM each (their shared memory), so the pulls run where the layer's communication blocks would
            copier.programs = n + 1
            copier.cfg = replace(copier.cfg, comm_blocks0=n)

            def layer_pulls() -> None:
                copier._launch_layer0(copier_plan, COMM_ONLY)

            layer_pulls_alone = self._time(layer_pulls, together=True)
            layer.cfg = replace(layer.cfg, comm_blocks0=n + 1)
            both("copy", layer_pulls, layer_pulls_alone, repeated(gemm), gemm_alone, 2)
            # layer1's pushes on the same n communication programs (its one compute program only raises the
            # counters), alone vs beside layer1's own GEMM (COMPUTE_ONLY on programs - n - 1 compute programs; its
            # communication programs move nothing and end at once), as the pushes run beside GEMM1's tiles: their
            # writes go to the peer and GEMM1's tiles store to the staging they read from (run 63 timed them
            # beside layer0's GEMM: 1.20 at 8 blocks; run 65 beside GEMM1: 1.28)
            copier.cfg = replace(copier.cfg, comm_blocks1=n)
            layer.cfg = replace(layer.cfg, comm_blocks1=n + 1)

            def gemm1() -> None:
                layer._launch_layer1(plan, COMPUTE_ONLY)

            def layer_pushes() -> None:
                push_once(copier, copier_plan)

            gemm1_alone = self._time(gemm1, before=settle)
            push_alone = self._time(layer_pushes, together=True)
            both("push", layer_pushes, push_alone, repeated(gemm1), gemm1_alone, 2)
            # and the other way round: layer1's GEMM alone vs beside those pushes (every rank pushing to the others on
            # a side stream, repeated to outlast it), as GEMM1's tiles run beside the layer's pushes
            both("gemm1", gemm1, gemm1_alone, repeated(layer_pushes), push_alone, 3)
        copier.check()
        del copier, copier_plan
        names = list(timed)
        times = self._slowest([t for name in names for side in timed[name] for t in side])
        k = len(s.comm_blocks)
        slow, proxy_slow, copy_slow, push_slow, gemm1_slow = (
            [b / a for a, b in zip(times[2 * i * k:(2 * i + 1) * k], times[(2 * i + 1) * k:(2 * i + 2) * k])]
            for i in range(len(names)))
        self.tables["gemm_contention"] = {"copy_blocks": [0, *s.comm_blocks], "slowdown": [1.0, *(_sig(v) for v in slow)]}
        self.tables["copy_contention"] = {"copy_blocks": list(s.comm_blocks), "slowdown": [_sig(v) for v in copy_slow]}
        self.tables["push_contention"] = {"copy_blocks": list(s.comm_blocks), "slowdown": [_sig(v) for v in push_slow]}
        self.tables["gemm1_contention"] = {"copy_blocks": [0, *s.comm_blocks], "slowdown": [1.0, *(_sig(v) for v in gemm1_slow)]}
        self.notes.append(f"gemm_contention: fused layer0 GEMM (COMPUTE_ONLY, {m.name}, {rows} rows per expert) on "
                          f"programs - n compute programs, alone vs beside copy_blocks_kernel pulling with n programs "
                          f"on a side stream, both after a device sync and a barrier; slowest of {self.world} GPUs "
                          f"(the simulator reads a ratio below 1 as 1: noise)")
        self.notes.append(f"copy_contention: layer0 of a FusedMoE over {self.world} GPUs in COMM_ONLY mode ({m.name}, "
                          f"top-1 round-robin) on a grid of n communication programs and one compute program, timed alone "
                          f"vs beside the GEMM above on programs - n - 1 compute programs (launched first on a side stream, "
                          f"repeated to outlast the pulls); slowest of {self.world} GPUs (the simulator reads a ratio below "
                          f"1 as 1). Before run 62 (profiles up to h200-x2-run39) copy_blocks_kernel pulled instead, "
                          f"beside the GEMM on programs - n: it read 1.05-1.09 at 8-16 blocks where the layer's own "
                          f"communication blocks slow 1.2-1.3x beside their GEMMs (results/measurements/ep2_h200/run61); "
                          f"copy_blocks_kernel's figures now: " + " ".join(f"{n}:{v:.3f}" for n, v in zip(s.comm_blocks, proxy_slow)))
        self.notes.append(f"push_contention: layer1 of the same FusedMoE in COMM_ONLY mode on n communication programs and "
                          f"one compute program (the pushes, with the memset of its counters), timed alone vs beside "
                          f"layer1's GEMM (COMPUTE_ONLY, {m.name}, {rows} rows per expert) on programs - n - 1 compute "
                          f"programs, launched first on a side stream and repeated to outlast the pushes; slowest of "
                          f"{self.world} GPUs (read as copy_contention where a profile lacks it). Run 63 (profile "
                          f"h200-x2-run39-contention63) timed them beside layer0's GEMM instead")
        self.notes.append(f"gemm1_contention: that layer1 GEMM alone vs beside those pushes (every rank pushing on a side "
                          f"stream, repeated to outlast it); slowest of {self.world} GPUs (the simulator reads a ratio below 1 "
                          f"as 1; gemm_contention where a profile lacks it)")
        self._layer_copy_contention()
        self._say("gemm contention: " + " ".join(f"{n}:{v:.3f}" for n, v in zip(s.comm_blocks, slow)))
        self._say("copy contention: " + " ".join(f"{n}:{v:.3f}" for n, v in zip(s.comm_blocks, copy_slow)))
        self._say("push contention: " + " ".join(f"{n}:{v:.3f}" for n, v in zip(s.comm_blocks, push_slow)))
        self._say("gemm1 contention: " + " ".join(f"{n}:{v:.3f}" for n, v in zip(s.comm_blocks, gemm1_slow)))

