"""Top-down geometry and train augmentations as pure functions on arrays (MMPose 0.x semantics).

Conventions: a person is framed by ``center_xy`` (2,) and ``scale_wh`` (2,), the box size in units of
``PIXEL_STD`` = 200 px after its aspect ratio was fixed to the model input's and padded. Keypoints are
``(K, 2)`` x, y image pixels with a separate ``visible`` (K,) 0/1 flag. Random choices take a
``numpy.random.Generator`` so the caller owns seeding; the draws happen in the order MMPose makes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

PIXEL_STD = 200.0  # MMPose's unit of `scale`: scale * 200 = box size in pixels
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# --------------------------------------------------------------------------------------------- boxes
def clip_bbox_xywh(bbox: Sequence[float], image_wh: Sequence[int]) -> list[float] | None:
    """A ground-truth box clipped to the image as MMPose 0.29's TopDownCocoDataset does, or None if it is empty.

    x1 = max(0, x), x2 = min(W - 1, x1 + max(0, w)) (same for y); the box is [x1, y1, x2 - x1, y2 - y1] as
    Python floats (float64): MMPose casts to float32 only when it computes center and scale.
    """
    x, y, w, h = (float(v) for v in bbox[:4])
    width, height = image_wh
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w))
    y2 = min(height - 1.0, y1 + max(0.0, h))
    if x2 <= x1 or y2 <= y1:
        return None
    return [x1, y1, x2 - x1, y2 - y1]


def fix_aspect_ratio(w: float, h: float, aspect_ratio: float) -> tuple[float, float]:
    """Grow the shorter side so that w / h equals ``aspect_ratio`` (input width / height)."""
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return w, h


def bbox_xywh_to_center_scale(
    bbox: Sequence[float], aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Box (x, y, w, h) -> center (2,) f32 and scale (2,) f32 in 200-px units, aspect-fixed and padded.

    The arithmetic runs in float64 on the box as given (MMPose's Python floats); only the results are float32,
    so a float32 box gives other centers (129.615 -> 129.61499) and other crops.
    """
    x, y, w, h = (float(v) for v in bbox[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    w, h = fix_aspect_ratio(w, h, aspect_ratio)
    scale = np.array([w, h], dtype=np.float32) / PIXEL_STD * padding
    return center, scale.astype(np.float32)


# -------------------------------------------------------------------------------------------- affine
def _rotate(point: Sequence[float], angle_rad: float) -> np.ndarray:
    sn, cs = np.sin(angle_rad), np.cos(angle_rad)
    return np.array([point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs])


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The point making a right angle at ``b``: b + (a - b) rotated by 90 degrees."""
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def get_affine_transform(
    center: Sequence[float],
    scale: Sequence[float],
    rot: float,
    output_wh: Sequence[int],
    shift: Sequence[float] = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """(2, 3) float64 matrix mapping the box (center, scale*200, rotated by ``rot`` degrees) onto output_wh.

    Built from three point pairs (center, a point half a box-width above it, and a third point at a
    right angle) with cv2.getAffineTransform on float32 points, so the matrix is the one MMPose 0.x
    computes. ``rot`` > 0 turns the image content counter-clockwise in the output. ``inv`` gives the
    output -> image matrix.
    """
    center = np.asarray(center, dtype=np.float32)
    scale_px = np.asarray(scale, dtype=np.float32) * PIXEL_STD
    shift = np.asarray(shift, dtype=np.float64)
    src_w = scale_px[0]  # the height follows from the aspect ratio the scale already has
    dst_w, dst_h = float(output_wh[0]), float(output_wh[1])
    src_dir = _rotate([0.0, src_w * -0.5], np.pi * rot / 180.0)
    dst_dir = np.array([0.0, dst_w * -0.5])

    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = center + scale_px * shift
    src[1] = center + src_dir + scale_px * shift
    src[2] = _third_point(src[0], src[1])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to points (..., 2); returns float64 (..., 2)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_image(image: np.ndarray, matrix: np.ndarray, output_wh: Sequence[int]) -> np.ndarray:
    """Warp an (H, W, C) image with a (2, 3) matrix to (out_h, out_w, C): bilinear, black border."""
    return cv2.warpAffine(image, matrix, (int(output_wh[0]), int(output_wh[1])), flags=cv2.INTER_LINEAR)


def affine_keypoints(keypoints: np.ndarray, visible: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map the visible keypoints (K, 2) through ``matrix``; invisible ones keep their values (as MMPose)."""
    out = np.array(keypoints, dtype=np.float32, copy=True)
    mask = np.asarray(visible) > 0
    out[mask] = affine_points(out[mask], matrix).astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------- flips
def flip_image(image: np.ndarray) -> np.ndarray:
    """Mirror an (H, W, C) image left-right (a new array; cv2.flip is ~50x faster than a reversed numpy copy)."""
    return cv2.flip(image, 1)


def flip_keypoints(
    keypoints: np.ndarray, visible: np.ndarray, image_width: int, flip_pairs: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror keypoints (K, 2) in an image ``image_width`` wide: swap pairs, x -> width - 1 - x.

    As in MMPose, keypoints that are not visible after the swap are set to (0, 0).
    """
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    vis = np.array(visible, dtype=np.float32, copy=True)
    for a, b in flip_pairs:
        kp[[a, b]] = kp[[b, a]]
        vis[[a, b]] = vis[[b, a]]
    kp[:, 0] = image_width - 1 - kp[:, 0]
    kp *= vis[:, None]
    return kp, vis


def flip_center(center: np.ndarray, image_width: int) -> np.ndarray:
    """The box center after mirroring the image: x -> width - x - 1."""
    out = np.array(center, dtype=np.float32, copy=True)
    out[0] = image_width - out[0] - 1
    return out


# ------------------------------------------------------------------------------------- augmentations
@dataclass(frozen=True)
class TrainAugmentation:
    """The train-time augmentation recipe (MMPose 0.x TopDownRandomShiftBboxCenter, TopDownRandomFlip,
    TopDownHalfBodyTransform, TopDownGetRandomScaleRotation), applied in that order."""

    shift_factor: float = 0.16  # center shift, in box sizes
    shift_prob: float = 0.3
    flip_prob: float = 0.5
    num_joints_half_body: int = 8  # half-body only for people with more visible joints than this
    prob_half_body: float = 0.3
    rot_factor: float = 40.0  # degrees
    scale_factor: float = 0.5
    rot_prob: float = 0.6


def random_shift_center(
    center: np.ndarray, scale: np.ndarray, shift_factor: float, prob: float, rng: np.random.Generator
) -> np.ndarray:
    """With probability ``prob`` move the center by up to ``shift_factor`` box sizes in x and y."""
    out = np.array(center, dtype=np.float32, copy=True)
    if rng.random() < prob:
        out += rng.uniform(-1.0, 1.0, 2) * shift_factor * np.asarray(scale) * PIXEL_STD
    return out


def half_body_center_scale(
    keypoints: np.ndarray,
    visible: np.ndarray,
    upper_body_ids: Sequence[int],
    aspect_ratio: float,
    prefer_upper: bool,
    padding: float = 1.5,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Center/scale of a box around the visible upper-body joints, or the other (lower) ones.

    The upper half is taken when ``prefer_upper`` and it has more than 2 visible joints, else the
    lower half (every visible joint not in ``upper_body_ids``, as MMPose splits it) if it has more
    than 2, else the upper half. None when the chosen half has fewer than 2 visible joints.
    """
    upper_set = set(int(i) for i in upper_body_ids)
    vis = np.asarray(visible) > 0
    is_upper = np.array([i in upper_set for i in range(len(vis))], dtype=bool)
    upper = np.asarray(keypoints, dtype=np.float32)[vis & is_upper]  # (n, 2)
    lower = np.asarray(keypoints, dtype=np.float32)[vis & ~is_upper]
    if prefer_upper and len(upper) > 2:
        chosen = upper
    elif len(lower) > 2:
        chosen = lower
    else:
        chosen = upper
    if len(chosen) < 2:
        return None
    center = chosen.mean(axis=0).astype(np.float32)
    w, h = chosen.max(axis=0) - chosen.min(axis=0)
    w, h = fix_aspect_ratio(float(w), float(h), aspect_ratio)
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32) * padding
    return center, scale.astype(np.float32)


def random_half_body(
    keypoints: np.ndarray,
    visible: np.ndarray,
    upper_body_ids: Sequence[int],
    aspect_ratio: float,
    num_joints_half_body: int,
    prob: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray] | None:
    """MMPose's half-body transform: new center/scale, or None to keep the person's own box.

    Applies when more than ``num_joints_half_body`` joints are visible and a uniform draw is below
    ``prob``; the upper half is preferred when a *normal* draw is below 0.5 (MMPose uses randn here,
    so the upper half is preferred about 69% of the time).
    """
    if np.sum(np.asarray(visible) > 0) <= num_joints_half_body or not rng.random() < prob:
        return None
    prefer_upper = bool(rng.standard_normal() < 0.5)
    return half_body_center_scale(keypoints, visible, upper_body_ids, aspect_ratio, prefer_upper)


def random_scale_rotation(
    scale: np.ndarray, scale_factor: float, rot_factor: float, rot_prob: float, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Scale times clip(N(1, sf), 1 - sf, 1 + sf); rotation clip(N(0, rf), -2rf, 2rf) with prob ``rot_prob`` else 0."""
    s_factor = np.clip(rng.standard_normal() * scale_factor + 1.0, 1.0 - scale_factor, 1.0 + scale_factor)
    r_factor = np.clip(rng.standard_normal() * rot_factor, -rot_factor * 2.0, rot_factor * 2.0)
    rot = float(r_factor) if rng.random() <= rot_prob and rot_prob > 0 else 0.0
    return (np.asarray(scale, dtype=np.float32) * np.float32(s_factor)).astype(np.float32), rot


# ------------------------------------------------------------------------------------- normalisation
# (v / 255 - mean) / std in float32 for every uint8 value v and channel: (1, 256, 3) for cv2.LUT
_NORMALIZE_LUT = np.ascontiguousarray(
    ((np.arange(256, dtype=np.float32)[:, None] / np.float32(255.0) - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB)[None]
)


def normalize_image(image_rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (3, H, W): /255, minus ImageNet mean, over ImageNet std (RGB order)."""
    # A table lookup gives the same float32 values as the arithmetic, about 9x faster for a 384x288 crop.
    x = cv2.LUT(np.ascontiguousarray(image_rgb, dtype=np.uint8), _NORMALIZE_LUT)  # (H, W, 3) f32
    return np.ascontiguousarray(x.transpose(2, 0, 1))
