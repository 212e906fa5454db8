"""results/validation/plan_check/plan_check.json is what benchmarks/plan_check.py makes of the
committed plans and bench files, and its regret is the arithmetic of those figures."""

from __future__ import annotations

import json


def test_the_committed_plan_check_is_generated_from_the_inputs(load_script):
    check = load_script("plan_check")
    assert check.OUT.read_text() == check.render_text(), \
        "results/validation/plan_check/plan_check.json is stale: run python benchmarks/plan_check.py"


def test_a_buckets_regret_is_its_pick_over_the_best_measured(load_script):
    check = load_script("plan_check")
    for row in check.render()["buckets"]:
        assert row["measured_best_us"] == min([row["measured_us"], *row["sweep_us_by_comm_blocks"].values()])
        assert row["regret_pct"] == round(100 * (row["measured_us"] / row["measured_best_us"] - 1), 1) >= 0
        plan = json.loads((check.PLANS / f"{row['model']}-h200-x2-ep2-tp1.json").read_text())
        (bucket,) = [b for b in plan["buckets"] if b["tokens"] == row["tokens"]]
        assert row["pick"] == bucket["config"] and row["predicted_us"] == bucket["predicted_us"]["comet"]
