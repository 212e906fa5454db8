"""The fused MoE layer on every rank: fixed-capacity buffers, the device-side plan, the launches.

    layer = FusedMoE(local_weights, top_k, max_tokens, group, FusedConfig(...))
    out = layer(x, ids, topk_weights)          # (T, H), fp32 like the reference by default
    step = layer.graphed(tokens)               # the same forward captured in a CUDA graph
    out = step(x, ids, topk_weights)           # new inputs and routings, replayed
    layer.check()                              # raise if a bounded wait gave up (reads the error slot)

One call, all on the device and in stream order, no host sync:

1. epoch += 1; order this rank's (token, slot) pairs by expert (kernels/fused_pack.py, two
   launches); gather the token rows in that order into the send region of `xbuf`; the per-expert
   counts land in `meta`, where the peers read them.
2. device barrier: every rank has published (and every rank is past the previous call).
3. the plan (kernels/fused_plan.py, one kernel) from every rank's counts, read through peer memory.
4. layer0 kernel (pull + GEMM0 + SwiGLU), layer1 kernel (GEMM1 + push).
5. device barrier: every rank's results have landed in their sources' combine regions.
6. the weighted top-k sum of the combine region, one pass.

Buffers the peers read or write (`xbuf`, `ybuf`, `meta`, the barrier signals) are symmetric
memory on GPUs (torch.distributed._symmetric_memory) and shared-memory files on the CPU;
they are allocated once for `max_tokens` tokens per rank: a call with more raises before
anything is written. Ranks may hold different token counts in one call.

The error slot (a stuck wait) is read on demand by `check()`, and by the call itself every
`check_every` eager calls (0: never; never inside a graph capture): reading it is a host sync.

The copy-engine variant (`comm_blocks0 = 0`): the rows of each source move by one peer
`copy_` on a side stream, each followed by a stream-written flag (no SM needed), while every
SM computes. The copy sizes are needed on the host, so that variant syncs once per call and
cannot be captured in a graph.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.distributed as dist
import triton
from comet_dse.kernels.fused_moe import (
    BARRIER_CODE,
    COMPUTE_ONLY,
    FULL,
    NO_LAYERS,
    barrier_kernel,
    combine_kernel,
    dedup_kernel,
    layer0_kernel,
    layer1_kernel,
    place_own_kernel,
)
from comet_dse.choices import (
    COMM_DEALS,
    GATE_UP_LAYOUTS,
    MAX_SPLIT_K,
    TILE_LAYOUTS,
    TILE_ORDERS,
    default_layer1_stages,
    default_layer1_width,
    layer1_pieces,
    layout_that_runs,
)
from comet_dse.kernels.fused_pack import order_pairs, scratch_size
from comet_dse.kernels.fused_plan import (
    ROW_ORDERS,
    DevicePlan,
    device_plan,
    layout_groups,
    max_row_tiles,
    source_rotation,
)
from comet_dse.kernels.grouped_gemm import sm_count
from comet_dse.kernels.reference import MoEWeights, round_robin_ids
from comet_dse.kernels.timing import capture_graph
from triton.tools.tensor_descriptor import TensorDescriptor

__all__ = ["ROW_ORDERS", "TILE_ORDERS", "FusedConfig", "FusedMoE", "GraphedForward", "PeerBuffer", "combine_rows"]


class Prereduced(NamedTuple):
    """What the combine needs where layer1 sent each peer's rows of a token as one sum (FusedConfig.prereduce)."""

    expert: torch.Tensor  # each slot's expert, laid out like pos: which rank holds it
    red: torch.Tensor  # the peers' sums, row peer * max_tokens + token
    rank: int
    experts: int  # per rank
    max_tokens: int
    world: int


def combine_rows(rows: torch.Tensor, pos: torch.Tensor, weights: torch.Tensor, out: torch.Tensor,
                 prereduced: Prereduced | None = None) -> None:
    """out[t] = sum_j weights[t, j] * rows[pos[t * top_k + j]] in fp32, one pass (fused_moe.combine_kernel):
    the last step of the forward, and what calibrate times as the "combine" memory pass. With `prereduced`
    only the slots this rank holds come from `rows`, the rest as one row per holding peer."""
    tokens, top_k = weights.shape
    hidden = out.shape[1]
    block_t, block_h = 16, min(256, triton.next_power_of_2(hidden))
    # without it the kernel's PREREDUCED branch is compiled out: its arguments are placeholders
    p = prereduced or Prereduced(pos, rows, 0, 1, 0, 1)
    combine_kernel[(triton.cdiv(tokens, block_t), triton.cdiv(hidden, block_h))](
        rows, pos, weights, out, tokens, hidden, p.expert, p.red, p.rank, p.experts, p.max_tokens,
        TOP_K=top_k, BLOCK_T=block_t, BLOCK_H=block_h, PREREDUCED=prereduced is not None, WORLD=p.world)


