import json
import re

import numpy as np
import pytest

from comet_dse.errors import UserError
from comet_dse.models import MODEL_PRESETS
from comet_dse.routing import make_routing
from comet_dse.workload import Workload

QWEN = MODEL_PRESETS["qwen2-moe-2.7b"]


@pytest.mark.parametrize("spec", ["uniform", "std:0.005", "zipf:1.2"])
def test_every_rank_routes_all_its_rows(spec):
    wl = Workload(QWEN, 1000, 8, routing=spec, seed=1)
    counts = make_routing(wl).counts
    assert counts.shape == (8, 64)
    assert (counts.sum(axis=1) == 1000 * 4).all()
    assert (counts >= 0).all()


def test_std_routing_reaches_the_requested_imbalance():
    wl = Workload(QWEN, 16384, 8, routing="std:0.005", seed=2)
    assert make_routing(wl).load_std == pytest.approx(0.005, rel=0.1)
    assert make_routing(Workload(QWEN, 16384, 8)).load_std < 0.001


def test_zipf_makes_a_hot_expert():
    shares = make_routing(Workload(QWEN, 4096, 8, routing="zipf:1.0", seed=0)).shares
    assert shares.max() > 5 * np.median(shares)


def test_same_seed_same_counts():
    a = make_routing(Workload(QWEN, 512, 8, routing="std:0.01", seed=4)).counts
    b = make_routing(Workload(QWEN, 512, 8, routing="std:0.01", seed=4)).counts
    c = make_routing(Workload(QWEN, 512, 8, routing="std:0.01", seed=5)).counts
    assert (a == b).all() and not (a == c).all()


def test_trace_rows_are_dealt_to_ranks_in_order(tmp_path):
    trace = np.array([[0, 1], [2, 3], [0, 63]])
    np.save(tmp_path / "t.npy", trace)
    wl = Workload(QWEN, 2, 2, routing=f"trace:{tmp_path / 't.npy'}")  # top-4 model: wrong width
    with pytest.raises(UserError, match=r"expected \(tokens, 4\)"):
        make_routing(wl)
    model = MODEL_PRESETS["mixtral-8x7b"]
    trace = np.array([[0, 1], [2, 3], [7, 6]])
    np.save(tmp_path / "m.npy", trace)
    counts = make_routing(Workload(model, 2, 2, routing=f"trace:{tmp_path / 'm.npy'}")).counts
    # rank 0: rows 0, 1; rank 1: rows 2, 0 (wraps around)
    assert counts[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert counts[1].tolist() == [1, 1, 0, 0, 0, 0, 1, 1]


@pytest.mark.parametrize("spec, message", [
    ("gaussian", "unknown routing"), ("std:abc", "not a number"), ("std:-1", ">= 0"), ("trace:", "needs a file"),
    ("trace:/nonexistent.npy", "cannot read trace"),
])
def test_bad_specs_name_the_field(spec, message):
    with pytest.raises(UserError, match=message) as err:
        make_routing(Workload(QWEN, 16, 8, routing=spec))
    assert err.value.field == "--routing"


def test_trace_ids_out_of_range(tmp_path):
    np.save(tmp_path / "bad.npy", np.array([[0, 8]]))
    with pytest.raises(UserError, match=r"allowed \[0, 7\]"):
        make_routing(Workload(MODEL_PRESETS["mixtral-8x7b"], 4, 8, routing=f"trace:{tmp_path / 'bad.npy'}"))


MIXTRAL = MODEL_PRESETS["mixtral-8x7b"]


def _counts_file(tmp_path, data, name="counts.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_counts_are_each_ranks_rows_in_the_layers_proportions(tmp_path):
    path = _counts_file(tmp_path, {"counts": [[1, 1, 2, 0, 0, 0, 0, 4], [1] * 8]})
    routing = make_routing(Workload(MIXTRAL, 100, 2, routing=f"counts:{path}#0"))
    # 200 rows per rank over 1/8, 1/8, 2/8, 4/8: exact shares, the same on both ranks, no draw
    assert routing.counts.tolist() == [[25, 25, 50, 0, 0, 0, 0, 100]] * 2
    assert routing.shares.tolist() == [0.125, 0.125, 0.25, 0, 0, 0, 0, 0.5]


def test_counts_per_source_rank_and_largest_remainder(tmp_path):
    per_rank = [[[1] * 8, [3, 0, 0, 0, 0, 0, 0, 0]]]  # one layer, rank 0 uniform, rank 1 all to expert 0
    path = _counts_file(tmp_path, per_rank)
    counts = make_routing(Workload(MIXTRAL, 3, 2, routing=f"counts:{path}")).counts
    # 6 rows over 8 equal shares: 0.75 each, the six largest remainders (ties: lower expert) get 1
    assert counts.tolist() == [[1, 1, 1, 1, 1, 1, 0, 0], [6, 0, 0, 0, 0, 0, 0, 0]]


def test_csv_with_a_header_reads_as_the_json(tmp_path):
    json_path = _counts_file(tmp_path, [[5, 1, 1, 1, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6, 7, 8]])
    csv_path = _counts_file(tmp_path, "e0,e1,e2,e3,e4,e5,e6,e7\n5,1,1,1,1,1,1,1\n1,2,3,4,5,6,7,8\n", "counts.csv")
    for layer in (0, 1):
        a = make_routing(Workload(MIXTRAL, 512, 8, routing=f"counts:{json_path}#{layer}")).counts
        b = make_routing(Workload(MIXTRAL, 512, 8, routing=f"counts:{csv_path}#{layer}")).counts
        assert (a == b).all() and (a.sum(axis=1) == 1024).all()


def test_the_example_file_reads():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "results" / "examples" / "routing-counts-mixtral-8x7b.json"
    routing = make_routing(Workload(MIXTRAL, 4096, 8, routing=f"counts:{example}#3"))
    assert (routing.counts.sum(axis=1) == 4096 * 2).all() and routing.load_std > 0.01


@pytest.mark.parametrize("data, spec_tail, message", [
    ([[1] * 7], "", "has 7 experts per layer; the model has 8"),
    ([[1] * 8, [1] * 8], "", "has 2 layers: pick one with counts:"),
    ([[1] * 8], "#1", "has layers 0 … 0; got #1"),
    ([[1, -1, 1, 1, 1, 1, 1, 1]], "", "counts must be finite numbers >= 0"),
    ([[0] * 8], "", "routes no tokens"),
    ([[[1] * 8] * 3], "", "has 3 source ranks per layer; the workload has EP x TP = 2"),
    ([[1] * 8, [1] * 4], "", "every layer must have the same shape"),
    ({"layers": []}, "", "must hold a list of layers"),
    ("not json", "", "is not JSON"),
])
def test_bad_counts_files_name_the_field(tmp_path, data, spec_tail, message):
    path = _counts_file(tmp_path, data)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        make_routing(Workload(MIXTRAL, 64, 2, routing=f"counts:{path}{spec_tail}"))
    assert err.value.field == "--routing"
