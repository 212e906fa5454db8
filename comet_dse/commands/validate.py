"""`comet-dse validate`: the simulator's predictions against `comet-dse bench` measurements.

Every input (the bench files, the hardware profile, the filters, the output path) is checked
before anything is simulated; the report is written atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from comet_dse.commands.columns import align_columns
from comet_dse.commands.simulate import add_gpus_per_node_argument
from comet_dse.errors import UserError
from comet_dse.files import check_writable, json_text, write_texts_atomic
from comet_dse.validation import config_text

DEFAULT_HARDWARE = "h100-sxm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--measurements", nargs="+", required=True, metavar="FILE_OR_DIR",
                        help="bench JSON files, or folders whose bench-*.json are read")
    parser.add_argument("--hardware", default=DEFAULT_HARDWARE, help="preset name or a hardware profile .json")
    add_gpus_per_node_argument(parser)
    parser.add_argument("--tokens", help="only these token counts, in tokens per GPU, e.g. 1024,8192 (default: every measured one)")
    parser.add_argument("--out", help="report JSON (default results/validation/<hardware>.json)")
    parser.add_argument("--html", help="the same report as a self-contained HTML page: predicted against measured, the "
                                       "errors, every comet sweep (default: none)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--after-gap", action="store_true",
                        help="price comet's GEMM tiles as a call started after bench's gap runs them, off the power cap, "
                             "where the profile has calibrate's power_state table (default: at the cap, as tune does)")


def _parse_tokens(text: str | None) -> set[int] | None:
    if text is None:
        return None
    try:
        values = {int(v) for v in text.split(",")}
    except ValueError:
        raise UserError("--tokens", f"expected comma-separated integers such as 1024,8192, got {text!r}") from None
    if min(values) <= 0:
        raise UserError("--tokens", f"token counts must be positive, got {text!r}")
    return values


def _by_model(points: list[dict], benches: list, hardware) -> dict:
    """Each model's errors, and whether it is held out: a shape whose GEMMs (H, F) the measured
    profile's grouped-GEMM table never timed (the simulator prices it from other shapes)."""
    from comet_dse.validation import error_summary

    timed = {(e.k, e.n) for e in hardware.measured.grouped_gemm} if hardware.measured is not None else set()
    shapes = {b.model: (b.shape["hidden"], b.shape["ffn"]) for b in benches}
    return {model: {**error_summary([p for p in points if p["model"] == model]), "held_out": shapes[model] not in timed}
            for model in sorted({p["model"] for p in points})}


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_report(report: dict) -> str:
    rows = [["model", "EPxTP", "tokens", "schedule", "config", "predicted µs", "measured µs", "error"]]
    for name in report["schedules"]:
        for p in report["schedules"][name]["points"]:
            error = _fmt(p["error_pct"], "+.1f", "%") if p["status"] == "ok" else p["status"]
            rows.append([p["model"], f"{p['ep']}x{p['tp']}", str(p["tokens"]), f"{p['schedule']} ({p['measured_key']})",
                         config_text(p), _fmt(p["predicted_us"]), _fmt(p["measured_us"]), error])
    lines = [f"hardware profile {report['profile']}, routing {report['routing']} seed {report['seed']}; "
             f"measured on {report['gpus']}x {report['gpu']}",
             *align_columns(rows, text_columns=(1, 3, 4)), ""]
    summary = [["schedule", "points", "MAPE", "mean error", "min error", "max error", "skipped", "failed"]]
    for name, s in [*report["schedules"].items(), ("overall", report["overall"])]:
        summary.append([name, str(s["n"]), _fmt(s["mape_pct"], ".1f", "%"), _fmt(s["mean_error_pct"], "+.1f", "%"),
                        _fmt(s["min_error_pct"], "+.1f", "%"), _fmt(s["max_error_pct"], "+.1f", "%"),
                        str(s["skipped"]), str(s["failed"])])
    lines += align_columns(summary)
    lines.append("")
    if report.get("repeated_points"):
        medians = [["schedule", "points", "repeats", "MAPE", "mean error", "min error", "max error", "noise median", "noise max"]]
        for name, s in report["repeated_points"].items():
            medians.append([name, str(s["n"]), f">= {s['min_repeats']}", _fmt(s["mape_pct"], ".1f", "%"),
                            _fmt(s["mean_error_pct"], "+.1f", "%"), _fmt(s["min_error_pct"], "+.1f", "%"),
                            _fmt(s["max_error_pct"], "+.1f", "%"), _fmt(s["median_noise_pct"], ".1f", "%"),
                            _fmt(s["max_noise_pct"], ".1f", "%")])
        lines.append("points measured in several files: errors against their medians (noise: slowest / fastest repeat):")
        lines += align_columns(medians)
        lines.append("")
    by_model = [["schedule", "model", "points", "MAPE", "mean error", "calibration"]]
    for name, s in report["schedules"].items():
        for model, m in s.get("by_model", {}).items():
            by_model.append([name, model, str(m["n"]), _fmt(m["mape_pct"], ".1f", "%"), _fmt(m["mean_error_pct"], "+.1f", "%"),
                             "held out" if m["held_out"] else "shape timed"])
    lines += align_columns(by_model, text_columns=(0, 1, 5))
    lines.append("")
    if report.get("kernels"):
        kernels = [["fused kernel", "model", "tokens", "config", "predicted µs", "measured µs", "error"]]
        for p in report["schedules"]["comet"]["points"]:
            for name, k in p.get("kernels", {}).items():
                kernels.append([name, p["model"], str(p["tokens"]), config_text(p, blocks_only=True), _fmt(k["predicted_us"]),
                                _fmt(k["measured_us"]), _fmt(k["error_pct"], "+.1f", "%")])
        lines.append("the fused layer's kernels alone (bench's per-layer figures, launch to end):")
        lines += align_columns(kernels, text_columns=(0, 1, 3))
        lines += [f"{name}: {k['n']} points, MAPE {k['mape_pct']:.1f}%, mean error {k['mean_error_pct']:+.1f}%"
                  for name, k in report["kernels"].items()]
        lines.append("")
    table = [["model", "tokens", "points", "spearman", "regret", "predicted best", "measured best", "measured spread"]]
    for s in report["sweeps"]:
        table.append([s["model"], str(s["tokens"]), str(s["n"]), _fmt(s["spearman"], "+.2f"),
                      _fmt(s["regret_pct"], ".1f", "%"), "/".join(map(str, s["predicted_best"])),
                      "/".join(map(str, s["measured_best"])), _fmt(s["measured_spread_pct"], ".1f", "%")])
    lines.append("comet across communication blocks (blocks = layer0/layer1):")
    lines += align_columns(table)
    if report.get("repeated_sweeps"):
        table = [["model", "EP x TP", "tokens", "order", "repeats", "points", "spearman", "regret", "predicted best",
                  "measured best", "spread", "noise", "ranked"]]
        for s in report["repeated_sweeps"]:
            table.append([s["model"], f"{s['ep']}x{s['tp']}", str(s["tokens"]), str(s["knobs"].get("tile_order", "-")),
                          str(s["repeats"]), str(s["n"]), _fmt(s["spearman"], "+.2f"), _fmt(s["regret_pct"], ".1f", "%"),
                          "/".join(map(str, s["predicted_best"])), "/".join(map(str, s["measured_best"])),
                          _fmt(s["measured_spread_pct"], ".1f", "%"), _fmt(s["noise_pct"], ".1f", "%"),
                          "yes" if s["beyond_noise"] else "no (within noise)"])
        lines.append("comet sweeps measured more than once (medians of the repeats; noise: slowest / fastest repeat of a point):")
        lines += align_columns(table, text_columns=(0, 1, 3, 12))
    for label, key in (("sweeps", "sweeps_summary"), ("full sweeps (>= 6 block counts)", "full_sweeps_summary")):
        t = report[key]
        lines.append(f"{label} {t['n']}: mean spearman {_fmt(t['mean_spearman'], '+.2f')} (min {_fmt(t['min_spearman'], '+.2f')}), "
                     f"regret mean {_fmt(t['mean_regret_pct'], '.1f', '%')} max {_fmt(t['max_regret_pct'], '.1f', '%')}")
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> str:
    parts = ["comet-dse validate --measurements", *args.measurements, "--hardware", args.hardware]
    if args.gpus_per_node is not None:
        parts += ["--gpus-per-node", str(args.gpus_per_node)]
    if args.tokens:
        parts += ["--tokens", args.tokens]
    if args.after_gap:
        parts.append("--after-gap")
    if args.out:
        parts += ["--out", args.out]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from comet_dse.hardware import check_node_size, resolve_hardware
    from comet_dse.measurements import bench_paths, load_bench
    from comet_dse.sim import COST_MODEL_VERSION
    from comet_dse.validation import (
        FULL_SWEEP_POINTS,
        ROUTING,
        SCHEDULES,
        SEED,
        cases_of,
        error_summary,
        kernel_summary,
        repeated_errors,
        repeated_sweeps,
        simulate_cases,
        sort_key,
        sweep_summary,
        sweeps,
        workload_of,
    )

    # ---- every input checked before any simulation --------------------------------------
    hardware = resolve_hardware(args.hardware, args.gpus_per_node)
    tokens = _parse_tokens(args.tokens)
    benches = [load_bench(path) for path in bench_paths(args.measurements)]
    out = Path(args.out or f"results/validation/{hardware.name}.json")
    if out.is_dir():
        raise UserError("--out", f"{out} is a folder; give a file name")
    if args.html:
        check_writable(args.html, "--html")
    measured = hardware.measured is not None
    # a measured profile without B0's per-expert torch.mm GEMM prices B0 with torch._grouped_mm: compare like with like
    b0_key = "b0_grouped" if measured and not hardware.measured.has_impl("loop") else "b0"
    cases = [case for bench in benches for case in cases_of(bench, tokens, measured=measured, b0_key=b0_key)]
    if not cases:
        raise UserError("--tokens" if tokens else "--measurements", "no measured figure (b0, b1_c<C>, fused) to compare with")
    workloads = {(str(b.path), run.tokens): workload_of(b, run.tokens) for b in benches for run in b.runs
                 if tokens is None or run.tokens in tokens}
    for workload in workloads.values():
        if args.gpus_per_node is not None:
            check_node_size(workload.world, hardware)
        if measured:  # a profile prices the world sizes it measured only: one line, no report of failed points
            hardware.measured.check_world(workload.world)

    points = sorted(simulate_cases(cases, workloads, hardware, after_gap=args.after_gap), key=sort_key)
    found = sweeps(points)
    gpus = sorted({b.gpus for b in benches})
    report = {
        "profile": hardware.name,
        "hardware": hardware.to_dict(),
        "cost_model_version": COST_MODEL_VERSION,
        "after_gap": args.after_gap,
        "gpu": " + ".join(sorted({b.gpu for b in benches})),
        "gpus": gpus[0] if len(gpus) == 1 else gpus,
        "measurements": [str(b.path) for b in benches],
        "command": _command(args),
        "routing": ROUTING,
        "seed": SEED,
        "overall": error_summary(points),
        "schedules": {name: {**error_summary(ps), "by_model": _by_model(ps, benches, hardware), "points": ps}
                      for name in SCHEDULES if (ps := [p for p in points if p["schedule"] == name])},
        "kernels": kernel_summary(points),
        "sweeps_summary": sweep_summary(found),
        "full_sweeps_summary": sweep_summary(found, FULL_SWEEP_POINTS),
        "sweeps": found,
        "repeated_sweeps": repeated_sweeps(points),
        "repeated_points": repeated_errors(points),
    }
    files = {out: json_text(report)}
    if args.html:
        from comet_dse.validation_report import validation_html

        files[Path(args.html)] = validation_html(report)
    write_texts_atomic(files)
    if args.json:
        print(json.dumps({**report, "path": str(out)}, indent=2))
    else:
        print(format_report(report))
        print(f"report: {out}")
    return 0
