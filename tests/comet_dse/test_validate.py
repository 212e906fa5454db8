"""`comet-dse validate` on the committed 2x H100 measurements, its metrics on hand-made
sweeps, and its one-line refusals of bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from comet_dse.cli import main
from comet_dse.hardware import HARDWARE_PRESETS
from comet_dse.models import ModelConfig
from comet_dse.sim import Comet, Sequential, simulate
from comet_dse.validation import sweep
from comet_dse.workload import Workload

# the kernel version whose every configuration the simulator models (layer1 tiles as wide as layer0's)
RESULTS = Path(__file__).resolve().parents[2] / "results"
MEASURED = RESULTS / "measurements" / "ep2_h100" / "history" / "torch_plan"
QWEN = MEASURED / "bench-qwen2-moe-2.7b-ep2-20261125-185859.json"
MIXTRAL = MEASURED / "bench-mixtral-8x7b-ep2-20261125-190032.json"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("validation") / "report.json"
    assert main(["validate", "--measurements", str(QWEN), str(MIXTRAL), "--tokens", "1024,8192", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_report_has_every_schedule_point_and_sweep(report):
    assert report["profile"] == "h100-sxm" and report["gpus"] == 2 and report["gpu"] == "NVIDIA H100 80GB HBM3"
    assert set(report["schedules"]) == {"sequential", "chunked", "comet"}
    seq, chunked, comet = (report["schedules"][s] for s in ("sequential", "chunked", "comet"))
    assert seq["n"] == 4  # B0 once per (model, tokens), not once per fused run
    assert chunked["n"] == 12  # chunks 2, 4, 8
    assert comet["n"] == 24 and comet["skipped"] == 4  # comm blocks 4..48; the copy-engine runs are skipped
    assert all(p["reason"].startswith("copy-engine") for p in comet["points"] if p["status"] == "skipped")
    assert report["overall"]["n"] == 40 and report["overall"]["failed"] == 0
    for summary in (seq, chunked, comet, report["overall"]):
        assert summary["mape_pct"] >= 0 and summary["min_error_pct"] <= summary["mean_error_pct"] <= summary["max_error_pct"]
    assert len(report["sweeps"]) == 4
    for s in report["sweeps"]:
        assert s["n"] == 6 and -1 <= s["spearman"] <= 1 and s["regret_pct"] >= 0
        assert s["predicted_best"] in s["comm_blocks"] and s["measured_best"] in s["comm_blocks"]


def test_every_error_is_predicted_minus_measured_over_measured(report):
    for schedule in report["schedules"].values():
        for p in schedule["points"]:
            if p["status"] == "ok":
                assert p["error_pct"] == pytest.approx(100 * (p["predicted_us"] - p["measured_us"]) / p["measured_us"], abs=0.01)


def _point(report: dict, schedule: str, model: str, tokens: int, **config) -> dict:
    (point,) = [p for p in report["schedules"][schedule]["points"]
                if p["model"] == model and p["tokens"] == tokens and config.items() <= p["config"].items()]
    return point


@pytest.mark.parametrize("schedule, path, tokens, knobs", [
    (Comet(comm_blocks0=8, comm_blocks1=8, tile_layout="by-source"), QWEN, 1024, {"comm_blocks0": 8}),  # as it ran
    (Sequential(), MIXTRAL, 8192, {}),
])
def test_a_row_recomputed_from_the_raw_file(report, schedule, path, tokens, knobs):
    raw = json.loads(path.read_text())
    s = raw["shape"]
    workload = Workload(ModelConfig(raw["model"], s["experts"], s["top_k"], s["hidden"], s["ffn"], 1), tokens, raw["ep"])
    predicted = simulate(workload, HARDWARE_PRESETS["h100-sxm"], schedule, record=False).latency_us
    key = "fused" if schedule.name == "comet" else "b0"
    (measured,) = {r["timings_us"][key] for r in raw["runs"]
                   if r["tokens"] == tokens and all(r["config"][k] == v for k, v in knobs.items())}
    point = _point(report, schedule.name, raw["model"], tokens, **knobs)
    assert point["predicted_us"] == pytest.approx(predicted, abs=0.01)
    assert point["measured_us"] == measured
    assert point["error_pct"] == pytest.approx(100 * (predicted - measured) / measured, abs=0.01)


def test_sweep_metrics_on_a_hand_made_case():
    # predicted ranks 1 2 3 4, measured ranks 2 1 3 4: rho = 1 - 6 * 2 / (4 * 15) = 0.8;
    # the simulator picks 4 blocks (measured 10), the best is 8 blocks (measured 9): regret 1/9.
    points = [{"source": "f", "model": "m", "tokens": 1, "predicted_us": pred, "measured_us": meas,
               "config": {"comm_blocks0": b, "comm_blocks1": b, "block_m": 128}}
              for b, pred, meas in ((16, 3.0, 11.0), (4, 1.0, 10.0), (8, 2.0, 9.0), (32, 4.0, 12.0))]
    s = sweep(points)
    assert s["spearman"] == pytest.approx(0.8)
    assert s["regret_pct"] == pytest.approx(100 / 9, abs=0.01)
    assert s["predicted_best"] == [4, 4] and s["measured_best"] == [8, 8]
    assert s["comm_blocks"] == [[4, 4], [8, 8], [16, 16], [32, 32]] and s["knobs"] == {"block_m": 128}
    assert sweep(points[:2])["spearman"] is None  # two points rank nothing


def _repeat_points(measured_by_source: dict[str, dict[int, float]], predicted: dict[int, float], **extra) -> list[dict]:
    return [{"source": source, "model": "m", "ep": 2, "tp": 1, "tokens": 1, "schedule": "comet", "status": "ok",
             "predicted_us": predicted[b], "measured_us": us, "config": {"comm_blocks0": b, "comm_blocks1": b, "block_m": 128},
             **extra} for source, by_blocks in measured_by_source.items() for b, us in by_blocks.items()]


def test_repeated_sweeps_rank_the_medians_and_tell_noise_from_a_wrong_pick():
    from comet_dse.validation import repeated_sweeps

    predicted = {4: 1.0, 8: 2.0, 16: 3.0}
    # medians 10, 12, 15 (4 blocks best, as predicted); noise at 8 blocks 13/11: 18.2%, the largest
    clear = {"a": {4: 10.0, 8: 11.0, 16: 15.0}, "b": {4: 10.5, 8: 12.0, 16: 14.0}, "c": {4: 9.5, 8: 13.0, 16: 16.0}}
    (s,) = repeated_sweeps(_repeat_points(clear, predicted))
    assert s["measured_median_us"] == [10.0, 12.0, 15.0] and s["repeats"] == 3
    assert s["spearman"] == pytest.approx(1.0) and s["regret_pct"] == 0.0
    assert s["noise_pct"] == pytest.approx(100 * (13 / 11 - 1), abs=0.01)
    assert s["measured_spread_pct"] == 50.0 and s["beyond_noise"]
    # the simulator picks 4 blocks, measured median 10.4 against 8 blocks' 10: regret 4%, but 4 blocks' repeats
    # span 9.9 .. 10.9 (10.1%): within the noise, as is the whole spread
    noisy = {"a": {4: 10.4, 8: 10.0, 16: 10.2}, "b": {4: 9.9, 8: 10.3, 16: 10.0}, "c": {4: 10.9, 8: 9.8, 16: 10.5}}
    (s,) = repeated_sweeps(_repeat_points(noisy, predicted))
    assert s["predicted_best"] == [4, 4] and s["measured_best"] == [8, 8]
    assert s["regret_pct"] == pytest.approx(4.0) and not s["regret_beyond_noise"] and not s["beyond_noise"]
    # one file: nothing repeated
    assert repeated_sweeps(_repeat_points({"a": clear["a"]}, predicted)) == []


def test_repeated_points_are_scored_against_their_medians_with_their_noise():
    from comet_dse.validation import repeated_errors

    predicted = {4: 10.0, 8: 20.0}
    # 4 blocks measured 8, 12, 9: median 9, error +11.11%, noise 12/8 = 50%; 8 blocks 25, 24, 26: median 25,
    # error -20%, noise 26/24 = 8.33%
    runs = {"a": {4: 8.0, 8: 25.0}, "b": {4: 12.0, 8: 24.0}, "c": {4: 9.0, 8: 26.0}}
    points = _repeat_points(runs, predicted)
    # a point of one file only (16 blocks) and a failed one count nowhere
    points += [{**points[0], "config": {**points[0]["config"], "comm_blocks0": 16, "comm_blocks1": 16}},
               {**points[1], "status": "failed"}]
    (name, s), = repeated_errors(points).items()
    assert name == "comet" and s["n"] == 2 and s["min_repeats"] == 3
    assert s["mape_pct"] == pytest.approx((100 / 9 + 20) / 2, abs=0.01)
    assert s["mean_error_pct"] == pytest.approx((100 / 9 - 20) / 2, abs=0.01)
    assert (s["min_error_pct"], s["max_error_pct"]) == (-20.0, pytest.approx(11.11, abs=0.01))
    assert s["median_noise_pct"] == pytest.approx((50 + 100 * (26 / 24 - 1)) / 2, abs=0.01) and s["max_noise_pct"] == 50.0
    assert repeated_errors(_repeat_points({"a": runs["a"]}, predicted)) == {}


def test_the_full_sweep_summary_keeps_only_sweeps_over_the_whole_grid():
    from comet_dse.validation import FULL_SWEEP_POINTS, sweep_summary

    short = {"n": 3, "spearman": -1.0, "regret_pct": 12.0}
    full = [{"n": FULL_SWEEP_POINTS, "spearman": rho, "regret_pct": regret} for rho, regret in ((1.0, 0.0), (0.8, 2.0))]
    assert sweep_summary([short, *full]) == {"n": 3, "mean_spearman": round(0.8 / 3, 4), "min_spearman": -1.0,
                                             "mean_regret_pct": 4.67, "max_regret_pct": 12.0}
    assert sweep_summary([short, *full], FULL_SWEEP_POINTS) == {"n": 2, "mean_spearman": 0.9, "min_spearman": 0.8,
                                                                "mean_regret_pct": 1.0, "max_regret_pct": 2.0}


def test_a_folder_reads_its_bench_files_and_the_table_prints(capsys, tmp_path):
    out = tmp_path / "v.json"
    code, text, err = run_cli(capsys, "validate", "--measurements", str(MEASURED), "--tokens", "256", "--out", str(out))
    assert code == 0 and err == ""
    assert "sequential (b0)" in text and "MAPE" in text and "spearman" in text
    # each point's row says its parallelism (a folder may hold EP=2 and EP=1 x TP=2 files of one model)
    header = next(line for line in text.splitlines() if line.startswith("model") and "predicted µs" in line)
    assert header.split()[:3] == ["model", "EPxTP", "tokens"]
    assert any(line.split()[1:2] == ["2x1"] for line in text.splitlines() if "sequential (b0)" in line)
    assert {Path(p).name for p in json.loads(out.read_text())["measurements"]} == {
        p.name for p in MEASURED.glob("bench-*.json")}


def test_a_configuration_the_simulator_rejects_is_recorded_not_raised(capsys, tmp_path):
    profile = tmp_path / "small.json"
    profile.write_text(json.dumps({"base": "h100-sxm", "sms": 40}))  # comm blocks 48 leave no compute block
    out = tmp_path / "v.json"
    code, _, _ = run_cli(capsys, "validate", "--measurements", str(QWEN), "--tokens", "1024", "--hardware", str(profile),
                         "--out", str(out))
    assert code == 0
    failed = [p for p in json.loads(out.read_text())["schedules"]["comet"]["points"] if p["status"] == "failed"]
    assert [p["config"]["comm_blocks0"] for p in failed] == [48] and "--comm-blocks0" in failed[0]["reason"]


def _bench(tmp_path: Path, **changes) -> Path:
    data = json.loads(QWEN.read_text())
    data["runs"] = data["runs"][:2]
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _bad_run(tmp_path: Path) -> Path:
    data = json.loads(QWEN.read_text())
    del data["runs"][1]["config"]["n_splits"]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def _baselines_only(data: dict) -> dict:
    """QWEN as `bench --kind baselines` writes it: one run per token count, no fused configuration (null)."""
    runs = {}
    for run in data["runs"]:
        runs.setdefault(run["tokens"], {**run, "config": None, "timings_us": {
            k: v for k, v in run["timings_us"].items() if k == "naive" or k.startswith(("b0", "b1_"))}})
    return {**data, "kind": "baselines", "runs": list(runs.values())}


def test_a_baselines_only_bench_file_is_validated(capsys, tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_baselines_only(json.loads(QWEN.read_text()))))
    out = tmp_path / "v.json"
    code, _, _ = run_cli(capsys, "validate", "--measurements", str(path), "--out", str(out))
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["schedules"]) == {"sequential", "chunked"} and report["schedules"]["sequential"]["n"] > 0
    # a fused figure still needs its configuration
    data = _baselines_only(json.loads(QWEN.read_text()))
    data["runs"][0]["timings_us"]["fused"] = 100.0
    path.write_text(json.dumps(data))
    code, text, err = run_cli(capsys, "validate", "--measurements", str(path), "--out", str(tmp_path / "w.json"))
    assert code == 2 and err.count("\n") == 1 and "runs[0].config: must be an object, got None" in err


@pytest.mark.parametrize("make, names", [
    (lambda d: d / "missing.json", "does not exist"),
    (lambda d: _write(d / "x.json", "{not json"), "not valid JSON"),
    (lambda d: MEASURED / "suite.json", "not a comet-dse bench result"),
    (lambda d: _bench(d, ep=3, gpus=3), ": ep: must divide"),
    (lambda d: _bench(d, ep=4), ": ep: ep x tp = 4 x 1 must equal gpus = 2"),
    (lambda d: _bench(d, shape={"experts": 64, "top_k": 4, "hidden": 2048}), ": shape.ffn: must be a positive integer"),
    (lambda d: _bench(d, dtype="int8"), ": dtype: must be one of"),
    (lambda d: _bad_run(d), "runs[1].config.n_splits: is missing"),
])
def test_bad_measurements_are_one_line_and_exit_2(capsys, tmp_path, make, names):
    out = tmp_path / "out" / "v.json"
    code, text, err = run_cli(capsys, "validate", "--measurements", str(QWEN), str(make(tmp_path)), "--out", str(out))
    assert code == 2 and text == ""
    assert err.count("\n") == 1 and names in err
    assert not out.exists() and not out.parent.exists()


@pytest.mark.parametrize("args, names", [
    (["--tokens", "1024,x"], "--tokens: expected comma-separated integers"),
    (["--tokens", "3"], "--tokens: no measured figure"),
    (["--hardware", "tpu"], "--hardware: unknown preset"),
    (["--html", "/proc/no/such/report.html"], "--html:"),
])
def test_bad_options_are_one_line_and_exit_2(capsys, tmp_path, args, names):
    out = tmp_path / "out" / "v.json"
    code, _, err = run_cli(capsys, "validate", "--measurements", str(QWEN), *args, "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and names in err
    assert not out.parent.exists()


def test_the_html_report_draws_every_section_from_the_same_figures(capsys, tmp_path):
    out, page = tmp_path / "v.json", tmp_path / "v.html"
    code, _, _ = run_cli(capsys, "validate", "--measurements", str(QWEN), "--tokens", "1024", "--out", str(out),
                         "--html", str(page))
    assert code == 0
    report, text = json.loads(out.read_text()), page.read_text()
    for div in ("parity-plot", "errors-plot", "sweep-plot"):
        assert f'draw("{div}", ' in text
    assert "Comet sweeps: rank correlation and regret" in text and 'src="http' not in text
    # the parity plot's points are the report's: every simulated comet point, measured on x, predicted on y
    parity = json.loads(re.search(r'draw\("parity-plot", (.*)\);\n', text).group(1))
    comet = next(t for t in parity["data"] if t["name"] == "comet")
    ok = [p for p in report["schedules"]["comet"]["points"] if p["status"] == "ok"]
    assert sorted(zip(comet["x"], comet["y"])) == sorted((p["measured_us"], p["predicted_us"]) for p in ok)


def test_a_bench_file_run_twice_is_pooled_in_the_json_the_table_and_the_page(capsys, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("bench-a.json", "bench-b.json"):  # the same figures twice: medians are the figures, noise 0
        shutil.copy(QWEN, runs / name)
    out, page = tmp_path / "v.json", tmp_path / "v.html"
    code, text, _ = run_cli(capsys, "validate", "--measurements", str(runs), "--tokens", "1024", "--out", str(out),
                            "--html", str(page))
    assert code == 0
    report = json.loads(out.read_text())
    pooled = report["repeated_sweeps"]
    assert pooled and all(s["repeats"] == 2 and s["noise_pct"] == 0.0 for s in pooled)
    single = {(s["tokens"], tuple(map(tuple, s["comm_blocks"]))): s for s in report["sweeps"]}
    for s in pooled:  # no noise: the pooled sweep is each file's own
        one = single[(s["tokens"], tuple(map(tuple, s["comm_blocks"])))]
        assert (s["spearman"], s["regret_pct"], s["measured_best"]) == (one["spearman"], one["regret_pct"], one["measured_best"])
        assert s["beyond_noise"] == (s["measured_spread_pct"] > 0)
    assert "comet sweeps measured more than once" in text
    assert "Sweeps measured more than once" in page.read_text()


def test_a_profile_without_the_loop_gemm_is_compared_with_the_grouped_b0(capsys, tmp_path):
    """The simulator prices B0 with the expert GEMMs the profile timed: without B0's per-expert
    torch.mm ("loop") that is torch._grouped_mm, so the figure to compare is b0_grouped, not b0."""
    profile = Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "h100-sxm-x2-synthetic.json"
    out = tmp_path / "v.json"
    code, _, _ = run_cli(capsys, "validate", "--measurements", str(QWEN), "--tokens", "1024", "--hardware", str(profile),
                         "--out", str(out))
    assert code == 0
    points = json.loads(out.read_text())["schedules"]["sequential"]["points"]
    raw = json.loads(QWEN.read_text())["runs"]
    assert [p["measured_key"] for p in points] == ["b0_grouped"]
    assert points[0]["measured_us"] == next(r["timings_us"]["b0_grouped"] for r in raw if r["tokens"] == 1024)


@pytest.mark.parametrize("timings, expected", [
    ({"b0_grouped": 10.0, "b0_loop": 9.0}, "loop"),  # before B1 timed both: B0's faster
    ({"b0_grouped": 9.0, "b0_loop": 10.0}, "grouped"),
    ({"b0_grouped": 9.0, "b0_loop": 9.0}, "grouped"),  # bench's min() keeps the first of EXPERT_GEMMS on a tie
    ({"b0": 9.0}, "grouped"),  # files that timed no loop ran torch._grouped_mm only
    # B1's own two, where timed, whatever B0 kept (another chunk count's figures do not count)
    ({"b0_grouped": 10.0, "b0_loop": 9.0, "b1_c4_grouped": 20.0, "b1_c4_loop": 30.0, "b1_c8_grouped": 50.0,
      "b1_c8_loop": 40.0}, "grouped"),
    ({"b0_grouped": 9.0, "b0_loop": 10.0, "b1_c4_grouped": 30.0, "b1_c4_loop": 20.0}, "loop"),
    ({"b0_grouped": 10.0, "b0_loop": 9.0, "b1_c8_grouped": 20.0, "b1_c8_loop": 30.0}, "loop"),
])
def test_b1_is_simulated_with_the_expert_gemm_bench_ran_it_with(timings, expected):
    from comet_dse.validation import b1_expert_gemm

    assert b1_expert_gemm(timings, 4) == expected


def test_each_chunked_point_carries_its_files_b1_gemm_and_b0_the_faster(tmp_path):
    from comet_dse.measurements import load_bench
    from comet_dse.validation import cases_of

    raw = json.loads(QWEN.read_text())
    for run in raw["runs"]:  # the loop faster at one token count only
        faster = run["tokens"] == 1024
        run["timings_us"]["b0_loop"] = run["timings_us"]["b0_grouped"] + (-1.0 if faster else 1.0)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(raw))
    cases = cases_of(load_bench(path), measured=True)
    chunked = {(c.tokens, c.knobs["expert_gemm"]) for c in cases if c.schedule == "chunked"}
    assert chunked and all(gemm == ("loop" if tokens == 1024 else "grouped") for tokens, gemm in chunked)
    assert {c.knobs["expert_gemm"] for c in cases if c.schedule == "sequential"} == {"best"}
    assert {c.knobs["expert_gemm"] for c in cases_of(load_bench(path), measured=True, b0_key="b0_grouped")
            if c.schedule == "sequential"} == {"grouped"}


@pytest.mark.parametrize("date, recorded, launches", [
    ("2026-11-25 18:58:59", None, 11),  # before step 1 moved to the device: torch ops
    ("2026-11-26 02:37:21", None, 7),  # the first runs of the device-side step 1 did not record it yet
    ("2026-11-26 02:37:21", "torch ops", 11),  # what a file records wins
    ("2026-11-25 18:58:59", "kernels", 7),
])
def test_each_file_is_simulated_with_the_prologue_its_kernels_launched(tmp_path, date, recorded, launches):
    from comet_dse.measurements import load_bench
    from comet_dse.validation import cases_of

    data = json.loads(QWEN.read_text())
    data["date"] = date
    for run in data["runs"]:
        if recorded is not None and run["config"]:
            run["config"]["pack"] = recorded
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    comet = [c for c in cases_of(load_bench(path), measured=True) if c.schedule == "comet"]
    assert comet and {c.knobs["prologue_launches"] for c in comet} == {launches}


@pytest.mark.parametrize("recorded, regroups", [(None, True), ("regroup", True), ("runs", False)])
def test_each_file_is_simulated_with_the_b0_loop_it_timed(tmp_path, recorded, regroups):
    """B0's and B1's loop GEMM took the rows as they arrived from 2026-11-27 18:00 (bench writes b0_loop "runs");
    files without the key timed the loop that regrouped them first."""
    from comet_dse.measurements import load_bench
    from comet_dse.validation import cases_of

    data = json.loads(QWEN.read_text())
    if recorded is not None:
        data["b0_loop"] = recorded
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    baselines = [c for c in cases_of(load_bench(path), measured=True) if c.schedule in ("sequential", "chunked")]
    assert baselines and {c.knobs.get("loop_regroups", False) for c in baselines} == {regroups}


def test_a_bench_file_with_an_unknown_b0_loop_is_refused_naming_the_field(capsys, tmp_path):
    data = json.loads(QWEN.read_text())
    data["b0_loop"] = "sideways"
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    code, out, err = run_cli(capsys, "validate", "--measurements", str(path), "--out", str(tmp_path / "v.json"))
    assert code == 2 and not out and not (tmp_path / "v.json").exists()
    assert err.strip().count("\n") == 0 and "b0_loop" in err and "runs, regroup" in err


def test_the_fused_layer_under_tp_is_simulated_as_its_virtual_experts(tmp_path):
    from comet_dse.measurements import load_bench
    from comet_dse.validation import cases_of, simulate_cases, workload_of

    # kernels/fused_tp.py runs the EP layer over (expert, FFN shard) pairs: the comet points are priced as that layer
    data = json.loads(QWEN.read_text())
    data["ep"], data["tp"] = 1, 2
    data["runs"] = [r for r in data["runs"] if r["tokens"] == 1024]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    bench = load_bench(path)
    cases = cases_of(bench, measured=True)
    comet = [c for c in cases if c.schedule == "comet"]
    assert comet and not any(c.skip for c in comet) and all(c.knobs["tp_dispatch"] == "rows" for c in comet)
    workloads = {(str(path), 1024): workload_of(bench, 1024)}
    points = simulate_cases(cases, workloads, HARDWARE_PRESETS["h100-sxm"])
    fused = [p for p in points if p["schedule"] == "comet" and p["config"]["comm_blocks0"] > 0]  # no copy engine on a preset
    assert fused and all(p["status"] == "ok" for p in fused)
    # B0 and B1 under TP are the TP collectives' layer, not the virtual experts'
    assert all("tp_dispatch" not in p["config"] for p in points if p["schedule"] != "comet")


@pytest.mark.parametrize("knob, reason", [("dedup", "deduplicated pulls"), ("prereduce", "pre-reduction")])
def test_fused_variants_the_simulator_does_not_model_are_skipped_with_a_reason(knob, reason):
    from comet_dse.validation import _comet_skip

    config = {"comm_blocks0": 16, "n_splits": 4, "block_n": 128, "block_n1": None, "programs": None}
    assert _comet_skip(config, 4096, measured=True) is None
    assert reason in _comet_skip({**config, knob: True}, 4096, measured=True)


@pytest.mark.parametrize("layer_timing", ["spin", None])
def test_the_fused_kernels_are_compared_alone_where_bench_timed_them_behind_a_spin(capsys, tmp_path, layer_timing):
    """bench's per-layer figures (layer0:fused, layer1:fused) against the simulator's kernel spans; files that timed
    them without a device spin (before run 64) carry each launch's host time, so they are left out."""
    data = json.loads(QWEN.read_text())
    data["runs"] = [r for r in data["runs"] if r["tokens"] == 1024 and r["config"] and r["config"]["comm_blocks0"] > 0]
    for i, run in enumerate(data["runs"]):
        run["timings_us"].update({"layer0:fused": 100.0 + i, "layer1:fused": 50.0 + i})
    if layer_timing is not None:
        data["layer_timing"] = layer_timing
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "v.json"
    page = tmp_path / "v.html"
    code, text, _ = run_cli(capsys, "validate", "--measurements", str(path), "--out", str(out), "--html", str(page))
    assert code == 0
    report = json.loads(out.read_text())
    points = report["schedules"]["comet"]["points"]
    assert ("kernels-title" in page.read_text()) == (layer_timing is not None)
    if layer_timing is None:
        assert report["kernels"] == {} and not any("kernels" in p for p in points)
        assert "kernels alone" not in text
        return
    wl = Workload(ModelConfig("qwen2-moe-2.7b", 64, 4, 2048, 1408, num_layers=1), 1024, 2)
    for p in points:
        c = p["config"]
        knobs = {k: c[k] for k in ("comm_blocks0", "comm_blocks1", "block_m", "block_n", "row_order", "n_splits",
                                    "tile_layout", "tile_order", "prologue_launches")}
        expected = simulate(wl, HARDWARE_PRESETS["h100-sxm"], Comet(**knobs)).kernels_us
        i = p["run"]
        for kernel, measured in (("layer0", 100.0 + i), ("layer1", 50.0 + i)):
            k = p["kernels"][kernel]
            assert k["measured_us"] == measured and k["predicted_us"] == round(expected[kernel], 2)
            assert k["error_pct"] == round(100 * (expected[kernel] - measured) / measured, 2)
    for kernel in ("layer0", "layer1"):
        errors = [p["kernels"][kernel]["error_pct"] for p in points]
        assert report["kernels"][kernel]["n"] == len(points) >= 2
        assert report["kernels"][kernel]["mape_pct"] == pytest.approx(sum(map(abs, errors)) / len(errors), abs=0.01)
    assert "the fused layer's kernels alone" in text and "layer1: " in text


