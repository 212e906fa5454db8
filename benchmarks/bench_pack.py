"""Step 1 of the fused forward, before and after, on one GPU: a rank's pairs ordered by expert,
counted, and their token rows gathered into the send region.

- `torch ops`: what the layer ran until 2026-11-26 (stable torch.sort, searchsorted, a difference,
  a division, a scatter, index_select), kept here as the baseline;
- `kernels`: kernels/fused_pack.py (two launches) + the same index_select.

Both are captured in a CUDA graph and replayed (as the layer is), so the figures are GPU time, not
launch overhead. Each case also checks that both give the same send rows. Writes JSON to --out.

    python benchmarks/bench_pack.py --out results/measurements/pack
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from comet_dse.kernels.fused_pack import order_pairs, scratch_size
from comet_dse.kernels.timing import environment, median_us

# (model, hidden, global experts at EP=2, top_k): the shapes the layer is benchmarked on
SHAPES = [("qwen2-moe-2.7b", 2048, 64, 4), ("mixtral-8x7b", 4096, 8, 2), ("deepseek-v3", 7168, 256, 8)]


class TorchOps:
    """The previous step 1, op for op."""

    def __init__(self, pairs: int, experts: int, device: torch.device) -> None:
        self.iota = torch.arange(pairs, device=device)
        key = torch.int16 if experts < torch.iinfo(torch.int16).max else torch.int32
        self.edges = torch.arange(experts + 1, dtype=key, device=device)
        self.pos = torch.zeros(pairs, dtype=torch.int64, device=device)
        self.counts = torch.zeros(experts, dtype=torch.int32, device=device)

    def __call__(self, x: torch.Tensor, ids: torch.Tensor, send: torch.Tensor) -> None:
        pairs = ids.numel()
        sorted_ids, order = torch.sort(ids.reshape(-1).to(self.edges.dtype), stable=True)
        edges = torch.searchsorted(sorted_ids, self.edges)
        self.counts.copy_(edges[1:] - edges[:-1])
        torch.index_select(x, 0, order // ids.shape[1], out=send[:pairs])
        self.pos[:pairs].scatter_(0, order, self.iota[:pairs])


class Kernels:
    def __init__(self, pairs: int, experts: int, device: torch.device) -> None:
        self.experts = experts
        self.pos = torch.zeros(pairs, dtype=torch.int64, device=device)
        self.counts = torch.zeros(experts, dtype=torch.int32, device=device)
        self.token_of_row = torch.zeros(pairs, dtype=torch.int32, device=device)
        self.scratch = torch.empty(scratch_size(pairs, experts), dtype=torch.int32, device=device)

    def __call__(self, x: torch.Tensor, ids: torch.Tensor, send: torch.Tensor) -> None:
        order_pairs(ids, self.experts, self.scratch, self.counts, self.pos, self.token_of_row)
        torch.index_select(x, 0, self.token_of_row[:ids.numel()], out=send[:ids.numel()])


def graphed(step, *args) -> torch.cuda.CUDAGraph:
    for _ in range(2):
        step(*args)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(*args)
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="256,1024,4096,8192,16384")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device("cuda")
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    for model, hidden, experts, top_k in SHAPES:
        for tokens in (int(t) for t in args.tokens.split(",")):
            pairs = tokens * top_k
            x = torch.randn(tokens, hidden, device=device, generator=gen).to(torch.bfloat16)
            # top-k distinct experts per token, as a router picks them
            ids = torch.rand(tokens, experts, device=device, generator=gen).topk(top_k, dim=1).indices
            row = {"model": model, "tokens": tokens, "pairs": pairs, "experts": experts, "hidden": hidden}
            sends = {}
            for name, step in (("torch ops", TorchOps(pairs, experts, device)), ("kernels", Kernels(pairs, experts, device))):
                send = torch.empty(pairs, hidden, dtype=torch.bfloat16, device=device)
                graph = graphed(step, x, ids, send)
                row[f"{name} us"] = round(median_us(graph.replay, runs=50, warmup=5), 1)
                sends[name] = (send, step.pos, step.counts)
            (a, pos_a, counts_a), (b, pos_b, counts_b) = sends.values()
            row["same"] = bool(torch.equal(a, b) and torch.equal(pos_a, pos_b) and torch.equal(counts_a, counts_b))
            row["speedup"] = round(row["torch ops us"] / row["kernels us"], 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"pack-{torch.cuda.get_device_name().replace(' ', '_')}.json"
    path.write_text(json.dumps({**environment(), "rows": rows}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
