"""Routings: how many (token, expert) pairs each rank sends to each expert.

The simulator needs counts, not token ids: counts[s, e] = rows that source rank s routes to
expert e. Rows are (token, expert) pairs and are not deduplicated per destination rank, as
in Megatron's permute + all-to-all. Specs:

- `uniform`       every expert equally likely;
- `std:<x>`       per-expert load shares with standard deviation x (the Comet paper's
                  imbalance measure; production is about 0.03);
- `zipf:<a>`      share of the i-th most popular expert proportional to 1 / i^a;
- `trace:<file>`  a .npy int array (tokens x top-k) of expert ids; rank r's token j uses
                  row (r * tokens + j) mod len(trace).

Synthetic routings draw each rank's tokens x top-k rows from a multinomial over the expert
shares with the workload's seed (a token's k picks are not forced distinct).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from comet_dse.errors import UserError
from comet_dse.workload import Workload

FIELD = "--routing"
# past this exponent the second expert's share is < 2^-16 of the first's: all rows go to one
# expert already, and 1 / i^a overflows long before a = 1e6
MAX_ZIPF_EXPONENT = 16.0


@dataclass(frozen=True)
class Routing:
    counts: np.ndarray  # (W, E) int64: rows from source rank s to expert e
    shares: np.ndarray  # (E,) expected share of rows per expert

    @property
    def load_std(self) -> float:
        """Standard deviation of the realised per-expert share of rows."""
        load = self.counts.sum(axis=0)
        return float(np.std(load / load.sum()))


def _parse_float(spec: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(FIELD, f"{spec!r}: {text!r} is not a number") from None
    if not np.isfinite(value) or value < 0:
        raise UserError(FIELD, f"{spec!r}: the parameter must be a finite number >= 0")
    return value


def _std_shares(num_experts: int, std: float, rng: np.random.Generator) -> np.ndarray:
    z = rng.standard_normal(num_experts)
    z = (z - z.mean()) / (z.std() or 1.0)
    shares = np.clip(1.0 / num_experts + std * z, 0.0, None)  # large std clips at 0; realised std is reported
    return shares / shares.sum()


def _zipf_shares(num_experts: int, a: float, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, num_experts + 1) ** a
    return rng.permutation(weights / weights.sum())  # which experts are popular is itself random


def load_trace(path: str | Path, workload: Workload) -> np.ndarray:
    path = Path(path)
    try:
        trace = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(FIELD, f"cannot read trace {path} as a .npy array ({exc})") from None
    if not isinstance(trace, np.ndarray):  # an .npz archive: several arrays, none chosen
        trace.close()
        raise UserError(FIELD, f"trace {path} is an .npz archive; save one array with numpy.save as a .npy file")
    k, experts = workload.model.top_k, workload.model.num_experts
    if trace.ndim != 2 or trace.shape[1] != k or trace.shape[0] == 0:
        raise UserError(FIELD, f"trace {path} has shape {trace.shape}; expected (tokens, {k}) with tokens >= 1 (top-k = {k})")
    if not np.issubdtype(trace.dtype, np.integer):
        raise UserError(FIELD, f"trace {path} has dtype {trace.dtype}; expected integer expert ids")
    if trace.min() < 0 or trace.max() >= experts:
        raise UserError(FIELD, f"trace {path} has expert ids in [{trace.min()}, {trace.max()}]; allowed [0, {experts - 1}]")
    return trace.astype(np.int64, copy=False)


def make_routing(workload: Workload) -> Routing:
    spec = workload.routing
    experts, world = workload.model.num_experts, workload.world
    rows_per_rank = workload.tokens * workload.model.top_k
    rng = np.random.default_rng(workload.seed)
    kind, _, arg = spec.partition(":")
    if kind == "trace":
        if not arg:
            raise UserError(FIELD, "trace needs a file: trace:<file.npy>")
        trace = load_trace(arg, workload)
        rows = np.arange(world * workload.tokens) % trace.shape[0]
        picks = trace[rows].reshape(world, -1)  # (W, tokens * k)
        flat = picks + (np.arange(world) * experts)[:, None]
        counts = np.bincount(flat.ravel(), minlength=world * experts).reshape(world, experts)
        shares = counts.sum(axis=0) / counts.sum()
        return Routing(counts.astype(np.int64), shares)
    if kind == "uniform" and not arg:
        shares = np.full(experts, 1.0 / experts)
    elif kind == "std" and arg:
        shares = _std_shares(experts, _parse_float(spec, arg), rng)
    elif kind == "zipf" and arg:
        a = _parse_float(spec, arg)
        if a > MAX_ZIPF_EXPONENT:
            raise UserError(FIELD, f"{spec!r}: the zipf exponent must be in [0, {MAX_ZIPF_EXPONENT:g}] "
                                   f"(at {MAX_ZIPF_EXPONENT:g} one expert takes every row already)")
        shares = _zipf_shares(experts, a, rng)
    else:
        raise UserError(FIELD, f"unknown routing {spec!r}; allowed: uniform, std:<x>, zipf:<a>, trace:<file.npy>")
    counts = rng.multinomial(rows_per_rank, shares, size=world)
    return Routing(counts.astype(np.int64), shares)
