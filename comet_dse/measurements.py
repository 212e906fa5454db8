"""Reading `comet-dse bench` results: every field `validate` relies on is checked up front.

A bench JSON holds the environment (`gpu`, `gpus`, ...), the layer (`model`, `shape`,
`ep`, `tp`, `dtype`) and `runs[]`, one per (tokens, fused configuration), each with
`timings_us` (`b0`, `b1_c<C>`, `fused`, ...: medians on the slowest rank). A wrong field is
a UserError naming the file and the field, so nothing is simulated from half-read input.
Standard library only, like `comet_dse.plan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from comet_dse.choices import ALIGNS
from comet_dse.errors import UserError
from comet_dse.files import read_json_object

FIELD = "--measurements"
SHAPE_KEYS = ("experts", "top_k", "hidden", "ffn")
# bench's dtype names -> bytes per element
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# The knobs of a fused run the comet schedule reads; the rest (block_k, warps, ...) it does not model.
FUSED_KNOBS = ("comm_blocks0", "comm_blocks1", "block_m", "block_n", "row_order", "n_splits")


@dataclass(frozen=True)
class BenchRun:
    index: int  # position in the file's runs[]
    tokens: int
    config: dict
    timings_us: dict[str, float]


@dataclass(frozen=True)
class BenchFile:
    path: Path
    gpu: str
    gpus: int
    model: str
    shape: dict[str, int]  # experts, top_k, hidden, ffn
    ep: int
    tp: int
    dtype_bytes: int
    runs: tuple[BenchRun, ...]
    pack: str = "kernels"  # how its fused runs did step 1 (see `fused_pack`)
    # how its per-layer figures (timings layer<i>:<variant>) were timed: "spin" behind a device spin (no host
    # time in them), None in files before it, whose per-layer figures carry each launch's host time
    layer_timing: str | None = None
    # B0's (and B1's) loop GEMM: "runs", one torch.mm per (source, expert) run of the rows as they arrived (files
    # since 2026-11-27 18:00 say so); "regroup", the rows regrouped into expert order first (files without the key)
    b0_loop: str = "regroup"
    # how each timed call started (bench --align, ALIGNS); files without the key were timed from a host barrier
    align: str = "host"


# Step 1 of the fused forward (the pairs ordered by expert) became two kernels (kernels/fused_pack.py,
# commit 8fb7fbe); bench files written since record "pack" in their fused configs. Files without it
# ran torch ops, except those written from this time on (the first runs of that commit).
PACK_KERNELS_SINCE = "2026-11-26 02:30"


def fused_pack(data: dict) -> str:
    """"kernels" or "torch ops": how a bench file's fused runs did step 1."""
    recorded = {r["config"]["pack"] for r in data["runs"] if isinstance(r, dict) and isinstance(r.get("config"), dict)
                and "pack" in r["config"]}
    if recorded:
        return recorded.pop()
    return "kernels" if str(data.get("date", "")) >= PACK_KERNELS_SINCE else "torch ops"


def _positive_int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(where, f"must be a positive integer, got {value!r}")
    return value


def _timings(value: object, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise UserError(where, "must be a non-empty object of name -> µs")
    for name, us in value.items():
        if not isinstance(us, (int, float)) or isinstance(us, bool) or not math.isfinite(us) or us <= 0:
            raise UserError(f"{where}.{name}", f"must be a positive number of µs, got {us!r}")
    return {name: float(us) for name, us in value.items()}


def _run(raw: object, index: int, where: str) -> BenchRun:
    if not isinstance(raw, dict):
        raise UserError(where, "must be an object")
    tokens = _positive_int(raw.get("tokens"), f"{where}.tokens")
    config = raw.get("config")
    timings = _timings(raw.get("timings_us"), f"{where}.timings_us")
    if config is None and "fused" not in timings:  # `bench --kind baselines`: no fused configuration
        config = {}
    if not isinstance(config, dict):
        raise UserError(f"{where}.config", f"must be an object{'' if 'fused' in timings else ' or null'}, got {config!r}")
    if "fused" in timings:  # only a fused figure needs the fused knobs
        for knob in FUSED_KNOBS:
            if knob not in config:
                raise UserError(f"{where}.config.{knob}", "is missing (needed to simulate the fused run)")
        for knob in ("comm_blocks0", "comm_blocks1"):
            value = config[knob]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(f"{where}.config.{knob}", f"must be an integer >= 0, got {value!r}")
        for knob in ("block_m", "block_n", "n_splits"):
            _positive_int(config[knob], f"{where}.config.{knob}")
        if not isinstance(config["row_order"], str):
            raise UserError(f"{where}.config.row_order", f"must be a string, got {config['row_order']!r}")
    return BenchRun(index, tokens, config, timings)


def load_bench(path: str | Path) -> BenchFile:
    """One bench result file, checked field by field."""
    path = Path(path)
    data = read_json_object(path, FIELD)
    if "runs" not in data or "shape" not in data:
        raise UserError(f"{path}", "is not a comet-dse bench result (no `runs` or `shape`)")
    where = str(path)
    for key in ("gpu", "model", "dtype"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise UserError(f"{where}: {key}", f"must be a non-empty string, got {data.get(key)!r}")
    gpus = _positive_int(data.get("gpus"), f"{where}: gpus")
    shape = data["shape"]
    if not isinstance(shape, dict):
        raise UserError(f"{where}: shape", f"must be an object with {', '.join(SHAPE_KEYS)}")
    shape = {key: _positive_int(shape.get(key), f"{where}: shape.{key}") for key in SHAPE_KEYS}
    ep = _positive_int(data.get("ep"), f"{where}: ep")
    tp = _positive_int(data.get("tp"), f"{where}: tp")
    if ep * tp != gpus:
        raise UserError(f"{where}: ep", f"ep x tp = {ep} x {tp} must equal gpus = {gpus}")
    if data["dtype"] not in DTYPE_BYTES:
        raise UserError(f"{where}: dtype", f"must be one of {', '.join(DTYPE_BYTES)}, got {data['dtype']!r}")
    runs = data["runs"]
    if not isinstance(runs, list) or not runs:
        raise UserError(f"{where}: runs", "must be a non-empty list")
    return BenchFile(
        path=path, gpu=data["gpu"], gpus=gpus, model=data["model"], shape=shape, ep=ep, tp=tp,
        dtype_bytes=DTYPE_BYTES[data["dtype"]],
        runs=tuple(_run(raw, i, f"{where}: runs[{i}]") for i, raw in enumerate(runs)), pack=fused_pack(data),
        layer_timing=data.get("layer_timing") if isinstance(data.get("layer_timing"), str) else None,
        b0_loop=_word(data, "b0_loop", B0_LOOPS, "regroup", where), align=_word(data, "align", ALIGNS, "host", where),
    )


B0_LOOPS = ("runs", "regroup")


def _word(data: dict, key: str, allowed: tuple[str, ...], default: str, where: str) -> str:
    """One of `allowed` at `key`; `default` where the file predates the key."""
    value = data.get(key, default)
    if value not in allowed:
        raise UserError(f"{where}: {key}", f"must be one of {', '.join(allowed)}, got {value!r}")
    return value


def bench_paths(paths: list[str]) -> list[Path]:
    """Files as given; a folder contributes its `bench-*.json` (not its subfolders: those
    hold superseded sweeps and variants, which are passed by name when wanted)."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            inside = sorted(path.glob("bench-*.json"))
            if not inside:
                raise UserError(FIELD, f"{path} holds no bench-*.json file")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(FIELD, f"{path} does not exist")
    return list(dict.fromkeys(found))  # a file named twice counts once
