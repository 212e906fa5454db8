"""The fused MoE layer on every rank: buffers, the host plan of each call, both kernels.

    layer = FusedMoE(local_weights, top_k, max_tokens, group, FusedConfig(...))
    out = layer(x, ids, topk_weights)          # (T, H) fp32, like the reference

Buffers the peers read or write (tokens in, combine rows out) are symmetric memory on
GPUs (torch.distributed._symmetric_memory) and shared-memory files on the CPU; every other
buffer is local. Each call all-gathers the routing (small) and plans on the host which rows
each rank pulls, in which order, and where every output row goes; the kernels then move and
compute without further host involvement. All ranks hold the same token count per call.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from comet_dse.kernels.fused_moe import FULL, layer0_kernel, layer1_kernel
from comet_dse.kernels.grouped_gemm import sm_count
from comet_dse.kernels.reference import MoEWeights
from triton.tools.tensor_descriptor import TensorDescriptor

ROW_ORDERS = ("local-first", "source-order")


@dataclass(frozen=True)
class FusedConfig:
    """The knobs, named as in the simulator's `comet` schedule."""

    comm_blocks0: int = 16
    comm_blocks1: int = 16
    block_m: int = 128
    block_n: int = 128
    block_k: int = 64
    row_order: str = "local-first"
    n_splits: int = 4
    programs: int | None = None  # grid size; default: the SM count
    max_spins: int = 1 << 26  # a wait longer than this raises instead of hanging
    weight_tma: bool = True  # weight tiles through TMA descriptors (masked pointer loads otherwise)

    @classmethod
    def from_plan(cls, plan, tokens: int, **overrides) -> FusedConfig:
        """The configuration a comet-dse plan picks for `tokens` tokens per GPU."""
        picked = plan.lookup(tokens)
        keys = ("comm_blocks0", "comm_blocks1", "block_m", "block_n", "row_order", "n_splits")
        return cls(**{k: picked[k] for k in keys if k in picked}, **overrides)


