"""`chunked`: a coarse pipeline (FasterMoE / Tutel style, the second seed's micro-batches).

Each rank's tokens are cut into C chunks. A communication stream runs the collectives in
the order D0, D1, C0, D2, C1, ..., C(C-1) (dispatch i+1 is issued before combine i);
the compute stream runs chunk i's GEMM0 and GEMM1 once dispatch i is done. While an NCCL
collective is in flight on a rank (waiting for peers included) its kernel holds
`collective_sms` SMs, so a GEMM running then goes slower: the GEMM is modelled as a fluid
whose speed is set by the SMs it has, recomputed whenever the collective starts or ends.
With a measured profile each chunk runs the kernels of B1 (kernels/baselines.py moe_chunked),
priced from the tables as in `sequential`: the regroup gather, GEMM0, SwiGLU, GEMM1 and the
scatter back on the compute stream (only the GEMMs slow down under a collective: the passes
are bound by memory, not SMs), the routing plan, host sync and send-order gather before the
first dispatch, the (token, slot) scatter and weighted sum after the last combine; where the
profile timed B0's host chain (b0_host) every step after the sync also waits until the host, which
launches them in B1's program order, has launched it. With TP the collectives move tokens, as in
`sequential`: an all-gather to each EP group's TP ranks, a reduce-scatter of pre-reduced partials back.
Measured at one EP rank (TP=2, EP=1) B1 is what the TP baselines run: one all-gather before the EP layer,
its chunks one after another with nothing to exchange between them, one reduce-scatter after, and (with
torch._grouped_mm) no host sync, as in `sequential`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from comet_dse.sim.baseline_kernels import (
    REDUCE_LAUNCHES,
    HostClock,
    Kernel,
    alltoall_ns,
    around_combine,
    collective_launches,
    combine_side,
    dispatch_side,
    expert_side,
    gemm_kernel,
    host_launch_ns,
    host_lead_ns,
    host_sync_ns,
    host_syncs,
    unsynced_plan,
)
from comet_dse.sim.layout import rank_groups
from comet_dse.sim.runtime import SimContext
from comet_dse.sim.schedules.base import (
    Outcome,
    RankOutcome,
    Schedule,
    bubble,
    check_expert_gemm,
    collective_names,
    pair_bytes,
    permute_ns,
    reduce_ns,
)

from comet_dse.errors import UserError
from comet_dse.hardware import HardwareProfile
from comet_dse.routing import rows_per_group
from comet_dse.workload import Workload

MAX_CHUNKS = 64


def split_counts(counts: np.ndarray, chunks: int) -> list[np.ndarray]:
    """Cut every (source, expert) count into `chunks` near-equal parts (the first ones larger)."""
    base, extra = np.divmod(counts, chunks)
    return [base + (i < extra) for i in range(chunks)]


def chunk_group_sends(ctx: SimContext, parts: list[np.ndarray]) -> list[np.ndarray]:
    """(W, EP) rows each chunk sends each TP rank of every EP group (see SimContext.group_sends): EP only,
    the chunk's own (token, expert) rows; with TP, the tokens each source sends a group cut into chunks
    as its tokens are."""
    wl = ctx.workload
    if wl.tp == 1:
        return [rows_per_group(wl, part) for part in parts]
    return split_counts(ctx.group_sends, len(parts))


def stream_order(chunks: int) -> list[tuple[str, int]]:
    order = [("dispatch", 0)]
    for i in range(chunks):
        if i + 1 < chunks:
            order.append(("dispatch", i + 1))
        order.append(("combine", i))
    return order


@dataclass(frozen=True)
class Chunked(Schedule):
    name: ClassVar[str] = "chunked"
    chunks: int = 4
    expert_gemm: str = "best"  # SIM_EXPERT_GEMMS; measured profiles only
    loop_regroups: bool = False  # as Sequential's: B1's loop before 2026-11-27 18:00

    def validate(self, workload: Workload, hardware: HardwareProfile) -> None:
        super().validate(workload, hardware)
        check_expert_gemm(self.expert_gemm)
        if not isinstance(self.chunks, int) or not 1 <= self.chunks <= MAX_CHUNKS:
            raise UserError("--chunks", f"must be an integer in [1, {MAX_CHUNKS}], got {self.chunks!r}")

    def chunk_kernels(self, ctx: SimContext, groups: list, part: np.ndarray, i: int, rank: int) -> tuple[list[Kernel], list[Kernel]]:
        """Chunk i's kernels on `rank`'s compute stream: (up to the end of GEMM0 + SwiGLU, the rest). `part` (W, E):
        the chunk's rows from each source to each expert."""
        wl = ctx.workload
        source_rows = np.array([part[:, g.expert] for g in groups if g.expert >= 0]).reshape(-1, wl.world)
        if len(groups) > len(source_rows):  # the shared experts see this chunk's own tokens
            own = np.zeros((1, wl.world), dtype=source_rows.dtype)
            own[0, rank] = wl.tokens // self.chunks + (i < wl.tokens % self.chunks)
            source_rows = np.vstack([source_rows, own])
        rows = source_rows.sum(axis=1)
        shared_sms = ctx.hardware.sms - ctx.hardware.collective_sms
        if ctx.hardware.measured is not None:
            layer0, layer1 = expert_side(ctx, groups, rows, self.block_m, self.block_n, shared_sms, suffix=f" chunk {i}",
                                         expert_gemm=self.expert_gemm, source_rows=source_rows,
                                         loop_regroups=self.loop_regroups)
            # B1 computes the expert-major gather index of every chunk at once, before chunk 0. Only
            # where the host chain is measured is it charged once: without it, a launch's figure is all
            # that stands for the host's work, and the per-chunk charge is kept (the validations of
            # profiles without b0_host are ceilings that this must not raise)
            if i and host_launch_ns(ctx) is not None:
                layer0 = [k for k in layer0 if not k.label.startswith("expert-major index")]
            return layer0, layer1
        return ([gemm_kernel(ctx, f"GEMM0 + SwiGLU chunk {i}", groups, rows, 0, self.block_m, self.block_n, shared_sms)],
                [gemm_kernel(ctx, f"GEMM1 chunk {i}", groups, rows, 1, self.block_m, self.block_n, shared_sms)])

    def run(self, ctx: SimContext) -> Outcome:
        env, hw, wl = ctx.env, ctx.hardware, ctx.workload
        launch = hw.kernel_launch_us * 1e3
        measured = hw.measured is not None
        parts = split_counts(ctx.routing.counts, self.chunks)
        syncs = host_syncs(ctx, self.expert_gemm)
        sync = ctx.collective("host sync", host_sync_ns(ctx)) if syncs else None
        host = host_launch_ns(ctx)  # None: the host keeps ahead of the GPU
        lead = host_lead_ns(ctx, syncs)  # with no sync, the host's start ahead of the GPU
        # the TP baselines at one EP rank: the chunks exchange nothing, the TP collectives wrap the whole layer
        one_exchange = measured and wl.ep == 1
        colls = {}
        dispatch_name, combine_name = collective_names(ctx)
        if one_exchange:
            sends = pair_bytes(ctx)
            colls["dispatch", 0] = ctx.collective(dispatch_name, alltoall_ns(ctx, sends))
            colls["combine", self.chunks - 1] = ctx.collective(combine_name, alltoall_ns(ctx, sends.T))
        else:
            for i, per_group in enumerate(chunk_group_sends(ctx, parts)):
                sends = pair_bytes(ctx, per_group)
                colls["dispatch", i] = ctx.collective(f"{dispatch_name} {i}", alltoall_ns(ctx, sends))
                colls["combine", i] = ctx.collective(f"{combine_name} {i}", alltoall_ns(ctx, sends.T))
        dispatch_launches, combine_launches = collective_launches(ctx, syncs)
        outcomes: list[RankOutcome | None] = [None] * wl.world

        def rank_processes(rank: int):
            groups = rank_groups(wl, ctx.routing, rank)
            kernels = [self.chunk_kernels(ctx, groups, part, i, rank) for i, part in enumerate(parts)]  # (layer0, layer1) per chunk
            last = []  # steps before the last combine, after the last chunk's GEMMs
            if measured:
                before = dispatch_side(ctx, rank)
                last, after = around_combine(ctx, combine_side(ctx, rank))
                if not syncs:
                    before.insert(0, unsynced_plan(ctx))
            else:
                before = [Kernel("stream", "permute", permute_ns(ctx, rank), "permute")]
                after = [Kernel("stream", "unpermute + top-k reduce", reduce_ns(ctx, rank), "reduce")]
            overheads: dict[str, float] = {}
            ready = env.event()
            done = {key: env.event() for key in colls}
            gemm_done = [env.event() for _ in parts]
            state = {"busy": False, "changed": env.event(), "layer0_end": 0.0}
            # B1's program order after the sync (kernels/baselines.py moe_chunked): dispatch 0, then per
            # chunk the next dispatch, the chunk's kernels and its combine; the final passes last
            # (a dispatch: its gather and all-to-all; after combine i, i >= 1, chunk i-1's final passes).
            # At one EP rank (kernels/tp_baselines.py) the TP all-gathers come first and the reduce-scatter after
            # the last weighted sum, a chunk's dispatch is its gather alone and its combine nothing; without a
            # sync the program starts at the call, the plan and the first gather before the chunks.
            program: list[tuple[object, int]] = []
            if one_exchange:
                program.append((("dispatch", 0), dispatch_launches))
            if not syncs:
                program += [k.host_op for k in before]
            per_gather = 1 if one_exchange else dispatch_launches  # the gather's launch (+ the all-to-all)
            per_combine = 0 if one_exchange else combine_launches
            if not one_exchange:
                program.append((("dispatch", 0), dispatch_launches))
            for i, (layer0, layer1) in enumerate(kernels):
                if i + 1 < self.chunks:
                    program.append((("dispatch", i + 1), per_gather))
                program += [k.host_op for k in (*layer0, *layer1)]
                program.append((("reduce", i) if one_exchange else ("combine", i), per_combine + (REDUCE_LAUNCHES if i else 0)))
            program += [k.host_op for k in last]
            if one_exchange:  # the reduce-scatter after the last chunk's weighted sum
                program.append((("combine", self.chunks - 1), combine_launches))
            program += [k.host_op for k in after]
            clock = HostClock(program, host, overheads, lead)

            def set_busy(busy: bool) -> None:
                state["busy"] = busy
                changed, state["changed"] = state["changed"], env.event()
                changed.succeed()

            def run_steps(steps: list[Kernel]):
                for k in steps:
                    start = env.now + k.launches * launch
                    start += clock.wait(id(k), start)
                    yield env.timeout(start - env.now + k.ns)
                    if k.overhead != "launch":  # (a run of small ops has no body to show)
                        ctx.add_slice(rank, k.role, k.label, start, env.now)
                    if k.overhead != "launch":  # launches are counted at the end
                        overheads[k.overhead] = overheads.get(k.overhead, 0.0) + k.ns

            def exchange(key: tuple):
                if key[0] == "combine":
                    yield gemm_done[key[1]]
                    if key[1] == self.chunks - 1:
                        yield from run_steps(last)
                wait = clock.wait(key, env.now)
                if wait:
                    yield env.timeout(wait)
                set_busy(True)
                yield colls[key].arrive(rank)
                set_busy(False)
                done[key].succeed()

            def comm_stream():
                if one_exchange:  # the TP all-gathers come before the plan (kernels/tp_baselines.py)
                    yield from exchange(("dispatch", 0))
                yield from run_steps(before)
                if sync is not None:
                    yield sync.arrive(rank)
                    overheads["host_sync"] = sync.duration_ns
                    clock.synced = env.now
                ready.succeed()
                for key in (stream_order(self.chunks) if not one_exchange else [("combine", self.chunks - 1)]):
                    yield from exchange(key)
                yield from run_steps(after)

            def run_kernel(kernel: Kernel):
                full, label = kernel.ns, kernel.label
                shared = kernel.shared_ns if kernel.shared_ns is not None else full
                earliest = env.now + kernel.launches * launch
                yield env.timeout(earliest - env.now + clock.wait(id(kernel), earliest))
                start, fraction = env.now, 0.0
                while fraction < 1.0:
                    total = shared if state["busy"] else full
                    if total <= 0:
                        break
                    left = math.ceil((1.0 - fraction) * total - 1e-6)
                    began = env.now
                    timer = env.timeout(left)
                    yield timer | state["changed"]
                    if timer.processed or env.now - began >= left:
                        break
                    fraction += (env.now - began) / total
                ctx.add_slice(rank, kernel.role, label, start, env.now)
                if kernel.overhead is not None:
                    overheads[kernel.overhead] = overheads.get(kernel.overhead, 0.0) + full
                return full if kernel.overhead is None else 0.0

            def compute_stream():
                yield ready
                alone = 0.0
                for i, (layer0, layer1) in enumerate(kernels):
                    yield done["dispatch", 0 if one_exchange else i]
                    for kernel in layer0:
                        alone += yield env.process(run_kernel(kernel))
                    if i == len(kernels) - 1:
                        state["layer0_end"] = env.now
                    for kernel in layer1:
                        alone += yield env.process(run_kernel(kernel))
                    gemm_done[i].succeed()
                state["compute_alone"] = alone

            comm = env.process(comm_stream())
            compute = env.process(compute_stream())
            yield comm & compute
            ctx.add_slice(rank, "layer", "layer0", 0, state["layer0_end"])
            ctx.add_slice(rank, "layer", "layer1", state["layer0_end"], env.now)
            every = [*before, *last, *after, *(k for pair in kernels for part in pair for k in part)]
            gemms = [k for pair in kernels for part in pair for k in part if k.overhead is None]
            overheads["launch"] = sum(k.launches for k in every) * launch
            outcomes[rank] = RankOutcome(
                end_ns=env.now,
                layer0_end_ns=state["layer0_end"],
                compute_alone_ns=state["compute_alone"],
                bubble_ns=bubble(env.now, float(np.concatenate([k.busy_tiles(hw.sms) for k in gemms]).sum()), hw.sms),
                overheads_ns=overheads,
            )

        for rank in range(wl.world):
            env.process(rank_processes(rank))
        env.run()
        return Outcome(ranks=outcomes)  # type: ignore[arg-type]
