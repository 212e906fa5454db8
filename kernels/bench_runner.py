"""The work behind `comet-dse bench` (comet_dse/commands/bench.py checks the inputs first).

Imports only torch, triton, numpy and the package. Every rank runs the same sequence of
collectives; rank 0 assembles the result.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.distributed as dist
from comet_dse.choices import EXPERT_GEMMS
from comet_dse.errors import UserError
from comet_dse.kernels.baselines import moe_chunked, moe_naive
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE, PeerBuffer
from comet_dse.kernels.fused_moe import COMM_ONLY, COMPUTE_ONLY, FULL
from comet_dse.kernels.fused_tp import TensorParallelFused, virtual_routing
from comet_dse.kernels.reference import MoEWeights, reference_moe, route
from comet_dse.kernels.timing import environment, join_ranks, line_up, median_us, spin_device
from comet_dse.kernels.tp_baselines import moe_chunked_tp, parallel_groups

ROTATE = 3  # input sets rotated through the timed runs
MODES = {"fused": FULL, "compute_only": COMPUTE_ONLY, "comm_only": COMM_ONLY}


def bench_inputs(weights: MoEWeights, tokens: int, top_k: int, seed: int, rank: int, sets: int,
                 dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`sets` input sets (x, expert ids, weights) of this rank's `tokens` tokens, routed by the layer's router: the
    same for the same seed, rank and token count (bench's figures, and scripts that time its workload)."""
    g = torch.Generator().manual_seed(seed * 7919 + tokens * 31 + rank)
    found = []
    for _ in range(sets):
        x = torch.randn(tokens, weights.router.shape[0], generator=g).to(weights.router.device, dtype)
        found.append((x, *route(x, weights.router, top_k)))
    return found


