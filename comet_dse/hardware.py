"""Hardware profiles: what one GPU and its links can do, with where each figure comes from.

A profile answers cost questions itself (Calculon's habit), so the simulator and any
closed-form estimate share one formula: a GEMM tile's time, an HBM pass, a collective.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from comet_dse.choices import ALIGNS, INTERNODE_ROUTES
from comet_dse.errors import UserError
from comet_dse.files import read_json_object

if TYPE_CHECKING:
    from comet_dse.measured import MeasuredTables

NS_PER_S = 1e9
# How a token crosses nodes (SimContext.path and the collectives' busiest ports follow the same rule):
# "direct": the source GPU's own NIC to the destination GPU's own NIC;
# "rail": DeepEP's internode kernels (DeepSeek-V3 report, 3.2.2): over the source's rail to the GPU of the
#   same local index on the destination node, then forwarded over NVLink there;
# "pxn": NCCL's PXN: over NVLink first to the source-node GPU on the destination's rail, then rail to rail.
# (INTERNODE_ROUTES, their names, live in comet_dse/choices.py for the CLI.)
# the figures added after the first profiles and their defaults, at which a profile predicts as it did
# before they existed: left out of figures() and to_dict() at these values, so earlier tuning studies keep
# their identity (the multi-node figures, and a CUDA graph node's launch)
# a numeric figure's declared type (annotations are strings here), optional ones alike: how a study's identity
# casts it and which figures a measured profile may carry
NUMBER_TYPES = {"int": int, "float": float, "int | None": int, "float | None": float}
OPTIONAL_FIGURE_DEFAULTS = {"nics_per_node": None, "nic_collective_efficiency": None, "internode": "direct",
                            "graph_launch_us": None, "forward_fixed_us": None, "copy_engine_fixed_us": None,
                            "loop_mm_host_us": None, "forward_fixed_queued_us": None,
                            "copy_engine_fixed_queued_us": None, "copy_engine_covered_us": None,
                            "copy_engine_covered_queued_us": None}


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    sms: int
    gemm_tflops: float  # achieved dense bf16 GEMM rate of the whole GPU
    hbm_GBps: float  # achieved HBM bandwidth, read + write counted
    link_GBps: float  # GPU-to-GPU in one node, per GPU, per direction, reachable by SM copies
    link_latency_us: float
    comm_block_GBps: float  # what one communication thread block can move (one CTA cannot fill a link)
    comm_saturation: float  # sharpness p of the blocks -> bandwidth curve (see comm_blocks_GBps)
    gpus_per_node: int
    nic_GBps: float  # inter-node, per NIC, per direction (one NIC per GPU unless nics_per_node says fewer)
    nic_latency_us: float
    collective_efficiency: float  # NCCL all-to-all bandwidth / link_GBps
    collective_latency_us: float  # fixed cost of one NCCL collective (launch + handshake)
    collective_sms: int  # SMs an NCCL all-to-all holds while it runs
    host_sync_us: float  # exchange of split sizes + device-to-host copy + stream sync
    kernel_launch_us: float
    # ---- later figures: each default predicts as before the figure existed (OPTIONAL_FIGURE_DEFAULTS) ----
    nics_per_node: int | None = None  # NICs of a node; GPU local i uses NIC i * nics // gpus_per_node. None: one per GPU
    nic_collective_efficiency: float | None = None  # NCCL bandwidth / nic_GBps over the NIC; None: collective_efficiency
    internode: str = "direct"  # how a token crosses nodes: one of INTERNODE_ROUTES
    # a kernel node's launch inside a CUDA graph replay (the fused forward runs as one); None: kernel_launch_us
    graph_launch_us: float | None = None
    # the graphed fused forward without its two layer kernels at a few tokens (pack, plan, barriers, combine and
    # the graph's launch, moving next to nothing); None: its small kernels cost a launch each
    forward_fixed_us: float | None = None
    # the same forward with the copy engine moving the rows (comm_blocks0 = 0: eager, a host sync before the copies);
    # None: host_sync_us and a launch per small kernel
    copy_engine_fixed_us: float | None = None
    # the host's time for each further torch.mm of B0's per-expert loop (expert_gemm "loop"); None: kernel_launch_us
    loop_mm_host_us: float | None = None
    # forward_fixed_us and copy_engine_fixed_us with each call enqueued behind a device spin and started by an
    # all-reduce on the GPUs (bench --align queued): no graph launch, no host's lateness in them. Where present
    # the simulator prices the fused forward with them (a layer inside a model's forward); None: the host figures
    forward_fixed_queued_us: float | None = None
    copy_engine_fixed_queued_us: float | None = None
    # the copy-engine forward's fixed time where its layers outlast the host's launches after layer0's (calibrate: a
    # device spin in their place): the part of copy_engine_fixed_us before the layers; the rest runs beside them.
    # None: all of copy_engine_fixed_us before the layers
    copy_engine_covered_us: float | None = None
    copy_engine_covered_queued_us: float | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    # a measured profile's tables (comet_dse/measured.py); None: every cost from the figures above
    measured: MeasuredTables | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "sources", "measured") or f.name in OPTIONAL_FIGURE_DEFAULTS:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) or value < 0:
                raise UserError(f"hardware.{f.name}", f"must be a number >= 0, got {value!r}")
        for name in ("sms", "gpus_per_node"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"hardware.{name}", f"must be a positive integer, got {getattr(self, name)!r}")
        for name in ("gemm_tflops", "hbm_GBps", "link_GBps", "comm_block_GBps", "nic_GBps", "comm_saturation"):
            if getattr(self, name) <= 0:
                raise UserError(f"hardware.{name}", "must be > 0")
        if not 0 < self.collective_efficiency <= 1:
            raise UserError("hardware.collective_efficiency", f"must be in (0, 1], got {self.collective_efficiency}")
        for name in ("graph_launch_us", "forward_fixed_us", "copy_engine_fixed_us", "loop_mm_host_us",
                     "forward_fixed_queued_us", "copy_engine_fixed_queued_us", "copy_engine_covered_us",
                     "copy_engine_covered_queued_us"):
            g = getattr(self, name)
            if g is not None and (not isinstance(g, (int, float)) or isinstance(g, bool) or not math.isfinite(g) or g < 0):
                raise UserError(f"hardware.{name}", f"must be a number >= 0, got {g!r}")
        if self.collective_sms >= self.sms:
            raise UserError("hardware.collective_sms", f"must be < sms ({self.sms})")
        self._check_multi_node()

    def _check_multi_node(self) -> None:
        nics, g = self.nics_per_node, self.gpus_per_node
        if nics is not None and (not isinstance(nics, int) or isinstance(nics, bool) or nics < 1 or g % nics):
            # whole rails: every NIC serves the same number of GPUs
            raise UserError("hardware.nics_per_node", f"must be a positive integer that divides gpus_per_node ({g}), got {nics!r}")
        eff = self.nic_collective_efficiency
        if eff is not None and (not isinstance(eff, (int, float)) or isinstance(eff, bool) or not 0 < eff <= 1):
            raise UserError("hardware.nic_collective_efficiency", f"must be in (0, 1], got {eff!r}")
        if self.internode not in INTERNODE_ROUTES:
            raise UserError("hardware.internode", f"must be one of {', '.join(INTERNODE_ROUTES)}, got {self.internode!r}")

    @property
    def nics(self) -> int:
        """NICs per node: nics_per_node, or one per GPU."""
        return self.gpus_per_node if self.nics_per_node is None else self.nics_per_node

    @property
    def nic_efficiency(self) -> float:
        """A collective's achieved share of nic_GBps: nic_collective_efficiency, or the NVLink figure."""
        return self.collective_efficiency if self.nic_collective_efficiency is None else self.nic_collective_efficiency

    # ---- cost formulas -------------------------------------------------------------------

    def gemm_tile_ns(self, block_m: int, block_n: int, k: int, m_tiles: int, n_tiles: int, dtype_bytes: int) -> float:
        """One output tile on one SM: the slower of its FLOPs and its share of HBM traffic.

        A row tile (block_m x k) is read once per row block and shared by its n_tiles column
        tiles through L2; a weight tile (k x block_n) is shared by the expert's m_tiles row
        tiles. A partial tile costs a full one. With few rows per expert the weight stream
        dominates: that is the memory-bound small-batch regime.
        """
        flop_time = 2.0 * block_m * block_n * k / (self.gemm_tflops * 1e12 / self.sms)
        tile_bytes = (block_n * k / m_tiles + block_m * k / n_tiles) * dtype_bytes
        byte_time = tile_bytes / (self.hbm_GBps * 1e9 / self.sms)
        return max(flop_time, byte_time) * NS_PER_S

    def comm_blocks_GBps(self, blocks: int) -> float:
        """What `blocks` communication thread blocks can move over NVLink together.

        A smooth minimum of the blocks' own limit and the link, ((n c)^-p + L^-p)^(-1/p):
        with p = 4 it follows the measured push curve of GPU_NOTES.md (8/16/24/64/132 CTAs:
        124/237/314/329/346 GB/s; model 124/234/301/345/346). Bandwidth keeps rising, ever
        more slowly, with each block, so a slower link asks for more blocks to come close.
        """
        p, own, link = self.comm_saturation, blocks * self.comm_block_GBps, self.link_GBps
        low = min(own, link)
        if low == math.inf:
            return math.inf
        return low * ((own / low) ** -p + (link / low) ** -p) ** (-1.0 / p)  # scaled: no overflow at large p

    def hbm_pass_ns(self, bytes_moved: float) -> float:
        """A memory-bound pass (permute, unpermute, top-k reduce) over `bytes_moved` (read + write)."""
        return bytes_moved / (self.hbm_GBps * 1e9) * NS_PER_S

    def alltoall_ns(self, pair_bytes: np.ndarray) -> float:
        """An NCCL all-to-all over W GPUs; pair_bytes[s, d] is what GPU s sends to GPU d.

        Bottleneck model: the busiest port (NVLink or NIC, in or out) sets the time at the
        collective's achieved bandwidth, plus a fixed latency. The diagonal stays local.
        """
        nvlink, nic = self.busiest_ports(pair_bytes)
        worst = max(nvlink / (self.link_GBps * 1e9 * self.collective_efficiency),
                    nic / (self.nic_GBps * 1e9 * self.nic_efficiency))
        latency_us = self.collective_latency_us + (self.nic_latency_us if nic > 0 else 0.0)
        return worst * NS_PER_S + latency_us * 1e3

    def busiest_ports(self, pair_bytes: np.ndarray) -> tuple[float, float]:
        """Bytes through the busiest NVLink port and the busiest NIC port (a GPU's sends or its
        receives, a NIC's out or in: the directions are separate) when GPU s sends pair_bytes[s, d]
        to GPU d, each cross-node pair along `internode_routes`; the diagonal stays local."""
        world = pair_bytes.shape[0]
        node = np.arange(world) // self.gpus_per_node
        same_node = node[:, None] == node[None, :]
        intra = np.where(same_node & ~np.eye(world, dtype=bool), pair_bytes, 0.0)
        inter = np.where(~same_node, pair_bytes, 0.0)
        if self.internode == "direct" and self.nics == self.gpus_per_node:  # each GPU its own NIC, no hop
            return (float(max(intra.sum(axis=1).max(), intra.sum(axis=0).max())),
                    float(max(inter.sum(axis=1).max(), inter.sum(axis=0).max())))
        routes = self.internode_routes(world)
        nvlink_out, nvlink_in = intra.sum(axis=1), intra.sum(axis=0)
        hop = routes.hop_from >= 0
        np.add.at(nvlink_out, routes.hop_from[hop], pair_bytes[hop])
        np.add.at(nvlink_in, routes.hop_to[hop], pair_bytes[hop])
        cross = ~same_node
        nic_out, nic_in = np.zeros(routes.nic_count), np.zeros(routes.nic_count)
        np.add.at(nic_out, routes.nic_out[cross], inter[cross])
        np.add.at(nic_in, routes.nic_in[cross], inter[cross])
        return (float(max(nvlink_out.max(), nvlink_in.max())), float(max(nic_out.max(), nic_in.max())))

    def internode_routes(self, world: int) -> InternodeRoutes:
        """The NICs and the NVLink hop of every pair of ranks, as `internode` says (INTERNODE_ROUTES).

        GPU (node a, local i) sits on rail i * nics // gpus_per_node and uses that NIC of its node.
        A pair (a:i -> b:j), a != b, on rails r(i), r(j):
          direct: NIC (a, r(i)) out -> NIC (b, r(j)) in; no hop.
          rail:   NIC (a, r(i)) out -> NIC (b, r(i)) in -> NVLink b:i -> b:j   (DeepEP normal kernels)
          pxn:    NVLink a:i -> a:j -> NIC (a, r(j)) out -> NIC (b, r(j)) in   (NCCL PXN)
        No hop where r(i) == r(j) (a shared NIC reaches both GPUs), nor where the forwarding GPU
        does not exist (a partly filled last node): such a pair goes direct.
        """
        g, n = self.gpus_per_node, self.nics
        rank = np.arange(world)
        node, local = rank // g, rank % g
        rail = local * n // g
        src_node, dst_node = node[:, None], node[None, :]  # (W, 1), (1, W): broadcast to (W, W)
        src_rail, dst_rail = rail[:, None], rail[None, :]
        cross = src_node != dst_node
        nic_out = np.broadcast_to(src_node * n + src_rail, (world, world)).copy()
        nic_in = np.broadcast_to(dst_node * n + dst_rail, (world, world)).copy()
        hop_from, hop_to = np.full((world, world), -1), np.full((world, world), -1)
        forward = cross & (src_rail != dst_rail)
        src, dst = np.broadcast_to(rank[:, None], (world, world)), np.broadcast_to(rank[None, :], (world, world))
        if self.internode == "rail":  # via b:i, the destination node's GPU on the source's rail
            via = np.broadcast_to(dst_node * g + local[:, None], (world, world))
            forward &= via < world
            nic_in = np.where(forward, dst_node * n + src_rail, nic_in)
            hop_from, hop_to = np.where(forward, via, -1), np.where(forward, dst, -1)
        elif self.internode == "pxn":  # via a:j, the source node's GPU on the destination's rail
            via = np.broadcast_to(src_node * g + local[None, :], (world, world))
            forward &= via < world
            nic_out = np.where(forward, src_node * n + dst_rail, nic_out)
            hop_from, hop_to = np.where(forward, src, -1), np.where(forward, via, -1)
        nic_count = int(max(nic_out.max(initial=0), nic_in.max(initial=0))) + 1
        return InternodeRoutes(np.where(cross, nic_out, -1), np.where(cross, nic_in, -1), hop_from, hop_to, nic_count)

    def timed_as(self, align: str) -> HardwareProfile:
        """The profile that predicts a call started as `align` (ALIGNS): "queued" as it is; from a host barrier
        without the queued figures and tables, so the fused forward's fixed time and B0's plan and host chain are
        priced by the host-started timings."""
        if align not in ALIGNS:
            raise UserError("align", f"must be one of {', '.join(ALIGNS)}, got {align!r}")
        if align == "queued":
            return self
        return replace(self, forward_fixed_queued_us=None, copy_engine_fixed_queued_us=None,
                       copy_engine_covered_queued_us=None,
                       measured=None if self.measured is None else self.measured.timed_from_host())

    def to_dict(self) -> dict:
        """The figures and sources; a measured profile's tables under "measured" (absent otherwise); the
        multi-node figures only where they differ from their defaults (a profile file takes no null)."""
        out = asdict(replace(self, measured=None))
        del out["measured"]
        for name, default in OPTIONAL_FIGURE_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        if self.measured is not None:
            out["measured"] = self.measured.to_dict()
        return out

    def figures(self) -> dict:
        """Every figure, as its declared type (a JSON profile's 300 and a preset's 300.0 are one
        figure): a tuning study's identity. The name and the sources change no prediction. A measured
        profile adds its tables' digest, so a changed table is a new study; a preset's stays as it was."""
        cast = {**NUMBER_TYPES, "str": str}
        out = {f.name: cast[f.type](getattr(self, f.name)) for f in fields(self)
               if f.name not in ("name", "sources", "measured") and getattr(self, f.name) != OPTIONAL_FIGURE_DEFAULTS.get(f.name, ())}
        if self.measured is not None:
            out["measured_tables"] = self.measured.digest
        return out


