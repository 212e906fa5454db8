"""The fluid network: the comm blocks' traffic priced from each link's load over the layer, no flows.

The flow engine (sim/network.py) re-rates the flows sharing a link whenever one starts or ends:
exact, but O(W^2) flows of tens of microseconds each at W GPUs (DeepSeek-V3 at 256 GPUs: 1.6 10^5
re-ratings). This model prices a layer's traffic once, from the bytes every link carries:

- every link's busy time is its bytes over its capacity (all ranks' traffic of the layer at once);
  a pair's rate can be no better than its path's busiest link allows, so a lane class of a rank
  (its local, NVLink or network peers) delivers its bytes at `bytes / (that class's slowest link
  busy time)` at most;
- a rank's comm blocks (the engine link) are shared max-min between the flows its classes run at
  once, re-shared as a class finishes its pulls or goes idle or gets work between sends (a few
  phases per rank for the pulls, not per flow);
- inside a class, pulls take turns as the flow engine's lanes do (every peer at once; network peers
  MAX_CONCURRENT_PEERS at a time, a freed turn to the next source in the row order) and the active
  ones share the class's rate equally (processor sharing), so a source's rows land as they would at
  an even link load;
- layer1's sends leave a class first come first served at the class's share, each no earlier than
  its split is computed.

What it leaves out: links loaded unevenly over time (a link hot early in the layer and idle later reads
as its average: skewed routing comes out a few percent fast), and a class's rate bound by its busiest
pair's path rather than each peer's own. Against the flows it lands closest to every peer at once, the
model the flows' turns (MAX_CONCURRENT_PEERS at a time) stand in for; benchmarks/fluid_check.py
measures how far it lands from both (results/bench/fluid_check.txt).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

CLASSES = ("local", "nvlink", "network")


@dataclass
class LinkLoads:
    """Per link its busy time (ns) for a layer's (W, W) bytes `sends[src, dst]`, and per pair the busiest link
    of its path (ns). Link ids: NVLink out [0, W), NVLink in [W, 2W), NIC out and in (K each), HBM copy (W)."""

    busy_ns: np.ndarray  # (links,)
    pair_ns: np.ndarray  # (W, W): the busiest link on path(src, dst)


class FluidNetwork:
    """The links of a SimContext as arrays: path ids for every pair, capacities, and each layer's loads."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        hw, world = ctx.hardware, ctx.workload.world
        nics = len(ctx.nic_out)
        self.world = world
        self._nic_out0, self._nic_in0, self._hbm0 = 2 * world, 2 * world + nics, 2 * world + 2 * nics
        self.capacity = np.concatenate([np.full(2 * world, hw.link_GBps), np.full(2 * nics, hw.nic_GBps),
                                        np.full(world, hw.hbm_GBps / 2)])

    @cached_property
    def path_ids(self) -> np.ndarray:
        """(W, W, 4) int32 link ids of path(src, dst) (SimContext.path), -1 past its end."""
        ctx, world = self.ctx, self.world
        rank = np.arange(world)
        src, dst = np.broadcast_to(rank[:, None], (world, world)), np.broadcast_to(rank[None, :], (world, world))
        same_node = ctx.node_of[:, None] == ctx.node_of[None, :]
        ids = np.full((world, world, 4), -1, dtype=np.int32)
        local = src == dst
        nvlink = same_node & ~local
        ids[..., 0] = np.where(local, self._hbm0 + src, np.where(nvlink, src, -1))
        ids[..., 1] = np.where(nvlink, world + dst, -1)
        cross = ~same_node
        hop = cross & (ctx._hop_from >= 0)
        # between nodes: the NICs, plus the NVLink hop where the route forwards (the order does not matter here)
        ids[..., 0] = np.where(cross, self._nic_out0 + ctx._nic_out_of, ids[..., 0])
        ids[..., 1] = np.where(cross, self._nic_in0 + ctx._nic_in_of, ids[..., 1])
        ids[..., 2] = np.where(hop, ctx._hop_from, -1)
        ids[..., 3] = np.where(hop, world + ctx._hop_to, -1)
        return ids

    def loads(self, sends: np.ndarray) -> LinkLoads:
        ids = self.path_ids
        used = ids >= 0
        per_link = np.bincount(ids[used], weights=np.broadcast_to(sends[..., None], ids.shape)[used],
                               minlength=len(self.capacity))
        busy = per_link / self.capacity
        pair = np.where(used, busy[np.where(used, ids, 0)], 0.0).max(axis=2)
        return LinkLoads(busy, np.where(sends > 0, pair, 0.0))


