"""Comet's two fused MoE kernels in Triton, expert parallel, over peer-addressable buffers.

The layout (kernels/fused_plan.py): every rank packs its token rows in expert order into the
send region of its `xbuf` (rows [0, SEND_ROWS)); rank r's received rows are cut into row tiles
of one expert each, either merged (an expert's own rows that fill whole tiles, then one run of
its remaining own rows and every peer's rows, tiled across sources) or by source (one group per
(source, expert)). Tiles that hold only this rank's own rows are not copied at all: their GEMM
reads the send region directly. The other tiles' rows come in pieces, one per source, each a
contiguous run of rows at its source.

Layer0 (dispatch + GEMM0 + SwiGLU): one persistent grid; programs [0, N_COMM) are
communication blocks, the rest compute blocks. Communication blocks pull each remote tile's
pieces from the sources' send regions into this rank's receive region (rows [SEND_ROWS, ...)
of `xbuf`) in bulk 16-byte copies (a merged tile's own piece was put there before, by
`place_own_kernel` on every SM), then raise the tile's flag to the call's epoch (rising
epochs: flags are never reset). Compute blocks walk (row tile, column tile) work, this rank's
own tiles first (they need no wait), then the others in layout order, GROUP_M row tiles at a
time column by column so that weight tiles are shared through L2; a remote tile's work first
spins on its flag (bounded) and then reads its rows through TMA. FLATTEN lets Triton pipeline
across the tiles that need no wait; measured 1.7-2.2x slower on H100 (results/measurements/
ep2_h100/variants/), so it is off by default. With N_COMM = 0 (the copy-engine variant) the rows are
moved by the copy engine and the flags are one per source segment, written by the stream.
With DEDUP (FusedConfig.dedup) a remote row whose (source, token) an earlier remote tile of this rank
holds is copied from that tile once its flag is up, else pulled (dedup_kernel finds the pairs, reading
the sources' token_of_row in peer memory): a token crosses the link about once per destination rank.
The communication blocks of both layers walk only the plan's `remote` list (the remote tiles in
the order the compute blocks consume them), so every one of them has work.

EXPERT_ORDER (the plan's tile_order "expert"): both layers' compute blocks walk the tiles expert
by expert instead, an expert's own and remote tiles together (one weight stream per expert from
HBM, for layers with few rows per expert), a remote tile waiting for its flag as above.

Layer1 (GEMM1 + combine): compute blocks run GEMM1 column split by column split (decomposed
along N), remote tiles first. Own rows' results go straight to their rows of this rank's
combine region (rows [0, SEND_ROWS) of `ybuf`, in send order); other rows' go to the staging
region and each finished (tile, split) bumps a counter. Communication blocks wait for a
(tile, split) to complete and push each of its remote pieces into its source's combine region
at the rows' send positions: one contiguous block per piece. After a device barrier each rank takes the
weighted top-k sum of its combine region in one pass (`combine_kernel`). With PREREDUCE (FusedConfig.prereduce)
a token's rows at this rank go home as one row instead, their weighted sum (`_reduce_tokens`), a column split at
a time once every remote tile has it; the owner adds one such row per peer to its own slots.

Producers get the lowest program ids (communication in layer0, compute in layer1): on the GPU
every program is resident (grid <= SMs), and in Triton's CPU interpreter, which runs programs
one after another, producers then finish before any consumer spins.

Peers are addressed as the local buffer's pointer plus an element offset (peer address -
local address): symmetric memory maps every peer buffer into this process's address space,
and so does a shared-memory file on the CPU; the interpreter cannot turn an integer into a
pointer, but it can add an offset to one. Offsets are multiples of 16 elements (checked on the
host), which lets the compiler use 16-byte accesses.

Every wait is bounded: past `max_spins` it writes a code into the error slot and gives up;
the host reads the slot on demand (FusedMoE.check) and turns it into a clear exception.

MODE selects the benchmark variants of the same kernels: FULL; COMPUTE_ONLY (communication
blocks move nothing and only raise the flags; nothing is pushed); COMM_ONLY (compute blocks
skip their GEMM tiles and only publish them as done).
"""

from __future__ import annotations

import triton
import triton.language as tl

FULL, COMPUTE_ONLY, COMM_ONLY = 0, 1, 2  # for the host
# the forward without its two layer kernels (host side only, no kernel sees it): calibrate times the rest
NO_LAYERS = 3
_COMPUTE_ONLY = tl.constexpr(COMPUTE_ONLY)  # the same, as the compiler must see globals
_COMM_ONLY = tl.constexpr(COMM_ONLY)
BARRIER_CODE = 1 << 30  # error codes: > 0 layer0 tile + 1, < 0 -(layer1 counter + 1), this + slot: a barrier
_BARRIER_CODE = tl.constexpr(BARRIER_CODE)

# ----------------------------------------------------------------------------------------
# shared pieces
# ----------------------------------------------------------------------------------------


@triton.jit
def _wait(flag_ptr, target, err_ptr, err_code, max_spins, SYS: tl.constexpr):
    """Spin until *flag_ptr == target (acquire); past max_spins record err_code and go on."""
    spins = 0
    if SYS:
        while (tl.atomic_add(flag_ptr, 0, sem="acquire", scope="sys") != target) & (spins < max_spins):
            spins += 1
    else:
        while (tl.atomic_add(flag_ptr, 0, sem="acquire", scope="gpu") != target) & (spins < max_spins):
            spins += 1
    if spins >= max_spins:  # the first error wins: later ones are its consequences
        tl.atomic_cas(err_ptr, 0, err_code, sem="relaxed", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _proxy_fence(x, ENABLED: tl.constexpr):
    """Order the generic-proxy writes seen through an acquire before this thread's TMA reads
    (PTX: the async proxy needs fence.proxy.async). The interpreter has no inline assembly."""
    if ENABLED:
        tl.inline_asm_elementwise("fence.proxy.async.global;\nmov.b32 $0, $1;", "=r,r", [x], dtype=tl.int32,
                                  is_pure=False, pack=1)


@triton.jit
def _clock(x, ENABLED: tl.constexpr):
    """The GPU's global nanosecond timer where ENABLED (calibrate's spans inside a kernel), else 0: the
    interpreter has no inline assembly. `x`: any int32 scalar (the assembly needs an operand)."""
    if ENABLED:
        return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [x], dtype=tl.int64, is_pure=False,
                                         pack=1)
    else:
        return x.to(tl.int64) * 0


