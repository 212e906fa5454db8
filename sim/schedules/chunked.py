"""`chunked`: a coarse pipeline (FasterMoE / Tutel style, the second seed's micro-batches).

Each rank's tokens are cut into C chunks. A communication stream runs the collectives in
the order D0, D1, C0, D2, C1, ..., C(C-1) (dispatch i+1 is issued before combine i);
the compute stream runs chunk i's GEMM0 and GEMM1 once dispatch i is done. While an NCCL
collective is in flight on a rank (waiting for peers included) its kernel holds
`collective_sms` SMs, so a GEMM running then goes slower: the GEMM is modelled as a fluid
whose speed is set by the SMs it has, recomputed whenever the collective starts or ends.
"""

from __future__ import annotations

import math
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

from comet_dse.errors import UserError
from comet_dse.hardware import HardwareProfile
from comet_dse.workload import Workload

MAX_CHUNKS = 64


def split_counts(counts: np.ndarray, chunks: int) -> list[np.ndarray]:
    """Cut every (source, expert) count into `chunks` near-equal parts (the first ones larger)."""
    base, extra = np.divmod(counts, chunks)
    return [base + (i < extra) for i in range(chunks)]


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

    def validate(self, workload: Workload, hardware: HardwareProfile) -> None:
        super().validate(workload, hardware)
        if not isinstance(self.chunks, int) or not 1 <= self.chunks <= MAX_CHUNKS:
            raise UserError("--chunks", f"must be an integer in [1, {MAX_CHUNKS}], got {self.chunks!r}")

    def run(self, ctx: SimContext) -> Outcome:
        env, hw, wl = ctx.env, ctx.hardware, ctx.workload
        launch = hw.kernel_launch_us * 1e3
        parts = split_counts(ctx.routing.counts, self.chunks)
        sync = ctx.collective("host sync", hw.host_sync_us * 1e3)
        colls = {}
        for i, part in enumerate(parts):
            sends = pair_bytes(ctx, part)
            colls["dispatch", i] = ctx.collective(f"dispatch all-to-all {i}", hw.alltoall_ns(sends))
            colls["combine", i] = ctx.collective(f"combine all-to-all {i}", hw.alltoall_ns(sends.T))
        outcomes: list[RankOutcome | None] = [None] * wl.world

        def rank_processes(rank: int):
            groups = rank_groups(wl, ctx.routing, rank)
            kernels = []  # per chunk: (GEMM0 tiles, GEMM1 tiles)
            for i, part in enumerate(parts):
                shared = np.array([wl.tokens // self.chunks + (i < wl.tokens % self.chunks)])
                rows = np.array([part[:, g.expert].sum() for g in groups if g.expert >= 0])
                if len(groups) > len(rows):  # the shared experts see this chunk's own tokens
                    rows = np.concatenate([rows, shared])
                kernels.append(tuple(grouped_gemm_tiles(ctx, groups, rows, self.block_m, self.block_n, layer) for layer in (0, 1)))
            permute, reduce = permute_ns(ctx, rank), reduce_ns(ctx, rank)
            ready = env.event()
            done = {key: env.event() for key in colls}
            gemm_done = [env.event() for _ in parts]
            state = {"busy": False, "changed": env.event(), "layer0_end": 0.0}

            def set_busy(busy: bool) -> None:
                state["busy"] = busy
                changed, state["changed"] = state["changed"], env.event()
                changed.succeed()

            def comm_stream():
                yield env.timeout(launch + permute)
                ctx.add_slice(rank, "stream", "permute", launch, env.now)
                yield sync.arrive(rank)
                ready.succeed()
                for key in stream_order(self.chunks):
                    if key[0] == "combine":
                        yield gemm_done[key[1]]
                    set_busy(True)
                    yield colls[key].arrive(rank)
                    set_busy(False)
                    done[key].succeed()
                yield env.timeout(launch + reduce)
                ctx.add_slice(rank, "stream", "unpermute + top-k reduce", env.now - reduce, env.now)

            def run_kernel(tiles: np.ndarray, label: str):
                full = kernel_time_ns(tiles, hw.sms)
                shared = kernel_time_ns(tiles, hw.sms - hw.collective_sms)
                yield env.timeout(launch)
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
                ctx.add_slice(rank, "compute", label, start, env.now)
                return full

            def compute_stream():
                yield ready
                alone = 0.0
                for i, (tiles0, tiles1) in enumerate(kernels):
                    yield done["dispatch", i]
                    alone += yield env.process(run_kernel(tiles0, f"GEMM0 + SwiGLU chunk {i}"))
                    if i == len(kernels) - 1:
                        state["layer0_end"] = env.now
                    alone += yield env.process(run_kernel(tiles1, f"GEMM1 chunk {i}"))
                    gemm_done[i].succeed()
                state["compute_alone"] = alone

            comm = env.process(comm_stream())
            compute = env.process(compute_stream())
            yield comm & compute
            ctx.add_slice(rank, "layer", "layer0", 0, state["layer0_end"])
            ctx.add_slice(rank, "layer", "layer1", state["layer0_end"], env.now)
            all_tiles = np.concatenate([t for pair in kernels for t in pair])
            outcomes[rank] = RankOutcome(
                end_ns=env.now,
                layer0_end_ns=state["layer0_end"],
                compute_alone_ns=state["compute_alone"],
                bubble_ns=bubble(env.now, all_tiles, hw.sms),
                overheads_ns={"permute": permute, "host_sync": sync.duration_ns, "reduce": reduce,
                              "launch": (2 + 2 * self.chunks) * launch},
            )

        for rank in range(wl.world):
            env.process(rank_processes(rank))
        env.run()
        comm_alone = sum(c.duration_ns for c in colls.values())
        return Outcome(ranks=outcomes, comm_alone_ns=comm_alone)  # type: ignore[arg-type]
