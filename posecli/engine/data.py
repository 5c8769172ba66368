"""The data of a run: annotation files (given, or synthetic people generated once and cached), the datasets built
from the settings (codec and augmentation made here, handed to the dataset), the epoch sampler and the loaders."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from posecli import __version__
from posecli.atomic import atomic_write_text
from posecli.codec import HeatmapCodec
from posecli.datasets.coco import TopDownCocoDataset
from posecli.datasets.meta import DatasetMeta, resolve_meta
from posecli.engine.distributed import DistInfo, barrier
from posecli.errors import PoseCliError
from posecli.files import cache_root
from posecli.settings import DataSettings, Settings, SyntheticSettings, TrainSettings
from posecli.transforms import TrainAugmentation

VAL_SEED_OFFSET = 1_000_003  # the synthetic validation set uses another seed than the training set


# ------------------------------------------------------------------------------------------- datasets
def build_codec(data: DataSettings, meta: DatasetMeta) -> HeatmapCodec:
    """The heatmap codec of the ``data`` section (input and heatmap size, sigma, DARK encoding, joint weights)."""
    return HeatmapCodec(
        input_wh=(int(data.image_size[0]), int(data.image_size[1])),
        heatmap_wh=tuple(data.heatmap_size),
        sigma=data.sigma,
        unbiased_encoding=data.unbiased_encoding,
        joint_weights=meta.joint_weights if data.use_different_joint_weights else None,
    )


def build_augmentation(data: DataSettings) -> TrainAugmentation:
    """The train augmentation recipe of the ``data`` section."""
    return TrainAugmentation(
        shift_factor=data.shift_factor,
        shift_prob=data.shift_prob,
        flip_prob=data.flip_prob,
        num_joints_half_body=data.num_joints_half_body,
        prob_half_body=data.prob_half_body,
        rot_factor=data.rot_factor,
        scale_factor=data.scale_factor,
        rot_prob=data.rot_prob,
    )


def build_dataset(
    ann_file: str | Path,
    img_dir: str | Path,
    meta: DatasetMeta,
    data: DataSettings,
    train: bool,
    bbox_file: str | Path | None = None,
    det_bbox_thr: float = 0.0,
    rng_seed: int | None = None,
    with_target: bool = False,
    encoded: bool = False,
) -> TopDownCocoDataset:
    """A top-down dataset as the ``data`` settings describe it (augmented when ``train``).

    Training items are uint8 crops for the device (``engine/batch.py`` normalises and encodes them);
    ``with_target=True`` gives the all-on-CPU item instead (normalised image, targets encoded on the CPU);
    ``encoded=True`` (``--gpu-decode``) the encoded file and warp matrix instead of the crop.
    """
    return TopDownCocoDataset(
        ann_file,
        img_dir,
        meta,
        build_codec(data, meta),
        build_augmentation(data) if train else None,
        bbox_file=bbox_file,
        det_bbox_thr=det_bbox_thr,
        rng_seed=rng_seed,
        with_target=with_target,
        allow_outside_img_dir=data.allow_outside_img_dir,
        encoded=encoded,
    )


# ---------------------------------------------------------------------------------------------- files
@dataclass(frozen=True)
class DataFiles:
    """Annotation files and image folders of the run (validation optional)."""

    train_ann: Path
    train_img_dir: Path
    val_ann: Path | None
    val_img_dir: Path | None
    description: str


def synthetic_cache_root() -> Path:
    """Where generated synthetic data sets are cached: $POSECLI_CACHE/synthetic or ~/.cache/posecli/synthetic."""
    return cache_root() / "synthetic"


def prepare_synthetic(synth: SyntheticSettings, info: DistInfo, say: Callable[[str], None]) -> DataFiles:
    """Generate the synthetic train and validation sets once (rank 0, atomically) and reuse them from the cache."""
    from posecli.datasets.synthetic import generate_synthetic_dataset

    spec = {"posecli": __version__, **synth.model_dump(mode="json")}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    root = synthetic_cache_root() / key
    index_file = root / "synthetic.json"
    if info.is_main and not index_file.is_file():
        say(f"generating synthetic {synth.keypoints} people: {synth.num_train} train + {synth.num_val} val")
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root.parent))  # renamed into place when complete
        try:
            common = {"keypoints": synth.keypoints, "image_size": synth.image_size}
            train_ann = generate_synthetic_dataset(tmp / "train", synth.num_train, seed=synth.seed, **common)
            val_seed = synth.seed + VAL_SEED_OFFSET
            val_ann = generate_synthetic_dataset(tmp / "val", synth.num_val, seed=val_seed, **common)
            index = {
                "settings": spec,
                "train_ann": str(Path(train_ann).relative_to(tmp)),
                "val_ann": str(Path(val_ann).relative_to(tmp)),
            }
            atomic_write_text(tmp / "synthetic.json", json.dumps(index, indent=2) + "\n")
            try:
                os.rename(tmp, root)
            except OSError:  # another process finished the same set first: use theirs
                if not index_file.is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    barrier(info)
    index = json.loads(index_file.read_text())
    train_ann, val_ann = root / index["train_ann"], root / index["val_ann"]
    return DataFiles(
        train_ann=train_ann,
        train_img_dir=train_ann.parent / "images",
        val_ann=val_ann,
        val_img_dir=val_ann.parent / "images",
        description=f"synthetic {synth.keypoints} people, {synth.num_train} train / {synth.num_val} val images "
        f"(cached in {root})",
    )


def resolve_data_files(data: DataSettings, info: DistInfo, say: Callable[[str], None]) -> DataFiles:
    """The run's annotation files and image folders: given ones, or the cached synthetic sets."""
    if data.train_ann is None:
        if data.synthetic is None:
            raise PoseCliError(
                "no training data: pass --train-ann ANN.json --train-img-dir DIR (or set data.synthetic in the preset)"
            )
        return prepare_synthetic(data.synthetic, info, say)
    if data.train_img_dir is None:
        raise PoseCliError("--train-ann needs --train-img-dir (the folder its file_name entries are relative to)")
    if (data.val_ann is None) != (data.val_img_dir is None):
        raise PoseCliError("give both --val-ann and --val-img-dir, or neither")
    return DataFiles(
        train_ann=Path(data.train_ann),
        train_img_dir=Path(data.train_img_dir),
        val_ann=Path(data.val_ann) if data.val_ann else None,
        val_img_dir=Path(data.val_img_dir) if data.val_img_dir else None,
        description=f"{data.train_ann}" + (f", validation {data.val_ann}" if data.val_ann else ", no validation set"),
    )


