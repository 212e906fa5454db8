"""Does Triton warp-specialize a persistent TMA matmul for Hopper? Compiled here for sm_90 (no GPU needed).

    python benchmarks/hopper_warp_spec.py --out results/measurements/hopper_warp_spec.json

The fused layer's GEMMs stay ~1.1-1.2x torch._grouped_mm at few rows per expert (the library's CUTLASS kernels
give the TMA loads a warp group of their own). Triton's `tl.range(..., warp_specialize=True)` asks for the same.
This compiles the persistent-matmul shape of the fused kernels' tile loop (128 x 256 tiles, 64-deep K steps,
TMA descriptors, three stages) and a one-tile-per-program kernel with and without it, at 4 and 8 warps, and
records whether the compiled kernel changed (PTX size, setmaxnreg: the register hand-off between warp groups
that Hopper warp specialization emits) or the compiler failed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


@triton.jit
def persistent_tiles(a_desc, b_desc, c_desc, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                     PROGRAMS: tl.constexpr, WS: tl.constexpr):
    n_cols = tl.cdiv(N, BN)
    for t in tl.range(tl.program_id(0), tl.cdiv(M, BM) * n_cols, PROGRAMS, warp_specialize=WS):
        row, col = (t // n_cols) * BM, (t % n_cols) * BN
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, K, BK):
            acc = tl.dot(a_desc.load([row, k]), b_desc.load([k, col]), acc)
        c_desc.store([row, col], acc.to(tl.bfloat16))


@triton.jit
def one_tile(a_desc, b_desc, c_desc, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
             PROGRAMS: tl.constexpr, WS: tl.constexpr):
    row, col = tl.program_id(0) * BM, tl.program_id(1) * BN
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in tl.range(0, K, BK, warp_specialize=WS):
        acc = tl.dot(a_desc.load([row, k]), b_desc.load([k, col]), acc)
    c_desc.store([row, col], acc.to(tl.bfloat16))


def compiled(kernel, warps: int, ws: bool) -> dict:
    sig = {"a_desc": "tensordesc<bf16[128, 64]>", "b_desc": "tensordesc<bf16[64, 256]>",
           "c_desc": "tensordesc<bf16[128, 256]>", "M": "i32", "N": "i32", "K": "i32",
           **{k: "constexpr" for k in ("BM", "BN", "BK", "PROGRAMS", "WS")}}
    constexprs = {"BM": 128, "BN": 256, "BK": 64, "PROGRAMS": 132, "WS": ws}
    try:
        c = triton.compile(ASTSource(kernel, sig, constexprs=constexprs), target=GPUTarget("cuda", 90, 128),
                           options={"num_warps": warps, "num_stages": 3})
    except Exception as e:  # the compiler's own failure is the finding
        return {"compiled": False, "error": str(e).splitlines()[-1][:200]}
    ptx = c.asm["ptx"]
    return {"compiled": True, "ptx_chars": len(ptx), "setmaxnreg": ptx.count("setmaxnreg"), "num_warps": c.metadata.num_warps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rows = []
    for kernel in (persistent_tiles, one_tile):
        for warps in (4, 8):
            plain, ws = compiled(kernel, warps, False), compiled(kernel, warps, True)
            changed = ws.get("compiled", False) and (ws["ptx_chars"], ws["setmaxnreg"]) != (plain["ptx_chars"], plain["setmaxnreg"])
            rows.append({"kernel": kernel.__name__, "num_warps": warps, "plain": plain, "warp_specialize": ws,
                         "specialized": bool(changed)})
            print(f"{kernel.__name__:17s} {warps} warps: warp_specialize "
                  + ("failed to compile" if not ws["compiled"] else "changed the kernel" if changed else "left it unchanged"))
    out = {"triton": triton.__version__, "target": "cuda sm_90", "command": "python benchmarks/hopper_warp_spec.py --out " + a.out,
           "results": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
