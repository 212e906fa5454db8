"""The tuning report: one self-contained HTML file (plotly.js embedded, works offline).

Optimization history and parameter importances come from Optuna's own evaluators and
plots; the heatmaps and the per-bucket lines from the tuning results. Every section is a
heading (`<h2 id="NAME-title">`) above its plot (`<div id="NAME-plot">`): distinct ids, so
Plotly draws into the div and the heading keeps its text. Plots that hold every bucket
(history, importances) carry a dropdown that shows one bucket at a time.
"""

from __future__ import annotations

import html
import warnings
from pathlib import Path

from comet_dse.files import write_text_atomic


def _bucket_menu(fig, buckets: list[int | None], tokens: list[int]) -> None:
    """A dropdown over the figure: every bucket, or one; `buckets[i]` is trace i's bucket."""
    buttons = [{"label": "every bucket", "method": "update", "args": [{"visible": [True] * len(buckets)}]}]
    for t in tokens:
        buttons.append({"label": f"{t} tokens", "method": "update",
                        "args": [{"visible": [b is None or b == t for b in buckets]}]})
    fig.update_layout(updatemenus=[{"buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left",
                                    "y": 1.12, "yanchor": "bottom", "showactive": True}])


def _figures(results, heatmaps: dict[int, dict]) -> list[tuple[str, str, object]]:
    """(id, heading, figure) of every section, in order."""
    import optuna
    import plotly.graph_objects as go
    from optuna.visualization import plot_optimization_history

    tokens = [r.tokens for r in results]
    multi = len(results[0].study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None

    # one Optuna history per bucket, gathered in one figure; log latency, or the small buckets lie flat at 0
    history, history_buckets = go.Figure(), []
    for r in results:
        for trace in plot_optimization_history(r.study, target=target, target_name="latency (µs)").data:
            trace.update(name=f"{r.tokens} tokens: {trace.name}", legendgroup=str(r.tokens))
            history.add_trace(trace)
            history_buckets.append(r.tokens)
    history.update_layout(xaxis_title="trial", yaxis_title="latency (µs)", yaxis_type="log")
    _bucket_menu(history, history_buckets, tokens)

    importance, importance_buckets = go.Figure(), []
    for r in results:
        trials = [t for t in r.study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        if len(trials) < 2:
            continue
        with warnings.catch_warnings():  # PED-ANOVA reminds that it ranks for low targets: ours are latencies
            warnings.simplefilter("ignore", UserWarning)
            scores = optuna.importance.get_param_importances(r.study, target=target)
        importance.add_trace(go.Bar(name=f"{r.tokens} tokens", x=list(scores), y=list(scores.values())))
        importance_buckets.append(r.tokens)
    importance.update_layout(barmode="group", yaxis_title="importance")
    _bucket_menu(importance, importance_buckets, importance_buckets)

    figures = [("history", "Optimization history, one study per token bucket (log latency)", history),
               ("importance", "Parameter importances (Optuna's evaluator), per token bucket", importance)]
    for layer, data in sorted(heatmaps.items()):
        # each row relative to its own best, so the best block count of every bucket stands out
        relative = [[v / min(row) for v in row] for row in data["latency_us"]]
        heat = go.Figure(go.Heatmap(z=relative, x=[str(b) for b in data["blocks"]], y=[str(t) for t in data["tokens"]],
                                    customdata=data["latency_us"], colorscale="Viridis_r", zmax=1.5, zmin=1.0,
                                    hovertemplate="%{y} tokens, %{x} blocks: %{customdata:.1f} µs (%{z:.3f}x the best)<extra></extra>",
                                    colorbar={"title": "x best"}))
        heat.update_layout(xaxis_title=f"comm_blocks{layer}", yaxis_title="tokens per GPU")
        figures.append((f"heatmap{layer}", f"Predicted latency, token count x communication blocks of layer{layer}, "
                                           "relative to each row's best (other knobs at the tuned best)", heat))

    alloc = go.Figure()
    for layer in (0, 1):
        alloc.add_trace(go.Scatter(x=tokens, y=[r.best_params[f"comm_blocks{layer}"] for r in results], mode="lines+markers",
                                   name=f"comm_blocks{layer}"))
    alloc.update_layout(xaxis_type="log", xaxis_title="tokens per GPU", yaxis_title="communication thread blocks")
    schedules = go.Figure()
    for name, values in (("sequential", [r.sequential_us for r in results]), ("chunked (best C)", [r.chunked["latency_us"] for r in results]),
                         ("comet (tuned)", [r.comet["latency_us"] for r in results])):
        schedules.add_trace(go.Scatter(x=tokens, y=values, mode="lines+markers", name=name))
    schedules.update_layout(xaxis_type="log", yaxis_type="log", xaxis_title="tokens per GPU", yaxis_title="latency (µs)")
    figures += [("allocation", "Best allocation vs token count", alloc),
                ("schedules", "Predicted layer latency of the three schedules", schedules)]
    if multi:
        from optuna.visualization import plot_pareto_front

        pareto = plot_pareto_front(results[-1].study, target_names=["latency (µs)", "comm SMs"])
        pareto.update_layout(title=None)
        figures.append(("pareto", f"Pareto front, {results[-1].tokens} tokens", pareto))
    return figures


def html_page(title: str, summary_rows: list[list[str]], figures: list[tuple[str, str, object]], notes: str = "") -> str:
    """One self-contained page (comet_dse/plotly_page.py): the title, a summary table (first row the
    header), optional notes (HTML), then each (id, heading, plotly figure) as a heading above its plot."""
    from comet_dse.plotly_page import plotly_page

    parts = [f"<h1>{html.escape(title)}</h1><table>"]
    for i, row in enumerate(summary_rows):
        cell = "th" if i == 0 else "td"
        parts.append("<tr>" + "".join(f"<{cell}>{html.escape(c)}</{cell}>" for c in row) + "</tr>")
    parts.append("</table>" + notes)
    drawn = {}
    for name, heading, fig in figures:
        fig.update_layout(margin={"t": 60})
        parts.append(f"<h2 id='{name}-title'>{html.escape(heading)}</h2><div id='{name}-plot'></div>")
        drawn[f"{name}-plot"] = fig.to_json()
    style = "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style>"
    return plotly_page(html.escape(title), "\n".join(parts), drawn, head=style)


def report_html(results, heatmaps: dict[int, dict], title: str, summary_rows: list[list[str]]) -> str:
    """The whole report as one HTML string (tune writes it together with its plan)."""
    return html_page(title, summary_rows, _figures(results, heatmaps))


def write_report(results, heatmaps: dict[int, dict], path: str | Path, title: str, summary_rows: list[list[str]]) -> Path:
    return write_text_atomic(path, report_html(results, heatmaps, title, summary_rows))
