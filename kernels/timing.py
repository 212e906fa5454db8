"""What every GPU measurement records: the median time of a callable (CUDA events on a GPU,
wall clock on the CPU), in microseconds, and the environment it ran in."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from comet_dse.files import json_text


def join_ranks() -> tuple[bool, torch.device]:
    """This process's GPU (LOCAL_RANK, as torchrun sets it) and the default process group: NCCL on
    GPUs, gloo on CPUs (the interpreter). Returns (cuda, device)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return cuda, torch.device("cuda") if cuda else torch.device("cpu")


NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def join_gpus() -> tuple[int, int]:
    """join_ranks for a GPU script launched by torchrun, NVLink multicast off (the lent machines'
    drivers hang on it: shared/GPU_NOTES.md); (rank, world)."""
    for var, value in NO_MULTICAST.items():
        os.environ.setdefault(var, value)
    join_ranks()
    return dist.get_rank(), dist.get_world_size()


# ~500 µs at 1.98 GHz: the GPU is still busy when the timed launch is enqueued. A fused-layer launch
# took 35-130 µs of host time on the lent hosts (its two TMA descriptors and ~30 arguments): the old
# ~50 µs spin left the rest of it in the layer's figures (results/measurements/ep2_h200/copy_ladder/)
SPIN_CYCLES = 1_000_000


def spin_device() -> None:
    """Keep the GPU busy ~500 µs (nothing on the CPU): a launch timed after it is enqueued before the GPU
    reaches it, so its host time stays out of its figure."""
    if torch.cuda.is_available():
        torch.cuda._sleep(SPIN_CYCLES)


def line_up(token: torch.Tensor, queued: bool) -> None:
    """Before a timed call on several GPUs, after a host barrier: a one-element all-reduce, enqueued and not waited
    for, so the GPUs leave it together whichever host left the barrier last; `queued`: behind a device spin, so the
    timed call is enqueued before the GPUs reach it and starts at once (as inside a model's forward) instead of
    when its host has launched it. From a host barrier alone, run 102's repeats of one fused configuration were
    2-18% apart (the barrier kernels waited for the later host); queued, within 0.5%."""
    if queued:
        spin_device()
    dist.all_reduce(token)


SUSTAIN_S = 0.15  # how long a sustained timing runs its call before the timed replays


def sustained_us(fn: Callable[[], object], runs: int = 20, calls: int = 1, sustain_s: float = SUSTAIN_S) -> float:
    """µs per call of `fn` in the GPU's sustained state: `calls` calls captured in one CUDA graph, replayed back to
    back for `sustain_s`, then `runs` replays timed together (no host gap, no spin). Under a bench sweep's load the
    lent H100s and H200s sit at their 700 W cap with the SM clock down from 1980 MHz to a median ~1600 (runs 86-87),
    where one call behind an idle spin runs at boost clocks. On the CPU: median_us of `fn` over its calls (the
    interpreter has no graphs)."""
    if not torch.cuda.is_available():
        return median_us(fn, runs=runs, warmup=1) / calls
    graph, _ = capture_graph(fn)
    end = time.perf_counter() + sustain_s
    replays = 0
    while time.perf_counter() < end:
        graph.replay()
        replays += 1
        if replays % 8 == 0:
            torch.cuda.synchronize()  # the host stays a few replays ahead, never seconds
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(runs):
        graph.replay()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) * 1e3 / (runs * calls)


def capture_graph(fn: Callable[[], object], warmup: int = 1,
                  device: torch.device | None = None) -> tuple[torch.cuda.CUDAGraph, object]:
    """fn captured in a CUDA graph after `warmup` calls on a side stream of `device` (default: the current one),
    as torch asks of a capture; the graph and what the captured call returned (the tensors a replay writes)."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def median_us(fn: Callable[[], object], runs: int = 20, warmup: int = 3, before_each: Callable[[], object] | None = None) -> float:
    """Warm up, then time `runs` calls and take the median. `before_each` (e.g. a barrier, or a reset the call
    needs) runs untimed before every call, warm-up calls included."""
    for _ in range(warmup):
        if before_each is not None:
            before_each()
        fn()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        if before_each is not None:
            before_each()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def environment(command: str | None = None) -> dict:
    """GPU, driver, versions, date and the command line, for a measurement's JSON."""
    import triton

    cuda = torch.cuda.is_available()
    driver = ""
    if cuda:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip().splitlines()[0]
    return {"gpu": torch.cuda.get_device_name() if cuda else "cpu", "driver": driver, "torch": torch.__version__,
            "triton": triton.__version__, "command": command or " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_and_leave(out: str | Path, fields: dict) -> None:
    """The end of a GPU script launched by torchrun: rank 0 writes environment() and `fields` as JSON to `out` (its
    folder made), then every rank leaves the process group together."""
    if dist.get_rank() == 0:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json_text({**environment(), **fields}))
    dist.barrier()
    dist.destroy_process_group()
