"""Predicted vs measured: the "compare" step of the validation loop (DESIGN.md).

Each measured figure of a bench file becomes a case: B0 (`b0`) against `sequential`, B1 with
C chunks (`b1_c<C>`) against `chunked` with C chunks, and each fused run (`fused`) against
`comet` with the run's knobs. The simulator runs the same layer (shape, EP, TP, tokens,
uniform routing) on the given hardware profile; the metrics are the signed error per point,
MAPE per schedule, and, per sweep of communication blocks, the Spearman rank correlation
and the regret of the simulator's pick. The simulator is imported inside the functions that
run it, so `import comet_dse` stays free of its dependencies.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field

from comet_dse.choices import default_layer1_width
from comet_dse.errors import UserError
from comet_dse.hardware import HardwareProfile
from comet_dse.measurements import FUSED_KNOBS, BenchFile
from comet_dse.models import ModelConfig
from comet_dse.workload import Workload

SCHEDULES = ("sequential", "chunked", "comet")
ROUTING = "uniform"  # the bench draws a random router over random tokens: close to uniform
SEED = 0
CHUNKED_KEY = re.compile(r"b1_c(\d+)")
# Workload's own field names -> the bench JSON's, so an error names what the user can fix.
_JSON_FIELD = {"model.num_experts": "shape.experts", "model.top_k": "shape.top_k", "model.hidden": "shape.hidden",
               "model.ffn": "shape.ffn", "--ep": "ep", "--tp": "tp", "--tokens": "tokens"}


@dataclass(frozen=True)
class Case:
    """One measured figure and the schedule that should reproduce it."""
    source: str  # the bench file
    run: int  # index in its runs[]
    model: str
    tokens: int
    schedule: str
    measured_key: str  # b0, b1_c<C> or fused
    measured_us: float
    knobs: dict = field(default_factory=dict)
    skip: str | None = None  # why the simulator cannot model this configuration
    kernels_measured: dict[str, float] = field(default_factory=dict)  # the fused layer's kernels alone (KERNELS)
    align: str = "host"  # how the bench file started each timed call (BenchFile.align)


def workload_of(bench: BenchFile, tokens: int) -> Workload:
    """The simulated layer of a bench file at `tokens` per GPU; a shape the simulator cannot
    take is a UserError naming the bench file's field."""
    s = bench.shape
    try:
        model = ModelConfig(bench.model, s["experts"], s["top_k"], s["hidden"], s["ffn"], num_layers=1,
                            source=str(bench.path))
        return Workload(model, tokens, bench.ep, bench.tp, routing=ROUTING, seed=SEED, dtype_bytes=bench.dtype_bytes)
    except UserError as exc:
        raise UserError(f"{bench.path}: {_JSON_FIELD.get(exc.field, exc.field)}", exc.message) from None


def _comet_skip(config: dict, hidden: int, measured: bool) -> str | None:
    """Fused variants the comet schedule has no knob for. With a measured profile the simulator
    prices the kernels as built: the copy engine and layer1's own tile width (sim/fused_costs.py)."""
    if config.get("dedup"):
        return "layer0's deduplicated pulls (dedup) are not modelled"
    if config.get("prereduce"):
        return "layer1's top-k pre-reduction (prereduce) is not modelled"
    if config["comm_blocks0"] == 0 and not measured:
        return "copy-engine variant (comm_blocks0 = 0) is modelled with a measured profile only"
    if config.get("flatten"):
        return "cross-tile pipelining (flatten) is not modelled"
    if config.get("pull_rows") not in (None, config.get("block_m")):
        return f"layer0's pulls in pieces of {config['pull_rows']} rows (pull_rows) are not modelled apart"
    width = default_layer1_width(hidden, config["n_splits"], config["block_n"]) if measured else config["block_n"]
    if config.get("block_n1") not in (None, width):
        return f"a layer1 tile width (block_n1 = {config['block_n1']}) other than {width} is not modelled"
    if config.get("programs") is not None:
        return f"a grid of {config['programs']} programs is not modelled (the simulator uses every SM)"
    return None


