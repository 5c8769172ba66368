"""Checkpoints: sources (path, file://, http(s)://, builtin://), download cache with hash check, format
detection and key mapping, the load plan with head transplant, and saving posecli's own checkpoints."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from torch import nn

from posecli import __version__
from posecli.atomic import atomic_write_with
from posecli.datasets.meta import DatasetMeta, check_document_size, load_builtin
from posecli.errors import PoseCliError

# ------------------------------------------------------------------------------------------------ constants
CACHE_ENV = "POSECLI_CACHE"  # posecli's cache root; downloads go to $POSECLI_CACHE/checkpoints
TIMEOUT_ENV = "POSECLI_DOWNLOAD_TIMEOUT"  # seconds without data before a download gives up
MAX_BYTES_ENV = "POSECLI_MAX_DOWNLOAD_BYTES"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_BYTES = 2 * 1024**3
CHUNK_BYTES = 1 << 20

# MMPose model-zoo names carry the first 8 hex digits of the file's sha256: name-741844ba_20200812.pth
HASH_NAME_RE = re.compile(r"^.+-(?P<sha>[0-9a-f]{8})(?:_\d+)?\.pth$")
URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]+)://")

FINAL_PREFIX = "keypoint_head.final_layer."  # the head's per-keypoint output layer (rows = keypoints)
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")

FORMAT_TITLES = {
    "posecli": "posecli",
    "mmpose0": "MMPose 0.x",
    "mmpose1": "MMPose 1.x",
    "hrnet-official": "official HRNet repository",
    "unknown": "unrecognised key names",
}

Mode = Literal["load_from", "pretrained"]


# --------------------------------------------------------------------------------------------------- sources
def default_cache_dir() -> Path:
    """Download folder: $POSECLI_CACHE/checkpoints, else ~/.cache/posecli/checkpoints."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "posecli"
    return base / "checkpoints"


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


def _human_bytes(n: float) -> str:
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
    progress: bool = True,
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
    progress: bool = True,
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
            sha = _stream_to(url, out, timeout=timeout, max_bytes=max_bytes, progress=progress)
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


