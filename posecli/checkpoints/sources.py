"""Checkpoint sources: a path, file://, http(s):// (downloaded into the cache, sha256 prefix of model-zoo names
checked) or builtin:// (shipped inside posecli) -> a local file. Downloads report progress through a callback."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from http.client import HTTPException
from importlib import resources
from pathlib import Path
from typing import Any

from posecli import __version__
from posecli.errors import PoseCliError
from posecli.files import cache_root

TIMEOUT_ENV = "POSECLI_DOWNLOAD_TIMEOUT"  # seconds without data before a download gives up
MAX_BYTES_ENV = "POSECLI_MAX_DOWNLOAD_BYTES"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_BYTES = 2 * 1024**3
CHUNK_BYTES = 1 << 20

# MMPose model-zoo names carry the first 8 hex digits of the file's sha256: name-741844ba_20200812.pth
HASH_NAME_RE = re.compile(r"^.+-(?P<sha>[0-9a-f]{8})(?:_\d+)?\.pth$")
URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]+)://")

# progress(description, total bytes or None) -> a context manager yielding advance(number of bytes)
DownloadProgress = Callable[[str, int | None], AbstractContextManager[Callable[[int], None]]]


def default_cache_dir() -> Path:
    """Download folder: $POSECLI_CACHE/checkpoints, else ~/.cache/posecli/checkpoints."""
    return cache_root() / "checkpoints"


def _env_number(name: str, default: float, kind: type) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise PoseCliError(f"environment variable {name}={raw!r} is not {what}") from None
    if value <= 0:
        raise PoseCliError(f"environment variable {name}={raw!r} must be positive")
    return value


def download_timeout() -> float:
    """Seconds a download may wait for data ($POSECLI_DOWNLOAD_TIMEOUT, default 60)."""
    return float(_env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, float))


def max_download_bytes() -> int:
    """Largest download accepted ($POSECLI_MAX_DOWNLOAD_BYTES, default 2 GiB)."""
    return int(_env_number(MAX_BYTES_ENV, DEFAULT_MAX_BYTES, int))


def expected_sha_prefix(filename: str) -> str | None:
    """The sha256 prefix a model-zoo style name carries (``name-<8 hex>[_<date>].pth``), else None."""
    m = HASH_NAME_RE.match(filename)
    return m.group("sha") if m else None


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def human_bytes(n: float) -> str:
    """A byte count for people: 512 B, 1.5 MB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def resolve_source(
    src: str | Path,
    cache_dir: str | Path | None = None,
    *,
    timeout: float | None = None,
    max_bytes: int | None = None,
    progress: DownloadProgress | None = None,
) -> Path:
    """A checkpoint source (path, file://, http(s):// or builtin:// URL) -> a local file, downloading if needed."""
    text = str(src)
    m = URL_RE.match(text)
    if m is None:
        path = Path(text).expanduser()
        if not path.exists():
            raise PoseCliError("checkpoint not found", path)
        if not path.is_file():
            raise PoseCliError("checkpoint is not a file", path)
        return path
    scheme = m.group("scheme").lower()
    if scheme == "file":
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise PoseCliError(f"file:// URLs must name a local file (got host '{parsed.netloc}')", text)
        return resolve_source(urllib.request.url2pathname(parsed.path))
    if scheme == "builtin":
        return _builtin_checkpoint(text[len("builtin://") :])
    if scheme in ("http", "https"):
        return download_checkpoint(text, cache_dir, timeout=timeout, max_bytes=max_bytes, progress=progress)
    raise PoseCliError(f"unsupported checkpoint source '{scheme}://' (use a path, file://, http(s):// or builtin://)")


def _builtin_checkpoint(name: str) -> Path:
    assets = resources.files("posecli") / "assets"
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise PoseCliError(f"bad built-in checkpoint name '{name}'", f"builtin://{name}")
    path = Path(str(assets / name))
    if not path.is_file():
        shipped = sorted(p.name for p in Path(str(assets)).glob("*.pth")) if Path(str(assets)).is_dir() else []
        raise PoseCliError(
            f"no built-in checkpoint '{name}' (shipped: {', '.join(shipped) or 'none'})", f"builtin://{name}"
        )
    return path