@dataclass(frozen=True)
class InternodeRoutes:
    """(W, W) tables of `HardwareProfile.internode_routes`: -1 where a pair has no such step."""

    nic_out: np.ndarray  # the NIC a cross-node pair leaves by (node * nics + rail)
    nic_in: np.ndarray  # the NIC it enters by
    hop_from: np.ndarray  # its NVLink forwarding hop, GPU to GPU
    hop_to: np.ndarray
    nic_count: int  # NIC indices run 0 … nic_count - 1


_HOPPER_MEASURED = "GPU_NOTES.md, measured 2026-11-22 on 2x H200 NVLink"
_NO_TABLES = "none: every cost from the figures (a measured profile from comet-dse calibrate brings tables)"
# the later figures at their defaults (the multi-node ones never measured in this project; the graph ones
# where a profile did not measure them)
_OPTIONAL_FIGURE_SOURCES = {
    "nics_per_node": "one NIC per GPU, as DGX/HGX H100 (8 ConnectX-7 per 8 GPUs, datasheet); a JSON profile may say fewer",
    "nic_collective_efficiency": "assumed, not measured: as collective_efficiency (measured over NVLink only)",
    "internode": "direct (each GPU's own NIC); rail and pxn are the forwarding schemes of DeepEP and NCCL PXN",
    "graph_launch_us": "not measured: kernel_launch_us stands in (comet-dse calibrate times a graph's kernel nodes)",
    "forward_fixed_us": "not measured: the fused forward's small kernels cost a launch each (comet-dse calibrate times "
                        "the graphed forward without its layers)",
    "copy_engine_fixed_us": "not measured: the copy-engine variant's host sync as host_sync_us, its small kernels a "
                            "launch each (comet-dse calibrate times its forward without its layers)",
    "loop_mm_host_us": "not measured: kernel_launch_us for each further torch.mm of B0's expert loop (comet-dse "
                       "calibrate times B0's loop against its torch._grouped_mm)",
    "forward_fixed_queued_us": "not measured: forward_fixed_us, timed from a host barrier (comet-dse calibrate times "
                               "it behind a device spin too)",
    "copy_engine_fixed_queued_us": "not measured: copy_engine_fixed_us, timed from a host barrier (comet-dse "
                                   "calibrate times it behind a device spin too)",
    "copy_engine_covered_us": "not measured: all of copy_engine_fixed_us before the layers (comet-dse calibrate "
                              "times the copy-engine forward with a device spin in place of its layers)",
    "copy_engine_covered_queued_us": "not measured: copy_engine_covered_us, timed from a host barrier (comet-dse "
                                     "calibrate times it behind a device spin too)",
}
_HOPPER_SHARED = dict(
    link_latency_us=2.0,
    comm_block_GBps=15.5,
    comm_saturation=4.0,
    gpus_per_node=8,
    nic_GBps=50.0,
    nic_latency_us=5.0,
    collective_efficiency=0.74,
    collective_latency_us=15.0,
    collective_sms=16,
    host_sync_us=30.0,
    kernel_launch_us=4.0,
)
_HOPPER_SHARED_SOURCES = {
    "comm_block_GBps": f"{_HOPPER_MEASURED}: Triton push, 8 CTAs = 124 GB/s",
    "comm_saturation": f"fitted to {_HOPPER_MEASURED}: push bandwidth at 8/16/24/64/132 CTAs",
    "collective_efficiency": f"{_HOPPER_MEASURED}: NCCL all_to_all 128 MiB/rank 257 GB/s vs 346 GB/s kernel push",
    "nic_GBps": "400 Gb/s ConnectX-7 per GPU (datasheet)",
    "link_latency_us": "estimate (NVLink load-to-use + flag round trip)",
    "collective_latency_us": "estimate (NCCL launch + handshake)",
    "collective_sms": "estimate (NCCL all-to-all channels)",
    "host_sync_us": "estimate (count exchange + cudaMemcpy D2H + sync)",
    "kernel_launch_us": "estimate",
    "measured": _NO_TABLES,
    **_OPTIONAL_FIGURE_SOURCES,
}

