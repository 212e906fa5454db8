"""The fused layer's GPU test suite over every GPU of one node (bf16), expert parallel or EP × TP:

    torchrun --nproc-per-node 2 benchmarks/gpu_fused_ep.py --out results/measurements/fused_ep2_suite.json
    torchrun --nproc-per-node 2 benchmarks/gpu_fused_ep.py --tp 2 --out ...   # EP=1 x TP=2 (kernels/fused_tp.py)

1. the device-side plan on the GPU equals the plain loops on random and adversarial routings;
2. adversarial routings (all tokens to experts 0..k-1, one token, top-1, every expert, ranks
   with different token counts, a call at the capacity) match the fp32 reference, eagerly and
   with the copy engine; a call over the capacity raises and the next one is right;
3. `--replays` consecutive CUDA-graph replays with fresh random inputs and routings (every tenth
   all on experts 0..k-1), each checked against the fp32 reference;
4. a delayed producer (a spin before every layer0 flag) still gives the right result;
5. a producer that never signals: `check()` raises, and how long the bounded waits took.

Only torch, triton, numpy and comet_dse.kernels are imported. Every rank draws the same
inputs for the whole group from a shared seed, so each computes the reference for its own
rows without any collective. Under TP (`--tp`) every check but the plan's runs the layer of
kernels/fused_tp.py on this rank's EP group's experts, its share of their FFN width; the reference
is the whole layer, as the outputs are.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

for var, value in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ.setdefault(var, value)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from comet_dse.choices import COMM_DEALS  # noqa: E402
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE  # noqa: E402
from comet_dse.kernels.fused_tp import TensorParallelFused  # noqa: E402
from comet_dse.kernels.fused_plan import (  # noqa: E402
    device_plan,
    layout_groups,
    max_row_tiles,
    reference_plan,
    source_rotation,
)
from comet_dse.kernels.reference import MoEWeights, reference_moe, routing_weights  # noqa: E402
from comet_dse.kernels.timing import environment  # noqa: E402

TOL = 1e-2  # bf16 operands, fp32 accumulation


class Suite:
    def __init__(self, args) -> None:
        self.args = args
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.dev = torch.device("cuda")
        self.experts, self.top_k, self.hidden, self.ffn = args.experts, args.top_k, args.hidden, args.ffn
        self.per_rank = self.experts // self.world
        self.weights = MoEWeights.random(self.experts, self.hidden, self.ffn, seed=0, device=self.dev, dtype=torch.bfloat16)
        self.tp = args.tp
        self.ep = self.world // self.tp
        ep_rank, tp_rank = divmod(self.rank, self.tp)  # as kernels/tp_baselines.py numbers the ranks
        self.local = self.weights.of_rank(ep_rank, self.ep).ffn_shard(tp_rank, self.tp)
        self.report: dict = {"checks": {}}

    def layer(self, **knobs) -> FusedMoE | TensorParallelFused:
        cfg = FusedConfig(**{"comm_blocks0": 16, "comm_blocks1": 16, "block_m": 128, "block_n": 128, "n_splits": 4,
                             "dedup": self.args.dedup, "prereduce": self.args.prereduce,
                             "pull_rows": self.args.pull_rows, "comm_deal": self.args.comm_deal,
                             "split_k": self.args.split_k, "split_k_min": self.args.split_k_min, **knobs})
        if self.tp > 1:
            layer = TensorParallelFused(self.local, self.top_k, self.args.capacity, self.ep, self.tp, config=cfg,
                                        dtype=torch.bfloat16)
        else:
            layer = FusedMoE(self.local, self.top_k, self.args.capacity, config=cfg, dtype=torch.bfloat16)
        self.kernels(layer).poison_unwritten()  # a read of memory no call wrote shows as NaN, every time
        return layer

    @staticmethod
    def kernels(layer: FusedMoE | TensorParallelFused) -> FusedMoE:
        """The EP layer that launches the kernels (under TP, the one over virtual experts)."""
        return getattr(layer, "inner", layer)

    def inputs(self, seed: int, tokens: list[int], kind: str = "random"):
        """Every rank's inputs (the same on every rank) and this rank's slice."""
        g = torch.Generator(device=self.dev).manual_seed(seed)
        total = sum(tokens)
        x = torch.randn(total, self.hidden, generator=g, device=self.dev).to(torch.bfloat16)
        if kind == "random":
            ids = torch.rand(total, self.experts, generator=g, device=self.dev).topk(self.top_k, dim=1).indices
        elif kind == "first":
            ids = torch.arange(self.top_k, device=self.dev).repeat(total, 1)
        else:  # "last": the last experts, so the first ranks receive nothing
            ids = (self.experts - 1 - torch.arange(self.top_k, device=self.dev)).repeat(total, 1)
        w = routing_weights(x, self.weights.router, ids)
        mine = slice(sum(tokens[:self.rank]), sum(tokens[:self.rank + 1]))
        return x, ids, w, mine

    def error(self, got: torch.Tensor, x, ids, w, mine) -> float:
        expected = reference_moe(x, self.weights, ids, w)[mine]
        if expected.numel() == 0:
            return 0.0
        return float(((got.float() - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item())

    def worst(self, value: float) -> float:
        t = torch.tensor([value], device=self.dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    # ---- 1. the plan ----
    def plan_on_gpu(self) -> None:
        g = torch.Generator().manual_seed(1)
        cases = 0
        for trial in range(50):
            tokens = int(torch.randint(0, 300, (1,), generator=g))
            all_ids = [torch.rand(tokens, self.experts, generator=g).topk(self.top_k, dim=1).indices for _ in range(self.world)]
            if trial % 5 == 0:
                all_ids = [torch.arange(self.top_k).repeat(tokens, 1) for _ in range(self.world)]
            counts = torch.stack([torch.bincount(i.reshape(-1), minlength=self.experts) for i in all_ids])
            for merged, row_order in itertools.product((False, True), ("local-first", "source-order")):
                max_tiles = max_row_tiles(self.world * 300 * min(self.top_k, self.per_rank),
                                          layout_groups(self.world, self.per_rank, merged), 128)
                rot = source_rotation(self.rank, self.world, row_order)
                plan = device_plan(counts.to(self.dev, torch.int32), self.rank, self.per_rank, 128,
                                   torch.tensor(rot, device=self.dev), max_tiles, merged=merged)
                tiles, order1, pieces = reference_plan(counts.tolist(), self.rank, self.per_rank, 128, rot, merged=merged)
                n = int(plan.num_tiles.item())
                case = (trial, row_order, merged)
                assert n == len(tiles) and [tuple(t) for t in plan.tiles[:n].tolist()] == tiles, case
                assert plan.order1[:n].tolist() == order1, case
                assert [[tuple(p) for p in e] for e in plan.pieces.tolist()] == pieces, case
                cases += 1
        self.report["checks"]["device_plan"] = {"cases": cases, "equal": True}

    # ---- 2. adversarial routings, eager, and the capacity ----
    def adversarial(self) -> None:
        cap = self.args.capacity
        calls = [([cap] * self.world, "random"), ([1] * self.world, "random"), ([37] * self.world, "first"),
                 ([cap] * self.world, "first"), ([5] + [cap] * (self.world - 1), "random"), ([64] * self.world, "last"),
                 ([0] + [33] * (self.world - 1), "random")]
        result = {}
        for name, knobs in (("comm_blocks", {}), ("comm_blocks_by_source", {"tile_layout": "by-source"}),
                            ("copy_engine", {"comm_blocks0": 0}),
                            ("source_order_1split", {"row_order": "source-order", "n_splits": 1})):
            layer = self.layer(**knobs)
            worst = 0.0
            for i, (tokens, kind) in enumerate(calls):
                x, ids, w, mine = self.inputs(100 + i, tokens, kind)
                worst = max(worst, self.error(layer(x[mine], ids[mine], w[mine]), x, ids, w, mine))
            layer.check()
            # over the capacity: raises before anything is written; the next call is right
            x, ids, w, mine = self.inputs(7, [cap + 1] * self.world)
            try:
                layer(x[mine], ids[mine], w[mine])
                raised = False
            except ValueError:
                raised = True
            x, ids, w, mine = self.inputs(8, [cap // 2] * self.world)
            worst = max(worst, self.error(layer(x[mine], ids[mine], w[mine]), x, ids, w, mine))
            result[name] = {"calls": len(calls) + 1, "max_rel_error": self.worst(worst), "over_capacity_raised": raised}
            del layer
        self.report["checks"]["adversarial"] = result

    # ---- 3. graph replays ----
    def replays(self) -> None:
        tokens = self.args.graph_tokens
        layer = self.layer()
        step = layer.graphed(tokens)
        worst = 0.0
        t0 = time.perf_counter()
        for i in range(self.args.replays):
            x, ids, w, mine = self.inputs(10_000 + i, [tokens] * self.world, "first" if i % 10 == 9 else "random")
            worst = max(worst, self.error(step(x[mine], ids[mine], w[mine]), x, ids, w, mine))
        layer.check()
        self.report["checks"]["graph_replays"] = {"replays": self.args.replays, "tokens": tokens,
                                                  "max_rel_error": self.worst(worst),
                                                  "seconds": round(time.perf_counter() - t0, 1)}

    # ---- 4. a slow producer ----
    def delayed(self) -> None:
        layer = self.layer()
        self.kernels(layer).delay_spins = 20_000
        x, ids, w, mine = self.inputs(5, [self.args.graph_tokens] * self.world)
        eager = self.error(layer(x[mine], ids[mine], w[mine]), x, ids, w, mine)
        step = layer.graphed(self.args.graph_tokens)
        graphed = self.error(step(x[mine], ids[mine], w[mine]), x, ids, w, mine)
        layer.check()
        self.report["checks"]["delayed_producer"] = {"delay_spins": 20_000, "max_rel_error": self.worst(max(eager, graphed))}

    # ---- 5. a producer that never signals ----
    def stuck(self) -> None:
        layer = self.layer(max_spins=1 << 16, barrier_spins=1 << 22)
        self.kernels(layer).delay_spins = -1
        x, ids, w, mine = self.inputs(6, [256] * self.world)
        t0 = time.perf_counter()
        layer(x[mine], ids[mine], w[mine])
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        try:
            layer.check()
            message = None
        except RuntimeError as exc:
            message = str(exc)
        self.report["checks"]["stuck_producer"] = {"raised": message, "seconds_to_return": round(seconds, 3)}
        dist.barrier()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/measurements/fused_ep_suite.json")
    parser.add_argument("--replays", type=int, default=1000)
    parser.add_argument("--graph-tokens", type=int, default=512)
    parser.add_argument("--capacity", type=int, default=1024)
    parser.add_argument("--shape", default="16,4,512,384", help="E,top_k,H,F (default: a small Qwen2-MoE-like layer)")
    parser.add_argument("--skip", default="", help="comma-separated checks to skip")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel ranks (EP = GPUs / TP)")
    parser.add_argument("--dedup", action="store_true", help="layer0 brings a token to a rank once (FusedConfig.dedup)")
    parser.add_argument("--prereduce", action="store_true",
                        help="layer1 sends a token's rows at a rank home as one sum (FusedConfig.prereduce)")
    parser.add_argument("--pull-rows", type=int,
                        help="rows a communication block pulls as one piece of layer0's work (FusedConfig.pull_rows)")
    parser.add_argument("--comm-deal", default="static", choices=COMM_DEALS,
                        help="how the communication blocks share the remote tiles (FusedConfig.comm_deal)")
    parser.add_argument("--split-k", type=int, default=1,
                        help="layer1's last-round items cut along K into up to this many pieces (FusedConfig.split_k)")
    parser.add_argument("--split-k-min", type=int, default=1024, help="the least K a piece takes (FusedConfig.split_k_min)")
    args = parser.parse_args()
    args.experts, args.top_k, args.hidden, args.ffn = (int(v) for v in args.shape.split(","))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if args.tp < 1 or world % args.tp or args.experts % (world // args.tp) or args.ffn % args.tp:
        parser.error(f"--tp must divide the {world} GPUs and F={args.ffn}, and E={args.experts} the EP ranks; got {args.tp}")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl")
    suite = Suite(args)
    for name in ("plan_on_gpu", "adversarial", "replays", "delayed", "stuck"):
        if name in args.skip.split(","):
            continue
        t0 = time.perf_counter()
        getattr(suite, name)()
        if suite.rank == 0:
            print(f"{name}: {json.dumps(suite.report['checks'].get(name.replace('plan_on_gpu', 'device_plan'), {}))} "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    if suite.rank == 0:
        suite.report.update({**environment(), "gpus": suite.world, "ep": suite.ep, "tp": suite.tp, "shape": args.shape,
                             "dedup": args.dedup, "prereduce": args.prereduce, "pull_rows": args.pull_rows,
                             "comm_deal": args.comm_deal, "split_k": args.split_k, "split_k_min": args.split_k_min})
        with open(args.out, "w") as f:
            json.dump(suite.report, f, indent=2)
        print(f"wrote {args.out}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
