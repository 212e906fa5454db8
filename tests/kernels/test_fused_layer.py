"""The fused kernels, two ranks (gloo processes, shared-memory peer buffers), Triton's CPU
interpreter in fp32 / fp16, against the fp32 reference: consecutive calls with changing
routings and token counts (rising epochs), adversarial routings, the capacity, the copy-engine
path, the benchmark variants, a slow producer and one that never signals."""

from __future__ import annotations

import os
import socket
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
pytest.importorskip("triton", reason="the kernels need triton (pip install -e '.[kernels]')")
if torch.cuda.is_available():
    pytest.skip("this suite runs two CPU ranks through the interpreter; the GPU suite is benchmarks/gpu_fused_ep.py",
                allow_module_level=True)

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from comet_dse.choices import tail_pieces  # noqa: E402
from comet_dse.kernels.fused_layer import FusedConfig, FusedMoE  # noqa: E402
from comet_dse.kernels.fused_moe import COMM_ONLY, COMPUTE_ONLY, FULL, _tail_pieces  # noqa: E402
from comet_dse.kernels.reference import MoEWeights, reference_moe, route, routing_weights  # noqa: E402

WORLD = 2
EXPERTS, HIDDEN, FFN = 8, 32, 48
SMALL = FusedConfig(comm_blocks0=2, comm_blocks1=2, block_m=16, block_n=16, block_k=16, n_splits=2, programs=4,
                    max_spins=100_000, copy_elems=256)
CAPACITY = 24
SPLIT_K = {"split_k": 3, "split_k_min": 16}  # FusedConfig's split-K at the test shapes: pieces of one K step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(worker, *args, world: int = WORLD) -> None:
    mp.spawn(worker, args=(_free_port(), *args), nprocs=world, join=True)


def _init(rank: int, port: int, world: int = WORLD, hidden: int = HIDDEN, ffn: int = FFN) -> MoEWeights:
    os.environ["TRITON_INTERPRET"] = "1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    return MoEWeights.random(EXPERTS, hidden, ffn, seed=2)


def _poisoned(layer: FusedMoE) -> FusedMoE:
    layer.poison_unwritten()  # a read of memory no call wrote fails every time, not now and then
    return layer


def _layer(rank: int, weights: MoEWeights, top_k: int, dtype, **knobs) -> FusedMoE:
    per_rank = EXPERTS // dist.get_world_size()
    return _poisoned(FusedMoE(weights.local(rank * per_rank, per_rank), top_k=top_k, max_tokens=CAPACITY, dtype=dtype,
                              config=FusedConfig(**{**SMALL.__dict__, **knobs})))


def _call(layer: FusedMoE, rank: int, weights: MoEWeights, tokens: list[int], ids_of, seed: int, dtype) -> float:
    """One call with tokens[r] tokens on rank r; the relative error of this rank's output."""
    total = sum(tokens)
    x = torch.randn(total, weights.w_down.shape[2], generator=torch.Generator().manual_seed(seed)).to(dtype).float()
    ids = ids_of(x)
    w = routing_weights(x, weights.router, ids)
    mine = slice(sum(tokens[:rank]), sum(tokens[:rank + 1]))
    expected = reference_moe(x, weights, ids, w)[mine]
    got = layer(x[mine].to(dtype), ids[mine], w[mine])
    layer.check()
    assert got.dtype == torch.float32 and got.shape == expected.shape
    return ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-6)).item() if len(expected) else 0.0


def _sequence_worker(rank: int, port: int, dtype_name: str, knobs: dict) -> None:
    weights = _init(rank, port)
    dtype = getattr(torch, dtype_name)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    router = lambda k: lambda x: route(x, weights.router, k)[0]  # noqa: E731
    to_first = lambda k: lambda x: torch.arange(k).repeat(len(x), 1)  # noqa: E731  every token to experts 0..k-1
    to_last = lambda k: lambda x: (EXPERTS - 1 - torch.arange(k)).repeat(len(x), 1)  # noqa: E731  rank 0 gets none
    for top_k, calls in (
        (2, [([21, 21], router(2)), ([1, 1], router(2)), ([CAPACITY, CAPACITY], to_first(2)), ([5, 17], router(2)),
             ([3, 0], to_last(2)), ([16, 16], router(2))]),
        (1, [([16, 16], router(1)), ([7, 9], to_first(1))]),
        (8, [([5, 5], router(8)), ([CAPACITY, 3], router(8))]),  # top-8: every expert
    ):
        layer = _layer(rank, weights, top_k, dtype, **knobs)
        for i, (tokens, ids_of) in enumerate(calls):
            err = _call(layer, rank, weights, tokens, ids_of, seed=100 * top_k + i, dtype=dtype)
            assert err < tol, f"{dtype_name} {knobs} top_k={top_k} call {i} tokens={tokens}: relative error {err:.2e}"
    dist.destroy_process_group()


