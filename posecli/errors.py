"""The one exception type that ends a command with a clean one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path


class PoseCliError(Exception):
    """A user-facing error: bad input, unsafe file, impossible settings. The CLI prints it and exits 2."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
