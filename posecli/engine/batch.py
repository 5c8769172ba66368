"""A training batch on the device: made ready there (normalisation, layout, heatmap targets), and how big fits.

The data loader hands over uint8 RGB crops (B, H, W, 3) and keypoints in input pixels (B, K, 3); per batch, on the
training device, ``prepare_train_batch`` normalises the crops (ImageNet mean/std, RGB) into the model's memory
format and encodes the heatmap targets with ``HeatmapCodec.encode_torch`` (float32, outside autocast). On a CPU
the same functions run on CPU tensors (NumPy's exact route), so CI trains through this very code. Batches of the
all-on-CPU item (``with_target=True``: normalised images, targets made in the workers) pass through unchanged;
``--gpu-decode`` batches (encoded files and warp matrices) are first decoded and warped (``engine/gpu_decode.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from posecli.codec import HeatmapCodec, normalize_images
from posecli.engine.gpu_decode import decode_and_warp
from posecli.models.topdown import TopDown


def prepare_train_batch(
    batch: dict[str, Any], device: torch.device, codec: HeatmapCodec, memory_format: torch.memory_format
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A collated batch -> images (B, 3, H, W) f32 normalised, targets (B, K, h, w) f32, weights (B, K, 1) f32."""
    if "encoded" in batch:  # --gpu-decode: the files' bytes, decoded and warped here
        images = decode_and_warp(batch, device, codec.input_wh)  # (B, H, W, 3) uint8, the CPU path's crops
    else:
        images = batch["image"].to(device, non_blocking=True)
    if "target" in batch:  # the all-on-CPU item: made in the workers
        target = batch["target"].to(device, non_blocking=True)  # (B, K, h, w)
        weight = batch["target_weight"].to(device, non_blocking=True)  # (B, K, 1)
        return images.contiguous(memory_format=memory_format), target, weight
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected uint8 crops (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    keypoints = batch["keypoints"].to(device, non_blocking=True)  # (B, K, 3) x, y input px, visibility
    images = normalize_images(images, channels_last=memory_format == torch.channels_last)
    with torch.autocast(device.type, enabled=False):  # float32 targets, whatever the caller's autocast
        target, weight = codec.encode_torch(keypoints[..., :2], keypoints[..., 2])
    return images, target, weight[..., None]


def largest_batch_that_fits(
    model: TopDown,
    image_wh: tuple[int, int],
    failed: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    memory_format: torch.memory_format,
) -> int:
    """Probe forward+backward with random images at halving batch sizes; the largest that ran (0: none)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fits, lo, hi = 0, 0, failed
    batch = failed // 2
    while batch >= 1 and hi - lo > max(1, hi // 16):  # bisection between a size that ran and one that did not
        try:
            images = torch.randn(batch, 3, image_wh[1], image_wh[0], device=device).to(memory_format=memory_format)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(images)
            out.float().square().mean().backward()
            fits, lo = batch, batch
        except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError in torch >= 2.5
            hi = batch
        finally:
            for p in params:
                p.grad = None
            images = out = None  # type: ignore[assignment]
            torch.cuda.empty_cache()
        batch = (lo + hi) // 2 if fits else batch // 2
    return fits