@pytest.mark.parametrize("dtype_name, knobs", [
    ("float32", {"row_order": "local-first"}),
    ("float16", {"row_order": "source-order", "n_splits": 1, "group_m": 1}),
    ("float32", {"comm_blocks0": 0}),  # the copy-engine variant
    ("float16", {"tile_order": "expert"}),
    ("float32", {"tile_order": "expert", "comm_blocks0": 0, "row_order": "source-order"}),
    ("float32", {"tile_layout": "by-source"}),  # the default is merged
    ("float16", {"tile_layout": "by-source", "tile_order": "expert", "row_order": "source-order"}),
    ("float32", {"gate_up": "halves", "tma_store": False}),  # the default is pairs (one dot per step), TMA stores
    ("float16", {"gate_up": "halves", "tile_order": "expert", "comm_blocks0": 0}),
    ("float32", {"block_n": 32, "block_n1": 16}),  # F = 48: the last column tile reads past 2F (zero padding)
    ("float32", {"dedup": True}),  # a token's second row at a rank copied from its first
    ("float16", {"dedup": True, "tile_layout": "by-source", "tile_order": "expert", "comm_blocks0": 1}),
    ("float32", {"prereduce": True}),  # a token's rows at a rank go home as one weighted sum
    ("float16", {"prereduce": True, "tile_layout": "by-source", "row_order": "source-order", "n_splits": 1,
                 "comm_blocks1": 1}),
    ("float32", {"prereduce": True, "dedup": True, "comm_blocks0": 0, "tile_order": "expert"}),
    ("float32", {"pull_rows": 4}),  # a row tile pulled in four pieces, by up to four blocks; the last raises its flag
    ("float16", {"pull_rows": 1, "tile_layout": "by-source", "tile_order": "expert", "comm_blocks0": 3}),
    ("float32", {"pull_rows": 8, "dedup": True}),  # dedup pulls whole tiles: pull_rows has no effect
    ("float32", {"comm_deal": "dynamic"}),  # each communication block draws its next tile from a counter
    ("float16", {"comm_deal": "dynamic", "pull_rows": 4, "tile_layout": "by-source", "row_order": "source-order"}),
    ("float32", {"comm_deal": "dynamic", "dedup": True, "tile_order": "expert", "comm_blocks1": 1}),
    # layer1's items cut along K where few fill its compute blocks' last round (FFN 48: up to 3 pieces of 16)
    ("float32", SPLIT_K),
    ("float16", {**SPLIT_K, "split_k": 2, "tile_order": "expert", "comm_blocks0": 0}),
    ("float32", {**SPLIT_K, "prereduce": True, "flatten": True}),
])
def test_consecutive_calls_match_the_reference(dtype_name, knobs):
    _spawn(_sequence_worker, dtype_name, knobs)


def _capacity_worker(rank: int, port: int) -> None:
    weights = _init(rank, port)
    layer = _layer(rank, weights, 2, torch.float32)
    router = lambda x: route(x, weights.router, 2)[0]  # noqa: E731
    assert _call(layer, rank, weights, [CAPACITY, CAPACITY], router, seed=1, dtype=torch.float32) < 1e-4
    before = [t.clone() for t in (layer.xbuf.local, layer.ybuf.local, layer.meta.local, layer.epoch)]
    x = torch.randn(CAPACITY + 1, HIDDEN)
    ids, w = route(x, weights.router, 2)
    with pytest.raises(ValueError, match=f"25 tokens exceed this layer's capacity max_tokens={CAPACITY}"):
        layer(x, ids, w)
    after = (layer.xbuf.local, layer.ybuf.local, layer.meta.local, layer.epoch)
    # equal_nan: rows no call wrote still hold _poisoned's NaN
    unchanged = all(torch.allclose(a, b, rtol=0, atol=0, equal_nan=True) for a, b in zip(before, after))
    assert unchanged, "a refused call wrote to the layer's buffers"
    assert _call(layer, rank, weights, [9, 11], router, seed=2, dtype=torch.float32) < 1e-4
    dist.destroy_process_group()


