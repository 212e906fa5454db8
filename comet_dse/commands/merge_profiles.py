"""`comet-dse merge-profiles`: several machines' calibrated profiles as one fleet profile (each figure the median)."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from comet_dse.files import check_writable, json_text, read_json_object, write_text_atomic

FIELD = "profiles"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profiles", nargs="+", metavar="PROFILE",
                   help="profiles written by comet-dse calibrate on machines of one kind, the first the base (its axes and "
                        "what only it measured are kept); merge profiles of one calibrate version: a figure measured "
                        "another way is still a float, and its median would mix the two methods")
    p.add_argument("--out", required=True, help="the merged profile (JSON)")
    p.add_argument("--name", help="the merged profile's name (default: the output file's stem)")


def run(args: argparse.Namespace) -> int:
    from comet_dse.hardware import load_hardware
    from comet_dse.measured import load_measured
    from comet_dse.profile_merge import merge_profiles

    out = check_writable(args.out, "--out")
    profiles = [read_json_object(path, FIELD) for path in args.profiles]
    merged, partial = merge_profiles(profiles, args.profiles)
    for path in args.profiles:  # each read as the simulator reads it: a bad table is named in the user's file
        load_hardware(path)
    names = [p.get("name", Path(path).stem) for p, path in zip(profiles, args.profiles)]
    notes = [f"each float the median over the {len(profiles)} profiles that measured it on the same axes (integers, "
             f"strings and list lengths equal); the base's integers and strings kept"]
    notes += [f"{path}: from {count} of {len(profiles)} profiles" for path, count in sorted(partial.items())]
    merged = {"format": merged["format"], "name": args.name or out.stem, "base": merged["base"], "gpus": merged["gpus"],
              "provenance": {"gpu": profiles[0].get("provenance", {}).get("gpu"), "gpus": merged["gpus"],
                             "date": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
                             "command": "comet-dse merge-profiles " + " ".join(args.profiles) + f" --out {args.out}"
                                        + (f" --name {args.name}" if args.name else ""),
                             "merged_from": [{"profile": path, "name": name, "date": p.get("provenance", {}).get("date")}
                                             for path, name, p in zip(args.profiles, names, profiles)],
                             "notes": notes},
              "figures": merged["figures"],
              "sources": {key: f"median of {len(profiles)} profiles: {', '.join(names)}" for key in merged["figures"]},
              "tables": merged["tables"]}
    load_measured(out, merged)  # read as any profile is, before the output exists
    write_text_atomic(out, json_text(merged))
    print(f"merged {len(profiles)} profiles into {out}" + (f"; from fewer: {', '.join(sorted(partial))}" if partial else ""))
    return 0