def cached_path(url: str, cache_dir: str | Path | None = None) -> Path:
    """Where a URL's download lives in the cache (its file name, so a file copied there is used offline)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name or name in (".", ".."):
        raise PoseCliError("the URL has no file name to cache the download under", url)
    return Path(cache_dir).expanduser() / name if cache_dir is not None else default_cache_dir() / name


def download_checkpoint(
    url: str,
    cache_dir: str | Path | None = None,
    *,
    timeout: float | None = None,
    max_bytes: int | None = None,
    progress: DownloadProgress | None = None,
) -> Path:
    """Download ``url`` into the cache (temp file renamed on success, sha256-prefix checked); reuse it if there."""
    dest = cached_path(url, cache_dir)
    if dest.is_file():
        return dest  # cached: no network
    timeout = download_timeout() if timeout is None else timeout
    max_bytes = max_download_bytes() if max_bytes is None else max_bytes
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise PoseCliError(f"cannot write to the checkpoint cache ({exc.strerror or exc})", dest.parent) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                sha = _stream_to(url, out, timeout=timeout, max_bytes=max_bytes, progress=progress)
            except PoseCliError as exc:
                network = exc.message.startswith(("download failed", "download timed out"))
                if not network or exc.message.startswith("download failed: HTTP"):  # the server answered
                    raise
                offline = f"; offline? copy the file to {dest} or pass its local path instead of the URL"
                raise PoseCliError(exc.message + offline, url) from None
            out.flush()
            os.fsync(out.fileno())  # the renamed file must hold every byte even after a crash
        expected = expected_sha_prefix(dest.name)
        if expected is not None and not sha.startswith(expected):
            raise PoseCliError(
                f"sha256 mismatch: the file name says {expected}, the download's sha256 starts {sha[:8]} "
                "(download deleted)",
                url,
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


@contextlib.contextmanager
def _network_errors(url: str, timeout: float) -> Iterator[None]:
    """Turn urllib/socket failures into one clear PoseCliError line."""
    try:
        yield
    except urllib.error.HTTPError as exc:
        raise PoseCliError(f"download failed: HTTP {exc.code} {exc.reason}", url) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise PoseCliError(
                f"download timed out after {timeout:g} s (set {TIMEOUT_ENV} to wait longer)", url
            ) from None
        if isinstance(reason, ConnectionRefusedError):
            raise PoseCliError("download failed: connection refused", url) from None
        if isinstance(reason, socket.gaierror):
            raise PoseCliError("download failed: cannot resolve the host name (no network?)", url) from None
        raise PoseCliError(f"download failed: {reason}", url) from None
    except TimeoutError:
        raise PoseCliError(f"download timed out after {timeout:g} s (set {TIMEOUT_ENV} to wait longer)", url) from None
    except ConnectionRefusedError:
        raise PoseCliError("download failed: connection refused", url) from None
    except (OSError, HTTPException) as exc:
        raise PoseCliError(f"download failed: {exc.__class__.__name__}: {exc}", url) from None


def _stream_to(url: str, out: Any, *, timeout: float, max_bytes: int, progress: DownloadProgress | None) -> str:
    """Copy the body of ``url`` into ``out``, reporting to ``progress``; return the hex sha256."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": f"posecli/{__version__}"})
    with _network_errors(url, timeout), urllib.request.urlopen(request, timeout=timeout) as response:
        length_header = response.headers.get("Content-Length")
        total = int(length_header) if length_header and length_header.isdigit() else None
        limit_hint = f"set {MAX_BYTES_ENV} to raise the limit"
        if total is not None and total > max_bytes:
            raise PoseCliError(
                f"download is {human_bytes(total)}, over the {human_bytes(max_bytes)} limit ({limit_hint})", url
            )
        name = Path(urllib.parse.urlparse(url).path).name
        received = 0
        bar = progress(f"downloading {name}", total) if progress is not None else contextlib.nullcontext(_no_progress)
        with bar as advance:
            while chunk := response.read(CHUNK_BYTES):
                received += len(chunk)
                if received > max_bytes:
                    raise PoseCliError(f"download exceeds the {human_bytes(max_bytes)} limit ({limit_hint})", url)
                digest.update(chunk)
                out.write(chunk)
                advance(len(chunk))
    if total is not None and received != total:
        raise PoseCliError(f"download incomplete: got {received} of {total} bytes", url)
    return digest.hexdigest()


def _no_progress(n: int) -> None:
    """Progress callback of a silent download."""
