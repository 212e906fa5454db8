"""The CLI as a user meets it: tables, one JSON object, files, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from comet_dse.cli import main

SMALL = ["--model", "mixtral-8x7b", "--hardware", "h800", "--ep", "8", "--tokens", "512"]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_compares_the_three_schedules(capsys):
    code, out, err = run_cli(capsys, "simulate", *SMALL)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[1].split()[:2] == ["schedule", "latency"]
    assert [line.split()[0] for line in lines[2:5]] == ["sequential", "chunked", "comet"]
    assert lines[2].endswith("1.00x")


def test_json_is_one_object_with_the_documented_keys(capsys):
    code, out, _ = run_cli(capsys, "simulate", *SMALL, "--json", "--comm-blocks0", "8", "--comm-blocks1", "12")
    assert code == 0
    payload = json.loads(out)
    assert payload["workload"]["tokens"] == 512 and payload["workload"]["hardware"] == "h800"
    assert set(payload["results"]) == {"sequential", "chunked", "comet"}
    keys = {"latency_us", "layer0_us", "layer1_us", "compute_alone_us", "comm_alone_us", "exposed_comm_us", "comm_bound",
            "hidden_comm_fraction", "bubble_us", "params"}
    for result in payload["results"].values():
        assert keys <= set(result)
    assert payload["results"]["comet"]["params"]["comm_blocks0"] == 8
    assert payload["results"]["comet"]["params"]["comm_blocks1"] == 12


def test_same_seed_gives_identical_json(capsys):
    outs = [run_cli(capsys, "simulate", *SMALL, "--json", "--routing", "std:0.03", "--seed", "11")[1] for _ in range(2)]
    assert outs[0] == outs[1]


def test_trace_and_html_files(capsys, tmp_path):
    trace, html = tmp_path / "t.json", tmp_path / "t.html"
    code, out, _ = run_cli(capsys, "simulate", *SMALL, "--schedule", "comet", "--trace", str(trace), "--html", str(html))
    assert code == 0 and str(trace) in out
    events = json.loads(trace.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert {e["pid"] for e in slices} == set(range(8))  # pid = rank
    assert any(e["ph"] == "C" for e in events)
    # slices on one track nest or follow each other, never overlap partially
    by_track: dict = {}
    for e in slices:
        by_track.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_track.values():
        spans.sort()
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert s1 >= e0 - 1e-6 or e1 <= e0 + 1e-6
    text = html.read_text()
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js embedded: works offline
    assert 'src="http' not in text


# the table of bad inputs, one line and exit 2 each, is tests/comet_dse/test_bad_inputs.py


def test_bad_traces_and_configs(capsys, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((10, 3), dtype=np.int64))
    np.save(tmp_path / "range.npy", np.full((10, 2), 9, dtype=np.int64))
    (tmp_path / "config.json").write_text("{broken")
    for extra, message in ((["--routing", f"trace:{tmp_path / 'wide.npy'}"], "shape (10, 3)"),
                           (["--routing", f"trace:{tmp_path / 'range.npy'}"], "allowed [0, 7]"),
                           (["--model", str(tmp_path / "config.json")], "not valid JSON"),
                           (["--model", str(tmp_path / "missing.json")], "cannot read")):
        code, out, err = run_cli(capsys, "simulate", *SMALL, *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_console_script_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "comet_dse.cli", "simulate", "--ep", "3"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "comet-dse: error: --ep: must divide the model's 8 experts, got 3"


def test_identical_json_across_processes():
    """Same inputs and seed, same bytes, whatever the interpreter's hash seed or memory layout."""
    outs = []
    for hash_seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-m", "comet_dse.cli", "simulate", "--model", "deepseek-v3", "--ep", "16", "--tokens", "256",
             "--routing", "zipf:0.8", "--seed", "3", "--json"],
            capture_output=True, text=True, env={**__import__("os").environ, "PYTHONHASHSEED": hash_seed},
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert outs[0] == outs[1]


def test_layers_each_with_its_routing_and_their_sum(capsys, tmp_path):
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({"counts": [[1] * 8, [8, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 30]]}))
    small = ["--model", "mixtral-8x7b", "--hardware", "h800", "--ep", "8", "--tokens", "512", "--json"]
    code, out, _ = run_cli(capsys, "simulate", *small, "--routing", f"counts:{counts}", "--layers", "all")
    assert code == 0
    payload = json.loads(out)
    assert [entry["layer"] for entry in payload["layers"]] == [0, 1, 2]
    for entry in payload["layers"]:  # each row is the single-layer simulation of that layer
        code, single, _ = run_cli(capsys, "simulate", *small, "--routing", f"counts:{counts}#{entry['layer']}")
        assert json.loads(single)["results"] == entry["results"]
    for name, total in payload["total_latency_us"].items():
        assert total == round(sum(entry["results"][name]["latency_us"] for entry in payload["layers"]), 3)
    # the skewed layers are slower than the uniform one (their hot expert's rank is the straggler)
    latency = [entry["results"]["sequential"]["latency_us"] for entry in payload["layers"]]
    assert latency[0] < latency[1] < latency[2]
    code, table, _ = run_cli(capsys, "simulate", *small[:-1], "--routing", f"counts:{counts}", "--layers", "2,0")
    assert code == 0
    assert [line.split()[0] for line in table.splitlines()[2:5]] == ["2", "0", "sum"]


def test_profile_names_the_hot_spots_on_stderr_and_leaves_the_json_alone(capsys):
    small = ["--model", "mixtral-8x7b", "--hardware", "h800", "--ep", "8", "--tokens", "512", "--json"]
    code, plain, _ = run_cli(capsys, "simulate", *small)
    code, out, err = run_cli(capsys, "simulate", *small, "--profile")
    assert code == 0 and json.loads(out) == json.loads(plain)
    lines = err.splitlines()
    assert lines[0].startswith("hot spots: ") and len(lines) == 16
    assert any("network.py" in line or "comet.py" in line for line in lines[1:])  # the simulator's own code shows


def test_tp_dispatch_prices_comet_under_tp_as_the_fused_kernels_run_it(capsys):
    tp = ["--model", "mixtral-8x7b", "--hardware", "h800", "--ep", "2", "--tp", "4", "--tokens", "1024", "--schedule", "comet",
          "--json"]
    code, out, _ = run_cli(capsys, "simulate", *tp)
    tokens = json.loads(out)["results"]["comet"]
    code_rows, out, _ = run_cli(capsys, "simulate", *tp, "--tp-dispatch", "rows")
    rows = json.loads(out)["results"]["comet"]
    assert code == code_rows == 0 and rows["params"]["tp_dispatch"] == "rows" and "tp_dispatch" not in tokens["params"]
    assert rows["comm_alone_us"] > tokens["comm_alone_us"]  # top-2: two rows of a token per TP rank, two partials back
    code, _, err = run_cli(capsys, "simulate", *SMALL, "--tp-dispatch", "pairs")
    assert code == 2 and "--tp-dispatch" in err and "invalid choice" in err
    code, out, err = run_cli(capsys, "simulate", *SMALL, "--tp-dispatch", "rows")  # SMALL has no TP
    assert code == 2 and out == "" and err.strip().endswith("--tp-dispatch: rows needs --tp > 1: without TP every row moves "
                                                          "as a (token, expert) pair already")
