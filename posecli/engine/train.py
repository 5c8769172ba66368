"""The fine-tuning loop: settings -> model (checkpoint loaded, head transplanted) -> train and evaluate -> work dir.

Reads top to bottom. ``finetune`` sets up (processes and device, data, model, optimizer, resume state) and
runs the epochs; ``Trainer.train_one_epoch`` is the inner loop (set lr -> forward -> loss check -> backward
-> clip -> step -> log); after an epoch come evaluation, ``best.pth``, ``last.pth`` and ``curves.png``.

The work dir (DESIGN.md): ``config.yaml`` (resolved settings), ``log.jsonl`` (one JSON object per logged
step and per evaluation), ``last.pth`` (resumable: model, optimizer, scheduler, grad scaler, RNG states,
progress, best metric), ``best.pth`` (weights and meta of the best evaluation), ``curves.png``.
Under ``torchrun`` every process trains its share of each batch (DDP); rank 0 alone prints and writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from posecli import __version__
from posecli.atomic import atomic_write_text, check_writable_dir
from posecli.checkpoints import checkpoint_meta, load_into_model, load_weights_only, save_checkpoint
from posecli.datasets.coco import TopDownCocoDataset
from posecli.datasets.meta import DatasetMeta, resolve_meta
from posecli.engine.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
)
from posecli.engine.schedule import LrScheduler, build_optimizer
from posecli.errors import PoseCliError
from posecli.metrics import sigma_warnings
from posecli.models.topdown import TopDown, build_model, count_parameters
from posecli.plots import plot_curves
from posecli.settings import DataSettings, Settings, SyntheticSettings, TrainSettings, settings_to_yaml

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
LAST_CKPT = "last.pth"
BEST_CKPT = "best.pth"
CURVES_FILE = "curves.png"
# What the weights mean: resuming with any of these changed is refused.
RESUME_MUST_MATCH = ("dataset", "model", "data.image_size", "data.heatmap_size", "data.train_ann", "data.synthetic")
METRIC_NAMES = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
METRIC_NAMES += ("PCK@0.05", "PCK@0.1", "PCK@0.2", "AUC", "EPE")  # and <part>_AP / <part>_AR for COCO-WholeBody
LOWER_IS_BETTER = ("EPE", "loss")  # metric names where smaller wins (AP, AR, PCK, AUC: larger wins)
VAL_SEED_OFFSET = 1_000_003  # the synthetic validation set uses another seed than the training set


# ---------------------------------------------------------------------------------------------- state
@dataclass
class TrainState:
    """Progress a checkpoint carries: where to continue, and the best evaluation so far."""

    epoch: int = 0  # completed epochs
    global_iter: int = 0  # completed iterations (all epochs)
    epoch_iter: int = 0  # iterations done inside the running epoch (non-zero only in a Ctrl-C checkpoint)
    best_value: float | None = None
    best_epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # of the latest evaluation

    def to_meta(self, metric: str) -> dict[str, Any]:
        """The checkpoint ``meta`` entries of this state (``epoch``, ``iter`` as MMPose names them)."""
        return {
            "epoch": self.epoch,
            "iter": self.global_iter,
            "epoch_iter": self.epoch_iter,
            "best": {"metric": metric, "value": self.best_value, "epoch": self.best_epoch},
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TrainState:
        """Read back what ``to_meta`` wrote."""
        best = meta.get("best") or {}
        return cls(
            epoch=int(meta.get("epoch", 0)),
            global_iter=int(meta.get("iter", 0)),
            epoch_iter=int(meta.get("epoch_iter", 0)),
            best_value=best.get("value"),
            best_epoch=best.get("epoch"),
            metrics=dict(meta.get("metrics") or {}),
        )


@dataclass
class FinetuneSummary:
    """What a fine-tuning run did, for the caller (the CLI prints it; tests and tools read it)."""

    work_dir: Path
    epochs: int
    iterations: int
    metric: str
    before: dict[str, float] | None  # evaluation of the loaded model, when asked for
    after: dict[str, float]  # the latest evaluation
    best_value: float | None
    best_epoch: int | None
    seconds: float


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as plain data (tensors, lists, numbers) that load with weights_only=True."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": [str(np_state[0]), np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [int(py_state[0]), list(py_state[1]), py_state[2]],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------- data
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
    root = os.environ.get("POSECLI_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "posecli") / "synthetic"


def prepare_synthetic(synth: SyntheticSettings, info: DistInfo, console: Console) -> DataFiles:
    """Generate the synthetic train and validation sets once (rank 0, atomically) and reuse them from the cache."""
    from posecli.datasets.synthetic import generate_synthetic_dataset

    spec = {"posecli": __version__, **synth.model_dump(mode="json")}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    root = synthetic_cache_root() / key
    index_file = root / "synthetic.json"
    if info.is_main and not index_file.is_file():
        console.print(f"generating synthetic {synth.keypoints} people: {synth.num_train} train + {synth.num_val} val")
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


def resolve_data_files(data: DataSettings, info: DistInfo, console: Console) -> DataFiles:
    """The run's annotation files and image folders: given ones, or the cached synthetic sets."""
    if data.train_ann is None:
        if data.synthetic is None:
            raise PoseCliError(
                "no training data: pass --train-ann ANN.json --train-img-dir DIR (or set data.synthetic in the preset)"
            )
        return prepare_synthetic(data.synthetic, info, console)
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


