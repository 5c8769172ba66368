"""Training data pipeline cost: CPU work per sample with targets and normalisation on the device vs all on the CPU.

    python benchmarks/data_pipeline.py [--json] [--samples 96] [--warmup 8] [--batch-size 32] [--device cpu|cuda] \
        [--preset hrnet_w48_coco_wholebody_384x288_dark_plus] [--images 24] [--workers 0 2]

The data is a COCO-WholeBody-style file (133 keypoints in split fields) written to a temporary folder:
``--images`` random JPEGs of 640 x 480 (COCO's usual size) with 2 people each, 80% of keypoints labelled.
Settings (384 x 288 input, 96 x 72 heatmaps, sigma 3, unbiased encoding, MMPose's augmentations) come
from the preset.

Modes, measured on the same samples in this one (fresh) process, each after ``--warmup`` untimed samples, both
through the real ``TopDownCocoDataset.__getitem__`` and the collate a DataLoader worker does (into shared memory):

- the default mode (``cpu_ms_per_sample``): the Dataset reads and decodes the JPEG, draws MMPose's augmentations
  and warps the uint8 crop; the batch of uint8 crops + keypoints is collated; heatmap targets and normalisation
  run per batch on ``--device`` in ``engine.batch.prepare_train_batch`` (``HeatmapCodec.encode_torch``,
  ``normalize_images``), timed as ``device_ms_per_batch``;
- all on the CPU (``cpu_ms_per_sample_all_on_cpu``): the Dataset with ``with_target=True``, which also normalises
  the crop and encodes the targets per sample, collating float32 images and targets.

Per-stage times come from timing the functions the Dataset calls (read, warp, normalise, encode) where it calls
them; "augment+item" is the rest of ``__getitem__``.
CPU times are process CPU time (``time.process_time``, one torch/OpenCV thread), so other processes on a busy
machine inflate them less than wall time; minor page faults per sample come from ``resource.getrusage``.
``--json``: the last line printed is one JSON object with every figure. ``--workers``: also DataLoader
samples/s of the Dataset in both modes with that many worker processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from posecli.atomic import atomic_write_json
from posecli.codec import HeatmapCodec
from posecli.datasets import coco as coco_module
from posecli.datasets.coco import TopDownCocoDataset
from posecli.datasets.meta import load_builtin
from posecli.engine.batch import prepare_train_batch
from posecli.engine.data import build_dataset
from posecli.settings import load_settings

PARTS = {"keypoints": 17, "foot_kpts": 6, "face_kpts": 68, "lefthand_kpts": 21, "righthand_kpts": 21}


def write_wholebody_data(root: Path, num_images: int, seed: int = 0) -> tuple[Path, Path]:
    """Random 640x480 JPEGs and a COCO-WholeBody-style annotation file with 2 people per image."""
    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        # smooth random content (compresses like a photo, unlike white noise)
        small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        image = cv2.resize(small, (640, 480), interpolation=cv2.INTER_CUBIC)
        name = f"{i:06d}.jpg"
        cv2.imwrite(str(img_dir / name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": i + 1, "file_name": name, "width": 640, "height": 480})
        for p in range(2):
            w, h = rng.uniform(120, 260), rng.uniform(200, 400)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            kp = np.stack(
                [rng.uniform(x, x + w, 133), rng.uniform(y, y + h, 133), np.where(rng.random(133) < 0.8, 2.0, 0.0)],
                axis=1,
            )
            kp[kp[:, 2] == 0] = 0
            ann = {"id": 2 * i + p + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0}
            ann |= {"bbox": [x, y, w, h], "area": w * h, "num_keypoints": int((kp[:17, 2] > 0).sum())}
            start = 0
            for field, n in PARTS.items():
                ann[field] = kp[start : start + n].reshape(-1).round(2).tolist()
                start += n
            anns.append(ann)
    ann_file = root / "wholebody_bench.json"
    person = {"id": 1, "name": "person", "keypoints": load_builtin("coco").keypoint_names}  # COCO-WholeBody's category
    atomic_write_json(ann_file, {"images": images, "annotations": anns, "categories": [person]}, indent=None)
    return ann_file, img_dir


class StageClock:
    """Accumulates process CPU time per named stage: call ``lap(name)`` after each stage."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.last = time.process_time()

    def start(self) -> None:
        """Start timing the next stage from now."""
        self.last = time.process_time()

    def lap(self, name: str) -> None:
        """Charge the time since the last lap (or start) to ``name``."""
        now = time.process_time()
        self.totals[name] = self.totals.get(name, 0.0) + now - self.last
        self.last = now


