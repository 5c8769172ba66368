"""Inference over lists of person boxes: crop -> model (PyTorch or ONNX Runtime) -> flip test -> decode -> image px.

The same maths as evaluation (MMPose 0.x TopDown test path), for boxes that come from anywhere:
  center, scale = the box with its aspect ratio fixed to the input's, padded by 1.25 (TopDownGetBboxCenterScale)
  crop = warpAffine of the RGB image onto the model input (TopDownAffine), ImageNet-normalised
  heatmaps = model(crops); flip test: (heatmaps + flip_back(model(mirror crops))) / 2, one forward pass of 2B
  keypoints = decode(heatmaps) mapped back through center/scale; score = box score x mean keypoint score > vis_thr

A "model" here is anything with ``__call__(images) -> heatmaps`` and ``forward_flip_test(images, flip_index,
shift)``: posecli's TopDown, or ``posecli.onnx_export.OnnxModel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from posecli.checkpoints import DownloadProgress, read_checkpoint, resolve_source
from posecli.codec import decode_heatmaps, heatmap_to_image
from posecli.datasets.coco import BBOX_PADDING
from posecli.datasets.meta import DatasetMeta
from posecli.engine.evaluate import flip_test_heatmaps, kernel_warning
from posecli.engine.model_loading import (
    load_inference_model,
    meta_for_checkpoint,
    settings_for_checkpoint,
    trained_sigma,
)
from posecli.errors import PoseCliError
from posecli.metrics import oks_nms, rescore
from posecli.settings import Settings, TestSettings
from posecli.transforms import bbox_xywh_to_center_scale, get_affine_transform, normalize_image, warp_image


class HeatmapModel(Protocol):
    """What inference needs of a model: images (B, 3, H, W) -> heatmaps (B, K, h, w), and the flip test."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def forward_flip_test(
        self, images: torch.Tensor, flip_index: Sequence[int], shift_heatmap: bool = True
    ) -> torch.Tensor: ...


# ------------------------------------------------------------------------------------------------ loading
@dataclass
class LoadedModel:
    """A pose model ready for inference, with everything needed to use it (settings from preset/checkpoint/ONNX)."""

    model: Any  # HeatmapModel
    meta: DatasetMeta
    input_wh: tuple[int, int]  # model input (width, height)
    heatmap_wh: tuple[int, int]
    test: TestSettings  # defaults from the checkpoint / preset / ONNX metadata, flags applied
    kind: str  # "pytorch" | "onnx"
    source: str  # the checkpoint or ONNX file
    device: torch.device
    warnings: list[str]
    settings: Settings | None = None  # PyTorch only: the resolved settings
    trained_sigma: float | None = None


def load_pytorch_model(
    checkpoint_src: str,
    preset: str | None,
    overrides: dict[str, Any],
    device: torch.device,
    cache_dir: Path | None = None,
    progress: DownloadProgress | None = None,
    dataset: str | None = None,
) -> LoadedModel:
    """A checkpoint (path or URL) as a ready model: settings from --preset or the checkpoint's own, flags applied.

    ``dataset`` (--dataset NAME|META_FILE) replaces the keypoint set (names, flip pairs) the model is read with.
    """
    ckpt_path = resolve_source(checkpoint_src, cache_dir, progress=progress)
    checkpoint = read_checkpoint(ckpt_path)
    settings, _, from_ckpt = settings_for_checkpoint(checkpoint, ckpt_path, preset, overrides)
    meta = meta_for_checkpoint(dataset, checkpoint, settings, from_ckpt, None)
    model = load_inference_model(settings, checkpoint, meta, ckpt_path).to(device).eval()
    sigma, sigma_source = trained_sigma(checkpoint, settings, from_ckpt)
    warning = kernel_warning(settings.test, sigma, sigma_source)
    return LoadedModel(
        model=model,
        meta=meta,
        input_wh=(int(settings.data.image_size[0]), int(settings.data.image_size[1])),
        heatmap_wh=(int(settings.data.heatmap_size[0]), int(settings.data.heatmap_size[1])),
        test=settings.test,
        kind="pytorch",
        source=str(ckpt_path),
        device=device,
        warnings=[f"dataset meta: {n}" for n in meta.notes if "sigma" not in n] + ([warning] if warning else []),
        settings=settings,
        trained_sigma=sigma,
    )


# ------------------------------------------------------------------------------------------------ crops
@dataclass
class Crops:
    """Model inputs for N boxes of one image, and the geometry to map heatmaps back."""

    images: np.ndarray  # (N, 3, H, W) f32 RGB, ImageNet-normalised
    center: np.ndarray  # (N, 2) f32 image px
    scale: np.ndarray  # (N, 2) f32 box size / 200 (aspect-fixed, padded)

    def __len__(self) -> int:
        return len(self.center)


def crop_boxes(image_rgb: np.ndarray, bboxes: np.ndarray, input_wh: Sequence[int]) -> Crops:
    """Warp each box (N, 4) x, y, w, h (float64, as given) of an RGB image (H, W, 3) onto the model input."""
    w_in, h_in = int(input_wh[0]), int(input_wh[1])
    n = len(bboxes)
    images = np.zeros((n, 3, h_in, w_in), dtype=np.float32)
    centers = np.zeros((n, 2), dtype=np.float32)
    scales = np.zeros((n, 2), dtype=np.float32)
    for i, bbox in enumerate(bboxes):
        center, scale = bbox_xywh_to_center_scale(bbox, w_in / h_in, BBOX_PADDING)
        matrix = get_affine_transform(center, scale, 0.0, (w_in, h_in))
        images[i] = normalize_image(warp_image(image_rgb, matrix, (w_in, h_in)))
        centers[i], scales[i] = center, scale
    return Crops(images, centers, scales)