class BenchRunner:
    def __init__(self, settings, args) -> None:
        self.s, self.args = settings, args
        self.cuda, self.device = join_ranks()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        tp = settings.tp
        if self.world % tp:
            raise UserError("--tp", f"must divide the {self.world} ranks launched, got {tp}")
        if settings.ep is not None and settings.ep * tp != self.world:
            raise UserError("--ep", f"EP x TP must equal the {self.world} ranks launched, got {settings.ep} x {tp}")
        self.ep = self.world // tp
        if settings.plan is not None and settings.plan.ep != self.ep:
            raise UserError("--plan", f"the plan is for EP={settings.plan.ep}, this run has EP={self.ep}")
        if settings.experts % self.ep:
            raise UserError("--model", f"{settings.experts} experts do not divide over {self.ep} expert-parallel ranks")
        self.dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if self.cuda else torch.float32)
        self.align_token = torch.zeros(1, device=self.device)  # --align devices|queued: the all-reduce before each timed call
        self.per_rank = settings.experts // self.ep
        self.weights = MoEWeights.random(settings.experts, settings.hidden, settings.ffn, seed=args.seed,
                                         device=self.device, dtype=self.dtype)
        # under TP: this rank's EP group's experts, its share of their FFN width (kernels/tp_baselines.py)
        self.groups = parallel_groups(self.ep, tp) if tp > 1 else None
        ep_rank = self.rank if self.groups is None else self.groups.ep_rank
        self.local = self.weights.local(ep_rank * self.per_rank, self.per_rank)
        if self.groups is not None:
            self.local = self.local.ffn_shard(self.groups.tp_rank, tp)

    def close(self) -> None:
        dist.barrier()
        dist.destroy_process_group()

    # ---- timing ----------------------------------------------------------------------------

    def _time(self, fn: Callable[[], object], before: Callable[[], object] | None = None, spin: bool = False) -> float:
        """Median µs of fn after a barrier (every rank starts at once); spin: the device spins first, so
        an eager launch's host time stays out of the figure (a graph's whole forward keeps its own)."""
        def prepare() -> None:
            if before is not None:
                before()
            dist.barrier()
            if self.args.align in ("devices", "queued"):
                line_up(self.align_token, queued=self.args.align == "queued")
            if spin:
                spin_device()
        return median_us(fn, runs=self.args.runs, warmup=self.args.warmup, before_each=prepare)

    def _rotating(self, inputs: list[tuple], call: Callable[..., object]) -> Callable[[], object]:
        turn = iter(range(1 << 60))
        return lambda: call(*inputs[next(turn) % len(inputs)])

    # ---- the runs --------------------------------------------------------------------------

    def run_all(self) -> dict | None:
        s = self.s
        runs = []
        link = self._link_GBps() if self.args.kind != "baselines" else None
        for tokens in s.tokens:
            # the last set is the correctness check's, never timed
            *inputs, check = bench_inputs(self.weights, tokens, s.top_k, self.args.seed, self.rank, ROTATE + 1, self.dtype)
            expected = self._reference(*check)
            base = {"tokens": tokens, "capacity": s.capacity}
            timings, errors = {}, {}
            if self.args.kind != "fused":
                timings, errors = self._baselines(inputs, check, expected)
            # the EP dispatch and combine's bytes (B0's all-to-alls, the fused layer's rows without --dedup and
            # --prereduce; with dedup fewer cross, how many depends on which first tiles have landed: not counted;
            # prereduce returns a row per (token, rank) instead of per slot); under TP not counted
            remote_bytes = self._remote_bytes(inputs[0][1]) if self.groups is None else None
            extra = {"remote_bytes_out": remote_bytes, "link_GBps": link,
                     "comm_floor_us": round(remote_bytes / (link * 1e3), 2) if link and remote_bytes is not None else None}
            if self.args.kind == "baselines":
                runs.append({**base, "config": None, "graphs": False, **self._reduce(timings), **extra,
                             "max_rel_error": errors})
                continue
            limit = self._grouped_mm_us(inputs[0][1])
            for cfg in self._configs(tokens):
                fused, fused_errors, graphs = self._fused(cfg, tokens, inputs, check, expected)
                # pack: step 1 of the forward as two kernels (the simulator's validation reads it)
                config = {**cfg.__dict__, "block_n1": cfg.layer1_width(s.hidden), "tile_layout": cfg.layout(self.world),
                          "num_stages1": cfg.layer1_stages(self.local.w_down.shape[1]),
                          "dedup": cfg.deduplicates(self.world), "prereduce": cfg.prereduces(self.world),
                          "layer1_pieces": cfg.layer1_pieces(self.local.w_down.shape[1]), "pack": "kernels"}
                # a pre-reduced layer1 returns a row per (token, holding rank), not the every-slot bytes counted above
                moved = {"remote_bytes_out": None, "comm_floor_us": None} if config["prereduce"] else {}
                runs.append({**base, "config": config, "graphs": graphs, **self._reduce({**timings, **fused, **limit}), **extra,
                             **moved, "max_rel_error": {**errors, **fused_errors}})
                if self.rank == 0:
                    print(_summary(runs[-1]), flush=True)
        if self.rank != 0:
            return None
        # the command as typed: under `python -m` the first word is the module's path
        command = " ".join(["comet-dse" if sys.argv[0].endswith("cli.py") else sys.argv[0], *sys.argv[1:]])
        return {**environment(command), "gpus": self.world, "model": s.model_name,
                "shape": {"experts": s.experts, "top_k": s.top_k, "hidden": s.hidden, "ffn": s.ffn},
                "ep": self.ep, "tp": self.s.tp, "dtype": str(self.dtype).removeprefix("torch."), "kind": self.args.kind,
                "runs_per_figure": self.args.runs, "align": self.args.align,
                # the per-layer figures (timings layer<i>:<variant>) behind a device spin: no host time in them
                "layer_timing": "spin",
                # B0's and B1's loop GEMM: one torch.mm per (source, expert) run as the rows arrived (no regroup)
                "b0_loop": "runs", "runs": runs}

    def _configs(self, tokens: int) -> list[FusedConfig]:
        s, a = self.s, self.args
        knobs = {"programs": a.programs, "block_k": a.block_k, "group_m": a.group_m, "block_n1": a.block_n1,
                 "flatten": a.flatten, "gate_up": a.gate_up, "tma_store": a.tma_store, "num_stages1": a.stages1,
                 "dedup": a.dedup, "prereduce": a.prereduce, "split_k_min": a.split_k_min,
                 **({} if a.copy_elems is None else {"copy_elems": a.copy_elems})}
        if s.plan is not None:
            return [FusedConfig.from_plan(s.plan, tokens, comm_deal=deal, split_k=k, **knobs)
                    for deal in s.comm_deals for k in s.split_ks]
        configs = [FusedConfig(comm_blocks0=b, comm_blocks1=a.comm_blocks1 or b or 16, block_m=s.block_m, block_n=s.block_n,
                               n_splits=a.n_splits, row_order=a.row_order, tile_order=order, tile_layout=layout,
                               pull_rows=pull, comm_deal=deal, split_k=k, **knobs)
                   for deal in s.comm_deals for layout in s.tile_layouts for order in s.tile_orders for pull in s.pull_rows
                   for k in s.split_ks for b in s.comm_blocks]
        # the copy engine always runs by source and pulls nothing itself (layer1's pushes still deal): time it once
        # per deal, not once per layout or piece
        def copy_engine_key(c: FusedConfig) -> FusedConfig:
            return replace(c, tile_layout="by-source", pull_rows=None)
        return [c for i, c in enumerate(configs) if c.comm_blocks0 > 0 or
                all(copy_engine_key(c) != copy_engine_key(d) for d in configs[:i])]

    def _reference(self, x, ids, w) -> torch.Tensor:
        """The fp32 reference for this rank's tokens: a token's output depends only on its own
        routing and the whole layer's weights, so no other rank's inputs are needed."""
        return reference_moe(x, self.weights, ids, w)

    def _all_gather(self, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def _error(self, got: torch.Tensor, expected: torch.Tensor) -> float:
        err = ((got.float() - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).reshape(1)
        dist.all_reduce(err, op=dist.ReduceOp.MAX)
        return round(float(err.item()), 6)

    def _baselines(self, inputs, check, expected) -> tuple[dict, dict]:
        """naive; B0 with each expert GEMM (b0 is the faster: what a user would keep); B1 per chunk count
        with each expert GEMM too (b1_c<C> the faster: the loop that wins B0 can lose B1, whose every chunk
        launches it again). Under TP, B0 and B1 of kernels/tp_baselines.py and no naive layer."""
        if self.groups is None:
            calls = {"naive": lambda x, ids, w: moe_naive(x, ids, w, self.local)}
            layer = lambda x, ids, w, c, g: moe_chunked(x, ids, w, self.local, c, expert_gemm=g)  # noqa: E731
        else:
            calls = {}
            layer = lambda x, ids, w, c, g: moe_chunked_tp(x, ids, w, self.local, self.groups, c, expert_gemm=g)  # noqa: E731
        kept = {"b0": 1, **{f"b1_c{c}": c for c in self.s.chunks}}  # each layer's name -> its chunks
        for name, chunks in kept.items():
            for gemm in EXPERT_GEMMS:
                calls[f"{name}_{gemm}"] = lambda x, ids, w, c=chunks, g=gemm: layer(x, ids, w, c, g)
        timings = {name: self._time(self._rotating(inputs, fn)) for name, fn in calls.items()}
        # the same decision on every rank: the slower rank's figures
        slowest = self._reduce(timings)["timings_us"]
        for name in kept:
            best = min(EXPERT_GEMMS, key=lambda g: slowest[f"{name}_{g}"])
            timings[name], calls[name] = timings[f"{name}_{best}"], calls[f"{name}_{best}"]
        errors = {name: self._error(fn(*check), expected) for name, fn in calls.items()}
        return timings, errors

    def _fused(self, cfg: FusedConfig, tokens: int, inputs, check, expected) -> tuple[dict, dict, bool]:
        """fused, compute_only and comm_only of one configuration (graphs where it can)."""
        try:
            if self.groups is None:
                layer = FusedMoE(self.local, self.s.top_k, self.s.capacity, config=cfg, dtype=self.dtype)
            else:
                layer = TensorParallelFused(self.local, self.s.top_k, self.s.capacity, self.ep, self.s.tp, config=cfg,
                                            dtype=self.dtype)
        except ValueError as exc:
            raise UserError("config", str(exc)) from None
        graphs = self.cuda and cfg.comm_blocks0 > 0
        timings, errors = {}, {}
        for name, mode in MODES.items():
            # the copy engine's compute-only variant moves nothing and needs no host: a graph too
            if self.cuda and (graphs or mode == COMPUTE_ONLY):
                step = layer.graphed(tokens, mode)
                turn = iter(range(1 << 60))
                timings[name] = self._time(step.replay, before=lambda: step.set_inputs(*inputs[next(turn) % ROTATE]))
                if mode == FULL:
                    errors["fused"] = self._error(step(*check).clone(), expected)
            else:
                timings[name] = self._time(self._rotating(inputs, lambda x, ids, w: layer(x, ids, w, mode=mode)))
                if mode == FULL:
                    errors["fused"] = self._error(layer(*check), expected)
        if graphs:  # what the same forward costs when launched op by op from Python
            timings["fused_eager"] = self._time(self._rotating(inputs, lambda x, ids, w: layer(x, ids, w)))
        if cfg.comm_blocks0 > 0:
            timings.update(self._per_layer(layer, inputs[0]))
        layer.check()  # a bounded wait that gave up would have made every figure above meaningless
        del layer
        gc.collect()
        return timings, errors, graphs

    def _per_layer(self, layer: FusedMoE | TensorParallelFused, inputs: tuple) -> dict:
        """Each variant's layer0 and layer1 kernels timed alone (`layer0:<variant>`, `layer1:<variant>`), on
        the plan of one forward of `inputs` in that variant: where the fused time goes that the whole-layer
        figures cannot show (which layer loses to its pipeline), and what the simulator's per-layer spans are
        compared with. Each launch starts from reset flags (layer0: its tiles wait for rows pulled anew) or
        counters (layer1: its sends wait for the tiles), as in the forward; the copy engine's layer0 is not
        timed this way (its rows come from a side stream). Each launch is timed behind a device spin, as calibrate
        times its launches: bench files before 2026-11-27 (run 61) timed them without one, so their per-layer
        figures carry each launch's host time (their sum exceeded the graphed layer by up to 1.3 ms)."""
        kernels = getattr(layer, "inner", layer)  # under TP the EP layer over virtual experts launches them
        found = {}
        for name, mode in MODES.items():
            layer(*inputs, mode=mode)
            plan = kernels.plan
            found[f"layer0:{name}"] = self._time(lambda: kernels._launch_layer0(plan, mode), before=kernels.flags.zero_,
                                                 spin=True)
            found[f"layer1:{name}"] = self._time(lambda: kernels._launch_layer1(plan, mode), before=kernels.counters.zero_,
                                                 spin=True)
        if self.cuda:
            torch.cuda.synchronize()
        dist.barrier()
        return found

    def _reduce(self, timings: dict) -> dict:
        """The slowest rank's figure per timing, and every rank's."""
        names = list(timings)
        mine = torch.tensor([timings[n] for n in names], dtype=torch.float64, device=self.device)
        every = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        per_rank = torch.stack(every).tolist()  # (W, len(names))
        return {"timings_us": {n: round(max(r[i] for r in per_rank), 2) for i, n in enumerate(names)},
                "per_rank_us": {n: [round(r[i], 2) for r in per_rank] for i, n in enumerate(names)}}

    # ---- the limits beside the fused figures -----------------------------------------------

    def _remote_bytes(self, ids: torch.Tensor) -> int:
        """Bytes this rank sends over links in one forward: its rows for other ranks' experts
        (dispatch) plus the results it computes for other ranks' rows (combine)."""
        dest = ids.reshape(-1) // self.per_rank
        counts = torch.bincount(dest, minlength=self.world).to(torch.int64)  # rows I send to each rank
        table = self._all_gather(counts).view(self.world, self.world)  # table[src, dst]: rows src sends dst
        sent = int(table[self.rank].sum() - table[self.rank, self.rank])
        returned = int(table[:, self.rank].sum() - table[self.rank, self.rank])
        return (sent + returned) * self.s.hidden * torch.empty(0, dtype=self.dtype).element_size()

    def _link_GBps(self) -> float | None:
        """Peer-copy bandwidth per direction, every rank pulling from the next at once (copy engine)."""
        if not self.cuda or self.world == 1:
            return None
        elems = 64 << 20  # 128 MiB of bf16
        buf = PeerBuffer(1, elems, torch.bfloat16, self.device, None)
        dst = torch.empty(elems, dtype=torch.bfloat16, device=self.device)
        src = buf.peer((self.rank + 1) % self.world)[0]
        us = self._time(lambda: dst.copy_(src))
        slowest = torch.tensor([us], device=self.device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        del buf
        return round(elems * 2 / (float(slowest.item()) * 1e3), 1)

    def _grouped_mm_us(self, ids: torch.Tensor) -> dict:
        """torch._grouped_mm GEMM0 + GEMM1 on this rank's rows per expert (a graph), the compute limit."""
        if not self.cuda or self.dtype != torch.bfloat16:
            return {}
        if self.groups is not None:  # this rank's rows: those of its shard of its group's experts
            ids = virtual_routing(ids, torch.ones_like(ids, dtype=torch.float32), self.ep, self.s.tp, self.s.experts)[0]
        every = self._all_gather(ids).reshape(-1)
        mine = every[(every // self.per_rank) == self.rank] - self.rank * self.per_rank
        counts = torch.bincount(mine, minlength=self.per_rank)
        rows = int(counts.sum())
        offs = torch.cumsum(counts, 0).to(torch.int32)
        a = torch.randn(rows, self.s.hidden, device=self.device, dtype=self.dtype)
        h = torch.randn(rows, self.local.w_down.shape[1], device=self.device, dtype=self.dtype)  # F, or its TP share
        w13, w2 = self.local.w_gate_up.contiguous(), self.local.w_down.contiguous()

        def both() -> None:
            torch._grouped_mm(a, w13, offs=offs)
            torch._grouped_mm(h, w2, offs=offs)

        both()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            both()
        return {"grouped_mm": self._time(graph.replay)}


def _summary(run: dict) -> str:
    t = run["timings_us"]
    cfg = run["config"] or {}
    parts = [f"tokens={run['tokens']}", f"comm_blocks={cfg.get('comm_blocks0')}", f"tile_order={cfg.get('tile_order')}",
             f"tile_layout={cfg.get('tile_layout', 'by-source')}"]
    if cfg.get("pull_rows"):
        parts.append(f"pull_rows={cfg['pull_rows']}")
    if cfg.get("comm_deal", "static") != "static":
        parts.append(f"comm_deal={cfg['comm_deal']}")
    if cfg.get("layer1_pieces", 1) > 1:
        parts.append(f"split_k={cfg['layer1_pieces']}")
    parts += [f"{k}={v:.0f}" for k, v in t.items()]
    parts += [f"err={max(run['max_rel_error'].values(), default=0):.4f}"]
    return " ".join(parts)