class PeerBuffer:
    """A (rows, cols) buffer every rank of `group` can address; `deltas[r]` is rank r's copy
    as an element offset from this rank's (see fused_moe.py)."""

    def __init__(self, rows: int, cols: int, dtype: torch.dtype, device: torch.device, group) -> None:
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        elem = torch.empty(0, dtype=dtype).element_size()
        if device.type == "cuda":
            import torch.distributed._symmetric_memory as symm

            self.local = symm.empty((rows, cols), dtype=dtype, device=device)
            handle = symm.rendezvous(self.local, group.group_name if group is not None else dist.group.WORLD.group_name)
            ptrs = list(handle.buffer_ptrs)
            self._keep = [handle]
        else:  # one shared-memory file per rank, mapped by every rank
            token = [uuid.uuid4().hex if self.rank == 0 else None]
            dist.broadcast_object_list(token, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
            paths = [f"/dev/shm/comet-dse-{token[0]}-{r}" for r in range(self.world)]
            size = rows * cols
            self.local = torch.from_file(paths[self.rank], shared=True, size=size, dtype=dtype).view(rows, cols)
            dist.barrier(group=group)
            peers = [self.local if r == self.rank else torch.from_file(paths[r], shared=True, size=size, dtype=dtype)
                     for r in range(self.world)]
            dist.barrier(group=group)
            os.unlink(paths[self.rank])  # the mappings stay valid; nothing is left in /dev/shm
            ptrs = [p.data_ptr() for p in peers]
            self._keep = peers
        base = self.local.data_ptr()
        if any((p - base) % elem for p in ptrs):
            raise RuntimeError("peer buffers are not element-aligned with the local one")
        self.deltas = torch.tensor([(p - base) // elem for p in ptrs], dtype=torch.int64, device=device)


@dataclass
class _Plan:
    row_src: np.ndarray  # (R,) source rank of each shared-tensor row
    row_tok: np.ndarray  # (R,) token index at the source
    row_slot: np.ndarray  # (R,) token * top_k + k: the row's place in the source's combine buffer
    counts: list[int]  # rows per local expert
    pull: np.ndarray  # (P, 2) row tiles (first row, rows) in pull order
    tiles0: np.ndarray  # (T0, 5) expert, first row, rows, first column, pull index
    tiles1: np.ndarray  # (T1, 5) expert, first row, rows, first column, (row tile, split) counter
    sends: np.ndarray  # (S, 4) first row, rows, split, counter


def plan_rows(all_ids: np.ndarray, rank: int, experts_per_rank: int, cfg: FusedConfig, ffn: int, hidden: int) -> _Plan:
    """all_ids (W, T, k): every rank's routing. Lays out this rank's shared tensor and orders the work.

    Vectorised (numpy): it runs on the host at every call, before the kernels can start."""
    world, tokens, top_k = all_ids.shape
    order = (rank + np.arange(world)) % world if cfg.row_order == "local-first" else np.arange(world)
    rotation = np.empty(world, dtype=np.int64)
    rotation[order] = np.arange(world)
    # ---- the shared tensor: local experts in turn, sources in the row order, then token, slot ----
    local = all_ids.reshape(world, tokens * top_k).astype(np.int64) - rank * experts_per_rank
    src, pair = np.nonzero((local >= 0) & (local < experts_per_rank))  # pair = token * top_k + slot
    expert = local[src, pair]
    rows = np.lexsort((pair, rotation[src], expert))
    src, pair, expert = src[rows], pair[rows], expert[rows]
    counts = np.bincount(expert, minlength=experts_per_rank)
    # ---- row tiles of BLOCK_M rows, never across experts ----
    tiles_per = -(-counts // cfg.block_m)
    rt_expert = np.repeat(np.arange(experts_per_rank), tiles_per)
    index = np.arange(len(rt_expert)) - np.repeat(np.cumsum(tiles_per) - tiles_per, tiles_per)
    rt_first = np.repeat(np.cumsum(counts) - counts, tiles_per) + index * cfg.block_m
    rt_rows = np.minimum(cfg.block_m, np.repeat(counts, tiles_per) - index * cfg.block_m)
    first_rot, last_rot = rotation[src[rt_first]], rotation[src[rt_first + rt_rows - 1]]
    n = len(rt_expert)
    # layer0: pull the tiles in the order their last source arrives (local-only tiles first)
    pull_order = np.lexsort((np.arange(n), last_rot))
    pull = np.stack([rt_first[pull_order], rt_rows[pull_order]], axis=1)
    cols0 = np.arange(0, ffn, cfg.block_n)
    t0 = np.repeat(pull_order, len(cols0))
    tiles0 = np.stack([rt_expert[t0], rt_first[t0], rt_rows[t0], np.tile(cols0, n), np.repeat(np.arange(n), len(cols0))], axis=1)
    # layer1: remote rows first (their results travel), local last; column split by column split
    key = (first_rot - 1) % world if cfg.row_order == "local-first" else first_rot
    order1 = np.lexsort((np.arange(n), key))
    split_cols = hidden // cfg.n_splits
    per_split = np.arange(0, split_cols, cfg.block_n)
    t1 = np.repeat(order1, len(per_split))
    tiles1 = np.concatenate([
        np.stack([rt_expert[t1], rt_first[t1], rt_rows[t1], np.tile(per_split + j * split_cols, n),
                  np.repeat(np.arange(n), len(per_split)) * cfg.n_splits + j], axis=1)
        for j in range(cfg.n_splits)]) if n else np.zeros((0, 5), dtype=np.int64)
    sends = np.concatenate([
        np.stack([rt_first[order1], rt_rows[order1], np.full(n, j), np.arange(n) * cfg.n_splits + j], axis=1)
        for j in range(cfg.n_splits)]) if n else np.zeros((0, 4), dtype=np.int64)
    return _Plan(src, pair // top_k, pair, counts.tolist(), pull.reshape(-1, 2), tiles0.reshape(-1, 5), tiles1, sends)


class FusedMoE:
    def __init__(self, weights: MoEWeights, top_k: int, max_tokens: int, group=None, config: FusedConfig = FusedConfig(),
                 dtype: torch.dtype = torch.bfloat16) -> None:
        self.group, self.cfg, self.top_k = group, config, top_k
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.device = weights.w_gate_up.device
        self.dtype = dtype
        self.w13 = weights.w_gate_up.to(dtype).contiguous()  # (E_local, H, 2F)
        self.w2 = weights.w_down.to(dtype).contiguous()  # (E_local, F, H)
        # weight descriptors over (E * K, width) views; made once, the weights do not move
        self.w13_desc = TensorDescriptor.from_tensor(self.w13.view(-1, self.w13.shape[2]), [config.block_k, config.block_n])
        self.w2_desc = TensorDescriptor.from_tensor(self.w2.view(-1, self.w2.shape[2]), [config.block_k, config.block_n])
        self.experts, self.hidden, self.ffn = self.w13.shape[0], self.w13.shape[1], self.w2.shape[1]
        if self.hidden % config.n_splits or (self.hidden // config.n_splits) % config.block_n:
            raise ValueError(f"n_splits={config.n_splits} must cut H={self.hidden} into multiples of block_n={config.block_n}")
        self.programs = config.programs or sm_count(self.device)
        for name in ("comm_blocks0", "comm_blocks1"):
            if not 1 <= getattr(config, name) < self.programs:
                raise ValueError(f"{name} must be in [1, {self.programs - 1}], got {getattr(config, name)}")
        self.max_tokens = max_tokens
        self.x_buf = PeerBuffer(max_tokens, self.hidden, dtype, self.device, group)
        self.comb_buf = PeerBuffer(max_tokens * top_k, self.hidden, dtype, self.device, group)
        self.flags = torch.zeros(max_tokens * top_k * self.world + self.experts, dtype=torch.int32, device=self.device)
        self.err = torch.zeros(1, dtype=torch.int32, device=self.device)
        self.epoch = 0

    def _barrier(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dist.barrier(group=self.group)

    def __call__(self, x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, mode: int = FULL) -> torch.Tensor:
        """The layer's output; `mode` COMPUTE_ONLY / COMM_ONLY runs a benchmark variant (output meaningless)."""
        tokens = x.shape[0]
        if tokens > self.max_tokens:
            raise ValueError(f"{tokens} tokens exceed max_tokens={self.max_tokens}")
        gathered = [torch.empty_like(ids) for _ in range(self.world)]
        dist.all_gather(gathered, ids.contiguous(), group=self.group)  # the routing, small
        all_ids = torch.stack(gathered).cpu().numpy()
        plan = plan_rows(all_ids, self.rank, self.experts, self.cfg, self.ffn, self.hidden)
        as_dev = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)).to(self.device)  # noqa: E731
        row_src, row_tok, row_slot = as_dev(plan.row_src), as_dev(plan.row_tok), as_dev(plan.row_slot)
        rows = len(plan.row_src)
        shared = torch.empty(rows, self.hidden, dtype=self.dtype, device=self.device)
        h = torch.empty(rows, self.ffn, dtype=self.dtype, device=self.device)
        y = torch.empty(rows, self.hidden, dtype=self.dtype, device=self.device)
        self.x_buf.local[:tokens] = x.to(self.dtype)
        self.epoch += 1
        self.err.zero_()
        self._barrier()  # every rank's tokens are in place; the last call's combine rows were read
        self.launch_layer0(plan, shared, h, row_src, row_tok, mode=mode)
        self._raise_stuck("layer0")
        counters = torch.zeros(max(1, len(plan.sends)), dtype=torch.int32, device=self.device)
        self.launch_layer1(plan, h, y, counters, row_src, row_slot, mode=mode)
        self._raise_stuck("layer1")
        self._barrier()  # every rank's rows have landed in their owners' combine buffers
        comb = self.comb_buf.local[:tokens * self.top_k].float().view(tokens, self.top_k, self.hidden)
        return (comb * topk_weights.float()[..., None]).sum(dim=1)  # the weighted top-k reduce

    # ---- launches ---------------------------------------------------------------------------

    def launch_layer0(self, plan: _Plan, shared, h, row_src, row_tok, num_pull: int | None = None, mode: int = FULL) -> None:
        cfg = self.cfg
        tiles, pull = torch.from_numpy(plan.tiles0.astype(np.int32)).to(self.device), torch.from_numpy(plan.pull.astype(np.int32)).to(self.device)
        layer0_kernel[(self.programs,)](
            self.x_buf.local, self.x_buf.deltas, row_src, row_tok, shared, pull, len(plan.pull) if num_pull is None else num_pull,
            tiles, len(plan.tiles0), self.w13, self.w13_desc, h, self.flags, self.err, self.epoch, cfg.max_spins,
            self.hidden, self.ffn, self.w13.stride(0), self.w13.stride(1), self.w13.stride(2),
            N_COMM=cfg.comm_blocks0, N_PROGRAMS=self.programs, COPY_ROWS=16, BLOCK_H=min(256, triton_next_pow2(self.hidden)),
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, MODE=mode, W_TMA=cfg.weight_tma,
            num_warps=8, num_stages=3,
        )

    def launch_layer1(self, plan: _Plan, h, y, counters, row_src, row_slot, mode: int = FULL) -> None:
        cfg = self.cfg
        split_cols = self.hidden // cfg.n_splits
        tiles, sends = torch.from_numpy(plan.tiles1.astype(np.int32)).to(self.device), torch.from_numpy(plan.sends.astype(np.int32)).to(self.device)
        layer1_kernel[(self.programs,)](
            h, self.w2, self.w2_desc, y, tiles, len(plan.tiles1), sends, len(plan.sends), counters, self.err, cfg.max_spins,
            row_src, row_slot, self.comb_buf.local, self.comb_buf.deltas,
            self.hidden, self.ffn, self.w2.stride(0), self.w2.stride(1), self.w2.stride(2), split_cols, split_cols // cfg.block_n,
            N_COMPUTE=self.programs - cfg.comm_blocks1, N_PROGRAMS=self.programs, COPY_ROWS=16,
            BLOCK_H=min(256, triton_next_pow2(split_cols)), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
            MODE=mode, W_TMA=cfg.weight_tma, num_warps=8, num_stages=3,
        )

    def _raise_stuck(self, layer: str) -> None:
        code = int(self.err.item())
        if code > 0:
            raise RuntimeError(f"{layer}: a compute block waited {self.cfg.max_spins} spins for row tile {code - 1}'s rows; "
                               "its communication block never raised the flag")
        if code < 0:
            raise RuntimeError(f"{layer}: a communication block waited {self.cfg.max_spins} spins for GEMM1 tiles "
                               f"of (row tile, split) counter {-code - 1}")


def triton_next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())
