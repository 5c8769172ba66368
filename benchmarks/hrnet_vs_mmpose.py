"""posecli's HRNet forward vs MMPose 0.29's own module, same weights, same inputs, CPU.

MMPose is not a dependency: run this with an interpreter where both posecli and mmpose==0.29.0 (mmcv 1.7.0)
import, e.g. a scratch venv (see the developers' guide). Without mmpose it says so and exits 0.

    OMP_NUM_THREADS=1 python benchmarks/hrnet_vs_mmpose.py --repeats 7

Prints, per model: max |heatmap difference| (must be ~0: same weights), then median CPU ms of the inference
forward and of forward+backward for each implementation, and the ratio posecli / MMPose (< 1 = posecli faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from posecli.datasets.meta import load_builtin
from posecli.mmpose_config.export import settings_to_config_text
from posecli.models import build_model
from posecli.settings import load_settings


def cpu_ms(fn, repeats: int) -> float:
    """Median process CPU time of fn() in milliseconds (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times)


def forward_only(model, call, x: torch.Tensor):
    """A closure running one inference forward."""

    def run() -> None:
        with torch.inference_mode():
            call(model, x)

    return run


def forward_backward(model, call, x: torch.Tensor):
    """A closure running one forward + backward of a dummy loss."""

    def run() -> None:
        model.zero_grad(set_to_none=True)
        call(model, x).square().mean().backward()

    return run


def ours_call(model, x: torch.Tensor) -> torch.Tensor:
    """posecli's TopDown: heatmaps."""
    return model(x)


def theirs_call(model, x: torch.Tensor) -> torch.Tensor:
    """MMPose's TopDown: heatmaps without the test-time extras."""
    return model.forward_dummy(x)


def main() -> None:
    """Time both implementations on the demo model and HRNet-W32/W48."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--models", nargs="+", default=["demo:32", "hrnet_w32_coco_256x192:4"], help="PRESET:BATCH entries"
    )
    args = parser.parse_args()
    try:
        from mmcv import Config
        from mmpose.models import build_posenet
    except ImportError:
        print("mmpose 0.29 / mmcv 1.7 are not importable here: nothing to compare (see the docstring)")
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}, CPU ms")
    print(
        f"{'model':34} {'batch':>5} {'max|diff|':>9} {'fwd posecli':>11} {'fwd mmpose':>10} {'ratio':>6} "
        f"{'f+b posecli':>11} {'f+b mmpose':>10} {'ratio':>6}"
    )
    for entry in args.models:
        name, batch = entry.rsplit(":", 1)
        settings = load_settings(name)
        ours = build_model(settings.model)
        with tempfile.TemporaryDirectory() as tmp:
            cfg_file = Path(tmp) / "cfg.py"
            cfg_file.write_text(settings_to_config_text(settings, load_builtin(str(settings.dataset))))
            cfg = Config.fromfile(str(cfg_file))
        cfg.model.pretrained = None
        theirs = build_posenet(cfg.model)
        theirs.load_state_dict(ours.state_dict(), strict=True)
        w, h = settings.data.image_size
        x = torch.randn(int(batch), 3, h, w)
        ours.eval()
        theirs.eval()
        with torch.inference_mode():
            diff = (ours(x) - theirs.forward_dummy(x)).abs().max().item()

        f_ours = cpu_ms(forward_only(ours, ours_call, x), args.repeats)
        f_theirs = cpu_ms(forward_only(theirs, theirs_call, x), args.repeats)
        ours.train()
        theirs.train()
        b_ours = cpu_ms(forward_backward(ours, ours_call, x), args.repeats)
        b_theirs = cpu_ms(forward_backward(theirs, theirs_call, x), args.repeats)
        print(
            f"{name:34} {batch:>5} {diff:9.2e} {f_ours:11.1f} {f_theirs:10.1f} {f_ours / f_theirs:6.3f} "
            f"{b_ours:11.1f} {b_theirs:10.1f} {b_ours / b_theirs:6.3f}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
