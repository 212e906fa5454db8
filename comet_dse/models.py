"""MoE model shapes: a dataclass, named presets, and a loader for HuggingFace `config.json`.

Only what the MoE layer's cost depends on is kept: expert count E, top-k, hidden size H,
expert intermediate size F (per expert, before TP), and the shared experts' width.
"""

from __future__ import annotations

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
    num_layers: int
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


def _first_key(config: dict, keys: tuple[str, ...], path: Path) -> int:
    for key in keys:
        if isinstance(config.get(key), int):
            return config[key]
    raise UserError("--model", f"{path} has none of {', '.join(keys)} (not an MoE config.json?)")


def load_hf_config(path: str | Path) -> ModelConfig:
    """Read an MoE model's HuggingFace-style config.json (Mixtral, Qwen2-MoE, Phi-MoE, DeepSeek)."""
    path = Path(path)
    config = read_json_object(path, "--model")
    experts = _first_key(config, ("num_local_experts", "num_experts", "n_routed_experts"), path)
    top_k = _first_key(config, ("num_experts_per_tok", "moe_topk", "top_k"), path)
    hidden = _first_key(config, ("hidden_size",), path)
    ffn = _first_key(config, ("moe_intermediate_size", "intermediate_size"), path)
    layers = _first_key(config, ("num_hidden_layers",), path)
    shared = 0
    if isinstance(config.get("shared_expert_intermediate_size"), int):  # Qwen2-MoE
        shared = config["shared_expert_intermediate_size"]
    elif isinstance(config.get("n_shared_experts"), int):  # DeepSeek-V2/V3
        shared = config["n_shared_experts"] * ffn
    name = config.get("_name_or_path") or config.get("model_type") or path.stem
    return ModelConfig(str(name), experts, top_k, hidden, ffn, layers, shared_ffn=shared, source=str(path))


def resolve_model(name_or_path: str) -> ModelConfig:
    """A preset name or a path to a config.json."""
    if name_or_path in MODEL_PRESETS:
        return MODEL_PRESETS[name_or_path]
    if name_or_path.endswith(".json") or Path(name_or_path).exists():
        return load_hf_config(name_or_path)
    raise UserError("--model", f"unknown preset {name_or_path!r}; choose one of {', '.join(MODEL_PRESETS)} or give a config.json path")
