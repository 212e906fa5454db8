"""Plain-text tables for the commands' output."""

from __future__ import annotations


def align_columns(rows: list[list[str]], first_left: bool = True, text_columns: tuple[int, ...] = ()) -> list[str]:
    """Each row as one line, columns padded to their widest cell; numbers right-aligned,
    the first column left-aligned when it holds names, and so are `text_columns`."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = set(text_columns) | ({0} if first_left else set())
    return ["  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]
