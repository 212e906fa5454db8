"""Reading user JSON files with one-line errors, and writing outputs atomically."""

from __future__ import annotations

import json
import os
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


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write beside the target, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
