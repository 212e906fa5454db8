"""Plain-text tables for the commands' output."""

from __future__ import annotations


def align_columns(rows: list[list[str]], first_left: bool = True) -> list[str]:
    """Each row as one line, columns padded to their widest cell; numbers right-aligned,
    the first column left-aligned when it holds names."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 and first_left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in rows]
