"""Exact timelines of flows sharing links (SimPy's habit: tiny processes, asserted times)."""

from __future__ import annotations

import random

import pytest
import simpy
from comet_dse.sim.network import FlowNetwork, Link


def run_flows(specs, exact_limit=64):
    """specs: (start time, path, bytes); returns each flow's end time."""
    env = simpy.Environment()
    net = FlowNetwork(env, exact_limit=exact_limit)
    ends, flows = {}, {}

    def start(name, at, path, size):
        yield env.timeout(at)
        flow = net.transfer(path, size)
        flows[name] = flow
        yield flow.done
        ends[name] = env.now

    for name, (at, path, size) in specs.items():
        env.process(start(name, at, path, size))
    env.run()
    return ends, flows


def test_one_flow_takes_bytes_over_bandwidth():
    link = Link("l", 10.0)
    ends, _ = run_flows({"a": (0, [link], 1000)})
    assert ends == {"a": 100}


def test_two_flows_share_then_the_survivor_speeds_up():
    link = Link("l", 10.0)
    ends, flows = run_flows({"a": (0, [link], 1000), "b": (0, [link], 2000)})
    assert ends == {"a": 200, "b": 300}  # 5 B/ns each until 200, then b alone at 10
    assert flows["b"].time_at(1000) == 200
    assert flows["b"].time_at(1500) == 250


@pytest.mark.parametrize("exact_limit", [64, 0])
def test_a_lane_starting_its_next_send_as_one_ends_is_rated_once(exact_limit):
    """A process whose send ends starts the next at the same instant: both changes are re-rated
    together, and the timeline is exact max-min's."""
    env = simpy.Environment()
    net = FlowNetwork(env, exact_limit=exact_limit)
    link = Link("l", 1.0)
    ends = {}
    steps = []
    original = net._rebalance
    net._rebalance = lambda links: (steps.append(env.now), original(links))[1]

    def lane():
        for name in ("a1", "a2"):
            flow = net.transfer([link], 100)
            yield flow.done
            ends[name] = env.now

    def other():
        flow = net.transfer([link], 300)
        yield flow.done
        ends["b"] = env.now

    env.process(lane())
    env.process(other())
    env.run()
    # 0.5 B/ns each: a1 ends at 200 with b at 100 B; a2 and b share until a2 ends at 400; b's last
    # 100 B alone by 500
    assert ends == {"a1": 200, "a2": 400, "b": 500}
    assert steps == [0, 200, 400, 500]  # one re-rating per instant: both starts at 0, a1's end and a2's start at 200


def test_late_arrival_slows_the_first_flow():
    link = Link("l", 10.0)
    ends, _ = run_flows({"a": (0, [link], 1000), "b": (50, [link], 250)})
    # a: 500 B by 50; both at 5 B/ns: b ends at 100 with a at 750; a's last 250 B end at 125
    assert ends == {"b": 100, "a": 125}


def test_max_min_gives_a_capped_flow_its_cap_and_the_rest_the_remainder():
    shared, narrow = Link("shared", 10.0), Link("narrow", 2.0)
    ends, _ = run_flows({"capped": (0, [shared, narrow], 200), "free": (0, [shared], 800)})
    assert ends == {"capped": 100, "free": 100}  # 2 and 8 B/ns


def test_flows_on_disjoint_links_do_not_interact():
    ends, _ = run_flows({"a": (0, [Link("x", 4.0)], 400), "b": (0, [Link("y", 1.0)], 400)})
    assert ends == {"a": 100, "b": 400}


@pytest.mark.parametrize("exact_limit", [0, 64])
def test_links_are_never_oversubscribed(exact_limit):
    rng = random.Random(5)
    links = [Link(f"l{i}", rng.choice([1.0, 2.0, 5.0])) for i in range(8)]
    env = simpy.Environment()
    net = FlowNetwork(env, exact_limit=exact_limit)
    worst = []

    def start(at, path, size):
        yield env.timeout(at)
        flow = net.transfer(path, size)
        for link in links:
            worst.append(sum(f.rate for f in link.flows) / link.capacity)
        yield flow.done

    for _ in range(60):
        env.process(start(rng.randrange(0, 500), rng.sample(links, rng.randint(1, 3)), rng.randrange(10, 2000)))
    env.run()
    assert max(worst) <= 1 + 1e-9
    assert min(w for w in worst if w > 0) > 0.1  # and not left idle


def test_zero_byte_flow_is_done_at_once():
    ends, _ = run_flows({"a": (7, [Link("l", 1.0)], 0)})
    assert ends == {"a": 7}
