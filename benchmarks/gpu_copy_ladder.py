"""Where the fused layer's pull loses against the bare copy code: one ladder of kernels from
calibrate's bare `copy_blocks_kernel` to layer0 in COMM_ONLY mode, each adding one thing the layer
does, timed on the same machine in one run, at 4 and 8 warps per block. Each timed launch is enqueued
while the device spins (--spin-cycles, ~500 µs by default), as calibrate times: no host launch time in the
figures unless the spin is shorter than it.

    torchrun --nproc-per-node 2 benchmarks/gpu_copy_ladder.py --out results/measurements/copy_ladder.json

Rungs (all move the same bytes: every row not for this rank's experts, Qwen2-MoE shapes by default):
  bare        copy_blocks_kernel on its own small buffer (what calibrate's comm_blocks times)
  bare_xbuf   the same kernel on the layer's big send/receive buffer
  walk        the layer's tile walk (remote list, tile table, pieces, _move_tile), no flags
  walk_flags  the same, raising each tile's flag (bar.sync + release) as layer0 does
  waiters_*   the same beside 4 or every other SM's programs waiting for the flags as layer0's compute
              blocks do in COMM_ONLY mode (nofence: without the proxy fence after each wait)
  layer0      layer0_kernel in COMM_ONLY mode on n + 4 programs (almost no pollers), and on every SM
and the push side: push_bare (the bare kernel pushing layer1's column splits), layer1 in COMM_ONLY mode
(with the memset of its counters, as calibrate), and the copy engine (one peer copy_) for the link.
GB/s = bytes to peers / median launch time, slowest rank; host_launch_us: the host time to enqueue
each launch (what a spin shorter than it leaves in the figure). Imports only torch, triton and the package.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.distributed as dist
import triton
import triton.language as tl
from comet_dse.kernels.calibration import copy_blocks_kernel, copy_shape, push_once
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE, PeerBuffer
from comet_dse.kernels.fused_moe import COMM_ONLY, _move_tile, _swizzle, _tile, _wait_rows
from comet_dse.kernels.grouped_gemm import sm_count
from comet_dse.kernels.timing import SPIN_CYCLES, join_gpus, join_ranks, median_us, write_and_leave
from comet_dse.models import resolve_model
from gpu_layer_copies import round_robin_rows, slowest  # the same workload and reduction (benchmarks/)


@triton.jit
def walk_kernel(buf_ptr, deltas_ptr, tiles_ptr, remote_ptr, num_tiles_ptr, local_tiles_ptr, pieces_ptr, flags_ptr, err_ptr,
                epoch, own_pos, H, F, SEND_ROWS, N_COMM, max_spins, WORLD: tl.constexpr, COPY_ROWS: tl.constexpr,
                COPY_COLS: tl.constexpr, FLAGS: tl.constexpr, PROXY_FENCE: tl.constexpr, BLOCK_N: tl.constexpr,
                GROUP_M: tl.constexpr):
    """layer0's communication blocks alone (programs [0, N_COMM)): pull every remote tile, piece by
    piece; FLAGS: then raise its flag as layer0 does. The other programs wait for the flags of the
    remote (tile, column tile) work items as layer0's compute blocks do in COMM_ONLY mode."""
    pid = tl.program_id(0)
    first = tl.load(local_tiles_ptr)
    n_own = tl.load(local_tiles_ptr + 1) - first
    n_remote = tl.load(num_tiles_ptr) - n_own
    if pid < N_COMM:
        for i in range(pid, n_remote, N_COMM):
            u = tl.load(remote_ptr + i)
            expert, row0, rows, src, src_row0 = _tile(tiles_ptr, u)
            _move_tile(buf_ptr, deltas_ptr, pieces_ptr, expert, row0, rows, SEND_ROWS, 0, H, H, own_pos, WORLD, True,
                       COPY_ROWS, COPY_COLS, pieces_ptr, pieces_ptr, pieces_ptr, 0, False)  # every row pulled (no dedup)
            if FLAGS:
                tl.debug_barrier()
                tl.atomic_xchg(flags_ptr + u, epoch, sem="release", scope="gpu")
    else:
        n_cols = tl.cdiv(F, BLOCK_N)
        for w in range(pid - N_COMM, n_remote * n_cols, tl.num_programs(0) - N_COMM):
            v, c = _swizzle(w, n_remote, n_cols, GROUP_M)
            u = v + tl.where(v >= first, n_own, 0)
            _wait_rows(flags_ptr, u, 0, 0, epoch, err_ptr, max_spins, False, PROXY_FENCE)


def check_walk(layer: FusedMoE, walk, remote_rows: int) -> None:
    """The walk pulls what layer0 pulled: exactly `remote_rows` rows of the receive region, equal."""
    recv = layer.xbuf.local[layer.send_rows:]
    pulled = recv.clone()  # layer0's last launch (plus the own pieces place_own put there)
    recv.zero_()
    dist.barrier()
    walk()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    written = recv.ne(0).any(dim=1)
    if int(written.sum()) != remote_rows or not torch.equal(recv[written], pulled[written]):
        raise RuntimeError(f"walk_kernel wrote {int(written.sum())} rows, expected the {remote_rows} remote rows layer0 pulled")
    recv.copy_(pulled)
    dist.barrier()


