"""A fleet profile against a machine's own: leave-one-out over machines that each ran calibrate and the sweeps.

    python benchmarks/fleet_profile.py \
        --machine results/measurements/ep2_h200/run89=results/hardware/h200-x2-run89.json ... \
        --out results/validation/fleet_loo_run89_100.json

For each machine: `comet-dse validate` of its own sweeps on its own profile, and on the other machines' profiles
merged by `comet-dse merge-profiles` (each figure their median; the first other machine's profile the base), which
never saw this machine. Prints and writes each schedule's MAPE (mean error) both ways and the means over the
machines. Validates as benchmarks/profile_spread.py does (its `validate_summary`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

from comet_dse.cli import main as comet_dse
from profile_spread import SCHEDULES, validate_summary  # beside this script


def scores(measurements: str, profile: str, tmp: Path) -> dict:
    return validate_summary([measurements], profile, tmp)["all"]


def merge(profiles: list[str], out: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # its one line of success; an error stays on stderr
        code = comet_dse(["merge-profiles", *profiles, "--out", str(out)])
    if code:
        sys.exit(code)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--machine", nargs="+", required=True, metavar="MEASUREMENTS=PROFILE",
                   help="a machine's bench folder and its calibrate profile, at least three")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    machines = [tuple(m.split("=", 1)) for m in a.machine]
    if len(machines) < 3 or any(len(m) != 2 for m in machines):
        print("--machine: give at least three MEASUREMENTS=PROFILE pairs", file=sys.stderr)
        sys.exit(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i, (measurements, profile) in enumerate(machines):
            others = [prof for j, (_, prof) in enumerate(machines) if j != i]
            fleet = tmp / "fleet.json"
            merge(others, fleet)
            rows.append({"measurements": measurements, "profile": profile, "fleet_of": others,
                         "own": scores(measurements, profile, tmp), "fleet": scores(measurements, str(fleet), tmp)})
    means = {kind: {s: round(statistics.mean(r[kind][s]["mape_pct"] for r in rows if s in r[kind]), 2) for s in SCHEDULES}
             for kind in ("own", "fleet")}
    print(f"{'machine':45s} " + "  ".join(f"{s + ' own / fleet':>28s}" for s in SCHEDULES))
    for r in rows:
        cells = [f"{r['own'][s]['mape_pct']:5.1f}% ({r['own'][s]['mean_error_pct']:+5.1f}) / "
                 f"{r['fleet'][s]['mape_pct']:5.1f}% ({r['fleet'][s]['mean_error_pct']:+5.1f})" if s in r["own"] else "-"
                 for s in SCHEDULES]
        print(f"{r['measurements']:45s} " + "  ".join(f"{c:>28s}" for c in cells))
    print(f"{'mean MAPE':45s} " + "  ".join(f"{means['own'][s]:>12.1f}% / {means['fleet'][s]:5.1f}%{'':8s}" for s in SCHEDULES))
    Path(a.out).write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "machines": rows, "mean_mape_pct": means},
                                      indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
