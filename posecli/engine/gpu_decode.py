"""``finetune --gpu-decode``: training crops made on the device from the encoded files (CUDA).

The data loader workers then only read each file's bytes and draw MMPose's augmentations: the item holds the
encoded file, the (2, 3) float64 affine matrix ``get_affine_transform`` gives and whether the image is mirrored
(keypoints are transformed in the worker as on the CPU path). Per batch, on the device: JPEGs are decoded by nvjpeg
(``torchvision.io.decode_jpeg(..., device="cuda")``, one batched call; RGB); other formats, JPEGs with an EXIF
orientation and any file nvjpeg refuses are decoded on the CPU (``torchvision.io.decode_image``) and moved. The
warp is ``grid_sample`` at the very points ``cv2.warpAffine`` samples (bilinear, black border): the matrix is
inverted as OpenCV does, each destination pixel's source point is rounded to OpenCV's 1/32-pixel grid, the
mirror is folded into those points (x -> width - 1 - x), and the float64 result is rounded half up, so a crop
equals the CPU path's (``transforms.warp_image`` on the decoded image) bit for bit (tests/test_gpu_decode.py).
What may differ is the decoding: nvjpeg's JPEG pixels against libjpeg-turbo's (OpenCV), by a grey level or so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from posecli.errors import PoseCliError

# cv2.warpAffine's fixed point: source points in 1/1024 px (AB_BITS = 10), rounded to 1/32 px (INTER_BITS = 5)
_AB_SCALE = 1024.0
_TAB = 32.0
_HALF_UP = 0.5 + 2.0**-12  # bilinear sums are multiples of 1/1024: this rounds ties up, as OpenCV's fixed point


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 2, 3) float64 forward matrices -> their inverses, computed as cv2.warpAffine does (0 if singular)."""
    m = matrix.to(torch.float64)
    det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    d = torch.where(det != 0, 1.0 / torch.where(det != 0, det, 1.0), 0.0)
    a11, a22 = m[..., 1, 1] * d, m[..., 0, 0] * d
    a12, a21 = -m[..., 0, 1] * d, -m[..., 1, 0] * d
    b1 = -a11 * m[..., 0, 2] - a12 * m[..., 1, 2]
    b2 = -a21 * m[..., 0, 2] - a22 * m[..., 1, 2]
    return torch.stack([torch.stack([a11, a12, b1], -1), torch.stack([a21, a22, b2], -1)], -2)


def cv2_source_points(inverse: torch.Tensor, output_wh: Sequence[int]) -> torch.Tensor:
    """Inverse matrices (B, 2, 3) f64 -> (B, H, W, 2) f64 source x, y that cv2.warpAffine samples per output pixel.

    OpenCV: X = (round((M01 y + M02) 1024) + 16 + round(M00 x 1024)) >> 5, in 1/32 px (same for Y with row 1).
    """
    w, h = int(output_wh[0]), int(output_wh[1])
    inv = inverse.to(torch.float64)
    xs = torch.arange(w, dtype=torch.float64, device=inv.device)
    ys = torch.arange(h, dtype=torch.float64, device=inv.device)
    rows = torch.round((inv[:, :, 1:2] * ys + inv[:, :, 2:3]) * _AB_SCALE)  # (B, 2, H)
    cols = torch.round(inv[:, :, 0:1] * xs * _AB_SCALE)  # (B, 2, W)
    fixed = rows[:, :, :, None] + cols[:, :, None, :] + _AB_SCALE / _TAB / 2  # (B, 2, H, W) integers
    return (torch.floor(fixed / (_AB_SCALE / _TAB)) / _TAB).permute(0, 2, 3, 1)


