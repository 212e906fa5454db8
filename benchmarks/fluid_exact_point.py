"""One point where the flows run as their model says: every network peer at once, re-rated exactly.

    python benchmarks/fluid_exact_point.py   (about a minute)

DeepSeek-V3, EP=32 over 4 nodes on rail routes, 4096 tokens/GPU, comet at 16 blocks: the fluid network
beside the flows re-rated exactly with every peer at once (no turns, whole components: slow, so one point)
and exactly with the turns `--network flows` takes. Writes results/bench/fluid_exact_point.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import comet_dse.sim.network as flow_network
import comet_dse.sim.runtime as runtime
from comet_dse.sim import simulate
from comet_dse.sim.api import default_schedule

from comet_dse.hardware import resolve_hardware
from comet_dse.models import MODEL_PRESETS
from comet_dse.routing import make_routing
from comet_dse.workload import Workload


def main() -> None:
    hardware = resolve_hardware("h800", None, "rail")
    workload = Workload(MODEL_PRESETS["deepseek-v3"], 4096, 32)
    routing = make_routing(workload)
    comet = replace(default_schedule("comet", workload.model.hidden), comm_blocks0=16, comm_blocks1=16)
    fluid = simulate(workload, hardware, comet, routing=routing, record=False, network="fluid").latency_us
    flow_network.EXACT_LIMIT = 10**9  # whole components, however many flows
    turns = simulate(workload, hardware, comet, routing=routing, record=False, network="flows").latency_us
    runtime.MAX_CONCURRENT_PEERS = 10**9  # every network peer at once
    start = time.perf_counter()
    every_peer = simulate(workload, hardware, comet, routing=routing, record=False, network="flows").latency_us
    row = {"case": "deepseek-v3, EP=32, rail, 4096 tokens/GPU, comet 16/16 blocks", "fluid_us": fluid,
           "exact_flows_turns_us": turns, "exact_flows_every_peer_us": every_peer,
           "fluid_vs_every_peer": round(fluid / every_peer - 1, 5), "every_peer_wall_s": round(time.perf_counter() - start, 1),
           "date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/fluid_exact_point.py"}
    print(json.dumps(row, indent=2))
    out = Path("results/bench/fluid_exact_point.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
