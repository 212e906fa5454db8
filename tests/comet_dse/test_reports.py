"""Reports a person reads: the tune report's sections keep their titles, the history is on a
log axis, and the simulator's timeline HTML stays small at 64 ranks with its time axis on top."""

from __future__ import annotations

import gzip
import json
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import optuna

from comet_dse.cli import main
from comet_dse.report import _figures, report_html
from comet_dse.plotly_page import B85_ALPHABET as _B85
from comet_dse.plotly_page import packed_plotlyjs as _packed_plotlyjs


class Sections(HTMLParser):
    """Every element id, and the text of every <h2> by its id."""

    def __init__(self):
        super().__init__()
        self.ids: list[str] = []
        self.headings: dict[str, str] = {}
        self._h2: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "h2":
            self._h2 = attrs.get("id", "")
            self.headings[self._h2] = ""

    def handle_endtag(self, tag):
        if tag == "h2":
            self._h2 = None

    def handle_data(self, data):
        if self._h2 is not None:
            self.headings[self._h2] += data


def fake_results():
    """Two buckets of latencies 100x apart, as tune hands them to the report."""
    results = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for tokens, scale in ((1024, 10.0), (32768, 1000.0)):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t: scale * (1 + abs(t.suggest_int("comm_blocks0", 1, 64) - 20) / 64
                                          + abs(t.suggest_int("comm_blocks1", 1, 64) - 12) / 64), n_trials=8)
        results.append(SimpleNamespace(study=study, tokens=tokens, best_params=study.best_params, sequential_us=3 * scale,
                                       chunked={"latency_us": 2 * scale}, comet={"latency_us": study.best_value}))
    heatmaps = {layer: {"blocks": [8, 16, 32], "tokens": [1024, 32768], "latency_us": [[12.0, 11.0, 13.0], [1200.0, 1100.0, 1000.0]]}
                for layer in (0, 1)}
    return results, heatmaps


def test_report_sections_keep_their_headings_and_the_history_is_log():
    results, heatmaps = fake_results()
    text = report_html(results, heatmaps, "example", [["tokens", "µs"], ["1024", "10"]])
    assert len(text.encode()) < 2_500_000 and 'src="http' not in text  # plotly.js packed inside, nothing fetched
    for name in ("history", "importance", "allocation"):  # every plot is drawn into its own div
        assert f'draw("{name}-plot", ' in text
    parsed = Sections()
    parsed.feed(text)
    assert len(parsed.ids) == len(set(parsed.ids))  # no heading shares its id with a plot
    names = ["history", "importance", "heatmap0", "heatmap1", "allocation", "schedules"]
    for name in names:
        assert f"{name}-title" in parsed.headings and f"{name}-plot" in parsed.ids
    titles = [parsed.headings[f"{name}-title"].strip() for name in names]
    assert all(titles) and len(set(titles)) == len(titles)
    assert "Optimization history" in titles[0]
    figures = {name: fig for name, _, fig in _figures(results, heatmaps)}
    assert figures["history"].layout.yaxis.type == "log"
    # the per-bucket dropdown: every bucket, then one button per bucket showing only its traces
    buttons = figures["history"].layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["every bucket", "1024 tokens", "32768 tokens"]
    assert buttons[1].args[0]["visible"] == [t.legendgroup == "1024" for t in figures["history"].data]


def test_timeline_html_at_64_ranks_is_small_with_the_time_axis_on_top(tmp_path, capsys):
    path = tmp_path / "t.html"
    args = ["simulate", "--model", "qwen2-moe-2.7b", "--hardware", "h800", "--ep", "64", "--tokens", "64"]
    assert main([*args, "--html", str(path)]) == 0
    text = path.read_text()
    assert len(text.encode()) < 2_000_000 and 'src="http' not in text
    figure = json.loads(re.search(r'draw\("timeline", (.*)\);\n', text).group(1))
    layout = figure["layout"]
    assert layout["xaxis"]["side"] == "top" and layout["xaxis"]["showticklabels"]
    heat = [t for t in figure["data"] if t["type"] == "heatmap"]
    assert len(heat) == 3 and all(t["z"]["shape"].replace(" ", "") == "64,160" for t in heat)  # every rank, per schedule
    ticks = [t for axis in layout.values() if isinstance(axis, dict) for t in axis.get("ticktext", [])]
    assert any("(slowest" in t for t in ticks) and any(t.startswith("rank 0") for t in ticks)
    assert {int(m) for m in re.findall(r"rank (\d+)", " ".join(ticks))} <= set(range(64))
    # plotly.js is inside, packed: base85 over our alphabet, then gzip, gives it back whole
    from plotly.offline import get_plotlyjs

    packed, size = _packed_plotlyjs()
    assert packed in text
    digits = [_B85.index(c) for c in packed]
    data = b"".join(sum(d * 85 ** (4 - i) for i, d in enumerate(digits[k:k + 5])).to_bytes(4, "big")
                    for k in range(0, len(digits), 5))[:size]
    assert gzip.decompress(data).decode() == get_plotlyjs()
    # chosen ranks: out of range is one line and exit 2
    assert main([*args, "--html", str(path), "--html-ranks", "slowest,64"]) == 2
    assert "--html-ranks" in capsys.readouterr().err


def test_a_figure_cannot_close_the_page_script():
    from comet_dse.plotly_page import plotly_page

    text = plotly_page("t", '<div id="a"></div>', {"a": json.dumps({"data": [], "layout": {"title": "</script><b>x"}})})
    assert "</script><b>" not in text
    drawn = re.search(r'draw\("a", (.*)\);\n', text).group(1)
    assert json.loads(drawn)["layout"]["title"] == "</script><b>x"  # the browser reads back the same title
