"""`comet-dse merge-profiles`: several calibrated profiles as one, each figure the median over those that measured it
on the same axes (tests/fixtures/profiles/hand.json edited three ways)."""

import json
from pathlib import Path

import pytest

from comet_dse.cli import main
from comet_dse.hardware import load_hardware
from comet_dse.profile_merge import merge_profiles

HAND_PROFILE = Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "hand.json"


def hand(**figures: float) -> dict:
    data = json.loads(HAND_PROFILE.read_text())
    data.setdefault("provenance", {})["gpu"] = "hand GPU"
    data["figures"].update(figures)
    return data


def write(tmp_path: Path, name: str, data: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_each_float_is_the_median_and_axes_stay_the_bases():
    a, b, c = hand(host_sync_us=1.0), hand(host_sync_us=5.0), hand(host_sync_us=2.0)
    for i, d in enumerate((a, b, c)):
        d["tables"]["grouped_gemm"][0]["us"] = [1.0 + i, 2.0 + 4 * i]  # 1/2, 2/6, 3/10 at 128/256 rows
    merged, partial = merge_profiles([a, b, c], ["a", "b", "c"])
    assert merged["figures"]["host_sync_us"] == 2.0
    entry = merged["tables"]["grouped_gemm"][0]
    assert entry["us"] == [2.0, 6.0] and entry["rows_per_expert"] == [128, 256] and entry["K"] == 256
    assert merged["figures"]["sms"] == 4 and partial == {}


def test_a_table_measured_on_other_axes_or_by_fewer_profiles_takes_the_median_of_those_that_match():
    a, b, c = hand(), hand(), hand()
    for d, us in ((a, [2.0, 4.0]), (b, [4.0, 8.0]), (c, [100.0, 100.0])):
        d["tables"]["host_sync"] = {"top_k": 2, "tokens": [64, 192], "us": us}
    c["tables"]["host_sync"]["tokens"] = [64, 512]  # another grid: not the same measurement
    # a GEMM entry timed at other rows, and listed in another order, is matched by its axes, not its place
    c["tables"]["grouped_gemm"] = c["tables"]["grouped_gemm"][::-1]
    c["tables"]["grouped_gemm"][-1]["rows_per_expert"] = [128, 512]
    del b["figures"]["host_sync_us"]
    merged, partial = merge_profiles([a, b, c], ["a", "b", "c"])
    assert merged["tables"]["host_sync"]["us"] == [3.0, 6.0]  # a and b only
    assert partial["tables.host_sync"] == 2 and partial["figures.host_sync_us"] == 2
    assert partial["tables.grouped_gemm[0]"] == 2 and "tables.grouped_gemm[1]" not in partial


def test_what_only_later_profiles_measured_is_merged_from_those_whatever_the_base():
    """calibrate added queued timings in run 103: merged with earlier profiles, base first or not, they are the
    median of the profiles that have them, beside the columns every profile has."""
    old, new1, new2 = hand(), hand(forward_fixed_queued_us=30.0), hand(forward_fixed_queued_us=34.0)
    old["tables"]["host_sync"] = {"top_k": 2, "tokens": [64, 192], "us": [2.0, 4.0]}
    for d, queued in ((new1, [1.0, 3.0]), (new2, [3.0, 5.0])):
        d["tables"]["host_sync"] = {"top_k": 2, "tokens": [64, 192], "us": [4.0, 8.0], "queued_us": queued}
    for order in ((old, new1, new2), (new1, old, new2)):
        merged, partial = merge_profiles(list(order), ["x", "y", "z"])
        assert merged["figures"]["forward_fixed_queued_us"] == 32.0 and partial["figures.forward_fixed_queued_us"] == 2
        assert merged["tables"]["host_sync"]["us"] == [4.0, 8.0] and merged["tables"]["host_sync"]["queued_us"] == [2.0, 4.0]


def test_the_command_writes_a_profile_the_simulator_reads(capsys, tmp_path):
    paths = [write(tmp_path, f"{n}.json", hand(kernel_launch_us=k)) for n, k in (("a", 1.0), ("b", 3.0), ("c", 2.0))]
    out = tmp_path / "fleet.json"
    assert main(["merge-profiles", *paths, "--out", str(out), "--name", "fleet"]) == 0
    profile = load_hardware(out)
    assert profile.name == "fleet" and profile.kernel_launch_us == 2.0
    data = json.loads(out.read_text())
    assert [m["profile"] for m in data["provenance"]["merged_from"]] == paths
    assert data["provenance"]["command"].startswith("comet-dse merge-profiles ")
    assert "merged 3 profiles" in capsys.readouterr().out


@pytest.mark.parametrize("make, names", [
    (lambda t: [write(t, "a.json", hand())], "at least two"),
    (lambda t: [write(t, "a.json", hand()), write(t, "b.json", {**hand(), "gpus": 4})], "same 'gpus'"),
    (lambda t: [write(t, "a.json", hand()), write(t, "b.json", {"name": "preset", "base": "h100-sxm"})],
     "not a calibrated profile"),
    (lambda t: [write(t, "a.json", hand()), str(t / "missing.json")], "cannot read"),
])
def test_bad_profiles_are_one_line_exit_2_and_nothing_written(capsys, tmp_path, make, names):
    out = tmp_path / "fleet.json"
    assert main(["merge-profiles", *make(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "profiles" in err and names in err and "Traceback" not in err
    assert not out.exists()


def test_profiles_of_two_gpu_models_are_refused(capsys, tmp_path):
    other = hand()
    other["provenance"]["gpu"] = "another GPU"
    code = main(["merge-profiles", write(tmp_path, "a.json", hand()), write(tmp_path, "b.json", other),
                 "--out", str(tmp_path / "fleet.json")])
    assert code == 2 and "one GPU model" in capsys.readouterr().err


def test_a_bad_table_in_an_input_is_named_in_that_file(capsys, tmp_path):
    broken = hand()
    broken["tables"]["memory_pass_GBps"]["gather"] = -1.0
    bad = write(tmp_path, "bad.json", broken)
    out = tmp_path / "fleet.json"
    assert main(["merge-profiles", write(tmp_path, "a.json", hand()), bad, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory_pass_GBps" in err and not out.exists()
