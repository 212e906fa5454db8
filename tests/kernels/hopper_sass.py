"""Compile the fused kernels for Hopper (sm_90a) on a machine without a GPU and print, per kernel,
what the speed depends on, as one JSON object: registers, spilled bytes, and counts of the SASS
instructions that matter (HGMMA: wgmma tensor cores; UTMALDG / UTMASTG: TMA loads and stores; LDG.E.128 / STG.E.128:
16-byte loads and stores; LDG.E.64 / LDG.E.32: 8- and 4-byte loads). Run without TRITON_INTERPRET (tests/kernels/test_fused_compiles.py
runs it in a subprocess). The launch specialisations are mimicked: pointers and the sizes that
are multiples of 16 are marked 16-divisible, as Triton marks them at a real launch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import triton
import triton.backends.nvidia
from comet_dse.kernels import fused_moe as fm
from comet_dse.kernels import fused_pack, fused_plan
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

BIN = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), "bin")
BM, BN, BK = 128, 128, 64
SIXTEEN = {"H", "F", "SEND_ROWS", "SPLIT_COLS", "T"}  # sizes a real launch sees as multiples of 16


def _desc(block: tuple[int, int]) -> str:
    return f"tensordesc<bf16[{block[0]}, {block[1]}]>"


def _signature(kernel, types: dict[str, str], constexprs: dict) -> dict[str, str]:
    return {name: ("constexpr" if name in constexprs else types.get(name, "i32")) for name in kernel.arg_names}


def _compile(kernel, types: dict[str, str], constexprs: dict, num_warps: int = 8, num_stages: int = 3) -> dict:
    constexprs = {name: value for name, value in constexprs.items() if name in kernel.arg_names}
    sig = _signature(kernel, types, constexprs)
    attrs = {(i,): [["tt.divisibility", 16]] for i, (n, t) in enumerate(sig.items()) if t.startswith("*") or n in SIXTEEN}
    compiled = triton.compile(ASTSource(kernel, sig, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", 90, 128), options={"num_warps": num_warps, "num_stages": num_stages})
    with tempfile.TemporaryDirectory() as tmp:
        ptx, obj = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.o")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        info = subprocess.run([os.path.join(BIN, "ptxas"), "-arch=sm_90a", "-v", ptx, "-o", obj],
                              capture_output=True, text=True, check=True).stderr
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", obj], capture_output=True, text=True, check=True).stdout
    ops = ("HGMMA", "UTMALDG", "UTMASTG", "LDG.E.128", "LDG.E.64", "STG.E.128", "LDG.E.U16", "STG.E.U16")
    return {"registers": int(re.search(r"Used (\d+) registers", info).group(1)), "shared_bytes": compiled.metadata.shared,
            "spill_bytes": sum(int(v) for v in re.findall(r"(\d+) bytes spill", info)),
            **{op: len(re.findall(re.escape(op) + r"\b", sass)) for op in ops},
            "LDG.E.32": len(re.findall(r"LDG\.E(?:\.STRONG\.\w+)? ", sass))}  # 4-byte loads (no width suffix)


def main() -> None:
    ptrs = {"xbuf_ptr": "*bf16", "x_deltas_ptr": "*i64", "h_ptr": "*bf16", "tiles_ptr": "*i32", "num_tiles_ptr": "*i32", "local_tiles_ptr": "*i32",
            "pieces_ptr": "*i32", "flags_ptr": "*i32", "err_ptr": "*i32", "epoch_ptr": "*i32", "ybuf_ptr": "*bf16", "y_deltas_ptr": "*i64",
            "order_ptr": "*i32", "remote_ptr": "*i32", "counters_ptr": "*i32", "sig_ptr": "*i32", "sig_deltas_ptr": "*i64", "comb_ptr": "*bf16",
            "pos_ptr": "*i64", "weight_ptr": "*fp32", "out_ptr": "*fp32", "dup_row_ptr": "*i32", "dup_tile_ptr": "*i32", "pulled_ptr": "*i32",
            "tok_ptr": "*i32", "tok_deltas_ptr": "*i64", "firsts_ptr": "*i32", "route_ptr": "*i32", "route_deltas_ptr": "*i64",
            "red_ptr": "*bf16", "red_deltas_ptr": "*i64", "table_ptr": "*i32", "rotation_ptr": "*i64", "expert_ptr": "*i32",
            "stamps_ptr": "*i64", "claims_ptr": "*i32", "partials_ptr": "*fp32",
            "xbuf_desc": _desc((BM, BK)), "h_desc": _desc((BM, BK)), "w_desc": _desc((BK, BN))}
    wide = {**ptrs, "w_desc": _desc((BK, 256))}
    tiles = {"BLOCK_M": BM, "BLOCK_N": BN, "BLOCK_K": BK, "GROUP_M": 8, "STAMPS": False, "DYNAMIC": False, "SPLIT_K": 1}
    no_prereduce = {"PREREDUCE": False, "TOP_K": 4, "K_P2": 4, "REDUCE_ROWS": 64, "REDUCE_COLS": 64}
    report = {}
    for mode in (fm.FULL, fm.COMPUTE_ONLY, fm.COMM_ONLY):
        for seg_flags in (False, True):
            report[f"layer0_mode{mode}_seg{int(seg_flags)}"] = _compile(
                fm.layer0_kernel, ptrs, {**tiles, "WORLD": 8, "COPY_ROWS": 8, "COPY_COLS": 2048, "MODE": mode,
                                         "SEG_FLAGS": seg_flags, "PROXY_FENCE": True, "FLATTEN": seg_flags,
                                         "EXPERT_ORDER": False, "PAIRS": False, "TMA_STORE": False, "DEDUP": False, "PULL_PARTS": 1})
        report[f"layer1_mode{mode}"] = _compile(
            fm.layer1_kernel, ptrs, {**tiles, "WORLD": 8, "N_SPLITS": 4, "COL_TILES": 4, "COPY_ROWS": 32, "COPY_COLS": 512, "MODE": mode,
                                     "FLATTEN": False, **no_prereduce})
    report["layer0_expert"] = _compile(
        fm.layer0_kernel, ptrs, {**tiles, "WORLD": 8, "COPY_ROWS": 8, "COPY_COLS": 2048, "MODE": fm.FULL, "SEG_FLAGS": False,
                                 "PROXY_FENCE": True, "FLATTEN": False, "EXPERT_ORDER": True, "PAIRS": False,
                                 "TMA_STORE": False, "DEDUP": False, "PULL_PARTS": 1})
    # GEMM0's gate/up in column pairs (one dot of 2 x BN per step), full tiles stored by TMA
    pairs = {**ptrs, "w_desc": _desc((BK, 2 * BN)), "h_desc": _desc((BM, BN))}
    report["layer0_pairs_tma"] = _compile(
        fm.layer0_kernel, pairs, {**tiles, "WORLD": 8, "COPY_ROWS": 8, "COPY_COLS": 2048, "MODE": fm.FULL, "SEG_FLAGS": False,
                                  "PROXY_FENCE": True, "FLATTEN": False, "EXPERT_ORDER": False, "PAIRS": True,
                                  "TMA_STORE": True, "DEDUP": False, "PULL_PARTS": 1})
    # layer0's row tiles pulled in four pieces by up to four communication blocks (FusedConfig.pull_rows)
    report["layer0_pull_parts4"] = _compile(
        fm.layer0_kernel, pairs, {**tiles, "WORLD": 8, "COPY_ROWS": 8, "COPY_COLS": 2048, "MODE": fm.FULL, "SEG_FLAGS": False,
                                  "PROXY_FENCE": True, "FLATTEN": False, "EXPERT_ORDER": False, "PAIRS": True,
                                  "TMA_STORE": True, "DEDUP": False, "PULL_PARTS": 4})
    # both layers stamping each program's start and end (calibrate's spans inside a kernel: the globaltimer's assembly),
    # and both with the communication blocks drawing their items from a counter (FusedConfig.comm_deal "dynamic")
    for name, switch in (("stamps", "STAMPS"), ("dynamic", "DYNAMIC")):
        report[f"layer0_{name}"] = _compile(
            fm.layer0_kernel, pairs, {**tiles, "WORLD": 8, "COPY_ROWS": 8, "COPY_COLS": 2048, "MODE": fm.FULL,
                                      "SEG_FLAGS": False, "PROXY_FENCE": True, "FLATTEN": False, "EXPERT_ORDER": False,
                                      "PAIRS": True, "TMA_STORE": True, "DEDUP": False, "PULL_PARTS": 1, switch: True})
        report[f"layer1_{name}"] = _compile(
            fm.layer1_kernel, wide, {**tiles, "WORLD": 8, "BLOCK_N": 256, "N_SPLITS": 4, "COL_TILES": 2, "COPY_ROWS": 32,
                                     "COPY_COLS": 512, "MODE": fm.FULL, "FLATTEN": False, **no_prereduce, switch: True},
            num_stages=4)
    # layer0 bringing a token once per rank (FusedConfig.dedup), and the kernel that finds the repeats
    report["layer0_dedup"] = _compile(
        fm.layer0_kernel, pairs, {**tiles, "WORLD": 8, "COPY_ROWS": 8, "COPY_COLS": 2048, "MODE": fm.FULL, "SEG_FLAGS": False,
                                  "PROXY_FENCE": True, "FLATTEN": False, "EXPERT_ORDER": False, "PAIRS": True,
                                  "TMA_STORE": True, "DEDUP": True, "PULL_PARTS": 1})
    for resolve in (False, True):
        report[f"dedup_resolve{int(resolve)}"] = _compile(fm.dedup_kernel, ptrs, {"WORLD": 8, "BLOCK_M": BM, "RESOLVE": resolve},
                                                          num_warps=4)
    report["layer1_n256"] = _compile(
        fm.layer1_kernel, wide, {**tiles, "WORLD": 8, "BLOCK_N": 256, "N_SPLITS": 4, "COL_TILES": 2, "COPY_ROWS": 32, "COPY_COLS": 512,
                                 "MODE": fm.FULL, "FLATTEN": True, **no_prereduce})
    # layer1 as the default runs it where F <= 2048 (comet_dse.choices.default_layer1_stages): 4 stages
    report["layer1_n256_stages4"] = _compile(
        fm.layer1_kernel, wide, {**tiles, "WORLD": 8, "BLOCK_N": 256, "N_SPLITS": 4, "COL_TILES": 2, "COPY_ROWS": 32, "COPY_COLS": 512,
                                 "MODE": fm.FULL, "FLATTEN": False, **no_prereduce}, num_stages=4)
    # layer1 with its items cut along K into up to 4 pieces (FusedConfig.split_k), as Mixtral's default runs it
    report["layer1_split_k4"] = _compile(
        fm.layer1_kernel, wide, {**tiles, "WORLD": 8, "BLOCK_N": 256, "N_SPLITS": 4, "COL_TILES": 2, "COPY_ROWS": 32, "COPY_COLS": 512,
                                 "MODE": fm.FULL, "FLATTEN": False, **no_prereduce, "SPLIT_K": 4})
    # layer1 sending a token's rows home as one weighted sum (FusedConfig.prereduce), at the slot widths the
    # launches give: top-8 of 8 x 2 slots (TP = 2), Qwen2-MoE at TP = 2 (8 slots), Mixtral at EP = 2 (2 slots)
    for name, top_k, reduce_rows in (("layer1_prereduce", 16, 32), ("layer1_prereduce_k8", 8, 64),
                                     ("layer1_prereduce_k2", 2, 64)):
        report[name] = _compile(
            fm.layer1_kernel, wide, {**tiles, "WORLD": 8, "BLOCK_N": 256, "N_SPLITS": 4, "COL_TILES": 2, "COPY_ROWS": 8,
                                     "COPY_COLS": 2048, "MODE": fm.FULL, "FLATTEN": False, "PREREDUCE": True,
                                     "TOP_K": top_k, "K_P2": top_k, "REDUCE_ROWS": reduce_rows, "REDUCE_COLS": 128},
            num_stages=4)
    plan_ptrs = {"counts_ptr": "*i32", "rotation_ptr": "*i64", "tiles_ptr": "*i32", "num_tiles_ptr": "*i32",
                 "order1_ptr": "*i32", "remote_ptr": "*i32", "local_tiles_ptr": "*i32", "segments_ptr": "*i64",
                 "pieces_ptr": "*i32"}
    for name, merged in (("plan", False), ("plan_merged", True)):
        q_p2 = 2 if merged else 8
        report[name] = _compile(fused_plan.plan_kernel, plan_ptrs,
                                {"WORLD": 8, "W_P2": 8, "E_P2": 32, "ET_P2": 256, "Q_P2": q_p2, "BLOCK_M": BM,
                                 "BLOCK_U": fused_plan.plan_block_u(q_p2 * 32), "EXPERT_ORDER": True, "MERGED": merged},
                                num_warps=8)
    pack_ptrs = {"ids_ptr": "*i64", "chunk_counts_ptr": "*i32", "counts_ptr": "*i32", "pos_ptr": "*i64",
                 "token_of_row_ptr": "*i32"}
    pack = {"EXPERTS": 256, "E_P2": 512, "CHUNK": fused_pack.MAX_CHUNK}  # 8 ranks x 32 experts
    report["pack_count"] = _compile(fused_pack.count_kernel, pack_ptrs, pack, num_warps=4)
    report["pack_order"] = _compile(fused_pack.order_kernel, pack_ptrs,
                                    {**pack, "TOP_K": 8, "CHUNK_ROWS": fused_pack.CHUNK_ROWS}, num_warps=8)
    report["place_own"] = _compile(fm.place_own_kernel, ptrs, {"WORLD": 8, "ROWS": 16, "COPY_COLS": 1024}, num_warps=4)
    report["barrier"] = _compile(fm.barrier_kernel, ptrs, {"WORLD": 2}, num_warps=1)
    report["combine"] = _compile(fm.combine_kernel, ptrs, {"TOP_K": 4, "BLOCK_T": 16, "BLOCK_H": 256, "PREREDUCED": False,
                                                          "WORLD": 1}, num_warps=4)
    report["combine_prereduced"] = _compile(fm.combine_kernel, ptrs, {"TOP_K": 4, "BLOCK_T": 16, "BLOCK_H": 256,
                                                                      "PREREDUCED": True, "WORLD": 8}, num_warps=4)
    json.dump(report, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
