"""Baselines on real torch.distributed (NCCL on GPUs, gloo on CPU), expert parallelism.

Every rank holds E/W experts (EP = world size; TP comes with the fused kernels): rank r has
global experts [r * E_local, (r + 1) * E_local). x (T, H) are this rank's tokens, ids (T, k)
global expert ids, topk_weights (T, k); the result is (T, H) in `out_dtype` (fp32 by default,
like `reference_moe`).

B0 `moe_sequential`, the strongest plain layer from stock torch parts, per call:

1. sort the (token, slot) pairs by expert once (expert-major is destination-rank-major) and
   count rows per expert from the sorted keys (`searchsorted`: `bincount` syncs on CUDA);
2. exchange the per-expert counts (one `all_to_all_single` of E ints) and read the per-rank
   split sizes on the host: **the only host sync** (one `.tolist()` of 2W ints);
3. gather the rows into send order (one `index_select`), `all_to_all_single` them;
4. regroup the received rows (source-major blocks of per-expert runs) into expert-major
   order with one gather whose index is computed on the device from the exchanged counts;
5. `torch._grouped_mm` GEMM0, SwiGLU in place (two passes: `silu_` on the gate half, `mul_`
   by the up half; GEMM1 reads the gate half through its stride), `torch._grouped_mm` GEMM1;
6. scatter the results back into arrival order (into the receive buffer, now free),
   `all_to_all_single` back;

   or, with `expert_gemm="loop"`, one `torch.mm` per (source, local expert) run of the rows as they
   arrived (their row counts ride in the same host sync), so no regroup and no scatter back;
7. scatter the returned rows into (token, slot) order (into the send buffer, now free) and
   reduce the k rows of every token with one `bmm` of the (T, 1, k) weights by the (T, k, H)
   rows (fp32 accumulation, written straight in `out_dtype` on CUDA).

No other host sync: group offsets stay on the device, buffers are sized from the host
split sizes. With one rank there is nothing to exchange and no sync at all.

B1 `moe_chunked`: the same layer over `chunks` slices of the tokens. All chunks' counts go
in one exchange ((chunks, E) counts, one sync), then a pipeline: chunk i+1's dispatch
all-to-all is in flight (async; NCCL runs it on its own stream) while chunk i computes, and
chunk i's combine all-to-all while chunk i+1 computes. `chunks=1` is B0.

`moe_naive`: the simplest correct version of the same distributed layer (counts by
all_gather, a Python loop of `rows @ w[e]` over (source, expert) runs, `index_add_`), the
comparison point B0 must beat.

`torch._grouped_mm` runs where it needs no host sync: bf16 on Hopper/Blackwell (its CUDA
path for other dtypes reads the offsets on the host) and on CPUs (gloo tests), with
16-byte aligned row strides. Elsewhere a loop over experts on host counts (carried by the
one sync) stands in; it is never the timed bf16 GPU path.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import torch
import torch.distributed as dist
from comet_dse.choices import EXPERT_GEMMS
from comet_dse.kernels.reference import MoEWeights, swiglu

# bmm with a wider output dtype (bf16 in, fp32 accumulated and stored) exists on CUDA only
_BMM_OUT_DTYPE = hasattr(torch.ops.aten.bmm, "dtype_out")


# ----------------------------------------------------------------------------------------
# routing plan: one exchange of counts, one host sync
# ----------------------------------------------------------------------------------------


@dataclass
class _Plan:
    order: torch.Tensor  # (T*k,) pair index (token * k + slot) of each send slot: chunk-major, then by expert
    token: torch.Tensor  # (T*k,) token of each send slot (order // k)
    recv_counts: torch.Tensor  # (W, chunks, E_local) on the device: rows source s sends to each local expert
    tokens: list[int]  # chunk c covers tokens [tokens[c], tokens[c + 1])
    send: list[list[int]]  # send[c][r]: rows of chunk c for rank r
    recv: list[list[int]]  # recv[c][s]: rows of chunk c from rank s
    # [c]: the (local expert, rows) runs of chunk c in arrival order (per source, its runs per local expert),
    # host side: only for the loop GEMM
    runs: list[list[tuple[int, int]]] | None


def _plan(ids: torch.Tensor, chunks: int, experts_per_rank: int, world: int, group, host_runs: bool) -> _Plan:
    tokens, top_k = ids.shape
    experts = experts_per_rank * world
    dev = ids.device
    bounds = [c * tokens // chunks for c in range(chunks + 1)]
    key = ids
    if chunks > 1 and tokens:
        # chunk of token t is ((t + 1) * chunks - 1) // tokens, the inverse of the bounds above
        chunk = torch.arange(chunks - 1, tokens * chunks + chunks - 1, chunks, device=dev) // tokens  # (T,)
        key = torch.add(ids, chunk[:, None], alpha=experts)  # (T, k) chunk-major, then expert
    sorted_key, order = torch.sort(key.reshape(-1), stable=True)
    starts = torch.searchsorted(sorted_key, torch.arange(chunks * experts + 1, device=dev))
    counts = (starts[1:] - starts[:-1]).view(chunks, world, experts_per_rank)
    send_counts = counts.transpose(0, 1).contiguous()  # (W, chunks, E_local): rank r's block goes to r
    if world > 1:
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=group)
    else:
        recv_counts = send_counts
    token = order // top_k  # launched before the sync: overlaps the exchange
    pairs = [top_k * (bounds[c + 1] - bounds[c]) for c in range(chunks)]
    if world == 1 and not host_runs:  # nothing the host needs is on the device
        return _Plan(order, token, recv_counts, bounds, [[p] for p in pairs], [[p] for p in pairs], None)
    per_rank = torch.stack([send_counts, recv_counts]).sum(3)  # (2, W, chunks)
    wanted = [per_rank.reshape(-1)]
    if host_runs:
        wanted.append(recv_counts.transpose(0, 1).reshape(-1))  # (chunks * W * E_local,): arrival order
    host = (torch.cat(wanted) if len(wanted) > 1 else wanted[0]).tolist()  # the one host sync
    send = [[host[r * chunks + c] for r in range(world)] for c in range(chunks)]
    recv = [[host[(world + s) * chunks + c] for s in range(world)] for c in range(chunks)]
    runs = None
    if host_runs:
        tail, per_chunk = host[2 * world * chunks:], world * experts_per_rank
        runs = [[(i % experts_per_rank, n) for i, n in enumerate(tail[c * per_chunk:(c + 1) * per_chunk])]
                for c in range(chunks)]
    return _Plan(order, token, recv_counts, bounds, send, recv, runs)


def _expert_major(recv_counts: torch.Tensor, total: int) -> torch.Tensor:
    """(total,) gather index: received row feeding each expert-major slot, chunk by chunk.

    Received rows of a chunk sit source-major (per source, its runs per local expert);
    GEMMs want expert-major (per expert, its runs per source). Each run moves by a constant.
    """
    world, chunks, experts = recv_counts.shape
    by_source = recv_counts.transpose(0, 1).reshape(-1)  # (chunks * W * E_local,) arrival order
    source_start = by_source.cumsum(0) - by_source
    by_expert = recv_counts.permute(1, 2, 0).reshape(-1)  # (chunks * E_local * W,) expert-major order
    expert_start = by_expert.cumsum(0) - by_expert
    shift = source_start.view(chunks, world, experts).transpose(1, 2).reshape(-1) - expert_start
    return torch.arange(total, device=recv_counts.device) + torch.repeat_interleave(shift, by_expert, output_size=total)


# ----------------------------------------------------------------------------------------
# experts and the weighted top-k reduce
# ----------------------------------------------------------------------------------------


def grouped_mm_ok(x: torch.Tensor, weights: MoEWeights) -> bool:
    """Whether torch._grouped_mm runs here without a host sync (see the module docstring)."""
    if not hasattr(torch, "_grouped_mm") or x.dtype != weights.w_gate_up.dtype:
        return False
    if x.is_cuda and (x.dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device)[0] not in (9, 10)):
        return False
    def aligned(n: int) -> bool:
        return n * x.element_size() % 16 == 0

    ffn = weights.w_down.shape[1]
    # row strides: the rows (R, H), GEMM0's output (R, 2F) whose gate half feeds GEMM1, both weights
    return aligned(x.shape[1]) and aligned(2 * ffn) and all(
        w.stride(2) == 1 and aligned(w.stride(1)) and w.data_ptr() % 16 == 0 for w in (weights.w_gate_up, weights.w_down))


def _grouped_mm(rows: torch.Tensor, weight: torch.Tensor, ends: torch.Tensor,
                 runs: list[tuple[int, int]] | None) -> torch.Tensor:
    """rows (M, K) grouped by expert, weight (E, K, N) -> (M, N). `runs` on the host ((expert, rows) in row
    order, an expert any number of times): the loop, one torch.mm per run with rows."""
    if runs is None:
        return torch._grouped_mm(rows, weight, offs=ends)
    out = rows.new_empty(rows.shape[0], weight.shape[2])
    start = 0
    for e, n in runs:
        if n:
            torch.mm(rows[start:start + n], weight[e], out=out[start:start + n])
        start += n
    return out


def _experts(rows: torch.Tensor, weights: MoEWeights, ends: torch.Tensor, runs: list[tuple[int, int]] | None) -> torch.Tensor:
    """(R, H) rows (expert-major for torch._grouped_mm, any runs for the loop) -> (R, H) expert outputs, in the
    rows' dtype."""
    ffn = weights.w_down.shape[1]
    h = _grouped_mm(rows, weights.w_gate_up, ends, runs)  # (R, 2F)
    gate = torch.nn.functional.silu(h[:, :ffn], inplace=True).mul_(h[:, ffn:])  # (R, F) view, row stride 2F
    return _grouped_mm(gate, weights.w_down, ends, runs)  # (R, H)