def gate_up_weight(w13: torch.Tensor, layout: str) -> torch.Tensor:
    """(E, H, 2F) gate | up halves as GEMM0 reads them: unchanged ("halves"), or "pairs": column 2j
    gate j, column 2j + 1 up j (one dot per step covers a column tile's gate and up)."""
    if layout not in GATE_UP_LAYOUTS:
        raise ValueError(f"gate_up must be one of {', '.join(GATE_UP_LAYOUTS)}, got {layout!r}")
    if layout == "halves":
        return w13.contiguous()
    ffn = w13.shape[2] // 2
    return torch.stack([w13[..., :ffn], w13[..., ffn:]], dim=-1).reshape(w13.shape).contiguous()


@dataclass(frozen=True)
class FusedConfig:
    """The knobs, named as in the simulator's `comet` schedule (comm_blocks0 = 0: copy engine)."""

    comm_blocks0: int = 16
    comm_blocks1: int = 16
    block_m: int = 128
    block_n: int = 128
    block_n1: int | None = None  # layer1's tile width; default comet_dse.choices.default_layer1_width
    flatten: bool = False  # software-pipeline across tiles where no wait intervenes (own tiles, GEMM1)
    # the order both layers visit the row tiles: "layout" (layer0 own tiles first, layer1 remote first: most
    # overlap) or "expert" (expert by expert: each expert's weights stream from HBM once, for few rows per expert)
    tile_order: str = "layout"
    # "merged": a row tile may hold rows of several sources (one expert; at most one partial tile per
    # expert); "by-source": never (kernels/fused_plan.py). The copy engine (comm_blocks0 = 0) and a
    # group of one rank always use by-source (`FusedMoE.merged` says which ran).
    tile_layout: str = "merged"
    block_k: int = 64
    group_m: int = 8
    row_order: str = "local-first"
    n_splits: int = 4
    programs: int | None = None  # grid size; default: the SM count
    max_spins: int = 1 << 24  # a tile wait longer than this gives up and records an error
    barrier_spins: int = 1 << 26  # the same for a device barrier (it waits for a peer's whole layer)
    num_warps: int = 8
    num_stages: int = 3
    num_stages1: int | None = None  # layer1's pipeline depth; default comet_dse.choices.default_layer1_stages
    copy_elems: int = 16384  # elements one communication block moves per step (16-byte vectors)
    check_every: int = 0  # eager calls between reads of the error slot (0: only check())
    # GEMM0's weight: "halves" (gate in the first F columns, up in the next F: two dots per step) or
    # "pairs" (interleaved column by column: one dot of twice the width, split in registers); with
    # tma_store, layer0's full tiles leave through an asynchronous TMA store. Together layer0 5-9% faster on
    # H200 at both target shapes, neither alone more than 1% (results/measurements/ep2_h200/gemm_variants/)
    gate_up: str = "pairs"
    tma_store: bool = True
    # layer0 brings a token across the link once per destination rank: its other rows there are copied
    # from the first (fused_moe.dedup_kernel). Needs communication blocks (`FusedMoE.deduplicated` says
    # whether it ran). Off by default: on 2x H200 it was no faster, up to 1.3x slower at 4-8 blocks
    # (results/measurements/tp2_h200/dedup/; how many rows it found landed there was not counted)
    dedup: bool = False
    # layer1 sends a token's rows at a rank home as one row, their weighted sum (the top-k pre-reduction; under
    # TP, the reduce-scatter's bytes): a split leaves once every remote tile has it, not tile by tile
    # (fused_moe._reduce_tokens). `FusedMoE.prereduced` says whether it ran (it needs a peer). Off by default: on
    # 2x H200 on a par, 0.95-1.04x the time at each layer's best block count (run 56, results/measurements/prereduce_h200/)
    prereduce: bool = False
    # rows a communication block pulls as one piece of work in layer0 (None: a whole row tile, block_m rows). Fewer
    # split a tile over several blocks, so its rows land sooner and the compute blocks waiting on the first tiles
    # start earlier; the block counting a tile's last piece in raises its flag. Off by default: on 2x H200 it slows the
    # pulls themselves and won 3% only at Qwen2-MoE's 1024 tokens (run 109, results/measurements/ep2_h200/pull_rows/)
    pull_rows: int | None = None
    # how the communication blocks share the remote tiles (comet_dse.choices.COMM_DEALS): "static", round robin fixed at
    # launch (item i to block i mod n); "dynamic", each block draws its next item from a counter when it is done with
    # one, so none ends holding more than one item beyond the rest. On bench's routing round robin left the most
    # loaded block 1.24-1.27x the mean rows at 16 blocks (run 114, results/measurements/ep2_h200/run114/)
    comm_deal: str = "static"
    # layer1's split-K: the most pieces along K (the FFN width) each (row tile, column tile) item of the compute blocks'
    # last round is cut into where that round is partly filled, so its pieces fill it (Mixtral at 1024 tokens, EP=2:
    # 256 items on 124 blocks, 2 full rounds and 8 items; fused_moe._tail_pieces), each piece at least split_k_min of
    # K. 1: off (the default). Its fp32 partials take a tile of block_m x layer1's width per program (17 MB at 132 SMs)
    split_k: int = 1
    split_k_min: int = 1024

    def layout(self, world: int) -> str:
        """The tile layout that runs on `world` ranks: merged needs communication blocks and a peer."""
        return layout_that_runs(self.tile_layout, self.comm_blocks0, world)

    def deduplicates(self, world: int) -> bool:
        """Whether layer0 brings a token to a rank once (dedup, where communication blocks pull)."""
        return self.dedup and self.comm_blocks0 > 0 and world > 1

    def prereduces(self, world: int) -> bool:
        """Whether layer1 sends a token's rows at a rank home as one sum (prereduce, where there is a peer)."""
        return self.prereduce and world > 1

    def layer1_width(self, hidden: int) -> int:
        return self.block_n1 or default_layer1_width(hidden, self.n_splits, self.block_n)

    def layer1_pieces(self, ffn: int) -> int:
        """The most K pieces a layer1 item may be cut into: split_k, fewer where a piece would take less than
        split_k_min of the FFN width (in whole K steps)."""
        return layer1_pieces(self.split_k, ffn, self.block_k, self.split_k_min)

    def layer1_stages(self, ffn: int) -> int:
        if self.num_stages1:
            return self.num_stages1
        # the fourth stage was measured at 128-row tiles, 64-deep K steps and 3 stages otherwise; another
        # choice keeps its own depth (a deeper one may not fit in shared memory)
        measured = (self.num_stages, self.block_m, self.block_k) == (3, 128, 64)
        return default_layer1_stages(ffn, self.num_stages) if measured else self.num_stages

    @classmethod
    def from_plan(cls, plan, tokens: int, **overrides) -> FusedConfig:
        """The configuration a comet-dse plan picks for `tokens` tokens per GPU."""
        picked = plan.lookup(tokens)
        keys = ("comm_blocks0", "comm_blocks1", "block_m", "block_n", "row_order", "n_splits", "tile_layout", "tile_order")
        return cls(**{**{k: picked[k] for k in keys if k in picked}, **overrides})


