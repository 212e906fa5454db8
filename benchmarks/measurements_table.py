"""Regenerate results/measurements/README.md from the JSON files beside it: no figure there is
typed by hand.

    python benchmarks/measurements_table.py            # writes results/measurements/README.md
    python benchmarks/measurements_table.py --check    # exit 1 if the README is not what the JSON gives

Reads the `comet-dse bench` results (bench-*.json) and GPU suites (suite.json) of the two-GPU
runs under results/measurements/ep2_h200/ (the current kernels, on 2x H200) and ep2_h100/ (the
kernels before the merged row tiles, on 2x H100: the issue's machine): each folder's final runs
at its top level, earlier versions and variants in their own folders. Standard library only.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from generated_file import write_or_check

ROOT = Path(__file__).resolve().parent.parent / "results" / "measurements"
FINAL = "ep2_h100"  # the H100 runs: the targets machine, kernels before the merged layout
CURRENT = "ep2_h200"  # the current kernels (merged row tiles), measured on 2x H200
CHUNKS = re.compile(r"b1_c\d+")


def _command(env: dict) -> str:
    """The command as typed: under `python -m` the first word is the module's file path."""
    words = env["command"].split()
    if words and words[0].endswith("comet_dse/cli.py"):
        words[0] = f"torchrun --nproc-per-node {env['gpus']} -m comet_dse.cli"
    return " ".join(words)


def _commands(runs: list[dict]) -> list[str]:
    """One bullet per distinct command the runs came from, then a blank line."""
    return [f"- `{_command(r['env'])}`" for r in {r["env"]["command"]: r for r in runs}.values()] + [""]


def _load(folder: Path) -> list[dict]:
    runs = []
    for path in sorted(folder.glob("bench-*.json")) + sorted(folder.glob("flatten-*.json")):
        data = json.loads(path.read_text())
        for run in data["runs"]:
            runs.append({**run, "model": data["model"], "file": path.name, "env": data})
    return runs


def _us(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    right = ["---:" if i else "---" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(right) + " |"] + ["| " + " | ".join(r) + " |" for r in rows]


def _by_model_tokens(runs: list[dict]) -> dict[str, dict[int, list[dict]]]:
    grouped: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run["model"]][run["tokens"]].append(run)
    return grouped


def _best_b1(t: dict) -> tuple[float | None, str]:
    b1 = {k: v for k, v in t.items() if CHUNKS.fullmatch(k)}  # b1_c<C>, the faster GEMM (not b1_c<C>_grouped, _loop)
    if not b1:
        return None, ""
    name = min(b1, key=b1.get)
    return b1[name], name.removeprefix("b1_c")


def _graphed(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["config"] and r["config"]["comm_blocks0"] > 0]


def _best_per_file(group: list[dict]) -> list[dict]:
    """The fastest graphed fused configuration of each file that measured this (model, tokens)."""
    files = sorted({r["file"] for r in group})
    return [min(_graphed([r for r in group if r["file"] == f]), key=lambda r: r["timings_us"]["fused"]) for f in files]


def _least_favourable(group: list[dict]) -> dict:
    """Where several runs measured the same token count, the one with the lowest B0 / fused: each
    ratio is taken inside one run (B0 and fused timed in the same process), and the B0 of a
    host-synced layer varies by up to 30% between runs."""
    return min(_best_per_file(group), key=lambda r: r["timings_us"]["b0"] / r["timings_us"]["fused"])


def _order_note(config: dict) -> str:
    order = config.get("tile_order", "layout")
    layout = ", by source" if config.get("tile_layout") == "by-source" and config["comm_blocks0"] > 0 else ""
    return ("" if order == "layout" else f", {order} order") + layout


def _variant(config: dict) -> tuple[str, str]:
    """(tile layout, tile order) of a fused run; files from before the merged layout ran by source."""
    return config.get("tile_layout", "by-source"), config.get("tile_order", "layout")


