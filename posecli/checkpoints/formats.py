"""Checkpoint files: read safely (weights only), detect the format (posecli, MMPose 0.x/1.x, official HRNet) and map
its keys to posecli's (MMPose 0.x) names; describe a file; save posecli's own checkpoints atomically."""

from __future__ import annotations

import contextlib
import importlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from posecli import __version__
from posecli.atomic import atomic_write_with
from posecli.checkpoints.sources import expected_sha_prefix, sha256_of
from posecli.datasets.meta import DatasetMeta, load_builtin
from posecli.errors import PoseCliError
from posecli.files import with_article

FINAL_PREFIX = "keypoint_head.final_layer."  # the head's per-keypoint output layer (rows = keypoints)
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")

FORMAT_TITLES = {
    "posecli": "posecli",
    "mmpose0": "MMPose 0.x",
    "mmpose1": "MMPose 1.x",
    "hrnet-official": "official HRNet repository",
    "unknown": "unrecognised key names",
}


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
        held = with_article(type(obj).__name__)
        raise PoseCliError(f"not a checkpoint: it holds {held}, not a dict of tensors", where)
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


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


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
                raise TypeError(f"{where}: key {key!r} is {with_article(type(key).__name__)}; use str or int")
            _check_plain(value, f"{where}.{key}")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    kind = with_article(type(obj).__name__)
    raise TypeError(f"{where} is {kind}; checkpoints hold only tensors, dicts, lists, numbers, str")


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


# ------------------------------------------------------------------------------------------------ describe
def _json_ready(value: Any) -> Any:
    """A meta value as plain JSON: NumPy scalars and arrays to numbers and lists, tensors to their shape."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return f"tensor {list(value.shape)}" if value.numel() > 64 else value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _meta_summary(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """A checkpoint's meta as plain JSON (the whole values: settings, metrics, config text), its dataset by name."""
    if not meta:
        return {}
    summary: dict[str, Any] = {}
    for key, value in meta.items():
        if key == "dataset_meta" and isinstance(value, dict):
            summary["dataset"] = value.get("name") or value.get("dataset_name")
        else:
            summary[key] = _json_ready(value)
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
