"""The Triton grouped GEMM against torch._grouped_mm on MoE shapes (one GPU, bf16).

    python benchmarks/bench_grouped_gemm.py --out results/measurements/grouped_gemm.json

Target (issue 4): within 10% of torch._grouped_mm on the same shapes. CUDA events, warm-up,
median of 20 runs, inputs rotated over 3 buffers. Imports only torch, triton, numpy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from comet_dse.kernels.grouped_gemm import grouped_gemm
from comet_dse.kernels.timing import environment, median_us

# (label, experts on the GPU, K, N, rows per GPU per 1024 tokens): EP=2 shapes of the paper's models
SHAPES = [
    ("mixtral GEMM0", 4, 4096, 2 * 14336, 2),
    ("mixtral GEMM1", 4, 14336, 4096, 2),
    ("qwen2-moe GEMM0", 32, 2048, 2 * 1408, 4),
    ("qwen2-moe GEMM1", 32, 1408, 2048, 4),
]
CONFIGS = [  # (block_m, block_n, block_k, warps, stages, group_m, use_tma)
    (128, 256, 64, 8, 3, 8, False),  # pointer loads, for the record
    (128, 256, 64, 8, 3, 8, True), (128, 256, 64, 8, 4, 8, True), (128, 256, 64, 8, 3, 16, True),
    (128, 128, 64, 4, 4, 8, True), (128, 128, 64, 8, 3, 8, True), (64, 256, 64, 4, 3, 8, True),
]


def time_us(fn, inputs) -> float:
    """Median of 20 runs after 5 warm-ups, the inputs rotated."""
    turn = iter(range(10**9))
    return median_us(lambda: fn(*inputs[next(turn) % len(inputs)]), runs=20, warmup=5)


def counts_for(rows: int, experts: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    share = torch.distributions.Multinomial(rows, torch.ones(experts) / experts).sample().long()
    share = (share // 16) * 16  # torch._grouped_mm wants group sizes in multiples of 16
    share[0] += rows - int(share.sum())
    del g
    return share.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1024,4096,16384")
    parser.add_argument("--out", default="results/measurements/grouped_gemm.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    runs = []
    for label, experts, k, n, rows_per_1k in SHAPES:
        for tokens in (int(t) for t in args.tokens.split(",")):
            rows = tokens * rows_per_1k
            counts = counts_for(rows, experts, tokens)
            ends = torch.tensor(counts, device=dev).cumsum(0).to(torch.int32)
            inputs = [(torch.randn(rows, k, device=dev, dtype=torch.bfloat16),
                       torch.randn(experts, k, n, device=dev, dtype=torch.bfloat16) * k ** -0.5) for _ in range(3)]
            ref = torch._grouped_mm(inputs[0][0], inputs[0][1], offs=ends)
            t_torch = time_us(lambda a, w: torch._grouped_mm(a, w, offs=ends), inputs)
            best = None
            all_us = {}
            for config in CONFIGS:
                fn = lambda a, w, c=config: grouped_gemm(  # noqa: E731
                    a, w, counts, block_m=c[0], block_n=c[1], block_k=c[2], num_warps=c[3], num_stages=c[4], group_m=c[5], use_tma=c[6])
                out = fn(*inputs[0])
                err = ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
                t = time_us(fn, inputs)
                all_us["/".join(map(str, config))] = round(t, 1)
                if best is None or t < best[0]:
                    best = (t, config, err)
            flops = 2 * rows * k * n
            row = {"shape": label, "tokens": tokens, "rows": rows, "experts": experts, "K": k, "N": n,
                   "torch_grouped_mm_us": round(t_torch, 2), "triton_us": round(best[0], 2),
                   "triton_config": dict(zip(("block_m", "block_n", "block_k", "warps", "stages", "group_m", "use_tma"), best[1])),
                   "all_configs_us": all_us,
                   "triton_over_torch": round(best[0] / t_torch, 3), "max_rel_error": best[2],
                   "torch_tflops": round(flops / t_torch / 1e6, 1), "triton_tflops": round(flops / best[0] / 1e6, 1)}
            runs.append(row)
            print(json.dumps(row), flush=True)
    result = {**environment(), "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
