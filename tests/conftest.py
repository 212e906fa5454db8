"""Shared small workloads and hardware for the tests (all CPU, seconds at most)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from comet_dse.hardware import HARDWARE_PRESETS, HardwareProfile
from comet_dse.models import MODEL_PRESETS, ModelConfig
from comet_dse.workload import Workload


def infinite_links(hw: HardwareProfile) -> HardwareProfile:
    return replace(hw, link_GBps=math.inf, nic_GBps=math.inf, comm_block_GBps=math.inf, link_latency_us=0.0,
                   nic_latency_us=0.0, collective_latency_us=0.0)


# config.json files as transformers writes them, one per MoE family (fixtures/hf_configs/make_configs.py)
HF_CONFIGS = Path(__file__).parent / "fixtures" / "hf_configs"


def ep_for(experts: int) -> int:
    """The largest power of two <= 8 that divides E: an EP every fixture config can run at."""
    return next(ep for ep in (8, 4, 2, 1) if experts % ep == 0)


@pytest.fixture
def h800() -> HardwareProfile:
    return HARDWARE_PRESETS["h800"]


@pytest.fixture
def mixtral_small() -> Workload:
    return Workload(MODEL_PRESETS["mixtral-8x7b"], 1024, 8)


@pytest.fixture
def qwen_small() -> Workload:
    return Workload(MODEL_PRESETS["qwen2-moe-2.7b"], 2048, 8)


# ---- the hand-sized case: 2 ranks, 1 expert each, 2x2 tiles per GEMM ----------------------

HAND_MODEL = ModelConfig("hand", num_experts=2, top_k=1, hidden=256, ffn=128, num_layers=1)


def hand_hardware() -> HardwareProfile:
    """Round numbers: a GEMM0 tile (128x128x256) takes 1000 ns on one SM, a GEMM1 tile 500 ns,
    NVLink moves 64 B/ns, one comm block 16 B/ns with a hard saturation, HBM passes ~1 ns."""
    return HardwareProfile(
        name="hand", sms=4, gemm_tflops=4 * 2 * 128 * 128 * 256 / 1000 / 1e3, hbm_GBps=262144.0,
        link_GBps=64.0, link_latency_us=1.0, comm_block_GBps=16.0, comm_saturation=1e6, gpus_per_node=8,
        nic_GBps=64.0, nic_latency_us=1.0, collective_efficiency=1.0, collective_latency_us=1.0,
        collective_sms=1, host_sync_us=1.0, kernel_launch_us=0.0,
    )


@pytest.fixture
def hand_case(tmp_path) -> tuple[Workload, HardwareProfile]:
    # each rank: 128 tokens to expert 0 (rank 0), 128 to expert 1 (rank 1)
    trace = np.array([[0]] * 128 + [[1]] * 128, dtype=np.int64)
    path = tmp_path / "hand.npy"
    np.save(path, trace)
    return Workload(HAND_MODEL, 256, 2, routing=f"trace:{path}"), hand_hardware()


def run_ranks(cmd: list[str], world: int, timeout: float = 600, **env: str) -> list[tuple[int, str, str]]:
    """`cmd` once per rank as torchrun would start it on the CPU (gloo, Triton's interpreter, one thread),
    `env` added; every rank's (exit code, stdout, stderr). Past `timeout` every rank is killed before the
    TimeoutExpired goes up: no rank outlives its test (a hung pair kept both cores busy for half an hour)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(cmd, env={**os.environ, "TRITON_INTERPRET": "1", "RANK": str(rank), "WORLD_SIZE": str(world),
                                        "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                        "OMP_NUM_THREADS": "1", **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(world)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]
