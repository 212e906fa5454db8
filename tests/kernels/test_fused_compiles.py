"""The fused kernels compile for Hopper here, without a GPU, and keep what their speed needs.

The interpreter runs Python, not the compiler: a global that is not constexpr, a type the
backend rejects or an access that stops being vectorised shows only on the GPU. Triton can
compile for sm_90 anywhere (its wheel carries ptxas), so tests/kernels/hopper_sass.py does,
in a process without TRITON_INTERPRET, and reports registers, spills and SASS instruction counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the kernels need triton (pip install -e '.[kernels]')")

SM90_SHARED_BYTES = 227 * 1024  # the most one block may take on an H100/H200


@pytest.fixture(scope="module")
def report() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("hopper_sass.py"))], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_every_kernel_compiles_without_spills(report):
    assert {"barrier", "combine", "plan", "layer1_mode0", "layer0_mode0_seg1", "pack_count", "pack_order"} <= set(report)
    for name, k in report.items():
        assert k["spill_bytes"] == 0, f"{name} spills {k['spill_bytes']} bytes"


def test_every_kernel_fits_in_one_sms_shared_memory(report):
    assert report["layer1_n256_stages4"]["shared_bytes"] > report["layer1_n256"]["shared_bytes"]  # the fourth stage
    for name, k in report.items():
        assert k["shared_bytes"] <= SM90_SHARED_BYTES, f"{name} needs {k['shared_bytes']} bytes of shared memory"


def test_gemms_use_wgmma_and_tma(report):
    for name in ("layer0_mode0_seg0", "layer0_mode1_seg0", "layer0_expert", "layer1_mode0", "layer1_mode1",
                 "layer0_pairs_tma", "layer1_n256_stages4", "layer0_dynamic", "layer1_dynamic", "layer1_split_k4"):
        assert report[name]["HGMMA"] > 0 and report[name]["UTMALDG"] > 0, name
    assert report["layer0_pairs_tma"]["UTMASTG"] > 0 and report["layer0_mode0_seg0"]["UTMASTG"] == 0


def test_deduplicated_pulls_load_a_row_from_the_link_or_from_here(report):
    # two 16-byte load paths per step (over the link, or the copy of an earlier tile's row), one store
    assert report["layer0_dedup"]["LDG.E.128"] > report["layer0_pairs_tma"]["LDG.E.128"]
    assert {"dedup_resolve0", "dedup_resolve1"} <= set(report)


def test_row_copies_move_16_bytes_per_access(report):
    for name in ("layer0_mode0_seg0", "layer0_mode2_seg0", "layer0_expert", "layer0_pull_parts4", "layer1_mode0", "layer1_mode2", "combine",
                 "layer0_dynamic", "layer1_dynamic",
                 "place_own", "layer0_dedup", "layer1_prereduce", "layer1_prereduce_k8", "layer1_prereduce_k2",
                 "combine_prereduced"):
        k = report[name]
        assert k["LDG.E.128"] > 0 and k["STG.E.128"] > 0, name
        assert k["LDG.E.U16"] == 0 and k["STG.E.U16"] == 0, f"{name} has 2-byte accesses"
