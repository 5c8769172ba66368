"""The one exception type that ends a command with a clean one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path

# torch's DataLoader re-raises an exception from a worker process as ``type(exc)(text)`` where the text is
# "Caught <Type> in DataLoader worker process N.\nOriginal Traceback ...\n<module.Type>: <message>".
_WORKER_PREFIX = "Caught PoseCliError in DataLoader worker"
_ORIGINAL_LINE_PREFIX = "posecli.errors.PoseCliError: "


def _unwrap_worker_text(message: str) -> str:
    """The original one-line message of a PoseCliError that a DataLoader worker raised (else ``message``)."""
    if not message.startswith(_WORKER_PREFIX):
        return message
    for line in reversed(message.rstrip().splitlines()):
        if line.startswith(_ORIGINAL_LINE_PREFIX):
            return line[len(_ORIGINAL_LINE_PREFIX) :]
    return message


class PoseCliError(Exception):
    """A user-facing error: bad input, unsafe file, impossible settings. The CLI prints it and exits 2."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        if path is None:
            # a worker's error (e.g. an unreadable image) keeps its one line instead of the worker's traceback
            message = _unwrap_worker_text(str(message))
        self.path = str(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
