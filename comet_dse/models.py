"""MoE model shapes: a dataclass, named presets, and a loader for HuggingFace `config.json`.

Only what the MoE layer's cost depends on is kept: expert count E, top-k, hidden size H,
expert intermediate size F (per expert, before TP), and the shared experts' width.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from comet_dse.errors import UserError
from comet_dse.files import read_json_object


@dataclass(frozen=True)
class ModelConfig:
    name: str
    num_experts: int  # E, routed experts
    top_k: int
    hidden: int  # H
    ffn: int  # F, one routed expert's intermediate size (SwiGLU: GEMM0 is H -> 2F)
    num_layers: int  # layers with an MoE block (a config.json's dense layers not counted)
    shared_ffn: int = 0  # total intermediate size of the shared experts (0: none)
    source: str = ""

    def __post_init__(self) -> None:
        for field_name in ("num_experts", "top_k", "hidden", "ffn", "num_layers"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value <= 0:
                raise UserError(f"model.{field_name}", f"must be a positive integer, got {value!r}")
        if self.top_k > self.num_experts:
            raise UserError("model.top_k", f"must be <= num_experts ({self.num_experts}), got {self.top_k}")
        if self.shared_ffn < 0:
            raise UserError("model.shared_ffn", f"must be >= 0, got {self.shared_ffn}")

    def to_dict(self) -> dict:
        return asdict(self)

    def shape(self) -> dict:
        """The fields the simulator reads: a tuning study's identity (num_layers, name and
        source change no prediction). A new field the simulator uses belongs here too."""
        return {"num_experts": self.num_experts, "top_k": self.top_k, "hidden": self.hidden, "ffn": self.ffn,
                "shared_ffn": self.shared_ffn}


# Shapes as published by the model authors (HF config.json) and the Comet paper (arXiv 2502.19811).
MODEL_PRESETS: dict[str, ModelConfig] = {
    m.name: m
    for m in (
        ModelConfig("mixtral-8x7b", 8, 2, 4096, 14336, 32,
                    source="mistralai/Mixtral-8x7B-v0.1 config.json; Comet paper Table 2"),
        # The HF checkpoint (Qwen1.5-MoE-A2.7B) has 60 routed experts; the Comet paper and
        # DESIGN.md use E=64, which also divides EP=8/16/32/64.
        ModelConfig("qwen2-moe-2.7b", 64, 4, 2048, 1408, 24, shared_ffn=5632,
                    source="Comet paper Table 2 (E=64); shared_expert_intermediate_size from Qwen1.5-MoE-A2.7B config.json"),
        ModelConfig("phi-3.5-moe", 16, 2, 4096, 6400, 32,
                    source="microsoft/Phi-3.5-MoE-instruct config.json; Comet paper Table 2"),
        ModelConfig("deepseek-v3", 256, 8, 7168, 2048, 61, shared_ffn=2048,
                    source="deepseek-ai/DeepSeek-V3 config.json (n_routed_experts=256, n_shared_experts=1, moe_intermediate_size=2048)"),
    )
}


# HuggingFace key names per quantity, first match wins. Mixtral, Phi-MoE, GPT-OSS, Llama 4 and
# Qwen3-MoE (transformers >= 5) say num_local_experts; Qwen2-MoE, OLMoE and older Qwen3-MoE
# num_experts; DeepSeek-V2/V3 and GLM-4-MoE n_routed_experts.
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
TOP_K_KEYS = ("num_experts_per_tok", "experts_per_token", "moe_topk", "top_k")
# where both exist, intermediate_size is the dense MLP's width (Qwen-MoE, DeepSeek, GLM-4-MoE)
FFN_KEYS = ("moe_intermediate_size", "intermediate_size")
SHARED_EXPERT_TYPES = ("llama4", "llama4_text")  # one shared expert as wide as a routed one, no key says so


def _int(config: dict, key: str, path: Path, minimum: int = 1) -> int | None:
    """config[key] as an int >= minimum; None when absent or null. JSON's true and 4096.0 are no integers."""
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(key, f"must be an integer >= {minimum} in {path}, got {json.dumps(value)}")
    return value


