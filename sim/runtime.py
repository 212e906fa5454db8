"""The shared state of one simulation: the SimPy environment, the links of every GPU, the
collectives, the timeline. All ranks live in this one environment, so a straggler delays
the collectives and the flows that wait on it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import simpy
from comet_dse.sim.network import FlowNetwork, Link
from comet_dse.sim.timeline import Timeline

from comet_dse.hardware import HardwareProfile
from comet_dse.routing import Routing, rows_per_group, tokens_per_group
from comet_dse.workload import Workload


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts scheduled events (for the speed benchmark)."""

    def __init__(self) -> None:
        super().__init__(initial_time=0)
        self.events_scheduled = 0

    def schedule(self, event, priority=1, delay=0) -> None:  # type: ignore[override]
        self.events_scheduled += 1
        super().schedule(event, priority, delay)


class Collective:
    """A blocking collective (NCCL all-to-all, host sync): it starts when the last rank
    arrives and ends `duration_ns` later on every rank. An early rank's wait is recorded."""

    def __init__(self, ctx: SimContext, name: str, duration_ns: float) -> None:
        self.ctx = ctx
        self.name = name
        self.duration_ns = float(np.ceil(duration_ns))
        self.arrivals: dict[int, float] = {}
        self.done = ctx.env.event()
        self.start_ns = 0.0

    def arrive(self, rank: int) -> simpy.Event:
        env = self.ctx.env
        self.arrivals[rank] = env.now
        if len(self.arrivals) == self.ctx.workload.world:
            self.start_ns = env.now
            env.timeout(self.duration_ns).callbacks.append(self._finish)
        return self.done

    def _finish(self, _event: simpy.Event) -> None:
        end = self.ctx.env.now
        for rank, arrived in self.arrivals.items():
            if arrived < self.start_ns:
                self.ctx.add_slice(rank, "comm", f"wait {self.name}", arrived, self.start_ns)
            self.ctx.add_slice(rank, "comm", self.name, self.start_ns, end)
        self.done.succeed()


