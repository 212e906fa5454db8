"""Timelines out: Chrome trace JSON (Perfetto, chrome://tracing) and a Plotly HTML timeline.

Trace: `ts`/`dur` in microseconds, pid = rank, one tid per (schedule, role), so a track's
slices never overlap; busy compute blocks as counter tracks. The trace keeps every rank.

HTML: a reader cannot scan 64 ranks of tracks, so per schedule it shows a heat strip of
every rank (compute busy fraction over time) and the tracks of a few ranks only (by default
the slowest, the fastest and rank 0), as horizontal `go.Bar` with `base=` (px.timeline
would read numeric times as dates), the time axis on top and at the bottom. It stays
self-contained and small: plotly.js (4.8 MB) is embedded gzip-compressed and base85-encoded
(1.8 MB), unpacked by the browser's `DecompressionStream`, and arrays travel as
plotly's typed arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from comet_dse.sim.result import Result

from comet_dse.files import write_text_atomic
from comet_dse.plotly_page import plotly_page

ROLE_ORDER = ("layer", "stream", "host", "comm", "compute")


def _role_key(role: str) -> tuple[int, str]:
    head = role.split(" ")[0]
    for i, prefix in enumerate(ROLE_ORDER):
        if head.startswith(prefix):
            return i, role
    return len(ROLE_ORDER), role


def chrome_trace(results: list[Result]) -> dict:
    events: list[dict] = []
    tids: dict[tuple[int, str], int] = {}
    ranks: set[int] = set()
    for result in results:
        roles = sorted({(s.rank, s.role) for s in result.timeline.slices}, key=lambda x: (x[0], _role_key(x[1])))
        for rank, role in roles:
            tid = tids.setdefault((rank, f"{result.schedule} · {role}"), len(tids) + 1)
            ranks.add(rank)
            events.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "args": {"name": f"{result.schedule} · {role}"}})
            events.append({"ph": "M", "name": "thread_sort_index", "pid": rank, "tid": tid, "args": {"sort_index": tid}})
        for s in result.timeline.slices:
            events.append({
                "ph": "X", "name": s.name, "cat": result.schedule, "pid": s.rank,
                "tid": tids[(s.rank, f"{result.schedule} · {s.role}")],
                "ts": s.start_ns / 1e3, "dur": max(0.0, s.end_ns - s.start_ns) / 1e3, "args": s.args,
            })
        for c in result.timeline.counters:
            ranks.add(c.rank)
            name = f"{result.schedule} · {c.name}"
            events.extend({"ph": "C", "name": name, "pid": c.rank, "ts": float(t) / 1e3, "args": {"blocks": float(v)}}
                          for t, v in zip(c.times_ns, c.values))
    for rank in sorted(ranks):
        events.append({"ph": "M", "name": "process_name", "pid": rank, "args": {"name": f"rank {rank}"}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": rank, "args": {"sort_index": rank}})
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def write_chrome_trace(results: list[Result], path: str | Path) -> None:
    write_text_atomic(path, json.dumps(chrome_trace(results)))


DEFAULT_HTML_RANKS = ("slowest", "fastest", "0")
HEAT_BINS = 160  # time bins of the heat strip
CATEGORY_COLORS = {"layer": "#7f7f7f", "stream": "#8c564b", "host": "#e377c2", "comm": "#1f77b4", "compute": "#2ca02c",
                   "wait": "#d62728"}


def parse_html_ranks(text: str, world: int) -> tuple[str, ...]:
    """`slowest,fastest,0` -> ("slowest", "fastest", "0"); ranks checked against the world size."""
    from comet_dse.errors import UserError

    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise UserError("--html-ranks", "give at least one rank, 'slowest' or 'fastest'")
    for item in items:
        if item in ("slowest", "fastest"):
            continue
        if not item.isdigit() or int(item) >= world:
            raise UserError("--html-ranks", f"ranks are 'slowest', 'fastest' or integers in [0, {world - 1}], got {item!r}")
    return items


def _chosen_ranks(result: Result, chosen: tuple[str, ...]) -> list[tuple[int, str]]:
    """(rank, label) of the ranks whose tracks are drawn, in the order asked, each once."""
    fastest = min(result.per_rank, key=lambda r: (r.latency_us, r.rank)).rank if result.per_rank else 0
    named = {"slowest": result.params.get("slowest_rank", 0), "fastest": fastest}
    ranks: dict[int, list[str]] = {}
    for item in chosen:
        rank = named[item] if item in named else int(item)
        ranks.setdefault(rank, [])
        if item in named:
            ranks[rank].append(item)
    return [(rank, f"rank {rank}" + (f" ({', '.join(tags)})" if tags else "")) for rank, tags in ranks.items()]


def busy_heat(result: Result, end_ns: float, bins: int = HEAT_BINS) -> np.ndarray:
    """(ranks, bins) uint8 percent: the fraction of compute blocks busy in each time bin where the
    schedule records busy blocks (comet), else the fraction of the bin a GEMM kernel runs."""
    world = max([r.rank for r in result.per_rank] + [s.rank for s in result.timeline.slices] + [0]) + 1
    edges = np.linspace(0.0, max(end_ns, 1.0), bins + 1)
    heat = np.zeros((world, bins))
    counters: dict[int, list] = {}
    for c in result.timeline.counters:
        counters.setdefault(c.rank, []).append(c)
    if counters:
        # the step functions sampled at 8 points per bin, summed over a rank's kernels, averaged per bin
        points = (edges[:-1, None] + (np.arange(8) + 0.5)[None, :] / 8 * (edges[1] - edges[0])).ravel()
        for rank, series in counters.items():
            level = np.zeros(len(points))
            for c in series:
                at = np.searchsorted(c.times_ns, points, side="right") - 1
                level += np.where(at >= 0, np.asarray(c.values, dtype=float)[np.maximum(at, 0)], 0.0)
            heat[rank] = level.reshape(bins, 8).mean(axis=1)
        heat /= max(heat.max(), 1e-12)
    else:
        width = edges[1] - edges[0]
        for s in result.timeline.slices:
            if s.role == "compute":
                heat[s.rank] += np.clip(np.minimum(s.end_ns, edges[1:]) - np.maximum(s.start_ns, edges[:-1]), 0.0, None) / width
    return np.round(100 * np.clip(heat, 0.0, 1.0)).astype(np.uint8)


def timeline_figure(results: list[Result], ranks: tuple[str, ...] = DEFAULT_HTML_RANKS):
    import plotly.graph_objects as go  # imported here: the kernels' machines have no plotly
    from plotly.subplots import make_subplots

    end_ns = max([s.end_ns for r in results for s in r.timeline.slices] + [1.0])
    tracks = []  # per schedule: (row labels, {category: slices})
    for result in results:
        labels: list[str] = []
        by_category: dict[str, dict[str, list]] = {}
        for rank, label in _chosen_ranks(result, ranks):
            own = [s for s in result.timeline.slices if s.rank == rank]
            roles = sorted({s.role for s in own}, key=_role_key)
            row = {role: len(labels) + i for i, role in enumerate(roles)}
            labels.extend(f"{label} · {role}" for role in roles)
            for s in own:
                category = "wait" if s.name.startswith("wait") else s.role.split(" ")[0]
                b = by_category.setdefault(category, {"y": [], "base": [], "x": [], "end": [], "text": []})
                b["y"].append(row[s.role])
                b["base"].append(s.start_ns / 1e3)
                b["x"].append(max(0.0, s.end_ns - s.start_ns) / 1e3)
                b["end"].append(s.end_ns / 1e3)
                b["text"].append(s.name)
        tracks.append((labels, by_category))

    heights = [h for labels, _ in tracks for h in (140, max(60, 16 * len(labels)))]
    titles = [t for r in results for t in (f"{r.schedule}: compute busy, every rank", f"{r.schedule}: tracks of chosen ranks")]
    fig = make_subplots(rows=len(heights), cols=1, shared_xaxes=True, row_heights=heights, subplot_titles=titles,
                        vertical_spacing=min(0.06, 0.3 / len(heights)))
    shown: set[str] = set()
    for i, (result, (labels, by_category)) in enumerate(zip(results, tracks)):
        heat = busy_heat(result, end_ns)
        width_us = end_ns / HEAT_BINS / 1e3
        fig.add_trace(go.Heatmap(z=heat, x0=width_us / 2, dx=width_us, colorscale="Viridis",
                                 zmin=0, zmax=100, showscale=i == 0,
                                 colorbar={"title": "busy %", "len": 0.25, "y": 1.0, "yanchor": "top"},
                                 hovertemplate="rank %{y}, %{x:.0f} µs: %{z}% busy<extra>" + result.schedule + "</extra>"),
                      row=2 * i + 1, col=1)
        fig.update_yaxes(title_text="rank", autorange="reversed", row=2 * i + 1, col=1)
        for category, b in by_category.items():
            # width in rows: plotly would size each trace's bars by its own y spacing (one role every few rows)
            fig.add_trace(go.Bar(name=category, legendgroup=category, showlegend=category not in shown, orientation="h", width=0.8,
                                 y=np.array(b["y"], dtype=np.uint16), base=np.round(b["base"], 2).tolist(),  # base: no typed array
                                 x=np.array(b["x"], dtype=np.float32), hovertext=b["text"],
                                 customdata=np.array(b["end"], dtype=np.float32),
                                 hovertemplate="%{hovertext}<br>ends %{customdata:.1f} µs, %{x:.1f} µs long<extra>"
                                               + result.schedule + "</extra>",
                                 marker_color=CATEGORY_COLORS.get(category.rstrip("01"))),
                          row=2 * i + 2, col=1)
            shown.add(category)
        fig.update_yaxes(tickvals=list(range(len(labels))), ticktext=labels, autorange="reversed", automargin=True,
                         row=2 * i + 2, col=1)
    height = sum(heights) + 60 * len(heights) + 160
    fig.update_layout(barmode="overlay", template="none", plot_bgcolor="white",  # template "none": 7 kB less
                      height=height, title={"text": "comet-dse timeline", "y": 0.995, "yanchor": "top"}, margin={"t": 140},
                      # above the top time axis and the first subplot's title, not over them
                      legend={"orientation": "h", "y": 1.0 + 70 / height, "yanchor": "bottom", "x": 0.0, "xanchor": "left"})
    fig.layout.annotations[0].yshift = 22  # the first subplot's title clears the top axis's tick labels
    fig.update_xaxes(showgrid=True, gridcolor="#e5e5e5", zeroline=False)
    # the time axis readable at the top as well as at the bottom
    fig.update_xaxes(showticklabels=True, row=1, col=1, side="top", ticksuffix=" µs")
    fig.update_xaxes(showticklabels=True, row=len(heights), col=1, title_text="time (µs)")
    return fig


def timeline_html(results: list[Result], ranks: tuple[str, ...] = DEFAULT_HTML_RANKS) -> str:
    body = '<div id="timeline" style="width:100%"></div>'
    return plotly_page("comet-dse timeline", body, {"timeline": timeline_figure(results, ranks).to_json()})


def write_timeline_html(results: list[Result], path: str | Path, ranks: tuple[str, ...] = DEFAULT_HTML_RANKS) -> None:
    write_text_atomic(path, timeline_html(results, ranks))
