"""Timelines out: Chrome trace JSON (Perfetto, chrome://tracing) and a Plotly HTML timeline.

Trace: `ts`/`dur` in microseconds, pid = rank, one tid per (schedule, role), so a track's
slices never overlap; busy compute blocks as counter tracks. HTML: horizontal `go.Bar`
with `base=` (px.timeline would read numeric times as dates).
"""

from __future__ import annotations

import json
from pathlib import Path

from comet_dse.sim.result import Result

from comet_dse.files import write_text_atomic

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


def timeline_figure(results: list[Result]):
    import plotly.graph_objects as go  # imported here: the kernels' machines have no plotly

    by_category: dict[str, dict[str, list]] = {}
    rows: list[str] = []
    for result in results:
        keyed = sorted({(s.rank, s.role) for s in result.timeline.slices}, key=lambda x: (x[0], _role_key(x[1])))
        rows.extend(f"{result.schedule} · rank {r} · {role}" for r, role in keyed)
        for s in result.timeline.slices:
            category = "wait" if s.name.startswith("wait") else s.role.split(" ")[0]
            bucket = by_category.setdefault(category, {"y": [], "base": [], "x": [], "text": []})
            bucket["y"].append(f"{result.schedule} · rank {s.rank} · {s.role}")
            bucket["base"].append(s.start_ns / 1e3)
            bucket["x"].append(max(0.0, s.end_ns - s.start_ns) / 1e3)
            bucket["text"].append(f"{s.name}<br>{s.start_ns / 1e3:.1f} - {s.end_ns / 1e3:.1f} µs")
    fig = go.Figure()
    for category, b in by_category.items():
        fig.add_trace(go.Bar(name=category, orientation="h", y=b["y"], base=b["base"], x=b["x"],
                             hovertext=b["text"], hoverinfo="text"))
    fig.update_layout(
        barmode="overlay", title="comet-dse timeline (all ranks)", xaxis_title="time (µs)",
        height=max(400, 18 * len(rows) + 150),
        yaxis={"categoryorder": "array", "categoryarray": rows[::-1], "automargin": True},
    )
    return fig


def write_timeline_html(results: list[Result], path: str | Path) -> None:
    html = timeline_figure(results).to_html(include_plotlyjs=True, full_html=True)  # works offline
    write_text_atomic(path, html)
