"""Search quality at default settings (issue 9, item 9).

For the default tune workload (Mixtral-8x7B on h800, EP=8, TP=1, uniform routing, the default
token buckets), compare the best predicted comet latency that the default `comet-dse tune`
(default trial count and sampler, seed 0) finds on each bucket with the best that a much
longer search (--long-trials, default 1000) finds on the same bucket.

The enumerated optimum is out of reach here: the legal space of this workload is
4 tiles x 64 x 64 comm blocks x 2 row orders x 5 splits = 163,840 points per bucket, at
20-150 ms a simulation (hours per bucket on 2 cores). The long searches run one `comet-dse tune` per bucket (its own
SQLite file, seed 0), --jobs at a time, largest bucket first.

Every study lives in a temporary folder; nothing under results/ is touched except the JSON.

    python benchmarks/bench_search_quality.py [--long-trials 1000] [--jobs 2] [--out results/bench/search_quality.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

WORKLOAD = ["--model", "mixtral-8x7b", "--hardware", "h800", "--ep", "8", "--tp", "1", "--routing", "uniform"]
SEED = 0


def default_tokens() -> list[int]:
    from comet_dse.commands.tune import DEFAULT_TOKENS
    return [int(t) for t in DEFAULT_TOKENS.split(",")]


def default_trials() -> int:
    from comet_dse.commands.tune import add_arguments
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.get_default("trials")


def tune(folder: Path, name: str, extra: list[str]) -> tuple[dict, float, list[str]]:
    """One `comet-dse tune` with its own storage under `folder`; returns its JSON, wall time and argv."""
    argv = [sys.executable, "-m", "comet_dse.cli", "tune", *WORKLOAD, "--seed", str(SEED),
            "--storage", f"sqlite:///{folder / (name + '.db')}", "--plan-dir", str(folder / name),
            "--no-report", "--json", "--quiet", *extra]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout), wall, argv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long-trials", type=int, default=1000, help="trials of the reference search per bucket (default 1000)")
    parser.add_argument("--jobs", type=int, default=2, help="reference searches run at once, one bucket each (default 2)")
    parser.add_argument("--tokens", help="buckets (default: tune's default buckets)")
    parser.add_argument("--out", default="results/bench/search_quality.json")
    args = parser.parse_args()

    buckets = [int(t) for t in args.tokens.split(",")] if args.tokens else default_tokens()
    trials = default_trials()
    tokens_arg = ",".join(map(str, buckets))
    with tempfile.TemporaryDirectory(prefix="comet-search-quality-") as tmp:
        folder = Path(tmp)
        # the default run: exactly what `comet-dse tune` does with its defaults (all buckets in one
        # command, since the sampler seed depends on the bucket's index)
        default_json, default_wall, default_argv = tune(folder, "default", ["--tokens", tokens_arg])
        default_best = {b["tokens"]: b["predicted_us"]["comet"] for b in default_json["buckets"]}
        default_cfg = {b["tokens"]: b["config"] for b in default_json["buckets"]}
        print(f"default run: {trials} trials x {len(buckets)} buckets in {default_wall:.0f} s", file=sys.stderr)

        def long_run(tokens: int):
            out, wall, argv = tune(folder, f"long-{tokens}", ["--tokens", str(tokens), "--trials", str(args.long_trials)])
            print(f"long run, tokens {tokens}: {args.long_trials} trials in {wall:.0f} s", file=sys.stderr)
            return tokens, out["buckets"][0], wall, argv

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            long = {t: (b, w, a) for t, b, w, a in pool.map(long_run, sorted(buckets, reverse=True))}

    rows = []
    for tokens in buckets:
        bucket, wall, _ = long[tokens]
        ref = bucket["predicted_us"]["comet"]
        best = min(ref, default_best[tokens])  # the long run's seed can miss what the default found
        gap = 100.0 * (default_best[tokens] - best) / best
        rows.append({"tokens": tokens, "default_best_us": default_best[tokens], "long_best_us": ref,
                     "reference_us": best, "gap_pct": round(gap, 3), "within_1pct": gap <= 1.0,
                     "default_config": default_cfg[tokens], "long_config": bucket["config"],
                     "long_trials_completed": bucket["trials"], "long_wall_s": round(wall, 1)})

    header = f"{'tokens':>7} {'default best µs':>16} {'long-run best µs':>17} {'gap %':>7}"
    print(f"default tune ({trials} trials, TPE, seed {SEED}) vs {args.long_trials}-trial search (seed {SEED}), "
          "Mixtral-8x7B on h800, EP=8 TP=1, uniform routing")
    print(header)
    for r in rows:
        print(f"{r['tokens']:>7} {r['default_best_us']:>16.1f} {r['long_best_us']:>17.1f} {r['gap_pct']:>7.2f}")
    every = all(r["within_1pct"] for r in rows)
    print(f"within 1% on every bucket: {'yes' if every else 'no'} (worst gap {max(r['gap_pct'] for r in rows):.2f}%)")

    from comet_dse.search.tune import versions
    result = {
        "benchmark": "search quality at default settings (issue 9, item 9)",
        "command": shlex.join(["python", "benchmarks/bench_search_quality.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "workload": {"model": "mixtral-8x7b", "hardware": "h800", "ep": 8, "tp": 1, "routing": "uniform", "tokens": buckets},
        "default_run": {"trials": trials, "sampler": "default (TPE, multivariate, warm-started)", "seed": SEED,
                        "argv": [Path(default_argv[0]).name, *default_argv[1:]], "wall_s": round(default_wall, 1)},
        "long_run": {"trials": args.long_trials, "seed": SEED, "jobs": args.jobs,
                     "note": "one tune command per bucket (--tokens T), its own storage"},
        "storage": "SQLite files in a temporary folder (removed after the run)",
        "gap_definition": "100 * (default best - reference) / reference, reference = min(long-run best, default best)",
        "within_1pct_every_bucket": every,
        "buckets": rows,
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "versions": versions(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