def class_rates(demand: dict[str, float], weight: dict[str, int], cap: float) -> dict[str, float]:
    """Shares of the engine's `cap` (bytes/ns) between classes, as max-min between their flows: class c runs
    `weight[c]` flows at once and wants at most `demand[c]` in all."""
    if cap == math.inf:
        return dict(demand)
    rates, left, rising = {}, cap, sorted(demand, key=lambda c: demand[c] / weight[c])
    while rising:
        level = left / sum(weight[c] for c in rising)  # per flow
        c = rising[0]
        if demand[c] <= level * weight[c]:
            rates[c] = demand[c]
            left -= demand[c]
            rising.pop(0)
            continue
        for c in rising:
            rates[c] = level * weight[c]
        break
    return rates


def class_progress(bytes_by_class: dict[str, float], demand: dict[str, float], weight: dict[str, int], cap: float,
                   start: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class (times, bytes delivered) breakpoints from `start`: every class with bytes moves at its share of
    the engine (class_rates), re-shared whenever one finishes."""
    left = {c: b for c, b in bytes_by_class.items() if b > 0}
    points = {c: ([start], [0.0]) for c in left}
    now = start
    while left:
        rates = class_rates({c: demand[c] for c in left}, weight, cap)
        step = min(left[c] / rates[c] if rates[c] > 0 else math.inf for c in left)
        if math.isinf(step):
            raise ValueError("a class of traffic has no bandwidth")  # a profile with a zero-capacity link
        now += step
        for c in list(left):
            moved = left[c] if math.isinf(rates[c]) else rates[c] * step
            left[c] -= moved
            times, done = points[c]
            times.append(now)
            done.append(done[-1] + moved)
            if left[c] <= 1e-9 * bytes_by_class[c]:
                done[-1] = bytes_by_class[c]
                del left[c]
    return {c: (np.array(t), np.array(d)) for c, (t, d) in points.items()}


def shared_turns(sizes: list[float], concurrent: int) -> tuple[np.ndarray, np.ndarray]:
    """Flows of `sizes` in order, at most `concurrent` at once (a freed turn to the next), the active ones
    sharing the class equally: per flow the class's bytes delivered when it starts and when it ends."""
    n = len(sizes)
    begin, end = np.zeros(n), np.zeros(n)
    progress = delivered = 0.0  # bytes each active flow has had since the first; the class's total
    active: list[tuple[float, int]] = []  # (progress at which it ends, index)
    following = 0
    while following < n or active:
        while following < n and len(active) < concurrent:
            begin[following] = delivered
            heapq.heappush(active, (progress + sizes[following], following))
            following += 1
        finish, i = heapq.heappop(active)
        delivered += (finish - progress) * (len(active) + 1)
        progress = finish
        end[i] = delivered
    return begin, end


def pull_times(ctx, rank: int, sources: list[int], sizes: np.ndarray, cap: float, start: float, loads: LinkLoads,
               one_lane: bool) -> tuple[np.ndarray, np.ndarray]:
    """When each source's pull (`sizes[i]` bytes from `sources[i]`, in pull order) begins and ends landing.
    `one_lane`: the copy engine, one source after another on one stream."""
    sources, sizes = np.asarray(sources, dtype=np.int64), np.asarray(sizes, dtype=float)
    if one_lane:
        members = {"copy": np.arange(len(sources))} if len(sources) else {}
    else:
        kind_of = _class_of(ctx, rank, sources)
        members = {kind: idx for c, kind in enumerate(CLASSES) if len(idx := np.flatnonzero(kind_of == c))}
    bytes_by_class = {kind: float(sizes[idx].sum()) for kind, idx in members.items()}
    demand = {}
    for kind, idx in members.items():
        slowest = float(loads.pair_ns[sources[idx], rank].max())
        demand[kind] = bytes_by_class[kind] / slowest if slowest > 0 else math.inf
    concurrent = {kind: _concurrent(kind, len(idx)) for kind, idx in members.items()}
    progress = class_progress(bytes_by_class, demand, concurrent, cap, start)
    begin, end = np.full(len(sources), start), np.full(len(sources), start)
    for kind, idx in members.items():
        if kind not in progress:
            continue  # nothing to move
        first, last = shared_turns(sizes[idx].tolist(), concurrent[kind])
        times, done = progress[kind]
        begin[idx], end[idx] = np.interp(first, done, times), np.interp(last, done, times)
    return begin, end


def push_times(ctx, rank: int, sends: list[tuple[float, int, float]], cap: float,
               loads: LinkLoads) -> np.ndarray:
    """When each send (ready, destination, bytes), in production order, has left: first come first served
    per class, none before its split is ready; the classes with a send under way share the engine
    (class_rates), re-shared as one goes idle or gets work."""
    if not sends:
        return np.zeros(0)
    ready_at, dest, size_of = (np.array(column) for column in zip(*sends))
    dest = dest.astype(np.int64)
    kind_of = _class_of(ctx, rank, dest)
    queues: dict[str, np.ndarray] = {}
    demand: dict[str, float] = {}
    weight: dict[str, int] = {}
    for c, kind in enumerate(CLASSES):
        idx = np.flatnonzero(kind_of == c)
        if not len(idx):
            continue
        queues[kind] = idx
        slowest = float(loads.pair_ns[rank, dest[idx]].max())
        demand[kind] = float(size_of[idx].sum()) / slowest if slowest > 0 else math.inf
        weight[kind] = _concurrent(kind, len(np.unique(dest[idx])))
    ready = {kind: ready_at[idx] for kind, idx in queues.items()}
    size = {kind: size_of[idx] for kind, idx in queues.items()}
    shares: dict[tuple[str, ...], dict[str, float]] = {}  # by the busy classes: a handful of sets
    head = dict.fromkeys(queues, 0)  # next send per class
    left = {kind: float(size[kind][0]) for kind in queues}  # bytes of the head send still to go
    ends = np.zeros(len(sends))
    now = float(ready_at.min())
    while head:
        busy = tuple(k for k in head if ready[k][head[k]] <= now)
        if not busy:
            now = float(min(ready[k][head[k]] for k in head))
            continue
        rates = shares.get(busy)
        if rates is None:
            rates = shares[busy] = class_rates({k: demand[k] for k in busy}, weight, cap)
        # while the busy set holds, each busy class sends back to back at its rate: its run of sends ends
        # where the next is not ready yet (or its queue is empty); the set changes at the first such end
        # or when an idle class's next send is ready
        runs = {k: _run(now, left[k], ready[k], size[k], head[k], rates[k]) for k in busy}
        until = min(float(t[-1]) for t in runs.values())
        idle_ready = [float(ready[k][head[k]]) for k in head if k not in busy]
        until = min([until, *idle_ready])
        for k, t in runs.items():
            done = int(np.searchsorted(t, until, side="right"))  # sends of the run ended by then
            h = head[k]
            ends[queues[k][h:h + done]] = t[:done]
            h += done
            if h == len(queues[k]):
                del head[k]
                continue
            head[k] = h
            if done == len(t):  # the run is over: the next send waits for its split, all of it to go
                left[k] = float(size[k][h])
            else:  # the send under way: what it has left at `until`
                rate = rates[k]
                left[k] = 0.0 if rate == math.inf else max(0.0, float(t[done] - until) * rate)
        now = until
    return ends


def _run(now: float, left: float, ready: np.ndarray, size: np.ndarray, head: int, rate: float) -> np.ndarray:
    """End times of a class's sends from `head` on at `rate`, back to back from `now` (the head with `left`
    bytes to go), up to the last one whose successor is not ready when it ends (or the queue's last)."""
    window = 64
    while True:
        stop = min(len(size), head + window)
        durations = np.divide(size[head + 1:stop], rate, out=np.zeros(stop - head - 1), where=size[head + 1:stop] > 0)
        first = now + (left / rate if left > 0 else 0.0)
        ends = first + np.concatenate(([0.0], np.cumsum(durations)))
        waits = np.flatnonzero(ready[head + 1:stop] > ends[:-1])  # the run breaks before a send not ready yet
        if len(waits):
            return ends[:waits[0] + 1]
        if stop == len(size):
            return ends
        window *= 4


def _class_of(ctx, rank: int, peers: np.ndarray) -> np.ndarray:
    """CLASSES' index of each peer's lane to or from `rank` (SimContext.lane): local, NVLink, network."""
    return np.where(peers == rank, 0, np.where(ctx.node_of[peers] == ctx.node_of[rank], 1, 2))


def _concurrent(kind: str, peers: int) -> int:
    """Flows a class runs at once (SimContext.lanes): one per peer, network peers MAX_CONCURRENT_PEERS at a time,
    the copy engine one."""
    from comet_dse.sim.runtime import MAX_CONCURRENT_PEERS

    if kind == "copy":
        return 1
    return min(peers, MAX_CONCURRENT_PEERS) if kind == "network" else max(1, peers)
