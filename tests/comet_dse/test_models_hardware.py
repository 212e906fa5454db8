import json
from dataclasses import fields

import pytest

from comet_dse.errors import UserError
from comet_dse.hardware import HARDWARE_PRESETS, HardwareProfile, resolve_hardware
from comet_dse.models import MODEL_PRESETS, load_hf_config, resolve_model
from comet_dse.workload import Workload


def test_presets_hold_the_published_shapes():
    mixtral = MODEL_PRESETS["mixtral-8x7b"]
    assert (mixtral.num_experts, mixtral.top_k, mixtral.hidden, mixtral.ffn) == (8, 2, 4096, 14336)
    assert MODEL_PRESETS["deepseek-v3"].shared_ffn == 2048
    assert MODEL_PRESETS["qwen2-moe-2.7b"].shared_ffn == 5632
    assert MODEL_PRESETS["phi-3.5-moe"].shared_ffn == 0


@pytest.mark.parametrize("config, expected", [
    ({"num_local_experts": 8, "num_experts_per_tok": 2, "hidden_size": 4096, "intermediate_size": 14336,
      "num_hidden_layers": 32}, (8, 2, 4096, 14336, 0)),
    ({"num_experts": 60, "num_experts_per_tok": 4, "hidden_size": 2048, "moe_intermediate_size": 1408,
      "intermediate_size": 5632, "shared_expert_intermediate_size": 5632, "num_hidden_layers": 24}, (60, 4, 2048, 1408, 5632)),
    ({"n_routed_experts": 256, "num_experts_per_tok": 8, "hidden_size": 7168, "moe_intermediate_size": 2048,
      "intermediate_size": 18432, "n_shared_experts": 1, "num_hidden_layers": 61}, (256, 8, 7168, 2048, 2048)),
])
def test_hf_config_loader(tmp_path, config, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    m = resolve_model(str(path))
    assert (m.num_experts, m.top_k, m.hidden, m.ffn, m.shared_ffn) == expected


@pytest.mark.parametrize("text, message", [("{not json", "not valid JSON"), ('{"hidden_size": 4}', "not an MoE config"), ("[1]", "JSON object")])
def test_bad_config_json(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_hf_config(path)


def test_unknown_presets():
    with pytest.raises(UserError, match="unknown preset"):
        resolve_model("gpt-5")
    with pytest.raises(UserError, match="unknown preset"):
        resolve_hardware("a100")


@pytest.mark.parametrize("name", sorted(HARDWARE_PRESETS))
def test_hardware_presets_name_a_source_for_every_figure(name):
    hw = HARDWARE_PRESETS[name]
    figures = {f.name for f in fields(HardwareProfile)} - {"name", "sources"}
    shared_estimates = {"gpus_per_node", "nic_latency_us"}
    assert figures - shared_estimates <= set(hw.sources), figures - set(hw.sources)


def test_block_curve_follows_the_measured_points():
    h200 = HARDWARE_PRESETS["h200-sxm"]
    measured = {8: 124, 16: 237, 24: 314, 64: 329, 132: 346}
    for blocks, gbps in measured.items():
        assert h200.comm_blocks_GBps(blocks) == pytest.approx(gbps, rel=0.06)
    assert all(h200.comm_blocks_GBps(n) < h200.comm_blocks_GBps(n + 1) for n in range(1, 131))


def test_gemm_tile_model_matches_the_measured_grouped_gemms():
    h200 = HARDWARE_PRESETS["h200-sxm"]
    # torch._grouped_mm 8192x4096x14336, 4 experts: 1.24 ms; 8192x7168x2048, 64 experts: 0.54 ms
    for rows, k, n, experts, measured_ms in ((8192, 4096, 14336, 4, 1.24), (8192, 7168, 2048, 64, 0.54)):
        m_tiles = rows // experts // 128
        tiles = experts * m_tiles * (n // 128)
        waves = -(-tiles // h200.sms)
        ms = waves * h200.gemm_tile_ns(128, 128, k, m_tiles, n // 128, 2) / 1e6
        assert ms == pytest.approx(measured_ms, rel=0.25)


def test_hardware_json_overrides_a_preset(tmp_path):
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"base": "h200-sxm", "link_GBps": 300.0, "name": "h200-measured"}))
    hw = resolve_hardware(str(path))
    assert hw.link_GBps == 300.0 and hw.sms == 132 and hw.name == "h200-measured"
    assert hw.sources["link_GBps"] == str(path)
    path.write_text(json.dumps({"base": "h200-sxm", "links": 3}))
    with pytest.raises(UserError, match="unknown keys"):
        resolve_hardware(str(path))


def test_workload_checks_the_layout():
    model = MODEL_PRESETS["mixtral-8x7b"]
    with pytest.raises(UserError, match="must divide the model's 8 experts"):
        Workload(model, 16, 3)
    with pytest.raises(UserError, match="must divide the expert width"):
        Workload(model, 16, 8, tp=3)
    with pytest.raises(UserError, match="positive integer"):
        Workload(model, 0, 8)
