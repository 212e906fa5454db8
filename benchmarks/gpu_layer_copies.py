"""Why the fused layer's communication blocks move less than the bare copy code: layer0 (pull) and
layer1 (push) of a FusedMoE in COMM_ONLY mode, as calibrate's layer_comm_blocks times them, with
the grid varied (every SM: ~120 compute blocks poll their flags beside the copies; n + 4 programs:
almost none do) and the copy step varied (`copy_elems`: bytes in flight per block and step).

    torchrun --nproc-per-node 2 benchmarks/gpu_layer_copies.py --out results/measurements/layer_copies.json

Rows are round-robin over the experts (top-1), `--rows` per local expert and rank, as calibrate.
GB/s = bytes to peers / median launch time, slowest rank. Imports only torch, triton and the package.
No device spin comes before a timed launch, so a layer launch's host time (35-130 µs on the lent
hosts) is in these figures: `gpu_copy_ladder.py` times the same launches behind a spin.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.distributed as dist
from comet_dse.kernels.bench_runner import bench_inputs
from comet_dse.kernels.calibration import push_once
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE
from comet_dse.kernels.fused_moe import COMM_ONLY
from comet_dse.kernels.grouped_gemm import sm_count
from comet_dse.kernels.reference import MoEWeights, round_robin_ids
from comet_dse.kernels.timing import join_gpus, median_us, write_and_leave
from comet_dse.models import ModelConfig, resolve_model


def slowest(times: list[float], device: torch.device) -> list[float]:
    """Each figure's maximum over the ranks (every rank passes as many)."""
    t = torch.tensor(times, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def round_robin_rows(model: ModelConfig, rows: int, rank: int, world: int, device: torch.device,
                     dtype: torch.dtype = torch.bfloat16) -> tuple[MoEWeights, torch.Tensor, torch.Tensor, int]:
    """This rank's local experts (random weights, seed 0) and its tokens (seed 1 + rank), top-1 and round-robin
    over every expert, `rows` per expert: (weights, ids, x, rows that go to peers)."""
    local = MoEWeights.random(model.num_experts, model.hidden, model.ffn, seed=0, device=device,
                              dtype=dtype).of_rank(rank, world)
    tokens = model.num_experts // world * rows
    ids = round_robin_ids(tokens, 1, model.num_experts, device)
    g = torch.Generator().manual_seed(1 + rank)
    x = torch.randn(tokens, model.hidden, generator=g).to(device, dtype)
    return local, ids, x, tokens - tokens // world  # every row not for this rank's experts


def layer_workloads(model: ModelConfig, tokens: list[int], rows: list[int], seed: int, rank: int, world: int,
                    device: torch.device, dtype: torch.dtype) -> list[tuple[str, MoEWeights, int, tuple]]:
    """(label, this rank's local weights, top-k, (x, ids, weights)) of each workload the layer scripts time: bench's
    routing and inputs (`seed`) at each token count, then calibrate's (top-1 round-robin, `round_robin_rows`) at each
    count of rows per local expert."""
    found = []
    if tokens:
        weights = MoEWeights.random(model.num_experts, model.hidden, model.ffn, seed=seed, device=device, dtype=dtype)
        local = weights.of_rank(rank, world)
        for n in tokens:
            (inputs,) = bench_inputs(weights, n, model.top_k, seed, rank, 1, dtype)
            found.append((f"{n} tokens", local, model.top_k, inputs))
    for n in rows:
        local, ids, x, _ = round_robin_rows(model, n, rank, world, device, dtype)
        found.append((f"round-robin {n} rows per expert", local, 1, (x, ids, torch.ones(x.shape[0], 1, device=device))))
    return found


def _copy_times(layer: FusedMoE) -> list[float]:
    """Median µs of layer0 and of layer1 in COMM_ONLY mode on the layer's last plan, slowest rank."""
    plan = layer.plan
    times = [median_us(fn, runs=20, warmup=3, before_each=dist.barrier)
             for fn in (lambda: layer._launch_layer0(plan, COMM_ONLY), lambda: push_once(layer, plan))]
    layer.check()
    return slowest(times, torch.device("cuda"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2-moe-2.7b")
    parser.add_argument("--rows", type=int, default=1024, help="rows per local expert and rank (default 1024)")
    parser.add_argument("--blocks", default="8,16,32")
    parser.add_argument("--copy-elems", default="16384,65536")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rank, world = join_gpus()
    model = resolve_model(args.model)
    local, ids, x, remote_rows = round_robin_rows(model, args.rows, rank, world, torch.device("cuda"))
    tokens = x.shape[0]
    nbytes = remote_rows * model.hidden * 2
    sms = sm_count(torch.device("cuda"))
    rows = []
    for copy_elems in (int(v) for v in args.copy_elems.split(",")):
        for n in (int(v) for v in args.blocks.split(",")):
            for programs in (sms, n + 4):
                cfg = FusedConfig(comm_blocks0=n, comm_blocks1=n, programs=programs, copy_elems=copy_elems)
                layer = FusedMoE(local, 1, tokens, config=cfg, dtype=torch.bfloat16)
                layer(x, ids, torch.ones(tokens, 1, device="cuda"), mode=COMM_ONLY)
                pull_us, push_us = _copy_times(layer)
                row = {"copy_elems": copy_elems, "comm_blocks": n, "programs": programs,
                       "pull_GBps": round(nbytes / pull_us / 1e3, 1), "push_GBps": round(nbytes / push_us / 1e3, 1)}
                rows.append(row)
                if rank == 0:
                    print(json.dumps(row), flush=True)
                del layer
                torch.cuda.empty_cache()
    write_and_leave(args.out, {"gpus": world, "model": model.name, "rows_per_expert": args.rows,
                               "bytes_to_peers": nbytes, "runs": rows})


if __name__ == "__main__":
    main()