# The fused layer's kernels, as bench times each alone ("layer0:fused") and the simulator prices them (Result.kernels_us)
KERNELS = ("layer0", "layer1")


def b1_expert_gemm(timings_us: dict, chunks: int) -> str:
    """The expert GEMM of bench's b1_c<chunks>: the faster of its own two where the file timed both
    (b1_c<C>_grouped, b1_c<C>_loop; from 2026-11-27, run 76), else B0's faster one, which bench ran B1 with
    before; slowest-rank figures, a tie keeps torch._grouped_mm; torch._grouped_mm where the file timed no loop."""
    own = timings_us.get(f"b1_c{chunks}_grouped"), timings_us.get(f"b1_c{chunks}_loop")
    grouped, loop = own if None not in own else (timings_us.get("b0_grouped"), timings_us.get("b0_loop"))
    return "loop" if grouped is not None and loop is not None and loop < grouped else "grouped"


def cases_of(bench: BenchFile, tokens: set[int] | None = None, measured: bool = False, b0_key: str = "b0") -> list[Case]:
    """Every figure of the file the simulator is compared with. B0 and B1 are timed once per
    token count and repeated in every run of it: each distinct figure counts once. `measured`:
    the profile has measured tables (more fused variants are modelled). `b0_key`: the B0 figure
    `sequential` is compared with: "b0" (the faster expert GEMM, what a user keeps), or
    "b0_grouped" where the profile timed only torch._grouped_mm, so that is the B0 it prices."""
    from comet_dse.sim.fused_costs import PROLOGUE_OPS, TORCH_PACK_PROLOGUE_OPS

    cases: list[Case] = []
    seen: set[tuple[int, str, float]] = set()
    loop = {"loop_regroups": True} if bench.b0_loop == "regroup" else {}  # the B0 and B1 that file timed
    for run in bench.runs:
        if tokens is not None and run.tokens not in tokens:
            continue
        common = dict(source=str(bench.path), run=run.index, model=bench.model, tokens=run.tokens, align=bench.align)
        for key, us in run.timings_us.items():
            if (key == b0_key or CHUNKED_KEY.fullmatch(key)) and (run.tokens, key, us) in seen:
                continue
            seen.add((run.tokens, key, us))
            if key == b0_key:
                cases.append(Case(**common, schedule="sequential", measured_key=key, measured_us=us,
                                  knobs={"expert_gemm": "best" if key == "b0" else "grouped", **loop}))
            elif match := CHUNKED_KEY.fullmatch(key):
                cases.append(Case(**common, schedule="chunked", measured_key=key, measured_us=us,
                                  knobs={"chunks": int(match.group(1)),
                                         "expert_gemm": b1_expert_gemm(run.timings_us, int(match.group(1))), **loop}))
            elif key == "fused":
                c = run.config
                knobs = {k: c[k] for k in FUSED_KNOBS}
                knobs["tile_layout"] = c.get("tile_layout", "by-source")  # files before the merged layout ran by source
                knobs["tile_order"] = c.get("tile_order", "layout")
                if c.get("comm_deal", "static") != "static":  # files before it dealt the tiles round robin
                    knobs["comm_deal"] = c["comm_deal"]
                if c.get("layer1_pieces", 1) > 1:  # files before it cut nothing
                    knobs["split_k"] = c["layer1_pieces"]
                # the kernels before step 1 ran on the device launched more small kernels
                knobs["prologue_launches"] = PROLOGUE_OPS if bench.pack == "kernels" else TORCH_PACK_PROLOGUE_OPS
                if bench.tp > 1:  # kernels/fused_tp.py: a row per (token, expert) to each TP rank, the EP layer over
                    knobs["tp_dispatch"] = "rows"  # virtual experts (the simulator's default prices Comet's tokens)
                # per-layer figures count only where timed behind a device spin (older ones carry host time)
                kernels = ({k: run.timings_us[f"{k}:fused"] for k in KERNELS if f"{k}:fused" in run.timings_us}
                           if bench.layer_timing == "spin" else {})
                cases.append(Case(**common, schedule="comet", measured_key=key, measured_us=us, knobs=knobs,
                                  skip=_comet_skip(c, bench.shape["hidden"], measured), kernels_measured=kernels))
    return cases