# ---------------------------------------------------------------------------------------------- model
def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` = bf16 on CUDA where supported, else off; fp16 needs CUDA."""
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if amp == "fp16" and device.type != "cuda":
        raise PoseCliError("--amp fp16 needs a CUDA device (use --amp bf16 or none on the CPU)")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def set_backbone_frozen(model: TopDown, frozen: bool) -> None:
    """Stop (or restart) gradients through the backbone; frozen, it also keeps its BN statistics."""
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)


def set_train_mode(model: TopDown, backbone_frozen: bool, freeze_bn: bool) -> None:
    """Train mode, except BN layers that must keep their statistics (frozen backbone, --freeze-bn)."""
    model.train()
    if backbone_frozen:
        model.backbone.eval()
    if freeze_bn:  # MMPose's norm_eval: running statistics fixed, affine parameters still learn
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.eval()


def describe_load(console: Console, source: str, mode: str, report: Any) -> None:
    """Print what loading the starting checkpoint did: counts, transplanted rows, fresh keypoints."""
    console.print(f"{mode} [bold]{source}[/] ({report.format}): {report.summary()}")
    if report.row_map:
        names = report.new_names or []
        kept = {i for i, _ in report.row_map}
        renamed = [f"{r['name']}<-{r['from_name']}" for r in report.transplanted_rows() if r["name"] != r["from_name"]]
        console.print(f"  head: {len(report.row_map)} of {len(names) or '?'} keypoint rows transplanted by name")
        if renamed:
            console.print(f"  mapped: {', '.join(renamed[:8])}{' ...' if len(renamed) > 8 else ''}")
        fresh = [n for i, n in enumerate(names) if i not in kept]
        if fresh:
            console.print(f"  new keypoints (fresh init): {', '.join(fresh[:10])}{' ...' if len(fresh) > 10 else ''}")
    elif report.reinitialized:
        console.print(f"  re-initialised: {', '.join(report.reinitialized)}")


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


# ---------------------------------------------------------------------------------------------- logging
class RunLog:
    """``log.jsonl`` (rank 0, one line per record, flushed), TensorBoard when installed, records for the curves."""

    def __init__(self, work_dir: Path, enabled: bool) -> None:
        self.path = work_dir / LOG_FILE
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        self.tb: Any = None
        if enabled:
            with contextlib.suppress(ImportError):  # TensorBoard is optional
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(work_dir / "tensorboard"))

    def resume(self, state: TrainState) -> None:
        """Keep only the records up to the resumed point (a later, lost part of the run is dropped)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rec = json.loads(line)
                if rec.get("iter", 0) <= state.global_iter and rec.get("epoch", 0) <= state.epoch + 1:
                    kept.append(rec)
        self.records = kept
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if not self.enabled:
            return
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("iter", 0)
            for key, value in record.items():
                if key in ("loss", "lr", "data_time", "step_time", "grad_norm"):
                    self.tb.add_scalar(f"{record['type']}/{key}", value, step)
            for key, value in (record.get("metrics") or {}).items():
                self.tb.add_scalar(f"val/{key}", value, step)

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.tb is not None:
            self.tb.close()


class InterruptFlag:
    """First Ctrl-C asks the loop to stop after the current step (and save); a second one aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> InterruptFlag:
        with contextlib.suppress(ValueError):  # not the main thread: no handler, Ctrl-C aborts
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _Interrupted(Exception):
    """Raised inside the loop when a Ctrl-C asked it to stop."""


def metrics_table(metrics: dict[str, float], title: str) -> Table:
    """Evaluation metrics as a Rich table, MMPose's names as columns."""
    table = Table(title=title, title_justify="left")
    wanted = ["AP", "AP .5", "AP .75", "AR", *(k for k in metrics if k.endswith("_AP")), "PCK@0.2", "EPE"]
    keys = [k for k in wanted if k in metrics]
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(*(f"{metrics[k]:.4f}" for k in keys))
    return table


# ---------------------------------------------------------------------------------------------- trainer
@dataclass
class Trainer:
    """Everything the loop touches, built once by ``finetune``."""

    settings: Settings
    info: DistInfo
    console: Console
    work_dir: Path
    meta: DatasetMeta
    raw: TopDown  # the bare model: checkpoints, evaluation
    model: nn.Module  # what trains: raw, or DDP / torch.compile around it
    optimizer: torch.optim.Optimizer
    scheduler: LrScheduler
    scaler: torch.amp.GradScaler
    loader: DataLoader
    sampler: EpochSampler
    val_set: TopDownCocoDataset | None
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    log: RunLog
    interrupt: InterruptFlag
    state: TrainState = field(default_factory=TrainState)

    @property
    def train_cfg(self) -> TrainSettings:
        """The ``train`` section."""
        return self.settings.train

    @property
    def metric(self) -> str:
        """The metric that picks best.pth."""
        return self.train_cfg.save_best

    # ------------------------------------------------------------------------------------- one epoch
    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """Train epoch ``epoch`` (0-based) from ``state.epoch_iter``; returns its mean loss and times."""
        cfg, device, state = self.train_cfg, self.info.device, self.state
        frozen = epoch < cfg.freeze_backbone_epochs
        set_backbone_frozen(self.raw, frozen)
        set_train_mode(self.raw, frozen, cfg.freeze_bn)
        self.sampler.set_epoch(epoch, skip=state.epoch_iter * cfg.batch_size)
        steps_in_epoch = math.ceil(self.sampler.per_rank() / cfg.batch_size)
        clip_params = [p for p in self.raw.parameters() if p.requires_grad]

        sums = {"loss": 0.0, "data_time": 0.0, "step_time": 0.0}
        window = {"loss": 0.0, "data_time": 0.0, "step_time": 0.0, "n": 0}
        grad_norm: torch.Tensor | None = None
        done_before = state.epoch_iter
        progress = self._progress()
        task = progress.add_task(
            "", total=steps_in_epoch, completed=done_before, epoch=epoch + 1, loss=0.0, lr=0.0, data=0.0, step=0.0
        )
        t_end = time.perf_counter()
        with progress:
            for batch in self.loader:
                t_data = time.perf_counter() - t_end  # waiting for the loader: large values mean data-bound
                lrs = self.scheduler.step(epoch, state.global_iter)
                images = batch["image"].to(device, non_blocking=True, memory_format=self.memory_format)  # (B,3,H,W)
                target = batch["target"].to(device, non_blocking=True)  # (B, K, h, w)
                weight = batch["target_weight"].to(device, non_blocking=True)  # (B, K, 1)
                try:
                    loss_value, stop, grad_norm = self._step(images, target, weight, epoch, clip_params)
                    oom_batch = 0
                except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError in torch >= 2.5
                    oom_batch = images.shape[0]  # handled below, once the failed step's tensors are released
                if oom_batch:
                    images = target = weight = batch = None  # type: ignore[assignment]
                    self._out_of_memory(oom_batch)
                state.global_iter += 1
                state.epoch_iter += 1
                t_step = time.perf_counter() - t_end - t_data

                for key, value in (("loss", loss_value), ("data_time", t_data), ("step_time", t_step)):
                    sums[key] += value
                    window[key] += value
                window["n"] += 1
                last = state.epoch_iter == steps_in_epoch
                if state.global_iter % cfg.log_interval == 0 or last:
                    n = window["n"]
                    self.log.write(
                        {
                            "type": "train",
                            "epoch": epoch + 1,
                            "iter": state.global_iter,
                            "epoch_float": round(epoch + state.epoch_iter / steps_in_epoch, 4),
                            "lr": lrs[-1],  # the head's; the backbone's is lr x backbone_lr_mult
                            "loss": window["loss"] / n,
                            "data_time": window["data_time"] / n,
                            "step_time": window["step_time"] / n,
                            **({"grad_norm": float(grad_norm)} if grad_norm is not None else {}),
                            **self._memory(),
                        }
                    )
                    window = {"loss": 0.0, "data_time": 0.0, "step_time": 0.0, "n": 0}
                progress.update(task, advance=1, loss=loss_value, lr=lrs[-1], data=t_data, step=t_step, epoch=epoch + 1)
                t_end = time.perf_counter()
                if stop:
                    raise _Interrupted
        steps = max(1, state.epoch_iter - done_before)
        return {k: v / steps for k, v in sums.items()}

    def _step(
        self,
        images: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor,
        epoch: int,
        clip_params: list[nn.Parameter],
    ) -> tuple[float, bool, torch.Tensor | None]:
        """One optimisation step: (mean loss over processes, stop requested, gradient norm when clipping)."""
        cfg, device = self.train_cfg, self.info.device
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            heatmaps = self.model(images)  # (B, K, h, w)
        loss = self.raw.loss(heatmaps, target, weight)  # fp32 inside
        loss_value, stop = self._mean_loss_and_stop(loss)  # CPU-GPU sync point, once per step
        if not math.isfinite(loss_value):
            self._non_finite(loss_value, epoch)
        self.scaler.scale(loss).backward()
        grad_norm = None
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            grad_norm = nn.utils.clip_grad_norm_(clip_params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, stop, grad_norm

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("epoch {task.fields[epoch]}/" + str(self.train_cfg.total_epochs)),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.6f}  lr {task.fields[lr]:.2e}"),
            TextColumn("data {task.fields[data]:.3f}s step {task.fields[step]:.3f}s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not (self.info.is_main and self.console.is_terminal),
        )

    def _mean_loss_and_stop(self, loss: torch.Tensor) -> tuple[float, bool]:
        """Mean loss over processes and whether any process was asked to stop (all agree on both)."""
        flag = 1.0 if self.interrupt.requested else 0.0
        packed = torch.stack([loss.detach().float(), torch.tensor(flag, device=loss.device)])
        all_reduce_sum(packed, self.info)
        loss_sum, stops = packed.tolist()
        return loss_sum / self.info.world_size, stops > 0

    def stop_requested(self) -> bool:
        """Whether Ctrl-C reached any process (all processes agree, so they stop together)."""
        flag = torch.tensor(1.0 if self.interrupt.requested else 0.0, device=self.info.device)
        return all_reduce_sum(flag, self.info).item() > 0

    def _memory(self) -> dict[str, float]:
        if self.info.device.type != "cuda":
            return {}
        return {"memory_mb": round(torch.cuda.max_memory_allocated(self.info.device) / 2**20, 1)}

    def _non_finite(self, loss_value: float, epoch: int) -> None:
        it = self.state.global_iter + 1
        last = self.work_dir / LAST_CKPT
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        self.log.write({"type": "error", "epoch": epoch + 1, "iter": it, "error": f"non-finite loss {loss_value}"})
        raise PoseCliError(
            f"training stopped: the loss is {loss_value} at iteration {it} (epoch {epoch + 1}, step "
            f"{self.state.epoch_iter + 1} of the epoch); nothing was saved after it and {kept}. "
            "Lower the learning rate (--lr), set --grad-clip, or check the data."
        )

    def _out_of_memory(self, batch: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        image_wh = tuple(self.settings.data.image_size)
        fits = largest_batch_that_fits(
            self.raw,
            image_wh,
            batch,
            self.info.device,
            self.amp_dtype,
            self.memory_format,  # type: ignore[arg-type]
        )
        amp = {None: "no autocast", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.amp_dtype]
        hint = f"the largest that fits is about {fits}: pass --batch-size {fits}" if fits else "not even 1 fits"
        raise PoseCliError(
            f"CUDA out of memory at batch size {batch} per GPU (input {image_wh[0]}x{image_wh[1]}, {amp}, "
            f"{torch.cuda.get_device_name(self.info.device)}); {hint}"
            + (" (and --auto-scale-lr to keep the lr in step)" if fits and self.train_cfg.auto_scale_lr is None else "")
        )

    # ------------------------------------------------------------------------------------ evaluation
    def evaluate(self, epoch: int, title: str) -> dict[str, float]:
        """Evaluate the bare model on the validation set (every process its share, gathered); print and log."""
        from posecli.engine.evaluate import evaluate_model

        assert self.val_set is not None
        broadcast_buffers(self.raw, self.info)  # every process evaluates the weights rank 0 saves
        metrics, _ = evaluate_model(
            self.raw,
            self.val_set,
            self.settings.test,
            self.meta,
            self.info.device,
            workers=self.train_cfg.workers,
            amp_dtype=self.amp_dtype,
            dist_info=self.info,
        )
        metrics = broadcast_object({k: float(v) for k, v in metrics.items()}, self.info)
        if self.metric not in metrics:
            raise PoseCliError(
                f"train.save_best '{self.metric}' is not a metric of this evaluation (choose one of: "
                f"{', '.join(metrics)})"
            )
        self.state.metrics = metrics
        warnings = sigma_warnings(self.meta)  # defaulted sigmas: said with every evaluation, as `evaluate` does
        record = {"type": "val", "epoch": epoch, "iter": self.state.global_iter, "metrics": metrics}
        self.log.write({**record, "warnings": warnings} if warnings else record)
        if self.info.is_main:
            self.console.print(metrics_table(metrics, title))
            for text in warnings:
                self.console.print(Text(f"warning: {text}", style="yellow"))
        return metrics

    def is_better(self, value: float) -> bool:
        """Whether ``value`` of the key metric beats the best so far."""
        if self.state.best_value is None:
            return True
        if any(word in self.metric for word in LOWER_IS_BETTER):
            return value < self.state.best_value
        return value > self.state.best_value

    # ----------------------------------------------------------------------------------- checkpoints
    def save(self, name: str, full: bool) -> None:
        """Write a checkpoint atomically (rank 0); ``full`` adds what resuming needs. Every process must call it."""
        rng = all_gather_objects(capture_rng(), self.info)  # one entry per rank: each resumes its own streams
        if not self.info.is_main:
            return
        meta = checkpoint_meta(self.settings, self.meta, self.state.epoch, self.state.global_iter, self.state.metrics)
        meta.update(self.state.to_meta(self.metric))
        extra: dict[str, Any] = {}
        if full:
            extra = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
            }
        save_checkpoint(self.work_dir / name, self.raw.state_dict(), meta, **extra)

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a full checkpoint's model, optimizer, scaler, progress and RNG states (before DDP wrapping)."""
        self.raw.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["initial_lr"] = base  # the current settings' lr applies from here on
        self.scheduler.load_state_dict(ckpt.get("scheduler", {}))
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState.from_meta(ckpt["meta"])
        rng = ckpt.get("rng") or []
        if len(rng) == self.info.world_size:
            restore_rng(rng[self.info.rank])
        else:
            seed_everything(self.train_cfg.seed + self.info.rank + 1000 * self.state.epoch)
            self.console.print(
                f"[yellow]note:[/] the checkpoint holds RNG states of {len(rng)} processes, this run has "
                f"{self.info.world_size}: reseeded (the data order is still the same)"
            )


# ---------------------------------------------------------------------------------------------- resume
def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_leaves(sub, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def resume_conflicts(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting in RESUME_MUST_MATCH that differs."""
    changes = []
    for key in RESUME_MUST_MATCH:
        old, new = _leaves(_get(saved, key), key), _leaves(_get(current, key), key)
        for leaf in sorted(set(old) | set(new)):
            if old.get(leaf) != new.get(leaf):
                changes.append(f"{leaf}: {old.get(leaf)!r} -> {new.get(leaf)!r}")
    return changes


def load_resume_checkpoint(path: Path, settings: Settings, meta: DatasetMeta) -> dict[str, Any]:
    """Read a last.pth to resume from, refusing one that is not resumable or was trained on other settings."""
    if not path.is_file():
        raise PoseCliError("nothing to resume: checkpoint not found", path)
    ckpt = load_weights_only(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("meta"), dict) or "optimizer" not in ckpt:
        raise PoseCliError(
            "cannot resume from this file: it is not a resumable posecli checkpoint (use last.pth)", path
        )
    saved_settings = ckpt["meta"].get("settings") or {}
    changes = resume_conflicts(saved_settings, settings.model_dump(mode="json"))
    saved_names = (ckpt["meta"].get("dataset_meta") or {}).get("keypoint_names")
    if saved_names is not None and saved_names != meta.keypoint_names:
        changes.append(f"dataset keypoints: {len(saved_names)} -> {meta.num_keypoints} names")
    if changes:
        shown = "; ".join(changes[:4]) + (f"; ... ({len(changes)} changes)" if len(changes) > 4 else "")
        raise PoseCliError(
            f"cannot resume: settings that define the model and data changed since this checkpoint ({shown}); "
            "resume with the original settings, or start a new run in another --work-dir",
            path,
        )
    return ckpt


# ---------------------------------------------------------------------------------------------- the run
def finetune(
    settings: Settings,
    work_dir: Path,
    device: str = "auto",
    resume: str | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> FinetuneSummary:
    """Fine-tune per ``settings`` into ``work_dir``; ``resume`` = 'auto' (work_dir/last.pth) or a path."""
    info = init_distributed(device)
    try:
        return _finetune(settings, Path(work_dir), info, resume, overwrite, console)
    finally:
        cleanup_distributed(info)


@dataclass
class RunData:
    """The run's keypoint set, data files and data sets."""

    meta: DatasetMeta
    files: DataFiles
    train_set: TopDownCocoDataset
    val_set: TopDownCocoDataset | None


def build_data(settings: Settings, info: DistInfo, console: Console) -> RunData:
    """Data files (given or synthetic), the dataset meta and both data sets; keypoint counts checked."""
    files = resolve_data_files(settings.data, info, console)
    meta = resolve_meta(settings.dataset, files.train_ann)
    seed = settings.train.seed
    train_set = TopDownCocoDataset(files.train_ann, files.train_img_dir, meta, settings.data, train=True, rng_seed=seed)
    val_set = None
    if files.val_ann is not None and files.val_img_dir is not None:
        val_set = TopDownCocoDataset(
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


def build_train_loader(
    dataset: TopDownCocoDataset, cfg: TrainSettings, info: DistInfo
) -> tuple[DataLoader, EpochSampler]:
    """Shuffled batches of this process's share; pinned memory and persistent workers where they help."""
    sampler = EpochSampler(len(dataset), shuffle=True, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    loader = DataLoader(
        EpochIndexed(dataset),
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=info.device.type == "cuda",  # page-locked batches copy to the GPU asynchronously
        persistent_workers=cfg.workers > 0,
        drop_last=False,  # as MMPose
    )
    return loader, sampler


def build_start_model(
    settings: Settings, meta: DatasetMeta, info: DistInfo, console: Console, load_weights: bool
) -> tuple[TopDown, torch.memory_format]:
    """The model with load_from / pretrained loaded (rank 0; DDP hands its weights to the others), on the device."""
    cfg = settings.train
    raw = build_model(settings.model)
    if load_weights and info.is_main:
        source, mode = (cfg.load_from, "load_from") if cfg.load_from else (cfg.pretrained, "pretrained")
        if source:
            report = load_into_model(raw, source, mode=mode, meta=meta, keypoint_map=cfg.keypoint_map)  # type: ignore[arg-type]
            describe_load(console, source, mode, report)
        else:
            console.print("[yellow]note:[/] no load_from / pretrained: training from random initialisation")
    if cfg.sync_bn and info.distributed:
        if info.device.type == "cuda":
            raw = nn.SyncBatchNorm.convert_sync_batchnorm(raw)  # type: ignore[assignment]
        else:
            console.print("[yellow]note:[/] --sync-bn needs CUDA; the CPU (gloo) run keeps per-process BatchNorm")
    memory_format = (
        torch.channels_last if (info.device.type == "cuda" and cfg.channels_last) else torch.contiguous_format
    )
    return raw.to(info.device, memory_format=memory_format), memory_format


def describe_run(trainer: Trainer, data: RunData, lr: float, lr_note: str) -> None:
    """Print the set-up: device and precision, data, model, batch and schedule."""
    cfg, info, console, memory_format = trainer.train_cfg, trainer.info, trainer.console, trainer.memory_format
    amp_text = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16 + grad scaler"}[trainer.amp_dtype]
    console.print(
        f"device {info.device}, {info.world_size} process{'es' if info.distributed else ''}"
        f"{f' ({info.backend})' if info.backend else ''}, autocast {amp_text}"
        f"{', channels_last' if memory_format == torch.channels_last else ''}{', torch.compile' if cfg.compile else ''}"
    )
    for note in data.meta.notes:  # inferred names, defaulted sigmas, dropped skeleton links
        console.print(Text(f"note: dataset meta: {note}", style="yellow" if "sigma" in note else ""))
    num_val = len(data.val_set) if data.val_set is not None else 0
    console.print(f"data: {data.files.description}; {len(data.train_set)} training people, {num_val} validation people")
    size = trainer.settings.data.image_size
    console.print(
        f"model: {count_parameters(trainer.raw) / 1e6:.2f} M parameters, {data.meta.num_keypoints} keypoints "
        f"({data.meta.name}), input {size[0]}x{size[1]}"
    )
    sched = cfg.lr_config
    console.print(
        f"global batch {cfg.batch_size * info.world_size} ({info.world_size} x {cfg.batch_size}), lr {lr:.3g}{lr_note}"
        f"{f', backbone x{cfg.backbone_lr_mult:g}' if cfg.backbone_lr_mult != 1 else ''}, {cfg.optimizer.type}, "
        f"{sched.policy} schedule{f' {sched.step} x{sched.gamma:g}' if sched.policy == 'step' else ''}"
        f"{f', {sched.warmup} warmup {sched.warmup_iters} iters' if sched.warmup else ''}, "
        f"{cfg.total_epochs} epochs of {len(trainer.loader)} steps"
    )
    if cfg.freeze_backbone_epochs:
        console.print(f"backbone frozen for the first {cfg.freeze_backbone_epochs} epochs (the head trains alone)")
    if data.val_set is None:
        console.print("[yellow]note:[/] no validation set: no evaluation and no best.pth")


def _finetune(
    settings: Settings,
    work_dir: Path,
    info: DistInfo,
    resume: str | None,
    overwrite: bool,
    console: Console | None,
) -> FinetuneSummary:
    t_start = time.perf_counter()
    cfg = settings.train
    console = console or Console(highlight=False)
    if not info.is_main:
        console = Console(quiet=True)

    # ------------------------------------------------------------------------------- set up
    if info.is_main:  # a read-only path or a file fails now, not after the setup work
        check_writable_dir(work_dir, "--work-dir")
    resume_path = (work_dir / LAST_CKPT) if resume == "auto" else (Path(resume) if resume else None)
    if resume_path is None and (work_dir / LAST_CKPT).exists() and not overwrite:
        raise PoseCliError(
            "the work dir already holds a run (last.pth): continue it with --resume, start again with --overwrite, "
            "or choose another --work-dir",
            work_dir,
        )
    if cfg.save_best not in METRIC_NAMES and not cfg.save_best.endswith(("_AP", "_AR")):
        raise PoseCliError(f"--save-best '{cfg.save_best}' is not a metric posecli reports ({', '.join(METRIC_NAMES)})")
    seed_everything(cfg.seed + info.rank)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once
    data = build_data(settings, info, console)
    ckpt = load_resume_checkpoint(resume_path, settings, data.meta) if resume_path is not None else None
    loader, sampler = build_train_loader(data.train_set, cfg, info)
    raw, memory_format = build_start_model(settings, data.meta, info, console, load_weights=ckpt is None)
    amp_dtype = resolve_amp(cfg.amp, info.device)

    lr, lr_note = cfg.optimizer.lr, ""
    if cfg.auto_scale_lr is not None:  # linear scaling rule: lr x global batch / base batch
        global_batch = cfg.batch_size * info.world_size
        lr = cfg.optimizer.lr * global_batch / cfg.auto_scale_lr
        lr_note = f" (--auto-scale-lr: {cfg.optimizer.lr:g} x {global_batch}/{cfg.auto_scale_lr})"
    optimizer = build_optimizer(raw, cfg.optimizer, lr, cfg.backbone_lr_mult)
    trainer = Trainer(
        settings=settings,
        info=info,
        console=console,
        work_dir=work_dir,
        meta=data.meta,
        raw=raw,
        model=raw,
        optimizer=optimizer,
        scheduler=LrScheduler(optimizer, cfg.lr_config, cfg.total_epochs),
        scaler=torch.amp.GradScaler(info.device.type, enabled=amp_dtype == torch.float16),
        loader=loader,
        sampler=sampler,
        val_set=data.val_set,
        amp_dtype=amp_dtype,
        memory_format=memory_format,
        log=RunLog(work_dir, enabled=info.is_main),
        interrupt=InterruptFlag(),
    )
    if ckpt is not None:
        trainer.restore(ckpt)
        trainer.log.resume(trainer.state)
        console.print(
            f"resumed from {resume_path}: {trainer.state.epoch} epochs, {trainer.state.global_iter} iterations done"
            + (f" (+{trainer.state.epoch_iter} steps into the next)" if trainer.state.epoch_iter else "")
        )
    if info.distributed:
        trainer.model = DistributedDataParallel(
            raw,
            device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=cfg.freeze_backbone_epochs > 0,  # a frozen backbone gets no gradients
        )
    if cfg.compile:
        trainer.model = torch.compile(trainer.model)  # type: ignore[assignment]
    if info.is_main:  # all set up without error: only now touch the work dir
        work_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is None:  # a new run (--overwrite, or a failed run without last.pth): drop the old run's files
            for name in (LOG_FILE, BEST_CKPT, CURVES_FILE, LAST_CKPT):
                (work_dir / name).unlink(missing_ok=True)
        atomic_write_text(work_dir / CONFIG_FILE, settings_to_yaml(settings))
    describe_run(trainer, data, lr, lr_note)

    # ------------------------------------------------------------------------------- epochs
    state, metric = trainer.state, trainer.metric
    before: dict[str, float] | None = None
    if cfg.eval_before_train and ckpt is None and data.val_set is not None:
        before = trainer.evaluate(0, "before fine-tuning (epoch 0)")
    if state.epoch >= cfg.total_epochs:
        console.print(f"nothing to do: already trained for {state.epoch} epochs (raise --epochs to continue)")
    with trainer.interrupt:
        try:
            for epoch in range(state.epoch, cfg.total_epochs):
                if epoch == cfg.freeze_backbone_epochs and cfg.freeze_backbone_epochs:
                    console.print(f"epoch {epoch + 1}: backbone unfrozen")
                t_epoch = time.perf_counter()
                stats = trainer.train_one_epoch(epoch)
                state.epoch, state.epoch_iter = epoch + 1, 0
                data_share = stats["data_time"] / max(1e-9, stats["data_time"] + stats["step_time"])
                console.print(
                    f"epoch {epoch + 1}/{cfg.total_epochs}  loss {stats['loss']:.6f}  "
                    f"lr {optimizer.param_groups[-1]['lr']:.2e}  data {stats['data_time']:.3f}s  "
                    f"step {stats['step_time']:.3f}s  ({time.perf_counter() - t_epoch:.0f}s)"
                    + (
                        f"  [yellow]data-bound: loading takes {data_share:.0%} of the time (--workers)[/]"
                        if data_share > 0.4 and len(loader) > 2
                        else ""
                    )
                )
                due = (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.total_epochs
                if due and data.val_set is not None:
                    metrics = trainer.evaluate(epoch + 1, f"validation after epoch {epoch + 1}")
                    if trainer.is_better(metrics[metric]):
                        state.best_value, state.best_epoch = metrics[metric], epoch + 1
                        trainer.save(BEST_CKPT, full=False)
                        console.print(f"best {metric} {state.best_value:.4f}: saved {work_dir / BEST_CKPT}")
                trainer.save(LAST_CKPT, full=True)  # after evaluation: it also carries the best so far
                if info.is_main:
                    plot_curves(trainer.log.records, work_dir / CURVES_FILE, metric=metric)
                if trainer.stop_requested():
                    raise _Interrupted
        except _Interrupted:
            trainer.save(LAST_CKPT, full=True)
            console.print(
                f"[yellow]interrupted[/] after {state.global_iter} iterations (epoch {state.epoch + 1}"
                f"{f', step {state.epoch_iter}' if state.epoch_iter else ''}): saved a resumable "
                f"{work_dir / LAST_CKPT}; continue with the same command and --resume"
            )
            raise KeyboardInterrupt from None
        finally:
            trainer.log.close()

    seconds = time.perf_counter() - t_start
    if state.metrics:
        line = f"{metric} " + (f"before fine-tuning {before[metric]:.4f} -> " if before is not None else "")
        line += f"after {state.metrics[metric]:.4f}"
        if state.best_epoch is not None:
            line += f" (best {state.best_value:.4f} at epoch {state.best_epoch})"
        console.print(f"[bold]{line}[/]")
    console.print(
        f"done in {seconds:.0f}s; {work_dir}: {CONFIG_FILE}, {LOG_FILE}, {LAST_CKPT}"
        f"{', ' + BEST_CKPT if state.best_epoch is not None else ''}, {CURVES_FILE}"
    )
    return FinetuneSummary(
        work_dir=work_dir,
        epochs=state.epoch,
        iterations=state.global_iter,
        metric=metric,
        before=before,
        after=state.metrics,
        best_value=state.best_value,
        best_epoch=state.best_epoch,
        seconds=seconds,
    )


def run_finetune_command(
    settings: Settings, work_dir: Path, device: str = "auto", resume: str | None = None, overwrite: bool = False
) -> FinetuneSummary | None:
    """``posecli finetune``: run ``finetune``; processes other than rank 0 end errors quietly (rank 0 reports)."""
    try:
        return finetune(settings, work_dir, device=device, resume=resume, overwrite=overwrite)
    except PoseCliError:
        if int(os.environ.get("RANK", "0")) != 0:
            raise SystemExit(2) from None
        raise
