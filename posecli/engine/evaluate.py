"""Evaluation: batched inference (flip test in one 2B pass), decoding, MMPose 0.x rescoring + OKS NMS, COCO AP,
results.json / metrics.json, and drawings. ``evaluate_model`` is what the training loop calls; the CLI calls
``run_evaluate_command``.

MMPose 0.x order of operations (TopDown.forward_test + TopDownCocoDataset.evaluate):
  heatmaps = model(crops)                       # (B, K, h, w)
  flip test: (heatmaps + flip_back(model(mirror crops), flip pairs, shift one pixel)) / 2
  coords, maxvals = decode(heatmaps)            # default / unbiased (DARK) / none
  keypoints = back to the image through the box's center/scale; keypoint score = heatmap maximum
  person score = box score x mean of its keypoint scores above vis_thr
  per image: OKS NMS (oks_thr) or soft OKS NMS; COCO keypoint AP/AR with the dataset's OKS sigmas.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from posecli import __version__
from posecli.atomic import atomic_write_json, atomic_write_text, check_writable_dir
from posecli.checkpoints import load_into_model, read_checkpoint, resolve_source, sha256_of
from posecli.codec import decode_heatmaps, heatmap_to_image
from posecli.datasets.coco import TopDownCocoDataset, read_keypoints
from posecli.datasets.meta import DatasetMeta, resolve_meta
from posecli.engine.distributed import resolve_device
from posecli.errors import PoseCliError
from posecli.metrics import (
    coco_keypoint_metrics,
    extra_metrics,
    infer_meta,
    is_wholebody,
    load_results,
    merge_wholebody,
    oks_nms,
    rescore,
    score_results_file,
    soft_oks_nms,
    split_wholebody,
)
from posecli.models import build_model
from posecli.report import metrics_table
from posecli.settings import (
    Settings,
    TestSettings,
    load_preset_dict,
    set_dotted,
    settings_to_yaml,
    validate_settings,
)
from posecli.vis import draw_poses, write_jpeg

RESULTS_FILE = "results.json"
RESULTS_INFO_FILE = "results.meta.json"
METRICS_FILE = "metrics.json"
VIS_DIR = "vis"
EXTRA_SCALARS = ("PCK@0.05", "PCK@0.1", "PCK@0.2", "AUC", "EPE")


# ------------------------------------------------------------------------------------------- decode settings
def recommended_modulate_kernel(sigma: float) -> int:
    """DARK blur kernel for heatmaps trained with Gaussian ``sigma``: the largest odd integer <= 6*sigma - 1.

    It reproduces MMPose's pairs (sigma 2 -> 11, sigma 3 -> 17) and gives 7 for sigma 1.5 (the demo preset).
    """
    k = max(1, math.floor(6.0 * float(sigma) - 1.0 + 1e-9))
    return k if k % 2 == 1 else k - 1


def kernel_warning(test: TestSettings, train_sigma: float | None, sigma_source: str) -> str | None:
    """A warning when unbiased decoding's kernel does not suit the sigma the model was trained with, else None."""
    if test.post_process != "unbiased" or train_sigma is None:
        return None
    expected = recommended_modulate_kernel(train_sigma)
    if test.modulate_kernel == expected:
        return None
    return (
        f"unbiased decoding uses modulate_kernel {test.modulate_kernel} but the model was trained with sigma "
        f"{train_sigma:g} ({sigma_source}); the matching kernel is {expected} (largest odd <= 6*sigma - 1; "
        "MMPose: sigma 2 -> 11, sigma 3 -> 17). Pass --modulate-kernel "
        f"{expected} unless you mean it."
    )


