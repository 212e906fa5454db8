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
    """`size` bytes along `path`; `done` fires when the last byte has landed. It carries no value: the
    flow as its value would be a reference cycle, and ended flows (with their histories) would then wait
    for the cyclic garbage collector, O(W^2) of them on a large all-to-all."""

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
            flow.done.succeed()
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
        if len(heap) > 2 * self.active + 1024:
            # stale entries (a re-rated flow's earlier finish times) keep ended flows and their histories alive
            # until their times pass: drop them. Ties are unique, so the valid entries pop in the same order
            heap[:] = [entry for entry in heap if entry[3] == entry[2].version]
            heapq.heapify(heap)
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
            flow.done.succeed()
        if touched:
            self._touch(touched)
        else:
            self._arm()


_BY_ID = operator.attrgetter("id")


def _max_min_rates(flows: list[Flow], touched: dict[Link, None] | None) -> list[tuple[Flow, float]]:
    """Progressive filling: raise the rates together, freezing flows at a full link.

    `touched` None: `flows` is a whole component. Else `flows` are those on the `touched`
    links, and flows outside them keep their rates and use up their share. The links come off
    a heap by fair share, so a round costs the links it changes, not every link, and the filling
    stops once every flow has its rate (links left on the heap hold none still rising). Flows come
    sorted by id and each round freezes its flows in that order, so the float sums are the
    same from run to run. Returns (flow, rate) in the order the flows froze."""
    rates: list[tuple[Flow, float]] = []
    # per link an entry [capacity left, rising flows on it, version (-1: no flow rises), its flows by id,
    # changed this round]; per rising flow its links' entries, so a round looks up no link
    state: dict[Link, list] = {}
    rising: dict[Flow, list[list]] = {}
    members: set[Flow] | None = None
    for flow in flows:
        entries = []
        for link in flow.path:
            entry = state.get(link)
            if entry is None:
                if touched is None or link in touched:  # only members use it: nothing held
                    room = link.capacity
                else:
                    if members is None:
                        members = set(flows)
                    room = link.capacity - sum([f.rate for f in link.flows if f not in members])
                entry = state[link] = [room if room > 0.0 else 0.0, 0, len(state), [], False]
            entry[1] += 1
            entry[3].append(flow)
            entries.append(entry)
        rising[flow] = entries
    # the fullest links first: a heap of (fair share, version, entry), stale once the entry's version moved
    # on; a round freezes every rising flow on the links at the lowest share (to 1 + eps). Equal shares
    # leave the heap in the same round, so the order among them does not matter
    heap = [(entry[0] / entry[1], entry[2], entry) for entry in state.values()]
    heapq.heapify(heap)
    versions = itertools.count(len(heap))
    eps1 = 1 + _EPS
    pop, push = heapq.heappop, heapq.heappush
    while rising:
        level, version, entry = heap[0]
        if entry[2] != version:
            pop(heap)  # stale
            continue
        bound = level * eps1
        frozen: list[tuple[int, Flow, list[list]]] = []  # by id: ids are unique, so no two flows are compared
        while heap and heap[0][0] <= bound:
            _, version, entry = pop(heap)
            if entry[2] != version:
                continue  # stale
            for flow in entry[3]:
                if flow in rising:
                    frozen.append((flow.id, flow, rising.pop(flow)))
        frozen.sort()  # the rising order, as the sums must run
        finite = level != math.inf  # inf - inf would poison the link with NaN
        changed: list[list] = []
        for _, flow, entries in frozen:
            rates.append((flow, level))
            for entry in entries:
                if finite:
                    entry[0] -= level
                entry[1] -= 1
                if not entry[4]:
                    entry[4] = True
                    changed.append(entry)
        for entry in changed:
            entry[4] = False
            if entry[1]:
                entry[2] = version = next(versions)
                push(heap, (entry[0] / entry[1], version, entry))
            else:
                entry[2] = -1
    return rates
