"""Heatmap targets (MSRA / unbiased, MMPose 0.x TopDownGenerateTarget) and the device-side batch preparation.

``HeatmapCodec.encode`` / ``encode_batch`` are NumPy (MMPose's bits, used where no device is involved);
``encode_torch`` makes a batch's targets wherever the batch is (the training step, on the device); and
``normalize_images`` turns uint8 RGB crops into ImageNet-normalised float32 on their device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TypeVar

import cv2
import numpy as np
import torch

from posecli.codec.decode import PostProcess, decode_heatmaps
from posecli.transforms import _NORMALIZE_LUT, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

_ArrayT = TypeVar("_ArrayT", np.ndarray, torch.Tensor)


class HeatmapCodec:
    """Gaussian heatmap targets for keypoints in model-input pixels (MMPose 0.x TopDownGenerateTarget, MSRA)."""

    def __init__(
        self,
        input_wh: Sequence[int],
        heatmap_wh: Sequence[int],
        sigma: float,
        unbiased_encoding: bool = False,
        joint_weights: Sequence[float] | None = None,
    ) -> None:
        """Set the geometry; ``joint_weights`` (K,) multiplies target weights (MMPose use_different_joint_weights)."""
        if len(input_wh) != 2 or len(heatmap_wh) != 2:
            raise ValueError(f"input_wh and heatmap_wh are (width, height) pairs, got {input_wh}, {heatmap_wh}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.input_wh = (int(input_wh[0]), int(input_wh[1]))
        self.heatmap_wh = (int(heatmap_wh[0]), int(heatmap_wh[1]))
        self.sigma = sigma
        self.unbiased_encoding = bool(unbiased_encoding)
        self.joint_weights = None if joint_weights is None else np.asarray(joint_weights, dtype=np.float32)
        # MMPose: image_size (int array) / [W, H] -> float64 stride
        self.feat_stride = np.asarray(self.input_wh, dtype=np.float64) / np.asarray(self.heatmap_wh, np.float64)

    def __repr__(self) -> str:
        weights = None if self.joint_weights is None else self.joint_weights.tolist()
        return (
            f"HeatmapCodec(input_wh={self.input_wh}, heatmap_wh={self.heatmap_wh}, sigma={self.sigma}, "
            f"unbiased_encoding={self.unbiased_encoding}, joint_weights={weights})"
        )

    def encode(self, keypoints_xy: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, 2) input-image x, y and (K,) visibility -> heatmaps (K, H, W) float32 and target weights (K,) float32.

        ``visible`` is MMPose's joints_3d_visible[:, 0]: 0 or 1 (COCO's 2 is clipped to 1 as MMPose's dataset
        does). A keypoint gets weight 0 when its Gaussian lies entirely outside the heatmap; a heatmap is drawn
        only where the weight is > 0.5.
        """
        keypoints_xy = np.asarray(keypoints_xy)
        visible = np.asarray(visible)
        if keypoints_xy.ndim != 2 or keypoints_xy.shape[1] != 2 or visible.shape != keypoints_xy.shape[:1]:
            raise ValueError(
                f"expected keypoints_xy (K, 2) and visible (K,), got {keypoints_xy.shape}, {visible.shape}"
            )
        heatmaps, weights = self.encode_batch(keypoints_xy[None], visible[None])
        return heatmaps[0], weights[0]

    def encode_batch(self, keypoints_xy: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, K, 2) keypoints and (N, K) visibility -> heatmaps (N, K, H, W) float32 and weights (N, K) float32."""
        keypoints_xy = np.asarray(keypoints_xy)
        visible = np.asarray(visible)
        if keypoints_xy.ndim != 3 or keypoints_xy.shape[2] != 2 or visible.shape != keypoints_xy.shape[:2]:
            raise ValueError(
                f"expected keypoints_xy (N, K, 2) and visible (N, K), got {keypoints_xy.shape}, {visible.shape}"
            )
        n, k = visible.shape
        if self.joint_weights is not None and self.joint_weights.shape != (k,):
            raise ValueError(f"joint_weights has {self.joint_weights.shape[0]} values for {k} keypoints")
        w, h = self.heatmap_wh
        # MMPose keeps joints in float32 arrays; the division by the float64 stride happens in float64.
        mu = keypoints_xy.astype(np.float32).reshape(-1, 2).astype(np.float64) / self.feat_stride  # (M, 2)
        weights = np.minimum(visible.astype(np.float32).reshape(-1), np.float32(1.0))  # (M,)
        encode = self._encode_unbiased if self.unbiased_encoding else self._encode_msra
        heatmaps = encode(mu, weights)  # (M, H, W); zeroes the weights of keypoints off the heatmap
        weights = weights.reshape(n, k)
        if self.joint_weights is not None:
            weights = weights * self.joint_weights[None, :]
        return heatmaps.reshape(n, k, h, w), weights

    def _encode_msra(self, mu: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Gaussian patch of side 6*sigma+1 pasted at the rounded centre; updates ``weights`` in place."""
        w, h = self.heatmap_wh
        ul, br = self._msra_corners(mu)
        weights[(ul[:, 0] >= w) | (ul[:, 1] >= h) | (br[:, 0] < 0) | (br[:, 1] < 0)] = 0
        patch = self._msra_patch()  # (P, P): every keypoint's patch is the same
        out = np.zeros((mu.shape[0], h, w), dtype=np.float32)
        keep = np.flatnonzero(weights > 0.5)
        # MMPose's slices: heatmap [max(0, ul), min(br, size)) <- patch [max(0, -ul), min(br, size) - ul)
        x0, y0 = np.maximum(ul[keep], 0).astype(np.int64).T
        x1 = np.minimum(br[keep, 0], w).astype(np.int64)
        y1 = np.minimum(br[keep, 1], h).astype(np.int64)
        gx0, gy0 = (x0 - ul[keep, 0]).astype(np.int64), (y0 - ul[keep, 1]).astype(np.int64)
        for m, a, b, c, d, e, f in zip(  # one small copy per drawn keypoint, no full-map temporaries
            keep.tolist(), y0.tolist(), y1.tolist(), x0.tolist(), x1.tolist(), gy0.tolist(), gx0.tolist(), strict=True
        ):
            out[m, a:b, c:d] = patch[e : e + b - a, f : f + d - c]
        return out

    def _msra_corners(self, mu: _ArrayT) -> tuple[_ArrayT, _ArrayT]:
        """MSRA patch corners ul, br (M, 2) from float64 centres: int(int(mu + .5) -/+ tmp_size (+ 1)), truncating."""
        tmp_size = self.sigma * 3
        trunc = torch.trunc if isinstance(mu, torch.Tensor) else np.trunc
        centre = trunc(mu + 0.5)  # Python int(x + 0.5): truncation towards zero, also for negative x
        return trunc(centre - tmp_size), trunc(centre + tmp_size + 1)

    @functools.cache  # noqa: B019 - one small array per codec, which lives as long as the program
    def _msra_patch(self) -> np.ndarray:
        """MMPose's (P, P) float32 Gaussian patch, P = len(arange(0, 6 sigma + 1)), peak 1 at (size // 2, size // 2)."""
        size = 2 * self.sigma * 3 + 1
        x = np.arange(0, size, 1, np.float32)
        half = np.float32(size // 2)
        return np.exp(-(np.square(x[None, :] - half) + np.square(x[:, None] - half)) / np.float32(2 * self.sigma**2))

    def _encode_unbiased(self, mu: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Continuous Gaussian at mu over the whole map (DARK); in-bounds test on unrounded corners."""
        w, h = self.heatmap_wh
        tmp_size = self.sigma * 3
        ul = mu - tmp_size
        br = mu + tmp_size + 1
        weights[(ul[:, 0] >= w) | (ul[:, 1] >= h) | (br[:, 0] < 0) | (br[:, 1] < 0)] = 0
        mu32 = mu.astype(np.float32)  # MMPose subtracts the float64 mu from a float32 grid -> float32 maths
        dx2 = np.square(np.arange(w, dtype=np.float32)[None, :] - mu32[:, :1])  # (M, W)
        dy2 = np.square(np.arange(h, dtype=np.float32)[None, :] - mu32[:, 1:])  # (M, H)
        dy2[weights <= 0.5] = np.inf  # exp(-inf) = 0: maps of dropped keypoints come out zero
        # exp(-(dy2 + dx2) / (2 sigma^2)) in one buffer; s / -c is -s / c exactly (IEEE division is sign-symmetric)
        out = np.add(dy2[:, :, None], dx2[:, None, :])  # (M, H, W)
        np.divide(out, np.float32(-2 * self.sigma**2), out=out)
        return np.exp(out, out=out)

    # ------------------------------------------------------------------------------------ device (torch) targets
    def encode_torch(self, keypoints_xy: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, 2) input px and (B, K) visibility -> targets (B, K, h, w) f32 and weights (B, K) f32, same device.

        Equal to :meth:`encode_batch` (MMPose's targets) up to the last bit of ``exp``; runs wherever the tensors are
        (the training step calls it on the batch after the transfer), vectorised over people and keypoints.
        """
        if (
            keypoints_xy.ndim != 3
            or keypoints_xy.shape[2] != 2
            or tuple(visible.shape) != tuple(keypoints_xy.shape[:2])
        ):
            raise ValueError(
                f"expected keypoints_xy (B, K, 2) and visible (B, K), got {tuple(keypoints_xy.shape)}, "
                f"{tuple(visible.shape)}"
            )
        n, k = visible.shape
        if self.joint_weights is not None and self.joint_weights.shape != (k,):
            raise ValueError(f"joint_weights has {self.joint_weights.shape[0]} values for {k} keypoints")
        device = keypoints_xy.device
        if _on_numpy(keypoints_xy):  # CPU: the NumPy encoder (MMPose's bits, ~8x faster than torch's full-map maths)
            targets, weights = self.encode_batch(keypoints_xy.detach().numpy(), visible.detach().numpy())
            return torch.from_numpy(targets), torch.from_numpy(weights)
        w, h = self.heatmap_wh
        # Per-keypoint geometry in float64 like MMPose (M = B*K numbers; MPS has no float64: done on the CPU there).
        geo = device if device.type != "mps" else torch.device("cpu")
        stride = _device_constant(tuple(self.feat_stride.tolist()), torch.float64, geo)
        mu = keypoints_xy.reshape(-1, 2).to(geo, torch.float32).double() / stride  # (M, 2)
        weights = visible.reshape(-1).to(geo, torch.float32).clamp_max(1.0)  # (M,)
        if self.unbiased_encoding:
            ul, br = mu - self.sigma * 3, mu + self.sigma * 3 + 1
        else:
            ul, br = self._msra_corners(mu)
        off = (ul[:, 0] >= w) | (ul[:, 1] >= h) | (br[:, 0] < 0) | (br[:, 1] < 0)
        weights = torch.where(off, torch.zeros((), device=geo), weights)
        gx = torch.arange(w, dtype=torch.float32, device=geo)
        gy = torch.arange(h, dtype=torch.float32, device=geo)
        if self.unbiased_encoding:
            mu32 = mu.float()  # MMPose: float32 grid minus the float64 mu -> float32 maths
            dx2, dy2 = (gx[None, :] - mu32[:, :1]).square(), (gy[None, :] - mu32[:, 1:]).square()
        else:
            # heatmap pixel x holds patch column j = x - ul_x when ul_x <= x < br_x and j < len(patch)
            half = float(np.float32((2 * self.sigma * 3 + 1) // 2))
            patch_len = math.ceil(2 * self.sigma * 3 + 1)
            jx, jy = gx[None, :] - ul[:, :1].float(), gy[None, :] - ul[:, 1:].float()  # (M, W), (M, H) integers
            dx2, dy2 = (jx - half).square(), (jy - half).square()
            inf = torch.full((), math.inf, device=geo)
            dx2 = torch.where((jx >= 0) & (jx < patch_len) & (gx[None, :] < br[:, :1]), dx2, inf)
            dy2 = torch.where((jy >= 0) & (jy < patch_len) & (gy[None, :] < br[:, 1:]), dy2, inf)
        dy2 = torch.where((weights > 0.5)[:, None], dy2, torch.full((), math.inf, device=geo))  # exp(-inf) = 0
        dx2, dy2 = dx2.to(device), dy2.to(device)
        targets = dy2[:, :, None] + dx2[:, None, :]  # (M, H, W): the only full-size tensor, updated in place
        # a device tensor, not a Python number: CUDA turns division by a host scalar into a multiplication
        targets.div_(_device_constant((-2.0 * self.sigma**2,), torch.float32, device)).exp_()
        weights = weights.to(device).reshape(n, k)
        if self.joint_weights is not None:
            weights = weights * self._joint_weights_on(device)
        return targets.reshape(n, k, h, w), weights

    def _joint_weights_on(self, device: torch.device) -> torch.Tensor:
        """The (K,) joint weights as a float32 tensor on ``device`` (cached per device)."""
        cache = self.__dict__.setdefault("_joint_weight_tensors", {})
        if device not in cache:
            cache[device] = torch.from_numpy(self.joint_weights).to(device)
        return cache[device]

    def decode(
        self, heatmaps: torch.Tensor, post_process: PostProcess | None = "default", modulate_kernel: int = 11
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :func:`decode_heatmaps`: (B, K, H, W) -> coords (B, K, 2) heatmap px, maxvals (B, K)."""
        return decode_heatmaps(heatmaps, post_process, modulate_kernel)


@functools.lru_cache(maxsize=64)
def _device_constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor on ``device``, made once: no host-to-device copy (and CUDA sync) per training step."""
    return torch.tensor(values, dtype=dtype, device=device).reshape(-1 if len(values) > 1 else ())


def normalize_images(images: torch.Tensor, channels_first: bool = False, channels_last: bool = False) -> torch.Tensor:
    """uint8 RGB crops (B, H, W, 3), or (B, 3, H, W) if ``channels_first`` -> float32 (B, 3, H, W) ImageNet-normalised.

    Runs on the images' device; the values equal :func:`posecli.transforms.normalize_image` bit for bit
    ((v / 255 - mean) / std in float32; divisions by device tensors, as CUDA divides by a host scalar through its
    reciprocal). ``channels_last`` returns the torch.channels_last memory format (free from (B, H, W, 3) input).
    """
    if images.ndim != 4 or images.shape[1 if channels_first else 3] != 3:
        want = "(B, 3, H, W)" if channels_first else "(B, H, W, 3)"
        raise ValueError(f"expected uint8 images {want}, got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    device = images.device
    if _on_numpy(images) and not channels_first:  # CPU: OpenCV's table lookup, several times faster
        b, h, w, _ = images.shape
        table = cv2.LUT(images.reshape(b * h, w, 3).contiguous().numpy(), _NORMALIZE_LUT)  # (B*H, W, 3) f32
        out = torch.from_numpy(table).view(b, h, w, 3).permute(0, 3, 1, 2)
        return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    shape = (3, 1, 1) if channels_first else (3,)
    mean = _device_constant(tuple(IMAGENET_MEAN_RGB.tolist()), torch.float32, device).view(shape)
    std = _device_constant(tuple(IMAGENET_STD_RGB.tolist()), torch.float32, device).view(shape)
    out = images.float().div_(_device_constant((255.0,), torch.float32, device)).sub_(mean).div_(std)
    if not channels_first:
        out = out.permute(0, 3, 1, 2)  # (B, 3, H, W) view with channels_last strides
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return out.contiguous(memory_format=fmt)


def _on_numpy(t: torch.Tensor) -> bool:
    """Whether to take the NumPy route for a tensor (CPU tensors: NumPy's encoder and OpenCV's LUT are faster)."""
    return t.device.type == "cpu"
