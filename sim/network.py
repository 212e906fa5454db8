"""Links as shared bandwidth: flows get max-min fair rates, recomputed when a flow starts or ends.

SimPy has no bandwidth sharing, so a small rate manager does it (the usual exact pattern):
each flow owns its remaining bytes and current rate; when a flow starts or ends, the rates
of the flows coupled to it through shared links are recomputed by progressive filling.

Exact max-min over a coupled set costs O(set size x its links) per change, which grows
quadratically on large all-to-alls. So the set is the whole coupled component while at
most `exact_limit` flows are in flight (every case up to a node or two), and otherwise only
the flows sharing a link with the change, with every other flow's rate held as it is (a
local max-min step: it never oversubscribes a link, and can leave some capacity unused
until those flows' own neighbourhood changes).

Completion times live in one heap with lazy invalidation and a single SimPy timer armed
for the earliest one, so a rate change costs no event. The links a change touches are re-rated
once per instant, after every change of that instant is in (a lane's send ending and its next
one starting cost one step): with the whole component re-rated (up to `exact_limit` flows) the
rates are the same as re-rating at each change, since no time passes in between.

Units: bytes and nanoseconds, so 1 GB/s (1e9 B/s) is 1 byte/ns.
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
from collections.abc import Iterable, Sequence

import numpy as np
import simpy

_EPS = 1e-9
EXACT_LIMIT = 64


class Link:
    __slots__ = ("name", "capacity", "flows")

    def __init__(self, name: str, capacity: float) -> None:
        self.name = name
        self.capacity = capacity  # bytes / ns
        self.flows: dict[Flow, None] = {}  # an ordered set: iteration order must not depend on memory addresses

    def __repr__(self) -> str:
        return f"Link({self.name}, {self.capacity:g} B/ns, {len(self.flows)} flows)"


class Flow:
    """`size` bytes along `path`; `done` fires when the last byte has landed."""

    __slots__ = ("id", "path", "size", "remaining", "rate", "t_last", "done", "version", "history", "start")

    def __init__(self, env: simpy.Environment, path: Sequence[Link], size: float, flow_id: int) -> None:
        self.id = flow_id
        self.path = tuple(path)
        self.size = float(size)
        self.remaining = float(size)
        self.rate = 0.0
        self.start = env.now
        self.t_last = env.now
        self.done = env.event()
        self.version = 0
        self.history: list[tuple[float, float]] = [(env.now, 0.0)]  # (time, bytes done) at each rate change

    def time_at(self, offset: float) -> float:
        """When the first `offset` bytes had arrived (linear between rate changes)."""
        times, done = zip(*self.history)
        return float(np.interp(offset, done, times))


class FlowNetwork:
    def __init__(self, env: simpy.Environment, exact_limit: int | None = None) -> None:
        self.env = env
        self.exact_limit = EXACT_LIMIT if exact_limit is None else exact_limit
        self._ids = itertools.count()
        self._heap: list[tuple[float, int, Flow, int]] = []  # (finish time, tie, flow, version)
        self._tie = itertools.count()
        self._armed_at = math.inf
        self.active = 0  # flows in flight
        self._pending: dict[Link, None] = {}  # links whose flows changed at this instant, re-rated once
        self._flush_at: float | None = None

    def transfer(self, path: Sequence[Link], size: float) -> Flow:
        flow = Flow(self.env, path, size, next(self._ids))
        if size <= 0 or not path:
            flow.history.append((self.env.now, flow.size))
            flow.done.succeed(flow)
            return flow
        for link in flow.path:
            link.flows[flow] = None
        self.active += 1
        self._touch(flow.path)
        return flow

    def _touch(self, links: Iterable[Link]) -> None:
        """Re-rate `links` once this instant's changes are all in: a flow that ends and the next one a
        process starts at the same time (a lane's next send) cost one max-min step, not two. No time
        passes in between, so no byte moves at the rates skipped."""
        for link in links:
            self._pending[link] = None
        if self._flush_at != self.env.now:
            self._flush_at = self.env.now
            flush = self.env.event()
            flush.callbacks.append(self._flush)
            flush.succeed()  # after the events already queued for this instant (a process's next transfer)

    def _flush(self, _event: simpy.Event) -> None:
        self._flush_at = None
        links, self._pending = self._pending, {}
        self._rebalance(links)

    # ---- rates ------------------------------------------------------------------------------

    def _coupled(self, links: Iterable[Link]) -> tuple[list[Flow], bool]:
        """The flows to re-rate, by id: the whole component while few flows are in flight, else the neighbours."""
        if self.active > self.exact_limit:  # a big component is likely: skip the search for it
            return sorted({f for link in links for f in link.flows}, key=_BY_ID), False
        seen_links: set[Link] = set()
        flows: set[Flow] = set()
        stack = list(links)
        while stack:
            link = stack.pop()
            if link in seen_links:
                continue
            seen_links.add(link)
            for flow in link.flows:
                if flow not in flows:
                    flows.add(flow)
                    stack.extend(flow.path)
        return sorted(flows, key=_BY_ID), True

    def _rebalance(self, links: dict[Link, None]) -> None:
        now = self.env.now
        flows, whole = self._coupled(links)
        for flow in flows:  # settle progress at the old rates
            if now > flow.t_last:  # (an infinite rate over no time would give NaN)
                flow.remaining -= flow.rate * (now - flow.t_last)
            flow.t_last = now
        heap, tie = self._heap, self._tie
        for flow, rate in _max_min_rates(flows, None if whole else links):
            if rate == flow.rate:
                continue
            remaining = flow.remaining if flow.remaining > 0.0 else 0.0
            flow.history.append((now, flow.size - remaining))
            flow.rate = rate
            flow.version += 1
            finish = now + math.ceil(remaining / rate - _EPS) if rate > 0 else math.inf
            heapq.heappush(heap, (finish, next(tie), flow, flow.version))
        self._arm()

    def _arm(self) -> None:
        heap = self._heap
        while heap and heap[0][3] != heap[0][2].version:
            heapq.heappop(heap)  # stale: the flow's rate changed since
        if heap and heap[0][0] < self._armed_at:
            self._armed_at = heap[0][0]
            self.env.timeout(heap[0][0] - self.env.now).callbacks.append(self._on_timer)

    def _on_timer(self, _event: simpy.Event) -> None:
        now = self.env.now
        if now >= self._armed_at:
            self._armed_at = math.inf
        touched: dict[Link, None] = {}
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, flow, version = heapq.heappop(heap)
            if version != flow.version or flow.done.triggered:
                continue
            flow.remaining = 0.0
            flow.t_last = now
            flow.rate = 0.0
            flow.version += 1
            flow.history.append((now, flow.size))
            for link in flow.path:
                link.flows.pop(flow, None)
                touched[link] = None
            self.active -= 1
            flow.done.succeed(flow)
        if touched:
            self._touch(touched)
        else:
            self._arm()


_BY_ID = operator.attrgetter("id")


def _max_min_rates(flows: list[Flow], touched: dict[Link, None] | None) -> list[tuple[Flow, float]]:
    """Progressive filling: raise the rates together, freezing flows at a full link.

    `touched` None: `flows` is a whole component. Else `flows` are those on the `touched`
    links, and flows outside them keep their rates and use up their share. The links come off
    a heap by fair share, so a round costs the links it changes, not every link. Flows come
    sorted by id and each round freezes its flows in that order, so the float sums are the
    same from run to run. Returns (flow, rate) in the order the flows froze."""
    rates: list[tuple[Flow, float]] = []
    # link -> [capacity left, rising flows on it, version, its flows by id]: one lookup per visit
    state: dict[Link, list] = {}
    members: set[Flow] | None = None
    for flow in flows:
        for link in flow.path:
            entry = state.get(link)
            if entry is not None:
                entry[1] += 1
                entry[3].append(flow)
                continue
            if touched is None or link in touched:  # only members use it: nothing held
                room = link.capacity
            else:
                if members is None:
                    members = set(flows)
                room = link.capacity - sum([f.rate for f in link.flows if f not in members])
            state[link] = [room if room > 0.0 else 0.0, 1, len(state), [flow]]
    # the fullest links first: a heap of (fair share, tie, link, version), an entry stale once its link's
    # version moved on; a round freezes every rising flow on the links at the lowest share (to 1 + eps)
    heap = [(entry[0] / entry[1], entry[2], link, entry[2]) for link, entry in state.items()]
    heapq.heapify(heap)
    ties = itertools.count(len(heap))
    settled: set[Flow] = set()
    eps1 = 1 + _EPS
    while heap:
        _, _, link, version = heap[0]
        entry = state.get(link)
        if entry is None or entry[2] != version:
            heapq.heappop(heap)  # stale
            continue
        level = heap[0][0]
        bound = level * eps1
        frozen: list[Flow] = []
        while heap and heap[0][0] <= bound:
            _, _, link, version = heapq.heappop(heap)
            entry = state.get(link)
            if entry is None or entry[2] != version:
                continue  # stale
            for flow in entry[3]:
                if flow not in settled:
                    settled.add(flow)
                    frozen.append(flow)
        frozen.sort(key=_BY_ID)  # the rising order, as the sums must run
        finite = level != math.inf  # inf - inf would poison the link with NaN
        changed: dict[Link, list] = {}
        for flow in frozen:
            rates.append((flow, level))
            for link in flow.path:
                entry = state[link]
                if finite:
                    entry[0] -= level
                if entry[1] == 1:
                    del state[link]
                    changed.pop(link, None)
                else:
                    entry[1] -= 1
                    changed[link] = entry
        for link, entry in changed.items():
            entry[2] = tie = next(ties)
            heapq.heappush(heap, (entry[0] / entry[1], tie, link, tie))
    return rates