def _headline(runs: list[dict]) -> list[str]:
    out = []
    for model, by_tokens in _by_model_tokens(runs).items():
        out += [f"### {model}", ""]
        rows = []
        for tokens in sorted(by_tokens):
            best = _least_favourable(by_tokens[tokens])
            t = best["timings_us"]
            b1, chunks = _best_b1(t)
            limit = max(t["compute_only"], t["comm_only"])
            rows.append([str(tokens), _us(t.get("naive")), f"{_us(t['b0'])} ({_us(t['b0_grouped'])} / {_us(t['b0_loop'])})",
                         f"{_us(b1)} ({chunks})", f"{_us(t['fused'])} ({best['config']['comm_blocks0']}{_order_note(best['config'])})",
                         _us(t["compute_only"]), _us(t["comm_only"]), _us(t.get("grouped_mm")), _us(best["comm_floor_us"]),
                         _us(t.get("fused_eager")), _ratio(t["b0"], t["fused"]), _ratio(b1, t["fused"]),
                         _ratio(t["fused"], limit), _ratio(t["compute_only"], t.get("grouped_mm")),
                         f"{best['max_rel_error']['fused']:.4f}"])
        out += _table(["tokens/GPU", "naive", "B0 (grouped / loop)", "best B1 (chunks)", "fused (n_comm)", "compute-only",
                       "comm-only", "grouped_mm", "comm floor", "fused eager", "B0 / fused", "B1 / fused",
                       "fused / max(co, mo)", "co / grouped_mm", "max rel. err"], rows) + [""]
    return out


def _sweep(runs: list[dict]) -> list[str]:
    """Fused time by communication blocks, one table per model and (tile layout, tile order); the copy
    engine (0) runs by source whatever layout was asked, so its column sits in the merged tables too."""
    out = []
    for model, by_tokens in _by_model_tokens(runs).items():
        configs = [r["config"] for rs in by_tokens.values() for r in rs if r["config"]]
        blocks = sorted({c["comm_blocks0"] for c in configs})
        variants = sorted({_variant(c) for c in configs if c["comm_blocks0"] > 0},
                          key=lambda v: (v[0] != "merged", v[1] != "layout"))
        layouts = {v[0] for v in variants}
        for layout, order in variants:
            rows = []
            for tokens in sorted(by_tokens):
                cells = {r["config"]["comm_blocks0"]: r["timings_us"]["fused"] for r in by_tokens[tokens]
                         if r["config"] and _variant(r["config"])[1] == order
                         and (_variant(r["config"])[0] == layout or r["config"]["comm_blocks0"] == 0)}
                b0 = by_tokens[tokens][0]["timings_us"]["b0"]
                if cells:
                    rows.append([str(tokens), _us(b0)] + [_us(cells.get(b)) for b in blocks])
            title = f"### {model}: fused µs by communication blocks (0 = copy engine, eager)"
            what = ([f"tiles {layout}"] if len(layouts) > 1 else []) + ([f"tile order {order}"] if len(variants) > len(layouts) else [])
            out += [title + "".join(f", {w}" for w in what), ""]
            out += _table(["tokens/GPU", "B0"] + [str(b) for b in blocks], rows) + [""]
    return out


def _layouts(runs: list[dict]) -> list[str]:
    """Merged against by-source row tiles where one run timed both: each variant's best fused
    configuration, its compute-only and comm-only, and the ratio of the two layouts' best."""
    out = []
    for model, by_tokens in _by_model_tokens(runs).items():
        rows = []
        for tokens in sorted(by_tokens):
            for file in sorted({r["file"] for r in by_tokens[tokens]}):
                graphed = _graphed([r for r in by_tokens[tokens] if r["file"] == file])
                best = {}
                for r in graphed:
                    v = _variant(r["config"])
                    if v not in best or r["timings_us"]["fused"] < best[v]["timings_us"]["fused"]:
                        best[v] = r
                if {v[0] for v in best} != {"merged", "by-source"}:
                    continue
                cells = []
                for v in sorted(best, key=lambda v: (v[0] != "merged", v[1] != "layout")):
                    t = best[v]["timings_us"]
                    cells.append(f"{_us(t['fused'])} ({best[v]['config']['comm_blocks0']}) / {_us(t['compute_only'])} / "
                                 f"{_us(t['comm_only'])}")
                fastest = {layout: min(r["timings_us"]["fused"] for v, r in best.items() if v[0] == layout)
                           for layout in ("merged", "by-source")}
                rows.append([str(tokens)] + cells + [_ratio(fastest["by-source"], fastest["merged"]), file])
        if rows:
            out += [f"### {model}", ""]
            out += _table(["tokens/GPU", "merged, layout order", "merged, expert order", "by source, layout order",
                           "by source, expert order", "by source / merged (best of each)", "file"], rows) + [""]
    return out


