"""Device-side batch preparation speed: heatmap targets (MSRA and unbiased) and normalisation of a uint8 batch.

    python benchmarks/device_targets.py [--device cuda] [--batch 32] [--repeats 20] [--json]

Times :meth:`HeatmapCodec.encode_torch` and :func:`normalize_images` (channels_last) for the presets' geometries
(COCO 17 keypoints 256x192 -> 64x48 sigma 2; COCO-WholeBody 133 keypoints 384x288 -> 96x72 sigma 3) on the given
device: median of ``--repeats`` after 3 warm-up calls, synchronised wall time on CUDA, process CPU time on the CPU.
On the CPU the NumPy encoder / OpenCV lookup run (what CPU tensors take). ``--device cuda`` without CUDA prints a
line saying so and exits 0, so scripts that time GPU rows skip cleanly on CPU-only machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from posecli.codec import HeatmapCodec, normalize_images

CASES = [  # name, input (w, h), heatmap (w, h), keypoints, sigma
    ("coco17 256x192 sigma 2", (192, 256), (48, 64), 17, 2.0),
    ("wholebody133 384x288 sigma 3", (288, 384), (72, 96), 133, 3.0),
]


def median_ms(fn: Callable[[], object], repeats: int, cuda: bool) -> float:
    """Median time of ``repeats`` calls after 3 warm-up calls, ms."""
    clock = time.perf_counter if cuda else time.process_time
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = clock()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(1000.0 * (clock() - start))
    return statistics.median(times)


def main() -> None:
    """Parse flags, time each case, print the table (and a JSON line with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("device targets benchmark: skipped, no CUDA device")
        return
    torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    result: dict[str, object] = {"device": str(device), "batch": args.batch, "clock": "wall" if cuda else "CPU"}
    print(f"device {device}, batch {args.batch}, median of {args.repeats} ({'wall, synchronised' if cuda else 'CPU'})")
    print(f"{'case':<30}{'MSRA ms':>10}{'unbiased ms':>13}{'normalise ms':>14}")
    for name, input_wh, heatmap_wh, k, sigma in CASES:
        size = torch.tensor(input_wh, dtype=torch.float32)
        keypoints = (torch.rand(args.batch, k, 2, generator=gen) * 1.1 - 0.05) * size  # some off the crop
        visible = (torch.rand(args.batch, k, generator=gen) < 0.8).float()
        images = torch.randint(0, 256, (args.batch, input_wh[1], input_wh[0], 3), dtype=torch.uint8, generator=gen)
        keypoints, visible, images = keypoints.to(device), visible.to(device), images.to(device)
        row = {}
        for label, unbiased in (("msra_ms", False), ("unbiased_ms", True)):
            codec = HeatmapCodec(input_wh, heatmap_wh, sigma, unbiased)
            row[label] = median_ms(lambda c=codec, x=keypoints, v=visible: c.encode_torch(x, v), args.repeats, cuda)
        row["normalise_ms"] = median_ms(lambda x=images: normalize_images(x, channels_last=True), args.repeats, cuda)
        result[name] = row
        print(f"{name:<30}{row['msra_ms']:>10.3f}{row['unbiased_ms']:>13.3f}{row['normalise_ms']:>14.3f}")
    if args.json:
        print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