def _weighted_sum(topk_weights: torch.Tensor, rows: torch.Tensor, out: torch.Tensor) -> None:
    """out (n, H) = sum_j topk_weights[:, j] * rows[:, j]: one bmm, (n, 1, k) @ (n, k, H)."""
    w = topk_weights.to(rows.dtype).unsqueeze(1)  # (n, 1, k)
    if out.dtype == rows.dtype:
        torch.bmm(w, rows, out=out.unsqueeze(1))
    elif rows.is_cuda and _BMM_OUT_DTYPE:
        torch.bmm(w, rows, out_dtype=out.dtype, out=out.unsqueeze(1))  # fp32 accumulated and stored
    else:
        out.copy_(torch.bmm(w, rows).squeeze(1))


# ----------------------------------------------------------------------------------------
# B0 and B1
# ----------------------------------------------------------------------------------------


def moe_sequential(x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, weights: MoEWeights, group=None, *,
                   out_dtype: torch.dtype = torch.float32, expert_gemm: str = "grouped") -> torch.Tensor:
    """B0 (module docstring). Host syncs: one, the `.tolist()` of the per-rank split sizes after
    the counts exchange (none with one rank). Collectives: counts, dispatch, combine."""
    return moe_chunked(x, ids, topk_weights, weights, 1, group, out_dtype=out_dtype, expert_gemm=expert_gemm)


