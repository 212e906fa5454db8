"""How much the machine a profile was taken on matters: one measurement set validated against several profiles.

    python benchmarks/profile_spread.py --measurements results/measurements/ep2_h200/run70 ... \
        --profiles results/hardware/h200-x2-run71.json ... --out results/validation/profile_spread_run70_79.json

Runs `comet-dse validate` once per profile (into a temporary directory) and keeps each run's summary: MAPE and
mean error per schedule over every point, and over the medians of the points measured more than once (each point's
median across the runs: the machines' fleet). A profile is one machine's figures; B0's and B1's host-bound
figures move by ±30% between machines and minutes (results/measurements/ep2_h200/run79/README.md), so the spread
here is what a user calibrating one machine of a fleet should expect.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SCHEDULES = ("sequential", "chunked", "comet")
KEPT = ("n", "mape_pct", "mean_error_pct")


def summary(validation: dict) -> dict:
    """Every point's and the repeated points' medians' MAPE and mean error, per schedule."""
    return {"all": {s: {k: validation["schedules"][s][k] for k in KEPT} for s in SCHEDULES if s in validation["schedules"]},
            "medians": {s: {k: validation["repeated_points"][s][k] for k in KEPT}
                        for s in SCHEDULES if s in validation.get("repeated_points", {})}}


def validate_summary(measurements: list[str], profile: str, tmp: Path) -> dict:
    """`comet-dse validate` of `measurements` on `profile` in a subprocess, summarised; on failure its one-line
    error and exit code."""
    out = Path(tmp) / "validation.json"
    run = subprocess.run([sys.executable, "-m", "comet_dse.cli", "validate", "--measurements", *measurements,
                          "--hardware", profile, "--out", str(out)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    if run.returncode:  # validate's own one-line error (a bad file, a shape it cannot take), and its code
        print(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"validate failed on {profile}",
              file=sys.stderr)
        sys.exit(run.returncode)
    return summary(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", nargs="+", required=True)
    parser.add_argument("--profiles", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    spread = {}
    with tempfile.TemporaryDirectory() as tmp:
        for profile in args.profiles:
            spread[profile] = validate_summary(args.measurements, profile, Path(tmp))
    print(f"{'profile':45s} " + "  ".join(f"{s:>22s}" for s in SCHEDULES) + "   (medians of repeated points; all points)")
    for profile, s in spread.items():
        cells = []
        for name in SCHEDULES:
            med, every = s["medians"].get(name), s["all"].get(name)
            cells.append(f"{med['mape_pct'] if med else float('nan'):5.1f}% ({med['mean_error_pct'] if med else float('nan'):+5.1f}); "
                         f"{every['mape_pct']:5.1f}%")
        print(f"{profile:45s} " + "  ".join(f"{c:>22s}" for c in cells))
    Path(args.out).write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "measurements": args.measurements,
                                          "profiles": spread}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
