"""What every command launched once per GPU (`bench`, `calibrate`) checks before it imports the kernels."""

from __future__ import annotations

import os

from comet_dse.errors import UserError

# NVLink SHARP (multicast) stays off on the lent machines: GPU_NOTES.md and the device notes say why
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def check_gpu_launch(command: str) -> None:
    """Launched by torchrun, on GPUs or in Triton's CPU interpreter; one line naming the command otherwise."""
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        raise UserError(command, f"launch it once per GPU: torchrun --nproc-per-node N -m comet_dse.cli {command} ...")
    for var, value in NO_MULTICAST.items():
        os.environ.setdefault(var, value)
    import torch

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        raise UserError(command, "no GPU here: set TRITON_INTERPRET=1 to run the kernels in Triton's CPU interpreter")