@contextlib.contextmanager
def staged(ds: TopDownCocoDataset, clock: StageClock) -> Iterator[None]:
    """Charge the functions the Dataset calls to their stages while inside (the Dataset itself is not changed)."""
    stages = {
        "read_image_rgb": "read+decode",
        "warp_image": "warp",
        "affine_keypoints": "warp",
        "normalize_image": "normalise",
    }
    saved = {name: getattr(coco_module, name) for name in stages}
    encode = ds.codec.encode

    def timed(fn: Callable, stage: str) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            clock.lap("augment+item")  # what __getitem__ did since the last timed call
            out = fn(*args, **kwargs)
            clock.lap(stage)
            return out

        return run

    try:
        for name, stage in stages.items():
            setattr(coco_module, name, timed(saved[name], stage))
        ds.codec.encode = timed(encode, "encode targets")  # type: ignore[method-assign]
        yield
    finally:
        for name, fn in saved.items():
            setattr(coco_module, name, fn)
        del ds.codec.encode


def dataset_item(ds: TopDownCocoDataset, index: int, clock: StageClock) -> dict[str, torch.Tensor]:
    """The Dataset's own training item (its tensors), every stage timed."""
    clock.start()
    item = ds[index]
    clock.lap("augment+item")
    return {k: v for k, v in item.items() if isinstance(v, torch.Tensor)}


def collate(items: list[dict[str, torch.Tensor]], shared: bool) -> dict[str, torch.Tensor]:
    """Stack each key like default_collate; ``shared``: into new shared memory, as in a DataLoader worker."""
    out = {}
    for key in items[0]:
        tensors = [item[key] for item in items]
        first = tensors[0]
        if shared:  # default_collate in a worker: storage._new_shared, then torch.stack(out=...)
            storage = first._typed_storage()._new_shared(len(tensors) * first.numel(), device=first.device)
            buffer = first.new(storage).resize_(len(tensors), *first.shape)
            out[key] = torch.stack(tensors, out=buffer)
        else:
            out[key] = torch.stack(tensors)
    return out


def run_mode(
    ds: TopDownCocoDataset, indices: list[int], warmup: int, batch_size: int, shared: bool
) -> tuple[dict[str, float], float, list[dict[str, torch.Tensor]]]:
    """Per-stage ms per sample, minor page faults per sample and the collated batches of one Dataset."""
    for i in indices[:warmup]:  # untimed warm-up: imports, first allocations, page cache
        collate([dataset_item(ds, i, StageClock())], shared)
    clock = StageClock()
    batches = []
    timed = indices[warmup:]
    with staged(ds, clock):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for start in range(0, len(timed), batch_size):
            items = [dataset_item(ds, i, clock) for i in timed[start : start + batch_size]]
            clock.start()
            batches.append(collate(items, shared))
            clock.lap("collate")
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    stages = {k: 1000.0 * v / len(timed) for k, v in clock.totals.items()}
    return stages, faults / len(timed), batches


def device_ms_per_batch(codec: HeatmapCodec, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, Any]:
    """Median ms of the training step's batch preparation (targets + normalisation, channels_last) of one collated
    uint8 batch on ``device`` (after 3 warm-up runs)."""
    moved = {k: v.to(device) for k, v in batch.items()}
    cuda = device.type == "cuda"

    def step() -> None:
        prepare_train_batch(moved, device, codec, torch.channels_last)

    times = []
    for run in range(13):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter() if cuda else time.process_time()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        if run >= 3:
            times.append(1000.0 * ((time.perf_counter() if cuda else time.process_time()) - t0))
    out: dict[str, Any] = {"device_ms_per_batch": statistics.median(times), "device_batch": len(batch["image"])}
    out["device_clock"] = "wall time, synchronised" if cuda else "process CPU time"
    if cuda:  # the host->device copy of the uint8 batch from pinned memory, for scale
        pinned = {k: v.pin_memory() for k, v in batch.items()}
        copies = []
        for run in range(8):
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            for v in pinned.values():
                v.to(device, non_blocking=True)
            torch.cuda.synchronize(device)
            if run >= 3:
                copies.append(1000.0 * (time.perf_counter() - t0))
        out["h2d_ms_per_batch"] = statistics.median(copies)
    return out