@triton.jit
def _stamp(stamps_ptr, pid, start, ENABLED: tl.constexpr):
    """Where ENABLED: this program's start and end (globaltimer ns) at stamps_ptr[2 pid], [2 pid + 1]."""
    if ENABLED:
        tl.debug_barrier()  # every thread of the program is done
        tl.store(stamps_ptr + 2 * pid, start)
        tl.store(stamps_ptr + 2 * pid + 1, _clock(pid, ENABLED))


@triton.jit
def _wait_rows(flags_ptr, u, src, seg_base, epoch, err_ptr, max_spins, SEG_FLAGS: tl.constexpr, PROXY_FENCE: tl.constexpr):
    """Until remote row tile u's rows have landed: its own flag, or its source's (SEG_FLAGS, the copy engine)."""
    if SEG_FLAGS:
        flag = seg_base + src
    else:
        flag = u
    _wait(flags_ptr + flag, epoch, err_ptr, u + 1, max_spins, False)
    _proxy_fence(epoch, PROXY_FENCE)


@triton.jit
def _tile(tiles_ptr, u):
    """(expert, first row, rows, source rank, first row at the source) of row tile u."""
    entry = tiles_ptr + 5 * u
    return tl.load(entry), tl.load(entry + 1), tl.load(entry + 2), tl.load(entry + 3), tl.load(entry + 4)


