"""The fused layer at EP=1 x TP=2 beside EP=2 (or any EP x TP mix), from the bench JSON of one machine: per model and token count,
B0, the best B1, the fused layer at each communication-block count, the best count, compute-only and comm-only
there, and the strongest baseline / the best fused. The TP-kernels issue's two checks: Mixtral at TP=2 and 8192
tokens (fused >= 1.3x the TP B0) and the best n_comm at TP=2 against EP=2 (Comet's EP/TP-mix trend).

    python benchmarks/tp_vs_ep.py results/measurements/tp2_h200/run108 results/measurements/ep2_h200/run108

Prints a Markdown table (µs, slowest rank, each run's median). Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from measurements_table import CHUNKS


def layout_of(ep: int, tp: int) -> str:
    """How a bench file split its GPUs: EP=E, TP=T or EP=E x TP=T (neither part left out where it is above 1)."""
    if tp == 1:
        return f"EP={ep}"
    return f"TP={tp}" if ep == 1 else f"EP={ep} × TP={tp}"


def rows(folders: list[Path]) -> list[dict]:
    """One row per (model, tokens, layout) over the folders' bench-*.json files (later files win a repeat)."""
    found: dict[tuple, dict] = {}
    for folder in folders:
        for path in sorted(folder.glob("bench-*.json")):
            data = json.loads(path.read_text())
            layout = layout_of(data["ep"], data["tp"])
            for run in data["runs"]:
                key = (data["model"], run["tokens"], layout)
                row = found.setdefault(key, {"model": data["model"], "tokens": run["tokens"], "layout": layout,
                                             "fused": {}})
                t = run["timings_us"]
                blocks = run["config"]["comm_blocks0"]
                if "fused" in t:
                    row["fused"][blocks] = (t["fused"], t.get("compute_only"), t.get("comm_only"))
                if "b0" in t:
                    row["b0"] = t["b0"]
                    row["b1"] = min((v for k, v in t.items() if CHUNKS.fullmatch(k)), default=None)  # b1_c<C>
    return [found[k] for k in sorted(found)]


def table(found: list[dict]) -> str:
    lines = ["| model, tokens/GPU | layout | B0 | best B1 | fused by comm blocks (0 = copy engine) | best | "
             "compute-only / comm-only there | B0 / fused |", "|---|---|---:|---:|---|---:|---|---:|"]
    for row in found:
        if not row["fused"] or "b0" not in row:
            continue
        best = min(row["fused"], key=lambda b: row["fused"][b][0])
        fused, compute, comm = row["fused"][best]
        cells = " / ".join(f"{b}: **{v[0]:.0f}**" if b == best else f"{b}: {v[0]:.0f}" for b, v in sorted(row["fused"].items()))
        lines.append(f"| {row['model']}, {row['tokens']} | {row['layout']} | {row['b0']:.0f} | "
                     f"{row['b1']:.0f} | {cells} | {best} | {compute:.0f} / {comm:.0f} | {row['b0'] / fused:.2f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print("folders: give the bench folders of one machine, e.g. python benchmarks/tp_vs_ep.py "
              "results/measurements/tp2_h200/run108 results/measurements/ep2_h200/run108", file=sys.stderr)
        return 2
    missing = [a for a in argv if not Path(a).is_dir()]
    if missing:
        print(f"folders: {missing[0]} is not a folder", file=sys.stderr)
        return 2
    print(table(rows([Path(a) for a in argv])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
