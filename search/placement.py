"""Topology-aware expert placement as an assignment problem (the second seed's idea).

Experts go to slots (rank groups of E/EP experts each). The cross-node traffic of expert
e placed in slot j is the rows every source sends it (dispatch) and gets back (combine)
from GPUs of another node: cost[e, j] = sum_s counts[s, e] * (ranks of slot j not on
s's node). That cost depends on the expert's own slot only, so the best placement is a
linear assignment, solved exactly by SciPy's Hungarian-method solver.

The cost only sees which node(s) a slot is on, so slots on the same nodes are
interchangeable for it; among those, the experts are then dealt heaviest first to the
least-loaded rank group, so that cutting cross-node traffic does not pile hot experts
onto one GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from comet_dse.routing import Routing
from comet_dse.workload import Workload


@dataclass(frozen=True)
class Placement:
    name: str
    slot_of_expert: np.ndarray  # (E,) slot index; slot j lives on EP rank group j // (E/EP)

    def ep_rank_of_expert(self, workload: Workload) -> list[int]:
        return [int(s) // workload.experts_per_rank for s in self.slot_of_expert]

    def apply(self, routing: Routing) -> Routing:
        """The routing as the simulator sees it: expert ids renamed to their slots."""
        counts = np.zeros_like(routing.counts)
        counts[:, self.slot_of_expert] = routing.counts
        shares = np.zeros_like(routing.shares)
        shares[self.slot_of_expert] = routing.shares
        picks = None if routing.picks is None else self.slot_of_expert[routing.picks]
        return Routing(counts, shares, picks)


def cross_node_cost(workload: Workload, routing: Routing, gpus_per_node: int) -> np.ndarray:
    """(E, E) rows crossing nodes (one way) if expert e sits in slot j."""
    world, experts = workload.world, workload.model.num_experts
    node = np.arange(world) // gpus_per_node
    slot_ranks = np.array([list(workload.expert_ranks(j)) for j in range(experts)])  # (E, TP): slot j's ranks
    crossing = (node[None, :, None] != node[slot_ranks][:, None, :]).sum(axis=2)  # (E slots, W sources)
    return routing.counts.T @ crossing.T  # (E experts, E slots)


def cross_node_bytes(workload: Workload, routing: Routing, placement: Placement, gpus_per_node: int) -> float:
    """Bytes crossing nodes in dispatch plus combine under `placement`."""
    cost = cross_node_cost(workload, routing, gpus_per_node)
    rows = cost[np.arange(len(placement.slot_of_expert)), placement.slot_of_expert].sum()
    return float(rows) * workload.model.hidden * workload.dtype_bytes * 2


def contiguous(workload: Workload) -> Placement:
    return Placement("contiguous", np.arange(workload.model.num_experts))


def round_robin(workload: Workload) -> Placement:
    experts, ep, per_rank = workload.model.num_experts, workload.ep, workload.experts_per_rank
    e = np.arange(experts)
    return Placement("round-robin", (e % ep) * per_rank + e // ep)


def optimized(workload: Workload, routing: Routing, gpus_per_node: int) -> Placement:
    experts, per_rank = workload.model.num_experts, workload.experts_per_rank
    rows, slots = linear_sum_assignment(cross_node_cost(workload, routing, gpus_per_node))
    slot_of_expert = np.empty(experts, dtype=np.int64)
    slot_of_expert[rows] = slots
    load = routing.counts.sum(axis=0)
    nodes_of_slot = [tuple(r // gpus_per_node for r in workload.expert_ranks(j)) for j in range(experts)]
    for nodes in sorted(set(nodes_of_slot)):
        class_slots = [j for j in range(experts) if nodes_of_slot[j] == nodes]
        members = sorted((e for e in range(experts) if nodes_of_slot[slot_of_expert[e]] == nodes), key=lambda e: (-load[e], e))
        groups = sorted({j // per_rank for j in class_slots})
        free = {g: [j for j in class_slots if j // per_rank == g] for g in groups}
        group_load = dict.fromkeys(groups, 0)
        for e in members:  # heaviest first to the least-loaded rank group with a free slot
            g = min((g for g in groups if free[g]), key=lambda g: (group_load[g], g))
            slot_of_expert[e] = free[g].pop(0)
            group_load[g] += int(load[e])
    return Placement("optimized", slot_of_expert)
