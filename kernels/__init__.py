"""Fused Triton MoE kernels and torch baselines for Hopper GPUs (issue 4). Nothing here yet."""