def _source_box(matrix: np.ndarray, output_wh: Sequence[int]) -> tuple[float, float, float, float]:
    """Bounds (x0, y0, x1, y1) of the source points of an output_wh crop: the corners, unrounded (host maths)."""
    w, h = output_wh
    inv = invert_affine(torch.from_numpy(np.asarray(matrix, dtype=np.float64))).numpy()
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64)
    pts = corners @ inv.T  # (4, 2)
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def warp_crops(
    images: Sequence[torch.Tensor], matrices: torch.Tensor, flips: Sequence[bool], output_wh: Sequence[int]
) -> torch.Tensor:
    """Decoded images (3, H_i, W_i) uint8 RGB, matrices (B, 2, 3) f64 of the (mirrored when ``flips[i]``) images
    -> crops (B, H, W, 3) uint8, equal to ``cv2.warpAffine`` (bilinear, border 0) of each (mirrored) image."""
    w, h = int(output_wh[0]), int(output_wh[1])
    device = images[0].device if images else matrices.device
    host = matrices.detach().to("cpu", torch.float64)
    points = cv2_source_points(invert_affine(host.to(device)), output_wh)  # (B, H, W, 2) in each warped frame
    out = torch.empty((len(images), h, w, 3), dtype=torch.uint8, device=device)
    for i, image in enumerate(images):
        height, width = int(image.shape[1]), int(image.shape[2])
        bx0, by0, bx1, by1 = _source_box(host[i].numpy(), output_wh)
        pts = points[i]
        if flips[i]:  # the matrix is for the mirrored image: its x is width - 1 - x of the decoded one
            pts = torch.stack([(width - 1) - pts[..., 0], pts[..., 1]], -1)
            bx0, bx1 = (width - 1) - bx1, (width - 1) - bx0
        # Only the part of the image the crop reads, in float64, framed by one zero pixel (taps outside the image
        # read 0 as OpenCV's constant border; the frame also keeps the region at least 2 x 2 for the normalisation)
        x0 = min(max(0, math.floor(bx0) - 1), width)
        y0 = min(max(0, math.floor(by0) - 1), height)
        x1 = max(min(width, math.floor(bx1) + 3), x0)
        y1 = max(min(height, math.floor(by1) + 3), y0)
        region = torch.zeros((1, 3, y1 - y0 + 2, x1 - x0 + 2), dtype=torch.float64, device=device)
        region[0, :, 1:-1, 1:-1] = image[:, y0:y1, x0:x1]
        rh, rw = region.shape[2], region.shape[3]
        # align_corners=True: -1 and 1 are the centres of the edge pixels (Python scalars: no host-device copy)
        gx = (pts[..., 0] - (x0 - 1.0)) * (2.0 / (rw - 1)) - 1.0
        gy = (pts[..., 1] - (y0 - 1.0)) * (2.0 / (rh - 1)) - 1.0
        grid = torch.stack([gx, gy], -1)
        crop = F.grid_sample(region, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)
        out[i] = torch.floor(crop[0] + _HALF_UP).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8)
    return out


def _decode_cpu(data: torch.Tensor, path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 deprecates its decoders
            image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except (RuntimeError, ValueError) as exc:
        raise PoseCliError(f"cannot decode the image ({str(exc).splitlines()[0]})", path) from None
    if image.dtype != torch.uint8:  # 16-bit PNG: keep the high byte, as OpenCV's 8-bit load does
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def decode_images(
    encoded: Sequence[bytes], on_gpu: Sequence[bool], paths: Sequence[str], device: torch.device
) -> list[torch.Tensor]:
    """Encoded files -> (3, H, W) uint8 RGB on ``device``: ``on_gpu`` ones (plain JPEGs) by nvjpeg in one batched
    call, the others (and any nvjpeg refuses) on the CPU with torchvision, then moved."""
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.from_numpy(np.frombuffer(b, dtype=np.uint8).copy()) for b in encoded]
    images: list[torch.Tensor | None] = [None] * len(tensors)
    jpegs = [i for i, ok in enumerate(on_gpu) if ok and device.type == "cuda"]
    if jpegs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                decoded = decode_jpeg([tensors[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:  # one file nvjpeg cannot read fails the batch: try them one by one
                decoded = []
                for i in jpegs:
                    try:
                        decoded.append(decode_jpeg(tensors[i], mode=ImageReadMode.RGB, device=device))
                    except RuntimeError:
                        decoded.append(None)
        for i, image in zip(jpegs, decoded, strict=True):
            images[i] = image
    for i, image in enumerate(images):
        if image is None:
            images[i] = _decode_cpu(tensors[i], paths[i]).to(device, non_blocking=True)
    return images  # type: ignore[return-value]


def decode_and_warp(batch: dict[str, Any], device: torch.device, output_wh: Sequence[int]) -> torch.Tensor:
    """A collated ``--gpu-decode`` batch -> crops (B, H, W, 3) uint8 RGB on ``device``, as the CPU path's."""
    flips = [bool(f) for f in batch["flip"].tolist()]
    images = decode_images(batch["encoded"], batch["decode_on_gpu"].tolist(), batch["image_file"], device)
    return warp_crops(images, batch["matrix"], flips, output_wh)
