"""`comet-dse tune`: Optuna studies over the comet allocation per token bucket -> plan + report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from comet_dse.choices import TP_DISPATCH
from comet_dse.commands.columns import align_columns
from comet_dse.commands.simulate import add_workload_arguments, check_tokens, check_tp_dispatch, resolve_workload
from comet_dse.errors import UserError
from comet_dse.files import check_writable, write_texts_atomic

DEFAULT_TOKENS = "1024,2048,4096,8192,16384,32768"
MAX_WORKERS = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_workload_arguments(parser)
    parser.add_argument("--tokens", default=DEFAULT_TOKENS, help=f"token buckets, in tokens per GPU, comma-separated (default {DEFAULT_TOKENS})")
    parser.add_argument("--trials", type=int, default=50, help="completed trials that each bucket's study is brought to (the last up to 10: a polish of the best)")
    parser.add_argument("--storage", help="Optuna storage URL (default: an SQLite file under results/studies/); "
                                          "postgresql://USER:PASS@HOST/DB to share studies between machines")
    parser.add_argument("--workers", type=int, default=1, help=f"local worker processes on the same studies (at most {MAX_WORKERS})")
    parser.add_argument("--objectives", default="latency", help="what to minimise: latency (µs), or latency,comm_sms for the Pareto front of latency and the "
                                                             "SMs held by communication")
    parser.add_argument("--tp-dispatch", default="tokens", choices=TP_DISPATCH,
                        help="comet under TP: a token once to each TP rank (Comet's design) or a row per (token, expert), as "
                             "comet-dse's fused kernels run it (default tokens)")
    parser.add_argument("--heartbeat", type=int, default=10, help="seconds between trial heartbeats; a trial silent "
                                                                  "for 3 heartbeats is failed and retried (default 10 s)")
    parser.add_argument("--plan-dir", default="results/plans", help="folder of the plan JSON (default results/plans, untracked by git)")
    parser.add_argument("--report", help="report HTML path (default results/reports/<workload>.html)")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report (and its heatmap sweeps)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr (shown only on a terminal anyway)")
    parser.add_argument("--list", action="store_true", help="list the studies in the storage (the one tune would use "
                                                            "with these options, or --storage) with their inputs; tune nothing")


def parse_tokens(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UserError("--tokens", "needs at least one token count, e.g. 1024,2048")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise UserError("--tokens", f"must be comma-separated positive integers, got {text!r}") from None
    for v in values:
        check_tokens(v)
    return sorted(set(values))


def _storage_label(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _list_url(args: argparse.Namespace) -> str:
    """--storage, or the default SQLite file tune would use with the same options; never created here."""
    from comet_dse.search.study import default_storage_path

    if args.storage:
        path = Path(args.storage.removeprefix("sqlite:///")) if args.storage.startswith("sqlite:///") else None
        url = args.storage
    else:
        model_name, hardware, _ = resolve_workload(args, 1, priced=False)  # listing prices nothing
        path = default_storage_path(model_name, hardware.name, args.ep, args.tp)
        url = f"sqlite:///{path}"
    if path is not None and not path.is_file():
        hint = "" if args.storage else " (tune with the same --model/--hardware/--ep/--tp first, or give --storage)"
        raise UserError("--storage", f"no study storage at {path}{hint}")
    return url


def _figure(value: float) -> str:
    return f"{value:g}"


def _study_row(study) -> list[str]:
    """One stored study as table cells: name, digest, trials, model shape, hardware, layout, routing."""
    if study.digest is None:
        return [study.name, "-", str(study.completed), "inputs not recorded (named before digests)", "", "", "", "", ""]
    inputs, labels = study.inputs, study.labels
    m, hw, routing = inputs["model"], inputs["hardware"], inputs["routing"]
    model = f"{labels.get('model', '?')} E={m['num_experts']} top{m['top_k']} H={m['hidden']} F={m['ffn']}"
    if m["shared_ffn"]:
        model += f" shared={m['shared_ffn']}"
    hardware = (f"{labels.get('hardware', '?')} sms={hw['sms']} gemm_tflops={_figure(hw['gemm_tflops'])} "
                f"hbm_GBps={_figure(hw['hbm_GBps'])} link_GBps={_figure(hw['link_GBps'])} nic_GBps={_figure(hw['nic_GBps'])}")
    return [study.name, study.digest, str(study.completed), model, hardware, str(inputs["ep"]), str(inputs["tp"]),
            str(inputs["tokens"]), f"{routing['spec']} seed {routing['seed']}"]


def list_studies(args: argparse.Namespace) -> int:
    from comet_dse.search.study import open_storage, stored_studies

    url = _list_url(args)
    studies = stored_studies(open_storage(url))
    if args.json:
        print(json.dumps([{"study": s.name, "digest": s.digest, "completed_trials": s.completed, "labels": s.labels,
                           "inputs": s.inputs} for s in studies], indent=2))
        return 0
    if not studies:
        print(f"no studies in {_storage_label(url)}")
        return 0
    rows = [["study", "digest", "trials", "model", "hardware", "ep", "tp", "tokens", "routing"]]
    rows += [_study_row(s) for s in studies]
    print("\n".join(align_columns(rows, text_columns=(1, 3, 4, 8))))
    return 0


def _replaced_note(old: str, prefix: str, new: str) -> str:
    if old == prefix:  # named before digests: what it answered for was never recorded
        return f"study {old} predates input digests: starting a new study {new}"
    return f"inputs changed since study {old}: starting a new study {new}"


def run(args: argparse.Namespace) -> int:
    import optuna

    from comet_dse.plan import plan_filename, plan_text
    from comet_dse.progress import Progress, wanted
    from comet_dse.report import report_html
    from comet_dse.routing import make_routing
    from comet_dse.search.study import TuneSpec, default_storage_url, open_storage, parse_objectives, superseded
    from comet_dse.search.tune import (
        allocation_heatmap,
        collect,
        make_plan,
        run_workers,
    )

    if args.list:
        return list_studies(args)
    # ---- every input checked before anything is written ----
    buckets = parse_tokens(args.tokens)
    if args.trials <= 0:
        raise UserError("--trials", f"must be > 0, got {args.trials}")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise UserError("--workers", f"must be in [1, {MAX_WORKERS}], got {args.workers}")
    if args.heartbeat <= 0:
        raise UserError("--heartbeat", f"must be > 0 seconds, got {args.heartbeat}")
    objectives = parse_objectives(args.objectives)
    model_name, hardware, workload = resolve_workload(args, buckets[0])
    make_routing(workload)  # a bad routing spec or trace fails here, before any study exists
    check_tp_dispatch(args)
    # every output path too: minutes of tuning must not end in a traceback at the last step
    plan_path = check_writable(Path(args.plan_dir) / plan_filename(model_name, hardware.name, args.ep, args.tp, args.tp_dispatch),
                               "--plan-dir", make_folders=True)
    report_path = None
    if not args.no_report:
        report_path = check_writable(args.report or Path("results/reports") / plan_path.with_suffix(".html").name, "--report",
                                     make_folders=not args.report)
    url = args.storage or default_storage_url(model_name, hardware.name, args.ep, args.tp)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        check_writable(url.removeprefix("sqlite:///"), "--storage", make_folders=not args.storage)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = TuneSpec(model_name, hardware, workload, args.trials, args.seed, objectives, url, args.heartbeat, args.tp_dispatch)
    display = Progress(wanted(args.quiet), prefix="comet-dse tune")
    replaced = superseded(spec, open_storage(url, args.heartbeat), buckets)
    run_workers(spec, buckets, args.workers, display)
    display.phase("simulating chunked and sequential baselines …")
    results = collect(spec, buckets)
    plan = make_plan(spec, results, _storage_label(url))

    rows = [["tokens", "comm_blocks0", "comm_blocks1", "tile", "row order", "splits", "comet µs", "chunked µs (C)",
             "sequential µs", "vs sequential", "vs chunked", "trials"]]
    for r, entry in zip(results, plan.entries):
        p = r.best_params
        rows.append([str(r.tokens), str(p["comm_blocks0"]), str(p["comm_blocks1"]), p["tile"], p["row_order"], str(p["n_splits"]),
                     f"{r.comet['latency_us']:.1f}", f"{r.chunked['latency_us']:.1f} ({r.chunked['chunks']})",
                     f"{r.sequential_us:.1f}", f"{r.speedup_vs_sequential:.2f}x", f"{r.speedup_vs_chunked:.2f}x", str(entry.trials)])
    outputs = {plan_path: plan_text(plan)}
    if report_path is not None:
        display.phase(f"writing report {report_path} …")
        heatmaps = {layer: allocation_heatmap(spec, results, layer) for layer in (0, 1)}
        title = f"comet-dse tune: {model_name} on {hardware.name}, EP={args.ep} TP={args.tp}, routing {args.routing}"
        outputs[report_path] = report_html(results, heatmaps, title, rows)
    write_texts_atomic(outputs)  # the plan and its report land together or not at all

    # a changed input (model shape, hardware figures, ...) must not pass silently as a resumed study
    notes_to = sys.stderr if args.json else sys.stdout  # --json keeps stdout one JSON object
    for tokens, old in replaced.items():
        print(_replaced_note(old, spec.study_prefix(tokens), spec.study_name(tokens)), file=notes_to)
    if args.json:
        print(json.dumps({
            "workload": {"model": model_name, "hardware": hardware.name, "ep": args.ep, "tp": args.tp,
                         "routing": args.routing, "seed": args.seed, "objectives": list(objectives)},
            "buckets": [{"tokens": e.tokens, "config": e.config, "chunked": e.chunked, "predicted_us": e.predicted_us,
                         "speedup": e.speedup, "trials": e.trials, "study": r.study.study_name, "digest": e.digest,
                         "replaces": replaced.get(e.tokens),
                         **({"pareto": r.pareto} if len(objectives) > 1 else {})}
                        for e, r in zip(plan.entries, results)],
            "plan": str(plan_path), "report": str(report_path) if report_path else None, "storage": _storage_label(url),
        }, indent=2))
        return 0
    print(f"{model_name} on {hardware.name}, EP={args.ep} TP={args.tp}, routing {args.routing}: "
          f"best comet allocation per token bucket ({args.trials} trials each)")
    print("\n".join(align_columns(rows, first_left=False)))
    print(f"plan:    {plan_path}")
    if report_path:
        print(f"report:  {report_path}")
    print(f"studies: {_storage_label(url)}")
    return 0
