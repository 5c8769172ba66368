"""Crash-safe file writing: write to a temporary file in the target directory, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from posecli.errors import PoseCliError


def _umask_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_file_mode()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise PoseCliError(f"cannot write here ({exc.strerror or exc})", parent) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files; give them the usual umask-based mode
        os.replace(tmp, path)
    except OSError as exc:  # disk full, target is a folder, ...: the old file stays as it was
        tmp.unlink(missing_ok=True)
        raise PoseCliError(
            f"cannot write ({exc.strerror or exc}); the previous file, if any, is unchanged", path
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_write_with(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(fh)`` on a binary temp file and rename it to ``path`` (e.g. for torch.save)."""
    with atomic_open(path, "wb") as fh:
        writer(fh)


def check_writable_dir(path: str | Path, flag: str = "the output folder") -> Path:
    """Refuse early an output folder that is a file or cannot be written, without creating anything.

    The folder itself, or its nearest existing parent when it does not exist yet, must be a writable folder:
    a probe file is created there and deleted at once.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PoseCliError(f"{flag} is a file, not a folder", path)
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        raise PoseCliError(f"{flag} cannot be created: {probe_dir} is a file", path)
    try:
        fd, name = tempfile.mkstemp(prefix=".posecli-write-test.", dir=probe_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise PoseCliError(f"{flag} is not writable ({exc.strerror or exc})", path) from None
    return path
