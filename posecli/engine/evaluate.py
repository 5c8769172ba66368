"""Evaluation: batched inference (flip test in one 2B pass), decoding, MMPose 0.x rescoring + OKS NMS, COCO AP.
``evaluate_model`` is what the training loop calls; ``commands/evaluate.py`` calls ``run_evaluation``.

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
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from posecli.codec import decode_heatmaps, flip_back, heatmap_to_image
from posecli.datasets.meta import DatasetMeta
from posecli.datasets.wholebody import is_wholebody, split_wholebody
from posecli.engine.data import make_loader
from posecli.metrics import coco_keypoint_metrics, extra_metrics, oks_nms, rescore, soft_oks_nms
from posecli.settings import TestSettings


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


# ------------------------------------------------------------------------------------------------ flip test
def flip_test_one_pass(device: torch.device) -> bool:
    """Whether the flip test runs images and mirrors as one forward pass of 2B (else two passes of B) on ``device``.

    One pass on CUDA (a bigger batch fills the GPU better); two passes elsewhere, where measured faster.
    Measured on a CPU (``python benchmarks/flip_test.py``, batch 32, a shared 2-core machine, median of 7),
    one pass of 2B vs two of B: e2e small HRNet 192x256, 1 thread 2680 vs 2220 ms, 2 threads 1435 vs 1354 ms;
    demo model 96x128, 1 thread 298 vs 247 ms, 2 threads 175 vs 100 ms. Two passes are also MMPose 0.x's way.
    """
    return device.type == "cuda"


def flip_test_heatmaps(
    model: Any, images: torch.Tensor, flip_index: Sequence[int], shift: bool, one_pass: bool | None = None
) -> torch.Tensor:
    """MMPose's flip test: (heatmaps + flip_back(model(mirror images))) / 2, (B, K, h, w), in one pass or two.

    ``one_pass`` None: :func:`flip_test_one_pass` for the images' device. ``model`` is a ``TopDown`` or anything
    with ``__call__`` and ``forward_flip_test`` (an ONNX model).
    """
    if one_pass is None:
        one_pass = flip_test_one_pass(images.device)
    if one_pass:
        return model.forward_flip_test(images, flip_index, shift)
    heatmaps = model(images)  # (B, K, h, w)
    flipped = flip_back(model(images.flip(3)), flip_index, shift)  # MMPose 0.x's two forward passes
    return (heatmaps + flipped) * 0.5


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
                        heatmaps = flip_test_heatmaps(bare, images, flip_index, test.shift_heatmap)  # (B, K, h, w)
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


def run_evaluation(
    model: nn.Module,
    dataset: Any,
    test: TestSettings,
    meta: DatasetMeta,
    device: torch.device | str,
    *,
    workers: int | None = 0,
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
    workers: int | None = 0,
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
