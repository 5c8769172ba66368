"""Heatmap decoding (argmax / 'default' / DARK), back to image pixels, and the flip-test helpers (MMPose 0.x maths).

Runs wherever the heatmaps are (CPU or GPU), vectorised over people and keypoints; the numbers equal MMPose 0.29's
``keypoints_from_heatmaps``, ``transform_preds`` and ``flip_back``/``shift_heatmap``, including their rounding
rules and the float32/float64 steps of MMPose's NumPy code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal, TypeVar

import cv2
import numpy as np
import torch

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
    copied row by row while the chunk is in cache, each row one k+4-float item of a strided view; squares that cross
    a map's border get their outside zeroed afterwards. Then two GEMMs blur all squares at their 5x5 windows.
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
    if h < size or w < size:  # maps smaller than a square (rows copied below could leave the buffer): square by square
        idx = values.argmax(axis=1)
        maxvals = values[np.arange(m), idx]
        pxc, pyc = np.clip(idx % w, 2, w - 3), np.clip(idx // w, 2, h - 3)
        patch = _neighbourhoods_numpy(values.reshape(m, h, w), pxc, pyc, half)
    else:
        # item i of `segments` is the `size` floats lin[i : i + size] (a strided view, nothing copied)
        segments = np.ndarray((lin.size - size + 1,), np.dtype((np.void, 4 * size)), buffer=lin, strides=(4,))
        offsets = np.arange(-half, half + 1) * w - half  # (P,) flat start of each row of a square, from its centre
        base = np.arange(m) * (h * w)  # flat start of each map
        idx = np.empty(m, np.int64)
        squares = np.empty((m, size), segments.dtype)  # (M, P) rows of P floats
        for a in range(0, m, _CHUNK_MAPS):
            e = min(a + _CHUNK_MAPS, m)
            i = values[a:e].argmax(axis=1)
            idx[a:e] = i
            y, x = np.divmod(i, w)
            centre = base[a:e] + np.minimum(np.maximum(y, 2), h - 3) * w + np.minimum(np.maximum(x, 2), w - 3)
            starts = centre[:, None] + offsets  # (c, P); what lies outside the map is zeroed below
            if a == 0 or e == m:  # only the buffer's ends can be overrun
                starts = starts.clip(0, lin.size - size)
            squares[a:e] = segments[starts]  # copied while the chunk is in cache
        maxvals = lin[base + idx]
        patch = squares.view(np.float32).reshape(m, size, size)
        py, px = np.divmod(idx, w)
        span = np.arange(size)
        left = np.clip(px, 2, w - 3) - half  # map column of each square's first column
        cols = np.flatnonzero((left < 0) | (left > w - size))
        if cols.size:  # columns outside the map hold the neighbouring rows' pixels: zero them, as MMPose's padding
            sub = patch[cols]
            xs = left[cols, None] + span  # (n, P)
            np.copyto(sub, np.float32(0.0), where=((xs < 0) | (xs >= w))[:, None, :])
            patch[cols] = sub
        ends = np.unique([0, m - 1])  # in the first and last maps a row start clipped at the buffer's end moved a row:
        pxc, pyc = px[ends].clip(2, w - 3), py[ends].clip(2, h - 3)  # copy those two squares the general way
        patch[ends] = _neighbourhoods_numpy(values[ends].reshape(-1, h, w), pxc, pyc, half)
        top = np.clip(py, 2, h - 3) - half  # map row of each square's first row
        ys = top[:, None] + span  # (M, P)
        rows_out = np.flatnonzero((ys < 0) | (ys >= h))  # flat (map, row) of the rows outside the map
        patch.reshape(-1, size)[rows_out] = 0.0
    negative = np.maximum(-patch.reshape(m, -1).min(axis=1), np.float32(0.0))
    band = _band_matrix(kernel, torch.device("cpu"))  # (P, 5)
    horizontal = band.t() @ torch.from_numpy(patch.reshape(-1, size)).t()  # (5(x), M*P(y))
    # vertical blur of the 5 columns at once: (5(x) * M, P(y)) @ (P, 5) -> (5(x), M, 5(y))
    vertical = (horizontal.view(5 * m, size) @ band).view(5, m, 5)
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
