"""The shared state of one simulation: the SimPy environment, the links of every GPU, the
collectives, the timeline. All ranks live in this one environment, so a straggler delays
the collectives and the flows that wait on it."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import simpy
from comet_dse.sim.fluid import FluidNetwork
from comet_dse.sim.network import FlowNetwork, Link
from comet_dse.sim.timeline import Timeline

from comet_dse.hardware import HardwareProfile
from comet_dse.routing import Routing, rows_per_group, tokens_per_group
from comet_dse.workload import Workload

# A rank's comm blocks copy to (or from) at most this many network peers at once; beyond, those peers take
# turns (LaneGate). Every peer at once is the model, and what a node's NVLink peers always get (the node
# size bounds them); but 63..255 network peers per rank made comet several times slower from EP=64 (the
# max-min solver). Eight at once fill the rank's NIC, and freed turns going to the least-served peer keep
# every far NIC fed: within 1.2% of every peer at once for DeepSeek-V3 at EP=64 and 128 and Qwen2 at EP=32
# (4096 tokens; 3% at 256, where a merged row tile spans many sources); 4 to 6 at once were 2-11% off and
# jagged.
MAX_CONCURRENT_PEERS = 8


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


class LaneGate:
    """Turns for a rank's lanes to more network peers than MAX_CONCURRENT_PEERS: at most `slots` move at
    once; a freed turn goes to the waiting lane whose peer's port carries the fewest flows now (first come
    on a tie), so the turns spread over the far ports as every peer at once would."""

    def __init__(self, env: simpy.Environment, slots: int) -> None:
        self.env = env
        self.free = slots
        # in arrival order: a waiting lane's turn event, or how to start a lane deferred until its turn (defer)
        self.waiting: list[tuple[Link, simpy.Event | Callable[[], object]]] = []

    def acquire(self, port: Link) -> simpy.Event:
        turn = self.env.event()
        if self.free > 0:
            self.free -= 1
            turn.succeed()
        else:
            self.waiting.append((port, turn))
        return turn

    def defer(self, port: Link, start: Callable[[], object]) -> None:
        """Queue a lane that has not started: `start()` starts it, holding the turn, once the turn is its."""
        self.waiting.append((port, start))

    def release(self) -> None:
        if not self.waiting:
            self.free += 1
            return
        loads = [len(port.flows) for port, _ in self.waiting]
        turn = self.waiting.pop(loads.index(min(loads)))[1]  # the first of the fewest
        if not isinstance(turn, simpy.Event):
            turn()  # a deferred lane's process: its start is scheduled urgent, where the turn would be
            return
        # urgent, as Event.succeed with a higher priority: the next flow starts before the network re-rates
        # this instant's links (FlowNetwork._touch), so a hand-over costs one max-min step, not two
        turn._ok, turn._value = True, None
        self.env.schedule(turn, simpy.events.URGENT)


@dataclass(slots=True)  # W lanes a rank, every rank at once
class Lane:
    """Work items one after another, in their order; `gate` (when set) gives the turns, by the peer's `port`."""

    name: str
    items: list
    gate: LaneGate | None = None
    port: Link | None = None


