"""DARK ('unbiased') decoding speed: posecli's vectorised decoder vs a per-keypoint NumPy/OpenCV loop.

    python benchmarks/decode.py [--threads 1] [--kernel 17] [--batch 32] [--keypoints 133] [--device cpu]

Prints heatmaps/s of both (one heatmap = one keypoint of one person), their ratio, the time of one
``heatmaps.max()`` pass (the memory-bound floor of any decoder), how many keypoints took the exact fallback
path, and the largest coordinate difference between the two (asserted below 1e-4 heatmap px).
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from posecli.codec import decode_heatmaps


def realistic_heatmaps(n: int, k: int, h: int, w: int, sigma: float, seed: int = 0) -> np.ndarray:
    """(N, K, H, W) float32 model-like outputs: one Gaussian per map (15% weak and wide), 10% second peaks, noise."""
    rng = np.random.default_rng(seed)
    m = n * k
    weak = rng.random(m) < 0.15
    amp = np.where(weak, rng.uniform(0.05, 0.2, m), rng.uniform(0.3, 1.0, m)).astype(np.float32)
    sig = np.where(weak, rng.uniform(1.5, 2.0, m) * sigma, np.full(m, sigma)).astype(np.float32)
    cx, cy = rng.uniform(-1, w, m).astype(np.float32), rng.uniform(-1, h, m).astype(np.float32)
    x, y = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    out = np.empty((m, h, w), dtype=np.float32)
    for s in range(0, m, 512):  # chunks keep the temporaries small
        e = slice(s, s + 512)
        gx = np.exp(-((x[None] - cx[e, None]) ** 2) / (2 * sig[e, None] ** 2))  # (c, W)
        gy = np.exp(-((y[None] - cy[e, None]) ** 2) / (2 * sig[e, None] ** 2))  # (c, H)
        out[e] = amp[e, None, None] * gy[:, :, None] * gx[:, None, :]
    second = np.flatnonzero(rng.random(m) < 0.10)
    for i in second:
        sx, sy, a2 = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.6) * amp[i]
        out[i] += a2 * np.exp(-((y[:, None] - sy) ** 2 + (x[None] - sx) ** 2) / (2 * sigma**2))
    out += rng.normal(0.0, 0.01, out.shape).astype(np.float32)
    return out.reshape(n, k, h, w)


def per_keypoint_unbiased(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """The same maths written plainly (MMPose 0.x style): loops over N and K, cv2 blur per map, Taylor per keypoint."""
    n, k, h, w = heatmaps.shape
    r = kernel // 2
    flat = heatmaps.reshape(n, k, -1)
    idx = flat.argmax(axis=2)
    maxvals = flat.max(axis=2)
    preds = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    preds[maxvals <= 0] = -1
    logs = np.empty_like(heatmaps)
    for i in range(n):
        for j in range(k):
            padded = np.zeros((h + 2 * r, w + 2 * r), dtype=np.float32)
            padded[r : r + h, r : r + w] = heatmaps[i, j]
            blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[r : r + h, r : r + w]
            blurred *= heatmaps[i, j].max() / blurred.max()
            logs[i, j] = np.log(np.maximum(blurred, np.float32(1e-10)))
    for i in range(n):
        for j in range(k):
            px, py = int(preds[i, j, 0]), int(preds[i, j, 1])
            if not (1 < px < w - 2 and 1 < py < h - 2):
                continue
            hm = logs[i, j]
            # float32 differences, float64 afterwards (MMPose's _taylor under NumPy 1.x)
            dx = 0.5 * float(hm[py, px + 1] - hm[py, px - 1])
            dy = 0.5 * float(hm[py + 1, px] - hm[py - 1, px])
            dxx = 0.25 * (float(hm[py, px + 2]) - 2 * float(hm[py, px]) + float(hm[py, px - 2]))
            dxy = 0.25 * float(hm[py + 1, px + 1] - hm[py - 1, px + 1] - hm[py + 1, px - 1] + hm[py - 1, px - 1])
            dyy = 0.25 * (float(hm[py + 2, px]) - 2 * float(hm[py, px]) + float(hm[py - 2, px]))
            if dxx * dyy - dxy**2 != 0:
                hessian = np.array([[dxx, dxy], [dxy, dyy]])
                preds[i, j] += -np.linalg.inv(hessian) @ np.array([dx, dy])
    return preds


def best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls, seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Run the comparison and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernel", type=int, default=17)
    parser.add_argument("--sigma", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--keypoints", type=int, default=133)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=72)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    heatmaps = realistic_heatmaps(args.batch, args.keypoints, args.height, args.width, args.sigma)
    maps = args.batch * args.keypoints
    tensor = torch.from_numpy(heatmaps).to(args.device)
    sync = torch.cuda.synchronize if tensor.is_cuda else (lambda: None)

    def ours() -> None:
        decode_heatmaps(tensor, "unbiased", args.kernel)
        sync()

    def floor() -> None:
        tensor.max()
        sync()

    ours()  # warm-up
    t_ours = best_time(ours, args.repeats)
    t_floor = best_time(floor, args.repeats)
    t_loop = best_time(lambda: per_keypoint_unbiased(heatmaps, args.kernel), 1)

    coords, _ = decode_heatmaps(tensor, "unbiased", args.kernel)
    reference = per_keypoint_unbiased(heatmaps, args.kernel)
    diff = float(np.abs(coords.cpu().numpy() - reference).max())

    print(f"heatmaps {tuple(heatmaps.shape)}  kernel {args.kernel}  threads {args.threads}  device {args.device}")
    print(f"posecli decode_heatmaps : {t_ours * 1e3:8.1f} ms  {maps / t_ours:10.0f} heatmaps/s")
    print(f"per-keypoint NumPy/cv2  : {t_loop * 1e3:8.1f} ms  {maps / t_loop:10.0f} heatmaps/s")
    print(f"heatmaps.max() floor    : {t_floor * 1e3:8.1f} ms")
    print(f"speed-up                : {t_loop / t_ours:8.1f}x")
    print(f"max |coord diff|        : {diff:.2e} heatmap px")
    assert diff < 1e-4, f"decoders disagree by {diff} px"


if __name__ == "__main__":
    main()
