"""Simulator speed: wall time and events per second over a ladder of sizes.

    python benchmarks/bench_sim.py [--quick] [--profile]

Targets: Mixtral-8x7B on h800, EP=8, 16384 tokens/GPU, all three schedules together in <= 1 s
on one core (issue 2); DeepSeek-V3 shapes, all three schedules, EP=64 in <= 2 s, EP=256 (32
nodes x 8) in <= 10 s and 1024 GPUs in <= 60 s (the cluster-scale issue): EP=256 x TP=4 (DeepSeek-V3's 256
experts cap its EP) and EP=1024 on the same layer with 1024 routed experts, one a GPU.
`--gpus 64,256 --repeat 3` times only those cases, each the median of three runs. `--network` prices
comet's copies with that engine (default auto: flows up to 32 GPUs, fluid beyond; sim/api.network_engine).
Writes results/bench/sim_speed.json (with each case's peak memory, ru_maxrss, which only grows
over a run: run a large case alone to read its own figure). Threads are pinned to one so the
figure is one core's.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

from comet_dse.sim import SCHEDULES, simulate  # noqa: E402

from comet_dse.choices import NETWORK_ENGINES  # noqa: E402
from comet_dse.hardware import HARDWARE_PRESETS  # noqa: E402
from comet_dse.models import MODEL_PRESETS  # noqa: E402
from comet_dse.routing import make_routing  # noqa: E402
from comet_dse.workload import Workload  # noqa: E402

LADDER = [
    ("mixtral-8x7b", "h800", 8, 1024),
    ("mixtral-8x7b", "h800", 8, 4096),
    ("mixtral-8x7b", "h800", 8, 16384),  # target: <= 1 s for the three schedules
    ("qwen2-moe-2.7b", "h800", 8, 8192),
    ("deepseek-v3", "h800", 16, 4096),
    ("deepseek-v3", "h800", 32, 4096),
    ("deepseek-v3", "h800", 64, 4096),  # target: <= 2 s
    ("deepseek-v3", "h800", 128, 4096),
    ("deepseek-v3", "h800", 256, 4096),  # target: <= 10 s
    # beyond 256 GPUs by TP: DeepSeek-V3's 256 experts cap EP at 256
    ("deepseek-v3", "h800", 256, 4096, 2),
    ("deepseek-v3", "h800", 256, 4096, 4),  # 1024 GPUs, target: <= 60 s
    ("deepseek-v3", "h800", 1024, 4096, 1, 1024),  # EP=1024: DeepSeek-V3's layer with 1024 experts, one a GPU
]
# by (model, GPUs, tokens)
TARGETS_S = {("mixtral-8x7b", 8, 16384): 1.0, ("deepseek-v3", 64, 4096): 2.0, ("deepseek-v3", 256, 4096): 10.0,
             ("deepseek-v3", 1024, 4096): 60.0}


def run_case(model: str, hardware: str, ep: int, tokens: int, tp: int = 1, experts: int | None = None, repeat: int = 1,
             network: str = "auto") -> dict:
    """All schedules on one shared routing; with `repeat` > 1 the median run (by total time). `experts`: the
    preset's layer with that many routed experts instead (EP beyond the preset's own count)."""
    runs = [_run_case(model, hardware, ep, tokens, tp, experts, network) for _ in range(repeat)]
    row = sorted(runs, key=lambda r: r["total_wall_s"])[len(runs) // 2]
    if repeat > 1:
        row["runs_total_wall_s"] = [r["total_wall_s"] for r in runs]
        row["total_wall_s"] = statistics.median(row["runs_total_wall_s"])
        row["met"] = None if row["target_s"] is None else row["total_wall_s"] <= row["target_s"]
    return row


def _run_case(model: str, hardware: str, ep: int, tokens: int, tp: int, experts: int | None, network: str) -> dict:
    config = MODEL_PRESETS[model] if experts is None else replace(MODEL_PRESETS[model], num_experts=experts)
    workload = Workload(config, tokens, ep, tp)
    hw = HARDWARE_PRESETS[hardware]
    start = time.perf_counter()
    routing = make_routing(workload)
    per_schedule = {}
    for name in SCHEDULES:
        t0 = time.perf_counter()
        result = simulate(workload, hw, name, routing=routing, record=False, network=network)
        wall = time.perf_counter() - t0
        per_schedule[name] = {"wall_s": round(wall, 4), "events": result.events,
                              "events_per_s": round(result.events / wall), "latency_us": result.latency_us,
                              "network": result.network}
    total = time.perf_counter() - start
    target = TARGETS_S.get((model, workload.world, tokens))
    return {"model": model, "experts": config.num_experts, "hardware": hardware, "ep": ep, "tp": tp, "gpus": workload.world, "tokens": tokens,
            "total_wall_s": round(total, 4), "target_s": target, "met": None if target is None else total <= target,
            "max_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "schedules": per_schedule}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the target cases")
    parser.add_argument("--gpus", help="only the cases with these GPU counts, comma-separated (e.g. 64,256)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the median is kept")
    parser.add_argument("--profile", action="store_true", help="print where the 64-GPU comet run spends its time")
    parser.add_argument("--network", default="auto", choices=NETWORK_ENGINES, help="comet's network engine (default auto)")
    parser.add_argument("--out", default="results/bench/sim_speed.json")
    args = parser.parse_args()

    gpus = [case[2] * (case[4] if len(case) > 4 else 1) for case in LADDER]  # EP x TP
    ladder = [(c, g) for c, g in zip(LADDER, gpus) if not args.quick or (c[0], g, c[3]) in TARGETS_S]
    if args.gpus:
        ladder = [(c, g) for c, g in ladder if g in {int(n) for n in args.gpus.split(",")}]
    rows = []
    print(f"{'model':16} {'GPUs':>4} {'tokens':>6} {'total s':>8} {'target':>7}  per schedule: s (events/s)")
    for case, _ in ladder:
        row = run_case(*case, repeat=args.repeat, network=args.network)
        rows.append(row)
        detail = "  ".join(f"{n} {s['wall_s']:.3f} ({s['events_per_s']:,})" for n, s in row["schedules"].items())
        detail += f"  comet's network {row['schedules']['comet']['network']}"
        target = f"{row['target_s']:.0f} s" if row["target_s"] else ""
        label = row["model"] if len(case) < 6 else f"{row['model']} E={row['experts']}"
        print(f"{label:16} {row['gpus']:>4} {row['tokens']:>6} {row['total_wall_s']:>8.3f} {target:>7}  {detail}"
              f"  peak {row['max_rss_MiB']} MiB", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                                           "cpus": os.cpu_count(), "threads": 1},
                               "date": time.strftime("%Y-%m-%d"), "network": args.network, "cases": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    if args.profile:
        workload = Workload(MODEL_PRESETS["deepseek-v3"], 4096, 64)
        profile = cProfile.Profile()
        profile.runcall(simulate, workload, HARDWARE_PRESETS["h800"], "comet", record=False, network=args.network)
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
