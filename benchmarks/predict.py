"""`predict` throughput: images/s of the predict path, .pth (PyTorch) vs .onnx (ONNX Runtime), side by side.

    python benchmarks/predict.py [--model small|w32|w48] [--sizes 256x192,384x288] [--batches 1,32]
                                 [--devices cpu,cuda] [--seconds 3] [--threads N] [--no-flip-test]

One image = one person crop of the model's input size with a whole-image box; per image the path is predict's:
the affine crop and normalisation, the model with flip test (one pass of 2B), DARK decoding and the way back to
image pixels (``posecli.engine.predict``). The same randomly initialised model is exported to ONNX for each input
size (export checked against PyTorch as `posecli export` does). CUDA rows appear when CUDA is present; the ONNX
column needs onnxruntime-gpu's CUDAExecutionProvider there. Prints one row per (size, device, batch).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posecli.datasets.meta import load_builtin
from posecli.engine.predict import concat_crops, crop_boxes, infer_keypoints
from posecli.models import build_model
from posecli.settings import ModelSettings, TestSettings, load_settings

SMALL_EXTRA = {  # the e2e reference's small HRNet (1.3 M parameters)
    "stage1": {"num_modules": 1, "num_branches": 1, "block": "BOTTLENECK", "num_blocks": [2], "num_channels": [32]},
    "stage2": {"num_modules": 1, "num_branches": 2, "block": "BASIC", "num_blocks": [2, 2], "num_channels": [16, 32]},
    "stage3": {
        "num_modules": 1, "num_branches": 3, "block": "BASIC", "num_blocks": [2, 2, 2], "num_channels": [16, 32, 64]
    },
    "stage4": {
        "num_modules": 1, "num_branches": 4, "block": "BASIC", "num_blocks": [2, 2, 2, 2],
        "num_channels": [16, 32, 64, 128],
    },
}  # fmt: skip


def model_settings(name: str) -> ModelSettings:
    """The model section of a shipped preset (w32, w48) or of the small e2e HRNet."""
    if name == "small":
        return ModelSettings.model_validate(
            {
                "backbone": {"type": "HRNet", "in_channels": 3, "extra": SMALL_EXTRA},
                "head": {"in_channels": 16, "out_channels": 17, "num_deconv_layers": 0},
            }
        )
    preset = {"w32": "hrnet_w32_coco_256x192", "w48": "hrnet_w48_coco_384x288_dark"}[name]
    return load_settings(preset).model


def onnx_model(model: torch.nn.Module, input_wh: tuple[int, int], folder: Path, device: torch.device) -> Any:
    """Export like `posecli export` (checked against PyTorch) and open it with posecli's ONNX Runtime runner."""
    from posecli import onnx_export

    meta = load_builtin("coco")
    heatmap_wh = (input_wh[0] // 4, input_wh[1] // 4)
    raw = onnx_export.export_to_bytes(model, input_wh, onnx_export.DEFAULT_OPSET)
    data = onnx_export.add_metadata(raw, onnx_export.onnx_metadata(meta, input_wh, heatmap_wh, {}))
    diff = onnx_export.check_against_torch(data, model, input_wh)
    assert diff <= onnx_export.CHECK_TOLERANCE, diff
    path = folder / f"model_{input_wh[0]}x{input_wh[1]}.onnx"
    path.write_bytes(data)
    return onnx_export.OnnxModel(path, device)


def images_per_second(
    model: Any, images: list[np.ndarray], test: TestSettings, device: torch.device, seconds: float
) -> float:
    """Run predict's path over the images (one whole-image box each) repeatedly for ``seconds``; images/s."""
    flip_index = load_builtin("coco").flip_index
    h, w = images[0].shape[:2]
    box = np.array([[0.0, 0.0, float(w), float(h)]])

    def one_pass() -> None:
        crops = [crop_boxes(img, box, (w, h)) for img in images]
        infer_keypoints(model, concat_crops(crops, (w, h)), test, flip_index, device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    one_pass()  # warm-up (cuDNN autotune, ORT graph optimisation)
    done, start = 0, time.perf_counter()
    while True:
        one_pass()
        done += len(images)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", choices=["small", "w32", "w48"])
    parser.add_argument("--sizes", default="256x192,384x288", help="input sizes, height x width")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--devices", default="cpu,cuda", help="cuda rows are skipped without CUDA")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell")
    parser.add_argument("--threads", type=int, default=0, help="torch/ORT CPU threads (0: library default)")
    parser.add_argument("--no-flip-test", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        import os

        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    torch.manual_seed(0)
    net = build_model(model_settings(args.model)).eval()
    params = sum(p.numel() for p in net.parameters()) / 1e6
    rng = np.random.default_rng(0)
    print(
        f"predict throughput, model {args.model} ({params:.1f} M parameters), flip_test={not args.no_flip_test}, "
        f"DARK decoding, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"{'input':>9} {'device':>6} {'batch':>5} {'.pth img/s':>11} {'.onnx img/s':>12} {'onnx/pth':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for h, w in sizes:
            images_all = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(max(batches))]
            for dev_name in devices:
                device = torch.device(dev_name)
                torch_model = net.to(device)
                ort_model = onnx_model(net.cpu(), (w, h), Path(tmp), device)
                net.to(device)
                ort_on_device = dev_name == "cpu" or "CUDAExecutionProvider" in ort_model.providers
                for b in batches:
                    test = TestSettings(
                        flip_test=not args.no_flip_test, post_process="unbiased", modulate_kernel=11, batch_size=b
                    )
                    images = images_all[:b]
                    pth = images_per_second(torch_model, images, test, device, args.seconds)
                    if ort_on_device:
                        onx = images_per_second(ort_model, images, test, device, args.seconds)
                        cells = f"{onx:12.1f} {onx / pth:9.2f}"
                    else:
                        cells = f"{'n/a (no CUDA EP)':>22}"
                    print(f"{h:>4}x{w:<4} {dev_name:>6} {b:>5} {pth:11.1f} {cells}", flush=True)
                net.cpu()


if __name__ == "__main__":
    main()
