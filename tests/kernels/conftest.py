"""Kernel tests run on the CPU through Triton's interpreter unless a GPU is present.

TRITON_INTERPRET must be set before triton is imported. The interpreter computes bf16
wrongly (GPU_NOTES.md), so CPU tests use fp16 / fp32.
"""

import os

try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # the kernel tests skip themselves
    pass
