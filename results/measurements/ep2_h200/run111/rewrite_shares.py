"""Run 111's profile with layer_copy_contention as shares of the GEMM's span (share_lost_to_gemm), recomputed from
the spans its calibrate note records (calibrate on the GPU wrote slowdowns, a form dropped after: ill-conditioned
where the copies lose nearly all of the GEMM's span, 72.2 at 1 block)."""
import json, re, sys
from comet_dse.kernels.calibration import share_lost_to_gemm, _sig
src, dst = sys.argv[1], sys.argv[2]
p = json.load(open(src))
note = next(n for n in p["provenance"]["notes"] if n.startswith("layer_copy_contention"))
spans = {int(n): [float(v) for v in vals.split()] for n, vals in re.findall(r"(\d+): ([\d ]+?)(?:;|$)", note.split("per block count: ")[1])}
blocks = p["tables"]["layer_copy_contention"]["copy_blocks"]
p["tables"]["layer_copy_contention"] = {"copy_blocks": blocks, **{way: [_sig(share_lost_to_gemm(*spans[n][3 * i:3 * i + 3])) for n in blocks]
                                                                 for i, way in enumerate(("pull", "push"))}}
p["provenance"]["notes"].append("layer_copy_contention rewritten on the CPU as shares of the GEMM's span from the spans above "
                                "(results/measurements/ep2_h200/run111/README.md); calibrate wrote slowdowns: " + json.dumps(blocks))
json.dump(p, open(dst, "w"), indent=1)
print(p["tables"]["layer_copy_contention"])