@triton.jit
def _swizzle(w, n_rows, n_cols, GROUP_M: tl.constexpr):
    """Work item w -> (row tile, column tile): GROUP_M row tiles at a time, column by column."""
    per_group = GROUP_M * n_cols
    first = (w // per_group) * GROUP_M
    size = tl.minimum(n_rows - first, GROUP_M)
    within = w % per_group
    return first + within % size, within // size


@triton.jit
def _gemm(a_desc, a_row, w_desc, w_row, col0, K, N, SWIGLU: tl.constexpr,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PAIRS: tl.constexpr, k_lo=0):
    """acc (BLOCK_M, BLOCK_N) fp32: rows [a_row, a_row + BLOCK_M) of a (., K) times the weight
    rows [w_row, w_row + K), columns [col0, col0 + BLOCK_N), both through TMA (k_lo > 0: only
    the K range [k_lo, K), one piece of a split-K tile); with SWIGLU,
    silu(a w[:, cols]) * (a w[:, N + cols]), or with PAIRS (gate and up interleaved column by
    column: w[:, 2j] gate, w[:, 2j + 1] up) one dot of twice the width per step, split in
    registers after the loop. Rows past the tile belong to other tiles (their results are masked
    on store); a K tail reads a's zero padding."""
    # one return at the end, the branches static: the compiler builds only the branch taken
    if SWIGLU and PAIRS:
        both = tl.zeros((BLOCK_M, 2 * BLOCK_N), dtype=tl.float32)
        for k0 in range(k_lo, K, BLOCK_K):
            both = tl.dot(a_desc.load([a_row, k0]), w_desc.load([w_row + k0, 2 * col0]), both)
        gate, up = tl.split(tl.reshape(both, (BLOCK_M, BLOCK_N, 2)))
        acc = gate * tl.sigmoid(gate) * up
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(k_lo, K, BLOCK_K):
            a = a_desc.load([a_row, k0])
            acc = tl.dot(a, w_desc.load([w_row + k0, col0]), acc)
            if SWIGLU:
                acc_up = tl.dot(a, w_desc.load([w_row + k0, col0 + N]), acc_up)
        if SWIGLU:
            acc = acc * tl.sigmoid(acc) * acc_up
    return acc


@triton.jit
def _gemm0_tile(xbuf_desc, a_row, w_desc, expert, c, H, F, h_ptr, h_desc, row0, rows,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PAIRS: tl.constexpr,
                TMA_STORE: tl.constexpr):
    """Column tile c of row tile (expert, row0, rows), its rows at a_row of xbuf: GEMM0 + SwiGLU into h.
    TMA_STORE: a full tile leaves through h_desc (an asynchronous bulk store: the program goes on to
    its next tile while it drains; layer1, the reader, is the next launch); a partial one is masked."""
    acc = _gemm(xbuf_desc, a_row, w_desc, expert * H, c * BLOCK_N, H, F, True, BLOCK_M, BLOCK_N, BLOCK_K, PAIRS)
    if TMA_STORE and rows == BLOCK_M:  # columns past F are clipped by the descriptor
        h_desc.store([row0, c * BLOCK_N], acc.to(h_ptr.dtype.element_ty))
    else:
        _store_tile(h_ptr, row0 + tl.arange(0, BLOCK_M), rows, c * BLOCK_N, F, acc, BLOCK_M, BLOCK_N)


@triton.jit
def _store_tile(out_ptr, out_rows, rows, col0, N, acc, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The first `rows` rows of acc to rows out_rows (BLOCK_M,) of out, columns [col0, col0 + BLOCK_N)."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = col0 + tl.arange(0, BLOCK_N)
    out = out_ptr + out_rows.to(tl.int64)[:, None] * N + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(offs_m < rows)[:, None] & (offs_n < N)[None, :])


@triton.jit
def _copy_block(src_ptr, src_row, dst_ptr, dst_row, rows, col0, cols, stride,
                COPY_ROWS: tl.constexpr, COPY_COLS: tl.constexpr):
    """Copy the (rows, cols) block at (src_row, col0) of src to (dst_row, col0) of dst, both of
    row stride `stride`; src or dst may be a peer's buffer (its offset folded into the row)."""
    offs_r = tl.arange(0, COPY_ROWS)
    offs_c = tl.arange(0, COPY_COLS)
    for r0 in range(0, rows, COPY_ROWS):
        mask_r = (r0 + offs_r) < rows
        src = src_ptr + (src_row + r0 + offs_r).to(tl.int64)[:, None] * stride
        dst = dst_ptr + (dst_row + r0 + offs_r).to(tl.int64)[:, None] * stride
        for c0 in range(col0, col0 + cols, COPY_COLS):
            c = c0 + offs_c
            m = mask_r[:, None] & (c < col0 + cols)[None, :]
            tl.store(dst + c[None, :], tl.load(src + c[None, :], mask=m), mask=m)


@triton.jit
def _move_tile(buf_ptr, deltas_ptr, pieces_ptr, expert, row0, rows, recv_base, col0, cols, stride, own_pos,
               WORLD: tl.constexpr, PULL: tl.constexpr, COPY_ROWS: tl.constexpr, COPY_COLS: tl.constexpr,
               dup_row_ptr, dup_tile_ptr, flags_ptr, epoch, DEDUP: tl.constexpr):
    """Move row tile (expert, row0, rows) between this rank's rows recv_base + layout row and its
    sources' rows, piece by piece (the tile's intersection with each of its expert's pieces: one
    piece by source, up to WORLD merged): PULL each piece from its source's send region (layer0),
    else push it to the source's combine region (layer1). This rank's own piece (layout position
    own_pos) is not moved here: `place_own_kernel` put it in place before layer0, and layer1's
    compute blocks write its results straight to the combine region. DEDUP (pulls of whole rows):
    a row whose token an earlier tile already brought is copied from there (`_pull_dedup`)."""
    for j in range(WORLD):
        piece = pieces_ptr + (expert * WORLD + j) * 4
        first = tl.load(piece)
        lo = tl.maximum(row0, first)
        hi = tl.minimum(row0 + rows, first + tl.load(piece + 1))
        if (hi > lo) & (j != own_pos):
            src = tl.load(piece + 2)
            at_src = tl.load(piece + 3) + lo - first
            peer = tl.multiple_of(tl.load(deltas_ptr + src), 16)
            if PULL and DEDUP:
                _pull_dedup(buf_ptr + peer, at_src, buf_ptr, recv_base, lo, hi - lo, stride, dup_row_ptr, dup_tile_ptr,
                            flags_ptr, epoch, COPY_ROWS, COPY_COLS)
            elif PULL:
                _copy_block(buf_ptr + peer, at_src, buf_ptr, recv_base + lo, hi - lo, col0, cols, stride, COPY_ROWS, COPY_COLS)
            else:
                _copy_block(buf_ptr, recv_base + lo, buf_ptr + peer, at_src, hi - lo, col0, cols, stride, COPY_ROWS, COPY_COLS)


@triton.jit
def _pull_dedup(src_ptr, src_row, buf_ptr, recv_base, lo, rows, stride, dup_row_ptr, dup_tile_ptr, flags_ptr, epoch,
                COPY_ROWS: tl.constexpr, COPY_COLS: tl.constexpr):
    """Pull layout rows [lo, lo + rows) (whole rows) from src_row of a peer's send region, except the
    rows whose (source, token) an earlier remote tile of this rank already holds (dup_tile >= 0)
    and whose tile has landed: those are copied from that row here instead of over the link."""
    offs_r = tl.arange(0, COPY_ROWS)
    offs_c = tl.arange(0, COPY_COLS)
    for r0 in range(0, rows, COPY_ROWS):
        in_r = (r0 + offs_r) < rows
        dup_tile = tl.load(dup_tile_ptr + lo + r0 + offs_r, mask=in_r, other=-1)
        has_first = in_r & (dup_tile >= 0)
        # a tile's flag is raised after its rows are written (release): read it with acquire
        landed = has_first & (tl.atomic_add(flags_ptr + dup_tile, 0, mask=has_first, sem="acquire", scope="gpu") == epoch)
        over_link = in_r & ~landed
        here = tl.load(dup_row_ptr + lo + r0 + offs_r, mask=landed, other=0)
        remote = src_ptr + (src_row + r0 + offs_r).to(tl.int64)[:, None] * stride
        local = buf_ptr + (recv_base + here).to(tl.int64)[:, None] * stride
        dst = buf_ptr + (recv_base + lo + r0 + offs_r).to(tl.int64)[:, None] * stride
        for c0 in range(0, stride, COPY_COLS):
            c = c0 + offs_c
            in_c = (c < stride)[None, :]
            row = tl.load(remote + c[None, :], mask=over_link[:, None] & in_c)
            row = tl.where(landed[:, None], tl.load(local + c[None, :], mask=landed[:, None] & in_c), row)
            tl.store(dst + c[None, :], row, mask=in_r[:, None] & in_c)


@triton.jit
def dedup_kernel(tiles_ptr, remote_ptr, num_tiles_ptr, local_tiles_ptr, pieces_ptr, tok_ptr, tok_deltas_ptr,
                 firsts_ptr, dup_row_ptr, dup_tile_ptr, own_pos, max_tokens,
                 WORLD: tl.constexpr, BLOCK_M: tl.constexpr, RESOLVE: tl.constexpr):
    """Deduplicated layer0 pulls, two launches over the remote tiles in the order they move (`remote`).
    Every remote layout row is (source s, its send row) and so (s, token t) through s's token_of_row,
    read in peer memory. RESOLVE = 0: firsts[s, t] = the earliest move position (move index * BLOCK_M +
    row in tile) holding (s, t). RESOLVE = 1: every other row holding (s, t) gets that row and its
    tile (dup_row, dup_tile), -1 the first: layer0 copies it locally once that tile has landed."""
    n_remote = tl.load(num_tiles_ptr) - (tl.load(local_tiles_ptr + 1) - tl.load(local_tiles_ptr))
    offs = tl.arange(0, BLOCK_M)
    for m in range(tl.program_id(0), n_remote, tl.num_programs(0)):
        expert, row0, rows, src, src_row0 = _tile(tiles_ptr, tl.load(remote_ptr + m))
        r = row0 + offs  # layout rows
        position = m * BLOCK_M + offs
        for j in range(WORLD):
            piece = pieces_ptr + (expert * WORLD + j) * 4
            first = tl.load(piece)
            n = tl.load(piece + 1)
            if (j != own_pos) & (n > 0):
                s = tl.load(piece + 2)
                mine = (offs < rows) & (r >= first) & (r < first + n)
                t = tl.load(tok_ptr + tl.load(tok_deltas_ptr + s) + tl.load(piece + 3) + r - first, mask=mine, other=0)
                key = s * max_tokens + t
                if RESOLVE:
                    f = tl.load(firsts_ptr + key, mask=mine, other=0)
                    f_tile = tl.load(remote_ptr + f // BLOCK_M, mask=mine, other=0)
                    f_row = tl.load(tiles_ptr + 5 * f_tile + 1, mask=mine, other=0) + f % BLOCK_M
                    tl.store(dup_tile_ptr + r, tl.where(f == position, -1, f_tile), mask=mine)
                    tl.store(dup_row_ptr + r, f_row, mask=mine)
                else:
                    tl.atomic_min(firsts_ptr + key, position, mask=mine, sem="relaxed")


@triton.jit
def place_own_kernel(xbuf_ptr, pieces_ptr, own_pos, SEND_ROWS, H, WORLD: tl.constexpr, ROWS: tl.constexpr,
                     COPY_COLS: tl.constexpr):
    """Merged layout: this rank's own piece of every expert's run (its rows short of a full tile)
    from the send region to its layout rows, before layer0, on every SM: program (expert, j) copies
    rows [j * ROWS, (j + 1) * ROWS) of it. The communication blocks then move remote rows only."""
    piece = pieces_ptr + (tl.program_id(0) * WORLD + own_pos) * 4
    first = tl.program_id(1) * ROWS
    rows = tl.minimum(tl.load(piece + 1) - first, ROWS)
    if rows > 0:
        _copy_block(xbuf_ptr, tl.load(piece + 3) + first, xbuf_ptr, SEND_ROWS + tl.load(piece) + first, rows, 0, H, H,
                    ROWS, COPY_COLS)


# ----------------------------------------------------------------------------------------
# layer0: dispatch (pull) + GEMM0 + SwiGLU
# ----------------------------------------------------------------------------------------


@triton.jit
def _claim(claims_ptr, static_item, DYNAMIC: tl.constexpr):
    """A communication block's next item: DYNAMIC, the next unclaimed one (a counter every block of the launch
    draws from, so a block that finished early takes more); else `static_item` (round robin, fixed at launch)."""
    if DYNAMIC:
        return tl.atomic_add(claims_ptr, 1, sem="relaxed", scope="gpu")
    else:
        return static_item


@triton.jit
def _release_claims(claims_ptr, n_blocks, DYNAMIC: tl.constexpr):
    """DYNAMIC: the last of `n_blocks` communication blocks to finish zeroes the counter (claims_ptr) and its own count
    (claims_ptr + 1) for the next launch. Every block has drawn its last, past-the-end item before it counts itself
    out, so no block draws after the reset: a launch needs no memset, and a layer launched alone again (bench's
    per-layer timings, calibrate) starts from 0 like a graph replay."""
    if DYNAMIC:
        if tl.atomic_add(claims_ptr + 1, 1, sem="acq_rel", scope="gpu") == n_blocks - 1:
            tl.atomic_xchg(claims_ptr, 0, sem="relaxed", scope="gpu")
            tl.atomic_xchg(claims_ptr + 1, 0, sem="relaxed", scope="gpu")


@triton.jit
def layer0_kernel(
    xbuf_ptr, x_deltas_ptr, xbuf_desc, w_desc, h_ptr, h_desc, tiles_ptr, order_ptr, remote_ptr, num_tiles_ptr, local_tiles_ptr,
    pieces_ptr, flags_ptr, err_ptr, epoch_ptr, dup_row_ptr, dup_tile_ptr, pulled_ptr, stamps_ptr, claims_ptr,
    rank, own_pos, max_spins, delay_spins, H, F, SEND_ROWS, seg_base, N_COMM, N_PROGRAMS,
    WORLD: tl.constexpr, COPY_ROWS: tl.constexpr, COPY_COLS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    MODE: tl.constexpr, SEG_FLAGS: tl.constexpr, PROXY_FENCE: tl.constexpr, FLATTEN: tl.constexpr,
    EXPERT_ORDER: tl.constexpr, PAIRS: tl.constexpr, TMA_STORE: tl.constexpr, DEDUP: tl.constexpr,
    PULL_PARTS: tl.constexpr, STAMPS: tl.constexpr, DYNAMIC: tl.constexpr,
):
    """DEDUP: a remote row whose (source, token) an earlier tile already brought is copied locally
    from there once that tile's flag is up (dedup_kernel's tables), else pulled: a token crosses
    the link about once per destination rank, not once per expert slot. delay_spins: > 0 slows every producer by that many spins, < 0 stops it from signalling
    (tests). SEG_FLAGS: remote tiles wait on their source's flag at seg_base + source (the copy
    engine's), not on their own. EXPERT_ORDER: the compute blocks walk the tiles in `order` (expert
    by expert, own and remote alike): an expert's weights stream from HBM once, not once per phase.
    The communication blocks walk `remote` (the plan's order of the remote tiles) either way, in PULL_PARTS
    pieces of BLOCK_M / PULL_PARTS rows per tile, round robin (DYNAMIC: each block draws its next piece from a counter
    at claims_ptr, `_claim`): several blocks bring one tile, and the block that counts its last piece in (pulled_ptr,
    zeroed each forward; counted modulo PULL_PARTS) raises its flag.
    STAMPS: each program's start and end go to stamps_ptr (`_stamp`)."""
    pid = tl.program_id(0)
    start = _clock(pid, STAMPS)
    n_tiles = tl.load(num_tiles_ptr)
    epoch = tl.load(epoch_ptr)
    if pid < N_COMM:
        # ---- communication blocks: pull remote row tiles from the sources' send regions ----
        n_remote = n_tiles - (tl.load(local_tiles_ptr + 1) - tl.load(local_tiles_ptr))
        part_rows: tl.constexpr = BLOCK_M // PULL_PARTS
        i = _claim(claims_ptr, pid, DYNAMIC)
        while i < n_remote * PULL_PARTS:
            u = tl.load(remote_ptr + i // PULL_PARTS)
            expert, row0, rows, src, src_row0 = _tile(tiles_ptr, u)
            lo = (i % PULL_PARTS) * part_rows  # this piece: the tile's rows [lo, lo + part_rows), if it has them
            if (MODE != _COMPUTE_ONLY) & (lo < rows):
                _move_tile(xbuf_ptr, x_deltas_ptr, pieces_ptr, expert, row0 + lo, tl.minimum(rows - lo, part_rows),
                           SEND_ROWS, 0, H, H, own_pos, WORLD, True, COPY_ROWS, COPY_COLS, dup_row_ptr, dup_tile_ptr,
                           flags_ptr, epoch, DEDUP)
            for _ in range(delay_spins):  # a slow producer, for the tests
                tl.atomic_add(err_ptr, 0, sem="relaxed", scope="gpu")
            tl.debug_barrier()
            last = True
            if PULL_PARTS > 1:  # acq_rel: the pieces counted in before this one happen before its flag. Modulo: a
                # launch of the layer alone again (bench's per-layer timings, calibrate) counts on from the last one
                last = tl.atomic_add(pulled_ptr + u, 1, sem="acq_rel", scope="gpu") % PULL_PARTS == PULL_PARTS - 1
            if (delay_spins >= 0) & last:
                tl.atomic_xchg(flags_ptr + u, epoch, sem="release", scope="gpu")
            i = _claim(claims_ptr, i + N_COMM, DYNAMIC)
        _release_claims(claims_ptr, N_COMM, DYNAMIC)
    elif EXPERT_ORDER:
        # ---- compute blocks, expert by expert: a remote tile waits for its flag, an own one does not ----
        n_cols = tl.cdiv(F, BLOCK_N)
        for w in range(pid - N_COMM, n_tiles * n_cols, N_PROGRAMS - N_COMM):
            v, c = _swizzle(w, n_tiles, n_cols, GROUP_M)
            u = tl.load(order_ptr + v)
            expert, row0, rows, src, src_row0 = _tile(tiles_ptr, u)
            a_row = src_row0
            if src != rank:
                _wait_rows(flags_ptr, u, src, seg_base, epoch, err_ptr, max_spins, SEG_FLAGS, PROXY_FENCE)
                a_row = SEND_ROWS + row0
            if MODE != _COMM_ONLY:
                _gemm0_tile(xbuf_desc, a_row, w_desc, expert, c, H, F, h_ptr, h_desc, row0, rows,
                            BLOCK_M, BLOCK_N, BLOCK_K, PAIRS, TMA_STORE)
    else:
        # ---- compute blocks: GEMM0 + SwiGLU; this rank's own tiles first, then the rest ----
        n_cols = tl.cdiv(F, BLOCK_N)
        first = tl.load(local_tiles_ptr)
        n_own = tl.load(local_tiles_ptr + 1) - first
        if MODE != _COMM_ONLY:
            # own rows need no wait, so the loop may be flattened (FLATTEN): the compiler's software
            # pipeline then prefetches the next tile's operands while this one's epilogue runs
            for w in tl.range(pid - N_COMM, n_own * n_cols, N_PROGRAMS - N_COMM, flatten=FLATTEN):
                v, c = _swizzle(w, n_own, n_cols, GROUP_M)
                expert, row0, rows, src, src_row0 = _tile(tiles_ptr, first + v)
                _gemm0_tile(xbuf_desc, src_row0, w_desc, expert, c, H, F, h_ptr, h_desc, row0, rows,
                            BLOCK_M, BLOCK_N, BLOCK_K, PAIRS, TMA_STORE)
        # remote tiles, each after its flag: not flattened, so no load is hoisted above a wait
        n_rest = n_tiles - n_own
        for w in range(pid - N_COMM, n_rest * n_cols, N_PROGRAMS - N_COMM):
            v, c = _swizzle(w, n_rest, n_cols, GROUP_M)
            u = v + tl.where(v >= first, n_own, 0)  # skip over the own tiles
            expert, row0, rows, src, src_row0 = _tile(tiles_ptr, u)
            _wait_rows(flags_ptr, u, src, seg_base, epoch, err_ptr, max_spins, SEG_FLAGS, PROXY_FENCE)
            if MODE != _COMM_ONLY:
                _gemm0_tile(xbuf_desc, SEND_ROWS + row0, w_desc, expert, c, H, F, h_ptr, h_desc, row0, rows,
                            BLOCK_M, BLOCK_N, BLOCK_K, PAIRS, TMA_STORE)
    _stamp(stamps_ptr, pid, start, STAMPS)


# ----------------------------------------------------------------------------------------
# layer1: GEMM1 (column splits) + combine (push to the sources)
# ----------------------------------------------------------------------------------------


@triton.jit
def _route_table(src_route_ptr, table_ptr, pieces_ptr, q, t0, n_tok, rank, experts, max_tokens, SEND_ROWS,
                 WORLD: tl.constexpr, TOP_K: tl.constexpr, K_P2: tl.constexpr, REDUCE_ROWS: tl.constexpr):
    """Tokens [t0, t0 + REDUCE_ROWS) (of n_tok) of the source at layout position q: their slots whose expert this rank
    holds, as (staging row, weight bits) in the local table (table_ptr: this source's (2, K_P2, max_tokens)),
    compacted: a token's i-th slot here in column i, -1 past its last. Built once per call, so the sums read one
    coalesced row index and weight per slot and token instead of the source's route entries (a peer round trip)
    and the pieces behind them at every split. The source's route table (src_route_ptr, peer memory, rows of
    max_tokens * TOP_K): slot experts, send rows, weights. A token's row of expert e from this source lies at
    layout row pieces[e, q].first + send row - pieces[e, q].first row at the source."""
    route_cols = max_tokens * TOP_K
    offs_t = t0 + tl.arange(0, REDUCE_ROWS)
    j = tl.arange(0, K_P2)
    in_t = offs_t < n_tok
    slot = offs_t[:, None] * TOP_K + j[None, :]
    in_slot = in_t[:, None] & (j < TOP_K)[None, :]
    # the three peer reads at once (one round trip), then the local pieces
    expert = tl.load(src_route_ptr + slot, mask=in_slot, other=-1) - rank * experts
    send_row = tl.load(src_route_ptr + route_cols + slot, mask=in_slot, other=0)
    weight = tl.load(src_route_ptr + 2 * route_cols + slot, mask=in_slot, other=0)
    here = in_slot & (expert >= 0) & (expert < experts)
    piece = pieces_ptr + (expert * WORLD + q) * 4
    row = SEND_ROWS + tl.load(piece, mask=here, other=0) + send_row - tl.load(piece + 3, mask=here, other=0)
    column = tl.cumsum(here.to(tl.int32), axis=1) - 1  # the i-th slot here goes to column i
    count = tl.sum(here.to(tl.int32), axis=1)
    tok = offs_t[:, None]
    tl.store(table_ptr + column * max_tokens + tok, row, mask=here)
    tl.store(table_ptr + (K_P2 + column) * max_tokens + tok, weight, mask=here)
    tl.store(table_ptr + j[None, :] * max_tokens + tok, tl.full((REDUCE_ROWS, K_P2), -1, tl.int32),
             mask=in_t[:, None] & (j[None, :] >= count[:, None]))


@triton.jit
def _reduce_tokens(ybuf_ptr, src_red_ptr, table_ptr, t0, n_tok, rank, max_tokens, H, col0, cols,
                   K_P2: tl.constexpr, REDUCE_ROWS: tl.constexpr, REDUCE_COLS: tl.constexpr):
    """Tokens [t0, t0 + REDUCE_ROWS) (of n_tok) of one source, columns [col0, col0 + cols): each token's rows here
    (table_ptr: the source's local table, `_route_table`) weighted and summed in fp32, stored once to row
    rank * max_tokens + token of the source's `red` (src_red_ptr: already at the source). Slot by slot, each a
    (token, column) gather of 16-byte vectors; a slot column no token of the step has is masked off whole."""
    offs_t = t0 + tl.arange(0, REDUCE_ROWS)
    in_t = offs_t < n_tok
    any_here = tl.load(table_ptr + offs_t, mask=in_t, other=-1) >= 0
    dst = src_red_ptr + (rank * max_tokens + offs_t).to(tl.int64)[:, None] * H
    offs_c = tl.arange(0, REDUCE_COLS)
    for c0 in range(col0, col0 + cols, REDUCE_COLS):
        c = c0 + offs_c
        in_c = c < col0 + cols
        total = tl.zeros((REDUCE_ROWS, REDUCE_COLS), tl.float32)
        for i in tl.static_range(K_P2):
            row = tl.load(table_ptr + i * max_tokens + offs_t, mask=in_t, other=-1)
            # a column past the token's last slot here has row -1 and an unwritten weight: masked, not 0 * garbage
            weight = tl.load(table_ptr + (K_P2 + i) * max_tokens + offs_t, mask=row >= 0,
                             other=0).to(tl.float32, bitcast=True)
            y = tl.load(ybuf_ptr + row.to(tl.int64)[:, None] * H + c[None, :], mask=(row >= 0)[:, None] & in_c[None, :],
                        other=0.0)
            total += y.to(tl.float32) * weight[:, None]
        tl.store(dst + c[None, :], total.to(src_red_ptr.dtype.element_ty), mask=any_here[:, None] & in_c[None, :])


@triton.jit
def _tail_pieces(n_items, n_compute, SPLIT_K: tl.constexpr):
    """The K pieces of each item in layer1's last, partly filled round of n_compute blocks: as many as fill that
    round (n_compute // its items), at most SPLIT_K; 1 where the rounds come out even or the tail holds more than
    half a round."""
    tail = n_items % n_compute
    return tl.where(tail > 0, tl.minimum(n_compute // tl.maximum(tail, 1), SPLIT_K), 1)


@triton.jit
def layer1_kernel(
    h_desc, w_desc, ybuf_ptr, y_deltas_ptr, tiles_ptr, order_ptr, remote_ptr, num_tiles_ptr, local_tiles_ptr, pieces_ptr,
    counters_ptr, err_ptr, route_ptr, route_deltas_ptr, red_ptr, red_deltas_ptr, table_ptr, rotation_ptr, stamps_ptr,
    claims_ptr, partials_ptr, rank, own_pos, max_spins, H, F, SEND_ROWS, SPLIT_COLS, N_COMPUTE, N_PROGRAMS, split_base,
    split_k_base, experts, max_tokens,
    WORLD: tl.constexpr, N_SPLITS: tl.constexpr, COL_TILES: tl.constexpr, COPY_ROWS: tl.constexpr, COPY_COLS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, MODE: tl.constexpr,
    FLATTEN: tl.constexpr, PREREDUCE: tl.constexpr, TOP_K: tl.constexpr, K_P2: tl.constexpr, REDUCE_ROWS: tl.constexpr,
    REDUCE_COLS: tl.constexpr, STAMPS: tl.constexpr, DYNAMIC: tl.constexpr, SPLIT_K: tl.constexpr,
):
    """COL_TILES: column tiles per split. Counter of (tile u, split j): u * N_SPLITS + j.
    SPLIT_K (FusedConfig.split_k) > 1: the items of the compute blocks' last round, where it is partly filled, are
    cut along K into up to SPLIT_K pieces each that fill it (`_tail_pieces`); piece i of the tail writes its fp32
    result to partials_ptr[i] (BLOCK_M x BLOCK_N each, at most N_COMPUTE), tail item j's arrivals are counted at
    split_k_base + j, and the piece arriving last zeroes that count, sums the item's pieces in order and finishes
    the tile as an unsplit item does.
    The block counts are run-time arguments: one compiled kernel serves every n_comm.
    PREREDUCE (FusedConfig.prereduce): a split's remote results go home only once every remote tile has it
    (one counter per split, at split_base + j), as one row per (source, token): the weighted sum of that
    token's rows here (`_reduce_tokens`), into row rank * max_tokens + token of the source's `red`. table_ptr:
    (WORLD, 2, K_P2, max_tokens) int32 of this rank, each source's slots here (`_route_table`). STAMPS: each program's
    start and end go to stamps_ptr (`_stamp`)."""
    pid = tl.program_id(0)
    start = _clock(pid, STAMPS)
    n_tiles = tl.load(num_tiles_ptr)
    if pid < N_COMPUTE:
        # ---- compute blocks: GEMM1 split by split, remote tiles first ----
        per_split = n_tiles * COL_TILES
        n_items = per_split * N_SPLITS
        # split-K (SPLIT_K > 1): the items of the last, partly filled round are cut along K into `pieces` that fill
        # it; the `whole` items before them run unsplit. Constants where SPLIT_K is 1: the kernel compiles as before
        pieces = 1
        whole = n_items
        piece_k = F
        end = n_items
        if SPLIT_K > 1:
            pieces = _tail_pieces(n_items, N_COMPUTE, SPLIT_K)
            whole = tl.where(pieces > 1, n_items - n_items % N_COMPUTE, n_items)
            piece_k = tl.cdiv(tl.cdiv(F, BLOCK_K), pieces) * BLOCK_K
            end = whole + (n_items - whole) * pieces
        # no waits here: the loop may be flattened (FLATTEN). A tail item's pieces are consecutive: they run at once
        for x in tl.range(pid, end, N_COMPUTE, flatten=FLATTEN):
            w = x
            k_lo = 0
            k_hi = F
            if SPLIT_K > 1:
                t = tl.maximum(x - whole, 0)  # the piece's place in the tail
                w = tl.where(x < whole, x, whole + t // pieces)
                k_lo = tl.where(x < whole, 0, (t % pieces) * piece_k)
                k_hi = tl.where(x < whole, F, tl.minimum(F, k_lo + piece_k))
            split = w // per_split
            v, c = _swizzle(w % per_split, n_tiles, COL_TILES, GROUP_M)
            u = tl.load(order_ptr + v)
            expert, row0, rows, src, src_row0 = _tile(tiles_ptr, u)
            if MODE != _COMM_ONLY:
                col0 = split * SPLIT_COLS + c * BLOCK_N
                acc = _gemm(h_desc, row0, w_desc, expert * F, col0, k_hi, H, False, BLOCK_M, BLOCK_N, BLOCK_K, False, k_lo)
            done = True  # a constant where SPLIT_K is 1: the branch below compiles away
            if SPLIT_K > 1:
                done = x >= 0
                if x >= whole:  # a tail piece: the one that arrives last adds its item's pieces and finishes the tile
                    offs = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
                    if MODE != _COMM_ONLY:
                        tl.store(partials_ptr + (x - whole) * (BLOCK_M * BLOCK_N) + offs, acc)
                    tl.debug_barrier()  # every thread's part stored before the one thread's release
                    counter = counters_ptr + split_k_base + (w - whole)
                    done = tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == pieces - 1
                    if done:
                        # the item's last arrival: its counter back to zero for the next launch (calibrate and bench
                        # time a layer relaunched alone, with no memset between)
                        tl.store(counter, 0)
                        if MODE != _COMM_ONLY:
                            tl.debug_barrier()  # the acquire, seen by every thread of the block
                            # in piece order, whichever arrived last: the sum is the same bits on every call
                            first = (w - whole) * pieces
                            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
                            for j in range(pieces):
                                acc += tl.load(partials_ptr + (first + j) * (BLOCK_M * BLOCK_N) + offs,
                                               cache_modifier=".cg")
            if done:
                if MODE != _COMM_ONLY:
                    # own rows straight to the combine region, the rest to staging (pushed home from there)
                    r = row0 + tl.arange(0, BLOCK_M)
                    if src == rank:
                        out_rows = src_row0 - row0 + r
                    else:  # a remote tile, or a merged run's, whose own piece (if any) goes home in place
                        own = pieces_ptr + (expert * WORLD + own_pos) * 4
                        own_first = tl.load(own)
                        own_end = own_first + tl.load(own + 1)
                        out_rows = tl.where((r >= own_first) & (r < own_end), tl.load(own + 3) - own_first + r,
                                            SEND_ROWS + r)
                    _store_tile(ybuf_ptr, out_rows, rows, col0, H, acc, BLOCK_M, BLOCK_N)
                if src != rank:
                    tl.debug_barrier()
                    if PREREDUCE:
                        tl.atomic_add(counters_ptr + split_base + split, 1, sem="release", scope="gpu")
                    else:
                        tl.atomic_add(counters_ptr + u * N_SPLITS + split, 1, sem="release", scope="gpu")
    elif (MODE != _COMPUTE_ONLY) & PREREDUCE:
        # ---- communication blocks: the peers' slots here as a local table while the first split computes, then per
        # split, once it is done everywhere, each peer's tokens reduced and sent. A block builds the table entries of
        # the steps it later sums (the same striding), so it waits on no other block, only on its own threads ----
        n_remote = n_tiles - (tl.load(local_tiles_ptr + 1) - tl.load(local_tiles_ptr))
        for p in range(1, WORLD):  # the layout positions other than this rank's
            q = (own_pos + p) % WORLD
            src = tl.load(rotation_ptr + q).to(tl.int32)
            src_route = route_ptr + tl.multiple_of(tl.load(route_deltas_ptr + src), 16)
            n_tok = tl.load(src_route + 3 * max_tokens * TOP_K)  # the source's tokens this call
            for b in range(pid - N_COMPUTE, tl.cdiv(n_tok, REDUCE_ROWS), N_PROGRAMS - N_COMPUTE):
                _route_table(src_route, table_ptr + q * 2 * K_P2 * max_tokens, pieces_ptr, q, b * REDUCE_ROWS, n_tok, rank,
                             experts, max_tokens, SEND_ROWS, WORLD, TOP_K, K_P2, REDUCE_ROWS)
        tl.debug_barrier()  # the table entries one thread wrote, read by another of this block
        for split in range(N_SPLITS):
            counter = split_base + split
            _wait(counters_ptr + counter, n_remote * COL_TILES, err_ptr, -(counter + 1), max_spins, False)
            for p in range(1, WORLD):
                q = (own_pos + p) % WORLD
                src = tl.load(rotation_ptr + q).to(tl.int32)
                src_route = route_ptr + tl.multiple_of(tl.load(route_deltas_ptr + src), 16)
                src_red = red_ptr + tl.multiple_of(tl.load(red_deltas_ptr + src), 16)
                n_tok = tl.load(src_route + 3 * max_tokens * TOP_K)
                for b in range(pid - N_COMPUTE, tl.cdiv(n_tok, REDUCE_ROWS), N_PROGRAMS - N_COMPUTE):
                    _reduce_tokens(ybuf_ptr, src_red, table_ptr + q * 2 * K_P2 * max_tokens, b * REDUCE_ROWS, n_tok, rank,
                                   max_tokens, H, split * SPLIT_COLS, SPLIT_COLS, K_P2, REDUCE_ROWS, REDUCE_COLS)
    elif MODE != _COMPUTE_ONLY:
        # ---- communication blocks: push each finished (remote tile, split) to its source ----
        n_remote = n_tiles - (tl.load(local_tiles_ptr + 1) - tl.load(local_tiles_ptr))
        i = _claim(claims_ptr, pid - N_COMPUTE, DYNAMIC)  # round robin, or (DYNAMIC) the next item not yet taken
        while i < n_remote * N_SPLITS:
            split = i // n_remote
            u = tl.load(remote_ptr + i % n_remote)
            expert, row0, rows, src, src_row0 = _tile(tiles_ptr, u)
            counter = u * N_SPLITS + split
            _wait(counters_ptr + counter, COL_TILES, err_ptr, -(counter + 1), max_spins, False)
            _move_tile(ybuf_ptr, y_deltas_ptr, pieces_ptr, expert, row0, rows, SEND_ROWS, split * SPLIT_COLS, SPLIT_COLS, H,
                       own_pos, WORLD, False, COPY_ROWS, COPY_COLS, counters_ptr, counters_ptr, counters_ptr, 0, False)
            i = _claim(claims_ptr, i + N_PROGRAMS - N_COMPUTE, DYNAMIC)
        _release_claims(claims_ptr, N_PROGRAMS - N_COMPUTE, DYNAMIC)
    _stamp(stamps_ptr, pid, start, STAMPS)


# ----------------------------------------------------------------------------------------
# device barrier and the weighted top-k combine
# ----------------------------------------------------------------------------------------


@triton.jit
def barrier_kernel(sig_ptr, sig_deltas_ptr, epoch_ptr, err_ptr, rank, slot, max_spins, WORLD: tl.constexpr):
    """Every rank of the group reaches this point of the call: raise my signal at every peer
    (release, system scope: what this rank wrote before is visible to them), then wait for
    every peer's signal at mine. Signals hold the call's epoch, so they are never reset."""
    epoch = tl.load(epoch_ptr)
    for p in tl.static_range(WORLD):
        peer = tl.load(sig_deltas_ptr + p)
        tl.atomic_xchg(sig_ptr + peer + slot * WORLD + rank, epoch, sem="release", scope="sys")
    for p in tl.static_range(WORLD):
        _wait(sig_ptr + slot * WORLD + p, epoch, err_ptr, _BARRIER_CODE + slot, max_spins, True)


@triton.jit
def combine_kernel(comb_ptr, pos_ptr, weight_ptr, out_ptr, T, H, expert_ptr, red_ptr, rank, experts, max_tokens,
                   TOP_K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, PREREDUCED: tl.constexpr,
                   WORLD: tl.constexpr):
    """out[t] = sum_j weight[t, j] * comb[pos[t, j]]: the top-k rows of each token, at their
    send positions, weighted and summed in fp32 in one pass. PREREDUCED (layer1 sent each peer's
    rows of a token as one weighted sum, at red[peer * max_tokens + t]): the sum runs over the
    slots whose expert (expert_ptr, like pos) this rank holds, plus one row per peer holding any."""
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask_t = offs_t < T
    mask = mask_t[:, None] & (offs_h < H)[None, :]
    acc = tl.zeros((BLOCK_T, BLOCK_H), dtype=tl.float32)
    holders = tl.zeros((BLOCK_T,), dtype=tl.int32)  # PREREDUCED: bit r set if rank r holds a slot of the token
    for j in tl.static_range(TOP_K):
        pos = tl.load(pos_ptr + offs_t * TOP_K + j, mask=mask_t, other=0)
        weight = tl.load(weight_ptr + offs_t * TOP_K + j, mask=mask_t, other=0.0)
        take = mask
        if PREREDUCED:
            holder = tl.load(expert_ptr + offs_t * TOP_K + j, mask=mask_t, other=0) // experts
            holders = holders | tl.where(mask_t, tl.full((BLOCK_T,), 1, tl.int32) << holder, 0)
            take = mask & (holder == rank)[:, None]
        row = tl.load(comb_ptr + pos.to(tl.int64)[:, None] * H + offs_h[None, :], mask=take, other=0.0)
        acc += weight.to(tl.float32)[:, None] * row.to(tl.float32)
    if PREREDUCED:
        for r in tl.static_range(WORLD):
            take = mask & (((holders >> r) & 1) != 0)[:, None] & (r != rank)
            row = tl.load(red_ptr + (r * max_tokens + offs_t).to(tl.int64)[:, None] * H + offs_h[None, :], mask=take,
                          other=0.0)
            acc += row.to(tl.float32)
    tl.store(out_ptr + offs_t.to(tl.int64)[:, None] * H + offs_h[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)