class PeerBuffer:
    """A (rows, cols) buffer every rank of `group` can address. `deltas[r]` is rank r's copy as
    an element offset from this rank's (see fused_moe.py); `peer(r)` is a tensor over it."""

    def __init__(self, rows: int, cols: int, dtype: torch.dtype, device: torch.device, group) -> None:
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.shape, self.dtype = (rows, cols), dtype
        elem = torch.empty(0, dtype=dtype).element_size()
        if device.type == "cuda":
            import torch.distributed._symmetric_memory as symm

            self.local = symm.empty((rows, cols), dtype=dtype, device=device)
            self._handle = symm.rendezvous(self.local, (group or dist.group.WORLD).group_name)
            self._peers = [self.local if r == self.rank else self._handle.get_buffer(r, (rows, cols), dtype)
                           for r in range(self.world)]
            ptrs = list(self._handle.buffer_ptrs)
        else:  # one shared-memory file per rank, mapped by every rank
            token = [uuid.uuid4().hex if self.rank == 0 else None]
            dist.broadcast_object_list(token, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
            paths = [f"/dev/shm/comet-dse-{token[0]}-{r}" for r in range(self.world)]
            size = rows * cols
            self.local = torch.from_file(paths[self.rank], shared=True, size=size, dtype=dtype).view(rows, cols)
            dist.barrier(group=group)
            self._peers = [self.local if r == self.rank else
                           torch.from_file(paths[r], shared=True, size=size, dtype=dtype).view(rows, cols)
                           for r in range(self.world)]
            dist.barrier(group=group)
            os.unlink(paths[self.rank])  # the mappings stay valid; nothing is left in /dev/shm
            ptrs = [p.data_ptr() for p in self._peers]
        base = self.local.data_ptr()
        if any((p - base) % (16 * elem) for p in ptrs):
            raise RuntimeError("peer buffers are not 16-element aligned with the local one")
        self.deltas = torch.tensor([(p - base) // elem for p in ptrs], dtype=torch.int64, device=device)

    def peer(self, rank: int) -> torch.Tensor:
        return self._peers[rank]


class GraphedForward:
    """A captured forward: `step(x, ids, weights)` copies its inputs into the graph's and replays
    it; `set_inputs` + `replay` do the same in two steps (benchmarks time only the replay)."""

    def __init__(self, graph, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        self.graph, self.inputs, self.out = graph, inputs, out

    def set_inputs(self, *inputs: torch.Tensor) -> None:
        for static, new in zip(self.inputs, inputs, strict=True):
            static.copy_(new)

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.out

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.set_inputs(*inputs)
        return self.replay()


def capture_forward(forward, layer: FusedMoE, tokens: int, top_k: int, experts: int, mode: int, warmup: int) -> GraphedForward:
    """`forward(x, ids, weights, mode)` for `tokens` tokens, routed over `experts` experts, in a CUDA
    graph, after `warmup` eager calls on a side stream; `layer` is the FusedMoE it runs."""
    if layer.device.type != "cuda":
        raise ValueError("CUDA graphs need a GPU")
    if layer.cfg.comm_blocks0 == 0 and mode != COMPUTE_ONLY:  # its compute-only variant moves nothing
        raise ValueError("the copy-engine variant (comm_blocks0=0) syncs with the host per call: no graph")
    x = torch.zeros(tokens, layer.hidden, dtype=layer.dtype, device=layer.device)
    ids = round_robin_ids(tokens, top_k, experts, layer.device)
    weights = torch.full((tokens, top_k), 1.0 / top_k, device=layer.device)
    graph, out = capture_graph(lambda: forward(x, ids, weights, mode), warmup, layer.device)
    return GraphedForward(graph, (x, ids, weights), out)


class FusedMoE:
    def __init__(self, weights: MoEWeights, top_k: int, max_tokens: int, group=None, config: FusedConfig = FusedConfig(),
                 dtype: torch.dtype = torch.bfloat16, out_dtype: torch.dtype = torch.float32,
                 rows_per_token: int | None = None) -> None:
        """rows_per_token: the most rows one token sends one rank (default top_k; kernels/fused_tp.py's
        virtual experts give a token top_k * tp slots but at most top_k rows to any one rank)."""
        cfg = self.cfg = config
        self.group, self.top_k, self.max_tokens = group, top_k, max_tokens
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.device, self.dtype, self.out_dtype = weights.w_gate_up.device, dtype, out_dtype
        self.w13 = gate_up_weight(weights.w_gate_up.to(dtype), cfg.gate_up)  # (E_l, H, 2F)
        self.w2 = weights.w_down.to(dtype).contiguous()  # (E_l, F, H)
        self.experts, self.hidden, self.ffn = self.w13.shape[0], self.w13.shape[1], self.w2.shape[1]
        self.programs = cfg.programs or sm_count(self.device)
        self._validate()
        world, hidden = self.world, self.hidden
        self.send_rows = max_tokens * top_k
        # every token of every rank routed here
        recv_rows = world * max_tokens * min(rows_per_token or top_k, self.experts)
        self.merged = cfg.layout(world) == "merged"
        self.deduplicated = cfg.deduplicates(world)
        # layer0's pieces per row tile (pull_rows); dedup pulls whole tiles (its waits are per tile)
        self.pull_parts = 1 if self.deduplicated or cfg.pull_rows is None else cfg.block_m // cfg.pull_rows
        self.max_tiles = max_row_tiles(recv_rows, layout_groups(world, self.experts, self.merged), cfg.block_m)
        # ---- peer-addressable buffers: send + receive rows; combine + staging rows; counts; signals ----
        self.xbuf = PeerBuffer(self.send_rows + recv_rows, hidden, dtype, self.device, group)
        self.ybuf = PeerBuffer(self.send_rows + recv_rows, hidden, dtype, self.device, group)
        self.meta = PeerBuffer(1, world * self.experts, torch.int32, self.device, group)
        self.sig = PeerBuffer(1, 2 * world, torch.int32, self.device, group)
        self.sig.local.zero_()
        # ---- local state ----
        self.h = torch.empty(recv_rows, self.ffn, dtype=dtype, device=self.device)
        self.flags = torch.zeros(self.max_tiles + world, dtype=torch.int32, device=self.device)
        # per (row tile, split), then per split (the pre-reduction waits for a whole split), then layer0's pieces
        # pulled per row tile (FusedConfig.pull_rows): one memset zeroes them all each call
        # then layer1's split-K arrivals per item (FusedConfig.split_k), its fp32 partials beside
        # (the last round's pieces fill at most one round: a slot per program)
        self.split_k = cfg.layer1_pieces(self.ffn)
        self.split_k_slots = self.programs if self.split_k > 1 else 0
        self.split_k_base = (self.max_tiles + 1) * cfg.n_splits + self.max_tiles
        self.counters = torch.zeros(self.split_k_base + self.split_k_slots, dtype=torch.int32, device=self.device)
        self.pulled = self.counters[(self.max_tiles + 1) * cfg.n_splits:self.split_k_base]  # layer0's: a view, made once
        self.partials = torch.empty(self.split_k_slots, cfg.block_m, cfg.layer1_width(hidden), dtype=torch.float32,
                                    device=self.device) if self.split_k > 1 else self.counters
        self.err = torch.zeros(1, dtype=torch.int32, device=self.device)
        # comm_deal "dynamic": layer0's item counter and its blocks out, then layer1's; the kernels zero them as they end
        self.claims = torch.zeros(4, dtype=torch.int32, device=self.device)
        self.epoch = torch.zeros(1, dtype=torch.int32, device=self.device)
        # int64 (start, end) in globaltimer ns per program of the next layer launches where set (a GPU only: calibrate's
        # spans inside a kernel, `program_spans`); None: the kernels time nothing
        self.stamps: torch.Tensor | None = None
        self.pos = torch.zeros(self.send_rows, dtype=torch.int64, device=self.device)  # pair -> its send row
        self.prereduced = cfg.prereduces(world)
        if self.prereduced:
            # per slot (t * top_k + j): its expert, its send row, its weight's fp32 bits; [3, 0] the token count.
            # Peers read it to sum a token's rows there; `red` takes each peer's sums, max_tokens rows per peer
            self.route = PeerBuffer(4, self.send_rows, torch.int32, self.device, group)
            self.red = PeerBuffer(world * max_tokens, hidden, dtype, self.device, group)
            # this rank's own copy of each peer's slots here, as (staging row, weight bits) per token, built by layer1
            self.route_table = torch.empty(world, 2, triton.next_power_of_2(top_k), max_tokens, dtype=torch.int32,
                                           device=self.device)
        if self.deduplicated:
            # the send rows' tokens, in peer memory: peers read them to find the rows they would pull twice
            self.tok = PeerBuffer(1, self.send_rows, torch.int32, self.device, group)
            self.token_of_row = self.tok.local[0]
            self.firsts = torch.empty(world * max_tokens, dtype=torch.int32, device=self.device)
            self.dup_row = torch.empty(recv_rows, dtype=torch.int32, device=self.device)
            self.dup_tile = torch.empty(recv_rows, dtype=torch.int32, device=self.device)
        else:
            self.token_of_row = torch.zeros(self.send_rows, dtype=torch.int32, device=self.device)
        self.order_scratch = torch.empty(scratch_size(self.send_rows, world * self.experts), dtype=torch.int32,
                                         device=self.device)
        rotation = source_rotation(self.rank, world, cfg.row_order)
        self.rotation = torch.tensor(rotation, device=self.device)
        self.own_pos = rotation.index(self.rank)  # this rank's layout position: its piece of each expert
        self.plan = DevicePlan.empty(self.max_tiles, world, self.experts, self.device)
        self._calls = 0
        self.delay_spins = 0  # tests: > 0 slows every layer0 producer, < 0 stops it from signalling
        # ---- TMA descriptors, made once: nothing they describe moves ----
        bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
        self.block_n1 = cfg.layer1_width(hidden)
        self.stages1 = cfg.layer1_stages(self.ffn)
        self.xbuf_desc = TensorDescriptor.from_tensor(self.xbuf.local, [bm, bk])
        self.h_desc = TensorDescriptor.from_tensor(self.h, [bm, bk])
        pairs = cfg.gate_up == "pairs"
        self.w13_desc = TensorDescriptor.from_tensor(self.w13.view(-1, 2 * self.ffn), [bk, 2 * bn if pairs else bn])
        # layer0 stores full tiles through this one (a plain argument the kernel ignores without tma_store)
        self.h_store_desc = TensorDescriptor.from_tensor(self.h, [bm, bn]) if cfg.tma_store else self.h_desc
        self.w2_desc = TensorDescriptor.from_tensor(self.w2.view(-1, hidden), [bk, self.block_n1])  # (E_l * F, H)
        dist.barrier(group=group)  # every rank's signals are zero before anyone raises one
        if self.device.type == "cuda":
            self._side = torch.cuda.Stream(self.device)

    def _validate(self) -> None:
        cfg, hidden = self.cfg, self.hidden
        if cfg.row_order not in ROW_ORDERS:
            raise ValueError(f"row_order must be one of {', '.join(ROW_ORDERS)}, got {cfg.row_order!r}")
        if cfg.tile_order not in TILE_ORDERS:
            raise ValueError(f"tile_order must be one of {', '.join(TILE_ORDERS)}, got {cfg.tile_order!r}")
        if cfg.tile_layout not in TILE_LAYOUTS:
            raise ValueError(f"tile_layout must be one of {', '.join(TILE_LAYOUTS)}, got {cfg.tile_layout!r}")
        if cfg.comm_deal not in COMM_DEALS:
            raise ValueError(f"comm_deal must be one of {', '.join(COMM_DEALS)}, got {cfg.comm_deal!r}")
        if not 0 <= cfg.comm_blocks0 < self.programs:
            raise ValueError(f"comm_blocks0 must be in [0, {self.programs - 1}] (0: copy engine), got {cfg.comm_blocks0}")
        if not 1 <= cfg.comm_blocks1 < self.programs:
            raise ValueError(f"comm_blocks1 must be in [1, {self.programs - 1}], got {cfg.comm_blocks1}")
        block_n1 = cfg.layer1_width(hidden)
        if cfg.n_splits < 1 or hidden % cfg.n_splits or (hidden // cfg.n_splits) % block_n1:
            raise ValueError(f"n_splits={cfg.n_splits} must cut H={hidden} into multiples of layer1's tile width {block_n1}")
        if hidden % 16 or self.ffn % 16:
            raise ValueError(f"H={hidden} and F={self.ffn} must be multiples of 16 (TMA rows are 16-byte aligned)")
        if cfg.prereduce and self.world > 32:
            raise ValueError(f"prereduce supports up to 32 ranks (a token's holders are a 32-bit mask), got {self.world}")
        if cfg.pull_rows is not None and not (1 <= cfg.pull_rows <= cfg.block_m and cfg.block_m % cfg.pull_rows == 0):
            raise ValueError(f"pull_rows must divide block_m={cfg.block_m}, got {cfg.pull_rows}")
        if not 1 <= cfg.split_k <= MAX_SPLIT_K or cfg.split_k_min < 1:
            raise ValueError(f"split_k must be in [1, {MAX_SPLIT_K}] and split_k_min >= 1, got {cfg.split_k} and {cfg.split_k_min}")
        if self.max_tokens < 1 or self.top_k < 1:
            raise ValueError(f"max_tokens and top_k must be >= 1, got {self.max_tokens} and {self.top_k}")

    def poison_unwritten(self) -> None:
        """Tests: NaN (its bits, in index tables) in every buffer allocated without a value, so a kernel that
        reads an entry no call wrote fails every time, not only where the allocator left such bits. Call it
        right after construction, before any peer's first call (it writes the peer-visible buffers too)."""
        for name in ("h", "route_table", "firsts", "dup_row", "dup_tile", "order_scratch"):
            buf = getattr(self, name, None)
            if buf is not None:
                buf.view(torch.float32 if buf.element_size() == 4 else buf.dtype).fill_(float("nan"))
        for name in ("xbuf", "ybuf", "red"):
            if hasattr(self, name):
                getattr(self, name).local.fill_(float("nan"))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dist.barrier(group=self.group)  # no peer reads these before they hold NaN

    # ---- the forward ------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, mode: int = FULL) -> torch.Tensor:
        """The layer's output (T, H) in `out_dtype`; `mode` COMPUTE_ONLY / COMM_ONLY runs a benchmark
        variant (its output is meaningless), NO_LAYERS everything but the two layer kernels (calibrate's
        forward_fixed_us)."""
        tokens, top_k = x.shape[0], self.top_k
        if tokens > self.max_tokens:
            raise ValueError(f"{tokens} tokens exceed this layer's capacity max_tokens={self.max_tokens}")
        if ids.shape != (tokens, top_k) or topk_weights.shape != (tokens, top_k) or x.shape[1:] != (self.hidden,):
            raise ValueError(f"expected x ({tokens}, {self.hidden}), ids and weights ({tokens}, {top_k}); got "
                             f"{tuple(x.shape)}, {tuple(ids.shape)}, {tuple(topk_weights.shape)}")
        pairs = tokens * top_k
        self.epoch.add_(1)
        # ---- 1. pack this rank's rows in expert order, publish the counts ----
        order_pairs(ids, self.world * self.experts, self.order_scratch, self.meta.local[0], self.pos, self.token_of_row)
        torch.index_select(x.to(self.dtype), 0, self.token_of_row[:pairs], out=self.xbuf.local[:pairs])
        if self.prereduced:
            route = self.route.local
            route[0, :pairs] = ids.reshape(-1)
            route[1, :pairs] = self.pos[:pairs]
            route[2, :pairs] = topk_weights.to(torch.float32).reshape(-1).view(torch.int32)
            route[3, :1].fill_(tokens)  # a memset: no host tensor in a graph capture
        self.counters.zero_()
        self._barrier(0)
        # ---- 2. the plan, from every rank's counts ----
        counts = torch.stack([self.meta.peer(r)[0] for r in range(self.world)])  # (W, E)
        plan = device_plan(counts, self.rank, self.experts, self.cfg.block_m, self.rotation, self.max_tiles, self.plan,
                           expert_order=self.cfg.tile_order == "expert", merged=self.merged)
        if self.cfg.comm_blocks0 == 0 and mode == COMPUTE_ONLY:  # nothing moves: the flags on the device
            self.flags[self.max_tiles:].copy_(self.epoch.expand(self.world))
        elif self.cfg.comm_blocks0 == 0:
            self._copy_engine_dispatch(plan)
        if self.deduplicated and mode != COMPUTE_ONLY:
            self._find_duplicates(plan)
        if self.merged and mode != COMPUTE_ONLY:  # own rows short of a full tile into their runs, on every SM
            rows = 16
            place_own_kernel[(self.experts, triton.cdiv(self.cfg.block_m, rows))](
                self.xbuf.local, plan.pieces, self.own_pos, self.send_rows, self.hidden, WORLD=self.world, ROWS=rows,
                COPY_COLS=min(triton.next_power_of_2(self.hidden), 1024))
        if mode != NO_LAYERS:
            self._launch_layer0(plan, mode)
            self._launch_layer1(plan, mode)
        if self.cfg.comm_blocks0 == 0 and mode != COMPUTE_ONLY and self.device.type == "cuda":
            torch.cuda.current_stream().wait_stream(self._side)  # the copies ran there
        self._barrier(1)
        # ---- 3. the weighted top-k sum of what came back ----
        out = torch.empty(tokens, self.hidden, dtype=self.out_dtype, device=self.device)
        if tokens:
            prereduced = (Prereduced(self.route.local[0], self.red.local, self.rank, self.experts, self.max_tokens,
                                     self.world) if self.prereduced else None)
            combine_rows(self.ybuf.local, self.pos, topk_weights.to(torch.float32).contiguous(), out, prereduced)
        self._calls += 1
        if self.cfg.check_every and self._calls % self.cfg.check_every == 0 and not self._capturing():
            self.check()
        return out

    def graphed(self, tokens: int, mode: int = FULL, warmup: int = 2) -> GraphedForward:
        """The forward for `tokens` tokens captured in a CUDA graph (see GraphedForward). Every rank
        captures and replays in the same order: the warm-up calls and the replays run the barriers."""
        return capture_forward(self, self, tokens, self.top_k, self.world * self.experts, mode, warmup)

    def check(self) -> None:
        """Raise if any bounded wait gave up since the layer was made (a host sync)."""
        code = int(self.err.item())
        if code == 0:
            return
        if code >= BARRIER_CODE:
            raise RuntimeError(f"device barrier {code - BARRIER_CODE}: a peer never arrived within "
                               f"{self.cfg.barrier_spins} spins")
        if code > 0:
            raise RuntimeError(f"layer0: a compute block waited {self.cfg.max_spins} spins for row tile {code - 1}'s rows; "
                               "its producer never raised the flag")
        counter = -code - 1
        what = (f"split {counter - self.max_tiles * self.cfg.n_splits}" if counter >= self.max_tiles * self.cfg.n_splits
                else f"(row tile, split) counter {counter}")
        raise RuntimeError(f"layer1: a communication block waited {self.cfg.max_spins} spins for the GEMM1 tiles of {what}")

    @contextmanager
    def without_waits(self) -> Iterator[None]:
        """Layer launches inside give up every wait at once (max_spins 0): tiles do not wait for their rows, pushes not
        for their tiles, so both roles run side by side at their own pace. For timing only: rows are read before they
        land. The configuration comes back after, and the error slot those give-ups set is cleared."""
        patient = self.cfg
        self.cfg = replace(patient, max_spins=0)
        try:
            yield
        finally:
            self.cfg = patient
            self.err.zero_()

    # ---- the steps -------------------------------------------------------------------------

    def _capturing(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()

    def _barrier(self, slot: int) -> None:
        barrier_kernel[(1,)](self.sig.local, self.sig.deltas, self.epoch, self.err, self.rank, slot,
                             self.cfg.barrier_spins, WORLD=self.world)

    def _find_duplicates(self, plan: DevicePlan) -> None:
        """Which remote rows repeat a (source, token) an earlier remote tile brings (fused_moe.dedup_kernel)."""
        self.firsts.fill_(torch.iinfo(torch.int32).max)
        for resolve in (False, True):
            dedup_kernel[(self.programs,)](
                plan.tiles, plan.remote, plan.num_tiles, plan.local_tiles, plan.pieces, self.tok.local, self.tok.deltas,
                self.firsts, self.dup_row, self.dup_tile, self.own_pos, self.max_tokens,
                WORLD=self.world, BLOCK_M=self.cfg.block_m, RESOLVE=resolve)

    def _copy_engine_dispatch(self, plan: DevicePlan) -> None:
        """Each peer's rows by one copy on the side stream, then its segment flag."""
        # the host sync: per source (first row, rows, first row at the source), and the epoch
        *segments, epoch = torch.cat([plan.segments.reshape(-1), self.epoch.to(torch.int64)]).tolist()
        for src in range(self.world):
            first, rows, at_src = segments[3 * src:3 * src + 3]
            if src == self.rank:
                continue
            dst = self.xbuf.local[self.send_rows + first:self.send_rows + first + rows]
            if self.device.type == "cuda":
                self._side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(self._side):
                    dst.copy_(self.xbuf.peer(src)[at_src:at_src + rows], non_blocking=True)
                    torch._C._distributed_c10d._SymmetricMemory.stream_write_value32(
                        self.flags.view(torch.uint32), self.max_tiles + src, epoch)
            else:
                dst.copy_(self.xbuf.peer(src)[at_src:at_src + rows])
                self.flags[self.max_tiles + src] = epoch

    def _launch_layer0(self, plan: DevicePlan, mode: int) -> None:
        cfg, hidden = self.cfg, self.hidden
        copy_cols = min(triton.next_power_of_2(hidden), 2048, cfg.copy_elems)
        layer0_kernel[(self.programs,)](
            self.xbuf.local, self.xbuf.deltas, self.xbuf_desc, self.w13_desc, self.h, self.h_store_desc, plan.tiles,
            plan.order1, plan.remote,
            plan.num_tiles, plan.local_tiles, plan.pieces, self.flags, self.err, self.epoch,
            *((self.dup_row, self.dup_tile) if self.deduplicated else (self.flags, self.flags)),
            self.pulled, self.err if self.stamps is None else self.stamps, self.claims, self.rank, self.own_pos,
            cfg.max_spins, self.delay_spins, hidden, self.ffn, self.send_rows, self.max_tiles, cfg.comm_blocks0, self.programs,
            WORLD=self.world, COPY_ROWS=max(1, cfg.copy_elems // copy_cols), COPY_COLS=copy_cols, BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m, MODE=mode, FLATTEN=cfg.flatten, SEG_FLAGS=cfg.comm_blocks0 == 0, PROXY_FENCE=self.device.type == "cuda",
            EXPERT_ORDER=cfg.tile_order == "expert", PAIRS=cfg.gate_up == "pairs", TMA_STORE=cfg.tma_store,
            DEDUP=self.deduplicated, PULL_PARTS=self.pull_parts, STAMPS=self.stamps is not None,
            DYNAMIC=cfg.comm_deal == "dynamic", num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )

    def _launch_layer1(self, plan: DevicePlan, mode: int) -> None:
        cfg, hidden = self.cfg, self.hidden
        split_cols = hidden // cfg.n_splits
        copy_cols = min(triton.next_power_of_2(split_cols), 2048, cfg.copy_elems)
        copy_rows = max(1, cfg.copy_elems // copy_cols)
        # a pre-reduction step: REDUCE_ROWS tokens, their slots here summed one after another as (token, column) blocks of
        # up to 128 columns (256-byte row pieces): as many tokens as four copy steps hold over the slots (the loads of
        # every slot in flight at once; a table read comes before them, so a step waits on two round trips where a
        # copy waits on one), up to 64, and at least a 16-byte vector per thread in each block (fewer compile to
        # 8-byte loads; small copy steps, the tests', excepted). No spills at 2-16 slots (tests/kernels/hopper_sass.py)
        k_p2 = triton.next_power_of_2(self.top_k)
        reduce_cols = min(128, triton.next_power_of_2(split_cols))
        vector_tile = min(cfg.copy_elems, cfg.num_warps * 32 * 8)
        reduce_rows = min(64, max(8, 4 * cfg.copy_elems // (k_p2 * reduce_cols), vector_tile // reduce_cols))
        # without the pre-reduction its peer tables are unused arguments (any tensors)
        route, red = (self.route, self.red) if self.prereduced else (self.ybuf, self.ybuf)
        table = self.route_table if self.prereduced else self.counters
        layer1_kernel[(self.programs,)](
            self.h_desc, self.w2_desc, self.ybuf.local, self.ybuf.deltas, plan.tiles, plan.order1, plan.remote, plan.num_tiles,
            plan.local_tiles, plan.pieces, self.counters, self.err, route.local, route.deltas, red.local, red.deltas,
            table, self.rotation, self.err if self.stamps is None else self.stamps, self.claims[2:], self.partials, self.rank,
            self.own_pos, cfg.max_spins,
            hidden, self.ffn,
            self.send_rows, split_cols, self.programs - cfg.comm_blocks1, self.programs, self.max_tiles * cfg.n_splits,
            self.split_k_base, self.experts, self.max_tokens,
            WORLD=self.world, N_SPLITS=cfg.n_splits, COL_TILES=split_cols // self.block_n1,
            COPY_ROWS=copy_rows, COPY_COLS=copy_cols, BLOCK_M=cfg.block_m, BLOCK_N=self.block_n1, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m, MODE=mode,
            FLATTEN=cfg.flatten, PREREDUCE=self.prereduced, TOP_K=self.top_k, K_P2=k_p2,
            REDUCE_ROWS=reduce_rows, REDUCE_COLS=reduce_cols, STAMPS=self.stamps is not None,
            DYNAMIC=cfg.comm_deal == "dynamic", SPLIT_K=self.split_k, num_warps=cfg.num_warps, num_stages=self.stages1,
        )