def concat_crops(parts: Sequence[Crops], input_wh: Sequence[int]) -> Crops:
    """Join the crops of several images (in order)."""
    if not parts:
        w_in, h_in = int(input_wh[0]), int(input_wh[1])
        return Crops(
            np.zeros((0, 3, h_in, w_in), np.float32), np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        )
    return Crops(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.center for p in parts]),
        np.concatenate([p.scale for p in parts]),
    )


# ------------------------------------------------------------------------------------------------ inference
def infer_keypoints(
    model: HeatmapModel,
    crops: Crops,
    test: TestSettings,
    flip_index: Sequence[int],
    device: torch.device,
) -> np.ndarray:
    """Keypoints (N, K, 3) f32: x, y in image px and the heatmap maximum, in batches of ``test.batch_size``.

    With ``test.flip_test`` each batch and its mirror go through one forward pass of 2B; decoding and the way back
    to image pixels are evaluate's (``decode_heatmaps``, ``heatmap_to_image``).
    """
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(crops), test.batch_size):
            stop = start + test.batch_size
            images = torch.from_numpy(crops.images[start:stop]).to(device, non_blocking=True)  # (B, 3, H, W)
            if test.flip_test:
                heatmaps = flip_test_heatmaps(model, images, flip_index, test.shift_heatmap)  # (B, K, h, w)
            else:
                heatmaps = model(images)
            heatmaps = heatmaps.float()
            heatmap_wh = (int(heatmaps.shape[3]), int(heatmaps.shape[2]))
            coords, maxvals = decode_heatmaps(heatmaps, test.post_process, test.modulate_kernel)  # (B,K,2) (B,K)
            center = torch.from_numpy(crops.center[start:stop]).to(heatmaps.device)
            scale = torch.from_numpy(crops.scale[start:stop]).to(heatmaps.device)
            xy = heatmap_to_image(coords, center, scale, heatmap_wh)  # (B, K, 2) image px
            out.append(torch.cat([xy, maxvals[..., None]], dim=2))
    if not out:
        return np.zeros((0, len(flip_index), 3), np.float32)
    return torch.cat([o.cpu() for o in out]).numpy().astype(np.float32)  # CPU-GPU sync point


@dataclass
class Person:
    """One box's prediction in image pixels."""

    bbox: list[float]  # x, y, w, h as given
    bbox_score: float
    keypoints: np.ndarray  # (K, 3) f32 x, y, score
    score: float  # bbox_score x mean keypoint score above vis_thr (MMPose's rescoring)
    area: float  # prod(scale * 200), what OKS NMS uses
    category_id: Any = 1
    image_id: Any = None


def people_from_keypoints(
    keypoints: np.ndarray,
    bboxes: Sequence[Sequence[float]],
    bbox_scores: Sequence[float],
    scale: np.ndarray,
    vis_thr: float,
) -> list[Person]:
    """Rescore (box score x mean keypoint score above vis_thr) and wrap the N predictions of one image."""
    raw = [{"keypoints": keypoints[i], "score": bbox_scores[i]} for i in range(len(bboxes))]
    rescored = rescore(raw, vis_thr)
    areas = np.prod(scale.astype(np.float32) * np.float32(200.0), axis=1) if len(bboxes) else np.zeros(0)
    return [
        Person(
            bbox=[float(v) for v in bboxes[i][:4]],
            bbox_score=float(bbox_scores[i]),
            keypoints=keypoints[i],
            score=float(rescored[i]["score"]),
            area=float(areas[i]),
        )
        for i in range(len(bboxes))
    ]


def oks_nms_people(people: list[Person], oks_thr: float, sigmas: Sequence[float]) -> list[Person]:
    """Greedy OKS NMS (MMPose 0.x) over one image's people; the kept ones in their original order."""
    if len(people) < 2:
        return people
    keep = oks_nms(
        [{"keypoints": p.keypoints, "score": p.score, "area": p.area} for p in people], oks_thr, np.asarray(sigmas)
    )
    return [people[i] for i in sorted(keep)]


def load_onnx_model(path: Path, test_overrides: dict[str, Any], device: torch.device) -> LoadedModel:
    """An ONNX file made by `posecli export` as a ready model: settings from its metadata, test flags applied."""
    from pydantic import ValidationError

    from posecli.onnx_export import OnnxModel
    from posecli.settings import format_validation_error

    model = OnnxModel(path, device)
    fields = set(TestSettings.model_fields)
    test_data = {k: v for k, v in model.test_defaults.items() if k in fields}
    for key, value in test_overrides.items():
        if not key.startswith("test."):
            raise PoseCliError(f"{key} cannot be changed for an ONNX model (it is fixed in the file)", path)
        test_data[key[len("test.") :]] = value
    try:
        test = TestSettings.model_validate(test_data)
    except ValidationError as exc:
        raise PoseCliError(format_validation_error(exc, f"{path} (test settings)")) from None
    sigma = model.info.get("trained_sigma")
    sigma = float(sigma) if isinstance(sigma, (int, float)) else None
    warning = kernel_warning(test, sigma, "recorded in the ONNX file")
    return LoadedModel(
        model=model,
        meta=model.meta,
        input_wh=model.input_wh,
        heatmap_wh=model.heatmap_wh,
        test=test,
        kind="onnx",
        source=str(path),
        device=device,
        warnings=[warning] if warning else [],
        trained_sigma=sigma,
    )
