"""A checkpoint made ready for inference (evaluate, predict, export): its settings (from --preset or those it
records), its keypoint set, the sigma it was trained with, and the model with every tensor loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posecli.checkpoints import Checkpoint, load_into_model
from posecli.datasets.meta import DatasetMeta, resolve_meta
from posecli.errors import PoseCliError
from posecli.models import TopDown, build_model
from posecli.settings import Settings, load_preset_dict, settings_with_overrides


def settings_for_checkpoint(
    checkpoint: Checkpoint, ckpt_path: Path, preset: str | None, overrides: dict[str, Any]
) -> tuple[Settings, str, bool]:
    """Settings from --preset, else from a posecli checkpoint's meta.settings, with the flags applied.

    Returns (settings, where they come from, whether they come from the checkpoint).
    """
    if preset is not None:
        data, path = load_preset_dict(preset)
        source, from_ckpt = str(path), False
    else:
        recorded = (checkpoint.meta or {}).get("settings")
        if checkpoint.format != "posecli" or not isinstance(recorded, dict):
            raise PoseCliError(
                f"a {checkpoint.title} checkpoint does not record the model's settings: pass --preset to describe "
                "it (e.g. --preset hrnet_w48_coco_384x288_dark; `posecli presets list` shows them)",
                ckpt_path,
            )
        data, source, from_ckpt = recorded, f"{ckpt_path} (meta.settings)", True
    return settings_with_overrides(data, overrides, source), source, from_ckpt


def meta_for_checkpoint(
    dataset: str | None, checkpoint: Checkpoint, settings: Settings, from_ckpt: bool, ann_file: Path | None
) -> DatasetMeta:
    """The keypoint set: --dataset, else the one the checkpoint records (when its settings are used or the preset
    names none), else the preset's ``dataset`` (or the annotation file's categories)."""
    if dataset is not None:
        return resolve_meta(dataset, ann_file)
    recorded = checkpoint.dataset_meta()
    if recorded is not None and (from_ckpt or settings.dataset is None):
        return recorded
    return resolve_meta(settings.dataset, ann_file)


def trained_sigma(checkpoint: Checkpoint, settings: Settings, from_ckpt: bool) -> tuple[float | None, str]:
    """The heatmap sigma the model was trained with (None if unknown) and where that comes from."""
    recorded = (checkpoint.meta or {}).get("settings") if checkpoint.format == "posecli" else None
    if isinstance(recorded, dict):
        sigma = (recorded.get("data") or {}).get("sigma")
        if isinstance(sigma, (int, float)):
            return float(sigma), "recorded in the checkpoint"
    if not from_ckpt:
        return float(settings.data.sigma), "data.sigma of the preset"
    return None, "unknown"


def load_inference_model(settings: Settings, checkpoint: Checkpoint, meta: DatasetMeta, ckpt_path: Path) -> TopDown:
    """The model of ``settings`` with every tensor from the checkpoint; refused when any would stay random."""
    want = settings.model.head.out_channels
    have = checkpoint.num_keypoints
    if have is not None and have != want:
        raise PoseCliError(
            f"the checkpoint's head predicts {have} keypoints but the model has {want}: "
            f"pass --keypoints {have} or the preset that matches the checkpoint",
            ckpt_path,
        )
    if meta.num_keypoints != want:
        raise PoseCliError(
            f"dataset '{meta.name}' has {meta.num_keypoints} keypoints but the model predicts {want} "
            "(choose the matching --dataset / preset)"
        )
    model = build_model(settings.model)
    report = load_into_model(model, checkpoint, "load_from", meta)
    partly_fresh = report.transplanted if report.fresh_rows else []
    fresh = report.missing + report.reinitialized + partly_fresh
    if fresh:
        shown = ", ".join(fresh[:3])
        why = (
            "its keypoint names do not match the dataset's"
            if (report.reinitialized or partly_fresh) and not report.missing
            else "it does not fit this model"
        )
        raise PoseCliError(
            f"cannot evaluate: {len(fresh)} tensors of the model would keep random weights ({shown}...); {why}",
            ckpt_path,
        )
    return model