def config_text(point: dict, blocks_only: bool = False) -> str:
    """A point's configuration in a few words (`blocks_only`: a comet point's communication blocks alone)."""
    c = point["config"]
    if point["schedule"] == "chunked":
        return f"chunks={c['chunks']}" + (" loop" if c.get("expert_gemm") == "loop" else "")
    if point["schedule"] == "comet":
        blocks = f"blocks={c['comm_blocks0']}/{c['comm_blocks1']}"
        return blocks if blocks_only else f"{blocks} {c['block_m']}x{c['block_n']} {c['row_order']} splits={c['n_splits']}"
    return "-"


def signed_error_pct(predicted_us: float, measured_us: float) -> float:
    """(predicted - measured) / measured in %: negative means the simulator is too fast."""
    return 100.0 * (predicted_us - measured_us) / measured_us


def _schedule(case: Case):
    from comet_dse.sim import Chunked, Comet, Sequential

    return {"sequential": Sequential, "chunked": Chunked, "comet": Comet}[case.schedule](**case.knobs)


def simulate_cases(cases: list[Case], workloads: dict[tuple[str, int], Workload], hardware: HardwareProfile,
                   after_gap: bool = False) -> list[dict]:
    """One point per case. A configuration the simulator rejects or fails on is recorded with
    its reason (status `failed`), never raised: the measurement itself was valid. after_gap: comet's points priced
    as a call bench starts after its host barrier and spin runs, off the power cap (simulate's after_gap; the
    profile's power_state table, where it has one)."""
    from comet_dse.routing import make_routing
    from comet_dse.sim import simulate

    routings = {key: make_routing(wl) for key, wl in workloads.items()}  # one draw per layer, shared by its schedules
    # the profile as each file started its calls, made once per way: a copy per case would start its tables'
    # memo of fitted tile times empty each time
    timed = {align: hardware.timed_as(align) for align in {case.align for case in cases}}
    points = []
    for case in cases:
        workload = workloads[(case.source, case.tokens)]
        point = {"source": case.source, "run": case.run, "model": case.model, "tokens": case.tokens,
                 "ep": workload.ep, "tp": workload.tp,
                 "schedule": case.schedule, "measured_key": case.measured_key, "config": case.knobs,
                 "measured_us": case.measured_us, "predicted_us": None, "error_pct": None, "status": "ok", "reason": None}
        if case.skip:
            point.update(status="skipped", reason=case.skip)
        else:
            key = (case.source, case.tokens)
            try:
                result = simulate(workloads[key], timed[case.align], _schedule(case), routing=routings[key], record=False,
                                  after_gap=after_gap)
            except Exception as exc:  # noqa: BLE001 - any failure is a finding about the simulator, kept in the output
                point.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
            else:
                point.update(predicted_us=round(result.latency_us, 2),
                             error_pct=round(signed_error_pct(result.latency_us, case.measured_us), 2))
                if result.gemm_scale != 1.0:
                    point["gemm_scale"] = round(result.gemm_scale, 4)
                kernels = {k: {"predicted_us": round(result.kernels_us[k], 2), "measured_us": us,
                               "error_pct": round(signed_error_pct(result.kernels_us[k], us), 2)}
                           for k, us in case.kernels_measured.items() if k in result.kernels_us}
                if kernels:
                    point["kernels"] = kernels
        points.append(point)
    return points


def sort_key(point: dict) -> tuple:
    """Reading order: layer, token count, then the knob that varies."""
    c = point["config"]
    return (point["model"], point["tokens"], c.get("chunks", 0), c.get("comm_blocks0", 0), c.get("comm_blocks1", 0),
            point["source"], point["run"])


# ---- summaries -------------------------------------------------------------------------


