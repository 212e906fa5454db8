"""`sequential`: the Megatron-style baseline, one step after another on every rank.

permute -> split-size exchange + host sync -> NCCL all-to-all dispatch -> grouped GEMM0
(+ SwiGLU) on all SMs -> grouped GEMM1 on all SMs -> all-to-all combine -> weighted
unpermute. The collectives block until the slowest rank arrives. With TP the dispatch
all-gathers tokens to the TP ranks of each EP group a token is routed to, and the combine
reduce-scatters one partial per (token, group) back, pre-reduced over the token's experts
there (SimContext.group_sends): at EP=1 Megatron's all-gather dispatcher; where EP and TP mix,
both in one exchange, priced as one all-to-all of those bytes. With a measured profile
the steps are the kernels B0 really launches, each priced from its tables (sim/baseline_kernels.py),
and where the profile timed B0's host chain (b0_host) a step after the sync also waits until the
host has launched it: at few tokens B0 is bound by the host, not the GPU. With one EP rank and
torch._grouped_mm (TP=2, EP=1) B0 has no sync and nothing to regroup: the host launches the whole call
from its start, the routing plan first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from comet_dse.sim.baseline_kernels import (
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
from comet_dse.sim.runtime import Collective, SimContext
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

from comet_dse.hardware import HardwareProfile
from comet_dse.workload import Workload

LAYER0_END = "layer0 end"  # a marker in a rank's steps


@dataclass(frozen=True)
class Sequential(Schedule):
    name: ClassVar[str] = "sequential"
    expert_gemm: str = "best"  # SIM_EXPERT_GEMMS; measured profiles only
    # B0's loop GEMM regrouped the rows into expert order first, one torch.mm per expert (bench files before
    # 2026-11-27 18:00: validate sets it from the file); since, one torch.mm per (source, expert) run as they arrived
    loop_regroups: bool = False

    def validate(self, workload: Workload, hardware: HardwareProfile) -> None:
        super().validate(workload, hardware)
        check_expert_gemm(self.expert_gemm)

    def steps(self, ctx: SimContext, rank: int, sync: Collective | None, dispatch: Collective,
              combine: Collective) -> list[Kernel | Collective | str]:
        """This rank's kernels and collectives in stream order; `sync` None: B0 has no host sync (host_syncs)."""
        groups = rank_groups(ctx.workload, ctx.routing, rank)
        rows = np.array([g.rows_by_source.sum() for g in groups])
        if ctx.hardware.measured is not None:
            layer0, layer1 = expert_side(ctx, groups, rows, self.block_m, self.block_n, expert_gemm=self.expert_gemm,
                                         source_rows=np.array([g.rows_by_source for g in groups]),
                                         loop_regroups=self.loop_regroups)
            # the send-order gather before the sync (the GPU's time is the same); without a sync (one EP rank) the
            # TP all-gathers come first, then the plan's kernels and the gather (kernels/tp_baselines.py)
            start = ([*dispatch_side(ctx, rank), sync, dispatch] if sync is not None
                     else [dispatch, unsynced_plan(ctx), *dispatch_side(ctx, rank)])
            before_combine, after_combine = around_combine(ctx, combine_side(ctx, rank))
            return [*start, *layer0, LAYER0_END, *layer1, *before_combine, combine, *after_combine]
        return [Kernel("stream", "permute", permute_ns(ctx, rank), "permute"), sync, dispatch,
                gemm_kernel(ctx, "GEMM0 + SwiGLU", groups, rows, 0, self.block_m, self.block_n), LAYER0_END,
                gemm_kernel(ctx, "GEMM1", groups, rows, 1, self.block_m, self.block_n), combine,
                Kernel("stream", "unpermute + top-k reduce", reduce_ns(ctx, rank), "reduce")]

    def run(self, ctx: SimContext) -> Outcome:
        env, hw, wl = ctx.env, ctx.hardware, ctx.workload
        launch = hw.kernel_launch_us * 1e3
        sends = pair_bytes(ctx)
        syncs = host_syncs(ctx, self.expert_gemm)
        sync = ctx.collective("host sync", host_sync_ns(ctx)) if syncs else None
        host = host_launch_ns(ctx)  # None: the host keeps ahead of the GPU
        lead = host_lead_ns(ctx, syncs)  # with no sync, the host's start ahead of the GPU
        dispatch_name, combine_name = collective_names(ctx)
        dispatch = ctx.collective(dispatch_name, alltoall_ns(ctx, sends))
        combine = ctx.collective(combine_name, alltoall_ns(ctx, sends.T))
        outcomes: list[RankOutcome | None] = [None] * wl.world

        def rank_process(rank: int):
            steps = self.steps(ctx, rank, sync, dispatch, combine)
            overheads: dict[str, float] = {}
            layer0_end = 0.0
            # the host's program: after the sync where there is one (the send-order gather, before it in the steps,
            # is launched with the dispatch), else the whole call from its start
            launched = [s for s in (steps[steps.index(sync) + 1:] if syncs else steps) if s != LAYER0_END]
            launches = dict(zip((id(dispatch), id(combine)), collective_launches(ctx, syncs)))
            clock = HostClock([(id(s), launches[id(s)]) if isinstance(s, Collective) else s.host_op
                               for s in launched], host, overheads, lead)
            for step in steps:
                if step == LAYER0_END:
                    layer0_end = env.now
                elif isinstance(step, Collective):
                    wait = clock.wait(id(step), env.now)
                    if wait:
                        yield env.timeout(wait)
                    yield step.arrive(rank)
                    if step is sync:
                        overheads["host_sync"] = sync.duration_ns
                        clock.synced = env.now
                else:
                    start = env.now + step.launches * launch
                    start += clock.wait(id(step), start)
                    yield env.timeout(start - env.now + step.ns)
                    if step.overhead != "launch":  # (a run of small ops has no body to show)
                        ctx.add_slice(rank, step.role, step.label, start, env.now)
                    if step.overhead not in (None, "launch"):  # launches are counted below
                        overheads[step.overhead] = overheads.get(step.overhead, 0.0) + step.ns
            kernels = [s for s in steps if isinstance(s, Kernel)]
            gemms = [k for k in kernels if k.overhead is None]
            overheads["launch"] = sum(k.launches for k in kernels) * launch
            ctx.add_slice(rank, "layer", "layer0", 0, layer0_end)
            ctx.add_slice(rank, "layer", "layer1", layer0_end, env.now)
            outcomes[rank] = RankOutcome(
                end_ns=env.now,
                layer0_end_ns=layer0_end,
                compute_alone_ns=sum(k.ns for k in gemms),
                bubble_ns=bubble(env.now, float(np.concatenate([k.busy_tiles(hw.sms) for k in gemms]).sum()), hw.sms),
                overheads_ns=overheads,
            )

        for rank in range(wl.world):
            env.process(rank_process(rank))
        env.run()
        return Outcome(ranks=outcomes)  # type: ignore[arg-type]