@dataclass
class SimContext:
    workload: Workload
    hardware: HardwareProfile
    routing: Routing
    record: bool = True  # False: skip the timeline (search runs only need numbers)

    def __post_init__(self) -> None:
        self.env = CountingEnvironment()
        self.network = FlowNetwork(self.env)
        self.timeline = Timeline()
        hw, world = self.hardware, self.workload.world
        self.node_of = np.arange(world) // hw.gpus_per_node
        self.nvlink_out = [Link(f"nvlink-out{r}", hw.link_GBps) for r in range(world)]
        self.nvlink_in = [Link(f"nvlink-in{r}", hw.link_GBps) for r in range(world)]
        # one link per NIC and direction, indexed node * nics + rail (= rank with one NIC per GPU):
        # GPUs that share a NIC share its links, and a NIC's in-link bounds the incast into it
        routes = hw.internode_routes(world)
        self._nic_out_of, self._nic_in_of = routes.nic_out.tolist(), routes.nic_in.tolist()
        self._hop_of = np.stack([routes.hop_from, routes.hop_to], axis=-1).tolist()
        self.nic_out = [Link(f"nic-out{k}", hw.nic_GBps) for k in range(routes.nic_count)]
        self.nic_in = [Link(f"nic-in{k}", hw.nic_GBps) for k in range(routes.nic_count)]
        self.hbm_copy = [Link(f"hbm{r}", hw.hbm_GBps / 2) for r in range(world)]  # a copy reads and writes

    @cached_property
    def group_sends(self) -> np.ndarray:
        """(W, EP) rows source s sends each TP rank of EP group g in the dispatch, and gets back from each
        in the combine. EP only: its (token, expert) rows, as B0's all-to-all and the fused kernels move
        them. With TP: its tokens routed to g, each once (an all-gather of tokens to g's TP ranks, which
        expand them into rows), and back from each TP rank one partial sum per token, pre-reduced over
        the token's experts in g (then reduce-scattered: the owner adds the TP ranks' partials)."""
        if self.workload.tp == 1:
            return rows_per_group(self.workload, self.routing.counts)
        return tokens_per_group(self.workload, self.routing)

    def path(self, src: int, dst: int) -> list[Link]:
        """The links a flow from `src` to `dst` holds, in the order it crosses them: an HBM copy, NVLink
        in a node, and between nodes as the profile's `internode` route says (HardwareProfile.internode_routes):
          direct: [nic_out(a:i), nic_in(b:j)]
          rail:   [nic_out(a:i), nic_in(b:i), nvlink_out(b:i), nvlink_in(b:j)]   (DeepEP)
          pxn:    [nvlink_out(a:i), nvlink_in(a:j), nic_out(a:j), nic_in(b:j)]   (NCCL PXN)
        with nic(x) the NIC of GPU x's rail, and no NVLink hop where both GPUs share a rail. One flow holds
        every link at once: a forwarding GPU relays chunk by chunk, so the hops pipeline (no store-and-forward)."""
        if src == dst:
            return [self.hbm_copy[src]]
        if self.node_of[src] == self.node_of[dst]:
            return [self.nvlink_out[src], self.nvlink_in[dst]]
        network = [self.nic_out[self._nic_out_of[src][dst]], self.nic_in[self._nic_in_of[src][dst]]]
        hop_from, hop_to = self._hop_of[src][dst]
        if hop_from < 0:
            return network
        hop = [self.nvlink_out[hop_from], self.nvlink_in[hop_to]]
        return hop + network if hop_from == src else network + hop

    def forwarded(self, src: int, dst: int) -> bool:
        """Whether a flow takes an NVLink hop on its way between nodes (rail or pxn routes)."""
        return self.node_of[src] != self.node_of[dst] and self._hop_of[src][dst][0] >= 0

    def lane(self, src: int, dst: int) -> str:
        """The kind of path between two ranks: each is worked on in parallel by the comm blocks."""
        if src == dst:
            return "local"
        return "nvlink" if self.node_of[src] == self.node_of[dst] else "network"

    def lane_capacity(self, lane: str) -> float:
        hw = self.hardware
        return {"local": hw.hbm_GBps / 2, "nvlink": hw.link_GBps, "network": hw.nic_GBps}[lane]

    def lanes(self, items: list, peer_of, rank: int, engine_GBps: float) -> list[tuple[str, list]]:
        """Split work items by kind of path, keeping their order; each kind is further dealt
        round-robin over as many concurrent peers as the comm blocks need to fill that path
        (ceil(engine bandwidth / path bandwidth)): blocks spread over peers, not queue on one."""
        split: dict[str, list] = {}
        for item in items:
            split.setdefault(self.lane(peer_of(item), rank), []).append(item)
        lanes = []
        for kind, work in split.items():
            path_GBps = self.lane_capacity(kind)
            if math.isinf(path_GBps):
                fanout = 1  # one flow already moves at the blocks' full speed
            elif math.isinf(engine_GBps):
                fanout = len(work)
            else:
                fanout = max(1, min(len(work), math.ceil(engine_GBps / path_GBps - 1e-9)))
            lanes.extend((f"{kind} {i}", work[i::fanout]) for i in range(fanout))
        return lanes

    def latency_ns(self, src: int, dst: int) -> float:
        if src == dst:
            return 0.0
        if self.node_of[src] == self.node_of[dst]:
            return self.hardware.link_latency_us * 1e3
        if self.forwarded(src, dst):  # the relay's NVLink hop adds its own latency
            return (self.hardware.nic_latency_us + self.hardware.link_latency_us) * 1e3
        return self.hardware.nic_latency_us * 1e3

    def collective(self, name: str, duration_ns: float) -> Collective:
        return Collective(self, name, duration_ns)

    def add_slice(self, rank: int, role: str, name: str, start: float, end: float, **args) -> None:
        if self.record:
            self.timeline.add(rank, role, name, start, end, **args)
