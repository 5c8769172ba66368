"""Evaluation decode speed: posecli's decoder vs MMPose 0.29's per-keypoint recipe, and vs one pass over the maps.

    python benchmarks/decode.py [--threads 1] [--kernel 17] [--batch 32] [--keypoints 133] [--device cpu]

Decodes (B, K, H, W) model-like heatmaps to image pixels (heatmap decode + MMPose's transform_preds) with
post_process 'default' and 'unbiased' (DARK). Prints, per mode, posecli's time, the time of a baseline that
reproduces MMPose 0.29's ``keypoints_from_heatmaps`` (``mmpose_keypoints_from_heatmaps`` below: written from its
formulas, loops over people and keypoints, one cv2.GaussianBlur per map for DARK) and their ratios to one
``heatmaps.amax()`` pass over the maps (the memory-bound floor of any decoder) and to each other. Times are the
best of ``--repeats`` (process CPU time on the CPU, synchronised wall time on CUDA), after one warm-up call.

Checks before timing: the baseline reproduces MMPose's own numbers in tests/reference/decode_ref.npz (made by
MMPose 0.29), and posecli's results equal the baseline's ('default' exactly, DARK within 1e-3 image px).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from posecli.codec import decode_heatmaps, heatmap_to_image

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "reference"


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


# ------------------------------------------------------------------------------------------ MMPose 0.29 recipe
# MMPose ran under NumPy 1.x, where a NumPy float32 scalar combined with a Python number gives float64 and a float32
# array combined with any scalar stays float32; the explicit casts below keep those types under NumPy 2.


def mmpose_keypoints_from_heatmaps(
    heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray, post_process: str | None, kernel: int = 11
) -> tuple[np.ndarray, np.ndarray]:
    """MMPose 0.29 keypoints_from_heatmaps (no UDP): (N, K, H, W) -> preds (N, K, 2) f32 image px, maxvals (N, K, 1)."""
    heatmaps = heatmaps.copy()
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = np.argmax(flat, 2).reshape(n, k, 1)
    maxvals = np.amax(flat, 2).reshape(n, k, 1)
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = preds[:, :, 0] % w
    preds[:, :, 1] = preds[:, :, 1] // w
    preds = np.where(np.tile(maxvals, (1, 1, 2)) > 0.0, preds, -1).astype(np.float32)
    if post_process == "unbiased":
        heatmaps = np.log(np.maximum(mmpose_gaussian_blur(heatmaps, kernel), np.float32(1e-10)))
        for i in range(n):
            for j in range(k):
                preds[i][j] = mmpose_taylor(heatmaps[i][j], preds[i][j])
    elif post_process is not None:  # 'default': a quarter pixel towards the higher neighbour
        for i in range(n):
            for j in range(k):
                hm = heatmaps[i][j]
                px, py = int(preds[i][j][0]), int(preds[i][j][1])
                if 1 < px < w - 1 and 1 < py < h - 1:
                    diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
                    preds[i][j] += np.sign(diff) * np.float32(0.25)
    for i in range(n):
        preds[i] = mmpose_transform_preds(preds[i], center[i], scale[i], (w, h))
    return preds, maxvals


def mmpose_gaussian_blur(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """Per map: blur with zero padding of kernel//2 (cv2.GaussianBlur, sigma 0), then rescale to the map's own max."""
    border = (kernel - 1) // 2
    n, k, h, w = heatmaps.shape
    for i in range(n):
        for j in range(k):
            origin_max = np.max(heatmaps[i, j])
            padded = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
            padded[border:-border, border:-border] = heatmaps[i, j].copy()
            padded = cv2.GaussianBlur(padded, (kernel, kernel), 0)
            heatmaps[i, j] = padded[border:-border, border:-border].copy()
            with np.errstate(all="ignore"):
                heatmaps[i, j] *= origin_max / np.max(heatmaps[i, j])
    return heatmaps


def mmpose_taylor(hm: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """One Newton step on the log heatmap at the integer max, when 1 < px < W-2 and 1 < py < H-2."""
    h, w = hm.shape
    px, py = int(coord[0]), int(coord[1])
    if 1 < px < w - 2 and 1 < py < h - 2:
        f64 = np.float64  # differences of float32 values stay float32, products with Python numbers are float64
        dx = 0.5 * f64(hm[py][px + 1] - hm[py][px - 1])
        dy = 0.5 * f64(hm[py + 1][px] - hm[py - 1][px])
        dxx = 0.25 * (f64(hm[py][px + 2]) - 2 * f64(hm[py][px]) + f64(hm[py][px - 2]))
        dxy = 0.25 * f64(hm[py + 1][px + 1] - hm[py - 1][px + 1] - hm[py + 1][px - 1] + hm[py - 1][px - 1])
        dyy = 0.25 * (f64(hm[py + 2][px]) - 2 * f64(hm[py][px]) + f64(hm[py - 2][px]))
        if dxx * dyy - dxy**2 != 0:
            hessian = np.array([[dxx, dxy], [dxy, dyy]])
            offset = -np.linalg.inv(hessian) @ np.array([[dx], [dy]])
            coord += np.squeeze(np.array(offset.T), axis=0)  # float32 coord += float64 offset
    return coord


def mmpose_transform_preds(coords: np.ndarray, center: np.ndarray, scale: np.ndarray, size: tuple) -> np.ndarray:
    """Heatmap px (K, 2) f32 -> image px: coords * (scale*200 / size) + center - scale*200 / 2, float32 arrays."""
    box = scale * np.float32(200.0)
    out = np.ones_like(coords)
    for axis in range(2):
        per_px = np.float32(np.float64(box[axis]) / size[axis])
        half_box = np.float32(np.float64(box[axis]) * 0.5)
        out[:, axis] = coords[:, axis] * per_px + center[axis] - half_box
    return out


# ---------------------------------------------------------------------------------------------------- timing


def best_time(fn: Callable[[], object], repeats: int, cuda: bool) -> float:
    """Best time of ``repeats`` calls, seconds: process CPU time, or synchronised wall time on CUDA."""
    clock = time.perf_counter if cuda else time.process_time
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = clock()
        fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, clock() - start)
    return best