def _suite(path: Path) -> list[str]:
    if not path.exists():
        return []
    s = json.loads(path.read_text())
    c = s["checks"]
    rows = [["device-side plan = plain loops", f"{c['device_plan']['cases']} plans", "equal" if c["device_plan"]["equal"] else "DIFFER"]]
    for name, a in c["adversarial"].items():
        rows.append([f"adversarial routings, {name.replace('_', ' ')}", f"{a['calls']} calls, one over capacity",
                     f"max rel. err {a['max_rel_error']:.4f}; over capacity raised: {a['over_capacity_raised']}"])
    g = c["graph_replays"]
    rows.append(["CUDA-graph replays, fresh routings", f"{g['replays']} × {g['tokens']} tokens", f"max rel. err {g['max_rel_error']:.4f}"])
    d = c["delayed_producer"]
    rows.append(["delayed producer", f"{d['delay_spins']} spins per flag", f"max rel. err {d['max_rel_error']:.4f}"])
    st = c["stuck_producer"]
    rows.append(["producer that never signals", f"returned in {st['seconds_to_return']} s", f"raised: {st['raised']}"])
    return [f"`{s['command']}` on {s['gpus']}× {s['gpu']}, {s['date']}, layer E,k,H,F = {s['shape']}:", ""] + \
        _table(["check", "size", "result"], rows) + [""]


def _variants(folder: Path, final: list[dict]) -> list[str]:
    """Each variant run beside the default knobs' figures for the same configuration (the fastest
    where several runs timed it: default tile layout and order)."""
    runs = _load(folder)
    if not runs:
        return []
    index: dict[tuple, dict] = {}
    for r in final:
        if r["config"]:
            key = (r["model"], r["tokens"], r["config"]["comm_blocks0"], _variant(r["config"]))
            if key not in index or r["timings_us"]["fused"] < index[key]["fused"]:
                index[key] = r["timings_us"]
    rows = []
    for r in runs:
        cfg = r["config"]
        base = index.get((r["model"], r["tokens"], cfg["comm_blocks0"], _variant(cfg)), {})
        if cfg.get("flatten") or r["file"].startswith("flatten-"):  # the first flatten files did not record it
            label = "flatten" + (f", layer1 tile {cfg['block_m']}x{cfg['block_n1']}" if cfg.get("block_n1") else "")
        else:
            label = f"GROUP_M {cfg['group_m']}"
        rows.append([r["model"], str(r["tokens"]), str(cfg["comm_blocks0"]), label, _us(r["timings_us"]["compute_only"]),
                     _us(base.get("compute_only")), _us(r["timings_us"]["fused"]), _us(base.get("fused")), r["file"]])
    return _table(["model", "tokens/GPU", "n_comm", "variant", "compute-only", "same, default knobs", "fused",
                   "same, default knobs", "file"], rows) + [""]


def _copy_bandwidth(folder: Path) -> list[str]:
    """The fused kernels' own copy code against the link, from the calibrated profiles
    (`comet-dse calibrate`): the fused-layer issue's >= 80% of NVLink from 24 blocks."""
    out = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        copies = data.get("tables", {}).get("comm_blocks")
        if not copies or data.get("provenance", {}).get("quick"):
            continue
        if data["provenance"].get("derived_from"):
            continue  # a profile made from another (a table left out, or run 88's fused tables swapped in): its base is listed
        updates = data["provenance"].get("updates", [])
        if updates and not {"comm_blocks", "layer_comm_blocks"} & {t for u in updates for t in u["replaced"]}:
            continue  # calibrate --only ... --update: these copy tables are its base profile's, listed there
        link = max([copies.get("copy_engine_GBps") or 0] + copies["pull"]["GBps"] + copies["push"]["GBps"])
        layer = data["tables"].get("layer_comm_blocks")  # the layer's own tile walk (calibrate since 2026-11-26)
        if isinstance(layer, list):  # one per model since 2026-11-28: the first model's, as the earlier files had
            layer = layer[0]
        by_blocks = {} if not layer else {
            b: (pull, push) for b, pull, push in zip(layer["pull"]["blocks"], layer["pull"]["GBps"], layer["push"]["GBps"])}

        def share(v: float | None) -> list[str]:
            return ["–", "–"] if v is None else [f"{v:.0f}", f"{v / link:.0%}"]

        rows = []
        for b, pull, push in zip(copies["pull"]["blocks"], copies["pull"]["GBps"], copies["push"]["GBps"]):
            in_layer = by_blocks.get(b, (None, None))
            rows.append([str(b), *share(pull), *share(push)] + ([*share(in_layer[0]), *share(in_layer[1])] if layer else []))
        prov = data["provenance"]
        out += [f"## Communication blocks → bandwidth (`{path.relative_to(folder.parent.parent)}`)", "",
                f"`{prov['command']}` on {prov['gpus']}× {prov['gpu']}, {prov['date']}: the fused kernels' copy code "
                "(`_copy_block`, 16-byte accesses) pulling (layer0) and pushing (layer1) 128 MiB over NVLink, every GPU "
                f"copying at once, in GB/s and as a share of the best peer copy measured ({link:.0f} GB/s, the copy "
                "engine's)" + (". In the layer: the same copies through the fused kernels' own tile walk (layer0 and "
                               "layer1 in COMM_ONLY mode: tile table, pieces, flags and counters included)." if layer
                               else "."), ""]
        header = ["blocks", "pull GB/s", "pull / link", "push GB/s", "push / link"]
        header += ["in the layer: pull", "/ link", "push", "/ link"] if layer else []
        out += _table(header, rows) + [""]
    return out


