"""The device-side counting sort of a rank's (token, slot) pairs against torch's stable sort,
on random and adversarial routings (one expert for all, empty experts, one pair, several chunks,
ids out of range)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")

from comet_dse.kernels.fused_pack import MAX_CHUNK, chunk_count, order_pairs, scratch_size  # noqa: E402


def _reference(ids: torch.Tensor, experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """counts, pos (pair -> send row), token of each send row: out-of-range ids sort after all experts."""
    flat = ids.reshape(-1)
    valid = (flat >= 0) & (flat < experts)
    _, order = torch.sort(torch.where(valid, flat, experts), stable=True)
    pos = torch.empty_like(order)
    pos[order] = torch.arange(order.numel())
    return torch.bincount(flat[valid], minlength=experts), pos, order // ids.shape[1]


def _order(ids: torch.Tensor, experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pairs = ids.numel()
    counts = torch.full((experts,), -7, dtype=torch.int32)
    pos = torch.full((pairs,), -7, dtype=torch.int64)
    token_of_row = torch.full((pairs,), -7, dtype=torch.int32)
    scratch = torch.empty(scratch_size(pairs, experts), dtype=torch.int32)
    order_pairs(ids, experts, scratch, counts, pos, token_of_row)
    return counts, pos, token_of_row


def _routing(case: str, tokens: int, top_k: int, experts: int, gen: torch.Generator) -> torch.Tensor:
    if case == "one expert":
        return torch.full((tokens, top_k), experts - 1, dtype=torch.int64)
    if case == "half empty":  # experts of odd index get nothing
        return 2 * torch.randint(0, (experts + 1) // 2, (tokens, top_k), generator=gen)
    if case == "distinct":  # top-k distinct experts per token, as a router picks them
        return torch.stack([torch.randperm(experts, generator=gen)[:top_k] for _ in range(tokens)])
    return torch.randint(0, experts, (tokens, top_k), generator=gen)


@pytest.mark.parametrize(("case", "tokens", "top_k", "experts"), [
    ("random", 1, 1, 4),
    ("random", 5, 2, 64),
    ("one expert", 37, 4, 8),
    ("half empty", 100, 3, 16),
    ("distinct", 90, 8, 256),
    ("random", MAX_CHUNK + 3, 2, 6),  # 2 * 515 pairs: three chunks, the last one short
])
def test_order_matches_a_stable_sort(case: str, tokens: int, top_k: int, experts: int) -> None:
    gen = torch.Generator().manual_seed(tokens * 31 + top_k)
    ids = _routing(case, tokens, top_k, experts, gen)
    counts, pos, token_of_row = _order(ids, experts)
    want_counts, want_pos, want_tokens = _reference(ids, experts)
    assert counts.tolist() == want_counts.tolist()
    assert torch.equal(pos, want_pos)
    assert torch.equal(token_of_row.long(), want_tokens)


def test_several_chunks_are_used() -> None:
    """The last parametrized case really spans chunks (the cross-chunk offsets are exercised)."""
    assert chunk_count((MAX_CHUNK + 3) * 2) == 3


def test_out_of_range_ids_count_nowhere_and_stay_in_bounds() -> None:
    ids = torch.tensor([[0, 5], [-1, 2], [9, 0], [2, 2]])
    counts, pos, token_of_row = _order(ids, 4)
    assert counts.tolist() == [2, 0, 3, 0]
    # the five valid pairs take rows 0..4 in expert order; the three left out follow, in pair order
    assert pos.tolist() == [0, 5, 6, 2, 7, 1, 3, 4]
    assert token_of_row.tolist() == [0, 2, 1, 3, 3, 0, 1, 2]


def test_no_pairs_publishes_zero_counts() -> None:
    counts, _, _ = _order(torch.empty(0, 2, dtype=torch.int64), 3)
    assert counts.tolist() == [0, 0, 0]