@dataclass
class SimContext:
    workload: Workload
    hardware: HardwareProfile
    routing: Routing
    record: bool = True  # False: skip the timeline (search runs only need numbers)
    engine: str = "flows"  # the network: "flows", the max-min flow engine; "fluid", link loads per layer (sim/fluid.py)
    # the fused kernels' GEMM tiles at this times their measured (sustained) time: a call bench starts after its gap runs
    # faster than at the power cap for a while (sim/api.simulate after_gap, MeasuredTables.after_gap)
    gemm_scale: float = 1.0

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
        # (W, W) arrays, not nested lists: W^2 Python ints are ~200 MB at 1024 GPUs, for every schedule run
        routes = hw.internode_routes(world)
        self._nic_out_of, self._nic_in_of = routes.nic_out.astype(np.int32), routes.nic_in.astype(np.int32)
        self._hop_from, self._hop_to = routes.hop_from.astype(np.int32), routes.hop_to.astype(np.int32)
        self.nic_out = [Link(f"nic-out{k}", hw.nic_GBps) for k in range(routes.nic_count)]
        self.nic_in = [Link(f"nic-in{k}", hw.nic_GBps) for k in range(routes.nic_count)]
        self.hbm_copy = [Link(f"hbm{r}", hw.hbm_GBps / 2) for r in range(world)]  # a copy reads and writes
        self.fluid = FluidNetwork(self) if self.engine == "fluid" else None

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
        network = [self.nic_out[self._nic_out_of[src, dst]], self.nic_in[self._nic_in_of[src, dst]]]
        hop_from = self._hop_from[src, dst]
        if hop_from < 0:
            return network
        hop = [self.nvlink_out[hop_from], self.nvlink_in[self._hop_to[src, dst]]]
        return hop + network if hop_from == src else network + hop

    def lane(self, src: int, dst: int) -> str:
        """The kind of path between two ranks: each is worked on in parallel by the comm blocks."""
        if src == dst:
            return "local"
        return "nvlink" if self.node_of[src] == self.node_of[dst] else "network"

    def lane_capacity(self, lane: str) -> float:
        hw = self.hardware
        return {"local": hw.hbm_GBps / 2, "nvlink": hw.link_GBps, "network": hw.nic_GBps}[lane]

    def lanes(self, items: list, peer_of: Callable[[object], int], rank: int, engine_GBps: float, pull: bool) -> list[Lane]:
        """Split work items into concurrent lanes, each keeping its items' order. One lane per peer: the
        comm blocks work on every destination (source, for pulls) at once, as DeepEP's and Comet's blocks
        per rank do, so no receiver idles while the ranks queue on another; the engine link caps the rank's
        total and each peer's port is shared by its senders. More than MAX_CONCURRENT_PEERS network peers
        take turns (LaneGate). The local copy is dealt round-robin over as many lanes as the blocks need
        to fill HBM (ceil(engine bandwidth / copy bandwidth))."""
        by_kind: dict[str, dict[int, list]] = {}
        for item in items:
            peer = peer_of(item)
            by_kind.setdefault(self.lane(peer, rank), {}).setdefault(peer, []).append(item)
        lanes = []
        for kind, by_peer in by_kind.items():
            if kind == "local":
                lanes.extend(self._local_lanes(by_peer[rank], engine_GBps))
                continue
            turns = kind == "network" and len(by_peer) > MAX_CONCURRENT_PEERS
            gate = LaneGate(self.env, MAX_CONCURRENT_PEERS) if turns else None
            for peer, work in by_peer.items():
                # the peer's NIC: the source's out-port of a pull, the destination's in-port of a push (on a rail
                # or pxn route the path also holds NVLink hops; the turns go by the NIC, the shared port)
                port = None if gate is None else (self.nic_out[self._nic_out_of[peer, rank]] if pull
                                                  else self.nic_in[self._nic_in_of[rank, peer]])
                lanes.append(Lane(f"{kind} {'from' if pull else 'to'} {peer}", work, gate, port))
        return lanes

    def start_lanes(self, lanes: list[Lane], body: Callable[[Lane, bool], Generator]) -> simpy.Event:
        """Run `body(lane, holds_turn)` as a process per lane; the event fires once all have ended, as
        env.all_of of those processes. `body` must ask for a gated lane's turn before anything else
        (unless it holds it): a lane that would find no turn free is then not started at all until
        LaneGate.release hands it one (LaneGate.defer). Its start is scheduled where the turn would
        be, so every event runs as with a waiting process, less the waiting process's own start;
        a waiting process (its generator and two events) per lane is O(W^2) memory at scale."""
        env = self.env
        done = env.event()
        left = len(lanes)

        def ended(event: simpy.Event) -> None:  # as env.all_of's check
            nonlocal left
            if done.triggered:
                return
            left -= 1
            if not event.ok:
                event.defused = True
                done.fail(event.value)
            elif not left:
                done.succeed()

        def start(lane: Lane, holds_turn: bool) -> None:
            env.process(body(lane, holds_turn)).callbacks.append(ended)

        turns = {}  # per gate, the turns free when the lanes start
        for lane in lanes:
            gate = lane.gate
            if gate is not None:
                free = turns.setdefault(gate, gate.free)
                turns[gate] = free - 1
                if free <= 0:
                    gate.defer(lane.port, lambda lane=lane: start(lane, True))
                    continue
            start(lane, False)
        if not lanes:
            done.succeed()
        return done

    def _local_lanes(self, work: list, engine_GBps: float) -> list[Lane]:
        copy_GBps = self.lane_capacity("local")
        if math.isinf(copy_GBps):
            fanout = 1  # one flow already moves at the blocks' full speed
        elif math.isinf(engine_GBps):
            fanout = len(work)
        else:
            fanout = max(1, min(len(work), math.ceil(engine_GBps / copy_GBps - 1e-9)))
        return [Lane(f"local {i}", work[i::fanout]) for i in range(fanout)]

    def latencies_ns(self, rank: int, incoming: bool) -> np.ndarray:
        """(W,) latency from every rank to `rank` (incoming) or from `rank` to every rank: none to itself, NVLink's in
        a node, the NIC's between nodes, plus NVLink's where the route forwards (its relay's hop)."""
        peers = np.arange(self.workload.world)
        hops = self._hop_from[:, rank] if incoming else self._hop_from[rank, :]
        hw = self.hardware
        same_node = self.node_of == self.node_of[rank]
        network = np.where(hops >= 0, (hw.nic_latency_us + hw.link_latency_us) * 1e3, hw.nic_latency_us * 1e3)
        return np.where(peers == rank, 0.0, np.where(same_node, hw.link_latency_us * 1e3, network))

    def latency_ns(self, src: int, dst: int) -> float:
        """One pair's latencies_ns."""
        return float(self.latencies_ns(dst, incoming=True)[src])

    def collective(self, name: str, duration_ns: float) -> Collective:
        return Collective(self, name, duration_ns)

    def add_slice(self, rank: int, role: str, name: str, start: float, end: float, **args) -> None:
        if self.record:
            self.timeline.add(rank, role, name, start, end, **args)
