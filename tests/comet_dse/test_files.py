"""Output files: checked before work, written whole, and written together or not at all."""

from __future__ import annotations

import json

import pytest

from comet_dse.errors import UserError
from comet_dse.files import check_writable, json_text, write_texts_atomic


def test_check_writable_creates_nothing(tmp_path):
    (tmp_path / "plain").write_text("x")
    assert check_writable(tmp_path / "a.json", "--out") == tmp_path / "a.json"
    assert check_writable(tmp_path / "new" / "deeper" / "a.json", "--out", make_folders=True)
    for path, message in ((tmp_path, "is a directory"), (tmp_path / "plain" / "a.json", "is not a directory"),
                          (tmp_path / "new" / "a.json", "does not exist")):
        with pytest.raises(UserError, match=message):
            check_writable(path, "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_a_pair_lands_together_or_not_at_all(tmp_path):
    plan, report = tmp_path / "plans" / "p.json", tmp_path / "reports" / "p.html"
    report.mkdir(parents=True)  # the second rename fails: a folder sits where the report goes
    with pytest.raises(OSError):
        write_texts_atomic({plan: "{}", report: "<html>"})
    assert not plan.exists()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []  # no temps left either
    report.rmdir()
    assert write_texts_atomic({plan: "{}", report: "<html>"}) == [plan, report]
    assert plan.read_text() == "{}" and report.read_text() == "<html>"


def test_json_text_keeps_every_value_and_puts_flat_members_on_one_line():
    value = {"runs": [{"tokens": 1024, "timings_us": [float(i) for i in range(40)],
                       "config": {"comm_blocks0": 8, "tile_order": "layout"}, "error": None}],
             "empty": {}, "note": "a </script> and \u00b5s", "nan": float("nan")}
    text = json_text(value, width=60)
    back = json.loads(text)
    assert back["runs"] == value["runs"] and back["note"] == value["note"] and back["empty"] == {}
    lines = text.splitlines()
    # 40 timings hold no list or object: one line, however long
    assert any(line.strip().startswith('"timings_us": [0.0, 1.0,') and line.endswith("39.0],") for line in lines)
    # a short object on one line; the run, too long for 60 columns, one member per line at depth 3
    assert '      "config": {"comm_blocks0": 8, "tile_order": "layout"},' in lines
    assert lines[0] == "{" and lines[-1] == "}" and text.endswith("}\n")
    assert json_text([1, [2]], width=3) == "[\n  1,\n  [2]\n]\n"