def check_baseline_against_mmpose() -> str:
    """Compare the baseline with MMPose's own outputs (decode_ref.npz); returns a one-line verdict."""
    path = REFERENCE / "decode_ref.npz"
    if not path.is_file():
        return f"not checked ({path} missing)"
    ref = dict(np.load(path))
    worst = {}
    for name, post, kernel in [("none", None, 11), ("default", "default", 11)] + [
        (f"unbiased_k{k}", "unbiased", k) for k in (11, 17)
    ]:
        preds, maxvals = mmpose_keypoints_from_heatmaps(ref["heatmaps"], ref["centers"], ref["scales"], post, kernel)
        assert np.array_equal(maxvals, ref[f"maxvals_{name}"]), name
        worst[name] = float(np.abs(preds - ref[f"preds_{name}"]).max())
    same = all(v == 0.0 for v in worst.values())
    detail = ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
    return ("bit-identical to" if same else "max |diff| image px vs") + f" MMPose's decode_ref.npz ({detail})"


def main() -> None:
    """Run the comparison and print the figures (and a JSON line with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernel", type=int, default=17)
    parser.add_argument("--sigma", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--keypoints", type=int, default=133)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=72)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    verdict = check_baseline_against_mmpose()
    heatmaps = realistic_heatmaps(args.batch, args.keypoints, args.height, args.width, args.sigma)
    n = args.batch
    rng = np.random.default_rng(1)
    center = rng.uniform(100, 500, (n, 2)).astype(np.float32)
    scale = (rng.uniform(0.5, 2.0, (n, 1)) * [args.width / args.height, 1.0]).astype(np.float32)
    tensor = torch.from_numpy(heatmaps).to(args.device)
    center_t, scale_t = torch.from_numpy(center).to(args.device), torch.from_numpy(scale).to(args.device)
    cuda = tensor.is_cuda
    wh = (args.width, args.height)

    def ours(post: str) -> Callable[[], torch.Tensor]:
        return lambda: heatmap_to_image(decode_heatmaps(tensor, post, args.kernel)[0], center_t, scale_t, wh)  # type: ignore[arg-type]

    t_floor = best_time(lambda: tensor.amax(), args.repeats, cuda)
    rows, result = [], {"device": str(tensor.device), "threads": args.threads, "shape": list(heatmaps.shape)}
    result |= {"kernel": args.kernel, "floor_ms": t_floor * 1e3, "clock": "wall, synchronised" if cuda else "CPU"}
    for post in ("default", "unbiased"):
        ours(post)()  # warm-up
        t_ours = best_time(ours(post), args.repeats, cuda)
        t_base = best_time(
            lambda p=post: mmpose_keypoints_from_heatmaps(heatmaps, center, scale, p, args.kernel), 2, False
        )
        base, _ = mmpose_keypoints_from_heatmaps(heatmaps, center, scale, post, args.kernel)
        diff = float(np.abs(ours(post)().cpu().numpy() - base).max())
        assert diff <= (0.0 if post == "default" else 1e-3), f"{post}: posecli and the baseline differ by {diff} px"
        rows.append((post, t_ours, t_base, diff))
        result[post] = {
            "posecli_ms": t_ours * 1e3,
            "mmpose_recipe_ms": t_base * 1e3,
            "posecli_over_floor": t_ours / t_floor,
            "speedup_vs_mmpose_recipe": t_base / t_ours,
            "max_abs_diff_image_px": diff,
        }

    print(f"heatmaps {tuple(heatmaps.shape)}  kernel {args.kernel}  threads {args.threads}  device {tensor.device}")
    print(f"baseline (MMPose 0.29 recipe): {verdict}")
    print(f"floor, one amax pass over the maps: {t_floor * 1e3:8.2f} ms")
    print(f"{'post_process':<13}{'posecli ms':>11}{'x floor':>9}{'MMPose recipe ms':>18}{'x floor':>9}{'speed-up':>10}")
    for post, t_ours, t_base, _ in rows:
        print(
            f"{post:<13}{t_ours * 1e3:11.2f}{t_ours / t_floor:9.2f}{t_base * 1e3:18.1f}{t_base / t_floor:9.1f}"
            f"{t_base / t_ours:9.1f}x"
        )
    print("max |posecli - baseline| image px: " + ", ".join(f"{p} {d:.1e}" for p, _, _, d in rows))
    if args.json:
        print(json.dumps(result | {"baseline_check": verdict}, sort_keys=True))


if __name__ == "__main__":
    main()
