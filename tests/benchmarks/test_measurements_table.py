"""results/measurements/README.md is exactly what benchmarks/measurements_table.py makes of the
committed JSON: no figure in it was typed by hand, and none is stale."""

from __future__ import annotations


def test_the_committed_readme_is_generated_from_the_json(load_script):
    table = load_script("measurements_table")
    assert (table.ROOT / "README.md").read_text() == table.render(), \
        "results/measurements/README.md is stale: run python benchmarks/measurements_table.py"


def test_the_targets_are_read_off_the_figures(load_script):
    table = load_script("measurements_table")
    text = table.render()
    # a figure in the table is the JSON's: Qwen2-MoE at 8192 tokens, best fused over the n_comm sweep
    import json

    runs = json.loads((table.ROOT / "ep2_h100" / "bench-qwen2-moe-2.7b-ep2-20261125-211205.json").read_text())["runs"]
    best = min((r for r in runs if r["tokens"] == 8192 and r["config"]["comm_blocks0"] > 0),
               key=lambda r: r["timings_us"]["fused"])
    ratio = best["timings_us"]["b0"] / best["timings_us"]["fused"]
    assert f"| Qwen2-MoE 8192 tokens: fused / B0 >= 2.0 | {ratio:.2f} | {'met' if ratio >= 2 else 'not met'} |" in text


def test_one_machine_sets_are_the_folders_beside_their_own_profile(load_script):
    table = load_script("measurements_table")
    found = {run for _, run in table._one_machine_folders(table.ROOT)}
    # runs 70 and 72 calibrated nothing of their own; run 77 has a profile but its benches are baselines only
    assert {"run26", "run39", "run71", "run79"} <= found and not {"run70", "run72"} & found
    text = table.render()
    assert "### Targets on one machine: `ep2_h200/run79/`" in text
    assert "### Targets on one machine: `ep2_h200/run77/`" not in text
