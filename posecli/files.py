"""Reading input files safely, and where posecli keeps its cache.

A JSON file is parsed only under a size limit (POSECLI_MAX_ANN_BYTES) and a parsed YAML/JSON document only up to a
number of values (stops YAML alias "bombs"); errors name the file and the position. ``is_finite_number`` and
``is_whole_number`` are the one check of a value read from such a file. Writing goes through ``posecli.atomic``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from posecli.errors import PoseCliError

DEFAULT_MAX_ANN_BYTES = 2 * 1024**3
MAX_DOCUMENT_NODES = 1_000_000  # values in a YAML/JSON settings-like document (stops YAML alias "bombs")
CACHE_ENV = "POSECLI_CACHE"  # posecli's cache root: checkpoints/ (downloads) and synthetic/ (generated data sets)


def cache_root() -> Path:
    """posecli's cache folder: $POSECLI_CACHE, else ~/.cache/posecli."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "posecli"


def is_finite_number(v: Any) -> bool:
    """An int or float (not a bool) that is finite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_whole_number(v: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def max_annotation_bytes() -> int:
    """The largest annotation file posecli will parse (env POSECLI_MAX_ANN_BYTES, default 2 GiB)."""
    raw = os.environ.get("POSECLI_MAX_ANN_BYTES")
    if raw is None:
        return DEFAULT_MAX_ANN_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise PoseCliError(f"POSECLI_MAX_ANN_BYTES must be a whole number of bytes, got '{raw}'") from None
    if value <= 0:
        raise PoseCliError(f"POSECLI_MAX_ANN_BYTES must be positive, got {value}")
    return value


def with_article(noun: str) -> str:
    """``noun`` after "a" or "an": "an annotation file", "a results file"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def plural(count: int, noun: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def load_json_file(path: str | Path, what: str = "annotation file") -> Any:
    """Parse a JSON file after checking its size against the limit; errors name the file and the position."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PoseCliError(f"cannot read {what} ({exc.strerror or exc})", path) from None
    if path.is_dir():
        raise PoseCliError(f"expected {with_article(what)}, found a folder", path)
    limit = max_annotation_bytes()
    if size > limit:
        raise PoseCliError(
            f"{what} is {size:,} bytes, over the {limit:,}-byte limit (raise POSECLI_MAX_ANN_BYTES to allow it)",
            path,
        )
    try:
        with path.open("rb") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise PoseCliError(json_error_text(exc, what), path) from None
    except UnicodeDecodeError:
        raise PoseCliError(f"{what} is not UTF-8 text", path) from None
    except OSError as exc:
        raise PoseCliError(f"cannot read {what} ({exc.strerror or exc})", path) from None


def json_error_text(exc: json.JSONDecodeError, what: str) -> str:
    """The problem of an unparsable JSON file in words, saying so when the file simply stops early."""
    if not exc.doc[exc.pos :].strip() or exc.msg.startswith("Unterminated string"):
        if not exc.doc.strip():
            return f"{what} is not valid JSON: the file is empty"
        return f"{what} is not valid JSON: it stops before the JSON is complete, at line {exc.lineno} (truncated?)"
    return f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"


def read_image_wh(path: Path) -> tuple[int, int]:
    """Image (width, height) as OpenCV loads it (EXIF orientation applied), reading only the header."""
    from PIL import Image  # Pillow comes with matplotlib; only the header is read

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PoseCliError(f"cannot read the image ({exc})", path) from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def check_document_size(data: Any, source: str | Path, limit: int = MAX_DOCUMENT_NODES) -> None:
    """Refuse a parsed YAML/JSON document with more than ``limit`` values (counting shared aliases each time).

    YAML anchors let a few hundred bytes expand into billions of values when walked; we stop counting early.
    """
    count = 0
    stack = [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            raise PoseCliError(f"document holds more than {limit:,} values (YAML alias bomb or corrupt file?)", source)
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
