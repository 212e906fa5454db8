"""results/validation/plan_check/plan_check.json is what benchmarks/plan_check.py makes of the
committed plans and bench files, and its regret is the arithmetic of those figures."""

from __future__ import annotations

import json


def _checks(script):
    present = [c for c in script.CHECKS if c.plans.exists()]
    assert present, "no plan check committed"
    return present


def test_the_committed_plan_check_is_generated_from_the_inputs(load_script):
    script = load_script("plan_check")
    for check in _checks(script):
        assert check.out.read_text() == script.render_text(check), \
            f"{check.out} is stale: run python benchmarks/plan_check.py"


def test_a_buckets_regret_is_its_pick_over_the_best_measured(load_script):
    script = load_script("plan_check")
    for check in _checks(script):
        _regrets_follow_the_figures(check, script.render(check))


def _regrets_follow_the_figures(check, rendered: dict) -> None:
    for row in rendered["buckets"]:
        assert row["measured_best_us"] == min([row["measured_us"], *row["sweep_us_by_comm_blocks"].values()])
        assert row["regret_pct"] == round(100 * (row["measured_us"] / row["measured_best_us"] - 1), 1) >= 0
        plan = json.loads((check.plans / f"{row['model']}-h200-x2-ep2-tp1.json").read_text())
        (bucket,) = [b for b in plan["buckets"] if b["tokens"] == row["tokens"]]
        assert row["pick"] == bucket["config"] and row["predicted_us"] == bucket["predicted_us"]["comet"]
