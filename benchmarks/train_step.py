"""Training-step throughput of top-down HRNet: images/s, eager vs channels_last vs torch.compile (+ bf16 on CUDA).

    python benchmarks/train_step.py --device cpu --batch-size 2 --iters 2          # quick CPU look
    python benchmarks/train_step.py --device cuda --batch-size 32 --iters 20 --compile

One step = zero_grad, forward, JointsMSELoss, backward, Adam step, on random images and targets (the data loader
is not measured). Models: HRNet-W48 at 384x288 with 133 keypoints (the COCO-WholeBody fine-tune) and the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass

import torch

from posecli.models import TopDown, build_model, count_parameters
from posecli.settings import load_settings

MODELS = {  # benchmark name -> preset
    "w48_wholebody": "hrnet_w48_coco_wholebody_384x288_dark_plus",
    "demo": "demo",
}


@dataclass
class Mode:
    name: str
    channels_last: bool = False
    compile: bool = False
    bf16: bool = False


@dataclass
class Result:
    model: str
    mode: str
    images_per_s: float
    ms_per_step: float
    first_step_s: float  # includes compilation for torch.compile modes
    peak_mem_gib: float | None


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so the clock measures it (a CPU-GPU sync point)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    preset: str, mode: Mode, device: torch.device, batch_size: int, warmup: int, iters: int
) -> tuple[float, float, float | None]:
    """(seconds per step, seconds of the first step, peak GPU memory GiB) of one model in one mode."""
    settings = load_settings(preset)
    torch.manual_seed(0)
    model: TopDown = build_model(settings.model).to(device).train()
    (w, h), (hw, hh), k = settings.data.image_size, settings.data.heatmap_size, settings.model.head.out_channels
    images = torch.randn(batch_size, 3, h, w, device=device)
    target = torch.rand(batch_size, k, hh, hw, device=device)
    target_weight = torch.ones(batch_size, k, 1, device=device)
    if mode.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if mode.compile else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if mode.bf16 else contextlib.nullcontext()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            heatmaps = forward(images)  # (B, K, h, w)
        loss = model.loss(heatmaps, target, target_weight)  # fp32
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    per_step = (time.perf_counter() - t0) / iters
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return per_step, first, peak


def main() -> None:
    """Parse flags, run every model x mode, print a table with ratios to eager fp32."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 on CUDA, 2 on CPU")
    parser.add_argument("--iters", type=int, default=10, help="timed steps per model and mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first one is reported)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["w48_wholebody", "demo"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    batch_size = args.batch_size or (32 if device.type == "cuda" else 2)

    modes = [Mode("eager"), Mode("channels_last", channels_last=True)]
    if args.compile:
        modes.append(Mode("compile+channels_last", channels_last=True, compile=True))
    if device.type == "cuda":
        modes += [Mode(f"{m.name}+bf16", m.channels_last, m.compile, bf16=True) for m in list(modes)]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}, torch {torch.__version__}, batch {batch_size}, warmup {args.warmup}, iters {args.iters}")
    results: list[Result] = []
    for model_name in args.models:
        preset = MODELS[model_name]
        settings = load_settings(preset)
        with torch.device("meta"):
            params = count_parameters(build_model(settings.model))
        print(f"{model_name}: preset {preset}, input {list(settings.data.image_size)} (w, h), {params:,} parameters")
        for mode in modes:
            per_step, first, peak = bench(preset, mode, device, batch_size, args.warmup, args.iters)
            results.append(Result(model_name, mode.name, batch_size / per_step, per_step * 1e3, first, peak))
            r = results[-1]
            print(f"  {mode.name:<28} {r.images_per_s:9.2f} img/s  {r.ms_per_step:9.1f} ms/step", flush=True)

    print()
    header = f"{'model':<15}{'mode':<30}{'img/s':>10}{'ms/step':>11}{'x eager':>9}{'1st step s':>12}{'peak GiB':>10}"
    print(header)
    print("-" * len(header))
    for r in results:
        eager = next(e for e in results if e.model == r.model and e.mode == "eager")
        peak = f"{r.peak_mem_gib:10.2f}" if r.peak_mem_gib is not None else f"{'-':>10}"
        print(
            f"{r.model:<15}{r.mode:<30}{r.images_per_s:10.2f}{r.ms_per_step:11.1f}"
            f"{r.images_per_s / eager.images_per_s:9.2f}{r.first_step_s:12.2f}{peak}"
        )


if __name__ == "__main__":
    main()
