import json
import subprocess
import sys

import pytest

from comet_dse.errors import UserError
from comet_dse.plan import Plan, PlanEntry, load_plan, write_plan


def make_plan() -> Plan:
    entries = [PlanEntry(tokens=t, config={"comm_blocks0": t // 256, "comm_blocks1": 8}, chunked={"chunks": 2},
                         predicted_us={"comet": 1.0, "chunked": 1.2, "sequential": 1.5},
                         speedup={"vs_sequential": 1.5, "vs_chunked": 1.2}, trials=40)
               for t in (4096, 1024, 2048)]
    return Plan("mixtral-8x7b", "h800", 8, 1, entries, {"versions": {"comet_dse": "test"}})


def test_lookup_at_the_buckets():
    plan = make_plan()
    assert [e.tokens for e in plan.entries] == [1024, 2048, 4096]
    for tokens in (1024, 2048, 4096):
        assert plan.lookup(tokens)["comm_blocks0"] == tokens // 256


def test_lookup_between_buckets_is_nearest_on_a_log_scale():
    plan = make_plan()
    assert plan.entry(1400).tokens == 1024  # log2(1400) = 10.45: closer to 10
    assert plan.entry(1500).tokens == 2048  # 10.55: closer to 11 (the linear midpoint would be 1536)
    assert plan.entry(int(1024 * 2 ** 0.5)).tokens == 1024  # 1448 is just below the log midpoint
    assert plan.entry(1449).tokens == 2048
    assert plan.entry(1).tokens == 1024 and plan.entry(10 ** 6).tokens == 4096  # clamped


def test_a_log_tie_goes_to_the_larger_bucket():
    entries = [PlanEntry(t, {"t": t}, {}, {}, {}, 1) for t in (1000, 4000)]
    assert Plan("m", "h", 1, 1, entries).lookup(2000) == {"t": 4000}


def test_bad_token_counts():
    with pytest.raises(UserError, match="positive integer"):
        make_plan().lookup(0)


def test_a_plan_written_by_one_process_loads_in_another(tmp_path):
    path = write_plan(make_plan(), tmp_path / "plans" / "p.json")
    code = ("import sys; sys.modules['simpy'] = sys.modules['optuna'] = sys.modules['plotly'] = None; "
            f"from comet_dse.plan import load_plan; print(load_plan({str(path)!r}).lookup(3000)['comm_blocks0'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "16"  # 3000 is nearest to 4096 on a log scale; no simulator needed to read a plan
    assert load_plan(path).to_dict() == make_plan().to_dict()


@pytest.mark.parametrize("text", ["not json", json.dumps({"version": 99}), json.dumps({"version": 1, "model": "m"})])
def test_bad_plan_files(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError):
        load_plan(path)