def _error_stats(errors: list[float]) -> dict:
    """MAPE, mean, min and max of signed errors in %; None each without errors."""
    if not errors:
        return {"mape_pct": None, "mean_error_pct": None, "min_error_pct": None, "max_error_pct": None}
    return {"mape_pct": round(sum(abs(e) for e in errors) / len(errors), 2),
            "mean_error_pct": round(sum(errors) / len(errors), 2),
            "min_error_pct": round(min(errors), 2), "max_error_pct": round(max(errors), 2)}


def error_summary(points: list[dict]) -> dict:
    """MAPE and the signed bias over the points that were simulated."""
    ok = [p for p in points if p["status"] == "ok"]
    errors = [signed_error_pct(p["predicted_us"], p["measured_us"]) for p in ok]
    return {"n": len(ok), "skipped": sum(p["status"] == "skipped" for p in points),
            "failed": sum(p["status"] == "failed" for p in points), **_error_stats(errors)}


def repeated_errors(points: list[dict]) -> dict:
    """Per schedule, the errors against the median of each point measured in several files (one bench command
    run again, e.g. on several machines), so run-to-run noise stays out of the MAPE, and that noise itself
    (slowest / fastest repeat - 1 per point: its median and max); {} where nothing was measured twice."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        if p["status"] == "ok":
            config = json.dumps(p["config"], sort_keys=True)
            groups.setdefault((p["schedule"], p["model"], p.get("ep"), p.get("tp"), p["tokens"], config), []).append(p)
    errors: dict[str, list[float]] = {}
    noise: dict[str, list[float]] = {}
    sources: dict[str, list[int]] = {}
    for (schedule, *_), ps in groups.items():
        repeats = len({p["source"] for p in ps})
        if repeats < 2:
            continue
        measured = [p["measured_us"] for p in ps]
        # one profile, one routing seed: every repeat of a point has the same prediction
        errors.setdefault(schedule, []).append(signed_error_pct(ps[0]["predicted_us"], statistics.median(measured)))
        noise.setdefault(schedule, []).append(100.0 * (max(measured) / min(measured) - 1.0))
        sources.setdefault(schedule, []).append(repeats)
    return {s: {"n": len(e), "min_repeats": min(sources[s]), **_error_stats(e),
                "median_noise_pct": round(statistics.median(noise[s]), 2), "max_noise_pct": round(max(noise[s]), 2)}
            for s, e in errors.items()}


def kernel_summary(points: list[dict]) -> dict:
    """Per fused kernel (KERNELS), MAPE and bias over the points whose bench timed it alone; empty if none did."""
    found = {}
    for kernel in KERNELS:
        errors = [p["kernels"][kernel]["error_pct"] for p in points if kernel in p.get("kernels", {})]
        if errors:
            found[kernel] = {"n": len(errors), **_error_stats(errors)}
    return found


def _spearman(predicted: list[float], measured: list[float]) -> float | None:
    """Rank correlation; None below 3 points or when either side is constant (undefined)."""
    from scipy.stats import spearmanr

    if len(predicted) < 3:
        return None
    rho = float(spearmanr(predicted, measured).statistic)
    return None if math.isnan(rho) else round(rho, 4)


def sweep(points: list[dict]) -> dict:
    """Spearman and regret over one sweep of communication blocks (same file, layer and
    other knobs). The simulator's pick is the fastest predicted point (ties: fewest blocks)."""
    points = sorted(points, key=lambda p: (p["config"]["comm_blocks0"], p["config"]["comm_blocks1"]))
    predicted = [p["predicted_us"] for p in points]
    measured = [p["measured_us"] for p in points]
    pick = predicted.index(min(predicted))
    best = measured.index(min(measured))

    def blocks(i: int) -> list[int]:
        return [points[i]["config"]["comm_blocks0"], points[i]["config"]["comm_blocks1"]]

    first = points[0]
    return {
        "source": first["source"], "model": first["model"], "tokens": first["tokens"],
        "knobs": sweep_knobs(first["config"]),
        "comm_blocks": [blocks(i) for i in range(len(points))], "n": len(points),
        "spearman": _spearman(predicted, measured),
        "regret_pct": round(100.0 * (measured[pick] / measured[best] - 1.0), 2),
        "predicted_best": blocks(pick), "measured_best": blocks(best),
        "measured_spread_pct": round(100.0 * (max(measured) / min(measured) - 1.0), 2),
    }


