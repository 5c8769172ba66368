"""Heatmap codec: MSRA / unbiased target encoding, argmax / default / DARK decoding, flip helpers (MMPose 0.x maths).

Pure array maths, no I/O. Encoding is NumPy (it runs in data-loader workers), decoding is torch (it runs wherever
the heatmaps are, CPU or GPU). Every function is vectorised over keypoints and people; the numbers equal
MMPose 0.29's ``TopDownGenerateTarget`` (MSRA), ``keypoints_from_heatmaps``, ``transform_preds`` and
``flip_back``/``shift_heatmap``, including their rounding rules and the float32/float64 steps of MMPose's NumPy code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal, TypeVar

import cv2
import numpy as np
import torch

from posecli.transforms import _NORMALIZE_LUT, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

PostProcess = Literal["none", "default", "unbiased"]
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# DARK clamps the modulated heatmap at this value before the log (MMPose: np.maximum(..., 1e-10)).
_LOG_FLOOR = 1e-10
# A window pixel whose blurred value exceeds this is certainly not clamped after MMPose's max-rescaling (the
# rescaling factor is >= 1 up to float rounding, see _fast_log_windows), so the fast path needs no whole-map blur.
_SAFE_BLUR = 2e-10
# DARK fast path: largest bound (heatmap px, see _dark_refine) on the offset change that float32 rounding may cause
# before a keypoint is redone with MMPose's exact recipe. Peaked maps stay below it (bounds ~5e-5, actual changes
# measured at <= 1/7 of the bound); flat or noise-only maps exceed it.
_MAX_ROUNDING_PX = 5e-4
# Flat indices, in a 5x5 window, of the 13 pixels MMPose's _taylor reads (the cross and the inner 3x3).
_TAYLOR_PIXELS = np.array([2, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 22])


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

    def _msra_corners(self, mu: ArrayT) -> tuple[ArrayT, ArrayT]:
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


def gaussian_kernel_1d(kernel: int) -> np.ndarray:
    """The 1-D kernel (kernel,) float32 of cv2.GaussianBlur(ksize=(kernel, kernel), sigma=0), which MMPose's DARK uses.

    Taken from OpenCV itself so the fast path and the exact path (which calls cv2.GaussianBlur) always agree:
    sigma = 0.3 ((kernel - 1) / 2 - 1) + 0.8, except for OpenCV's fixed tables for small kernels.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"modulate kernel must be a positive odd number, got {kernel}")
    return cv2.getGaussianKernel(kernel, 0, ktype=cv2.CV_32F)[:, 0].copy()


