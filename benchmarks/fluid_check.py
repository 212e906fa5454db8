"""How far the fluid network lands from the flow engine: comet's latency under both, case by case.

    python benchmarks/fluid_check.py [--quick] [--out results/bench/fluid_check.json]

The flow engine (sim/network.py) is the reference: every copy a flow at max-min fair rates, exact while at
most 64 flows are in flight and a local max-min step beyond (what `--network flows` runs). Up to 32 GPUs
the flows are also run exact however many flows are in flight ("exact": whole components re-rated, slow),
and with every network peer at once ("all peers": the model the flows' turns, MAX_CONCURRENT_PEERS at a
time, stand in for; sim/runtime.py).
The fluid network (sim/fluid.py) prices each layer's copies from its link loads at once. Per case: the
latencies, the fluid's error against the flows (and the exact), the wall times; per sweep of comm blocks:
whether the flows and the fluid pick the same count, and the flows' latency at the fluid's pick over the
flows' best (what a search tuned on the fluid would lose). `--quick` drops the cases above 64 GPUs.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import comet_dse.sim.network as flow_network  # noqa: E402
import comet_dse.sim.runtime as runtime  # noqa: E402
from comet_dse.sim import simulate  # noqa: E402
from comet_dse.sim.api import default_schedule  # noqa: E402

from comet_dse.hardware import resolve_hardware  # noqa: E402
from comet_dse.models import MODEL_PRESETS  # noqa: E402
from comet_dse.routing import make_routing  # noqa: E402
from comet_dse.workload import Workload  # noqa: E402

BLOCKS = (4, 8, 16, 32, 48)
EXACT_UP_TO_GPUS = 32
# (model, hardware, internode route or None, EP, TP, tokens/GPU, routing, comm-block counts)
CASES = [
    ("mixtral-8x7b", "h800", None, 8, 1, 1024, "uniform", BLOCKS),
    ("mixtral-8x7b", "h800", None, 8, 1, 16384, "uniform", BLOCKS),
    ("mixtral-8x7b", "h800", None, 4, 2, 4096, "uniform", BLOCKS),
    ("qwen2-moe-2.7b", "h800", None, 32, 1, 8192, "uniform", BLOCKS),
    ("qwen2-moe-2.7b", "h800", None, 32, 1, 8192, "zipf:1.2", BLOCKS),
    ("deepseek-v3", "h800", None, 16, 1, 4096, "uniform", BLOCKS),
    ("deepseek-v3", "h800", "rail", 32, 1, 4096, "uniform", BLOCKS),
    ("deepseek-v3", "h800", "pxn", 32, 1, 1024, "uniform", BLOCKS),
    ("deepseek-v3", "h800", None, 16, 2, 4096, "uniform", BLOCKS),
    ("deepseek-v3", "h800", None, 64, 1, 4096, "uniform", BLOCKS),
    ("mixtral-8x7b", "results/hardware/h200-x2-run39.json", None, 2, 1, 8192, "uniform", (0, 2, 4, 8, 16)),
    ("deepseek-v3", "h800", None, 128, 1, 4096, "uniform", (16,)),
    ("deepseek-v3", "h800", None, 256, 1, 4096, "uniform", (16,)),
]


def run_case(model: str, hardware: str, internode: str | None, ep: int, tp: int, tokens: int, routing: str,
             blocks: tuple[int, ...]) -> dict:
    hw = resolve_hardware(hardware, None, internode)
    workload = Workload(MODEL_PRESETS[model], tokens, ep, tp, routing=routing)
    drawn = make_routing(workload)
    base = default_schedule("comet", workload.model.hidden)
    points = []
    for b in blocks:
        schedule = replace(base, comm_blocks0=b, comm_blocks1=max(b, 1))
        point = {"comm_blocks": b}
        for network in ("flows", "fluid"):
            start = time.perf_counter()
            result = simulate(workload, hw, schedule, routing=drawn, record=False, network=network)
            point[network] = {"latency_us": result.latency_us, "wall_s": round(time.perf_counter() - start, 3)}
        point["error"] = round(point["fluid"]["latency_us"] / point["flows"]["latency_us"] - 1, 5)
        if workload.world <= EXACT_UP_TO_GPUS:
            limit, flow_network.EXACT_LIMIT = flow_network.EXACT_LIMIT, 10**9
            try:
                exact = simulate(workload, hw, schedule, routing=drawn, record=False, network="flows").latency_us
            finally:
                flow_network.EXACT_LIMIT = limit
            point["exact_us"] = exact
            point["error_vs_exact"] = round(point["fluid"]["latency_us"] / exact - 1, 5)
            point["flows_error_vs_exact"] = round(point["flows"]["latency_us"] / exact - 1, 5)
            turns, runtime.MAX_CONCURRENT_PEERS = runtime.MAX_CONCURRENT_PEERS, 10**9
            try:
                every_peer = simulate(workload, hw, schedule, routing=drawn, record=False, network="flows").latency_us
                every_peer_fluid = simulate(workload, hw, schedule, routing=drawn, record=False, network="fluid").latency_us
            finally:
                runtime.MAX_CONCURRENT_PEERS = turns
            point["all_peers_us"] = every_peer
            point["error_vs_all_peers"] = round(every_peer_fluid / every_peer - 1, 5)
        points.append(point)
    flows = {p["comm_blocks"]: p["flows"]["latency_us"] for p in points}
    fluid = {p["comm_blocks"]: p["fluid"]["latency_us"] for p in points}
    flows_best, fluid_best = min(flows, key=flows.get), min(fluid, key=fluid.get)
    return {"model": model, "hardware": hardware, "internode": internode or "direct", "ep": ep, "tp": tp, "gpus": ep * tp,
            "tokens": tokens, "routing": routing, "points": points, "flows_best": flows_best, "fluid_best": fluid_best,
            "regret": round(flows[fluid_best] / flows[flows_best] - 1, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the cases up to 64 GPUs")
    parser.add_argument("--out", default="results/bench/fluid_check.json")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.quick or c[3] * c[4] <= 64]
    rows = []
    for case in cases:
        row = run_case(*case)
        rows.append(row)
        errors = " ".join(f"{p['comm_blocks']}:{100 * p['error']:+.2f}%"
                          + (f" (exact: fluid {100 * p['error_vs_exact']:+.2f}%, flows {100 * p['flows_error_vs_exact']:+.2f}%;"
                             f" all peers {100 * p['error_vs_all_peers']:+.2f}%)" if "exact_us" in p else "") for p in row["points"])
        walls = sum(p["flows"]["wall_s"] for p in row["points"]), sum(p["fluid"]["wall_s"] for p in row["points"])
        print(f"{row['model']:15} {Path(row['hardware']).stem:20} {row['internode']:6} EP={row['ep']:<3} TP={row['tp']} "
              f"{row['tokens']:>5} {row['routing']:8} blocks:error {errors} | best flows {row['flows_best']} fluid "
              f"{row['fluid_best']} (regret {100 * row['regret']:.2f}%) | wall flows {walls[0]:.2f} s fluid {walls[1]:.2f} s",
              flush=True)
    errors = [abs(p["error"]) for r in rows for p in r["points"]]
    exact = [(abs(p["error_vs_exact"]), abs(p["flows_error_vs_exact"]), abs(p["error_vs_all_peers"]))
             for r in rows for p in r["points"] if "exact_us" in p]
    summary = {"points": len(errors), "max_abs_error": max(errors), "mean_abs_error": round(sum(errors) / len(errors), 5),
               "exact_points": len(exact), "fluid_max_abs_error_vs_exact": max(e[0] for e in exact),
               "flows_max_abs_error_vs_exact": max(e[1] for e in exact),
               "max_abs_error_vs_all_peers": max(e[2] for e in exact),
               "same_pick": sum(r["flows_best"] == r["fluid_best"] for r in rows if len(r["points"]) > 1),
               "sweeps": sum(len(r["points"]) > 1 for r in rows), "max_regret": max(r["regret"] for r in rows)}
    print(f"{summary['points']} points: |error| mean {100 * summary['mean_abs_error']:.2f}%, max "
          f"{100 * summary['max_abs_error']:.2f}%; same best comm blocks in {summary['same_pick']} of {summary['sweeps']} "
          f"sweeps, regret at most {100 * summary['max_regret']:.2f}%; against the exact flows ({summary['exact_points']} "
          f"points up to {EXACT_UP_TO_GPUS} GPUs): fluid at most {100 * summary['fluid_max_abs_error_vs_exact']:.2f}%, "
          f"flows at most {100 * summary['flows_max_abs_error_vs_exact']:.2f}% off; with every peer at once, the fluid "
          f"at most {100 * summary['max_abs_error_vs_all_peers']:.2f}% off the flows")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/fluid_check.py"
                               + (" --quick" if args.quick else ""), "summary": summary, "cases": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