def samples_per_second(dataset: Dataset, workers: int, batch_size: int, samples: int) -> float:
    """Throughput of a DataLoader over the first ``samples`` items; the first batch (worker start-up) is not timed."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False, drop_last=True)
    it = iter(loader)
    next(it)  # warm-up: forks the workers and fills their prefetch queues
    count, start = 0, time.perf_counter()
    for batch in it:
        count += len(batch["image"])
        if count + batch_size > samples:
            break
    return count / (time.perf_counter() - start)


def main() -> None:
    """Parse flags, build the data, print the figures (and the JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="hrnet_w48_coco_wholebody_384x288_dark_plus")
    parser.add_argument("--samples", type=int, default=96, help="samples timed per mode")
    parser.add_argument("--warmup", type=int, default=8, help="untimed samples before each mode")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, nargs="*", default=None, help="DataLoader workers to time (none)")
    parser.add_argument("--plain-collate", action="store_true", help="collate into ordinary, not shared, memory")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse/keep the generated data here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    device = torch.device(args.device)

    data = load_settings(args.preset).data
    meta = load_builtin("coco_wholebody")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_dir or Path(tmp)
        ann_file, img_dir = write_wholebody_data(root, args.images)
        ds = build_dataset(ann_file, img_dir, meta, data, train=True, rng_seed=0)  # the default: uint8 crops
        ds_cpu = build_dataset(ann_file, img_dir, meta, data, train=True, rng_seed=0, with_target=True)
        indices = [i % len(ds) for i in range(args.warmup + args.samples)]
        shared = not args.plain_collate
        print(
            f"data: {len(ds)} people in {args.images} JPEGs 640x480, {meta.num_keypoints} keypoints; input "
            f"{data.image_size[0]}x{data.image_size[1]}, heatmaps {data.heatmap_size[0]}x{data.heatmap_size[1]}, "
            f"sigma {data.sigma:g}, unbiased={data.unbiased_encoding}; {args.samples} samples per mode after "
            f"{args.warmup} warm-up; batch {args.batch_size}; collate into {'shared' if shared else 'plain'} "
            f"memory; {os.cpu_count()} CPUs visible, 1 torch/OpenCV thread; device {device}"
        )
        bs = args.batch_size
        dev_stages, dev_faults, batches = run_mode(ds, indices, args.warmup, bs, shared)
        cpu_stages, cpu_faults, _ = run_mode(ds_cpu, indices, args.warmup, bs, shared)
        dev = device_ms_per_batch(ds.codec, batches[0], device)

        result: dict[str, Any] = {
            "cpu_ms_per_sample": sum(dev_stages.values()),
            "cpu_ms_per_sample_all_on_cpu": sum(cpu_stages.values()),
            "stages_ms_per_sample": dev_stages,
            "stages_ms_per_sample_all_on_cpu": cpu_stages,
            "minor_faults_per_sample": dev_faults,
            "minor_faults_per_sample_all_on_cpu": cpu_faults,
            **dev,
            "device": str(device),
            "samples": args.samples,
            "warmup_samples": args.warmup,
            "fresh_process": True,
            "clock": "process CPU time",
            "collate": "shared memory" if shared else "plain memory",
            "keypoints": meta.num_keypoints,
            "input_wh": list(data.image_size),
            "heatmap_wh": list(data.heatmap_size),
            "sigma": data.sigma,
            "unbiased_encoding": data.unbiased_encoding,
            "cpus_visible": os.cpu_count(),
        }
        result["all_on_cpu_over_device_mode"] = result["cpu_ms_per_sample_all_on_cpu"] / result["cpu_ms_per_sample"]
        print("\nCPU ms per sample (process CPU time), by stage:")
        for name, stages, faults in (
            ("default (uint8)", dev_stages, dev_faults),
            ("all on the CPU", cpu_stages, cpu_faults),
        ):
            parts = ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
            print(f"  {name:<20} {sum(stages.values()):6.2f} ms  ({parts}); {faults:.0f} minor faults/sample")
        print(f"  all on the CPU / default: {result['all_on_cpu_over_device_mode']:.2f}x")
        extra = f", host->device copy {dev['h2d_ms_per_batch']:.2f} ms" if "h2d_ms_per_batch" in dev else ""
        print(
            f"device ({device}): targets + normalisation of a batch of {dev['device_batch']}: "
            f"{dev['device_ms_per_batch']:.2f} ms ({dev['device_clock']}){extra}"
        )
        if args.workers:
            print(f"\n{'workers':>8} {'samples/s default':>18} {'samples/s all on the CPU':>26}")
            for workers in args.workers:
                rate = samples_per_second(ds, workers, bs, args.samples)
                rate_cpu = samples_per_second(ds_cpu, workers, bs, args.samples)
                result[f"dataloader_samples_per_s_{workers}_workers"] = rate
                result[f"dataloader_samples_per_s_{workers}_workers_all_on_cpu"] = rate_cpu
                print(f"{workers:>8} {rate:>18.1f} {rate_cpu:>26.1f}")
        if args.json:
            print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