def _stream_to(url: str, out: Any, *, timeout: float, max_bytes: int, progress: bool) -> str:
    """Copy the body of ``url`` into ``out`` with a Rich progress bar; return the hex sha256."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": f"posecli/{__version__}"})
    with _network_errors(url, timeout), urllib.request.urlopen(request, timeout=timeout) as response:
        length_header = response.headers.get("Content-Length")
        total = int(length_header) if length_header and length_header.isdigit() else None
        limit_hint = f"set {MAX_BYTES_ENV} to raise the limit"
        if total is not None and total > max_bytes:
            raise PoseCliError(
                f"download is {_human_bytes(total)}, over the {_human_bytes(max_bytes)} limit ({limit_hint})", url
            )
        name = Path(urllib.parse.urlparse(url).path).name
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        received = 0
        with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=False) as bar:
            task = bar.add_task(f"downloading {name}", total=total)
            while chunk := response.read(CHUNK_BYTES):
                received += len(chunk)
                if received > max_bytes:
                    raise PoseCliError(f"download exceeds the {_human_bytes(max_bytes)} limit ({limit_hint})", url)
                digest.update(chunk)
                out.write(chunk)
                bar.update(task, advance=len(chunk))
    if total is not None and received != total:
        raise PoseCliError(f"download incomplete: got {received} of {total} bytes", url)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------- reading
@dataclass
class Checkpoint:
    """A checkpoint read from disk, its tensors renamed to posecli's (MMPose 0.x) keys."""

    format: str  # posecli | mmpose0 | mmpose1 | hrnet-official | unknown
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # other top-level entries (optimizer, ...)
    container: str = "bare"  # where the tensors were: 'state_dict' / 'model' entry, or the file itself ('bare')
    stripped_prefix: str | None = None  # 'module.' when saved from DataParallel / DDP
    path: Path | None = None

    @property
    def title(self) -> str:
        """Human description of the format, e.g. ``MMPose 0.x (state_dict entry, 'module.' prefix stripped)``."""
        where = "bare state_dict" if self.container == "bare" else f"'{self.container}' entry"
        prefix = f", '{self.stripped_prefix}' prefix stripped" if self.stripped_prefix else ""
        return f"{FORMAT_TITLES[self.format]} ({where}{prefix})"

    @property
    def num_keypoints(self) -> int | None:
        """Output channels of the head's final layer, if the checkpoint has one."""
        weight = _final_weight_key(self.state_dict)
        return int(self.state_dict[weight].shape[0]) if weight else None

    @property
    def recorded_keypoint_names(self) -> list[str] | None:
        """Keypoint names stored in the checkpoint's meta (posecli, MMPose 1.x), if any."""
        meta = self.meta or {}
        ds = meta.get("dataset_meta")
        if not isinstance(ds, dict):
            return None
        names = ds.get("keypoint_names")
        if names is None and isinstance(ds.get("keypoint_id2name"), dict):  # MMPose 1.x
            id2name = ds["keypoint_id2name"]
            with contextlib.suppress(ValueError, TypeError):
                names = [id2name[i] for i in sorted(id2name, key=int)]
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names if self.num_keypoints in (None, len(names)) else None
        return None

    def keypoint_names(self) -> tuple[list[str] | None, str]:
        """(names, where they come from): recorded in meta, or COCO order assumed for 17 outputs."""
        names = self.recorded_keypoint_names
        if names is not None:
            return names, "recorded"
        if self.num_keypoints == 17 and self.format != "posecli":
            return load_builtin("coco").keypoint_names, "assumed COCO order"
        return None, "unknown"

    def dataset_meta(self) -> DatasetMeta | None:
        """The full DatasetMeta a posecli checkpoint carries (names, flip pairs, sigmas), else None."""
        ds = (self.meta or {}).get("dataset_meta")
        if self.format != "posecli" or not isinstance(ds, dict):
            return None
        return DatasetMeta.from_dict(ds, source=str(self.path or "checkpoint"))

    def settings(self) -> Any:
        """The resolved Settings a posecli checkpoint was trained with (so evaluate needs no preset), else None."""
        from posecli.settings import validate_settings

        data = (self.meta or {}).get("settings")
        if self.format != "posecli" or not isinstance(data, dict):
            return None
        return validate_settings(data, f"{self.path or 'checkpoint'} (meta.settings)")

    def image_size(self) -> list[int] | None:
        """Model input (width, height) if recorded: posecli meta, or image_size=[w, h] in an MMPose config text."""
        meta = self.meta or {}
        size = meta.get("image_size")
        if isinstance(size, (list, tuple)) and len(size) == 2:
            return [int(size[0]), int(size[1])]
        config = meta.get("config")
        if isinstance(config, str):
            m = re.search(r"image_size\s*=\s*\[\s*(\d+)\s*,\s*(\d+)\s*\]", config)
            if m:
                return [int(m.group(1)), int(m.group(2))]
        return None


def _safe_numpy_globals() -> list[Any]:
    """NumPy scalars, dtypes and arrays that MMCV/MMEngine write into checkpoint meta (best_score, sigmas).

    Rebuilding them runs no code of the file's choosing; object arrays still go through the weights-only unpickler.
    """
    # NumPy 2 moved numpy.core to numpy._core; 1.26 ships a numpy._core stub whose `multiarray` is not loaded, so
    # the module is imported by the name the installed NumPy really uses.
    major = int(np.__version__.split(".")[0])
    multiarray = importlib.import_module("numpy._core.multiarray" if major >= 2 else "numpy.core.multiarray")
    allowed: list[Any] = [np.dtype, np.ndarray]
    for name in ("scalar", "_reconstruct"):  # pickles name the module of the NumPy that wrote them (1.x or 2.x)
        func = getattr(multiarray, name)
        allowed += [(func, f"numpy.core.multiarray.{name}"), (func, f"numpy._core.multiarray.{name}")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and not n.startswith("_")]
    return allowed