def test_each_file_is_simulated_with_the_forward_fixed_time_timed_as_it_started_its_calls(tmp_path):
    """bench --align queued (the default since run 102) starts each call behind a device spin: its fused layer is
    priced with the profile's queued figure; a file timed from a host barrier (every earlier one) with the host's."""
    from comet_dse.hardware import load_hardware
    from comet_dse.measurements import load_bench
    from comet_dse.sim.fused_costs import EPILOGUE_OPS, PROLOGUE_OPS
    from comet_dse.validation import cases_of, simulate_cases, workload_of

    profile = json.loads((RESULTS / "hardware" / "h200-x2-run101.json").read_text())
    host_us = profile["figures"]["forward_fixed_us"]
    profile["figures"]["forward_fixed_queued_us"] = host_us - 20.0
    profile["sources"]["forward_fixed_queued_us"] = "hand-made: 20 us below the host-timed figure"
    (tmp_path / "p.json").write_text(json.dumps(profile))
    hw = load_hardware(tmp_path / "p.json")
    predicted = {}
    for align in ("host", "queued"):
        bench = load_bench(_bench(tmp_path, align=align))
        assert bench.align == align
        cases = [c for c in cases_of(bench, measured=True) if c.schedule == "comet"][:1]
        workloads = {(c.source, c.tokens): workload_of(bench, c.tokens) for c in cases}
        predicted[align], = [p["predicted_us"] for p in simulate_cases(cases, workloads, hw)]
        launches = cases[0].knobs["prologue_launches"] + EPILOGUE_OPS
    # 20 us less over the 9 small kernels of today's forward; this file's older pack launched 11 before layer0
    assert launches == 13
    assert predicted["host"] - predicted["queued"] == pytest.approx(20.0 * launches / (PROLOGUE_OPS + EPILOGUE_OPS), abs=0.05)