def check_keypoint_counts(settings: Settings, meta: DatasetMeta, datasets: list[TopDownCocoDataset]) -> None:
    """Refuse, before training, a head, dataset meta or annotation file that disagree on the keypoint count."""
    head_k = settings.model.head.out_channels
    if meta.num_keypoints != head_k:
        # with `dataset: null` the meta was read from the training annotations: name that file
        source = settings.data.train_ann if settings.dataset is None else None
        raise PoseCliError(
            f"the dataset meta '{meta.name}' has {meta.num_keypoints} keypoints but the head predicts {head_k} "
            f"(--keypoints / model.head.out_channels); pass --keypoints {meta.num_keypoints} or fix the dataset",
            source,
        )
    for ds in datasets:
        for cat in ds.coco.dataset.get("categories") or []:
            names = cat.get("keypoints")
            if isinstance(names, list) and names and len(names) != head_k:
                raise PoseCliError(
                    f"the annotation category '{cat.get('name', '?')}' lists {len(names)} keypoints but the head "
                    f"predicts {head_k} (--keypoints / model.head.out_channels) and the dataset meta "
                    f"'{meta.name}' has {meta.num_keypoints}; use a matching --keypoints and dataset",
                    ds.ann_file,
                )


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)``: a (seed, epoch)-shuffled order, this process's share, minus the batches done.

    The epoch travels with each index so that the dataset draws augmentation for (seed, epoch, index) even in
    persistent workers; with the order also fixed by (seed, epoch), an epoch is the same however often the run
    was stopped and resumed, and whatever the worker count.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch and how many of this process's samples were already used in it."""
        self.epoch, self.skip = epoch, skip

    def per_rank(self) -> int:
        """Samples per process in a whole epoch (the order is padded so every process gets as many)."""
        return math.ceil(self.size / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank() * self.world_size
        order += order[: total - len(order)]  # pad as DistributedSampler does
        mine = order[self.rank : total : self.world_size]
        return iter([(self.epoch, i) for i in mine[self.skip :]])

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.skip)


