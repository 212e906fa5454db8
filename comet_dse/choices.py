"""Legal values of the options that several subcommands share, importable without torch or simpy.

The CLI parses against these at once (`comet-dse bench` runs where the simulator's
dependencies are absent, `simulate` where torch is); the simulator and the kernels import
ROW_ORDERS from here too. The simulator's schedule registry keeps its own names
(tests/comet_dse/test_cli_conventions.py checks they agree with SCHEDULE_NAMES).
"""

from __future__ import annotations

# the order of each rank's rows in the comet/fused layers: its own first, or by source rank
ROW_ORDERS = ("local-first", "source-order")
# the order the fused kernels visit row tiles: layer0 own tiles first and layer1 remote first, or expert by expert
TILE_ORDERS = ("layout", "expert")
# how the fused kernels cut a rank's received rows into row tiles: an expert's rows of all sources
# together (at most one partial tile per expert), or per source (the copy engine's: one copy per source)
TILE_LAYOUTS = ("merged", "by-source")
# how the fused kernels' communication blocks share the remote row tiles: round robin fixed at launch, or each
# block drawing its next tile from a counter as it finishes one (kernels/fused_moe._claim)
COMM_DEALS = ("static", "dynamic")
# GEMM0's gate/up weight in the fused kernels: gate | up halves (two dots per K step) or column pairs (one dot)
GATE_UP_LAYOUTS = ("halves", "pairs")
SCHEDULE_NAMES = ("sequential", "chunked", "comet")
# B0's and B1's expert GEMM (kernels/baselines.py): torch._grouped_mm, or one torch.mm per expert with rows
EXPERT_GEMMS = ("grouped", "loop")
# what the simulator's sequential and chunked schedules run: one of EXPERT_GEMMS, or "best" (the faster of the two
# for the schedule, as a user keeps it and `comet-dse bench` reports it for B0 and, from run 76, for each B1)
SIM_EXPERT_GEMMS = ("best", *EXPERT_GEMMS)
# how comet moves an EP x TP layer's rows: "tokens" (Comet's design: a token once to each TP rank of its experts'
# group, partials pre-reduced over its experts there) or "rows" (what kernels/fused_tp.py runs: every (token,
# expert) row to each of those TP ranks, partials back per row: the EP layer over virtual experts)
TP_DISPATCH = ("tokens", "rows")
# how a timed multi-GPU call is started (bench --align): from a host barrier ("host"; its launch and the other host's
# lateness are in its figure), after an all-reduce on the GPUs too ("devices"), or enqueued behind a device spin
# before that all-reduce ("queued": as a layer runs inside a model's forward, neither is in it)
ALIGNS = ("host", "devices", "queued")
# how a token crosses nodes (comet_dse/hardware.py INTERNODE_ROUTES says what each means)
INTERNODE_ROUTES = ("direct", "rail", "pxn")
# how the simulator prices comet's copies: "flows" (every copy a flow, max-min rates re-computed as flows start
# and end: sim/network.py), "fluid" (each layer's link loads at once: sim/fluid.py), or "auto" (flows up to
# FLOWS_UP_TO_GPUS GPUs, fluid beyond, where the flows' cost grows as W^2 flows x their re-ratings)
NETWORK_ENGINES = ("auto", "flows", "fluid")
FLOWS_UP_TO_GPUS = 32
# torch dtype names that `comet-dse bench` runs the kernels in
DTYPES = ("bfloat16", "float16", "float32")
# the routing forms: a name or a prefix with its argument
ROUTING_FORMS = "uniform | std:<x> | zipf:<a> | trace:<file.npy> | counts:<file.json|file.csv>[#<layer>]"

# the fused kernels' layer1 (GEMM1) tile width unless one is given: GEMM1 has one accumulator, so a
# 256-wide tile fits in registers and was 20-30% faster than 128 on H100
# (results/measurements/ep2_h100/profile/); it must divide a column split of H, else block_n
WIDE_BLOCK_N1 = 256


def layout_that_runs(tile_layout: str, comm_blocks0: int, world: int) -> str:
    """The tile layout the fused kernels run (FusedConfig.layout; the comet schedule prices the same): merged needs
    communication blocks (the copy engine pulls whole segments) and a peer (on one GPU every tile is one source's)."""
    return "merged" if tile_layout == "merged" and comm_blocks0 > 0 and world > 1 else "by-source"


def default_layer1_width(hidden: int, n_splits: int, block_n: int) -> int:
    return WIDE_BLOCK_N1 if (hidden // max(1, n_splits)) % WIDE_BLOCK_N1 == 0 else block_n


# the fused kernels' layer1 (GEMM1) pipeline depth unless one is given: where its K (the FFN width) is
# short, a fourth stage made GEMM1 9% faster on H100 and 2% on H200 at Qwen2-MoE's F = 1408; at
# Mixtral's F = 14336 it was 0-8% slower on H100 (results/measurements/h100_x1/gemm_variants/), so
# longer K keeps the layer's num_stages
DEEP_STAGES1, SHORT_K1 = 4, 2048


def default_layer1_stages(ffn: int, num_stages: int) -> int:
    return DEEP_STAGES1 if ffn <= SHORT_K1 else num_stages


# the most pieces FusedConfig.split_k (and the comet schedule's split_k) may ask for
MAX_SPLIT_K = 16


def layer1_pieces(split_k: int, ffn: int, block_k: int = 64, split_k_min: int = 1024) -> int:
    """The most K pieces the fused layer1 cuts an item of its last round into (FusedConfig.split_k): split_k, fewer
    where a piece would take less than split_k_min of the FFN width, in whole K steps of block_k."""
    steps, least = -(-ffn // block_k), -(-split_k_min // block_k)
    return max(1, min(split_k, steps // least))


def tail_pieces(items: int, blocks: int, most: int) -> int:
    """The pieces each item of layer1's last, partly filled round of `blocks` is cut into, at most `most`: as many as
    fill that round; 1 where the rounds come out even or the tail holds more than half a round. The host's copy of
    kernels/fused_moe.py `_tail_pieces` (the simulator's comet schedule prices it; a test holds the two equal)."""
    tail = items % blocks
    return min(blocks // tail, most) if tail else 1
