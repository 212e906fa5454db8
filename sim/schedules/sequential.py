"""`sequential`: the Megatron-style baseline, one step after another on every rank.

permute -> split-size exchange + host sync -> NCCL all-to-all dispatch -> grouped GEMM0
(+ SwiGLU) on all SMs -> grouped GEMM1 on all SMs -> all-to-all combine -> weighted
unpermute. The collectives block until the slowest rank arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from comet_dse.sim.gemm import kernel_time_ns
from comet_dse.sim.layout import rank_groups
from comet_dse.sim.runtime import SimContext
from comet_dse.sim.schedules.base import (
    Outcome,
    RankOutcome,
    Schedule,
    bubble,
    grouped_gemm_tiles,
    pair_bytes,
    permute_ns,
    reduce_ns,
)


@dataclass(frozen=True)
class Sequential(Schedule):
    name: ClassVar[str] = "sequential"

    def run(self, ctx: SimContext) -> Outcome:
        env, hw, wl = ctx.env, ctx.hardware, ctx.workload
        launch = hw.kernel_launch_us * 1e3
        sends = pair_bytes(ctx, ctx.routing.counts)
        sync = ctx.collective("host sync", hw.host_sync_us * 1e3)
        dispatch = ctx.collective("dispatch all-to-all", hw.alltoall_ns(sends))
        combine = ctx.collective("combine all-to-all", hw.alltoall_ns(sends.T))
        outcomes: list[RankOutcome | None] = [None] * wl.world

        def rank_process(rank: int):
            groups = rank_groups(wl, ctx.routing, rank)
            rows = np.array([g.rows_by_source.sum() for g in groups])
            tiles0 = grouped_gemm_tiles(ctx, groups, rows, self.block_m, self.block_n, 0)
            tiles1 = grouped_gemm_tiles(ctx, groups, rows, self.block_m, self.block_n, 1)
            gemm0, gemm1 = kernel_time_ns(tiles0, hw.sms), kernel_time_ns(tiles1, hw.sms)
            permute, reduce = permute_ns(ctx, rank), reduce_ns(ctx, rank)

            yield env.timeout(launch + permute)
            ctx.add_slice(rank, "stream", "permute", launch, env.now)
            yield sync.arrive(rank)
            yield dispatch.arrive(rank)
            start0 = env.now + launch
            yield env.timeout(launch + gemm0)
            ctx.add_slice(rank, "compute", "GEMM0 + SwiGLU", start0, env.now)
            layer0_end = env.now
            start1 = env.now + launch
            yield env.timeout(launch + gemm1)
            ctx.add_slice(rank, "compute", "GEMM1", start1, env.now)
            yield combine.arrive(rank)
            yield env.timeout(launch + reduce)
            ctx.add_slice(rank, "stream", "unpermute + top-k reduce", env.now - reduce, env.now)
            ctx.add_slice(rank, "layer", "layer0", 0, layer0_end)
            ctx.add_slice(rank, "layer", "layer1", layer0_end, env.now)
            idle = bubble(env.now, np.concatenate([tiles0, tiles1]), hw.sms)
            outcomes[rank] = RankOutcome(
                end_ns=env.now,
                layer0_end_ns=layer0_end,
                compute_alone_ns=gemm0 + gemm1,
                bubble_ns=idle,
                overheads_ns={"permute": permute, "host_sync": sync.duration_ns, "reduce": reduce, "launch": 4 * launch},
            )

        for rank in range(wl.world):
            env.process(rank_process(rank))
        env.run()
        return Outcome(ranks=outcomes, comm_alone_ns=dispatch.duration_ns + combine.duration_ns)  # type: ignore[arg-type]
