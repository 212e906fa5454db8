"""Write a generated results file, or check that the committed one is what its inputs give (the
scripts that build files under results/ from committed JSON share this)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def write_or_check(doc: str, path: Path, render_text, script: str) -> int:
    """The command line of such a script: no argument writes `path`; --check exits 1 if it differs."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {path.name} is not what the inputs give")
    args = parser.parse_args()
    text = render_text()
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is out of date: run python benchmarks/{script}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0
