"""The load plan: what loading a checkpoint into a model does, key by key, with the head's keypoint rows
transplanted by name (or by a keypoint map); then the load itself (``load_from`` whole model, ``pretrained``
backbone only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

from posecli.checkpoints.formats import (
    FINAL_PREFIX,
    FORMAT_TITLES,
    Checkpoint,
    _final_weight_key,
    _unwrap,
    backbone_name,
    backbone_widths,
    read_checkpoint,
)
from posecli.checkpoints.sources import DownloadProgress, resolve_source
from posecli.datasets.meta import DatasetMeta
from posecli.errors import PoseCliError
from posecli.files import check_document_size

Mode = Literal["load_from", "pretrained"]


@dataclass
class LoadReport:
    """What loading a checkpoint into a model does, key by key (posecli key names)."""

    format: str
    mode: str
    loaded: list[str] = field(default_factory=list)  # copied as they are
    transplanted: list[str] = field(default_factory=list)  # final-layer tensors that received rows by keypoint name
    reinitialized: list[str] = field(default_factory=list)  # keep the fresh init (transplanted ones are not here)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint: keep the fresh init
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model: ignored
    skipped: list[str] = field(default_factory=list)  # in the checkpoint, not used by this mode (pretrained: head)
    mismatched: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # (key, checkpoint, model)
    row_map: list[tuple[int, int]] = field(default_factory=list)  # (model row, checkpoint row) transplanted
    num_rows: int | None = None  # keypoint rows of the model's final layer
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

    @property
    def fresh_rows(self) -> int:
        """Keypoint rows of the transplanted tensors that keep their fresh init (no checkpoint row maps to them)."""
        if not self.transplanted or self.num_rows is None:
            return 0
        return self.num_rows - len({i for i, _ in self.row_map})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the report."""
        return {
            "format": self.format,
            "mode": self.mode,
            "loaded": list(self.loaded),
            "transplanted": list(self.transplanted),
            "reinitialized": list(self.reinitialized),
            "fresh_rows": self.fresh_rows,
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
        rows = f"{len(self.row_map)} keypoint rows" if self.transplanted else "0 keypoint rows"
        if self.fresh_rows:
            rows = f"{len(self.row_map)} of {self.num_rows} keypoint rows, {self.fresh_rows} fresh"
        text = (
            f"{len(self.loaded)} loaded, {len(self.transplanted)} transplanted ({rows}), "
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
    report.num_rows = new_k
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
                report.transplanted.append(key)  # counted once: its rows without a source are in fresh_rows
            else:
                report.reinitialized.append(key)
        else:
            report.mismatched.append((key, have, want))
    targets_set = set(targets)
    report.unexpected = [k for k in src if k not in targets_set]
    if report.transplanted:
        report.row_map = list(row_map or [])
    return report


def load_into_model(
    model: nn.Module,
    src_or_path: str | Path | Checkpoint,
    mode: Mode = "load_from",
    meta: DatasetMeta | None = None,
    keypoint_map: str | Path | Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    progress: DownloadProgress | None = None,
) -> LoadReport:
    """Load a checkpoint into ``model`` (load_from: whole model, head transplant; pretrained: backbone only)."""
    if isinstance(src_or_path, Checkpoint):
        checkpoint = src_or_path
    else:
        checkpoint = read_checkpoint(resolve_source(src_or_path, cache_dir, progress=progress))
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