def _targets(runs: list[dict]) -> list[str]:
    """Issue 7's targets, read off the final figures (best n_comm per token count)."""
    best = {}
    for model, by_tokens in _by_model_tokens(runs).items():
        for tokens, group in by_tokens.items():
            best[model, tokens] = _least_favourable(group)["timings_us"]

    def speedup(model: str, tokens: int, base: str = "b0") -> float | None:
        t = best.get((model, tokens))
        if not t:
            return None
        return (_best_b1(t)[0] if base == "b1" else t[base]) / t["fused"]

    qwen, mixtral = "qwen2-moe-2.7b", "mixtral-8x7b"
    mixtral_all = [speedup(mixtral, t) for (m, t) in best if m == mixtral]
    limit = [t["fused"] / max(t["compute_only"], t["comm_only"]) for t in best.values()]
    b0_naive = [t["b0"] / t["naive"] for t in best.values() if t.get("naive")]  # the layer B0 must not lose to
    def compute(model: str) -> float | None:  # the worst token count of the model: the target holds for all
        ratios = [t["compute_only"] / t["grouped_mm"] for (m, _), t in best.items() if m == model and t.get("grouped_mm")]
        return max(ratios) if ratios else None

    rows = [
        ("Qwen2-MoE 8192 tokens: fused / B0 >= 2.0", speedup(qwen, 8192), lambda v: v >= 2.0),
        ("Qwen2-MoE 8192 tokens: fused / best B1 >= 1.3", speedup(qwen, 8192, "b1"), lambda v: v >= 1.3),
        ("Mixtral 8192 tokens: fused / B0 >= 1.3", speedup(mixtral, 8192), lambda v: v >= 1.3),
        (f"Mixtral, every measured token count ({', '.join(str(t) for (m, t) in sorted(best) if m == mixtral) or 'none here'}): "
         "fused / B0 >= 1.0 (lowest)", min(mixtral_all) if mixtral_all else None, lambda v: v >= 1.0),
        ("1024 tokens: fused / B0 >= 1.5, Qwen2-MoE", speedup(qwen, 1024), lambda v: v >= 1.5),
        ("1024 tokens: fused / B0 >= 1.5, Mixtral", speedup(mixtral, 1024), lambda v: v >= 1.5),
        ("fused <= 1.10 x max(compute-only, comm-only) (worst)", max(limit) if limit else None, lambda v: v <= 1.10),
        ("compute-only <= 1.10 x grouped_mm, Qwen2-MoE (worst)", compute(qwen), lambda v: v <= 1.10),
        ("compute-only <= 1.10 x grouped_mm, Mixtral (worst)", compute(mixtral), lambda v: v <= 1.10),
        ("B0 / naive <= 1.0, every model and token count (worst)", max(b0_naive) if b0_naive else None, lambda v: v <= 1.0),
    ]
    table = [[name, "–" if v is None else f"{v:.2f}", "–" if v is None else ("met" if ok(v) else "not met")] for name, v, ok in rows]
    return _table(["target (best configuration per token count, least favourable run)", "measured", ""], table) + [""]