HARDWARE_PRESETS: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        HardwareProfile(
            "h200-sxm", sms=132, gemm_tflops=790.0, hbm_GBps=4300.0, link_GBps=346.0, **_HOPPER_SHARED,
            sources={
                "sms": "datasheet", "gemm_tflops": f"{_HOPPER_MEASURED}: dense bf16 790-816 TFLOP/s",
                "hbm_GBps": f"{_HOPPER_MEASURED}: D2D copy 4.3 TB/s", "link_GBps": f"{_HOPPER_MEASURED}: Triton push 132 CTAs",
                **_HOPPER_SHARED_SOURCES,
            },
        ),
        HardwareProfile(
            "h100-sxm", sms=132, gemm_tflops=740.0, hbm_GBps=3015.0, link_GBps=346.0, **_HOPPER_SHARED,
            sources={
                "sms": "datasheet", "gemm_tflops": "datasheet 989 TFLOP/s dense bf16 x 0.75 (H200 measured 0.80; less HBM)",
                "hbm_GBps": "datasheet 3.35 TB/s x 0.9 (H200 copy efficiency)",
                "link_GBps": "NVLink4 as H200: 450 GB/s per direction datasheet, 346 measured on H200", **_HOPPER_SHARED_SOURCES,
            },
        ),
        HardwareProfile(
            "h800", sms=132, gemm_tflops=740.0, hbm_GBps=3015.0, link_GBps=154.0, **_HOPPER_SHARED,
            sources={
                "sms": "datasheet (H100 silicon)", "gemm_tflops": "as h100-sxm",
                "hbm_GBps": "datasheet 3.35 TB/s x 0.9",
                "link_GBps": "datasheet 400 GB/s bidirectional = 200 per direction x 0.77 (H200 measured 346/450)",
                **_HOPPER_SHARED_SOURCES,
            },
        ),
        HardwareProfile(
            "l20", sms=92, gemm_tflops=96.0, hbm_GBps=778.0, link_GBps=25.0, link_latency_us=5.0,
            comm_block_GBps=15.5, comm_saturation=4.0, gpus_per_node=8, nic_GBps=25.0, nic_latency_us=8.0,
            collective_efficiency=0.8, collective_latency_us=20.0, collective_sms=16, host_sync_us=30.0,
            kernel_launch_us=4.0,
            sources={
                "sms": "datasheet", "gemm_tflops": "datasheet 119.5 TFLOP/s dense bf16 x 0.8",
                "hbm_GBps": "datasheet 864 GB/s GDDR6 x 0.9", "link_GBps": "Comet paper: ~25 GB/s GPU-to-GPU over PCIe",
                "comm_block_GBps": "assumed as Hopper (not measured)", "comm_saturation": "assumed as Hopper", "nic_GBps": "200 Gb/s NIC per GPU (assumed)",
                "link_latency_us": "estimate (PCIe peer access)", "collective_efficiency": "estimate",
                "collective_latency_us": "estimate", "collective_sms": "estimate",
                "host_sync_us": "estimate", "kernel_launch_us": "estimate", "measured": _NO_TABLES,
                **_OPTIONAL_FIGURE_SOURCES, "nics_per_node": "one NIC per GPU (assumed, not measured)",
            },
        ),
    )
}


