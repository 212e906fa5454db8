"""Routings: how many (token, expert) pairs each rank sends to each expert.

The simulator needs counts, not token ids: counts[s, e] = rows that source rank s routes to
expert e. Rows are (token, expert) pairs; with EP only they are not deduplicated per destination
rank, as in Megatron's permute + all-to-all (with TP see below). Specs:

- `uniform`       every expert equally likely;
- `std:<x>`       per-expert load shares with standard deviation x (the Comet paper's
                  imbalance measure; production is about 0.03);
- `zipf:<a>`      share of the i-th most popular expert proportional to 1 / i^a;
- `trace:<file>`  a .npy int array (tokens x top-k) of expert ids; rank r's token j uses
                  row (r * tokens + j) mod len(trace).
- `counts:<file>[#<layer>]`  tokens per expert per MoE layer, as training frameworks log them
                  (Megatron's `tokens_per_expert`): a JSON list (or {"counts": list}) of layers,
                  each E numbers or W lists of E numbers (one per source rank, W = EP x TP), or a
                  CSV with one layer per line (E numbers; a first line of names is skipped). Each
                  rank's rows are split over the experts in the layer's proportions (its own
                  proportions where the file has one row per source rank), by largest remainder:
                  your routing at the workload's token count, no draw (with TP > 1, but see below).
                  `#<layer>` picks a layer (from 0); a file of one layer needs none; `comet-dse simulate
                  --layers` runs several.

Synthetic routings draw each rank's tokens x top-k rows from a multinomial over the expert
shares with the workload's seed (a token's k picks are not forced distinct).

Tensor parallelism also needs which rows share a token: a token goes once to each TP rank of an
EP group however many of its experts live there (`tokens_per_group`). A trace knows its tokens;
otherwise `token_picks` forms them from the counts (see there).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import csv
import json
import re

import numpy as np

from comet_dse.choices import ROUTING_FORMS
from comet_dse.errors import UserError
from comet_dse.workload import Workload

FIELD = "--routing"
# past this exponent the second expert's share is < 2^-16 of the first's: all rows go to one
# expert already, and 1 / i^a overflows long before a = 1e6
MAX_ZIPF_EXPONENT = 16.0


# The seed's second stream forms tokens from counts, so the counts' own draw never shifts.
TOKEN_STREAM = 1


@dataclass(frozen=True)
class Routing:
    counts: np.ndarray  # (W, E) int64: rows from source rank s to expert e
    shares: np.ndarray  # (E,) expected share of rows per expert
    picks: np.ndarray | None = None  # (W, tokens, top-k) expert ids where known (traces); None: formed from counts

    @property
    def load_std(self) -> float:
        """Standard deviation of the realised per-expert share of rows."""
        load = self.counts.sum(axis=0)
        return float(np.std(load / load.sum()))


def rows_per_group(workload: Workload, counts: np.ndarray) -> np.ndarray:
    """(W, EP) (token, expert) rows source s routes to the experts of EP group g."""
    return counts.reshape(workload.world, workload.ep, workload.experts_per_rank).sum(axis=2)


def token_picks(routing: Routing, top_k: int, seed: int) -> list[np.ndarray]:
    """Per source rank, its tokens' expert ids, (tokens, top_k); -1 pads a last token short of top_k rows
    (`iter_token_picks`, all at once)."""
    return list(iter_token_picks(routing, top_k, seed))


def iter_token_picks(routing: Routing, top_k: int, seed: int) -> Iterator[np.ndarray]:
    """Per source rank in turn, its tokens' expert ids, (tokens, top_k); -1 pads a last token short of top_k rows.
    One rank's at a time: all of them are W x tokens x top_k ids (256 MiB at 1024 GPUs of 4096 tokens, top-8).

    A trace's tokens as given. Otherwise each rank's rows are dealt to its tokens in a random order
    drawn from `seed` (stream TOKEN_STREAM). For the synthetic routings that is the sampler's own law,
    exactly: T k i.i.d. picks are a multinomial draw of the counts followed by a uniformly random order
    of them (so a token's picks need not be distinct, as there). For a counts file it assumes the rows
    meet in tokens at random, a file of counts saying nothing more.
    """
    if routing.picks is not None:
        yield from routing.picks
        return
    rng = np.random.default_rng([seed, TOKEN_STREAM])
    for counts in routing.counts:
        rows = rng.permutation(np.repeat(np.arange(len(counts)), counts))
        rows = np.concatenate([rows, np.full(-len(rows) % top_k, -1, dtype=rows.dtype)])
        yield rows.reshape(-1, top_k)  # (tokens, top_k)


def tokens_per_group(workload: Workload, routing: Routing) -> np.ndarray:
    """(W, EP) tokens of source s routed to at least one expert of EP group g: a token with several
    experts in g counts once."""
    ep, per_rank = workload.ep, workload.experts_per_rank
    out = np.zeros((workload.world, ep), dtype=np.int64)
    for s, picks in enumerate(iter_token_picks(routing, workload.model.top_k, workload.seed)):
        groups = np.where(picks >= 0, picks // per_rank, ep)  # (tokens, top_k); padding in a spare column
        hit = np.zeros((len(picks), ep + 1), dtype=bool)
        hit[np.arange(len(picks))[:, None], groups] = True
        out[s] = hit[:, :ep].sum(axis=0)
    return out


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


def split_counts_spec(arg: str) -> tuple[str, int | None]:
    """`file#3` -> (file, 3); `file` -> (file, None)."""
    match = re.fullmatch(r"(.+)#(\d+)", arg)
    return (match.group(1), int(match.group(2))) if match else (arg, None)


def _counts_rows(path: Path) -> list:
    """The file's layers as nested lists, before any check of their numbers."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(FIELD, f"cannot read counts file {path} ({exc.strerror or exc})") from None
    if path.suffix.lower() == ".csv":
        rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
        if rows and not _numeric(rows[0][0]):
            rows = rows[1:]  # a line of column names
        try:
            return [[float(cell) for cell in row] for row in rows]
        except ValueError:
            raise UserError(FIELD, f"counts file {path}: every cell after the header must be a number") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(FIELD, f"counts file {path} is not JSON ({exc.msg} at line {exc.lineno}); use .json or .csv") from None
    if isinstance(data, dict):
        data = data.get("counts")
    if not isinstance(data, list):
        raise UserError(FIELD, f"counts file {path} must hold a list of layers (or an object with a 'counts' list)")
    return data


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_counts(path: str | Path, experts: int) -> np.ndarray:
    """(L, E) or (L, W, E) tokens per expert, checked: E as the model's, every number finite and
    >= 0, every layer (and source rank) with some tokens."""
    path = Path(path)
    rows = _counts_rows(path)
    try:
        counts = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(FIELD, f"counts file {path}: every layer must have the same shape, all numbers") from None
    if counts.ndim not in (2, 3) or counts.shape[0] == 0:
        raise UserError(FIELD, f"counts file {path} has shape {counts.shape}; expected (layers, {experts}) or "
                               f"(layers, ranks, {experts})")
    if counts.shape[-1] != experts:
        raise UserError(FIELD, f"counts file {path} has {counts.shape[-1]} experts per layer; the model has {experts}")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise UserError(FIELD, f"counts file {path}: counts must be finite numbers >= 0")
    if (counts.sum(axis=-1) <= 0).any():
        raise UserError(FIELD, f"counts file {path}: a layer (or a source rank of one) routes no tokens")
    return counts


def counts_layers(spec: str, experts: int) -> int:
    """How many layers the file of a `counts:` spec holds."""
    path, _ = split_counts_spec(spec.partition(":")[2])
    return load_counts(path, experts).shape[0]


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """`total` whole rows over the weights' proportions, by largest remainder (ties: lower index)."""
    quota = total * weights / weights.sum()
    whole = np.floor(quota).astype(np.int64)
    short = total - int(whole.sum())
    if short:
        whole[np.argsort(-(quota - whole), kind="stable")[:short]] += 1
    return whole


def _counts_routing(arg: str, workload: Workload) -> Routing:
    experts, world = workload.model.num_experts, workload.world
    if not arg:
        raise UserError(FIELD, "counts needs a file: counts:<file.json|file.csv>[#<layer>]")
    path, layer = split_counts_spec(arg)
    counts = load_counts(path, experts)
    layers = counts.shape[0]
    if layer is None and layers > 1:
        raise UserError(FIELD, f"counts file {path} has {layers} layers: pick one with counts:{path}#<layer> "
                               "(or simulate them all with comet-dse simulate --layers all)")
    layer = layer or 0
    if layer >= layers:
        raise UserError(FIELD, f"counts file {path} has layers 0 … {layers - 1}; got #{layer}")
    table = counts[layer]
    if table.ndim == 2 and table.shape[0] != world:
        raise UserError(FIELD, f"counts file {path} has {table.shape[0]} source ranks per layer; the workload has "
                               f"EP x TP = {world}")
    per_source = table if table.ndim == 2 else np.broadcast_to(table, (world, experts))
    rows = workload.tokens * workload.model.top_k
    routed = np.stack([apportion(rows, per_source[s]) for s in range(world)])
    return Routing(routed, table.reshape(-1, experts).sum(axis=0) / table.sum())


def make_routing(workload: Workload) -> Routing:
    spec = workload.routing
    experts, world = workload.model.num_experts, workload.world
    rows_per_rank = workload.tokens * workload.model.top_k
    rng = np.random.default_rng(workload.seed)
    kind, _, arg = spec.partition(":")
    if kind == "counts":
        return _counts_routing(arg, workload)
    if kind == "trace":
        if not arg:
            raise UserError(FIELD, "trace needs a file: trace:<file.npy>")
        trace = load_trace(arg, workload)
        rows = np.arange(world * workload.tokens) % trace.shape[0]
        picks = trace[rows].reshape(world, -1)  # (W, tokens * k)
        flat = picks + (np.arange(world) * experts)[:, None]
        counts = np.bincount(flat.ravel(), minlength=world * experts).reshape(world, experts)
        shares = counts.sum(axis=0) / counts.sum()
        return Routing(counts.astype(np.int64), shares, picks.reshape(world, workload.tokens, -1))
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
        raise UserError(FIELD, f"unknown routing {spec!r}; allowed: {ROUTING_FORMS}")
    counts = rng.multinomial(rows_per_rank, shares, size=world)
    return Routing(counts.astype(np.int64), shares)


def virtual_experts(workload: Workload, routing: Routing) -> tuple[Workload, Routing]:
    """An EP x TP layer as kernels/fused_tp.py runs it: the EP layer over world = EP * TP ranks whose
    experts are the (expert, FFN shard) pairs, E * TP of them, F / TP wide, top_k * TP slots a token (a
    row per slot to every TP rank, partials back per row). Expert e = g * E_l + i of EP group g, shard t,
    is virtual expert (g * TP + t) * E_l + i on rank g * TP + t, with e's rows from every source."""
    m, tp, per_rank, world = workload.model, workload.tp, workload.experts_per_rank, workload.world
    model = replace(m, num_experts=m.num_experts * tp, top_k=m.top_k * tp, ffn=m.ffn // tp,
                    source=f"{m.source} as virtual experts (TP={tp})")
    grouped = routing.counts.reshape(world, workload.ep, 1, per_rank)
    counts = np.broadcast_to(grouped, (world, workload.ep, tp, per_rank)).reshape(world, -1)
    shares = np.broadcast_to(routing.shares.reshape(workload.ep, 1, per_rank) / tp, (workload.ep, tp, per_rank))
    return replace(workload, model=model, ep=world, tp=1), Routing(np.ascontiguousarray(counts), shares.reshape(-1))
