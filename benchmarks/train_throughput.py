"""Training throughput with the real data loader: samples/s, time waiting for data, device target encoding.

    python benchmarks/train_throughput.py                      # CUDA: W48 384x288, 133 keypoints, bf16
    python benchmarks/train_throughput.py --smoke              # CPU smoke test in seconds (small model, 0/1 workers)
    python benchmarks/train_throughput.py --gpu-decode-workers 4 16   # also `finetune --gpu-decode`'s loader

The data are random 640x480 JPEGs with two COCO-WholeBody people each (benchmarks/data_pipeline.py's generator);
the Dataset, loader and batch preparation are the training run's own (``build_dataset``, ``build_train_loader``:
pinned memory, persistent workers, prefetching; ``prepare_train_batch``: normalisation, channels_last and heatmap
targets on the device). One step = forward under bf16 autocast, JointsMSELoss, backward, Adam step; no host sync
per step, as in the training loop. Per worker count: ``--warmup`` untimed steps (worker start-up, cuDNN's kernel
choice), then ``--steps`` timed ones; samples/s = samples / wall time (synchronised at the end); "waiting" = the
share of that time the host spent blocked on the loader. With ``--gpu-decode-workers`` the same steps run again
with ``finetune --gpu-decode``'s items (the workers read the files and draw the augmentations; nvjpeg decodes
and grid_sample warps per batch on the device, inside the step time), and the decode + warp time of one batch is
printed (on the CPU, ``--smoke``, torchvision decodes there: a check of the code path, not a figure). Without CUDA
(and without ``--smoke``) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_pipeline import write_wholebody_data  # noqa: E402

from posecli.datasets.meta import load_builtin  # noqa: E402
from posecli.engine.batch import prepare_train_batch  # noqa: E402
from posecli.engine.data import EpochSampler, build_dataset, build_train_loader  # noqa: E402
from posecli.engine.distributed import DistInfo  # noqa: E402
from posecli.engine.gpu_decode import decode_and_warp  # noqa: E402
from posecli.models.topdown import build_model  # noqa: E402
from posecli.settings import TrainSettings, load_settings  # noqa: E402


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA) to finish queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def target_encoding_ms(batch: dict, device: torch.device, codec: object, repeats: int = 10) -> float:
    """Median ms of prepare_train_batch (targets + normalisation + layout) on a batch already on the device."""
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    times = []
    for run in range(repeats + 2):
        sync(device)
        t0 = time.perf_counter()
        prepare_train_batch(moved, device, codec, torch.channels_last)  # type: ignore[arg-type]
        sync(device)
        if run >= 2:
            times.append(1000.0 * (time.perf_counter() - t0))
    return statistics.median(times)


def decode_warp_ms(batch: dict, device: torch.device, output_wh: tuple[int, int], repeats: int = 10) -> float:
    """Median ms of decoding and warping one --gpu-decode batch on the device (synchronised)."""
    times = []
    for run in range(repeats + 2):
        sync(device)
        t0 = time.perf_counter()
        decode_and_warp(batch, device, output_wh)
        sync(device)
        if run >= 2:
            times.append(1000.0 * (time.perf_counter() - t0))
    return statistics.median(times)


def endless(loader: DataLoader, sampler: EpochSampler) -> Iterator[dict]:
    """The loader's batches epoch after epoch (the sampler told each epoch, as the training loop does)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def main() -> None:
    """Parse flags, build data and model, print one line per worker count."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, small model and data, a few steps")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="default 1 4 8 16 (smoke: 0 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (smoke: 4)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per worker count (default 30; smoke 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; smoke 1)")
    parser.add_argument("--images", type=int, default=None, help="JPEGs generated (default 160; smoke 6)")
    parser.add_argument(
        "--gpu-decode-workers", type=int, nargs="*", default=[], help="worker counts to run with --gpu-decode items"
    )
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("train_throughput: skipped, no CUDA device (use --smoke for the CPU smoke test)")
        return
    smoke = args.smoke
    device = torch.device("cpu" if smoke else "cuda")
    workers_list = args.workers or ([0, 1] if smoke else [1, 4, 8, 16])
    batch_size = args.batch_size or (4 if smoke else 32)
    steps, warmup = args.steps or (3 if smoke else 30), args.warmup or (1 if smoke else 5)
    if smoke:
        settings = load_settings("demo", {"model.head.out_channels": 133, "dataset": "coco_wholebody"})
    else:
        settings = load_settings("hrnet_w48_coco_wholebody_384x288_dark_plus")
    amp = None if smoke else torch.bfloat16
    memory_format = torch.contiguous_format if smoke else torch.channels_last
    torch.backends.cudnn.benchmark = True
    meta = load_builtin("coco_wholebody")
    w, h = settings.data.image_size
    with tempfile.TemporaryDirectory() as tmp:
        ann, img_dir = write_wholebody_data(Path(tmp), args.images or (6 if smoke else 160))
        dataset = build_dataset(ann, img_dir, meta, settings.data, train=True, rng_seed=0)
        model = build_model(settings.model).to(device, memory_format=memory_format).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        info = DistInfo(0, 1, 0, device, None)
        print(
            f"{'smoke, CPU' if smoke else torch.cuda.get_device_name(device)}: {settings.model.backbone.type} "
            f"{w}x{h}, {meta.num_keypoints} keypoints, batch {batch_size}, {'bf16' if amp else 'fp32'}, "
            f"{len(dataset)} people in the data set; {warmup} warm-up + {steps} timed steps per worker count"
        )
        codec_ms = decode_ms = None
        encoded = None
        if args.gpu_decode_workers:
            encoded = build_dataset(ann, img_dir, meta, settings.data, train=True, rng_seed=0, encoded=True)
        runs = [(dataset, n, "CPU decode") for n in workers_list]
        runs += [(encoded, n, "GPU decode") for n in args.gpu_decode_workers]
        for data, workers, mode in runs:
            cfg = TrainSettings(batch_size=batch_size, workers=workers, seed=0)
            loader, sampler = build_train_loader(data, cfg, info)
            stream = endless(loader, sampler)
            waited, count, t_start = 0.0, 0, 0.0
            for step in range(warmup + steps):
                if step == warmup:
                    sync(device)
                    waited, count, t_start = 0.0, 0, time.perf_counter()
                t0 = time.perf_counter()
                batch = next(stream)
                waited += time.perf_counter() - t0
                if codec_ms is None and "image" in batch:
                    codec_ms = target_encoding_ms(batch, device, dataset.codec)
                if decode_ms is None and "encoded" in batch:
                    decode_ms = decode_warp_ms(batch, device, (w, h))
                images, target, weight = prepare_train_batch(batch, device, dataset.codec, memory_format)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    heatmaps = model(images)
                loss = model.loss(heatmaps, target, weight)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                count += images.shape[0]
            sync(device)
            seconds = time.perf_counter() - t_start
            print(
                f"{mode}, workers {workers:>2}: {count / seconds:8.1f} samples/s, "
                f"waiting for data {waited / seconds:6.1%} of the step time ({1000 * seconds / steps:.1f} ms/step)"
            )
            del stream, loader  # stops the persistent workers before the next count starts its own
        print(
            f"device target encoding + normalisation of a batch of {batch_size} on {device}: {codec_ms:.2f} ms "
            f"({'wall, synchronised' if device.type == 'cuda' else 'wall'})"
        )
        if decode_ms is not None:
            print(
                f"--gpu-decode: decoding and warping a batch of {batch_size} on {device}: {decode_ms:.2f} ms "
                f"({'nvjpeg + grid_sample, synchronised' if device.type == 'cuda' else 'torchvision on the CPU'})"
            )


if __name__ == "__main__":
    main()