class EpochIndexed(Dataset):
    """Dataset adapter for ``EpochSampler``: ``(epoch, index)`` -> the item drawn for that epoch."""

    def __init__(self, dataset: TopDownCocoDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


@dataclass
class RunData:
    """The run's keypoint set, data files and data sets."""

    meta: DatasetMeta
    files: DataFiles
    train_set: TopDownCocoDataset
    val_set: TopDownCocoDataset | None


def build_data(settings: Settings, info: DistInfo, say: Callable[[str], None]) -> RunData:
    """Data files (given or synthetic), the dataset meta and both data sets; keypoint counts checked."""
    files = resolve_data_files(settings.data, info, say)
    meta = resolve_meta(settings.dataset, files.train_ann)
    seed = settings.train.seed
    train_set = build_dataset(
        files.train_ann,
        files.train_img_dir,
        meta,
        settings.data,
        train=True,
        rng_seed=seed,
        encoded=settings.train.gpu_decode,
    )
    val_set = None
    if files.val_ann is not None and files.val_img_dir is not None:
        val_set = build_dataset(
            files.val_ann,
            files.val_img_dir,
            meta,
            settings.data,
            train=False,
            bbox_file=settings.data.bbox_file,
            det_bbox_thr=settings.data.det_bbox_thr,
            with_target=False,
        )
    check_keypoint_counts(settings, meta, [d for d in (train_set, val_set) if d is not None])
    if len(train_set) == 0:
        raise PoseCliError(
            "the training annotations hold no usable person (box with labelled keypoints)", files.train_ann
        )
    return RunData(meta, files, train_set, val_set)


def default_workers(distributed: bool = False) -> int:
    """Data-loading workers per process: the CPU cores this process may use (its affinity), shared among the
    processes torchrun starts on this machine (``LOCAL_WORLD_SIZE``), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))) if distributed else 1
    return max(1, cores // max(1, per_node))


def loader_options(workers: int, device: torch.device) -> dict[str, Any]:
    """DataLoader keywords for ``workers`` processes: pinned memory on CUDA, prefetch depth, persistent workers."""
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        # at least 8 batches in flight in all (2 per worker, torch's default, from 4 workers on): a slow batch
        # (a large image, a cold disk) does not stall the step
        options["prefetch_factor"] = max(2, math.ceil(8 / workers))
    return options


def build_train_loader(
    dataset: TopDownCocoDataset, cfg: TrainSettings, info: DistInfo
) -> tuple[DataLoader, EpochSampler]:
    """Shuffled batches of this process's share: workers (default: one per available core), pinned memory on
    CUDA, persistent workers (the epoch travels with each index, so their augmentation follows the epoch)."""
    sampler = EpochSampler(len(dataset), shuffle=True, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    workers = default_workers(info.distributed) if cfg.workers is None else cfg.workers
    loader = DataLoader(
        EpochIndexed(dataset),
        batch_size=cfg.batch_size,
        sampler=sampler,
        persistent_workers=workers > 0,
        drop_last=False,  # as MMPose
        **loader_options(workers, info.device),
    )
    return loader, sampler


def make_loader(
    dataset: Dataset, batch_size: int, device: torch.device, workers: int | None = 0, distributed: bool = False
) -> DataLoader:
    """Sequential batches (a DistributedSampler share per rank in DDP); ``workers`` None = one per available core."""
    sampler = DistributedSampler(dataset, shuffle=False, drop_last=False) if distributed else None
    if workers is None:
        workers = default_workers(distributed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        drop_last=False,
        **loader_options(workers, device),
    )