def _machine(root: Path, folder: str, title: str, intro: str) -> list[str]:
    """One machine's section: the commands, the targets, the best configurations, the sweep, the suite."""
    final = _load(root / folder)
    if not final:
        return []
    env = final[0]["env"]
    lines = [
        f"## {title} (`{folder}/`)",
        "",
        intro,
        "",
        f"{env['gpus']}× {env['gpu']} (NVLink), driver {env['driver']}, torch {env['torch']}, triton {env['triton']}; "
        f"EP=2, bf16. Every figure is the median of {env['runs_per_figure']} timed runs (CUDA events, 3 rotated input "
        "sets, a barrier before each) on the slowest rank, in µs. `fused`, `compute-only`, `comm-only` and `grouped_mm` "
        "are CUDA-graph replays; `fused eager` is the same forward launched op by op; the baselines run eagerly (each "
        "syncs with the host once per call). `comm floor` = bytes this rank sends over NVLink / the peer-copy bandwidth "
        "measured in the same run. Commands:",
        "",
    ]
    lines += _commands(final)
    lines += [f"### Targets of the fused-layer issue, on {env['gpu']}", ""] + _targets(final)
    lines += ["### Fused layer against the baselines and its limits (best configuration per token count)", "",
              "Where two runs measured a token count, the row is the run with the lower B0 / fused (B0 syncs with the "
              "host and varies by up to 30% between runs; each ratio is taken inside one run).", ""] + _headline(final)
    layouts = _layouts(final)
    if layouts:
        lines += ["### Merged against by-source row tiles", "",
                  "Each cell: the variant's best fused µs (its communication blocks) / compute-only / comm-only of that "
                  "configuration, timed in one run.", ""] + layouts
    lines += _sweep(final)
    lines += [f"### GPU test suite (`benchmarks/gpu_fused_ep.py`), on {env['gpu']}", ""] + _suite(root / folder / "suite.json")
    return lines


def _fastest(runs: list[dict], variant: str) -> float:
    return min(r["timings_us"][variant] for r in _graphed(runs))


def _device_pack(root: Path) -> list[str]:
    """Step 1 of the forward on the device: the micro-benchmark (one run, both versions), and the
    best fused / compute-only of this section's runs beside those of the runs before it."""
    folder = root / CURRENT
    lines = []
    for path in sorted((folder / "pack").glob("pack-*.json")):
        data = json.loads(path.read_text())
        lines += [f"`{_command(data)}` on one {data['gpu']}, {data['date']}: the pairs of one rank ordered by expert, "
                  "counted, and their rows gathered into the send region, each version captured in a CUDA graph (median "
                  "of 50 replays, µs); `same`: both wrote the same send rows, positions and counts.", ""]
        lines += _table(["model", "tokens/GPU", "pairs", "torch ops", "kernels", "torch ops / kernels", "same"],
                        [[r["model"], str(r["tokens"]), str(r["pairs"]), f"{r['torch ops us']:.1f}",
                          f"{r['kernels us']:.1f}", f"{r['speedup']:.2f}", "yes" if r["same"] else "NO"]
                         for r in data["rows"]]) + [""]
    before = _by_model_tokens(_load(folder / "before_device_pack"))
    rows = []
    for model, by_tokens in _by_model_tokens(_load(folder)).items():
        for tokens in sorted(set(by_tokens) & set(before.get(model, {}))):
            old, new = before[model][tokens], by_tokens[tokens]
            rows.append([model, str(tokens), _us(_fastest(old, "fused")), _us(_fastest(new, "fused")),
                         _ratio(_fastest(old, "fused"), _fastest(new, "fused")), _us(_fastest(old, "compute_only")),
                         _us(_fastest(new, "compute_only")),
                         _ratio(_fastest(old, "compute_only"), min(r["timings_us"]["grouped_mm"] for r in old)),
                         _ratio(_fastest(new, "compute_only"), min(r["timings_us"]["grouped_mm"] for r in new))])
    if rows:
        lines += ["Fastest graphed fused and compute-only configuration per token count, this section's runs against "
                  "`before_device_pack/` (same kernels but step 1 in torch ops; other runs on other machines of the same "
                  "kind, so a few % of noise):", ""]
        lines += _table(["model", "tokens/GPU", "fused before", "fused now", "before / now", "compute-only before",
                         "compute-only now", "co / grouped_mm before", "co / grouped_mm now"], rows) + [""]
    return ["### Step 1 on the device: pairs ordered by a counting sort instead of torch ops", ""] + lines if lines else []


