"""Every bad input of issue 9 (and the older simulate table) fails before any work: exit 2,
one line on stderr naming the field, no traceback, and not one new file anywhere under the
working folder (no output, no hidden temp, no study storage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from comet_dse.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hf_configs"
RESULTS = Path(__file__).resolve().parents[2] / "results"
TWO_GPUS = str(RESULTS / "hardware" / "h200-x2-run134.json")  # measured on 2 GPUs: prices 1 and 2
ONE_GPU = str(RESULTS / "hardware" / "h200-x1-run148.json")  # measured on 1 GPU: no all-to-all table
SMALL = ["--model", "mixtral-8x7b", "--hardware", "h800", "--ep", "8", "--tokens", "512"]
TUNE = ["--model", "mixtral-8x7b", "--hardware", "h800", "--ep", "8", "--tokens", "1024", "--trials", "2"]
HUGE = "1000000000000"


def make_inputs(folder: Path) -> None:
    """The files the cases name: a folder, a plain file, bad profiles, a trace archive, bad configs."""
    (folder / "outdir").mkdir()
    (folder / "plain").write_text("not a folder\n")
    profiles = {"base_list": {"base": ["h800"]}, "sources_str": {"base": "h800", "sources": "x"},
                "link_inf": {"base": "h800", "link_GBps": float("inf")}, "link_tiny": {"base": "h800", "link_GBps": 1e-300},
                "sms_text": {"base": "h800", "sms": "132"}, "name_number": {"base": "h800", "name": 7},
                "nics_three": {"base": "h800", "nics_per_node": 3}, "nics_eight": {"base": "h800", "nics_per_node": 8},
                "nic_eff_big": {"base": "h800", "nic_collective_efficiency": 1.5},
                "internode_ring": {"base": "h800", "internode": "ring"}}
    for name, profile in profiles.items():
        (folder / f"{name}.json").write_text(json.dumps(profile))  # json writes inf as Infinity
    np.savez(folder / "trace.npz", a=np.zeros((16, 2), dtype=np.int64))
    config = json.loads((FIXTURES / "mixtral-8x7b.json").read_text())
    (folder / "hidden_float.json").write_text(json.dumps({**config, "hidden_size": 4096.0}))
    (folder / "experts_bool.json").write_text(json.dumps({**config, "num_local_experts": True}))
    (folder / "counts.json").write_text(json.dumps([[1] * 8, [2] * 8]))  # two layers of Mixtral's 8 experts
    (folder / "counts7.json").write_text(json.dumps([[1] * 7]))


# (subcommand and its arguments, the field the one line must name)
CASES: list[tuple[list[str], str]] = [
    # simulate: workload and knobs
    (["simulate", *SMALL, "--ep", "3"], "--ep"),
    (["simulate", *SMALL, "--tokens", "0"], "--tokens"),
    (["simulate", *SMALL, "--network", "packets"], "--network"),
    (["simulate", *SMALL, "--routing", "counts:counts7.json"], "--routing"),
    (["simulate", *SMALL, "--routing", "counts:counts.json", "--layers", "2"], "--layers"),
    (["simulate", *SMALL, "--routing", "counts:counts.json", "--layers", "0,x"], "--layers"),
    (["simulate", *SMALL, "--routing", "counts:counts.json#1", "--layers", "0"], "--layers"),
    (["simulate", *SMALL, "--layers", "all"], "--layers"),
    (["simulate", *SMALL, "--routing", "counts:counts.json", "--trace", "t.json"], "--trace"),
    (["tune", *TUNE, "--routing", "counts:counts.json"], "--routing"),
    (["simulate", *SMALL, "--tokens", "-5"], "--tokens"),
    (["simulate", *SMALL, "--tokens", HUGE], "--tokens"),
    (["simulate", *SMALL, "--tokens", "many"], "--tokens"),
    (["simulate", *SMALL, "--model", "gpt-5"], "--model"),
    (["simulate", *SMALL, "--hardware", "a100"], "--hardware"),
    (["simulate", *SMALL, "--tp", "5"], "--tp"),
    (["simulate", *SMALL, "--comm-blocks", "132"], "--comm-blocks0"),
    (["simulate", *SMALL, "--comm-blocks0", "0"], "--comm-blocks0"),
    (["simulate", *SMALL, "--comm-blocks", "8", "--comm-blocks0", "4"], "--comm-blocks"),
    (["simulate", *SMALL, "--comm-blocks0", "-1", "--schedule", "sequential"], "--comm-blocks0"),
    (["simulate", *SMALL, "--n-splits", "3", "--schedule", "chunked"], "--n-splits"),
    (["simulate", *SMALL, "--chunks", "0", "--schedule", "comet"], "--chunks"),
    (["simulate", *SMALL, "--tile", "100x128"], "--tile"),
    (["simulate", *SMALL, "--n-splits", "3"], "--n-splits"),
    (["simulate", *SMALL, "--chunks", "0"], "--chunks"),
    (["simulate", *SMALL, "--row-order", "random"], "--row-order"),
    (["simulate", *SMALL, "--schedule", "fastest"], "--schedule"),
    # routing
    (["simulate", *SMALL, "--routing", "pareto:1"], "--routing"),
    (["simulate", *SMALL, "--routing", "zipf:1e6"], "--routing"),
    (["simulate", *SMALL, "--routing", "trace:trace.npz"], "--routing"),
    (["simulate", *SMALL, "--routing", "trace:missing.npy"], "--routing"),
    # hardware profiles
    (["simulate", *SMALL, "--hardware", "base_list.json"], "hardware.base"),
    (["simulate", *SMALL, "--hardware", "sources_str.json"], "hardware.sources"),
    (["simulate", *SMALL, "--hardware", "link_inf.json"], "hardware.link_GBps"),
    (["simulate", *SMALL, "--hardware", "link_tiny.json"], "hardware.link_GBps"),
    (["simulate", *SMALL, "--hardware", "sms_text.json"], "hardware.sms"),
    (["simulate", *SMALL, "--hardware", "name_number.json"], "hardware.name"),
    # multi-node: the route, NICs that do not split a node into whole rails, an efficiency above 1
    (["simulate", *SMALL, "--internode", "ring"], "--internode"),
    (["simulate", *SMALL, "--hardware", "nics_three.json"], "hardware.nics_per_node"),
    (["simulate", *SMALL, "--hardware", "nics_eight.json", "--gpus-per-node", "4"], "hardware.nics_per_node"),
    (["simulate", *SMALL, "--hardware", "nic_eff_big.json"], "hardware.nic_collective_efficiency"),
    (["simulate", *SMALL, "--hardware", "internode_ring.json"], "hardware.internode"),
    (["place", *SMALL, "--internode", "ring"], "--internode"),
    (["tune", *TUNE, "--internode", "ring"], "--internode"),
    (["tune", *TUNE, "--hardware", "nics_three.json"], "hardware.nics_per_node"),
    # HF configs
    (["simulate", *SMALL, "--model", "hidden_float.json"], "hidden_size"),
    (["simulate", *SMALL, "--model", "experts_bool.json"], "num_local_experts"),
    # simulate outputs
    (["simulate", *SMALL, "--trace", "/nonexistent-dir/t.json"], "--trace"),
    (["simulate", *SMALL, "--trace", "outdir"], "--trace"),
    (["simulate", *SMALL, "--trace", "/proc/x"], "--trace"),
    (["simulate", *SMALL, "--trace", "plain/t.json"], "--trace"),
    (["simulate", *SMALL, "--html", "outdir"], "--html"),
    (["simulate", *SMALL, "--html", "/proc/x/t.html"], "--html"),
    (["simulate", *SMALL, "--trace", "outdir/t.json", "--ep", "3"], "--ep"),  # a later error: still nothing written
    # place
    (["place", *SMALL, "--out", "outdir"], "--out"),
    (["place", *SMALL, "--out", "/proc/x"], "--out"),
    (["place", *SMALL, "--out", "plain/p.json"], "--out"),
    (["place", *SMALL, "--tokens", HUGE], "--tokens"),
    (["place", *SMALL, "--hardware", "base_list.json"], "hardware.base"),
    (["place", *SMALL, "--routing", "trace:trace.npz"], "--routing"),
    # tune
    (["tune", *TUNE, "--report", "outdir"], "--report"),
    (["tune", *TUNE, "--report", "/proc/x/r.html"], "--report"),
    (["tune", *TUNE, "--plan-dir", "plain"], "--plan-dir"),
    (["tune", *TUNE, "--plan-dir", "/proc/x"], "--plan-dir"),
    (["tune", *TUNE, "--storage", "sqlite:///outdir"], "--storage"),
    (["tune", *TUNE, "--tokens", f"1024,{HUGE}"], "--tokens"),
    (["tune", *TUNE, "--tokens", "1024,0"], "--tokens"),
    (["tune", *TUNE, "--trials", "0"], "--trials"),
    (["tune", *TUNE, "--routing", "zipf:1e6"], "--routing"),
    (["tune", *TUNE, "--routing", "trace:trace.npz"], "--routing"),
    (["tune", *TUNE, "--hardware", "link_inf.json"], "hardware.link_GBps"),
    (["tune", *TUNE, "--hardware", "sources_str.json"], "hardware.sources"),
    (["tune", *TUNE, "--model", "hidden_float.json"], "hidden_size"),
    # a measured profile prices the GPU counts it measured only: refused before a study, a plan or a report exists
    (["simulate", *SMALL, "--hardware", TWO_GPUS], "hardware.tables.alltoall"),
    (["simulate", *SMALL, "--hardware", ONE_GPU], "hardware.tables.alltoall"),
    (["place", *SMALL, "--hardware", ONE_GPU], "hardware.tables.alltoall"),
    (["tune", *TUNE, "--hardware", TWO_GPUS], "hardware.tables.alltoall"),
    (["tune", *TUNE, "--hardware", ONE_GPU], "hardware.tables.alltoall"),
    (["validate", "--measurements", str(RESULTS / "measurements" / "mix4_h200" / "run135"), "--hardware", TWO_GPUS],
     "hardware.tables.alltoall"),
]


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("argv, field", CASES, ids=[" ".join(a[:1] + a[len(SMALL if a[0] != "tune" else TUNE) + 1:]) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_no_files(tmp_path, monkeypatch, capsys, argv, field):
    make_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"comet-dse: error: {field}:"), err
    assert "Traceback" not in err
    assert tree(tmp_path) == before  # nothing written, not even a hidden temp or an empty folder
