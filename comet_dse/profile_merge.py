"""Several machines' calibrated profiles as one: every measured figure the median over the profiles that
measured it on the same axes.

A profile is one machine at one minute. B0's host-bound figures moved by 2x between the machines of one
fleet (results/validation/profile_spread_run70_96.json), so the baselines' predictions swing with the
machine that was calibrated; the medians of several calibrations stand for the fleet.

The first profile is the base: its structure, its integers and strings (SM counts, token and row axes, tile
shapes) are kept, and every float of it becomes the median of that float over the profiles whose same table
has the same axes (equal integers and strings, float lists of the same length). A table entry in a list
(a GEMM shape at an SM count, a world size's all-to-all curve) is matched by those axes, wherever it sits in
the other profile's list. What only the base measured stays the base's.
"""

from __future__ import annotations

import statistics
from collections import Counter

from comet_dse.errors import UserError

SAME = ("format", "base", "gpus")  # top-level keys every merged profile must share


def _is_float(x: object) -> bool:
    return type(x) is float


def _is_entries(x: object) -> bool:
    """A list of table entries (dicts), matched by their axes rather than by position."""
    return isinstance(x, list) and bool(x) and all(isinstance(e, dict) for e in x)


def _nested(x: object) -> bool:
    return isinstance(x, dict) or _is_entries(x)


def _is_values(x: object) -> bool:
    """Measured values: a float or a list of floats (the rest of a table is its axes)."""
    return _is_float(x) or isinstance(x, list) and bool(x) and all(_is_float(e) for e in x)


def _same_axes(a: object, b: object) -> bool:
    """Whether b measured what a measured: values of the same shape where both have them, equal axes
    (integers, strings, integer lists) everywhere. A dict's nested tables are compared where they are merged,
    and a value b lacks is only not merged from b."""
    if _is_float(a):
        return _is_float(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and all(_same_key(k, v, b) for k, v in a.items())
    if _is_entries(a):  # matched entry by entry where merged
        return _is_entries(b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same_axes(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _same_key(key: str, value: object, other: dict) -> bool:
    if _nested(value):  # a nested table: compared where it is merged
        return True
    if key not in other:
        return _is_values(value)  # a value the other did not measure; an axis it lacks is another table
    return _same_axes(value, other[key])


class _Merge:
    def __init__(self, count: int) -> None:
        self.count = count
        self.partial: Counter[str] = Counter()  # table path -> how many profiles it was merged from, where not all

    def node(self, nodes: list, at: str) -> object:
        """nodes[0] is the base's value at `at`, the rest the other profiles' values that measured the same."""
        base = nodes[0]
        if len(nodes) < self.count and (isinstance(base, dict) or at.count(".") == 1 and _is_float(base)):
            self.partial[at] = len(nodes)  # a table, an entry or a top-level figure (not each float of a table)
        if isinstance(base, dict):
            merged = {}
            # every profile's keys, the base's first: a figure or column only later profiles measured (the queued
            # timings since run 103) is the median of those, not dropped because the base lacks it
            keys = list(dict.fromkeys(k for n in nodes for k in n))
            for key in keys:
                have = [n[key] for n in nodes if key in n]
                same = [v for v in have if _same_axes(have[0], v)]
                merged[key] = self.node(same, f"{at}.{key}")
            return merged
        if _is_entries(base):
            return [self.node(self._matches(nodes, entry), f"{at}[{i}]") for i, entry in enumerate(base)]
        if _is_float(base):
            return round(statistics.median(nodes), 4)
        if isinstance(base, list) and base and all(_is_float(x) for x in base):
            return [round(statistics.median(column), 4) for column in zip(*nodes)]
        return base

    @staticmethod
    def _matches(nodes: list, entry: dict) -> list:
        """The base's entry, then each other profile's first entry with the same axes."""
        found = [entry]
        for other in nodes[1:]:
            match = next((e for e in other if isinstance(e, dict) and _same_axes(entry, e) and _same_axes(e, entry)), None)
            if match is not None:
                found.append(match)
        return found


def merge_profiles(profiles: list[dict], names: list[str]) -> tuple[dict, dict]:
    """(the merged profile's format, base, gpus, figures and tables: a profile without name, provenance and
    sources; what was merged from fewer than all profiles: path -> how many). `profiles[0]` is the base."""
    if len(profiles) < 2:
        raise UserError("profiles", f"give at least two calibrated profiles to merge, got {len(profiles)}")
    for name, p in zip(names, profiles):
        if "format" not in p or "tables" not in p:
            raise UserError("profiles", f"{name} is not a calibrated profile (written by comet-dse calibrate)")
    for key in SAME:
        values = {repr(p.get(key)) for p in profiles}
        if len(values) > 1:
            raise UserError("profiles", f"every profile must have the same {key!r}, got {', '.join(sorted(values))}")
    gpus = {p.get("provenance", {}).get("gpu") for p in profiles}
    if len(gpus) > 1:
        raise UserError("profiles", f"every profile must be of one GPU model, got {', '.join(sorted(map(str, gpus)))}")
    merge = _Merge(len(profiles))
    figures = merge.node([p["figures"] for p in profiles], "figures")
    tables = merge.node([p["tables"] for p in profiles], "tables")
    merged = {key: profiles[0][key] for key in SAME}
    merged.update(figures=figures, tables=tables)
    return merged, dict(merge.partial)