def moe_chunked(x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, weights: MoEWeights, chunks: int,
                group=None, *, out_dtype: torch.dtype = torch.float32, expert_gemm: str = "grouped") -> torch.Tensor:
    """B1: tokens in `chunks` slices [c * T // chunks, (c + 1) * T // chunks); chunk i+1's dispatch
    and chunk i-1's combine are in flight while chunk i computes. Host syncs: one, the split
    sizes of every chunk at once. Collectives: 1 + 2 * chunks on every rank, whatever its routing.

    expert_gemm: "grouped" (torch._grouped_mm where it needs no sync) or "loop" (one torch.mm per
    (source, local expert) run of the rows as they arrived, the runs' row counts in the same single
    host sync, no regroup): with few large experts cuBLAS's dense GEMMs can beat the grouped kernel,
    so the benchmark times both."""
    if chunks < 1:
        raise ValueError(f"chunks must be at least 1, got {chunks}")
    if expert_gemm not in EXPERT_GEMMS:
        raise ValueError(f"expert_gemm must be one of {', '.join(EXPERT_GEMMS)}, got {expert_gemm!r}")
    tokens, top_k = ids.shape
    hidden = x.shape[1]
    world = dist.get_world_size(group)
    loop = expert_gemm == "loop" or not grouped_mm_ok(x, weights)
    plan = _plan(ids, chunks, weights.num_experts, world, group, host_runs=loop)
    arrived = [slice(a, a + sum(r)) for a, r in zip(accumulate((sum(r) for r in plan.recv), initial=0), plan.recv)]
    pairs = [slice(top_k * plan.tokens[c], top_k * plan.tokens[c + 1]) for c in range(chunks)]
    sent = x.new_empty(tokens * top_k, hidden)  # (T*k, H) send order; at the end the rows in (token, slot) order
    recv = sent if world == 1 else x.new_empty(arrived[-1].stop, hidden)  # (R, H) arrival order, then the rows to send back
    back = x.new_empty(tokens * top_k, hidden) if world > 1 else None  # (T*k, H) returned rows, send order
    out = torch.empty(tokens, hidden, dtype=out_dtype, device=x.device)

    def dispatch(c: int) -> dist.Work | None:
        torch.index_select(x, 0, plan.token[pairs[c]], out=sent[pairs[c]])
        if world == 1:
            return None
        return dist.all_to_all_single(recv[arrived[c]], sent[pairs[c]], plan.recv[c], plan.send[c], group=group, async_op=True)

    def compute(c: int) -> torch.Tensor:
        rows = recv[arrived[c]]  # (R_c, H)
        if not rows.shape[0]:
            return rows
        if regroup:
            rows = recv.index_select(0, gather[arrived[c]])
        y = _experts(rows, weights, None if loop else ends[c], plan.runs[c] if loop else None)
        if not regroup:
            return y
        recv.index_copy_(0, gather[arrived[c]], y)  # back to arrival order; the received rows are spent
        return recv[arrived[c]]

    def combine(c: int, y: torch.Tensor) -> tuple[torch.Tensor, dist.Work | None]:
        if world == 1:
            return y, None
        return back[pairs[c]], dist.all_to_all_single(back[pairs[c]], y, plan.send[c], plan.recv[c], group=group, async_op=True)

    def reduce(c: int, returned: torch.Tensor, work: dist.Work | None) -> None:
        if work is not None:
            work.wait()
        a, b = plan.tokens[c], plan.tokens[c + 1]
        if a < b:
            sent.index_copy_(0, plan.order[pairs[c]], returned)  # (token, slot) order; the sent rows are spent
            _weighted_sum(topk_weights[a:b], sent[pairs[c]].view(b - a, top_k, hidden), out[a:b])  # rows (n, k, H)

    dispatched = [dispatch(0)]
    # device-side index math while the first dispatch is on the wire; the loop takes the rows as they arrived
    regroup = world > 1 and weights.num_experts > 1 and not loop
    gather = _expert_major(plan.recv_counts, arrived[-1].stop) if regroup else None
    ends = None if loop else plan.recv_counts.sum(0).cumsum(1, dtype=torch.int32)  # (chunks, E_local) group ends
    previous = None
    for c in range(chunks):
        if c + 1 < chunks:
            dispatched.append(dispatch(c + 1))  # in flight while chunk c computes
        if dispatched[c] is not None:
            dispatched[c].wait()
        returned = combine(c, compute(c))
        if previous is not None:
            reduce(*previous)  # chunk c-1's combine ran beside chunk c's GEMMs
        previous = (c, *returned)
    reduce(*previous)
    return out


