"""What the commands launched once per GPU (`bench`, `calibrate`) share: their list and tile options,
the launch checks made before the kernels are imported, and launching their own ranks."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from comet_dse.errors import UserError

# NVLink SHARP (multicast) stays off on the lent machines: GPU_NOTES.md and the device notes say why
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def parse_ints(text: str, flag: str, minimum: int = 1) -> list[int]:
    """Integers >= minimum from 'a,b,c', in the order given."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(flag, f"must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < minimum:
        raise UserError(flag, f"must be integers >= {minimum}, got {text!r}")
    return values


def parse_choices(text: str, flag: str, allowed: tuple[str, ...]) -> list[str]:
    """Values of `allowed` from 'a,b', in the order given."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in allowed for v in values):
        raise UserError(flag, f"must be comma-separated values of {', '.join(allowed)}, got {text!r}")
    return values


def check_tile_size(size: int, flag: str) -> None:
    if size < 16 or size & (size - 1):
        raise UserError(flag, f"tile sizes must be powers of two >= 16, got {size}")


def parse_tile(text: str) -> tuple[int, int]:
    """'BMxBN' -> (BM, BN), both powers of two >= 16."""
    try:
        block_m, block_n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError("--tile", f"expected BMxBN such as 128x128, got {text!r}") from None
    for size in (block_m, block_n):
        check_tile_size(size, "--tile")
    return block_m, block_n


def check_gpu_launch(command: str) -> None:
    """Launched by torchrun, on GPUs or in Triton's CPU interpreter; one line naming the command otherwise."""
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        raise UserError(command, f"launch it once per GPU: torchrun --nproc-per-node N -m comet_dse.cli {command} ..., "
                                 f"or add --gpus N to launch the ranks itself")
    for var, value in NO_MULTICAST.items():
        os.environ.setdefault(var, value)
    import torch

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        raise UserError(command, "no GPU here: set TRITON_INTERPRET=1 to run the kernels in Triton's CPU interpreter")


def add_gpus_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=int, metavar="N",
                        help="launch N ranks itself (torchrun --standalone, one per GPU; in Triton's interpreter, "
                             "N CPU ranks) (default: none, run under torchrun)")


def relaunch_per_gpu(command: str, args: argparse.Namespace) -> int | None:
    """With --gpus N outside torchrun, run this same command line under `torchrun --standalone
    --nproc-per-node N` (its inputs were checked here first) and return its exit code; else None."""
    gpus = getattr(args, "gpus", None)
    if gpus is None:
        return None
    if gpus < 1:
        raise UserError("--gpus", f"must be an integer >= 1, got {gpus}")
    if "RANK" in os.environ:  # already one rank of a launch: the option has done its work
        return None
    rest, words, skip = [], list(args.argv), False
    for i, word in enumerate(words):  # the command line without --gpus N / --gpus=N
        if skip:
            skip = False
        elif word == "--gpus":
            skip = True
        elif not word.startswith("--gpus="):
            rest.append(word)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus),
              "-m", "comet_dse.cli", *rest]
    return subprocess.run(launch, env={**os.environ, **NO_MULTICAST}).returncode