def decode_heatmaps(
    heatmaps: torch.Tensor, post_process: PostProcess | None = "default", modulate_kernel: int = 11
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, H, W) heatmaps -> coords (B, K, 2) in heatmap pixels (float32, x, y) and maxvals (B, K) float32.

    ``post_process``: 'none' (or None) = argmax; 'default' = quarter-pixel step towards the higher neighbour;
    'unbiased' = DARK (Gaussian modulation with ``modulate_kernel``, log, Taylor step). A channel whose maximum
    is <= 0 decodes to (-1, -1). Runs on the heatmaps' device, one pass over the maps, no per-keypoint loop.
    """
    if post_process is None:
        post_process = "none"
    if post_process not in ("none", "default", "unbiased"):
        raise ValueError(f"post_process must be 'none', 'default' or 'unbiased', got {post_process!r}")
    if heatmaps.ndim != 4:
        raise ValueError(f"expected heatmaps (B, K, H, W), got shape {tuple(heatmaps.shape)}")
    if post_process == "unbiased" and (modulate_kernel < 1 or modulate_kernel % 2 == 0):
        raise ValueError(f"modulate_kernel must be a positive odd number, got {modulate_kernel}")
    b, k, h, w = heatmaps.shape
    flat = heatmaps.detach().float().reshape(b * k, h * w).contiguous()  # (M, H*W)
    windows = None
    if _on_numpy(flat) and post_process == "unbiased":  # the maps are read once: argmax and windows per chunk
        maxvals_np, idx_np, windows = _argmax_and_windows_numpy(flat.numpy(), h, w, modulate_kernel)
        maxvals, idx = torch.from_numpy(maxvals_np), torch.from_numpy(idx_np)
    elif _on_numpy(flat) and post_process == "default":
        coords_np, maxvals_np = _decode_default_numpy(flat.numpy(), h, w)
        return torch.from_numpy(coords_np).reshape(b, k, 2), torch.from_numpy(maxvals_np).reshape(b, k)
    else:
        maxvals, idx = _max_and_argmax(flat)
    px, py = idx % w, idx // w
    positive = maxvals > 0
    coords = torch.stack((px, py), dim=1).float()  # (M, 2)
    coords = torch.where(positive[:, None], coords, torch.full_like(coords, -1.0))
    if post_process == "default":
        coords = _quarter_offset(flat, coords, px, py, positive, h, w)
    elif post_process == "unbiased":
        coords = _dark_refine(flat, coords, maxvals, px, py, positive, h, w, modulate_kernel, windows)
    return coords.reshape(b, k, 2), maxvals.reshape(b, k)


def _on_numpy(t: torch.Tensor) -> bool:
    """Whether to take the NumPy route for a tensor (CPU tensors: NumPy's indexing and argmax are faster)."""
    return t.device.type == "cpu"


# Maps per chunk of the CPU decode passes: the chunk's argmax reads it from memory, the reads around the maxima
# (DARK's neighbourhoods, 'default''s neighbours) find it in cache.
_CHUNK_MAPS = 256


def _decode_default_numpy(values: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """CPU 'default' decode of (M, H*W) maps -> coords (M, 2) f32 heatmap px, maxvals (M,) f32 (as _quarter_offset)."""
    m = values.shape[0]
    idx = values.argmax(axis=1)
    flat = values.reshape(-1)
    base = np.arange(m) * (h * w)
    maxvals = flat[base + idx]
    py, px = np.divmod(idx, w)
    at = base + np.minimum(np.maximum(py, 1), h - 2) * w + np.minimum(np.maximum(px, 1), w - 2)  # inside the map
    near = flat[at[:, None] + np.array([1, -1, w, -w])]  # (M, 4): right, left, below, above
    step = np.sign(near[:, 0::2] - near[:, 1::2]) * np.float32(0.25)  # (M, 2) float32
    ok = (maxvals > 0) & (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    coords = np.stack((px, py), axis=1).astype(np.float32)
    coords = np.where(ok[:, None], coords + step, coords)
    coords[maxvals <= 0] = -1.0
    return coords, maxvals


def _argmax_and_windows_numpy(
    values: np.ndarray, h: int, w: int, kernel: int
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """CPU DARK pass over (M, H*W) maps: maxvals (M,), argmax (M,) and _blurred_windows' (blurred, negative).

    One read of the maps: per chunk of maps, the argmax, then the (k+4)^2 neighbourhood of each (clamped) max is
    copied row by row while the chunk is in cache, each row one k+4-float item of a strided view, and blurred
    horizontally at once (one GEMM), so the neighbourhoods never exist for all maps together.
    """
    m = values.shape[0]
    half = kernel // 2 + 2  # window (2) + blur radius
    size = 2 * half + 1
    lin = values.reshape(-1)
    if lin.size < size or h < 5 or w < 5:  # tiny inputs: the general route
        maxvals_t, idx_t = _max_and_argmax(torch.from_numpy(values))
        maxvals, idx = maxvals_t.numpy(), idx_t.numpy()
        pxc, pyc = np.clip(idx % w, 2, w - 3), np.clip(idx // w, 2, h - 3)
        flat = torch.from_numpy(values)
        return maxvals, idx, _blurred_windows(flat, torch.from_numpy(pxc), torch.from_numpy(pyc), h, w, kernel)
    # item i of `segments` is the `size` floats lin[i : i + size] (a strided view, nothing copied)
    segments = np.ndarray((lin.size - size + 1,), np.dtype((np.void, 4 * size)), buffer=lin, strides=(4,))
    band = _band_matrix(kernel, torch.device("cpu"))  # (P, 5)
    row_offsets = np.arange(-half, half + 1) * w  # (P,)
    col_offsets = np.arange(size)  # (P,)
    maxvals = np.empty(m, np.float32)
    idx = np.empty(m, np.int64)
    negative = np.empty(m, np.float32)
    horizontal = []  # per chunk (5(x), c*P(y)): the horizontal blur at the window's 5 columns, P rows each
    for a in range(0, m, _CHUNK_MAPS):
        e = min(a + _CHUNK_MAPS, m)
        chunk = values[a:e]
        i = chunk.argmax(axis=1)
        idx[a:e] = i
        maxvals[a:e] = chunk[np.arange(e - a), i]
        y, x = np.divmod(i, w)
        y, x0 = np.minimum(np.maximum(y, 2), h - 3), np.minimum(np.maximum(x, 2), w - 3) - half  # clamped centre
        starts = ((np.arange(a, e) * h + y) * w + x0)[:, None] + row_offsets  # (c, P) flat start of each row
        clamped = starts.clip(0, lin.size - size) if a == 0 or e == m else starts  # only the buffer's ends
        items = segments[clamped]  # (c, P) rows of P floats, copied from cache
        patch = items.view(np.float32).reshape(e - a, size, size)  # (c, P, P)
        # zero what lies outside the map, as MMPose's padding (copyto, not a product: no NaN from other maps leaks in)
        cols_out = np.flatnonzero((x0 < 0) | (x0 > w - size))
        if cols_out.size:
            outside = np.zeros((e - a, 1, size), bool)
            xs = x0[cols_out, None] + col_offsets  # (n, P)
            outside[cols_out, 0] = (xs < 0) | (xs >= w)
            np.copyto(patch, np.float32(0.0), where=outside)
        rows_out = np.flatnonzero((y < half) | (y > h - 1 - half))
        if rows_out.size:
            outside = np.zeros((e - a, size, 1), bool)
            ys = y[rows_out, None] + row_offsets // w  # (n, P)
            outside[rows_out, :, 0] = (ys < 0) | (ys >= h)
            np.copyto(patch, np.float32(0.0), where=outside)
            moved = np.flatnonzero(((clamped[rows_out] != starts[rows_out]) & (ys >= 0) & (ys < h)).any(axis=1))
            if moved.size:  # a row inside the map whose start was clamped: copy that square the general way
                sel = rows_out[moved]
                patch[sel] = _neighbourhoods_numpy(chunk[sel].reshape(-1, h, w), x0[sel] + half, y[sel], half)
        negative[a:e] = patch.reshape(e - a, -1).min(axis=1)
        horizontal.append(band.t() @ torch.from_numpy(patch.reshape(-1, size)).t())  # (5, c*P)
    np.maximum(-negative, 0.0, out=negative)
    # vertical blur of the 5 columns at once: (5(x) * M, P(y)) @ (P, 5) -> (5(x), M, 5(y))
    vertical = (torch.cat(horizontal, dim=1).view(5 * m, size) @ band).view(5, m, 5)
    return maxvals, idx, (vertical.permute(1, 2, 0).contiguous().numpy(), negative)


def _max_and_argmax(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, N) -> row max (M,) and first argmax (M,) int64, like np.argmax."""
    if _on_numpy(flat):  # NumPy's SIMD argmax is several times faster than torch.max(dim) on a CPU
        values = flat.numpy()
        idx = values.argmax(axis=1)
        return torch.from_numpy(np.take_along_axis(values, idx[:, None], axis=1)[:, 0]), torch.from_numpy(idx)
    return flat.max(dim=1)


def _quarter_offset(
    flat: torch.Tensor, coords: torch.Tensor, px: torch.Tensor, py: torch.Tensor, ok: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """MMPose 'default': +/-0.25 px along the sign of each central difference, only when 1 < px < W-1, 1 < py < H-1."""
    ok = ok & (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    pxc, pyc = px.clamp(1, w - 2), py.clamp(1, h - 2)  # clamped so the gathers stay inside the map

    def at(dy: int, dx: int) -> torch.Tensor:
        return flat.gather(1, ((pyc + dy) * w + (pxc + dx))[:, None])[:, 0]

    diff = torch.stack((at(0, 1) - at(0, -1), at(1, 0) - at(-1, 0)), dim=1)  # (M, 2) float32
    return torch.where(ok[:, None], coords + torch.sign(diff) * 0.25, coords)


def _dark_refine(
    flat: torch.Tensor,
    coords: torch.Tensor,
    maxvals: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    ok: torch.Tensor,
    h: int,
    w: int,
    kernel: int,
    windows: tuple[np.ndarray, np.ndarray] | None = None,
) -> torch.Tensor:
    """MMPose 'unbiased': Taylor step on log(modulated heatmap) at the integer max, when 1 < px < W-2, 1 < py < H-2.

    MMPose blurs every whole map (cv2.GaussianBlur on the map padded with kernel//2 zeros), multiplies it by
    orig_max / blurred_max, clamps at 1e-10, takes the float32 log and runs _taylor at the argmax. The step only
    uses differences of log values, so the rescale factor c cancels (log(b c) = log b + log c) as long as the clamp
    is inactive, and only the blur in the 5x5 window matters. The fast path therefore blurs a (k+4)^2
    neighbourhood per keypoint (on the heatmaps' device) and drops c. What it cannot reproduce is float32 rounding
    (OpenCV's summation order, the rounding of b * c and of the log); it bounds that effect on the result, and the
    few keypoints where it could exceed _MAX_ROUNDING_PX (flat or noise-only maps, clamped windows) are redone with
    MMPose's own recipe. The per-keypoint maths after the blur is small and runs in NumPy, like MMPose's.
    """
    ok = ok & (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    pxc, pyc = px.clamp(2, w - 3), py.clamp(2, h - 3)
    if windows is None:
        windows = _blurred_windows(flat, pxc, pyc, h, w, kernel)
    blurred, negative = windows  # (M, 5, 5), (M,) host arrays
    ok_np = ok.cpu().numpy()
    log_win, log_err, safe = _fast_log_windows(blurred, negative, maxvals.cpu().numpy(), kernel)
    offset, apply, inv_norm = _taylor_offset(log_win)
    with np.errstate(all="ignore"):
        # first-order bound of the offset change caused by log errors <= log_err: |H^-1| (|d grad| + |d H| |offset|)
        sensitivity = inv_norm * log_err * (math.sqrt(2.0) + 2.0 * np.hypot(offset[:, 0], offset[:, 1]))
    redo = np.flatnonzero(ok_np & ~(safe & apply & (sensitivity <= _MAX_ROUNDING_PX)))  # NaN and det == 0 too
    if redo.size:
        redo_t = torch.from_numpy(redo).to(flat.device)
        exact_win = _exact_log_windows(flat[redo_t], pxc[redo_t].cpu().numpy(), pyc[redo_t].cpu().numpy(), h, w, kernel)
        offset[redo], apply[redo], _ = _taylor_offset(exact_win)
    apply &= ok_np
    refined = (coords.cpu().numpy().astype(np.float64) + offset).astype(np.float32)  # float32 coords += f64 offset
    out = np.where(apply[:, None], refined, coords.cpu().numpy())
    return torch.from_numpy(out).to(coords.device)


def _taylor_offset(log_win: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MMPose _taylor on (M, 5, 5) float32 log windows -> offset (M, 2) f64, hessian usable (M,), |H^-1|_2 (M,).

    As in MMPose under NumPy 1.x: differences of float32 values stay float32, products with Python numbers and
    everything after (hessian, inverse) are float64. A singular hessian (det == 0) means no step.
    """

    def v(dy: int, dx: int) -> np.ndarray:
        return log_win[:, 2 + dy, 2 + dx]

    f64 = np.float64
    with np.errstate(all="ignore"):  # NaN/inf windows are sent to the exact path by the caller
        dx = 0.5 * (v(0, 1) - v(0, -1)).astype(f64)
        dy = 0.5 * (v(1, 0) - v(-1, 0)).astype(f64)
        dxx = 0.25 * (v(0, 2).astype(f64) - 2 * v(0, 0).astype(f64) + v(0, -2).astype(f64))
        dxy = 0.25 * (v(1, 1) - v(-1, 1) - v(1, -1) + v(-1, -1)).astype(f64)
        dyy = 0.25 * (v(2, 0).astype(f64) - 2 * v(0, 0).astype(f64) + v(-2, 0).astype(f64))
        det = dxx * dyy - dxy * dxy
        apply = det != 0  # NaN counts as usable, as in MMPose (NaN != 0)
        safe_det = np.where(det == 0, 1.0, det)
        offset = np.stack((-(dyy * dx - dxy * dy) / safe_det, -(dxx * dy - dxy * dx) / safe_det), axis=1)
        offset[~apply] = 0.0
        mean, radius = 0.5 * (dxx + dyy), np.sqrt((0.5 * (dxx - dyy)) ** 2 + dxy * dxy)
        inv_norm = 1.0 / np.minimum(np.abs(mean + radius), np.abs(mean - radius))  # 1 / smallest |eigenvalue|
    return offset, apply, inv_norm


def _fast_log_windows(
    blurred: np.ndarray, negative: np.ndarray, maxvals: np.ndarray, kernel: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blurred windows (M, 5, 5) -> log_win (M, 5, 5) float32, log_err (M,) and safe (M,) for the fast path.

    log_err bounds the difference of log_win from MMPose's values up to a common constant (log c); safe says every
    window value _taylor reads is positive and cannot be clamped by MMPose.
    """
    m = blurred.shape[0]
    b_used = blurred.reshape(m, 25)[:, _TAYLOR_PIXELS]  # (M, 13)
    # With orig_max > 0 every blurred value is <= orig_max (kernel >= 0, sum 1, zero padding), so MMPose's factor
    # c = orig_max / blurred_max is >= 1: a window whose values all exceed 2e-10 is never clamped at 1e-10.
    b_min = b_used.min(axis=1)
    safe = b_min > _SAFE_BLUR
    log_win = np.log(np.maximum(blurred, np.float32(_SAFE_BLUR)))
    # Rounding model, unit roundoff u: a blur sum errs by ~sqrt(k) u sum(w |h|) per pass (ours and OpenCV's, two
    # passes each), sum(w |h|) <= b + 2 max(-h, 0); MMPose also rounds b * c and its log of |log b| + log c, we
    # round our log of |log b|.
    u = 2.0**-24
    with np.errstate(all="ignore"):
        rel_blur = 1.0 + 2.0 * negative.astype(np.float64) / np.maximum(b_min, _SAFE_BLUR)
        log_c = np.log(np.maximum(maxvals.astype(np.float64) / b_used.max(axis=1), 1.0))
    log_mag = np.abs(log_win.reshape(m, 25)[:, _TAYLOR_PIXELS]).max(axis=1).astype(np.float64)
    log_err = u * (4 * math.sqrt(kernel) * rel_blur + 1 + 2 * log_mag + log_c)
    return log_win, log_err, safe


def _blurred_windows(
    flat: torch.Tensor, pxc: torch.Tensor, pyc: torch.Tensor, h: int, w: int, kernel: int
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded blur (M, 5, 5) of the 5x5 window at each max, from a (k+4)^2 neighbourhood; max(-h, 0) of it (M,).

    Computed on the heatmaps' device and returned as host arrays. Two small GEMMs with a band matrix, rows first as
    OpenCV; written band^T @ patch^T, which is several times faster than patch @ band for N = 5.
    """
    m = flat.shape[0]
    half = kernel // 2 + 2  # window (2) + blur radius
    size = 2 * half + 1
    if _on_numpy(flat):  # CPU: NumPy's fancy indexing copies the squares ~3x faster than torch.gather
        patch = torch.from_numpy(_neighbourhoods_numpy(flat.numpy().reshape(m, h, w), pxc.numpy(), pyc.numpy(), half))
    else:
        patch = _neighbourhoods_torch(flat, pxc, pyc, h, w, half)  # (M, P, P)
    band = _band_matrix(kernel, flat.device)
    rows = (band.t() @ patch.view(-1, size).t()).view(5, m, size)  # (5(x), M, P(y))
    blurred = (band.t() @ rows.permute(2, 1, 0).reshape(size, -1)).view(5, m, 5).permute(1, 0, 2)  # (M, 5, 5)
    negative = (-patch.view(m, -1).amin(dim=1)).clamp_min(0.0)
    return blurred.contiguous().cpu().numpy(), negative.cpu().numpy()  # a CPU-GPU sync point


def _neighbourhoods_torch(
    flat: torch.Tensor, pxc: torch.Tensor, pyc: torch.Tensor, h: int, w: int, half: int
) -> torch.Tensor:
    """(M, H*W) maps -> (M, P, P) squares of side P = 2 half + 1 centred at (pxc, pyc), zero outside the map."""
    m, size = flat.shape[0], 2 * half + 1
    offs = torch.arange(-half, half + 1, device=flat.device)
    ys, xs = pyc[:, None] + offs, pxc[:, None] + offs  # (M, P)
    index = (ys.clamp(0, h - 1) * w)[:, :, None] + xs.clamp(0, w - 1)[:, None, :]  # clamped, then zeroed
    patch = flat.gather(1, index.view(m, -1)).view(m, size, size)
    inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
    return torch.where(inside, patch, torch.zeros((), device=flat.device))


def _neighbourhoods_numpy(maps: np.ndarray, pxc: np.ndarray, pyc: np.ndarray, half: int) -> np.ndarray:
    """(M, H, W) maps -> (M, P, P) squares like _neighbourhoods_torch, by indexing a sliding-window view."""
    m, size = maps.shape[0], 2 * half + 1
    if maps.shape[1] < size or maps.shape[2] < size:  # tiny maps: pad with the zeros MMPose pads with anyway
        maps = np.pad(maps, ((0, 0), (0, max(0, size - maps.shape[1])), (0, max(0, size - maps.shape[2]))))
    top, left = pyc - half, pxc - half  # true corners, may lie outside the map
    y0 = np.clip(top, 0, maps.shape[1] - size)  # squares moved inside the map
    x0 = np.clip(left, 0, maps.shape[2] - size)
    windows = np.lib.stride_tricks.sliding_window_view(maps, (size, size), axis=(1, 2))
    patch = windows[np.arange(m), y0, x0]  # (M, P, P) copy of whole squares: ~3x faster than torch.gather
    # shift the moved squares back, zero-filling: true row i is moved row i - (y0 - top), valid inside [0, P)
    moved = np.flatnonzero((y0 != top) | (x0 != left))
    if moved.size:
        rows = np.arange(size)[None, :] - (y0 - top)[moved, None]  # (B, P)
        cols = np.arange(size)[None, :] - (x0 - left)[moved, None]
        valid = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
        shifted = patch[moved[:, None, None], rows.clip(0, size - 1)[:, :, None], cols.clip(0, size - 1)[:, None, :]]
        patch[moved] = np.where(valid, shifted, np.float32(0.0))
    return patch


@functools.lru_cache(maxsize=16)
def _band_matrix(kernel: int, device: torch.device) -> torch.Tensor:
    """(k+4, 5) matrix with band[j, c] = g[j - c]: the blur taps of window column c over k+4 pixels."""
    g = torch.from_numpy(gaussian_kernel_1d(kernel)).to(device)
    band = torch.zeros(kernel + 4, 5, device=device)
    for c in range(5):
        band[c : c + kernel, c] = g
    return band


def _exact_log_windows(maps: torch.Tensor, pxc: np.ndarray, pyc: np.ndarray, h: int, w: int, kernel: int) -> np.ndarray:
    """MMPose's own recipe for a few maps (F, H*W): cv2 blur, rescale, clamp, NumPy float32 log -> (F, 5, 5)."""
    n = maps.shape[0]
    r = kernel // 2
    m = maps.cpu().numpy().reshape(n, h, w)
    # One cv2 call for all maps stacked vertically, each after r zero rows: every output pixel sees exactly the
    # zeros of MMPose's per-map padding and OpenCV's per-pixel arithmetic is the same as in the per-map call.
    tall = np.zeros((r + n * (h + r), w + 2 * r), dtype=np.float32)
    tall[r:].reshape(n, h + r, w + 2 * r)[:, :h, r : r + w] = m
    blurred = cv2.GaussianBlur(tall, (kernel, kernel), 0)[r:].reshape(n, h + r, w + 2 * r)[:, :h, r : r + w]
    rows = (pyc[:, None] + np.arange(-2, 3))[:, :, None]  # (F, 5, 1)
    cols = (pxc[:, None] + np.arange(-2, 3))[:, None, :]  # (F, 1, 5)
    window = blurred[np.arange(n)[:, None, None], rows, cols]  # (F, 5, 5)
    with np.errstate(all="ignore"):  # MMPose divides by a zero blurred max without complaint
        factor = m.max(axis=(1, 2)) / blurred.max(axis=(1, 2))  # float32 / float32 -> float32, as in MMPose
        return np.log(np.maximum(window * factor[:, None, None], np.float32(_LOG_FLOOR)))


def heatmap_to_image(
    coords: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, heatmap_wh: Sequence[int]
) -> torch.Tensor:
    """Heatmap px (B, K, 2) -> image px (B, K, 2) for boxes center (B, 2), scale (B, 2) (MMPose transform_preds)."""
    center = torch.as_tensor(center, dtype=torch.float32, device=coords.device)
    scale = torch.as_tensor(scale, dtype=torch.float32, device=coords.device)
    coords = coords.float()
    box = scale * 200.0  # (B, 2) box size in image px (MMPose's pixel_std)
    # MMPose: float32 box / Python int in float64, then used as float32 against the float32 coords
    per_px = (box.double() / torch.tensor([float(heatmap_wh[0]), float(heatmap_wh[1])], device=coords.device)).float()
    return coords * per_px[:, None, :] + center[:, None, :] - box[:, None, :] * 0.5


def keypoints_from_heatmaps(
    heatmaps: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    post_process: PostProcess | None = "default",
    kernel: int = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """MMPose-shaped NumPy wrapper: (N, K, H, W) -> image preds (N, K, 2) float32, maxvals (N, K, 1) float32."""
    hm = torch.from_numpy(np.ascontiguousarray(heatmaps, dtype=np.float32))
    n, _, h, w = hm.shape
    coords, maxvals = decode_heatmaps(hm, post_process, kernel)
    center_t = torch.from_numpy(np.asarray(center, dtype=np.float32).reshape(n, 2))
    scale_t = torch.from_numpy(np.asarray(scale, dtype=np.float32).reshape(n, 2))
    preds = heatmap_to_image(coords, center_t, scale_t, (w, h))
    return preds.numpy(), maxvals[..., None].numpy()


def flip_back(heatmaps: ArrayT, flip_index: Sequence[int], shift: bool) -> ArrayT:
    """Heatmaps of mirrored images (B, K, H, W) -> original frame: mirror W, channel k <- flip_index[k], shift.

    ``shift`` moves the maps one pixel right with column 0 kept (MMPose 0.x shift_heatmap:
    out[..., 1:] = out[..., :-1]), compensating the flip's misalignment. Works on torch tensors and NumPy arrays.
    """
    index = list(flip_index)
    if heatmaps.ndim != 4 or heatmaps.shape[1] != len(index):
        raise ValueError(f"expected heatmaps (B, {len(index)}, H, W), got {tuple(heatmaps.shape)}")
    if isinstance(heatmaps, torch.Tensor):
        out = heatmaps.flip(3)[:, index]  # (B, K, H, W)
        if shift:
            out = torch.cat([out[..., :1], out[..., :-1]], dim=3)
        return out
    out_np = heatmaps[:, index, :, ::-1]
    if shift:
        out_np = np.concatenate([out_np[..., :1], out_np[..., :-1]], axis=3)
    return np.ascontiguousarray(out_np)


def flip_keypoints_xy(keypoints_xy: np.ndarray, flip_index: Sequence[int], image_width: float) -> np.ndarray:
    """Keypoints (..., K, 2) of an image -> those of its mirror (x -> width - 1 - x, left/right swapped)."""
    out = np.array(keypoints_xy, dtype=np.float64)[..., list(flip_index), :]
    out[..., 0] = image_width - 1 - out[..., 0]
    return out