# bounds on a JSON profile's figures: inf or 1e-300 GB/s would be taken at face value and give
# infinite or 300-digit latencies (presets and tests may still use inf for "free" links)
JSON_FIGURE_MAX = 1e6
JSON_RATE_MIN = 1e-3  # TFLOP/s or GB/s


def check_json_figures(path: Path, data: dict, prefix: str = "hardware") -> None:
    """Types and ranges of a profile file's entries, each error naming its key (`prefix`.key)."""
    if "name" in data and not isinstance(data["name"], str):
        raise UserError(f"{prefix}.name", f"must be a string in {path}, got {data['name']!r}")
    sources = data.get("sources", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise UserError(f"{prefix}.sources", f"must be an object of figure -> source text in {path}, got {sources!r}")
    rates = {"gemm_tflops", "hbm_GBps", "link_GBps", "comm_block_GBps", "nic_GBps"}
    for key, value in data.items():
        if key in ("name", "sources", "base"):
            continue
        if key == "internode":  # the one figure that is a word
            if value not in INTERNODE_ROUTES:
                raise UserError(f"{prefix}.{key}", f"must be one of {', '.join(INTERNODE_ROUTES)} in {path}, got {value!r}")
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise UserError(f"{prefix}.{key}", f"must be a finite number in {path}, got {value!r}")
        low = JSON_RATE_MIN if key in rates else 0.0
        if not low <= value <= JSON_FIGURE_MAX:
            raise UserError(f"{prefix}.{key}", f"must be in [{low:g}, {JSON_FIGURE_MAX:g}] in {path}, got {value!r}")


def load_hardware(path: str | Path) -> HardwareProfile:
    """A JSON profile; `"base": "<preset>"` takes the preset's figures and overrides the rest. A
    measured profile (a "format" key, written by `comet-dse calibrate`) is read by comet_dse/measured.py."""
    path = Path(path)
    data = read_json_object(path, "--hardware")
    if "format" in data:
        from comet_dse.measured import load_measured

        return load_measured(path, data)
    known = {f.name for f in fields(HardwareProfile)} - {"measured"}
    unknown = set(data) - known - {"base"}
    if unknown:
        raise UserError("--hardware", f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(known | {'base'})}")
    check_json_figures(path, data)
    base_name = data.pop("base", None)
    if base_name is not None:
        if not isinstance(base_name, str) or base_name not in HARDWARE_PRESETS:
            raise UserError("hardware.base", f"unknown preset {base_name!r}; choose one of {', '.join(HARDWARE_PRESETS)}")
        base = HARDWARE_PRESETS[base_name]
        sources = {**base.sources, **{k: f"{path}" for k in data if k != "sources"}, **data.pop("sources", {})}
        return replace(base, **{"name": data.pop("name", path.stem), **data, "sources": sources})
    missing = known - set(data) - {"sources"}
    if missing:
        raise UserError("--hardware", f"{path}: missing keys {sorted(missing)} (or give \"base\": a preset name)")
    return HardwareProfile(**data)


def resolve_hardware(name_or_path: str, gpus_per_node: int | None = None, internode: str | None = None) -> HardwareProfile:
    """A preset or a profile .json; `gpus_per_node` (the --gpus-per-node option) overrides its node size,
    `internode` (--internode) its cross-node route."""
    if name_or_path in HARDWARE_PRESETS:
        profile = HARDWARE_PRESETS[name_or_path]
    elif name_or_path.endswith(".json") or Path(name_or_path).exists():
        profile = load_hardware(name_or_path)
    else:
        raise UserError("--hardware", f"unknown preset {name_or_path!r}; choose one of {', '.join(HARDWARE_PRESETS)} or give a profile .json")
    if internode is not None:
        if internode not in INTERNODE_ROUTES:
            raise UserError("--internode", f"must be one of {', '.join(INTERNODE_ROUTES)}, got {internode!r}")
        profile = replace(profile, internode=internode, sources={**profile.sources, "internode": "--internode"})
    if gpus_per_node is None:
        return profile
    if gpus_per_node < 1:
        raise UserError("--gpus-per-node", f"must be an integer >= 1, got {gpus_per_node}")
    return replace(profile, gpus_per_node=gpus_per_node, sources={**profile.sources, "gpus_per_node": "--gpus-per-node"})


def check_node_size(world: int, hardware: HardwareProfile, field: str = "--gpus-per-node") -> None:
    """The ranks fill whole nodes, or fit in one: the simulator numbers nodes rank // gpus_per_node,
    so 12 ranks on nodes of 8 would leave a half-filled node with its own NICs."""
    n = hardware.gpus_per_node
    if world > n and world % n:
        raise UserError(field, f"{world} GPUs (EP x TP) must fit in one node or fill whole nodes: "
                               f"gpus_per_node must be >= {world} or divide it, got {n}")