# ----------------------------------------------------------------------------------------
# the simplest correct version, for tests and as a timing floor
# ----------------------------------------------------------------------------------------


def moe_naive(x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, weights: MoEWeights, group=None) -> torch.Tensor:
    """The same distributed layer written plainly: all_gather of counts, a Python loop of
    `rows @ w[e]` over each (source, expert) run, index_add_ in fp32. Returns (T, H) fp32."""
    world, me = dist.get_world_size(group), dist.get_rank(group)
    local = weights.num_experts
    top_k = ids.shape[1]
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=local * world)
    table = [torch.empty_like(counts) for _ in range(world)]
    dist.all_gather(table, counts, group=group)
    table = torch.stack(table).tolist()  # table[s][e]: rows rank s sends to expert e
    send = [sum(table[me][r * local:(r + 1) * local]) for r in range(world)]
    recv = [sum(table[s][me * local:(me + 1) * local]) for s in range(world)]
    rows = x[order // top_k]
    got = x.new_empty(sum(recv), x.shape[1])
    dist.all_to_all_single(got, rows, recv, send, group=group)
    y = torch.empty_like(got)
    start = 0
    for s in range(world):
        for e in range(local):
            n = table[s][me * local + e]
            y[start:start + n] = swiglu(got[start:start + n] @ weights.w_gate_up[e]) @ weights.w_down[e]
            start += n
    back = torch.empty_like(rows)
    dist.all_to_all_single(back, y, send, recv, group=group)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    return out.index_add_(0, order // top_k, back.float() * topk_weights.reshape(-1)[order, None].float())