def test_a_bench_file_with_an_unknown_align_is_refused_naming_the_field(capsys, tmp_path):
    path = _bench(tmp_path, align="sideways")
    code, out, err = run_cli(capsys, "validate", "--measurements", str(path), "--out", str(tmp_path / "v.json"))
    assert code == 2 and not out and not (tmp_path / "v.json").exists()
    assert err.strip().count("\n") == 0 and "align" in err and "host, devices, queued" in err


def test_the_fused_layer_is_priced_after_benchs_gap_where_the_profile_timed_the_power_state(tmp_path):
    """bench starts each call after a host barrier and a device spin, off the power cap: asked to (validate
    --after-gap), a profile with calibrate's power_state table prices each comet point's GEMM tiles at the table's
    factor for the forward's length at the cap (recorded as gemm_scale); without the table, or by default, at the cap;
    the baselines either way as before."""
    from comet_dse.hardware import load_hardware
    from comet_dse.measurements import load_bench
    from comet_dse.validation import cases_of, simulate_cases, workload_of

    with_table = RESULTS / "hardware" / "h200-x2-run134.json"
    profile = json.loads(with_table.read_text())
    power = profile["tables"].pop("power_state")
    (tmp_path / "at-cap.json").write_text(json.dumps(profile))
    bench = load_bench(next((RESULTS / "measurements" / "ep2_h200" / "run134").glob("bench-mixtral-8x7b-*.json")))
    cases = [c for c in cases_of(bench, tokens={1024, 16384}, measured=True)
             if c.schedule == "sequential" or (c.schedule == "comet" and c.knobs["comm_blocks0"] == 8)]
    workloads = {(c.source, c.tokens): workload_of(bench, c.tokens) for c in cases}
    after, at_cap = (simulate_cases(cases, workloads, load_hardware(p), after_gap=True)
                     for p in (with_table, tmp_path / "at-cap.json"))
    assert simulate_cases(cases, workloads, load_hardware(with_table)) == at_cap  # the default: at the cap
    call_us = power["call_us"]
    for a, c in zip(after, at_cap):
        if a["schedule"] == "sequential":
            assert a["predicted_us"] == c["predicted_us"] and "gemm_scale" not in a
            continue
        assert "gemm_scale" not in c
        # the factor read at the forward's length at the cap: 1024 tokens (~1.4 ms) between the table's first chains,
        # 16384 (~23 ms) past the chains of 16 calls, where the stream has reached the cap
        assert (a["tokens"] == 1024) == (c["predicted_us"] < 2 * call_us)
        assert 0.85 < a["gemm_scale"] < 0.95 if a["tokens"] == 1024 else a["gemm_scale"] > 0.99
        assert a["predicted_us"] < c["predicted_us"] * (a["gemm_scale"] + 0.02)
