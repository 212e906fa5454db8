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