def test_a_call_over_capacity_raises_and_writes_nothing():
    _spawn(_capacity_worker)


def _without_waits_worker(rank: int, port: int) -> None:
    weights = _init(rank, port)
    layer = _layer(rank, weights, 2, torch.float32)
    router = lambda x: route(x, weights.router, 2)[0]  # noqa: E731
    assert _call(layer, rank, weights, [9, 11], router, seed=1, dtype=torch.float32) < 1e-4
    patient = layer.cfg
    with layer.without_waits():
        assert layer.cfg.max_spins == 0
        layer._launch_layer0(layer.plan, FULL)  # every tile's wait gives up at once, and says so in the error slot
        assert int(layer.err.item()) != 0
    assert layer.cfg is patient and int(layer.err.item()) == 0
    with pytest.raises(RuntimeError, match="inside"), layer.without_waits():
        raise RuntimeError("inside")
    assert layer.cfg is patient and int(layer.err.item()) == 0
    # the layer is whole after: a call with its waits matches the reference and checks clean
    assert _call(layer, rank, weights, [11, 9], router, seed=2, dtype=torch.float32) < 1e-4
    layer.check()
    dist.destroy_process_group()


def test_without_waits_gives_every_wait_up_inside_and_leaves_the_layer_as_it_was():
    _spawn(_without_waits_worker)


def _variants_worker(rank: int, port: int, knobs: dict) -> None:
    weights = _init(rank, port)
    layer = _layer(rank, weights, 2, torch.float32, **knobs)
    router = lambda x: route(x, weights.router, 2)[0]  # noqa: E731
    x = torch.randn(12, HIDDEN)
    ids, w = route(x, weights.router, 2)
    for mode in (COMPUTE_ONLY, COMM_ONLY):
        layer(x, ids, w, mode=mode)
        layer.check()  # the variants run the same waits and barriers, and finish
    # a slow producer: the consumers wait for it and the result stays right
    layer.delay_spins = 200
    assert _call(layer, rank, weights, [12, 12], router, seed=3, dtype=torch.float32) < 1e-4
    # each layer launched alone again, as bench's per-layer timings and calibrate do: a dynamic deal's counters are back
    # at zero after every launch (the last block out zeroes them), so every launch moves every tile
    layer.delay_spins = 0
    layer(x, ids, w, mode=COMM_ONLY)
    for _ in range(2):
        layer.flags.zero_()
        layer._launch_layer0(layer.plan, COMM_ONLY)
        layer.counters.zero_()
        layer._launch_layer1(layer.plan, COMM_ONLY)
        layer.check()
        assert layer.claims.tolist() == [0, 0, 0, 0]
    dist.destroy_process_group()


@pytest.mark.parametrize("knobs", [{}, {"pull_rows": 4}, {"comm_deal": "dynamic"}, SPLIT_K])
def test_benchmark_variants_finish_and_a_slow_producer_changes_nothing(knobs):
    _spawn(_variants_worker, knobs)


def _capturable_worker(rank: int, port: int) -> None:
    from test_fused_plan import _NoHostSync

    weights = _init(rank, port)
    x = torch.randn(20, HIDDEN)
    ids, w = route(x, weights.router, 2)
    for knobs, mode in (({}, FULL), ({"comm_blocks0": 0}, COMPUTE_ONLY)):  # what FusedMoE.graphed captures
        layer = _layer(rank, weights, 2, torch.float32, **knobs)
        with _NoHostSync():  # no value read on the host: the whole call can be captured in a CUDA graph
            layer(x, ids, w, mode=mode)
    dist.destroy_process_group()


