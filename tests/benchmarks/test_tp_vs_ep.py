"""benchmarks/tp_vs_ep.py: the TP=2 / EP=2 table from bench files."""

from __future__ import annotations

import json


def bench_file(folder, name: str, ep: int, tp: int, runs: list[tuple[int, int, dict]]) -> None:
    data = {"model": "mixtral-8x7b", "ep": ep, "tp": tp,
            "runs": [{"tokens": tokens, "config": {"comm_blocks0": blocks}, "timings_us": t} for tokens, blocks, t in runs]}
    (folder / name).write_text(json.dumps(data))


def test_best_block_count_and_b0_over_fused_per_layout(load_script, tmp_path, capsys):
    table = load_script("tp_vs_ep")
    tp, ep = tmp_path / "tp", tmp_path / "ep"
    tp.mkdir(), ep.mkdir()
    base = {"b0": 1100.0, "b1_c2": 1200.0, "b1_c4": 1150.0, "b1_c2_grouped": 900.0}  # B1's variants are not B1
    bench_file(tp, "bench-a.json", 1, 2, [(8192, 4, {**base, "fused": 880.0, "compute_only": 870.0, "comm_only": 300.0}),
                                          (8192, 8, {**base, "fused": 900.0, "compute_only": 880.0, "comm_only": 200.0})])
    bench_file(ep, "bench-b.json", 2, 1, [(8192, 4, {"b0": 1000.0, "b1_c2": 990.0, "fused": 800.0,
                                                     "compute_only": 790.0, "comm_only": 150.0})])
    assert table.main([str(tp), str(ep)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| mixtral-8x7b, 8192 | EP=2 | 1000 | 990 | 4: **800** | 4 | 790 / 150 | 1.25 |"
    assert lines[3] == "| mixtral-8x7b, 8192 | TP=2 | 1100 | 1150 | 4: **880** / 8: 900 | 4 | 870 / 300 | 1.25 |"


def test_a_mix_of_ep_and_tp_is_named_by_both(load_script):
    table = load_script("tp_vs_ep")
    assert [table.layout_of(ep, tp) for ep, tp in ((4, 1), (1, 4), (2, 2))] == ["EP=4", "TP=4", "EP=2 × TP=2"]


def test_a_missing_folder_is_one_line_and_exit_2(load_script, tmp_path, capsys):
    table = load_script("tp_vs_ep")
    assert table.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"folders: {tmp_path / 'nope'} is not a folder"