def _group_m(root: Path) -> list[str]:
    # measured before step 1 moved to the device: compared with the runs of that version
    variants = _variants(root / CURRENT / "variants", _load(root / CURRENT / "before_device_pack"))
    if not variants:
        return []
    return ["### Row tiles sharing a weight tile through L2 (`ep2_h200/variants/`)", "",
            "GROUP_M (`--group-m`) beside the default 8, merged tiles, layout order, on the kernels of "
            "`before_device_pack/`; the default's figure is the fastest of those runs for that configuration "
            "(another process, so a few % of noise):", ""] + variants


def _b0_loop(root: Path) -> list[str]:
    """B0 against moe_naive: the loop GEMM over the rows as they arrived (runs<i>/) and the loop that regrouped them
    first (regroup<i>/), alternated in one device call; then b0 / naive over every one-machine set (the loop then)."""
    folder = root / CURRENT / "b0_loop"
    rounds = sorted(p.name for p in folder.glob("runs*"))
    if not rounds:
        return []
    rows = []
    for runs_name in rounds:
        i = runs_name.removeprefix("runs")
        new, old = _by_model_tokens(_load(folder / runs_name)), _by_model_tokens(_load(folder / f"regroup{i}"))
        for model, by_tokens in new.items():
            for tokens, group in sorted(by_tokens.items()):
                n, o = group[0]["timings_us"], old[model][tokens][0]["timings_us"]
                rows.append([model, str(tokens), i, _us(n["naive"]), _us(n["b0_loop"]), _ratio(n["b0_loop"], n["naive"]),
                             _us(n["b0_grouped"]), _us(o["naive"]), _us(o["b0_loop"]), _ratio(o["b0_loop"], o["naive"]),
                             _us(o["b0_grouped"])])
    rows.sort(key=lambda r: (r[0], int(r[1]), r[2]))
    lines = ["### B0 against the simplest layer (`ep2_h200/b0_loop/`)", "",
             "`comet-dse bench --kind baselines --chunks 2` on Mixtral (1024, 4096, 8192 tokens) and Phi-3.5-MoE (1024, "
             "4096), on one machine in one device call, alternating B0's loop GEMM as it is now (one `torch.mm` per "
             "(source, expert) run of the rows as they arrived: `runs<i>/`) with the loop before (rows regrouped into "
             "expert order first, one `torch.mm` per expert: `regroup<i>/`, `kernels/baselines.py` at 0165591 copied "
             "over the installed module; `README.md` there has the command). `moe_naive`, B0 with `torch._grouped_mm` "
             "(unchanged) and the loop are timed in the same bench call, so `loop / naive` is a paired ratio:", ""]
    lines += _table(["model", "tokens/GPU", "round", "naive", "B0 loop (runs)", "loop / naive", "B0 grouped",
                     "naive", "B0 loop (regroup)", "loop / naive", "B0 grouped"], rows) + [""]
    ratios: dict[tuple[str, int], dict[tuple[Path, str], float]] = defaultdict(dict)
    for one, _ in _one_machine_folders(root):
        for r in _load(one):
            t = r["timings_us"]
            if "naive" in t and "b0" in t and r["env"].get("tp", 1) == 1 and r["env"].get("b0_loop", "regroup") == "regroup":
                ratios[r["model"], r["tokens"]][one, r["file"]] = t["b0"] / t["naive"]  # once per file: every run repeats it
    spread = [[model, str(tokens), str(len(v)), f"{min(v):.2f}", f"{statistics.median(v):.2f}", f"{max(v):.2f}"]
              for (model, tokens), by_file in sorted(ratios.items()) if len(v := list(by_file.values())) > 1]
    if spread:
        lines += ["Before the change, `b0 / naive` (B0 with the faster of its two GEMMs, the loop regrouping) over every "
                  "one-machine set below (one figure per bench file and token count):", ""]
        lines += _table(["model", "tokens/GPU", "figures", "min", "median", "max"], spread) + [""]
    return lines


def _started(runs: list[dict]) -> str:
    """How the folder's bench files started each timed call (bench --align; files without the key: host)."""
    aligns = sorted({r["env"].get("align", "host") for r in runs})
    how = {"host": "from a host barrier (`--align host`)", "devices": "from an all-reduce on the GPUs (`--align devices`)",
           "queued": "enqueued behind a device spin (`--align queued`)"}
    return " and ".join(how[a] for a in aligns)