def host_us(fn, runs: int = 20) -> float:
    """Median host time to enqueue one launch of fn, each enqueued behind ~2 ms of device spin (the
    launch never waits for the device)."""
    times = []
    for _ in range(runs):
        torch.cuda._sleep(4_000_000)
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    torch.cuda.synchronize()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2-moe-2.7b")
    parser.add_argument("--rows", type=int, default=1024, help="rows per local expert and rank (default 1024)")
    parser.add_argument("--blocks", default="8,16,24,32,48")
    parser.add_argument("--warps", default="4,8")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--spin-cycles", type=int, default=SPIN_CYCLES,
                        help=f"device spin before each timed launch (default {SPIN_CYCLES}, ~500 µs, as calibrate)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if torch.cuda.is_available():
        join_gpus()
    cuda, device = join_ranks()  # the CPU (gloo, TRITON_INTERPRET=1) runs it too, for a smoke test
    rank, world = dist.get_rank(), dist.get_world_size()
    model = resolve_model(args.model)
    hidden = model.hidden
    local, ids, x, remote_rows = round_robin_rows(model, args.rows, rank, world, device)
    tokens = x.shape[0]
    nbytes = remote_rows * hidden * 2
    blocks = [int(v) for v in args.blocks.split(",")]
    sms = sm_count(device) if cuda else max(blocks) + 8
    copy_rows, copy_cols = copy_shape(hidden, FusedConfig().copy_elems)
    small = PeerBuffer(2 * remote_rows, hidden, torch.bfloat16, device, None)
    small.local.normal_()
    peer = (rank + 1) % world

    def before_each() -> None:
        dist.barrier()
        if cuda:  # the device is busy while the timed launch is enqueued: no host time in the figure
            torch.cuda._sleep(args.spin_cycles)

    def timed(fn) -> float:
        return median_us(fn, runs=args.runs, warmup=3, before_each=before_each)

    rows = []
    for warps in (int(v) for v in args.warps.split(",")):
        for n in blocks:
            layers = {programs: FusedMoE(local, 1, tokens, config=FusedConfig(comm_blocks0=n, comm_blocks1=n, programs=programs,
                                                                              num_warps=warps), dtype=torch.bfloat16)
                      for programs in (n + 4, sms)}
            for layer in layers.values():
                layer(x, ids, torch.ones(tokens, 1, device=device), mode=COMM_ONLY)
            layer = layers[n + 4]
            plan, xbuf = layer.plan, layer.xbuf
            epoch = layer.epoch.item()

            def bare(buf: PeerBuffer, push: bool = False) -> None:
                width = hidden // layer.cfg.n_splits if push else hidden  # layer1 pushes column splits
                rows_, cols_ = copy_shape(width, layer.cfg.copy_elems)
                copy_blocks_kernel[(n,)](buf.local, buf.deltas, peer, remote_rows, hidden, width, 1, PUSH=push,
                                         TILE_ROWS=128, COPY_ROWS=rows_, COPY_COLS=cols_, num_warps=warps)

            def walk(flags: bool, waiters: int = 0, fence: bool = True) -> None:
                walk_kernel[(n + waiters,)](
                    xbuf.local, xbuf.deltas, plan.tiles, plan.remote, plan.num_tiles, plan.local_tiles, plan.pieces,
                    layer.flags, layer.err, epoch, layer.own_pos, hidden, model.ffn, layer.send_rows, n, layer.cfg.max_spins,
                    WORLD=world, COPY_ROWS=copy_rows, COPY_COLS=copy_cols, FLAGS=flags, PROXY_FENCE=fence and cuda,
                    BLOCK_N=layer.cfg.block_n, GROUP_M=layer.cfg.group_m, num_warps=warps)

            rungs = {"bare": lambda: bare(small), "bare_xbuf": lambda: bare(xbuf), "walk": lambda: walk(False),
                     "walk_flags": lambda: walk(True),
                     "waiters_few": lambda: walk(True, 4), "waiters_all": lambda: walk(True, sms - n),
                     "waiters_all_nofence": lambda: walk(True, sms - n, False),
                     "layer0_few": lambda: layers[n + 4]._launch_layer0(layers[n + 4].plan, COMM_ONLY),
                     "layer0_all": lambda: layers[sms]._launch_layer0(layers[sms].plan, COMM_ONLY),
                     "push_bare": lambda: bare(small, push=True),
                     "layer1_few": lambda: push_once(layers[n + 4], layers[n + 4].plan),
                     "layer1_all": lambda: push_once(layers[sms], layers[sms].plan),
                     "copy_engine": lambda: small.local[remote_rows:].copy_(small.peer(peer)[:remote_rows])}
            times = slowest([timed(fn) for fn in rungs.values()], device)
            host = slowest([host_us(fn) for fn in rungs.values()], device) if cuda else [0.0] * len(rungs)
            check_walk(layer, lambda: walk(False), remote_rows)
            for layer in layers.values():
                layer.check()
            row = {"warps": warps, "comm_blocks": n,
                   **{name: round(nbytes / us / 1e3, 1) for name, us in zip(rungs, times)},
                   "host_launch_us": {name: round(us, 1) for name, us in zip(rungs, host)}}
            rows.append(row)
            if rank == 0:
                print(json.dumps(row), flush=True)
    write_and_leave(args.out, {"gpus": world, "model": model.name, "rows_per_expert": args.rows,
                               "bytes_to_peers": nbytes, "unit": "GB/s", "runs": rows})


if __name__ == "__main__":
    main()
