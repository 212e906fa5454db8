"""Plans: per token bucket, the tuned configuration and what the simulator predicts for it.

A plan is what a runtime consults the way Comet consults its table of precompiled kernel
variants: `load_plan(path).lookup(tokens)` gives the configuration for the token count it
sees. It imports nothing beyond the standard library, so the GPU machines can read it.

Nearest-bucket rule: the bucket closest to `tokens` on a log2 scale (token buckets are
powers of two apart, and a kernel's behaviour scales with the ratio, not the difference);
on a tie the larger bucket; below the smallest bucket the smallest, above the largest the
largest.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from comet_dse.errors import UserError
from comet_dse.files import read_json_object, write_text_atomic

PLAN_VERSION = 1


@dataclass(frozen=True)
class PlanEntry:
    tokens: int
    config: dict  # the comet schedule's knobs: comm_blocks0/1, block_m, block_n, row_order, n_splits, tile_layout, tile_order
    chunked: dict  # the best chunk count of the coarse pipeline
    predicted_us: dict  # latency of comet, chunked and sequential with their best knobs
    speedup: dict  # comet over sequential and over chunked
    trials: int
    digest: str = ""  # of the study inputs the predictions answer for (empty in plans made before digests)


@dataclass
class Plan:
    model: str
    hardware: str
    ep: int
    tp: int
    entries: list[PlanEntry]
    meta: dict = field(default_factory=dict)  # hardware profile, routing, objective, versions

    def __post_init__(self) -> None:
        self.entries = sorted(self.entries, key=lambda e: e.tokens)

    def entry(self, tokens: int) -> PlanEntry:
        if not isinstance(tokens, int) or tokens <= 0:
            raise UserError("tokens", f"must be a positive integer, got {tokens!r}")
        if not self.entries:
            raise UserError("plan", "has no token buckets")
        target = math.log2(tokens)
        return min(self.entries, key=lambda e: (abs(math.log2(e.tokens) - target), -e.tokens))

    def lookup(self, tokens: int) -> dict:
        """The configuration for `tokens` tokens per GPU (nearest bucket, see the module doc)."""
        return dict(self.entry(tokens).config)

    def to_dict(self) -> dict:
        return {
            "version": PLAN_VERSION, "model": self.model, "hardware": self.hardware, "ep": self.ep, "tp": self.tp,
            "lookup_rule": "nearest bucket on a log2 scale; ties go to the larger bucket; clamped to the ends",
            "buckets": [asdict(e) for e in self.entries], **self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        known = {"version", "model", "hardware", "ep", "tp", "lookup_rule", "buckets"}
        meta = {k: v for k, v in data.items() if k not in known}
        entries = [PlanEntry(**bucket) for bucket in data["buckets"]]
        return cls(data["model"], data["hardware"], int(data["ep"]), int(data["tp"]), entries, meta)


def plan_filename(model: str, hardware: str, ep: int, tp: int, tp_dispatch: str = "tokens") -> str:
    """The plan's file name; a plan tuned on the rows the fused kernels move under TP (tune --tp-dispatch rows)
    gets its own, so it never overwrites the default's."""
    suffix = "" if tp_dispatch == "tokens" else f"-{tp_dispatch}"
    return f"{model}-{hardware}-ep{ep}-tp{tp}{suffix}.json"


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    data = read_json_object(path, "plan")
    if data.get("version") != PLAN_VERSION:
        raise UserError("plan", f"{path} is not a comet-dse plan of version {PLAN_VERSION}")
    try:
        return Plan.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError("plan", f"{path} is malformed ({exc})") from None


def plan_text(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2) + "\n"


def write_plan(plan: Plan, path: str | Path) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a plan."""
    return write_text_atomic(path, plan_text(plan))
