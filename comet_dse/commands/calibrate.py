"""`comet-dse calibrate`: measure on the GPUs at hand what the simulator's cost model needs and
write a measured hardware profile ("comet-dse-profile/1") under results/hardware/, launched once
per GPU:

    torchrun --nproc-per-node 2 -m comet_dse.cli calibrate --out results/hardware [--quick]

Tables: grouped GEMM time over rows per expert for the models' (K, N) pairs (torch._grouped_mm at
all SMs; the fused kernels' own GEMM code at the SM counts the schedules leave for compute), the
memory-bound passes B0 runs (GB/s), NCCL all_to_all_single over message sizes, the fused kernels'
copy code over communication blocks (pull and push) and the copy engine, and the GEMM's slowdown
while copies run beside it. Figures: the dense GEMM rate, HBM copy bandwidth, link bandwidth, the
fitted collective latency and efficiency, the communication-block curve, the host sync and the
kernel launch, each with the line saying what measured it.

One GPU (world size 1) gives a partial profile: no all-to-all, peer copies or contention (the
simulator prices one-GPU workloads on it and refuses more GPUs until an "alltoall" table is there).
Every input is checked before any GPU work; only torch, triton, numpy and the package are imported (no
simulator dependencies).
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from comet_dse.commands.launch import add_gpus_argument, check_gpu_launch, parse_ints, parse_tile, relaunch_per_gpu
from comet_dse.errors import UserError

DEFAULT_MODELS = "qwen2-moe-2.7b,mixtral-8x7b"
# 16 ... 8192 rows per expert, at octaves and half-octaves: the simulator interpolates between them, and
# between octaves alone (before run 69) a left-out row count came out 4.7% off on average (3.1% on half-octaves),
# up to 68%, most at 128-256 rows where the time turns from streaming the weights to computing (gemm_interpolation.py)
FULL_ROWS = sorted({16 << i for i in range(10)} | {48 << i for i in range(8)})  # multiples of 16
QUICK_ROWS = [16, 128, 1024, 8192]
FULL_COMM_BLOCKS = [1, 8, 16, 32, 48]  # communication blocks the fused schedules take from the SMs (the sweeps reach 48)
QUICK_COMM_BLOCKS = [16]
FULL_COPY_BLOCKS = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 132]
QUICK_COPY_BLOCKS = [1, 4, 16, 32, 132]
MIN_ALLTOALL_BYTES = 4096
MAX_ALLTOALL_BYTES = 256 << 20
FULL_ALLTOALL_STEP, QUICK_ALLTOALL_STEP = 4, 16  # sizes grow by this factor from 4 KiB
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# steps --only re-measures into an existing profile (--update): each writes tables of its own and needs no other step
UPDATE_STEPS = ("memory_passes", "layer_copies", "contention", "launch", "forward_fixed", "gemm", "power_state")
# --sustained: which GEMM tables are timed in the GPU's sustained state. On 2x H200 (run 88, one machine, one set of
# sweeps) the fused tables so timed took comet from 6.9% to 5.1% MAPE (mean error -4.9% -> +2.1%), the library's
# took sequential from 6.3% to 11.2% (B0 runs them between host syncs, exchanges and memory passes, off the cap)
SUSTAINED = ("fused", "all", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + (
        ". Launch once per GPU with torchrun; one GPU gives a partial profile (no all-to-all, peer copy or "
        "contention tables: the simulator prices one-GPU workloads on it, more only once calibrated on 2+ GPUs).")
    parser.add_argument("--out", default="results/hardware", help="folder of the profile JSON")
    add_gpus_argument(parser)
    parser.add_argument("--name", help="profile name and file stem (default: <gpu>-x<gpus>, e.g. h100-80gb-hbm3-x2)")
    parser.add_argument("--base", default="h100-sxm",
                        help="preset whose figures fill every scalar figure not measured here")
    parser.add_argument("--quick", action="store_true",
                        help="a reduced grid (4 row counts, 16 communication blocks, 5 copy block counts, 5 all-to-all "
                             "sizes, 10 runs): about 3 minutes on 2x H100 with the Triton compiles")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help="presets or HuggingFace config.json paths whose GEMM shapes to time, comma-separated")
    parser.add_argument("--rows", help="rows per expert of the GEMM tables, multiples of 16, comma-separated "
                                       "(default: 16,32,...,8192; --quick 16,128,1024,8192)")
    parser.add_argument("--comm-blocks", help="communication blocks taken from the SMs for the fused GEMM and "
                                              "contention tables, comma-separated (default: 1,8,16,32,48; --quick 16)")
    parser.add_argument("--copy-blocks", help="thread blocks of the copy table, comma-separated; counts above the "
                                              "SM count are dropped (default: 1,2,4,...,96,132; --quick 1,4,16,32,132)")
    parser.add_argument("--alltoall-max", type=int, default=MAX_ALLTOALL_BYTES,
                        help="largest all-to-all message, bytes per rank; sizes grow by 4 (--quick: 16) from 4096")
    parser.add_argument("--copy-kib", type=int, default=128 << 10, help="buffer each copy measurement moves, KiB")
    parser.add_argument("--tile", default="128x128", help="fused GEMM tile BMxBN")
    parser.add_argument("--block-k", type=int, default=64, help="fused GEMM K step, in elements")
    parser.add_argument("--programs", type=int, help="fused grid size (default: the SM count)")
    parser.add_argument("--runs", type=int, help="timed runs per figure, median kept (default 20; --quick 10)")
    parser.add_argument("--warmup", type=int, help="untimed runs first (default 3; --quick 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every input")
    parser.add_argument("--only", help=f"re-measure only these steps ({', '.join(UPDATE_STEPS)}), comma-separated, "
                                       "into the profile given by --update")
    parser.add_argument("--update", help="a measured profile JSON on as many GPUs of the same kind: --only's tables "
                                         "and figures replace its own in a new profile (--name, default "
                                         "<its name>-<steps>); the rest, and its provenance, are kept")
    parser.add_argument("--sustained", default="fused", choices=SUSTAINED,
                        help="which grouped GEMM tables are timed back to back in the GPU's sustained state (a CUDA "
                             "graph of the call replayed for 0.15 s, then the timed replays together) rather than each "
                             "launch alone behind a device spin: the fused kernels' (default: the fused forward is "
                             "one continuous stream of GEMM tiles, at the power cap in a sweep), all, or none")


@dataclass
class GemmShape:
    """One grouped GEMM of a model at EP = the launched world size."""

    model: str
    K: int
    N: int
    swiglu: bool
    experts: int  # experts on one GPU


@dataclass
class Settings:
    models: list  # ModelConfig
    world: int
    rows: list[int]
    comm_blocks: list[int]
    copy_blocks: list[int]
    alltoall_sizes: list[int]
    copy_bytes: int
    block_m: int
    block_n: int
    block_k: int
    programs: int | None
    runs: int
    warmup: int
    seed: int
    quick: bool
    base: str
    name: str | None
    out: Path
    shapes: list[GemmShape] = field(default_factory=list)
    only: list[str] | None = None  # the steps to run (--only); None: all
    update: dict | None = None  # the profile they go into (--update)
    sustained: str = "fused"  # which GEMM tables are timed back to back in the GPU's sustained state (--sustained)


def _ints(text: str, flag: str, minimum: int = 1) -> list[int]:
    """Sorted distinct integers >= minimum from 'a,b,c' (the axis of a table)."""
    values = parse_ints(text, flag, minimum)
    if len(set(values)) != len(values):
        raise UserError(flag, f"lists a value twice: {text!r}")
    return sorted(values)


def _models(text: str, world: int, block_n: int) -> tuple[list, list[GemmShape]]:
    from comet_dse.models import resolve_model

    models, shapes = [], []
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise UserError("--models", "give at least one model")
    for name in names:
        try:
            m = resolve_model(name)
        except UserError as exc:
            raise UserError("--models", exc.message) from None
        if m.num_experts % world:
            raise UserError("--models", f"{m.name}: {m.num_experts} experts do not divide over {world} GPUs")
        if m.hidden % 16 or m.ffn % 16:
            raise UserError("--models", f"{m.name}: H={m.hidden} and F={m.ffn} must be multiples of 16")
        if m.hidden % block_n:
            raise UserError("--tile", f"{m.name}: layer1's tile width {block_n} must divide H={m.hidden}")
        local = m.num_experts // world
        if any((m2.num_experts // world, m2.hidden, m2.ffn) == (local, m.hidden, m.ffn) for m2 in models):
            continue  # the same GEMMs as a model already listed
        models.append(m)
        shapes += [GemmShape(m.name, m.hidden, m.ffn, True, local), GemmShape(m.name, m.ffn, m.hidden, False, local)]
    return models, shapes


def _alltoall_sizes(largest: int, step: int) -> list[int]:
    if largest < 2 * MIN_ALLTOALL_BYTES or largest & (largest - 1):
        raise UserError("--alltoall-max", f"must be a power of two >= {2 * MIN_ALLTOALL_BYTES}, got {largest}")
    sizes = [MIN_ALLTOALL_BYTES]
    while sizes[-1] * step <= largest:
        sizes.append(sizes[-1] * step)
    if sizes[-1] != largest:
        sizes.append(largest)  # the largest size always measured
    return sizes


def settings(args: argparse.Namespace) -> Settings:
    """Every input checked before any GPU work."""
    if args.gpus is not None and args.gpus < 1:
        raise UserError("--gpus", f"must be an integer >= 1, got {args.gpus}")
    # the ranks it will run on: --gpus where it launches them itself, else torchrun's
    world = args.gpus if args.gpus is not None and "RANK" not in os.environ else int(os.environ.get("WORLD_SIZE", "1"))
    quick = args.quick
    rows = _ints(args.rows, "--rows") if args.rows else (QUICK_ROWS if quick else FULL_ROWS)
    if any(r % 16 for r in rows):
        raise UserError("--rows", f"must be multiples of 16 (torch._grouped_mm's group alignment), got {args.rows!r}")
    if len(rows) < 2:
        raise UserError("--rows", f"needs at least 2 row counts for a curve, got {args.rows!r}")
    comm_blocks = _ints(args.comm_blocks, "--comm-blocks") if args.comm_blocks else (
        QUICK_COMM_BLOCKS if quick else FULL_COMM_BLOCKS)
    copy_blocks = _ints(args.copy_blocks, "--copy-blocks") if args.copy_blocks else (
        QUICK_COPY_BLOCKS if quick else FULL_COPY_BLOCKS)
    if len(copy_blocks) < 2:
        raise UserError("--copy-blocks", f"needs at least 2 block counts for a curve, got {args.copy_blocks!r}")
    sizes = _alltoall_sizes(args.alltoall_max, QUICK_ALLTOALL_STEP if quick else FULL_ALLTOALL_STEP)
    block_m, block_n = parse_tile(args.tile)
    if args.block_k < 16 or args.block_k & (args.block_k - 1):
        raise UserError("--block-k", f"must be a power of two >= 16, got {args.block_k}")
    if args.programs is not None and args.programs <= max(comm_blocks):
        raise UserError("--programs", f"must exceed the largest --comm-blocks ({max(comm_blocks)}), got {args.programs}")
    if args.copy_kib < 1:
        raise UserError("--copy-kib", f"must be >= 1, got {args.copy_kib}")
    runs = args.runs if args.runs is not None else (10 if quick else 20)
    warmup = args.warmup if args.warmup is not None else (2 if quick else 3)
    if runs < 1:
        raise UserError("--runs", f"must be >= 1, got {runs}")
    if warmup < 0:
        raise UserError("--warmup", f"must be >= 0, got {warmup}")
    from comet_dse.hardware import HARDWARE_PRESETS

    if args.base not in HARDWARE_PRESETS:
        raise UserError("--base", f"unknown preset {args.base!r}; choose one of {', '.join(HARDWARE_PRESETS)}")
    if args.name is not None and not NAME_PATTERN.fullmatch(args.name):
        raise UserError("--name", f"must be letters, digits, '.', '_' or '-' (a file stem), got {args.name!r}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError("--out", f"{out} exists and is not a directory")
    from comet_dse.files import check_writable

    check_writable(out / f"{args.name or 'profile'}.json", "--out", make_folders=True)  # the default name: the same folder
    models, shapes = _models(args.models, world, block_n)
    only, update = _update(args, world)
    name = args.name or (update and f"{update['name']}-{'-'.join(only)}")
    return Settings(models, world, rows, comm_blocks, copy_blocks, sizes, args.copy_kib << 10, block_m, block_n,
                    args.block_k, args.programs, runs, warmup, args.seed, quick, args.base, name, out, shapes, only, update,
                    args.sustained)


def _update(args: argparse.Namespace, world: int) -> tuple[list[str] | None, dict | None]:
    """--only and --update, which go together: the steps (known, in the order given) and the profile read."""
    if (args.only is None) != (args.update is None):
        raise UserError("--only" if args.only is None else "--update", "--only and --update go together")
    if args.only is None:
        return None, None
    steps = [v.strip() for v in args.only.split(",") if v.strip()]
    unknown = [v for v in steps if v not in UPDATE_STEPS]
    if not steps or unknown or len(set(steps)) != len(steps):
        raise UserError("--only", f"must list distinct steps of {', '.join(UPDATE_STEPS)}, got {args.only!r}")
    from comet_dse.files import read_json_object
    from comet_dse.kernels.calibration import ProfileError, check_profile

    profile = read_json_object(args.update, "--update")
    try:
        check_profile(profile)
    except ProfileError as exc:
        raise UserError("--update", f"{args.update}: {exc}") from None
    if profile["gpus"] != world:
        raise UserError("--update", f"{args.update} was measured on {profile['gpus']} GPUs, this run has {world}")
    return steps, profile


def run(args: argparse.Namespace) -> int:
    s = settings(args)
    relaunched = relaunch_per_gpu("calibrate", args)
    if relaunched is not None:
        return relaunched
    check_gpu_launch("calibrate")
    from comet_dse.kernels.calibration import Calibration, ProfileError, check_profile

    runner = Calibration(s)
    try:
        profile = runner.run_all()
    finally:
        runner.close()
    if profile is None:  # not rank 0
        return 0
    if s.update is not None:
        from comet_dse.kernels.calibration import merge_profile

        measured_on, wanted = profile["provenance"]["gpu"], s.update["provenance"]["gpu"]
        if measured_on != wanted:  # known only once measured: rank 0 says it, as every user mistake, on stderr
            raise UserError("--update", f"{args.update} was measured on {wanted}, this run on {measured_on}: not written")
        profile = merge_profile(s.update, profile, s.only)
    try:
        check_profile(profile)
        if "alltoall" in profile["tables"]:  # complete: the simulator must read it as written
            from comet_dse.measured import load_measured

            load_measured(s.out / f"{profile['name']}.json", profile)
    except (ProfileError, UserError) as exc:  # a bug of this command, not a user mistake: nothing is written
        print(f"comet-dse: calibrate measured an invalid profile, not written: {exc}")
        return 1
    from comet_dse.files import json_text, write_text_atomic

    path = write_text_atomic(s.out / f"{profile['name']}.json", json_text(profile))
    # this run's notes: a merged profile's are its update's, the base's being the earlier run's
    notes = profile["provenance"]["updates"][-1]["notes"] if s.update is not None else profile["provenance"].get("notes", [])
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {path}")
    return 0
