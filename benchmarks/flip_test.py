"""Flip test: one forward pass of 2B (images and mirrors concatenated) against two passes of B, per device.

    python benchmarks/flip_test.py [--threads 1 2] [--batch 32] [--repeats 7] [--device cpu|cuda]

Times ``TopDown.forward_flip_test`` (one pass of 2B) and two passes of B, in eval mode under inference_mode,
for the e2e small HRNet (tests/presets/e2e_small_hrnet.yaml, 192x256) and the demo model (presets/demo.yaml,
96x128), with random weights (the cost does not depend on them). Median of ``--repeats`` after one warm-up;
wall time (CUDA synchronised). ``engine/evaluate.py: FLIP_TEST_ONE_PASS`` records the decision these figures made.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path

import torch

from posecli.engine.evaluate import flip_test_heatmaps
from posecli.models.topdown import build_model
from posecli.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"e2e small HRNet": str(ROOT / "tests/presets/e2e_small_hrnet.yaml"), "demo": "demo"}


def median_ms(fn: object, device: torch.device, repeats: int) -> float:
    """Median wall ms of ``fn()`` after one warm-up call."""
    times = []
    for run in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if run:
            times.append(1000.0 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    """Print one line per model and thread count: 2B ms, 2 x B ms, and which is faster."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, batch {args.batch}, median of {args.repeats}")
    for name, preset in MODELS.items():
        settings = load_settings(preset)
        model = build_model(settings.model).to(device).eval()
        w, h = settings.data.image_size
        flip_index = list(range(settings.model.head.out_channels))
        images = torch.randn(args.batch, 3, h, w, device=device)
        for threads in args.threads if device.type == "cpu" else [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            with torch.inference_mode():
                one = median_ms(
                    functools.partial(flip_test_heatmaps, model, images, flip_index, True, True), device, args.repeats
                )
                two = median_ms(
                    functools.partial(flip_test_heatmaps, model, images, flip_index, True, False), device, args.repeats
                )
            print(
                f"{name:<16} {w}x{h} threads {threads}: one pass of 2B {one:8.1f} ms, two passes of B {two:8.1f} ms "
                f"-> {'two passes' if two < one else 'one pass'} faster by {abs(one - two) / max(one, two):.1%}"
            )


if __name__ == "__main__":
    main()