def _one_machine_folders(root: Path) -> list[tuple[Path, str]]:
    """(folder, run) of the benches made in one device call beside that machine's own profile
    (results/hardware/h200-x2-<run>.json): runs 26-39 as ep2_h200_run<N>/, later ones as ep2_h200/run<N>/."""
    def number(folder: Path) -> int | None:
        digits = folder.name.split("_")[-1].removeprefix("run")
        return int(digits) if digits.isdigit() else None

    hardware = root.parent / "hardware"
    folders = [f for f in [*root.glob(f"{CURRENT}_run*"), *(root / CURRENT).glob("run*")] if number(f) is not None]
    return [(f, f"run{number(f)}") for f in sorted(folders, key=number)
            if (hardware / f"h200-x2-run{number(f)}.json").exists()]


def _one_machine_sets(root: Path) -> list[str]:
    """The benches each made on the machine that calibrated beside them: the targets, each folder on its own
    machine (a folder of baselines only has none)."""
    lines = []
    for folder, run in _one_machine_folders(root):
        runs = _load(folder)
        fused = [r for r in runs if r["config"]]
        if not fused:
            continue
        env = runs[0]["env"]
        lines += [f"### Targets on one machine: `{folder.relative_to(root)}/`", "",
                  f"The same kernels, every bench of this folder and the profile `results/hardware/h200-x2-{run}.json` "
                  f"made in one device call on one machine ({env['gpus']}× {env['gpu']}, {env['date'][:10]}); each timed "
                  f"call started {_started(runs)}; commands:", ""]
        lines += _commands(runs)
        lines += _targets(fused)
    return lines


def render(root: Path = ROOT) -> str:
    lines = [
        "# Measurements",
        "",
        "Generated by `python benchmarks/measurements_table.py` from the JSON files in this folder: do not edit by",
        "hand. Each JSON holds the exact command, GPU, driver, torch and triton versions and every rank's figures;",
        "`HISTORY.md` has the single-GPU measurements of earlier versions.",
        "",
    ]
    lines += _machine(root, CURRENT, "The fused layer on two GPUs, expert parallel: current kernels",
                      "The kernels as they are now: row tiles merged across sources by default (`--tile-layout`). The "
                      "device tool lent 2× H200 for these runs, not the H100s of the issue's targets: H200 has the same "
                      "SMs and clocks and 1.4× the HBM bandwidth, so figures compare within this section only. "
                      "Step 1 of the forward (the pairs ordered by expert) is two Triton kernels (kernels/fused_pack.py); "
                      "`before_device_pack/` holds the runs of the same kernels with that step in torch ops (and the plan "
                      "kernel before its tile table was spread over many programs), `layouts_before_own_copy/` the first "
                      "merged version (own rows copied by the communication blocks), each kept for the comparison it made.")
    lines += _device_pack(root)
    lines += _group_m(root)
    lines += _b0_loop(root)
    lines += _one_machine_sets(root)
    lines += _machine(root, FINAL, "The fused layer on two GPUs, expert parallel: the kernels before merged tiles, on H100",
                      "The previous version of the kernels (every row tile one source's rows) on the issue's machine, "
                      "2× H100; the calibrated H100 profile and its validation were made from these runs.")
    lines += _copy_bandwidth(root.parent / "hardware")
    variants = _variants(root / FINAL / "variants", _load(root / FINAL / "history" / "torch_plan"))
    if variants:
        lines += ["## Variants tried and dropped (`ep2_h100/variants/`)", "",
                  "Software-pipelining the GEMMs across tiles (`--flatten`; with 128×128 or 128×256 layer1 tiles), "
                  "measured on the kernels of `history/torch_plan/` (the plan in torch ops, 128×128 layer1 tiles), beside "
                  "that version's default figures for the same configuration. (128×256 layer1 tiles without "
                  "`--flatten` were 20–30% faster and are the default now: `profile/`.)", ""] + variants
    first = _load(root / FINAL / "first_sweep")
    if first:
        lines += ["## The first sweep (`ep2_h100/first_sweep/`)", "",
                  "The same benchmark on the first device-side version (before own tiles were split from remote ones), "
                  "kept to show run-to-run spread:", ""] + _headline(first)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    return write_or_check(__doc__, ROOT / "README.md", render, "measurements_table.py")


if __name__ == "__main__":
    sys.exit(main())
