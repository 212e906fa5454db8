"""Fused Triton MoE kernels for Hopper GPUs (fused_moe, fused_plan, fused_layer), the torch
baselines (baselines), the fp32 reference, and what `comet-dse bench` runs (bench_runner).
Imports only torch, triton and numpy: the GPU machines have no simulator dependencies."""