def test_a_call_reads_nothing_on_the_host_so_a_graph_can_capture_it():
    _spawn(_capturable_worker)


def _stuck_worker(rank: int, port: int, knobs: dict) -> None:
    weights = _init(rank, port)
    layer = _layer(rank, weights, 2, torch.float32, max_spins=50, **knobs)
    layer.delay_spins = -1  # layer0's communication blocks copy, then never raise a flag
    x = torch.randn(8, HIDDEN)
    ids, w = route(x, weights.router, 2)
    layer(x, ids, w)  # returns: every wait is bounded
    with pytest.raises(RuntimeError, match="layer0: a compute block waited 50 spins for row tile"):
        layer.check()
    dist.destroy_process_group()


@pytest.mark.parametrize("knobs", [{}, {"pull_rows": 4}, {"comm_deal": "dynamic"}])
def test_a_producer_that_never_signals_raises_instead_of_hanging(knobs):
    _spawn(_stuck_worker, knobs)


def _many_ranks_worker(rank: int, port: int, world: int) -> None:
    """Every rank of a 4- or 8-rank group (the eight-GPU issue's code paths on the CPU): random top-2
    routings, uneven token counts (one rank empty), both tile orders, three consecutive calls each."""
    weights = _init(rank, port, world)
    router = lambda x: route(x, weights.router, 2)[0]  # noqa: E731
    for order in ("layout", "expert"):
        layer = _layer(rank, weights, 2, torch.float32, tile_order=order)
        for i, tokens in enumerate(([9, 3, 14, 7, 1, 11, 5, 8], [0, 12, 6, 16, 2, 9, 13, 4], [16] * 8)):
            err = _call(layer, rank, weights, tokens[:world], router, seed=10 * world + i, dtype=torch.float32)
            assert err < 1e-4, f"{world} ranks, {order} order, call {i}: relative error {err:.2e}"
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [4, 8])
def test_four_and_eight_ranks_match_the_reference(world):
    _spawn(_many_ranks_worker, world, world=world)


def _wide_layer1_worker(rank: int, port: int) -> None:
    """H = 512 in 2 splits: layer1 takes its default 256-wide tiles (what every model shape on the GPUs
    uses), layer0 its 16-wide ones; both tile orders, changing routings."""
    weights = _init(rank, port, hidden=512)
    router = lambda x: route(x, weights.router, 2)[0]  # noqa: E731
    for order in ("layout", "expert"):
        layer = _layer(rank, weights, 2, torch.float32, tile_order=order)
        assert layer.block_n1 == 256 and layer.cfg.block_n == 16
        for i, tokens in enumerate(([13, 6], [2, 20], [CAPACITY, CAPACITY])):
            err = _call(layer, rank, weights, tokens, router, seed=i, dtype=torch.float32)
            assert err < 1e-4, f"{order} order, call {i}: relative error {err:.2e}"
    dist.destroy_process_group()


def test_layer1_at_its_default_256_wide_tiles_matches_the_reference():
    _spawn(_wide_layer1_worker)


