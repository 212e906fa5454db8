"""The fused layer on one GPU (world size 1: every row is local): bf16 correctness on many
random routings, a stuck wait that must raise, and timings against B0.

    python benchmarks/gpu_fused_single.py --out results/measurements/fused_single_gpu.json

Only torch, triton, numpy and comet_dse.kernels are imported. With one rank there is no
communication to hide: this checks the kernels on real hardware and measures their compute
efficiency; the overlap itself needs two GPUs (benchmarks for EP=2 come with them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

for var, value in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ.setdefault(var, value)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import triton  # noqa: E402
from comet_dse.kernels.baselines import moe_sequential  # noqa: E402
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE  # noqa: E402
from comet_dse.kernels.reference import MoEWeights, reference_moe, route  # noqa: E402
from comet_dse.kernels.timing import median_us  # noqa: E402

SHAPES = {"qwen2-moe-2.7b": (64, 4, 2048, 1408), "mixtral-8x7b": (8, 2, 4096, 14336)}  # E, top-k, H, F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/measurements/fused_single_gpu.json")
    parser.add_argument("--routings", type=int, default=200)
    args = parser.parse_args()
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method="tcp://127.0.0.1:29511", rank=0, world_size=1)
    dev = torch.device("cuda")
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "checks": {}, "runs": []}
    report["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                      capture_output=True, text=True).stdout.strip()

    # ---- correctness: many random routings, bf16, small Qwen-like layer ----
    experts, top_k, hidden, ffn = 16, 4, 512, 384
    weights = MoEWeights.random(experts, hidden, ffn, seed=0, device=dev, dtype=torch.bfloat16)  # the reference sees the same weights
    layer = FusedMoE(weights, top_k, max_tokens=1024, config=FusedConfig(comm_blocks0=8, comm_blocks1=8, n_splits=4),
                     dtype=torch.bfloat16)
    worst = 0.0
    g = torch.Generator().manual_seed(1)
    for i in range(args.routings):
        tokens = int(torch.randint(1, 1025, (1,), generator=g))
        x = torch.randn(tokens, hidden, generator=g).to(dev, torch.bfloat16).float()
        if i % 4 == 0:  # adversarial: all tokens on experts 0..k-1
            ids = torch.arange(top_k, device=dev).repeat(tokens, 1)
        else:
            ids = route(x + 3 * torch.randn(tokens, hidden, generator=g).to(dev), weights.router, top_k)[0]
        w = torch.softmax(torch.randn(tokens, top_k, generator=g).to(dev), dim=-1)
        expected = reference_moe(x, weights, ids, w)
        got = layer(x, ids, w)
        worst = max(worst, ((got - expected).abs().max() / expected.abs().max()).item())
    report["checks"]["random_routings"] = {"count": args.routings, "max_rel_error": worst, "ok": worst < 3e-2}
    print("routings", report["checks"]["random_routings"], flush=True)

    stuck = FusedMoE(weights, top_k, max_tokens=64, config=FusedConfig(comm_blocks0=8, comm_blocks1=8, max_spins=10000))
    original = stuck.launch_layer0
    stuck.launch_layer0 = lambda *a, **k: original(*a, **{**k, "num_pull": 0})
    x = torch.randn(64, hidden, device=dev)
    ids, w = route(x, weights.router, top_k)
    t0 = time.perf_counter()
    try:
        stuck(x, ids, w)
        report["checks"]["stuck_wait"] = {"raised": False}
    except RuntimeError as exc:
        report["checks"]["stuck_wait"] = {"raised": True, "message": str(exc), "seconds": round(time.perf_counter() - t0, 3)}
    print("stuck", report["checks"]["stuck_wait"], flush=True)

    # ---- timings on the paper's shapes: fused vs B0 (world 1) ----
    for name, (experts, top_k, hidden, ffn) in SHAPES.items():
        weights = MoEWeights.random(experts, hidden, ffn, seed=3, device=dev, dtype=torch.bfloat16)
        for tokens in (1024, 4096):
            inputs = [torch.randn(tokens, hidden, device=dev, dtype=torch.bfloat16) for _ in range(3)]
            routed = [route(x, weights.router, top_k) for x in inputs]
            fused = FusedMoE(weights, top_k, max_tokens=tokens, config=FusedConfig(comm_blocks0=16, comm_blocks1=16),
                             dtype=torch.bfloat16)
            state = {"i": 0}

            def run(fn):
                def call():
                    i = state["i"] = (state["i"] + 1) % 3
                    fn(inputs[i], *routed[i])
                return call

            b0 = median_us(run(lambda x, ids, w: moe_sequential(x, ids, w, weights)))
            fz = median_us(run(lambda x, ids, w: fused(x, ids, w)))
            row = {"model": name, "tokens": tokens, "timings_us": {"b0": round(b0, 1), "fused": round(fz, 1)},
                   "fused_over_b0": round(fz / b0, 3)}
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
