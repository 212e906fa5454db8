"""Every MoE family's config.json as transformers writes it (tests/fixtures/hf_configs/):
it loads with the right shape, and `simulate` runs on it with default flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comet_dse.cli import main
from comet_dse.models import load_hf_config
from tests.conftest import HF_CONFIGS, ep_for

# (E, top-k, H, F, shared, MoE layers) as the published config.json files say
SHAPES = {
    "deepseek-v3": (256, 8, 7168, 2048, 2048, 58),  # first 3 of 61 layers dense
    "glm-4.5-air": (128, 8, 4096, 1408, 1408, 45),  # first of 46 dense
    "glm-4.5": (160, 8, 5120, 1536, 1536, 89),  # first 3 of 92 dense
    "gpt-oss-120b": (128, 4, 2880, 2880, 0, 36),
    "gpt-oss-20b": (32, 4, 2880, 2880, 0, 24),
    "llama-4-maverick": (128, 1, 5120, 8192, 8192, 24),  # every other layer MoE, one shared expert
    "llama-4-scout": (16, 1, 5120, 8192, 8192, 48),
    "llama4-text-default": (16, 1, 5120, 8192, 8192, 48),
    "mixtral-8x22b": (8, 2, 6144, 16384, 0, 56),
    "mixtral-8x7b": (8, 2, 4096, 14336, 0, 32),
    "olmoe-1b-7b": (64, 8, 2048, 1024, 0, 16),
    "olmoe-default": (64, 8, 2048, 2048, 0, 16),
    "phi-3.5-moe": (16, 2, 4096, 6400, 0, 32),
    "qwen2-57b-a14b": (64, 8, 3584, 2560, 20480, 28),
    "qwen2-moe-a2.7b": (60, 4, 2048, 1408, 5632, 24),
    "qwen3-235b-a22b": (128, 8, 4096, 1536, 0, 94),
    "qwen3-30b-a3b": (128, 8, 2048, 768, 0, 48),
    "qwen3-moe-default": (128, 8, 2048, 768, 0, 24),
}


def config_path(name: str) -> str:
    return str(HF_CONFIGS / f"{name}.json")


def test_every_fixture_has_an_expected_shape():
    assert {p.stem for p in HF_CONFIGS.glob("*.json")} == set(SHAPES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_config_loads_with_its_published_shape(name):
    m = load_hf_config(config_path(name))
    assert (m.num_experts, m.top_k, m.hidden, m.ffn, m.shared_ffn, m.num_layers) == SHAPES[name]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_simulate_runs_with_default_flags(capsys, name):
    experts = SHAPES[name][0]
    code = main(["simulate", "--model", config_path(name), "--ep", str(ep_for(experts)), "--tokens", "128", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads(out)["results"]
    assert set(results) == {"sequential", "chunked", "comet"}
    assert all(r["latency_us"] > 0 for r in results.values())


def test_defaults_fit_an_h_that_128_does_not_divide(capsys):
    """GPT-OSS, H = 2880 = 45 x 64: a 64-wide tile and the largest legal split count up to 4."""
    assert main(["simulate", "--model", config_path("gpt-oss-20b"), "--tokens", "128", "--json"]) == 0
    params = json.loads(capsys.readouterr().out)["results"]["comet"]["params"]
    assert (params["block_m"], params["block_n"], params["n_splits"]) == (128, 64, 3)


def test_an_illegal_split_count_lists_the_legal_ones(capsys):
    code = main(["simulate", "--model", config_path("gpt-oss-20b"), "--tokens", "128", "--tile", "128x128", "--n-splits", "4"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == ("comet-dse: error: --n-splits: must divide the 23 column tiles of H=2880 "
                                         "at block_n=128: one of 1, 23; got 4")


def mixtral_with(**changes) -> dict:
    config = json.loads(Path(config_path("mixtral-8x7b")).read_text())
    return {**config, **changes}


def without(key: str) -> dict:
    return {k: v for k, v in mixtral_with().items() if k != key}


@pytest.mark.parametrize("config, key, says", [
    (mixtral_with(hidden_size=4096.0), "hidden_size", "must be an integer >= 1"),
    (mixtral_with(num_local_experts=True), "num_local_experts", "must be an integer >= 1"),
    (mixtral_with(num_experts_per_tok="2"), "num_experts_per_tok", "must be an integer >= 1"),
    (mixtral_with(intermediate_size=-1), "intermediate_size", "must be an integer >= 1"),
    (mixtral_with(n_shared_experts=1.5), "n_shared_experts", "must be an integer >= 0"),
    (without("hidden_size"), "hidden_size", "an integer is needed"),
    (without("num_hidden_layers"), "num_hidden_layers", "an integer is needed"),
    (without("num_local_experts"), "num_local_experts", "not an MoE config.json"),
    (mixtral_with(first_k_dense_replace=32), "num_hidden_layers", "no MoE layer"),  # every layer dense
    (mixtral_with(moe_layers="all"), "moe_layers", "list of integer layer indices"),
    ({"model_type": "llama4", "text_config": [1]}, "text_config", "must be a JSON object"),
])
def test_bad_key_is_one_line_naming_it(capsys, tmp_path, config, key, says):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code = main(["simulate", "--model", str(path), "--tokens", "128"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"comet-dse: error: {key}: "), err
    assert says in err and "Traceback" not in err
