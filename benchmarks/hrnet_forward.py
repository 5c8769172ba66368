"""HRNet forward (and forward+backward) time on the CPU: posecli's in-place sums against the out-of-place ones.

    python benchmarks/hrnet_forward.py                       # W48 384x288 batch 2 and the demo batch 32, 1 thread
    python benchmarks/hrnet_forward.py --repeats 5 --models demo_b32 --modes fwd --threads 2

"before" swaps in the previous forwards (every residual and fuse sum a new tensor); "after" is the shipped code
(sums and ReLUs in place where MMPose's are). Both run the same modules with the same weights and inputs; the eval
outputs are checked to be bit-identical. Runs alternate before/after so a busy machine slows both alike; each
figure is the median of ``--repeats`` runs after one warm-up. Train mode: forward, sum of squares, backward.
Two clocks: wall time, and the process's CPU time (``time.process_time``; with one thread it hardly counts the
time other processes hold the core, so it is the steadier figure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from posecli.models import build_model
from posecli.settings import load_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from out_of_place_hrnet import out_of_place  # noqa: E402  (the previous forwards, shared with the tests)

MODELS = {  # name -> (preset, batch size)
    "w48_384x288_b2": ("hrnet_w48_coco_384x288_dark", 2),
    "demo_b32": ("demo", 32),
}


# ---------------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall ms, process CPU ms) one call takes."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def measure(name: str, repeats: int, kinds: tuple[str, ...] = ("fwd", "fwdbwd")) -> dict[str, float]:
    """Median ms (wall and CPU) of eval forward and train forward+backward, before and after, for one model."""
    preset, batch = MODELS[name]
    settings = load_settings(preset)
    torch.manual_seed(0)
    model = build_model(settings.model)
    w, h = settings.data.image_size
    images = torch.randn(batch, 3, h, w)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return model.eval()(images)

    def forward_backward() -> None:
        model.train().zero_grad(set_to_none=True)
        model(images).square().sum().backward()

    with out_of_place():
        reference = forward()
    if not torch.equal(forward(), reference):
        raise SystemExit(f"{name}: in-place and out-of-place forwards differ")

    times: dict[str, list[float]] = {}
    for run in range(repeats + 1):  # run 0 warms up (allocator, oneDNN primitives) and is not counted
        for kind, fn in (("fwd", forward), ("fwdbwd", forward_backward)):
            if kind not in kinds:
                continue
            with out_of_place():
                before = timed(fn)
            after = timed(fn)
            if run:
                for clock, index in (("wall", 0), ("cpu", 1)):
                    times.setdefault(f"{kind}_before_{clock}", []).append(before[index])
                    times.setdefault(f"{kind}_after_{clock}", []).append(after[index])
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> None:
    """Print a table (and a JSON line with --json) of the measured medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median), after one warm-up")
    parser.add_argument("--modes", nargs="+", choices=["fwd", "fwdbwd"], default=["fwd", "fwdbwd"])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--json", action="store_true", help="also print one JSON object as the last line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = {}
    print(f"CPU, {args.threads} thread(s), median of {args.repeats}; ms (before = out-of-place sums)")
    print(f"{'model':<16} {'mode':<24} {'clock':<5} {'before':>9} {'after':>9} {'after/before':>13}")
    for name in args.models:
        r = measure(name, args.repeats, tuple(args.modes))
        results[name] = r
        for kind, label in (("fwd", "forward, inference"), ("fwdbwd", "forward+backward, train")):
            if kind not in args.modes:
                continue
            for clock in ("wall", "cpu"):
                before, after = r[f"{kind}_before_{clock}"], r[f"{kind}_after_{clock}"]
                print(f"{name:<16} {label:<24} {clock:<5} {before:9.1f} {after:9.1f} {after / before:13.3f}")
    if args.json:
        print(json.dumps({"threads": args.threads, "repeats": args.repeats, "ms": results}))


if __name__ == "__main__":
    main()
