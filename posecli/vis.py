"""Draw predicted (and ground-truth) skeletons on images, coloured by body side, for `evaluate --save-vis`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posecli.atomic import atomic_write_with
from posecli.datasets.coco import read_keypoints
from posecli.datasets.meta import DatasetMeta
from posecli.errors import PoseCliError

# BGR colours. Left/right follow the usual pose-drawing convention (left warm, right cool); the
# ground truth is drawn thinner in white/grey underneath so both stay legible where they overlap.
LEFT_BGR = (0, 140, 255)  # orange
RIGHT_BGR = (255, 144, 30)  # blue
CENTER_BGR = (60, 220, 60)  # green
GT_BGR = (255, 255, 255)
GT_OUTLINE_BGR = (40, 40, 40)
SIDES = ("left", "right", "center")

_LEFT_RE = re.compile(r"(^|[_\-\s.])(left|l)([_\-\s.]|$)|^left(?=[A-Z])", re.IGNORECASE)
_RIGHT_RE = re.compile(r"(^|[_\-\s.])(right|r)([_\-\s.]|$)|^right(?=[A-Z])", re.IGNORECASE)


def keypoint_sides(meta: DatasetMeta) -> list[str]:
    """'left', 'right' or 'center' per keypoint: from the name, else from the flip pairs (first = left)."""
    sides = ["center"] * meta.num_keypoints
    for i, name in enumerate(meta.keypoint_names):
        if _LEFT_RE.search(name):
            sides[i] = "left"
        elif _RIGHT_RE.search(name):
            sides[i] = "right"
    for a, b in meta.flip_pairs:
        # paired keypoints whose names say nothing about their side: MMPose lists pairs as (left, right)
        if sides[a] == "center" and sides[b] == "center":
            sides[a], sides[b] = "left", "right"
    return sides


def _side_colour(side: str) -> tuple[int, int, int]:
    return {"left": LEFT_BGR, "right": RIGHT_BGR}.get(side, CENTER_BGR)


def _link_colour(sides: Sequence[str], a: int, b: int) -> tuple[int, int, int]:
    """A limb takes its side when both ends agree (or one end is central), else the centre colour."""
    pair = {sides[a], sides[b]}
    if pair in ({"left"}, {"left", "center"}):
        return LEFT_BGR
    if pair in ({"right"}, {"right", "center"}):
        return RIGHT_BGR
    return CENTER_BGR


def draw_poses(
    image_bgr: np.ndarray,
    predictions: Sequence[np.ndarray],
    meta: DatasetMeta,
    kpt_thr: float = 0.2,
    ground_truth: Sequence[np.ndarray] = (),
    scores: Sequence[float] | None = None,
    min_long_side: int = 640,
) -> np.ndarray:
    """Draw people on a copy of an image (upscaled so its long side is at least ``min_long_side``).

    ``predictions``: (K, 3) arrays of x, y, score per person, drawn where score > ``kpt_thr``.
    ``ground_truth``: (K, 3) arrays of x, y, COCO visibility, drawn where visibility > 0.
    Sizes scale with the image so lines stay readable on a 640-pixel image (3 px limbs, 4 px points)
    and on larger ones; small images are enlarged first so their drawings stay legible too.
    """
    h, w = image_bgr.shape[:2]
    zoom = max(1.0, min_long_side / max(h, w))
    if zoom > 1.0:
        image_bgr = cv2.resize(image_bgr, (round(w * zoom), round(h * zoom)), interpolation=cv2.INTER_LINEAR)
        predictions = [_zoomed(p, zoom) for p in predictions]
        ground_truth = [_zoomed(g, zoom) for g in ground_truth]
    canvas = np.ascontiguousarray(image_bgr.copy())
    h, w = canvas.shape[:2]
    unit = max(h, w) / 640.0  # 1.0 on a 640-pixel image
    limb = max(1, round(3 * unit))
    radius = max(2, round(4 * unit))
    sides = keypoint_sides(meta)

    def pt(xy: np.ndarray) -> tuple[int, int]:
        return int(round(float(xy[0]))), int(round(float(xy[1])))

    for person in ground_truth:
        person = np.asarray(person, dtype=np.float64).reshape(meta.num_keypoints, 3)
        shown = person[:, 2] > 0
        for a, b in meta.skeleton:
            if shown[a] and shown[b]:
                cv2.line(canvas, pt(person[a]), pt(person[b]), GT_OUTLINE_BGR, limb + 2, cv2.LINE_AA)
                cv2.line(canvas, pt(person[a]), pt(person[b]), GT_BGR, max(1, limb - 1), cv2.LINE_AA)
        for k in np.flatnonzero(shown):
            cv2.circle(canvas, pt(person[k]), radius, GT_OUTLINE_BGR, -1, cv2.LINE_AA)
            cv2.circle(canvas, pt(person[k]), max(1, radius - 1), GT_BGR, -1, cv2.LINE_AA)

    for n, person in enumerate(predictions):
        person = np.asarray(person, dtype=np.float64).reshape(meta.num_keypoints, 3)
        shown = person[:, 2] > kpt_thr
        for a, b in meta.skeleton:
            if shown[a] and shown[b]:
                cv2.line(canvas, pt(person[a]), pt(person[b]), _link_colour(sides, a, b), limb, cv2.LINE_AA)
        for k in np.flatnonzero(shown):
            cv2.circle(canvas, pt(person[k]), radius + 1, (0, 0, 0), -1, cv2.LINE_AA)  # dark rim for contrast
            cv2.circle(canvas, pt(person[k]), radius, _side_colour(sides[k]), -1, cv2.LINE_AA)
        if scores is not None and shown.any():
            top = person[shown]
            x, y = int(top[:, 0].min()), int(top[:, 1].min()) - radius - 2
            text = f"{float(scores[n]):.2f}"
            font_scale = 0.5 * unit  # about 11 px high on a 640-pixel image
            thick = max(1, round(unit))
            cv2.putText(canvas, text, (x, max(y, 12)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thick + 2)
            cv2.putText(canvas, text, (x, max(y, 12)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thick)
    return canvas


def _zoomed(person: np.ndarray, zoom: float) -> np.ndarray:
    """Keypoints (K, 3) of an image enlarged by ``zoom`` (pixel centres stay centres: (x + 0.5) * zoom - 0.5)."""
    out = np.array(person, dtype=np.float64).reshape(-1, 3)
    out[:, :2] = (out[:, :2] + 0.5) * zoom - 0.5
    return out


def write_jpeg(path: str | Path, image_bgr: np.ndarray, quality: int = 92) -> None:
    """Encode a BGR image as JPEG and write it atomically."""
    ok, buf = cv2.imencode(".jpg", image_bgr, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise PoseCliError("cannot encode the visualisation as JPEG", path)
    atomic_write_with(path, lambda fh: fh.write(buf.tobytes()))


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
