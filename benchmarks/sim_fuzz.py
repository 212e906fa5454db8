"""Random simulations: every schedule over profiles x models x EP/TP x tokens x comet knobs must give a finite,
positive latency or refuse with a UserError. Prints each bad case and a count.

    python benchmarks/sim_fuzz.py --seed 4 --trials 700      # ~2 minutes per 400 cases on one core

A first draft of this script (the same draws in another order) ran 965 simulations between commits 05e64e3 and
2e63454 and found one bad: a 0/0 in fused_costs.pulled_tile_ends_ns (DeepSeek-V3, TP=2, one token), fixed in
2e63454; its 843 after the fix and this script's runs (results/bench/sim_fuzz/) found none.
"""

from __future__ import annotations

import argparse
import math
import random

from comet_dse.sim import Chunked, Comet, Sequential, simulate

from comet_dse.errors import UserError
from comet_dse.hardware import HARDWARE_PRESETS, load_hardware
from comet_dse.models import MODEL_PRESETS
from comet_dse.routing import make_routing
from comet_dse.workload import Workload

PROFILES = ("h100-sxm", "h800", "l20", "results/hardware/h100-80gb-hbm3-x2.json", "results/hardware/h200-x2-run134.json",
            "results/hardware/h200-x4-run135.json", "results/hardware/h200-x1-run148.json",
            "results/hardware/h200-x2-run15.json")
MIXES = ((1, 1), (2, 1), (1, 2), (4, 1), (2, 2), (1, 4), (8, 1))  # (EP, TP)
TOKENS = (1, 16, 100, 256, 1024, 4096)


def random_schedule(rng: random.Random):
    kind = rng.choice(("sequential", "chunked", "comet"))
    if kind == "sequential":
        return Sequential()
    if kind == "chunked":
        return Chunked(chunks=rng.choice((1, 2, 8)))
    return Comet(comm_blocks0=rng.choice((0, 1, 4, 16, 48)), comm_blocks1=rng.choice((1, 4, 16, 48)),
                 tile_order=rng.choice(("layout", "expert")), tile_layout=rng.choice(("merged", "by-source")),
                 row_order=rng.choice(("local-first", "source-order")), split_k=rng.choice((1, 4)),
                 comm_deal=rng.choice(("static", "dynamic")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    profiles = {p: HARDWARE_PRESETS[p] if p in HARDWARE_PRESETS else load_hardware(p) for p in PROFILES}
    ran = bad = 0
    for _ in range(args.trials):
        profile = rng.choice(PROFILES)
        model = rng.choice(sorted(MODEL_PRESETS))
        (ep, tp), tokens = rng.choice(MIXES), rng.choice(TOKENS)
        schedule = random_schedule(rng)
        try:
            workload = Workload(MODEL_PRESETS[model], tokens, ep, tp=tp)
            result = simulate(workload, profiles[profile], schedule, routing=make_routing(workload), record=False)
        except UserError:  # a combination the workload or the profile refuses, with its one line
            continue
        except Exception as exc:  # noqa: BLE001 - a crash is what this looks for
            bad += 1
            print("EXC", profile, model, ep, tp, tokens, schedule, repr(exc)[:200], flush=True)
            continue
        ran += 1
        figures = (result.latency_us, result.layer0_us, result.layer1_us)
        if not all(math.isfinite(v) and v >= 0 for v in figures) or result.latency_us <= 0:
            bad += 1
            print("BAD", profile, model, ep, tp, tokens, schedule, figures, flush=True)
    print("ran", ran, "bad", bad)


if __name__ == "__main__":
    main()
