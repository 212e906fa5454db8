import pytest

torch = pytest.importorskip("torch", reason="the kernels need torch (pip install -e '.[kernels]')")
pytest.importorskip("triton", reason="the kernels need triton (pip install -e '.[kernels]')")

from comet_dse.kernels.grouped_gemm import grouped_gemm, tile_table  # noqa: E402
from comet_dse.kernels.reference import swiglu  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def loop_reference(a, w, counts):
    out, start = [], 0
    for e, n in enumerate(counts):
        out.append(a[start:start + n].float() @ w[e].float())
        start += n
    return torch.cat(out) if out else a.new_zeros(0, w.shape[2]).float()


@pytest.mark.parametrize("use_tma", [False, True], ids=["pointers", "tma"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("counts", [[37, 0, 64, 5], [1, 0, 0, 0], [0, 0, 130, 0], [16, 16, 16, 16]],
                         ids=["uneven", "one-row", "one-expert", "even"])
def test_grouped_gemm_matches_the_loop(dtype, counts, use_tma):
    g = torch.Generator().manual_seed(sum(counts))
    a = torch.randn(sum(counts), 48, generator=g).to(DEVICE, dtype)
    w = (torch.randn(4, 48, 40, generator=g) * 0.2).to(DEVICE, dtype)
    got = grouped_gemm(a, w, counts, block_m=32, block_n=32, block_k=16, group_m=2, num_sms=3, use_tma=use_tma)
    tol = 1e-4 if dtype == torch.float32 and DEVICE == "cpu" else 2e-2  # GPUs take fp32 dots in tf32
    torch.testing.assert_close(got.float(), loop_reference(a, w, counts), atol=tol, rtol=tol)


@pytest.mark.parametrize("use_tma", [False, True], ids=["pointers", "tma"])
def test_swiglu_epilogue(use_tma):
    counts = [9, 40, 0]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(sum(counts), 32, generator=g).to(DEVICE)
    w = (torch.randn(3, 32, 2 * 24, generator=g) * 0.2).to(DEVICE)
    got = grouped_gemm(a, w, counts, swiglu=True, block_m=16, block_n=16, block_k=16, num_sms=2, use_tma=use_tma)
    tol = 1e-4 if DEVICE == "cpu" else 2e-2
    torch.testing.assert_close(got, swiglu(loop_reference(a, w, counts)), atol=tol, rtol=tol)


def test_tile_table_walks_groups_of_row_tiles_column_by_column():
    table = tile_table([5, 0, 9], block_m=4, n_out=8, block_n=4, group_m=2, device="cpu").tolist()
    assert table == [
        [0, 0, 4, 0], [0, 4, 1, 0], [0, 0, 4, 4], [0, 4, 1, 4],  # expert 0: its two row tiles, column 0 then 4
        [2, 5, 4, 0], [2, 9, 4, 0], [2, 5, 4, 4], [2, 9, 4, 4],  # expert 2: first group of two row tiles
        [2, 13, 1, 0], [2, 13, 1, 4],  # then the last row tile
    ]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="counts"):
        grouped_gemm(torch.zeros(4, 8), torch.zeros(2, 8, 8), [1, 1])


@pytest.mark.parametrize("use_tma", [False, True], ids=["pointers", "tma"])
def test_k_not_a_multiple_of_block_k(use_tma):
    """The last K step of a weight tile reads into the next expert: a's zero padding cancels it."""
    counts = [20, 12]
    g = torch.Generator().manual_seed(4)
    a = torch.randn(sum(counts), 40, generator=g).to(DEVICE)
    w = torch.randn(2, 40, 32, generator=g).to(DEVICE)
    got = grouped_gemm(a, w, counts, block_m=16, block_n=16, block_k=16, num_sms=2, use_tma=use_tma)
    tol = 1e-4 if DEVICE == "cpu" else 2e-2
    torch.testing.assert_close(got, loop_reference(a, w, counts), atol=tol, rtol=tol)