def _first_int(config: dict, keys: tuple[str, ...], path: Path) -> int:
    for key in keys:
        if (value := _int(config, key, path)) is not None:
            return value
    looked = keys[0] if len(keys) == 1 else f"any of {', '.join(keys)}"
    hint = " (not an MoE config.json?)" if keys == EXPERT_KEYS else ""
    raise UserError(keys[0], f"{path} has no {looked}; an integer is needed{hint}")


def _int_list(config: dict, key: str, path: Path) -> list[int] | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise UserError(key, f"must be a list of integer layer indices in {path}, got {json.dumps(value)}")
    return value


def _moe_layers(config: dict, path: Path) -> int:
    """Decoder layers with an MoE block; dense layers between them (DeepSeek's first k, Qwen's
    sparse step, Llama 4's interleave) do not count."""
    layers = _first_int(config, ("num_hidden_layers",), path)
    if (moe_layers := _int_list(config, "moe_layers", path)) is not None:  # Llama 4 lists them
        count = len({i for i in moe_layers if 0 <= i < layers})
    elif (step := _int(config, "interleave_moe_layer_step", path)) is not None:  # Llama 4 without the list
        count = len(range(step - 1, layers, step))
    elif (dense_first := _int(config, "first_k_dense_replace", path, minimum=0)) is not None:  # DeepSeek, GLM-4-MoE
        count = layers - dense_first
    else:  # Qwen2/3-MoE: every decoder_sparse_step-th layer not in mlp_only_layers
        step = _int(config, "decoder_sparse_step", path) or 1
        dense = set(_int_list(config, "mlp_only_layers", path) or ())
        count = sum(1 for i in range(layers) if i not in dense and (i + 1) % step == 0)
    if count < 1:
        raise UserError("num_hidden_layers", f"{path} describes no MoE layer")
    return count


def _shared_ffn(config: dict, ffn: int, path: Path) -> int:
    if (width := _int(config, "shared_expert_intermediate_size", path, minimum=0)) is not None:  # Qwen2-MoE
        return width
    if (count := _int(config, "n_shared_experts", path, minimum=0)) is not None:  # DeepSeek-V2/V3, GLM-4-MoE
        return count * ffn
    return ffn if config.get("model_type") in SHARED_EXPERT_TYPES else 0


def _text_config(config: dict, path: Path) -> dict:
    """The language model's part: a multimodal config (Llama 4) nests it under text_config."""
    nested = config.get("text_config")
    if any(key in config for key in EXPERT_KEYS) or nested is None:
        return config
    if not isinstance(nested, dict):
        raise UserError("text_config", f"must be a JSON object in {path}, got {json.dumps(nested)}")
    return nested


def load_hf_config(path: str | Path) -> ModelConfig:
    """Read an MoE model's HuggingFace config.json, as transformers writes it for Mixtral, Qwen2-MoE,
    Qwen3-MoE, Phi-MoE, OLMoE, DeepSeek-V3, GLM-4-MoE, GPT-OSS and Llama 4."""
    path = Path(path)
    outer = read_json_object(path, "--model")
    config = _text_config(outer, path)
    experts = _first_int(config, EXPERT_KEYS, path)
    top_k = _first_int(config, TOP_K_KEYS, path)
    hidden = _first_int(config, ("hidden_size",), path)
    ffn = _first_int(config, FFN_KEYS, path)
    shared = _shared_ffn(config, ffn, path)
    name = outer.get("_name_or_path") or outer.get("model_type") or path.stem
    return ModelConfig(str(name), experts, top_k, hidden, ffn, _moe_layers(config, path), shared_ffn=shared, source=str(path))


def resolve_model(name_or_path: str) -> ModelConfig:
    """A preset name or a path to a config.json."""
    if name_or_path in MODEL_PRESETS:
        return MODEL_PRESETS[name_or_path]
    if name_or_path.endswith(".json") or Path(name_or_path).exists():
        return load_hf_config(name_or_path)
    raise UserError("--model", f"unknown preset {name_or_path!r}; choose one of {', '.join(MODEL_PRESETS)} or give a config.json path")
