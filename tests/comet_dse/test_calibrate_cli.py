"""`comet-dse calibrate`'s command line: every bad input is one line naming its flag, exit 2,
before any GPU work and with nothing written; the command imports none of the simulator's
dependencies (the GPU machines have only torch, triton and numpy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from comet_dse.cli import main

TINY = {"model_type": "mixtral", "_name_or_path": "tiny-moe", "hidden_size": 32, "intermediate_size": 48,
        "num_local_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 1}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working folder with a tiny model config, a plain file, and no launcher in the environment."""
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    (tmp_path / "plain").write_text("not a folder\n")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["--rows", "0,16"], "--rows: must be integers >= 1"),
    (["--gpus", "0"], "--gpus: must be an integer >= 1"),
    (["--rows", "16,24"], "--rows: must be multiples of 16"),
    (["--rows", "16"], "--rows: needs at least 2 row counts"),
    (["--rows", "16,16,32"], "--rows: lists a value twice"),
    (["--rows", "a,b"], "--rows: must be comma-separated integers"),
    (["--comm-blocks", "0"], "--comm-blocks: must be integers >= 1"),
    (["--copy-blocks", "4"], "--copy-blocks: needs at least 2 block counts"),
    (["--alltoall-max", "5000"], "--alltoall-max: must be a power of two >= 8192"),
    (["--tile", "100x100"], "--tile: tile sizes must be powers of two"),
    (["--tile", "big"], "--tile: expected BMxBN"),
    (["--models", "tiny.json", "--tile", "64x64"], "--tile: tiny-moe: layer1's tile width 64 must divide H=32"),
    (["--block-k", "8"], "--block-k: must be a power of two >= 16"),
    (["--programs", "16", "--comm-blocks", "8,16"], "--programs: must exceed the largest --comm-blocks (16)"),
    (["--runs", "0"], "--runs: must be >= 1"),
    (["--warmup", "-1"], "--warmup: must be >= 0"),
    (["--copy-kib", "0"], "--copy-kib: must be >= 1"),
    (["--base", "a100"], "--base: unknown preset 'a100'"),
    (["--name", "../x"], "--name: must be letters, digits"),
    (["--models", "nope"], "--models: unknown preset 'nope'"),
    (["--models", ""], "--models: give at least one model"),
    (["--out", "plain"], "--out: plain exists and is not a directory"),
    (["--quick", "--seed", "x"], "--seed: invalid int value"),
    (["--models", "tiny.json", "--tile", "16x16"], "calibrate: launch it once per GPU"),
])
def test_bad_input_is_one_line_naming_the_flag(folder, capsys, argv, message):
    before = sorted(p.name for p in folder.rglob("*"))
    assert main(["calibrate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing written, not even a folder


def test_experts_must_divide_over_the_launched_gpus(folder, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(["calibrate", "--models", "tiny.json"]) == 2
    assert "--models: tiny-moe: 8 experts do not divide over 3 GPUs" in capsys.readouterr().err


def test_calibrate_needs_no_simulator_dependencies():
    pytest.importorskip("torch", reason="the kernels need torch")
    pytest.importorskip("triton", reason="the kernels need triton")
    code = ("import sys; sys.modules.update(dict.fromkeys(('simpy', 'optuna', 'plotly', 'scipy'))); "
            "from comet_dse.cli import build_parser; build_parser().parse_args(['calibrate', '--quick']); "
            "import comet_dse.commands.calibrate, comet_dse.kernels.calibration; print('ok')")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "ok", out.stderr