def load_weights_only(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` with one clear PoseCliError for unsafe, truncated or foreign files."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_safe_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise PoseCliError(f"cannot read checkpoint ({exc.strerror or exc})", path) from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, KeyError... for bad files
        text = str(exc)
        if "Weights only load failed" in text:
            m = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({m.group(1)})" if m else ""
            if m or "Unsupported global" in text or "unsupported GLOBAL" in text:
                raise PoseCliError(
                    f"refused: the file needs arbitrary code to unpickle{what}; posecli only loads plain weights "
                    "(torch.load weights_only=True); if you trust its source, re-save just its state_dict",
                    path,
                ) from None
        if "central directory" in text or "zip archive" in text or isinstance(exc, EOFError):
            raise PoseCliError("truncated or corrupt checkpoint (incomplete download or copy?)", path) from None
        raise PoseCliError("not a PyTorch checkpoint (cannot be read by torch.load)", path) from None


def _is_tensor_map(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _final_weight_key(state: Mapping[str, Any]) -> str | None:
    """The last conv weight of the head's final layer (``keypoint_head.final_layer[.N].weight``)."""
    keys = [k for k in state if k.startswith(FINAL_PREFIX) and k.endswith("weight") and len(state[k].shape) == 4]
    return keys[-1] if keys else None


def _detect_format(keys: list[str], meta: Any) -> str:
    if any(k.startswith("backbone.") for k in keys):
        if isinstance(meta, dict) and "posecli_version" in meta:
            return "posecli"
        if any(k.startswith("head.") for k in keys) and not any(k.startswith("keypoint_head.") for k in keys):
            return "mmpose1"
        return "mmpose0"
    hrnet_roots = ("conv1.", "bn1.", "layer1.", "stage2.", "stage3.", "stage4.", "transition1.", "final_layer.")
    if any(k.startswith(hrnet_roots) for k in keys):
        return "hrnet-official"
    return "unknown"


def _to_posecli_key(key: str, fmt: str) -> str:
    if fmt == "mmpose1" and key.startswith("head."):
        return "keypoint_head." + key[len("head.") :]
    if fmt == "hrnet-official":
        return "keypoint_head." + key if key.startswith("final_layer.") else "backbone." + key
    return key


def parse_checkpoint(obj: Any, path: str | Path | None = None) -> Checkpoint:
    """Find the tensors in a loaded checkpoint object, detect its format and map its keys to posecli's."""
    where = path if path is not None else "checkpoint"
    if not isinstance(obj, Mapping):
        raise PoseCliError(f"not a checkpoint: it holds a {type(obj).__name__}, not a dict of tensors", where)
    container, raw, extras = "bare", None, {}
    for entry in ("state_dict", "model"):
        if isinstance(obj.get(entry), Mapping) and any(isinstance(v, torch.Tensor) for v in obj[entry].values()):
            container, raw = entry, obj[entry]
            extras = {k: v for k, v in obj.items() if k != entry}
            break
    if raw is None:
        if not _is_tensor_map(obj):
            shown = ", ".join(map(str, list(obj)[:6]))
            raise PoseCliError(f"not a checkpoint: no state_dict of tensors (top-level keys: {shown})", where)
        raw = obj
    state = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}  # drop stray non-tensor entries
    stripped = None
    for prefix in ("module.", "_orig_mod."):  # DataParallel / DDP, torch.compile
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
            stripped = prefix if stripped is None else stripped + prefix
    meta = extras.get("meta") if isinstance(extras.get("meta"), dict) else None
    fmt = _detect_format(list(state), meta)
    state = {_to_posecli_key(k, fmt): v for k, v in state.items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not v.is_meta and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise PoseCliError(f"refused: NaN or inf values in {', '.join(bad[:3])}{more}", where)
    return Checkpoint(
        format=fmt,
        state_dict=state,
        meta=meta,
        extras=extras,
        container=container,
        stripped_prefix=stripped,
        path=Path(path) if path is not None else None,
    )


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load a local checkpoint file safely (weights only) and map it to posecli keys."""
    path = Path(path)
    return parse_checkpoint(load_weights_only(path), path)


def backbone_widths(state: Mapping[str, Any]) -> list[int] | None:
    """HRNet stage4 branch widths, e.g. [48, 96, 192, 384] for W48, from the state_dict's shapes."""
    widths = []
    branch = 0
    while True:
        key = f"backbone.stage4.0.branches.{branch}.0.conv1.weight"
        if key not in state:
            break
        widths.append(int(state[key].shape[0]))
        branch += 1
    return widths or None


def is_hrnetv2(state: Mapping[str, Any]) -> bool:
    """Whether the last stage4 module fuses into every branch (MMPose's stage4.multiscale_output=True: HRNetV2)."""
    modules = {int(k.split(".")[2]) for k in state if k.startswith("backbone.stage4.") and k.split(".")[2].isdigit()}
    return bool(modules) and any(k.startswith(f"backbone.stage4.{max(modules)}.fuse_layers.1.") for k in state)


def backbone_name(state: Mapping[str, Any]) -> str | None:
    """``HRNet-W48``, ``HRNetV2-W18``, ... from the state_dict's shapes, or None without HRNet stage4 tensors."""
    widths = backbone_widths(state)
    return f"{'HRNetV2' if is_hrnetv2(state) else 'HRNet'}-W{widths[0]}" if widths else None


def count_params(state: Mapping[str, Any]) -> int:
    """Elements of the learnable tensors (batch-norm running statistics not counted), as MMPose counts them."""
    return sum(math.prod(v.shape) for k, v in state.items() if not k.endswith(BUFFER_SUFFIXES))


# ------------------------------------------------------------------------------------------------- load plan
@dataclass
class LoadReport:
    """What loading a checkpoint into a model does, key by key (posecli key names)."""

    format: str
    mode: str
    loaded: list[str] = field(default_factory=list)  # copied as they are
    transplanted: list[str] = field(default_factory=list)  # final-layer tensors that received rows by keypoint name
    reinitialized: list[str] = field(default_factory=list)  # keep the fresh init (wholly, or apart from the rows)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint: keep the fresh init
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model: ignored
    skipped: list[str] = field(default_factory=list)  # in the checkpoint, not used by this mode (pretrained: head)
    mismatched: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # (key, checkpoint, model)
    row_map: list[tuple[int, int]] = field(default_factory=list)  # (model row, checkpoint row) transplanted
    new_names: list[str] | None = None
    old_names: list[str] | None = None
    old_names_source: str = "unknown"
    widths: tuple[list[int] | None, list[int] | None] = (None, None)  # HRNet stage4 widths: checkpoint, model
    backbones: tuple[str | None, str | None] = (None, None)  # backbone_name() of checkpoint and model
    checkpoint_has_head: bool = False  # the checkpoint holds a keypoint head (load_from)

    @property
    def refusal(self) -> str | None:
        """Why this load must not happen (architecture mismatch, nothing matches), or None."""
        if self.mismatched:
            shown = "; ".join(f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:3])
            have, want = self.widths
            arch = ""
            if have and want and have != want:
                arch = f" (checkpoint: {self.backbones[0]} {have}, model: {self.backbones[1]} {want})"
            return (
                f"checkpoint does not fit this model{arch}: {len(self.mismatched)} tensors differ in shape "
                f"(only the head's final layer may), e.g. {shown}"
            )
        have_name, want_name = self.backbones
        if (
            self.mode == "load_from"
            and self.checkpoint_has_head
            and have_name
            and want_name
            and have_name.startswith("HRNetV2") != want_name.startswith("HRNetV2")
        ):
            reads = {True: "its head reads every stage4 branch", False: "its head reads the highest-resolution branch"}
            return (
                f"checkpoint is {have_name} ({reads[have_name.startswith('HRNetV2')]}) but the model is {want_name} "
                f"({reads[want_name.startswith('HRNetV2')]}): use a preset of the checkpoint's architecture, or load "
                "it as pretrained (backbone only)"
            )
        if not self.loaded and not self.transplanted:
            return f"no tensor of the checkpoint matches the model (format: {FORMAT_TITLES[self.format]})"
        return None

    def transplanted_rows(self) -> list[dict[str, Any]]:
        """One entry per transplanted row: model index/name and checkpoint index/name."""
        rows = []
        for new, old in self.row_map:
            rows.append(
                {
                    "index": new,
                    "name": self.new_names[new] if self.new_names else None,
                    "from_index": old,
                    "from_name": self.old_names[old] if self.old_names else None,
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the report."""
        return {
            "format": self.format,
            "mode": self.mode,
            "loaded": list(self.loaded),
            "transplanted": list(self.transplanted),
            "reinitialized": list(self.reinitialized),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "skipped": list(self.skipped),
            "mismatched": [{"key": k, "checkpoint": a, "model": b} for k, a, b in self.mismatched],
            "transplanted_rows": self.transplanted_rows(),
            "checkpoint_keypoint_names": self.old_names_source,
            "refused": self.refusal,
        }

    def summary(self) -> str:
        """One line: counts per category."""
        text = (
            f"{len(self.loaded)} loaded, {len(self.transplanted)} transplanted ({len(self.row_map)} keypoint rows), "
            f"{len(self.reinitialized)} re-initialised, {len(self.missing)} missing, {len(self.unexpected)} unexpected"
        )
        return text + (f", {len(self.skipped)} skipped" if self.skipped else "")


def load_keypoint_map(source: str | Path | Mapping[str, Any]) -> dict[str, str | int | None]:
    """Read a keypoint map {new_name: old_name | old_row_index | null} from YAML/JSON (or take a dict)."""
    where: str | Path = "keypoint map"
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        where = Path(source)
        try:
            data = yaml.safe_load(where.read_text(encoding="utf-8"))  # YAML is a superset of JSON
        except OSError as exc:
            raise PoseCliError(f"cannot read keypoint map ({exc.strerror or exc})", where) from None
        except UnicodeDecodeError:
            raise PoseCliError("keypoint map is not UTF-8 text", where) from None
        except yaml.YAMLError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PoseCliError(f"keypoint map is not valid YAML/JSON ({first})", where) from None
    if not isinstance(data, dict):
        raise PoseCliError("keypoint map must be a mapping {new_name: old_name}", where)
    check_document_size(data, where, limit=100_000)
    for key, value in data.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, (str, int))) or value is True:
            raise PoseCliError(f"keypoint map entry {key!r}: {value!r} must be name: old_name (or row index)", where)
    return data


def keypoint_row_map(
    new_names: list[str],
    old_names: list[str] | None,
    keypoint_map: Mapping[str, str | int | None] | None = None,
    num_old: int | None = None,
) -> list[tuple[int, int]]:
    """(new row, old row) pairs: same name, unless the keypoint map says otherwise (null = leave fresh)."""
    keypoint_map = keypoint_map or {}
    unknown = sorted(set(keypoint_map) - set(new_names))
    if unknown:
        raise PoseCliError(f"keypoint map names {unknown[:5]} are not keypoints of the model's dataset")
    old_index = {n: j for j, n in enumerate(old_names or [])}
    count_old = len(old_names) if old_names is not None else num_old
    pairs = []
    for i, name in enumerate(new_names):
        if name in keypoint_map:
            src = keypoint_map[name]
            if src is None:
                continue
            if isinstance(src, int):
                if count_old is None or not 0 <= src < count_old:
                    raise PoseCliError(f"keypoint map: row {src} for '{name}' is outside the checkpoint's outputs")
                pairs.append((i, src))
            elif src in old_index:
                pairs.append((i, old_index[src]))
            elif old_names is None:
                raise PoseCliError(
                    f"keypoint map: the checkpoint records no keypoint names; map '{name}' to a row index instead"
                )
            else:
                raise PoseCliError(f"keypoint map: '{src}' (for '{name}') is not a keypoint of the checkpoint")
        elif name in old_index:
            pairs.append((i, old_index[name]))
    return pairs


def plan_load(
    target_state: Mapping[str, Any],
    checkpoint: Checkpoint,
    mode: Mode = "load_from",
    meta: DatasetMeta | None = None,
    keypoint_map: str | Path | Mapping[str, Any] | None = None,
) -> LoadReport:
    """Decide, key by key, what loading ``checkpoint`` into a model with ``target_state`` would do (shapes only)."""
    if mode not in ("load_from", "pretrained"):
        raise ValueError(f"mode must be 'load_from' or 'pretrained', not {mode!r}")
    src = checkpoint.state_dict
    report = LoadReport(format=checkpoint.format, mode=mode)
    report.widths = (backbone_widths(src), backbone_widths(target_state))
    report.backbones = (backbone_name(src), backbone_name(target_state))
    kmap = load_keypoint_map(keypoint_map) if keypoint_map is not None else None

    if mode == "pretrained":  # backbone only; the head keeps its fresh init
        report.skipped = [k for k in src if not k.startswith("backbone.")]
        src = {k: v for k, v in src.items() if k.startswith("backbone.")}
        targets = [k for k in target_state if k.startswith("backbone.")]
    else:
        targets = list(target_state)

    # keypoint rows of the final layer: names of the model's and the checkpoint's outputs
    new_weight, old_weight = _final_weight_key(target_state), _final_weight_key(src)
    new_k = int(target_state[new_weight].shape[0]) if new_weight else None
    old_k = int(src[old_weight].shape[0]) if old_weight else None
    report.checkpoint_has_head = mode == "load_from" and old_weight is not None
    row_map: list[tuple[int, int]] | None = None
    if mode == "load_from" and new_k is not None and old_k is not None:
        if meta is not None and meta.num_keypoints != new_k:
            raise PoseCliError(
                f"the model has {new_k} keypoint outputs but dataset '{meta.name}' has {meta.num_keypoints}"
            )
        old_names, report.old_names_source = checkpoint.keypoint_names()
        report.new_names, report.old_names = (meta.keypoint_names if meta else None), old_names
        if meta is not None and (old_names is not None or kmap):
            try:
                row_map = keypoint_row_map(meta.keypoint_names, old_names, kmap, num_old=old_k)
            except PoseCliError as exc:  # name the map file in the message
                if exc.path is None and isinstance(keypoint_map, (str, Path)):
                    raise PoseCliError(exc.message, keypoint_map) from None
                raise
        elif kmap:
            raise PoseCliError("a keypoint map needs the model's dataset keypoint names")
    identity = row_map is not None and new_k == old_k and row_map == [(i, i) for i in range(new_k or 0)]

    def _is_rows(key: str) -> bool:  # a tensor of the final layer with one row per keypoint in both
        want, have = target_state[key].shape, src[key].shape
        return bool(want) and bool(have) and want[0] == new_k and have[0] == old_k

    # rows move only if every per-keypoint tensor of the layer agrees apart from the row count (weight and bias)
    row_keys = [k for k in targets if k.startswith(FINAL_PREFIX) and k in src and _is_rows(k)]
    if not all(list(target_state[k].shape)[1:] == list(src[k].shape)[1:] for k in row_keys):
        row_map = []

    for key in targets:
        want = list(target_state[key].shape)
        if key not in src:
            report.missing.append(key)
            continue
        have = list(src[key].shape)
        is_rows = key in row_keys
        if have == want and (row_map is None or identity or not is_rows):
            report.loaded.append(key)
        elif key.startswith(FINAL_PREFIX):
            # the head's output layer may differ (another keypoint set): fresh init, then matching rows copied in
            if is_rows and row_map:
                report.transplanted.append(key)
                if len(row_map) < new_k or {i for i, _ in row_map} != set(range(new_k or 0)):
                    report.reinitialized.append(key)
            else:
                report.reinitialized.append(key)
        else:
            report.mismatched.append((key, have, want))
    targets_set = set(targets)
    report.unexpected = [k for k in src if k not in targets_set]
    if report.transplanted:
        report.row_map = list(row_map or [])
    return report


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def load_into_model(
    model: nn.Module,
    src_or_path: str | Path | Checkpoint,
    mode: Mode = "load_from",
    meta: DatasetMeta | None = None,
    keypoint_map: str | Path | Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
) -> LoadReport:
    """Load a checkpoint into ``model`` (load_from: whole model, head transplant; pretrained: backbone only)."""
    if isinstance(src_or_path, Checkpoint):
        checkpoint = src_or_path
    else:
        checkpoint = read_checkpoint(resolve_source(src_or_path, cache_dir))
    model = _unwrap(model)
    target = model.state_dict()  # tensors share storage with the parameters and buffers
    report = plan_load(target, checkpoint, mode=mode, meta=meta, keypoint_map=keypoint_map)
    if report.refusal:
        raise PoseCliError(f"{mode} refused: {report.refusal}", checkpoint.path)
    src = checkpoint.state_dict
    with torch.no_grad():
        for key in report.loaded:
            target[key].copy_(src[key])
        for key in report.transplanted:
            new_rows = torch.tensor([i for i, _ in report.row_map])
            old_rows = torch.tensor([j for _, j in report.row_map])
            target[key][new_rows] = src[key][old_rows].to(target[key].dtype).to(target[key].device)
    return report


# -------------------------------------------------------------------------------------------------- saving
def checkpoint_meta(
    settings: Any,
    dataset_meta: DatasetMeta,
    epoch: int = 0,
    iteration: int = 0,
    metrics: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The ``meta`` of a posecli checkpoint: resolved settings, dataset metadata, progress and metrics."""
    return {
        "posecli_version": __version__,
        "settings": settings.model_dump(mode="json"),
        "dataset_meta": dataset_meta.to_dict(),
        "epoch": int(epoch),
        "iter": int(iteration),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "image_size": [int(x) for x in settings.data.image_size],
    }


def _check_plain(obj: Any, where: str) -> None:
    """Only tensors, dicts, lists, numbers and strings: what torch.load(weights_only=True) reads back."""
    if obj is None or isinstance(obj, (torch.Tensor, str, bool, int, float)):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; use str or int")
            _check_plain(value, f"{where}.{key}")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__name__}; checkpoints hold only tensors, dicts, lists, numbers, str")


def save_checkpoint(
    path: str | Path,
    model_state_dict: Mapping[str, torch.Tensor] | nn.Module,
    meta: Mapping[str, Any],
    **extra_state: Any,
) -> None:
    """Write a posecli checkpoint atomically: MMPose 0.x keys under ``state_dict``, ``meta``, extra state."""
    if isinstance(model_state_dict, nn.Module):
        model_state_dict = _unwrap(model_state_dict).state_dict()
    state = {}
    for key, value in model_state_dict.items():
        for prefix in ("module.", "_orig_mod."):  # never write wrapper prefixes
            key = key.removeprefix(prefix)
        state[key] = value.detach().cpu()
    full_meta = {"posecli_version": __version__, **dict(meta)}
    _check_plain(full_meta, "meta")
    _check_plain(extra_state, "extra state")
    payload = {"state_dict": state, "meta": full_meta, **extra_state}
    atomic_write_with(path, lambda fh: torch.save(payload, fh))


# ------------------------------------------------------------------------------------------------- inspect
def _meta_summary(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Scalars of a checkpoint's meta (long strings cut), metrics, and the dataset name."""
    if not meta:
        return {}
    summary: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, bool | int | float) or value is None:
            summary[key] = value
        elif isinstance(value, np.generic):
            summary[key] = value.item()
        elif isinstance(value, str):
            lines = value.count("\n") + 1
            summary[key] = value if lines == 1 and len(value) <= 80 else f"<text, {lines} lines>"
        elif key == "metrics" and isinstance(value, dict):
            summary[key] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in value.items()}
        elif key == "dataset_meta" and isinstance(value, dict):
            summary["dataset"] = value.get("name") or value.get("dataset_name")
        elif key == "settings" and isinstance(value, dict):
            summary["settings"] = "<resolved settings>"
        elif isinstance(value, dict):
            summary[key] = f"<{len(value)} entries>"
    return summary


def describe_checkpoint(path: Path, checkpoint: Checkpoint) -> dict[str, Any]:
    """Facts about a checkpoint file: format, size, hash, tensors, parameters, widths, keypoints, meta."""
    sha = sha256_of(path)
    expected = expected_sha_prefix(path.name)
    names, names_source = checkpoint.keypoint_names()
    widths = backbone_widths(checkpoint.state_dict)
    name = backbone_name(checkpoint.state_dict)
    return {
        "file": str(path),
        "format": checkpoint.format,
        "format_title": checkpoint.title,
        "container": checkpoint.container,
        "stripped_prefix": checkpoint.stripped_prefix,
        "file_size": path.stat().st_size,
        "sha256": sha,
        "sha256_prefix": sha[:8],
        "name_sha256_prefix": expected,
        "hash_matches_name": None if expected is None else sha.startswith(expected),
        "num_tensors": len(checkpoint.state_dict),
        "num_params": count_params(checkpoint.state_dict),
        "backbone_widths": widths,
        "backbone": name,
        "num_keypoints": checkpoint.num_keypoints,
        "keypoint_names": names,
        "keypoint_names_source": names_source,
        "input_size": checkpoint.image_size(),
        "meta": _meta_summary(checkpoint.meta),
        "extras": sorted(checkpoint.extras.keys() - {"meta"}),
    }


def _target_state_for(settings: Any) -> dict[str, torch.Tensor]:
    """The state_dict shapes of the model a preset builds (on the meta device: no memory, no init cost)."""
    from posecli.models.topdown import build_model

    with torch.device("meta"):
        model = build_model(settings.model)
    return model.state_dict()


def _settings_meta(settings: Any) -> DatasetMeta | None:
    from posecli.datasets.meta import resolve_meta

    ann = settings.data.train_ann or settings.data.val_ann
    if settings.dataset is None and ann is None:
        return None
    return resolve_meta(settings.dataset, ann)


def _keys_cell(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")


def _print_inspect(info: dict[str, Any], report: LoadReport | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    facts.add_row("checkpoint", info["file"])
    facts.add_row("format", info["format_title"])
    facts.add_row("file size", f"{_human_bytes(info['file_size'])} ({info['file_size']:,} bytes)")
    sha_note = ""
    if info["hash_matches_name"] is not None:
        sha_note = (
            " (matches the file name)"
            if info["hash_matches_name"]
            else f" [red](the file name says {info['name_sha256_prefix']})[/red]"
        )
    facts.add_row("sha256", f"{info['sha256_prefix']}{sha_note}")
    facts.add_row("tensors", f"{info['num_tensors']:,} ({info['num_params']:,} parameters)")
    if info["backbone_widths"]:
        facts.add_row("backbone", f"{info['backbone']}, stage4 widths {info['backbone_widths']}")
    facts.add_row("keypoints", str(info["num_keypoints"]) if info["num_keypoints"] is not None else "- (no head)")
    if info["keypoint_names"]:
        facts.add_row("keypoint names", f"({info['keypoint_names_source']}) " + ", ".join(info["keypoint_names"]))
    if info["input_size"]:
        facts.add_row("input size", "{} x {} (w x h)".format(*info["input_size"]))
    for key, value in info["meta"].items():
        facts.add_row(f"meta.{key}", json.dumps(value) if isinstance(value, dict) else str(value))
    if info["extras"]:
        facts.add_row("other entries", ", ".join(info["extras"]))
    console.print(facts)
    if report is None:
        return
    plan = Table("load_from plan", "tensors", "keys")
    for label, keys in (
        ("loaded", report.loaded),
        ("transplanted", report.transplanted),
        ("re-initialised", report.reinitialized),
        ("missing", report.missing),
        ("unexpected", report.unexpected),
        ("mismatched", [k for k, _, _ in report.mismatched]),
    ):
        plan.add_row(label, str(len(keys)), _keys_cell(keys))
    console.print(plan)
    if report.row_map:
        rows = report.transplanted_rows()
        pairs = ", ".join(f"{r['index']}<-{r['from_index']} {r['name'] or ''}".rstrip() for r in rows[:8])
        more = f", ... (+{len(rows) - 8})" if len(rows) > 8 else ""
        console.print(f"{len(rows)} keypoint rows transplanted (model row <- checkpoint row): {pairs}{more}")
    if report.old_names_source != "unknown":
        console.print(f"checkpoint keypoint names: {report.old_names_source}")
    console.print(report.summary())


def run_inspect_command(
    checkpoint: str | Path,
    settings: Any = None,
    keypoint_map: str | Path | None = None,
    as_json: bool = False,
    cache_dir: str | Path | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """``posecli inspect-checkpoint``: describe a checkpoint and, with settings, the load_from plan into them."""
    path = resolve_source(checkpoint, cache_dir, timeout=timeout)
    ckpt = read_checkpoint(path)
    info = describe_checkpoint(path, ckpt)
    report = None
    if settings is not None:
        report = plan_load(_target_state_for(settings), ckpt, "load_from", _settings_meta(settings), keypoint_map)
        info.update(report.to_dict())
        info["format"] = ckpt.format  # the report's format is the same; keep the key order readable
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        _print_inspect(info, report)
    if report is not None and report.refusal:
        raise PoseCliError(f"finetune --load-from would refuse: {report.refusal}", path)
    return info