def sweep_knobs(config: dict) -> dict:
    """A comet configuration's knobs other than the communication blocks: what one sweep shares."""
    return {k: v for k, v in config.items() if not k.startswith("comm_blocks")}


def sweeps(points: list[dict]) -> list[dict]:
    """Every comet sweep with at least two simulated communication-block settings."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        if p["schedule"] == "comet" and p["status"] == "ok":
            other = tuple(sweep_knobs(p["config"]).items())
            groups.setdefault((p["source"], p["tokens"], other), []).append(p)
    return [sweep(group) for group in groups.values() if len(group) >= 2]


def repeated_sweeps(points: list[dict]) -> list[dict]:
    """Sweeps measured in several files (one bench command run again): per block setting the median over
    the repeats and the run-to-run noise (slowest / fastest repeat - 1), then Spearman and the regret of
    the simulator's pick on the medians. Where the medians' spread is within the noise, the hardware
    cannot rank the settings (`beyond_noise` false); the regret is then noise, not a wrong pick."""
    groups: dict[tuple, dict[tuple[int, int], list[dict]]] = {}
    for p in points:
        if p["schedule"] == "comet" and p["status"] == "ok":
            other = tuple(sweep_knobs(p["config"]).items())
            blocks = (p["config"]["comm_blocks0"], p["config"]["comm_blocks1"])
            key = (p["model"], p.get("ep"), p.get("tp"), p["tokens"], other)
            groups.setdefault(key, {}).setdefault(blocks, []).append(p)
    found = []
    for (model, ep, tp, tokens, other), by_blocks in groups.items():
        repeats = min(len({p["source"] for p in ps}) for ps in by_blocks.values())
        if repeats < 2 or len(by_blocks) < 2:
            continue
        settings = sorted(by_blocks)
        measured = [statistics.median(p["measured_us"] for p in by_blocks[b]) for b in settings]
        predicted = [by_blocks[b][0]["predicted_us"] for b in settings]
        noise = [max(p["measured_us"] for p in by_blocks[b]) / min(p["measured_us"] for p in by_blocks[b]) - 1.0 for b in settings]
        pick, best = predicted.index(min(predicted)), measured.index(min(measured))
        spread = max(measured) / min(measured) - 1.0
        regret = measured[pick] / measured[best] - 1.0
        found.append({
            "model": model, "ep": ep, "tp": tp, "tokens": tokens, "knobs": dict(other), "repeats": repeats,
            "comm_blocks": [list(b) for b in settings], "n": len(settings),
            "measured_median_us": [round(m, 2) for m in measured], "predicted_us": predicted,
            "spearman": _spearman(predicted, measured), "regret_pct": round(100.0 * regret, 2),
            "predicted_best": list(settings[pick]), "measured_best": list(settings[best]),
            "measured_spread_pct": round(100.0 * spread, 2), "noise_pct": round(100.0 * max(noise), 2),
            "beyond_noise": spread > max(noise), "regret_beyond_noise": regret > max(noise[pick], noise[best]),
        })
    return found


# a sweep over the fused-layer issue's grid of communication blocks (4 ... 48; the copy engine, 0, is a
# separate sweep: other tiles): the one the Spearman and regret targets are stated on
FULL_SWEEP_POINTS = 6


def sweep_summary(found: list[dict], min_points: int = 2) -> dict:
    """Mean and worst Spearman and regret over the sweeps of at least `min_points` block counts."""
    found = [s for s in found if s["n"] >= min_points]
    rhos = [s["spearman"] for s in found if s["spearman"] is not None]
    regrets = [s["regret_pct"] for s in found]
    return {
        "n": len(found),
        "mean_spearman": round(sum(rhos) / len(rhos), 4) if rhos else None,
        "min_spearman": min(rhos) if rhos else None,
        "mean_regret_pct": round(sum(regrets) / len(regrets), 2) if regrets else None,
        "max_regret_pct": max(regrets) if regrets else None,
    }