# ------------------------------------------------------------------------------------------------ inference
@dataclass
class Predictions:
    """Per-box model outputs in image pixels, one row per dataset item."""

    keypoints: np.ndarray  # (N, K, 3) f32 x, y (image px), heatmap maximum
    center: np.ndarray  # (N, 2) f32 box center (image px)
    scale: np.ndarray  # (N, 2) f32 box size / 200
    area: np.ndarray  # (N,) f32 prod(scale * 200), the area MMPose's OKS NMS uses
    bbox_score: np.ndarray  # (N,) f32 1 for ground-truth boxes, the detector's score otherwise
    image_id: list[Any]  # (N,) COCO image ids
    index: np.ndarray  # (N,) int64 dataset index of the box
    category_id: list[Any] = field(default_factory=list)  # (N,) each box's own category (empty: not known)

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def concat(cls, parts: Sequence[Predictions]) -> Predictions:
        """Join shards (e.g. from DDP ranks), in dataset order, each dataset index once (samplers pad)."""
        parts = [p for p in parts if p is not None]
        index = np.concatenate([p.index for p in parts]) if parts else np.zeros(0, np.int64)
        _, first = np.unique(index, return_index=True)  # sorted unique indices -> dataset order
        ids = [i for p in parts for i in p.image_id]
        cats = [c for p in parts for c in p.category_id]

        def cat(name: str, shape: tuple[int, ...]) -> np.ndarray:
            arrays = [getattr(p, name) for p in parts]
            return np.concatenate(arrays)[first] if arrays else np.zeros((0, *shape), np.float32)

        k = parts[0].keypoints.shape[1] if parts else 0
        return cls(
            keypoints=cat("keypoints", (k, 3)),
            center=cat("center", (2,)),
            scale=cat("scale", (2,)),
            area=cat("area", ()),
            bbox_score=cat("bbox_score", ()),
            image_id=[ids[i] for i in first],
            index=index[first].astype(np.int64),
            category_id=[cats[i] for i in first] if len(cats) == len(ids) else [],
        )


