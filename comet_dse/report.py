"""The tuning report: one self-contained HTML file (plotly.js embedded, works offline).

Optimization history and parameter importances come from Optuna's own evaluators and
plots; the heatmaps and the per-bucket lines from the tuning results.
"""

from __future__ import annotations

import html
import warnings
from pathlib import Path

from comet_dse.files import write_text_atomic


def _figures(results, heatmaps: dict[int, dict], title: str) -> list[tuple[str, object]]:
    import optuna
    import plotly.graph_objects as go
    from optuna.visualization import plot_optimization_history

    studies = [r.study for r in results]
    multi = len(studies[0].directions) > 1
    history = plot_optimization_history(studies, target=(lambda t: t.values[0]) if multi else None,
                                        target_name="latency (µs)")
    history.update_layout(title="Optimization history (one study per token bucket)")

    importance = go.Figure()
    for r in results:
        trials = [t for t in r.study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        if len(trials) < 2:
            continue
        with warnings.catch_warnings():  # PED-ANOVA reminds that it ranks for low targets: ours are latencies
            warnings.simplefilter("ignore", UserWarning)
            scores = optuna.importance.get_param_importances(r.study, target=(lambda t: t.values[0]) if multi else None)
        importance.add_trace(go.Bar(name=f"{r.tokens} tokens", x=list(scores), y=list(scores.values())))
    importance.update_layout(title="Parameter importances (Optuna's evaluator), per token bucket", barmode="group",
                             yaxis_title="importance")

    figures = [("history", history), ("importance", importance)]
    for layer, data in sorted(heatmaps.items()):
        # each row relative to its own best, so the best block count of every bucket stands out
        relative = [[v / min(row) for v in row] for row in data["latency_us"]]
        heat = go.Figure(go.Heatmap(z=relative, x=[str(b) for b in data["blocks"]], y=[str(t) for t in data["tokens"]],
                                    customdata=data["latency_us"], colorscale="Viridis_r", zmax=1.5, zmin=1.0,
                                    hovertemplate="%{y} tokens, %{x} blocks: %{customdata:.1f} µs (%{z:.3f}x the best)<extra></extra>",
                                    colorbar={"title": "x best"}))
        heat.update_layout(title=f"Predicted latency, token count x communication blocks of layer{layer}, relative to each row's best "
                                 "(other knobs at the tuned best)",
                           xaxis_title=f"comm_blocks{layer}", yaxis_title="tokens per GPU")
        figures.append((f"heatmap{layer}", heat))

    tokens = [r.tokens for r in results]
    alloc = go.Figure()
    for layer in (0, 1):
        alloc.add_trace(go.Scatter(x=tokens, y=[r.best_params[f"comm_blocks{layer}"] for r in results], mode="lines+markers",
                                   name=f"comm_blocks{layer}"))
    alloc.update_layout(title="Best allocation vs token count", xaxis_type="log", xaxis_title="tokens per GPU",
                        yaxis_title="communication thread blocks")
    schedules = go.Figure()
    for name, values in (("sequential", [r.sequential_us for r in results]), ("chunked (best C)", [r.chunked["latency_us"] for r in results]),
                         ("comet (tuned)", [r.comet["latency_us"] for r in results])):
        schedules.add_trace(go.Scatter(x=tokens, y=values, mode="lines+markers", name=name))
    schedules.update_layout(title="Predicted layer latency of the three schedules", xaxis_type="log", yaxis_type="log",
                            xaxis_title="tokens per GPU", yaxis_title="latency (µs)")
    figures += [("allocation", alloc), ("schedules", schedules)]
    if multi:
        from optuna.visualization import plot_pareto_front

        largest = studies[-1]
        pareto = plot_pareto_front(largest, target_names=["latency (µs)", "comm SMs"])
        pareto.update_layout(title=f"Pareto front, {results[-1].tokens} tokens")
        figures.append(("pareto", pareto))
    return figures


def report_html(results, heatmaps: dict[int, dict], title: str, summary_rows: list[list[str]]) -> str:
    """The whole report as one HTML string (tune writes it together with its plan)."""
    from plotly.offline import get_plotlyjs

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1><table>",
    ]
    for i, row in enumerate(summary_rows):
        cell = "th" if i == 0 else "td"
        parts.append("<tr>" + "".join(f"<{cell}>{html.escape(c)}</{cell}>" for c in row) + "</tr>")
    parts.append("</table>")
    for name, fig in _figures(results, heatmaps, title):
        parts.append(f"<h2 id='{name}'></h2>" + fig.to_html(full_html=False, include_plotlyjs=False, div_id=name))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results, heatmaps: dict[int, dict], path: str | Path, title: str, summary_rows: list[list[str]]) -> Path:
    return write_text_atomic(path, report_html(results, heatmaps, title, summary_rows))
