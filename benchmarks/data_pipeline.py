"""Training data pipeline speed: samples/s of TopDownCocoDataset (read, augment, warp, normalise, encode)
and of the target encoder alone, through a DataLoader with N worker processes.

    python benchmarks/data_pipeline.py [--workers 0 2] [--samples 96] [--batch-size 16] \
        [--preset hrnet_w48_coco_wholebody_384x288_dark_plus] [--images 24] [--threads 1]

The data is a COCO-WholeBody-style file (133 keypoints in split fields) written to a temporary folder:
``--images`` random JPEGs of 640 x 480 (COCO's usual size) with 2 people each, 80% of keypoints labelled.
Settings (384 x 288 input, 96 x 72 heatmaps, sigma 3, unbiased encoding, MMPose's augmentations) come
from the preset. Also prints a one-process breakdown (ms per sample) of the pipeline's stages.
The figures depend on the CPU: say how many cores were free when quoting them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from posecli.atomic import atomic_write_json
from posecli.codec import HeatmapCodec
from posecli.datasets.coco import TopDownCocoDataset, read_image_rgb
from posecli.datasets.meta import load_builtin
from posecli.engine.data import build_dataset
from posecli.settings import DataSettings, load_settings
from posecli.transforms import (
    affine_keypoints,
    bbox_xywh_to_center_scale,
    get_affine_transform,
    normalize_image,
    warp_image,
)

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
    atomic_write_json(ann_file, {"images": images, "annotations": anns, "categories": [{"id": 1}]}, indent=None)
    return ann_file, img_dir


class EncoderOnly(Dataset):
    """The target encoder alone: item i encodes a fixed random set of 133 keypoints in input pixels."""

    def __init__(self, data: DataSettings, n: int, k: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        w, h = data.image_size
        self.keypoints = rng.uniform([-10, -10], [w + 10, h + 10], (n, k, 2)).astype(np.float32)  # (N, K, 2)
        self.visible = (rng.random((n, k)) < 0.8).astype(np.float32)  # (N, K)
        self.codec = HeatmapCodec(data.image_size, data.heatmap_size, data.sigma, data.unbiased_encoding)

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        heatmaps, weights = self.codec.encode(self.keypoints[i], self.visible[i])
        return {"target": torch.from_numpy(heatmaps), "target_weight": torch.from_numpy(weights)}


def samples_per_second(dataset: Dataset, workers: int, batch_size: int, samples: int) -> float:
    """Throughput of a DataLoader over the first ``samples`` items; the first batch (worker start-up) is not timed."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False, drop_last=True)
    it = iter(loader)
    next(it)  # warm-up: forks the workers and fills their prefetch queues
    count, start = 0, time.perf_counter()
    for batch in it:
        count += len(batch["target"])
        if count + batch_size > samples:
            break
    return count / (time.perf_counter() - start)


def stage_breakdown(ds: TopDownCocoDataset, n: int) -> dict[str, float]:
    """ms per sample of each stage (validation geometry) and of a whole training item, one process."""
    totals = dict.fromkeys(("read+decode", "affine warp", "normalise", "encode targets", "train __getitem__"), 0.0)
    for i in range(n):
        s = ds.samples[i % len(ds)]
        t0 = time.perf_counter()
        image = read_image_rgb(s.image_file)
        t1 = time.perf_counter()
        center, scale = bbox_xywh_to_center_scale(s.bbox, ds.aspect_ratio)
        m = get_affine_transform(center, scale, 0.0, ds.image_wh)
        crop = warp_image(image, m, ds.image_wh)
        kp = affine_keypoints(s.keypoints, s.visible, m)
        t2 = time.perf_counter()
        normalize_image(crop)
        t3 = time.perf_counter()
        ds.codec.encode(kp, s.visible)
        t4 = time.perf_counter()
        ds[i % len(ds)]
        t5 = time.perf_counter()
        for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            totals[key] += dt
    return {k: 1000 * v / n for k, v in totals.items()}


def main() -> None:
    """Parse flags, build the data, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="hrnet_w48_coco_wholebody_384x288_dark_plus")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--samples", type=int, default=96, help="samples timed per measurement")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse/keep the generated data here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_settings(args.preset).data
    meta = load_builtin("coco_wholebody")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_dir or Path(tmp)
        ann_file, img_dir = write_wholebody_data(root, args.images)
        ds = build_dataset(ann_file, img_dir, meta, data, train=True, rng_seed=0)
        print(
            f"data: {len(ds)} people in {args.images} JPEGs 640x480, {meta.num_keypoints} keypoints; input "
            f"{data.image_size[0]}x{data.image_size[1]}, heatmaps {data.heatmap_size[0]}x{data.heatmap_size[1]}, "
            f"sigma {data.sigma:g}, unbiased={data.unbiased_encoding}; batch {args.batch_size}, "
            f"{args.samples} samples timed; {os.cpu_count()} CPUs visible (cv2 threads {cv2.getNumThreads()})"
        )
        print("\none process, ms per sample (stages without augmentation; then a whole training item):")
        for stage, ms in stage_breakdown(ds, 16).items():
            print(f"  {stage:<18} {ms:7.2f}")
        print(f"\n{'workers':>8} {'pipeline samples/s':>20} {'encoder-only samples/s':>24}")
        encoder = EncoderOnly(data, n=args.samples + 2 * args.batch_size, k=meta.num_keypoints)
        for workers in args.workers:
            full = samples_per_second(ds, workers, args.batch_size, args.samples)
            enc = samples_per_second(encoder, workers, args.batch_size, args.samples)
            print(f"{workers:>8} {full:>20.1f} {enc:>24.1f}")


if __name__ == "__main__":
    main()
