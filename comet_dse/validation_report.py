"""`comet-dse validate`'s HTML report: predicted against measured, one self-contained page.

Sections: every point against y = x (log axes, one colour per schedule); the signed error of
every point by model and token count; each comet sweep across communication blocks, predicted
and measured side by side (a dropdown picks the sweep); the sweeps' Spearman and regret; the fused
layer's kernels alone where bench timed them.
"""

from __future__ import annotations

import html

from comet_dse.report import html_page
from comet_dse.validation import config_text, sweep_knobs


def _ok(points: list[dict]) -> list[dict]:
    return [p for p in points if p["status"] == "ok"]


def _parity(report: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    every = [v for s in report["schedules"].values() for p in _ok(s["points"]) for v in (p["predicted_us"], p["measured_us"])]
    for name, s in report["schedules"].items():
        ok = _ok(s["points"])
        fig.add_trace(go.Scatter(
            x=[p["measured_us"] for p in ok], y=[p["predicted_us"] for p in ok], mode="markers", name=name,
            text=[f"{p['model']}, {p['tokens']} tokens, {config_text(p)}: {p['error_pct']:+.1f}%" for p in ok],
            hovertemplate="%{text}<br>measured %{x:.0f} µs, predicted %{y:.0f} µs<extra></extra>"))
    if every:
        low, high = min(every) * 0.9, max(every) * 1.1
        fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="y = x", line={"dash": "dot", "color": "gray"}))
    fig.update_layout(xaxis_type="log", yaxis_type="log", xaxis_title="measured (µs)", yaxis_title="predicted (µs)")
    return fig