def _bare(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers (for forward_flip_test)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _uses_channels_last(model: nn.Module) -> bool:
    conv = next((m.weight for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv is not None and conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def predict(
    model: nn.Module,
    loader: Any,
    test: TestSettings,
    meta: DatasetMeta,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    progress: Any = None,
) -> Predictions:
    """Run the model over a loader of dataset items: flip test, decoding, back to image pixels.

    With ``test.flip_test`` each batch and its mirror image go through ONE forward pass of size 2B
    (``TopDown.forward_flip_test``); the mirror heatmaps are flipped back with the dataset's flip pairs and
    shifted one pixel when ``test.shift_heatmap`` is on. ``progress`` is called with the batch size after each
    batch. The model is put in eval mode and given back in the mode it came in.
    """
    device = torch.device(device)
    bare = _bare(model)
    flip_index = meta.flip_index
    heatmap_wh: tuple[int, int] | None = None
    channels_last = _uses_channels_last(bare)
    was_training = model.training
    model.eval()
    out: dict[str, list[torch.Tensor]] = {"keypoints": [], "center": [], "scale": [], "area": [], "bbox_score": []}
    indices: list[torch.Tensor] = []
    image_ids: list[Any] = []
    category_ids: list[Any] = []
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    try:
        with torch.inference_mode():
            for batch in loader:
                images = batch["image"].to(device, non_blocking=True)  # (B, 3, H, W)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast:
                    if test.flip_test:
                        heatmaps = bare.forward_flip_test(images, flip_index, test.shift_heatmap)  # (B, K, h, w)
                    else:
                        heatmaps = model(images)
                heatmaps = heatmaps.float()
                if heatmap_wh is None:
                    heatmap_wh = (int(heatmaps.shape[3]), int(heatmaps.shape[2]))
                center = batch["center"].to(device, non_blocking=True).float()  # (B, 2)
                scale = batch["scale"].to(device, non_blocking=True).float()  # (B, 2)
                coords, maxvals = decode_heatmaps(heatmaps, test.post_process, test.modulate_kernel)  # (B,K,2) (B,K)
                xy = heatmap_to_image(coords, center, scale, heatmap_wh)  # (B, K, 2) image px
                # tensors stay on the device until the end: no CPU-GPU sync per batch
                out["keypoints"].append(torch.cat([xy, maxvals[..., None]], dim=2))
                out["center"].append(center)
                out["scale"].append(scale)
                out["area"].append(torch.as_tensor(batch["area"]).float())
                out["bbox_score"].append(torch.as_tensor(batch["bbox_score"]).float())
                indices.append(torch.as_tensor(batch["index"]).long())
                image_ids.extend(_as_list(batch["image_id"]))
                if "category_id" in batch:
                    category_ids.extend(_as_list(batch["category_id"]))
                if progress is not None:
                    progress(images.shape[0])
    finally:
        model.train(was_training)
    k = meta.num_keypoints

    def gather(name: str, shape: tuple[int, ...]) -> np.ndarray:
        parts = out[name]
        if not parts:
            return np.zeros((0, *shape), np.float32)
        return torch.cat([p.cpu() for p in parts]).numpy().astype(np.float32)  # CPU-GPU sync point

    return Predictions(
        keypoints=gather("keypoints", (k, 3)),
        center=gather("center", (2,)),
        scale=gather("scale", (2,)),
        area=gather("area", ()),
        bbox_score=gather("bbox_score", ()),
        image_id=image_ids,
        index=torch.cat(indices).numpy() if indices else np.zeros(0, np.int64),
        category_id=category_ids if len(category_ids) == len(image_ids) else [],
    )


def _as_list(values: Any) -> list[Any]:
    if isinstance(values, torch.Tensor):
        return values.tolist()
    return list(values)


# ---------------------------------------------------------------------------------------------- results
def make_results(
    preds: Predictions, meta: DatasetMeta, test: TestSettings, category_id: Any = 1
) -> list[dict[str, Any]]:
    """MMPose 0.x results: rescore people, OKS NMS per image, write COCO keypoint results entries.

    Images come in the order they first appear in the predictions (dataset order), people of an image in the
    order NMS keeps them. Each entry carries its box's own category (``category_id`` is the fallback when the
    predictions have none), as MMPose's multi-category (animal) datasets write them: COCO AP is computed per
    category. COCO-WholeBody entries carry the split fields as MMPose writes them.
    """
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for i in range(len(preds)):
        person = {
            "keypoints": preds.keypoints[i],  # (K, 3) f32: MMPose's float32 sums and products
            "center": preds.center[i],
            "scale": preds.scale[i],
            "area": preds.area[i],
            "score": preds.bbox_score[i],
            "image_id": preds.image_id[i],
            "category_id": preds.category_id[i] if preds.category_id else category_id,
        }
        by_image.setdefault(preds.image_id[i], []).append(person)
    wholebody = is_wholebody(meta)
    results: list[dict[str, Any]] = []
    for people in by_image.values():
        people = rescore(people, test.vis_thr)
        if test.use_nms:
            nms = soft_oks_nms if test.soft_nms else oks_nms
            people = [people[i] for i in nms(people, test.oks_thr, meta.sigmas)]
        for person in people:
            flat = np.asarray(person["keypoints"]).reshape(-1)
            entry: dict[str, Any] = {
                "image_id": _json_id(person["image_id"]),
                "category_id": _json_id(person["category_id"]),
            }
            if wholebody:
                entry.update(split_wholebody(flat))
            else:
                entry["keypoints"] = flat.tolist()
            entry["score"] = float(person["score"])
            entry["center"] = np.asarray(person["center"]).tolist()
            entry["scale"] = np.asarray(person["scale"]).tolist()
            results.append(entry)
    return results


def _json_id(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def score_results(
    gt: dict[str, Any] | str | Path,
    results: list[dict[str, Any]],
    meta: DatasetMeta,
    extra: bool = True,
    per_keypoint_ap: bool = False,
) -> dict[str, Any]:
    """The metrics.json body: MMPose's AP/AR keys (WholeBody: plus parts), then PCK/AUC/EPE and per_keypoint,
    then ``warnings`` when there are caveats (e.g. defaulted sigmas)."""
    warnings: list[str] = []
    metrics: dict[str, Any] = dict(coco_keypoint_metrics(gt, results, meta, warnings=warnings))
    if extra:
        metrics.update(extra_metrics(gt, results, meta, per_keypoint_ap=per_keypoint_ap))
    if warnings:
        metrics["warnings"] = warnings
    return metrics


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Only the top-level numbers (standard AP/AR, WholeBody parts, PCK/AUC/EPE), undefined ones dropped."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


# ------------------------------------------------------------------------------------------- the whole loop
@dataclass
class Evaluation:
    """Everything one evaluation produced (on rank 0; other DDP ranks get empty ones)."""

    metrics: dict[str, Any]  # the metrics.json body without eval_info
    results: list[dict[str, Any]]
    predictions: Predictions | None
    seconds: float
    num_boxes: int
    warnings: list[str] = field(default_factory=list)


def _distributed(dist_info: Any) -> tuple[bool, int, int]:
    """(distributed, rank, world size) from a DistInfo, else from torch.distributed's state."""
    if dist_info is not None:
        return bool(dist_info.distributed), int(dist_info.rank), int(dist_info.world_size)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def make_loader(
    dataset: Dataset, batch_size: int, device: torch.device, workers: int = 0, distributed: bool = False
) -> DataLoader:
    """Sequential batches (a DistributedSampler share per rank in DDP); pinned memory for CUDA copies."""
    sampler = DistributedSampler(dataset, shuffle=False, drop_last=False) if distributed else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
    )


def run_evaluation(
    model: nn.Module,
    dataset: Any,
    test: TestSettings,
    meta: DatasetMeta,
    device: torch.device | str,
    *,
    workers: int = 0,
    amp_dtype: torch.dtype | None = None,
    dist_info: Any = None,
    extra: bool = True,
    per_keypoint_ap: bool = False,
    progress: Any = None,
) -> Evaluation:
    """Inference over a top-down dataset (``.coco`` ground truth), results and full metrics on rank 0.

    In DDP (a ``DistInfo`` or an initialised process group) every rank predicts its DistributedSampler share;
    the shares are gathered with all_gather_object and rank 0 alone builds results and metrics.
    """
    device = torch.device(device)
    distributed, rank, world = _distributed(dist_info)
    loader = make_loader(dataset, test.batch_size, device, workers, distributed)
    start = time.perf_counter()
    preds = predict(model, loader, test, meta, device, amp_dtype=amp_dtype, progress=progress)
    if distributed:
        shards: list[Any] = [None] * world
        dist.all_gather_object(shards, preds)
        if rank != 0:
            return Evaluation(metrics={}, results=[], predictions=None, seconds=0.0, num_boxes=0)
        preds = Predictions.concat(shards)
    seconds = time.perf_counter() - start
    results = make_results(preds, meta, test)
    metrics = score_results(dataset.coco.dataset, results, meta, extra=extra, per_keypoint_ap=per_keypoint_ap)
    return Evaluation(
        metrics=metrics,
        results=results,
        predictions=preds,
        seconds=seconds,
        num_boxes=len(preds),
        warnings=list(metrics.get("warnings", [])),
    )


def evaluate_model(
    model: nn.Module,
    dataset: Any,
    test: TestSettings,
    meta: DatasetMeta,
    device: torch.device | str,
    *,
    workers: int = 0,
    amp_dtype: torch.dtype | None = None,
    dist_info: Any = None,
    extra: bool = True,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Evaluate a model on a top-down dataset: (flat metrics {name: float}, COCO results list).

    Metrics are MMPose's AP/AR names (COCO-WholeBody adds <part>_AP/_AR) plus, with ``extra``, PCK@0.05/0.1/0.2,
    AUC and EPE when defined. In DDP call it on every rank: rank 0 gets the numbers, the others ({}, []).
    """
    ev = run_evaluation(
        model, dataset, test, meta, device, workers=workers, amp_dtype=amp_dtype, dist_info=dist_info, extra=extra
    )
    return flat_metrics(ev.metrics), ev.results


# ----------------------------------------------------------------------------------------------- the command
def _check_output_dir(output_dir: Path | None) -> None:
    if output_dir is None:
        return
    check_writable_dir(output_dir, "--output-dir")  # a file or a read-only path fails before inference
    for name in (RESULTS_FILE, METRICS_FILE, VIS_DIR):
        target = output_dir / name
        if name == VIS_DIR and target.exists() and not target.is_dir():
            raise PoseCliError("exists and is not a folder (it would hold the drawings)", target)
        if name != VIS_DIR and target.is_dir():
            raise PoseCliError("is a folder; posecli would write a file there", target)


def _require_file(path: Path | None, flag: str, what: str) -> Path:
    if path is None:
        raise PoseCliError(f"{flag} is required ({what})")
    if not path.exists():
        raise PoseCliError(f"{what} not found", path)
    if not path.is_file():
        raise PoseCliError(f"{what} is not a file", path)
    return path


def _console() -> Any:
    return Console()


def _print_metrics(metrics: dict[str, Any], per_keypoint: bool, title: str) -> None:
    console = _console()
    console.print(Text(title, style="bold"))  # Text: paths with [brackets] are not markup
    console.print(metrics_table(metrics, per_keypoint=per_keypoint))


def _write_outputs(
    output_dir: Path, metrics: dict[str, Any], results: list[dict[str, Any]] | None, info: dict[str, Any]
) -> list[Path]:
    written = []
    if results is not None:
        # compact: a COCO-WholeBody val set gives hundreds of MB pretty-printed
        atomic_write_text(output_dir / RESULTS_FILE, json.dumps(results, separators=(",", ":")) + "\n")
        atomic_write_json(output_dir / RESULTS_INFO_FILE, info)
        written += [output_dir / RESULTS_FILE, output_dir / RESULTS_INFO_FILE]
    atomic_write_json(output_dir / METRICS_FILE, {**metrics, "eval_info": info})
    written.append(output_dir / METRICS_FILE)
    return written


def run_evaluate_command(
    checkpoint: str | None,
    predictions: Path | None,
    preset: str | None,
    overrides: dict[str, Any],
    ann_file: Path | None,
    img_dir: Path | None,
    dataset: str | None,
    output_dir: Path | None,
    device: str,
    per_keypoint: bool,
    save_vis: int,
    vis_gt: bool,
    cache_dir: Path | None,
    print_config: bool,
) -> dict[str, Any]:
    """`posecli evaluate`: run a checkpoint over a dataset, or score a results file; write and print metrics.

    Returns the metrics.json object (empty with ``print_config``).
    """
    if checkpoint is not None and predictions is not None:
        raise PoseCliError("give --checkpoint (run a model) or --predictions (score a results file), not both")
    if checkpoint is None and predictions is None:
        raise PoseCliError(
            "nothing to evaluate: give --checkpoint CKPT --img-dir D (run a model) or --predictions RESULTS.json"
        )
    if save_vis < 0:
        raise PoseCliError(f"--save-vis takes a number of images >= 0, got {save_vis}")
    if save_vis and output_dir is None:
        raise PoseCliError("--save-vis writes into OUTPUT_DIR/vis: give --output-dir too")
    output_dir = Path(output_dir) if output_dir is not None else None
    _check_output_dir(output_dir)
    if predictions is not None:
        return _score_predictions_file(
            Path(predictions), preset, overrides, ann_file, img_dir, dataset, output_dir, per_keypoint, save_vis, vis_gt
        )
    return _evaluate_checkpoint(
        checkpoint,  # type: ignore[arg-type]
        preset,
        overrides,
        ann_file,
        img_dir,
        dataset,
        output_dir,
        device,
        per_keypoint,
        save_vis,
        vis_gt,
        cache_dir,
        print_config,
    )


def _score_predictions_file(
    predictions: Path,
    preset: str | None,
    overrides: dict[str, Any],
    ann_file: Path | None,
    img_dir: Path | None,
    dataset: str | None,
    output_dir: Path | None,
    per_keypoint: bool,
    save_vis: int,
    vis_gt: bool,
) -> dict[str, Any]:
    if preset is not None:
        raise PoseCliError("--preset describes a model; to name the keypoint set of a results file use --dataset")
    model_flags = sorted(
        k for k in overrides if k.startswith(("test.", "data.", "model.")) and k != "data.allow_outside_img_dir"
    )
    if model_flags:
        raise PoseCliError(
            f"{', '.join(model_flags)} only apply when running a model (--checkpoint); "
            "--predictions scores the results file as it is"
        )
    _require_file(ann_file, "--ann-file", "annotation file")
    _require_file(predictions, "--predictions", "results file")
    if save_vis and img_dir is None:
        raise PoseCliError("--save-vis with --predictions needs --img-dir (the images to draw on)")
    assert ann_file is not None
    allow = bool(overrides.get("data.allow_outside_img_dir", False))
    metrics = score_results_file(
        predictions, ann_file, dataset, extra=True, per_keypoint_ap=per_keypoint, allow_outside_img_dir=allow
    )
    info: dict[str, Any] = {
        "mode": "predictions",
        "predictions": str(predictions),
        "predictions_sha256": sha256_of(predictions),
        "ann_file": str(ann_file),
        "dataset": dataset or "inferred",
        "posecli_version": __version__,
    }
    _print_metrics(metrics, per_keypoint, f"{predictions} scored against {ann_file}")
    if output_dir is not None:
        written = _write_outputs(output_dir, metrics, None, info)
        if save_vis:
            gt_data = json.loads(ann_file.read_text(encoding="utf-8"))
            raw = json.loads(predictions.read_text(encoding="utf-8"))
            meta = resolve_meta(dataset, ann_file) if dataset is not None else infer_meta(raw, gt_data, ann_file)
            results = load_results(predictions, meta)
            assert img_dir is not None
            kpt_thr = TestSettings().vis_thr  # the results carry no settings: the default threshold
            written += save_visualisations(
                output_dir / VIS_DIR, results, gt_data, Path(img_dir), meta, save_vis, kpt_thr, vis_gt, allow
            )
        _print_written(written)
    return {**metrics, "eval_info": info}


def _print_written(paths: list[Path]) -> None:
    console = _console()
    for path in paths:
        console.print(Text(f"wrote {path}"))


# -------------------------------------------------------------------------------------------- checkpoint path
def _settings_for(
    checkpoint: Any, ckpt_path: Path, preset: str | None, overrides: dict[str, Any]
) -> tuple[Settings, str, bool]:
    """Settings from --preset, else from a posecli checkpoint's meta.settings, with the flags applied.

    Returns (settings, where they come from, whether they come from the checkpoint).
    """
    if preset is not None:
        data, path = load_preset_dict(preset)
        data, source, from_ckpt = copy.deepcopy(data), str(path), False
    else:
        recorded = (checkpoint.meta or {}).get("settings")
        if checkpoint.format != "posecli" or not isinstance(recorded, dict):
            raise PoseCliError(
                f"a {checkpoint.title} checkpoint does not record the model's settings: pass --preset to describe "
                "it (e.g. --preset hrnet_w48_coco_384x288_dark; `posecli presets list` shows them)",
                ckpt_path,
            )
        data, source, from_ckpt = copy.deepcopy(recorded), f"{ckpt_path} (meta.settings)", True
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return validate_settings(data, source), source, from_ckpt


def _meta_for(dataset: str | None, checkpoint: Any, settings: Settings, from_ckpt: bool, ann_file: Path) -> DatasetMeta:
    if dataset is not None:
        return resolve_meta(dataset, ann_file)
    recorded = checkpoint.dataset_meta()
    if recorded is not None and (from_ckpt or settings.dataset is None):
        return recorded
    return resolve_meta(settings.dataset, ann_file)


def _trained_sigma(checkpoint: Any, settings: Settings, from_ckpt: bool) -> tuple[float | None, str]:
    recorded = (checkpoint.meta or {}).get("settings") if checkpoint.format == "posecli" else None
    if isinstance(recorded, dict):
        sigma = (recorded.get("data") or {}).get("sigma")
        if isinstance(sigma, (int, float)):
            return float(sigma), "recorded in the checkpoint"
    if not from_ckpt:
        return float(settings.data.sigma), "data.sigma of the preset"
    return None, "unknown"


def _load_model(settings: Settings, checkpoint: Any, meta: DatasetMeta, ckpt_path: Path) -> nn.Module:
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
    fresh = report.missing + report.reinitialized
    if fresh:
        shown = ", ".join(fresh[:3])
        why = (
            "its keypoint names do not match the dataset's"
            if report.reinitialized and not report.missing
            else "it does not fit this model"
        )
        raise PoseCliError(
            f"cannot evaluate: {len(fresh)} tensors of the model would keep random weights ({shown}...); {why}",
            ckpt_path,
        )
    return model


def _evaluate_checkpoint(
    checkpoint_src: str,
    preset: str | None,
    overrides: dict[str, Any],
    ann_file: Path | None,
    img_dir: Path | None,
    dataset: str | None,
    output_dir: Path | None,
    device: str,
    per_keypoint: bool,
    save_vis: int,
    vis_gt: bool,
    cache_dir: Path | None,
    print_config: bool,
) -> dict[str, Any]:
    if not print_config:
        _require_file(ann_file, "--ann-file", "annotation file")
        if img_dir is None:
            raise PoseCliError("--img-dir is required with --checkpoint (the images of --ann-file)")
        if not Path(img_dir).is_dir():
            raise PoseCliError("image folder not found", img_dir)
    ckpt_path = resolve_source(checkpoint_src, cache_dir)
    checkpoint = read_checkpoint(ckpt_path)
    settings, settings_source, from_ckpt = _settings_for(checkpoint, ckpt_path, preset, overrides)
    if print_config:
        sys.stdout.write(settings_to_yaml(settings))
        return {}
    assert ann_file is not None and img_dir is not None
    torch_device = resolve_device(device)
    meta = _meta_for(dataset, checkpoint, settings, from_ckpt, ann_file)
    model = _load_model(settings, checkpoint, meta, ckpt_path).to(torch_device)
    test, data = settings.test, settings.data
    data_set = TopDownCocoDataset(
        ann_file,
        img_dir,
        meta,
        data,
        train=False,
        bbox_file=data.bbox_file,
        det_bbox_thr=data.det_bbox_thr,
        with_target=False,
    )
    if len(data_set) == 0:
        raise PoseCliError(
            "no person boxes to evaluate (no labelled people, or no detection above the threshold)", ann_file
        )

    # settings caveats, printed before the long run; scoring caveats (e.g. defaulted sigmas) come with the table
    early = [f"dataset meta: {note}" for note in meta.notes if "sigma" not in note]
    sigma, sigma_source = _trained_sigma(checkpoint, settings, from_ckpt)
    warning = kernel_warning(test, sigma, sigma_source)
    if warning:
        early.append(warning)

    console = _console()
    for text in early:
        console.print(Text(f"warning: {text}", style="yellow"))

    with _progress(len(data_set), f"evaluating on {torch_device}") as advance:
        ev = run_evaluation(
            model,
            data_set,
            test,
            meta,
            torch_device,
            workers=settings.train.workers,
            per_keypoint_ap=per_keypoint,
            progress=advance,
        )
    metrics = dict(ev.metrics)
    scoring = list(metrics.pop("warnings", []))
    if early or scoring:
        metrics["warnings"] = early + scoring
    info = {
        "mode": "checkpoint",
        "checkpoint": str(checkpoint_src),
        "checkpoint_file": str(ckpt_path),
        "checkpoint_sha256": sha256_of(ckpt_path),
        "checkpoint_format": checkpoint.format,
        "settings_source": settings_source,
        "dataset": meta.name,
        "num_keypoints": meta.num_keypoints,
        "ann_file": str(ann_file),
        "img_dir": str(img_dir),
        "box_source": "file" if data.bbox_file else "ground truth",
        "bbox_file": data.bbox_file,
        "det_bbox_thr": data.det_bbox_thr if data.bbox_file else None,
        "image_size": list(data.image_size),
        "heatmap_size": list(data.heatmap_size),
        "flip_test": test.flip_test,
        "shift_heatmap": test.shift_heatmap,
        "post_process": test.post_process,
        "modulate_kernel": test.modulate_kernel,
        "trained_sigma": sigma,
        "vis_thr": test.vis_thr,
        "oks_thr": test.oks_thr,
        "use_nms": test.use_nms,
        "soft_nms": test.soft_nms,
        "num_boxes": ev.num_boxes,
        "num_results": len(ev.results),
        "device": str(torch_device),
        "inference_seconds": round(ev.seconds, 3),
        "posecli_version": __version__,
    }
    title = (
        f"{meta.name}: {ev.num_boxes} boxes ({info['box_source']}), flip_test={test.flip_test}, "
        f"shift_heatmap={test.shift_heatmap}, post_process={test.post_process}"
        + (f" (kernel {test.modulate_kernel})" if test.post_process == "unbiased" else "")
    )
    _print_metrics({**metrics, "warnings": scoring}, per_keypoint, title)
    if output_dir is not None:
        written = _write_outputs(output_dir, metrics, ev.results, info)
        if save_vis:
            flat = _flat_results(ev.results, meta)
            written += save_visualisations(
                output_dir / VIS_DIR,
                flat,
                data_set.coco.dataset,
                Path(img_dir),
                meta,
                save_vis,
                test.vis_thr,
                vis_gt,
                allow_outside=data.allow_outside_img_dir,
            )
        _print_written(written)
    return {**metrics, "eval_info": info}


@contextlib.contextmanager
def _progress(total: int, label: str) -> Iterator[Any]:
    """A Rich progress bar over boxes; yields ``advance(n)``."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _flat_results(results: list[dict[str, Any]], meta: DatasetMeta) -> list[dict[str, Any]]:
    """Results with one flat ``keypoints`` list (COCO-WholeBody's split fields joined) for drawing."""
    if not is_wholebody(meta):
        return results
    return [{**r, "keypoints": merge_wholebody(r)} for r in results]


# ------------------------------------------------------------------------------------------------- drawings
def save_visualisations(
    vis_dir: Path,
    results: list[dict[str, Any]],
    gt_data: dict[str, Any],
    img_dir: Path,
    meta: DatasetMeta,
    num_images: int,
    kpt_thr: float,
    with_gt: bool,
    allow_outside: bool = False,
) -> list[Path]:
    """Draw the results (flat ``keypoints``) of the first ``num_images`` images that have any into vis_dir as JPEG."""
    images = {img["id"]: img for img in gt_data.get("images", [])}
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for res in results:
        by_image.setdefault(res["image_id"], []).append(res)
    gt_by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in gt_data.get("annotations", []):
        if not ann.get("iscrowd"):
            gt_by_image.setdefault(ann["image_id"], []).append(ann)
    written: list[Path] = []
    for image_id, people in by_image.items():
        if len(written) >= num_images:
            break
        img = images.get(image_id)
        if img is None:
            continue
        name = str(img["file_name"])
        path = img_dir / name
        if (Path(name).is_absolute() or ".." in Path(name).parts) and not allow_outside:
            continue  # the dataset refuses such paths; drawings follow the same rule
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # (H, W, 3) BGR
        if image is None:
            raise PoseCliError("cannot read image for --save-vis", path)
        gt = []
        if with_gt:
            gt = [read_keypoints(ann, meta.num_keypoints, "ground truth")[0] for ann in gt_by_image.get(image_id, [])]
        preds = [np.asarray(p["keypoints"], dtype=np.float64).reshape(meta.num_keypoints, 3) for p in people]
        canvas = draw_poses(image, preds, meta, kpt_thr, ground_truth=gt, scores=[p["score"] for p in people])
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)
        out = vis_dir / f"{image_id}_{stem}.jpg"
        write_jpeg(out, canvas)
        written.append(out)
    return written
