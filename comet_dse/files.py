"""Reading user JSON files with one-line errors, checking output paths before any work, and
writing outputs atomically (alone, or as a set that lands together or not at all)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from comet_dse.errors import UserError


def read_json_object(path: str | Path, field: str) -> dict:
    """The JSON object in `path`; anything else is a UserError naming `field`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(field, f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(field, f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(field, f"{path} must hold a JSON object")
    return data


def check_writable(path: str | Path, field: str, make_folders: bool = False) -> Path:
    """Refuse, before any work, an output path that could not be written; create nothing.

    Refused: an existing directory, a path under something that is not a directory, a
    folder where no file can be created, and a missing folder unless `make_folders` (default
    output folders such as results/plans are made on write; a typo in a path the user gave
    should not become a new folder).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(field, f"{path} is a directory; give a file path")
    if path.exists() and not path.is_file():
        raise UserError(field, f"{path} exists and is not a regular file")
    folder = path.absolute().parent
    if not make_folders and not folder.exists():
        raise UserError(field, f"the folder of {path} does not exist")
    while not folder.exists():
        if folder.is_symlink():  # a dangling link: mkdir would fail on it later
            raise UserError(field, f"{folder} is a broken link")
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(field, f"cannot write {path}: {folder} is not a directory")
    # access() says yes to root even in /proc or on a read-only mount: try for real, with an
    # unnamed temp file (O_TMPFILE) that never shows up in the folder
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(field, f"cannot write {path}: cannot create files in {folder} ({exc.strerror})") from None
    return path


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_texts_atomic(files: dict[Path, str]) -> list[Path]:
    """Write every file or none: all go to temps beside their targets first, then are renamed.

    On any failure the temps are removed, and targets already renamed in this call too, so
    files that belong together (a plan and its report) never land one without the other.
    """
    targets = [Path(p) for p in files]
    temps: list[Path] = []
    renamed: list[Path] = []
    try:
        for path, text in zip(targets, files.values()):
            path.parent.mkdir(parents=True, exist_ok=True)
            temps.append(_temp_beside(path))
            temps[-1].write_text(text)
        for path, tmp in zip(targets, temps):
            tmp.replace(path)
            renamed.append(path)
    except BaseException:
        for leftover in (*temps, *renamed):
            leftover.unlink(missing_ok=True)
        raise
    return targets


def json_text(value: object, width: int = 120) -> str:
    """`value` as JSON that stays readable at a fraction of `indent=2`'s size: a list or object
    holding no list or object, or one whose one-line form fits in `width`, is written on one line
    (a run's 20 timings, a point's config); the rest one member per line, indented by 2."""

    def render(item: object, level: int) -> str:
        if not isinstance(item, (dict, list)) or not item:
            return json.dumps(item)
        members = item.values() if isinstance(item, dict) else item
        one_line = json.dumps(item, separators=(", ", ": "))
        if 2 * level + len(one_line) <= width or not any(isinstance(m, (dict, list)) and m for m in members):
            return one_line
        pad = "  " * (level + 1)
        if isinstance(item, dict):
            lines = [f"{pad}{json.dumps(key)}: {render(member, level + 1)}" for key, member in item.items()]
            return "{\n" + ",\n".join(lines) + "\n" + "  " * level + "}"
        return "[\n" + ",\n".join(pad + render(member, level + 1) for member in item) + "\n" + "  " * level + "]"

    return render(value, 0) + "\n"


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write beside the target, then rename: a crash never leaves half a file (nor a temp)."""
    return write_texts_atomic({Path(path): text})[0]