def _errors(report: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, s in report["schedules"].items():
        ok = _ok(s["points"])
        fig.add_trace(go.Box(
            x=[f"{p['model']} {p['tokens']}" for p in ok], y=[p["error_pct"] for p in ok], name=name, boxpoints="all",
            text=[config_text(p) for p in ok], hovertemplate="%{x}, %{text}: %{y:+.1f}%<extra></extra>"))
    fig.update_layout(boxmode="group", yaxis_title="(predicted − measured) / measured, %", xaxis_title="model, tokens per GPU")
    fig.add_hline(y=0, line_color="gray")
    return fig


def _sweep_lines(report: dict):
    """Each sweep's predicted and measured latency over its configurations; a dropdown shows one."""
    import plotly.graph_objects as go

    comet = _ok(report["schedules"].get("comet", {}).get("points", []))
    fig, owners = go.Figure(), []
    for i, s in enumerate(report["sweeps"]):
        points = sorted((p for p in comet if p["source"] == s["source"] and p["tokens"] == s["tokens"]
                         and sweep_knobs(p["config"]) == s["knobs"]), key=lambda p: p["config"]["comm_blocks0"])
        x = [config_text(p, blocks_only=True) for p in points]
        name = f"{s['model']} {s['tokens']}"
        for kind in ("measured_us", "predicted_us"):
            fig.add_trace(go.Scatter(x=x, y=[p[kind] for p in points], mode="lines+markers", visible=i == 0,
                                     name=f"{name}: {kind.removesuffix('_us')}"))
            owners.append(i)
    buttons = [{"label": f"{s['model']} {s['tokens']} (ρ {_num(s['spearman'], '+.2f')}, regret {_num(s['regret_pct'], '.1f')}%)",
                "method": "update", "args": [{"visible": [o == i for o in owners]}]} for i, s in enumerate(report["sweeps"])]
    fig.update_layout(updatemenus=[{"buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left", "y": 1.12,
                                    "yanchor": "bottom"}] if buttons else [],
                      xaxis_title="communication blocks (layer0/layer1; 0 = copy engine)", yaxis_title="latency (µs)")
    return fig


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def validation_html(report: dict) -> str:
    title = f"comet-dse validate: {report['profile']} against {report['gpus']}x {report['gpu']}"
    rows = [["schedule", "points", "MAPE", "mean error", "min", "max", "skipped", "held-out models (MAPE)"]]
    for name, s in report["schedules"].items():
        held = ", ".join(f"{m} {_num(v['mape_pct'], '.1f')}%" for m, v in s.get("by_model", {}).items() if v["held_out"])
        rows.append([name, str(s["n"]), f"{_num(s['mape_pct'], '.1f')}%", f"{_num(s['mean_error_pct'], '+.1f')}%",
                     f"{_num(s['min_error_pct'], '+.1f')}%", f"{_num(s['max_error_pct'], '+.1f')}%", str(s["skipped"]), held or "–"])
    t = report["sweeps_summary"]
    notes = (f"<p>Command: <code>{html.escape(report['command'])}</code>. Routing {html.escape(str(report['routing']))}, "
             f"seed {report['seed']}, cost model version {report['cost_model_version']}. Comet sweeps across communication "
             f"blocks: {t['n']}, mean Spearman {_num(t['mean_spearman'], '+.2f')} (min {_num(t['min_spearman'], '+.2f')}), "
             f"regret of the simulator's pick mean {_num(t['mean_regret_pct'], '.1f')}%, max {_num(t['max_regret_pct'], '.1f')}%"
             + (f"; over the {f['n']} full sweeps (6 or more block counts) mean Spearman {_num(f['mean_spearman'], '+.2f')}, "
                f"regret max {_num(f['max_regret_pct'], '.1f')}%" if (f := report.get("full_sweeps_summary")) else "")
             + ".</p>")
    if report.get("repeated_points"):
        median_rows = "".join(
            f"<tr><td>{name}</td><td>{s['n']}</td><td>&ge; {s['min_repeats']}</td><td>{_num(s['mape_pct'], '.1f')}%</td>"
            f"<td>{_num(s['mean_error_pct'], '+.1f')}%</td><td>{_num(s['median_noise_pct'], '.1f')}%</td>"
            f"<td>{_num(s['max_noise_pct'], '.1f')}%</td></tr>" for name, s in report["repeated_points"].items())
        notes += ("<h2 id='medians-title'>Points measured more than once: errors against their medians</h2>"
                  "<p>Run-to-run noise (slowest over fastest repeat of a point) left out of the error.</p><table><tr>"
                  "<th>schedule</th><th>points</th><th>repeats</th><th>MAPE</th><th>mean error</th><th>noise median</th>"
                  f"<th>noise max</th></tr>{median_rows}</table>")
    sweep_rows = "".join(
        f"<tr><td>{html.escape(s['model'])}</td><td>{s['tokens']}</td><td>{s['n']}</td><td>{_num(s['spearman'], '+.2f')}</td>"
        f"<td>{_num(s['regret_pct'], '.1f')}%</td><td>{'/'.join(map(str, s['predicted_best']))}</td>"
        f"<td>{'/'.join(map(str, s['measured_best']))}</td><td>{_num(s['measured_spread_pct'], '.1f')}%</td></tr>"
        for s in report["sweeps"])
    notes += ("<h2 id='sweeps-title'>Comet sweeps: rank correlation and regret</h2><table><tr><th>model</th><th>tokens</th>"
              "<th>points</th><th>Spearman</th><th>regret</th><th>predicted best</th><th>measured best</th>"
              f"<th>measured spread</th></tr>{sweep_rows}</table>")
    if report.get("repeated_sweeps"):
        repeated_rows = "".join(
            f"<tr><td>{html.escape(s['model'])}</td><td>{s['ep']}x{s['tp']}</td><td>{s['tokens']}</td>"
            f"<td>{html.escape(str(s['knobs'].get('tile_order', '-')))}</td><td>{s['repeats']}</td>"
            f"<td>{_num(s['spearman'], '+.2f')}</td><td>{_num(s['regret_pct'], '.1f')}%</td>"
            f"<td>{'/'.join(map(str, s['predicted_best']))}</td><td>{'/'.join(map(str, s['measured_best']))}</td>"
            f"<td>{_num(s['measured_spread_pct'], '.1f')}%</td><td>{_num(s['noise_pct'], '.1f')}%</td>"
            f"<td>{'yes' if s['beyond_noise'] else 'no (within noise)'}</td></tr>"
            for s in report["repeated_sweeps"])
        notes += ("<h2 id='repeats-title'>Sweeps measured more than once: medians of the repeats</h2>"
                  "<p>Noise: the slowest over the fastest repeat of one setting. Where the medians' spread is within it, "
                  "the hardware cannot rank the settings.</p><table><tr><th>model</th><th>EP x TP</th><th>tokens</th>"
                  "<th>tile order</th><th>repeats</th><th>Spearman</th><th>regret</th><th>predicted best</th>"
                  "<th>measured best</th><th>spread</th><th>noise</th><th>ranked</th></tr>"
                  f"{repeated_rows}</table>")
    if report.get("kernels"):
        kernel_rows = "".join(
            f"<tr><td>{name}</td><td>{html.escape(p['model'])}</td><td>{p['tokens']}</td>"
            f"<td>{html.escape(config_text(p, blocks_only=True))}</td><td>{k['predicted_us']:.0f}</td>"
            f"<td>{k['measured_us']:.0f}</td><td>{k['error_pct']:+.1f}%</td></tr>"
            for p in report["schedules"]["comet"]["points"] for name, k in p.get("kernels", {}).items())
        summary = "; ".join(f"{name}: {k['n']} points, MAPE {k['mape_pct']:.1f}%, mean {k['mean_error_pct']:+.1f}%"
                            for name, k in report["kernels"].items())
        notes += ("<h2 id='kernels-title'>The fused layer's kernels alone</h2><p>bench's per-layer figures (each "
                  f"kernel launched alone behind a device spin, launch to end) against the simulator's spans: {summary}.</p>"
                  "<table><tr><th>kernel</th><th>model</th><th>tokens</th><th>blocks</th><th>predicted µs</th>"
                  f"<th>measured µs</th><th>error</th></tr>{kernel_rows}</table>")
    figures = [("parity", "Predicted against measured, every point (y = x: exact)", _parity(report)),
               ("errors", "Signed error by model and token count", _errors(report)),
               ("sweep", "Comet across communication blocks, predicted and measured (one sweep at a time)", _sweep_lines(report))]
    return html_page(title, rows, figures, notes)