def _tensor_parallel_worker(rank: int, port: int, ep: int, tp: int, dtype_name: str, ffn: int, knobs: dict) -> None:
    """EP x TP through virtual experts (kernels/fused_tp.py): each rank its group's experts on its share of
    their FFN width; consecutive calls with changing routings, token counts and top-k, against the whole layer."""
    from comet_dse.kernels.fused_tp import TensorParallelFused

    weights = _init(rank, port, world=ep * tp, ffn=ffn)  # a shard's F must be a multiple of 16, as every F
    dtype = getattr(torch, dtype_name)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    ep_rank, tp_rank = divmod(rank, tp)
    per_rank = EXPERTS // ep
    shard = weights.local(ep_rank * per_rank, per_rank).ffn_shard(tp_rank, tp)
    router = lambda k: lambda x: route(x, weights.router, k)[0]  # noqa: E731
    to_first = lambda k: lambda x: torch.arange(k).repeat(len(x), 1)  # noqa: E731
    for top_k, calls in ((2, [([21] * ep * tp, router(2)), ([1] * ep * tp, router(2)), ([CAPACITY] * ep * tp, to_first(2)),
                              ([5, 17] * (ep * tp // 2), router(2))]),
                         (1, [([16] * ep * tp, router(1)), ([7, 9] * (ep * tp // 2), to_first(1))])):
        layer = TensorParallelFused(shard, top_k, CAPACITY, ep, tp, dtype=dtype, config=FusedConfig(**{**SMALL.__dict__, **knobs}))
        _poisoned(layer.inner)
        for i, (tokens, ids_of) in enumerate(calls):
            err = _call(layer, rank, weights, tokens, ids_of, seed=10 * top_k + i, dtype=dtype)
            assert err < tol, f"ep={ep} tp={tp} {dtype_name} top_k={top_k} call {i}: relative error {err:.2e}"
    dist.destroy_process_group()


@pytest.mark.parametrize("ep, tp, dtype_name, ffn, knobs", [
    (1, 2, "float32", 64, {}),
    (1, 2, "float16", 64, {}),
    (2, 2, "float32", 64, {}),
    (1, 2, "float32", 96, {"block_n": 32, "block_n1": 16}),  # a shard of F = 48: its last column tile partial
    (1, 2, "float32", 64, {"dedup": True}),  # a token's rows at a TP rank: one over the link, the rest copied there
    (2, 2, "float16", 64, {"dedup": True, "tile_layout": "by-source"}),
    (1, 2, "float32", 64, {"prereduce": True}),  # the reduce-scatter: one summed row per token and TP rank
    (2, 2, "float16", 64, {"prereduce": True, "dedup": True}),
])
def test_tensor_parallel_through_virtual_experts_matches_the_reference(ep, tp, dtype_name, ffn, knobs):
    _spawn(_tensor_parallel_worker, ep, tp, dtype_name, ffn, knobs, world=ep * tp)


def _dedup_tables_worker(rank: int, port: int) -> None:
    from comet_dse.kernels.fused_tp import TensorParallelFused

    weights = _init(rank, port, ffn=64)
    shard = weights.ffn_shard(rank, 2)  # EP = 1, TP = 2: every token's both experts have a shard here
    layer = TensorParallelFused(shard, 2, CAPACITY, 1, 2, config=replace(SMALL, dedup=True), dtype=torch.float32)
    tokens = [21, 13]
    err = _call(layer, rank, weights, tokens, lambda x: route(x, weights.router, 2)[0], seed=3, dtype=torch.float32)
    assert err < 1e-4, err
    inner = layer.inner
    assert inner.deduplicated
    pieces = inner.plan.pieces.tolist()  # (E_l, W, 4): first layout row, rows, source, row there
    remote = [(first, rows, src, there) for expert in pieces for j, (first, rows, src, there) in enumerate(expert)
              if j != inner.own_pos and rows]
    peer_rows = sum(rows for _, rows, _, _ in remote)
    assert peer_rows == 2 * tokens[1 - rank]  # the peer's every token, once per expert
    dup_tile, dup_row = inner.dup_tile.tolist(), inner.dup_row.tolist()
    seconds = [i for first, rows, _, _ in remote for i in range(first, first + rows) if dup_tile[i] >= 0]
    assert len(seconds) == tokens[1 - rank]  # one row of each token crosses the link, the other is copied here
    recv = inner.xbuf.local[inner.send_rows:]
    for i in seconds:
        assert dup_tile[dup_row[i]] == -1 and torch.equal(recv[i], recv[dup_row[i]])
    dist.destroy_process_group()


def test_each_token_crosses_the_link_once_per_rank_under_tp():
    _spawn(_dedup_tables_worker)


def _local_copy_worker(rank: int, port: int) -> None:
    """Poison, at the peer, every row `_pull_dedup` should copy locally (its first tile has landed here): the output
    stays right only if those rows really are not pulled again."""
    import triton.language as tl
    from comet_dse.kernels import fused_moe

    pull = fused_moe._pull_dedup
    poisoned = [0]

    def poisoning(src_ptr, src_row, buf_ptr, recv_base, lo, rows, stride, dup_row_ptr, dup_tile_ptr, flags_ptr, epoch,
                  COPY_ROWS, COPY_COLS):
        offs = tl.arange(0, 8)
        cols = tl.arange(0, HIDDEN)
        for r0 in range(0, int(rows.handle.data), 8):
            in_r = (r0 + offs) < rows
            dup_tile = tl.load(dup_tile_ptr + lo + r0 + offs, mask=in_r, other=-1)
            landed = in_r & (dup_tile >= 0) & (tl.load(flags_ptr + dup_tile, mask=in_r & (dup_tile >= 0), other=-1) == epoch)
            at = src_ptr + (src_row + r0 + offs)[:, None] * stride + cols[None, :]
            tl.store(at, tl.full((8, HIDDEN), float("nan"), tl.float32), mask=landed[:, None])
            poisoned[0] += int(landed.handle.data.sum())
        return pull(src_ptr, src_row, buf_ptr, recv_base, lo, rows, stride, dup_row_ptr, dup_tile_ptr, flags_ptr, epoch,
                    COPY_ROWS, COPY_COLS)

    fused_moe._pull_dedup = poisoning
    weights = _init(rank, port)
    layer = _layer(rank, weights, 2, torch.float32, dedup=True, comm_blocks0=1)  # one block: every earlier tile has landed
    err = _call(layer, rank, weights, [21, 21], lambda x: torch.arange(2).repeat(len(x), 1), seed=4, dtype=torch.float32)
    # experts 0 and 1 live on rank 0: there every token of rank 1 has its second row copied (and no NaN came through)
    assert poisoned[0] == (21 if rank == 0 else 0) and err < 1e-4, (rank, poisoned[0], err)
    dist.destroy_process_group()


def test_deduplicated_rows_are_copied_here_not_pulled_again():
    _spawn(_local_copy_worker)


def _prereduce_worker(rank: int, port: int) -> None:
    """EP = 1, TP = 2, top-2 and top-3 (6 slots: a slot table wider than the slots): the peer sends each of this
    rank's tokens home as one row, the weighted sum of its experts' partials on its FFN shard, in several steps
    per source (8 tokens a step at these copy sizes); no row comes back per slot."""
    from comet_dse.kernels.fused_tp import TensorParallelFused

    weights = _init(rank, port, ffn=64)
    peer = 1 - rank
    for top_k in (2, 3):
        layer = TensorParallelFused(weights.ffn_shard(rank, 2), top_k, CAPACITY, 1, 2,
                                    config=replace(SMALL, prereduce=True), dtype=torch.float32)
        _check_prereduced_calls(layer, rank, peer, weights, top_k)
    dist.destroy_process_group()


def _check_prereduced_calls(layer, rank: int, peer: int, weights: MoEWeights, top_k: int) -> None:
    inner = layer.inner
    assert inner.prereduced
    for call, tokens in enumerate(([21, 13], [CAPACITY, 2], [7, 7])):
        inner.ybuf.local[:inner.send_rows] = float("nan")  # the peer's slots: no row may come back per slot
        # NaN bits in every table entry: one the call leaves unwritten (the weight of a column past a token's last
        # slot here) must never reach a sum (it did, as 0 * NaN, only where torch.empty held such bits)
        inner.route_table.view(torch.float32).fill_(float("nan"))
        x = torch.randn(sum(tokens), HIDDEN, generator=torch.Generator().manual_seed(call))
        ids = route(x, weights.router, top_k)[0]
        w = routing_weights(x, weights.router, ids)
        mine = slice(sum(tokens[:rank]), sum(tokens[:rank + 1]))
        got = layer(x[mine], ids[mine], w[mine])
        layer.check()
        expected = reference_moe(x, weights, ids, w)[mine]
        assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4, (rank, call)
        # what the peer sent: its shard's weighted top-2 sum per token, one row each
        peer_sum = reference_moe(x[mine], weights.ffn_shard(peer, 2), ids[mine], w[mine])
        sent = inner.red.local[peer * CAPACITY:peer * CAPACITY + tokens[rank]]
        assert ((sent - peer_sum).abs().max() / peer_sum.abs().max()).item() < 1e-4, (rank, call)
        pairs = tokens[rank] * top_k * 2
        at_peer = inner.route.local[0, :pairs] // inner.experts != rank  # the slots on the peer's shard
        assert int(at_peer.sum()) == pairs // 2
        assert inner.ybuf.local[inner.pos[:pairs][at_peer]].isnan().all()  # their rows never pushed here


def test_layer1_sends_a_tokens_rows_home_as_one_weighted_sum():
    _spawn(_prereduce_worker)


def test_virtual_routing_gives_each_slot_one_row_per_shard():
    from comet_dse.kernels.fused_tp import virtual_routing

    ids = torch.tensor([[0, 5], [7, 2]])  # 8 experts over ep = 2 ranks: 0-3 on group 0, 4-7 on group 1
    w = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    virtual, weights = virtual_routing(ids, w, ep=2, tp=2, experts=8)
    # expert e of group g, shard t -> rank g * 2 + t, local index e % 4: virtual id (g * 2 + t) * 4 + e % 4
    assert virtual.tolist() == [[0, 4, 9, 13], [11, 15, 2, 6]]
    assert weights.tolist() == [[0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 0.5, 0.5]]


def _split_k_worker(rank: int, port: int) -> None:
    """Consecutive calls of few and many row tiles: where the rule (`tail_pieces`, checked against the kernel's own
    below) cuts the items of layer1's last round along K, exactly those items x pieces fp32 partials are written
    (the rest keep their NaN), else none; the arrival counters are zero after every call; every call matches the
    reference."""
    weights = _init(rank, port)
    router = lambda x: route(x, weights.router, 2)[0]  # noqa: E731
    layer = _layer(rank, weights, 2, torch.float32, programs=8, comm_blocks1=1, **SPLIT_K)  # 7 compute blocks
    assert (layer.split_k, layer.split_k_slots) == (3, 8)
    cut = []
    for i, tokens in enumerate(([1, 2], [CAPACITY, CAPACITY], [3, 1], [9, 4], [0, 5], [14, 20])):
        layer.partials.fill_(float("nan"))
        err = _call(layer, rank, weights, tokens, router, seed=40 + i, dtype=torch.float32)
        assert err < 1e-4, f"call {i} tokens={tokens}: relative error {err:.2e}"
        items = int(layer.plan.num_tiles.item()) * layer.cfg.n_splits  # one column tile per split here
        pieces = tail_pieces(items, 7, 3)
        written = (~layer.partials.isnan()).flatten(1).any(1).tolist()  # a tile's rows past its own are NaN (poisoned)
        tail = items % 7 * pieces if pieces > 1 else 0
        assert written == [True] * tail + [False] * (8 - tail), \
            f"call {i} tokens={tokens}: {items} items, {pieces} pieces, written {written}"
        assert not layer.counters[layer.split_k_base:].any()
        cut.append(pieces > 1)
    assert any(cut) and not all(cut), cut  # both paths ran
    dist.destroy_process_group()


def test_layer1_split_k_cuts_the_last_rounds_items_and_matches_the_reference():
    _spawn(_split_k_worker)


@pytest.mark.parametrize("items, n_compute, split_k, pieces", [
    (256, 124, 8, 8),  # Mixtral, 1024 tokens at EP=2: 2 rounds and 8 items, cut in 8 (15 would fill the round)
    (256, 124, 16, 15),
    (512, 124, 8, 7),  # 4 rounds and 16 items: 7 pieces each fill it
    (300, 124, 8, 2),  # 52 items: 2 each
    (248, 124, 8, 1),  # even rounds
    (190, 124, 8, 1),  # 66 items: more than half a round
    (30, 124, 4, 4),  # a single round of 30 items
    (256, 124, 1, 1),  # off
])
def test_tail_pieces_fill_the_last_round(items, n_compute, split_k, pieces):
    out = torch.zeros(1, dtype=torch.int32)
    _pieces_probe[(1,)](out, items, n_compute, SPLIT_K=split_k)
    assert out.item() == pieces == tail_pieces(items, n_compute, split_k)  # the host copy the simulator prices


@triton.jit
def _pieces_probe(out_ptr, items, n_compute, SPLIT_K: tl.constexpr):
    tl.store(out_ptr, _tail_pieces(items, n_compute, SPLIT_K))
