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

from comet_dse.errors import UserError
from comet_dse.files import read_json_object

if TYPE_CHECKING:
    from comet_dse.measured import MeasuredTables

NS_PER_S = 1e9


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
    nic_GBps: float  # inter-node, per GPU, per direction
    nic_latency_us: float
    collective_efficiency: float  # NCCL all-to-all bandwidth / link_GBps
    collective_latency_us: float  # fixed cost of one NCCL collective (launch + handshake)
    collective_sms: int  # SMs an NCCL all-to-all holds while it runs
    host_sync_us: float  # exchange of split sizes + device-to-host copy + stream sync
    kernel_launch_us: float
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    # a measured profile's tables (comet_dse/measured.py); None: every cost from the figures above
    measured: MeasuredTables | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "sources", "measured"):
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
        if self.collective_sms >= self.sms:
            raise UserError("hardware.collective_sms", f"must be < sms ({self.sms})")

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
        eff = self.collective_efficiency
        worst = max(nvlink / (self.link_GBps * 1e9 * eff), nic / (self.nic_GBps * 1e9 * eff))
        latency_us = self.collective_latency_us + (self.nic_latency_us if nic > 0 else 0.0)
        return worst * NS_PER_S + latency_us * 1e3

    def busiest_ports(self, pair_bytes: np.ndarray) -> tuple[float, float]:
        """Bytes through the busiest NVLink port and the busiest NIC port (a GPU's sends or its
        receives: the directions are separate) when GPU s sends pair_bytes[s, d] to GPU d; the
        diagonal stays local."""
        world = pair_bytes.shape[0]
        node = np.arange(world) // self.gpus_per_node
        same_node = node[:, None] == node[None, :]
        intra = np.where(same_node & ~np.eye(world, dtype=bool), pair_bytes, 0.0)
        inter = np.where(~same_node, pair_bytes, 0.0)
        return (float(max(intra.sum(axis=1).max(), intra.sum(axis=0).max())),
                float(max(inter.sum(axis=1).max(), inter.sum(axis=0).max())))

    def to_dict(self) -> dict:
        """The figures and sources; a measured profile's tables under "measured" (absent otherwise)."""
        out = asdict(replace(self, measured=None))
        del out["measured"]
        if self.measured is not None:
            out["measured"] = self.measured.to_dict()
        return out

    def figures(self) -> dict:
        """Every figure, as its declared type (a JSON profile's 300 and a preset's 300.0 are one
        figure): a tuning study's identity. The name and the sources change no prediction. A measured
        profile adds its tables' digest, so a changed table is a new study; a preset's stays as it was."""
        cast = {"int": int, "float": float}
        out = {f.name: cast[f.type](getattr(self, f.name)) for f in fields(self) if f.name not in ("name", "sources", "measured")}
        if self.measured is not None:
            out["measured_tables"] = self.measured.digest
        return out


_HOPPER_MEASURED = "GPU_NOTES.md, measured 2026-11-22 on 2x H200 NVLink"
_NO_TABLES = "none: every cost from the figures (a measured profile from comet-dse calibrate brings tables)"
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


def resolve_hardware(name_or_path: str, gpus_per_node: int | None = None) -> HardwareProfile:
    """A preset or a profile .json; `gpus_per_node` (the --gpus-per-node option) overrides its node size."""
    if name_or_path in HARDWARE_PRESETS:
        profile = HARDWARE_PRESETS[name_or_path]
    elif name_or_path.endswith(".json") or Path(name_or_path).exists():
        profile = load_hardware(name_or_path)
    else:
        raise UserError("--hardware", f"unknown preset {name_or_path!r}; choose one of {', '.join(HARDWARE_PRESETS)} or give a profile .json")
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
