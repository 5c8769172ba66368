"""The fine-tuning loop: settings -> model (checkpoint loaded, head transplanted) -> train and evaluate -> work dir.

Reads top to bottom. ``finetune`` sets up (processes and device, data, model, optimizer, resume state) and
runs the epochs; ``Trainer.train_one_epoch`` is the inner loop (set lr -> forward -> loss check -> backward
-> clip -> step -> log); after an epoch come evaluation, ``best.pth``, ``last.pth`` and ``curves.png``.
The work dir's files, run state, log and resume checks are in ``workdir.py``; data sets and loaders in ``data.py``.
Under ``torchrun`` every process trains its share of each batch (DDP); rank 0 alone reports and writes.
The loop prints nothing itself: it tells a ``TrainReport`` (``report.RichTrainReport`` in the CLI).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from posecli.atomic import atomic_write_text, check_writable_dir
from posecli.checkpoints import checkpoint_meta, load_into_model, save_checkpoint
from posecli.datasets.coco import TopDownCocoDataset
from posecli.datasets.meta import DatasetMeta
from posecli.engine.batch import largest_batch_that_fits, prepare_train_batch
from posecli.engine.data import EpochSampler, build_data, build_train_loader
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
from posecli.engine.events import SilentReport, TrainReport
from posecli.engine.schedule import LrScheduler, build_optimizer
from posecli.engine.workdir import (
    BEST_CKPT,
    CONFIG_FILE,
    CURVES_FILE,
    LAST_CKPT,
    LOG_FILE,
    InterruptFlag,
    RunLog,
    TrainState,
    _Interrupted,
    capture_rng,
    load_resume_checkpoint,
    restore_rng,
    seed_everything,
)
from posecli.errors import PoseCliError
from posecli.metrics import EXTRA_NAMES, STAT_NAMES, sigma_warnings
from posecli.models.topdown import TopDown, build_model
from posecli.plots import plot_curves
from posecli.settings import Settings, TrainSettings, settings_to_yaml

METRIC_NAMES = STAT_NAMES + EXTRA_NAMES  # and <part>_AP / <part>_AR for COCO-WholeBody
LOWER_IS_BETTER = ("EPE", "loss")  # metric names where smaller wins (AP, AR, PCK, AUC: larger wins)


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


# ---------------------------------------------------------------------------------------------- trainer
@dataclass
class Trainer:
    """Everything the loop touches, built once by ``finetune``."""

    settings: Settings
    info: DistInfo
    report: TrainReport
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
        window = {"data_time": 0.0, "step_time": 0.0, "n": 0}
        # The loss stays on the device: summed there and read (all-reduced under DDP) once per log interval and at
        # the epoch's end, so a step never waits for the GPU to finish. The non-finite guard runs at those points.
        window_loss = torch.zeros((), device=device)
        window_first = state.global_iter + 1  # first iteration of the window, for the non-finite error
        loss_value = math.nan  # the latest window's mean loss, shown by the bar until the next read
        grad_norm: torch.Tensor | None = None
        done_before = state.epoch_iter
        codec = self.loader.dataset.dataset.codec  # type: ignore[attr-defined]  # EpochIndexed -> dataset
        bar = self.report.epoch_bar(epoch + 1, cfg.total_epochs, steps_in_epoch, done_before)
        t_end = time.perf_counter()
        with bar as update_bar:
            for batch in self.loader:
                t_data = time.perf_counter() - t_end  # waiting for the loader: large values mean data-bound
                lrs = self.scheduler.step(epoch, state.global_iter)
                # (B, 3, H, W) normalised, (B, K, h, w) targets, (B, K, 1) weights: made here, on the device
                images, target, weight = prepare_train_batch(batch, device, codec, self.memory_format)
                try:
                    loss, grad_norm = self._step(images, target, weight, clip_params)
                    oom_batch = 0
                except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError in torch >= 2.5
                    oom_batch = images.shape[0]  # handled below, once the failed step's tensors are released
                if oom_batch:
                    images = target = weight = batch = None  # type: ignore[assignment]
                    self._out_of_memory(oom_batch)
                window_loss += loss
                state.global_iter += 1
                state.epoch_iter += 1
                t_step = time.perf_counter() - t_end - t_data

                for key, value in (("data_time", t_data), ("step_time", t_step)):
                    sums[key] += value
                    window[key] += value
                window["n"] += 1
                last = state.epoch_iter == steps_in_epoch
                # one process stops on its own flag at once; processes together agree at the log points
                stop = self.interrupt.requested and not self.info.distributed
                if state.global_iter % cfg.log_interval == 0 or last:
                    n = window["n"]
                    loss_sum, stop_all = self._sum_loss_and_stop(window_loss)  # the one sync of the window
                    stop = stop or stop_all
                    if not math.isfinite(loss_sum):
                        self._non_finite(loss_sum / n, epoch, window_first, state.global_iter, n)
                    loss_value = loss_sum / n
                    sums["loss"] += loss_sum
                    self.log.write(
                        {
                            "type": "train",
                            "epoch": epoch + 1,
                            "iter": state.global_iter,
                            "epoch_float": round(epoch + state.epoch_iter / steps_in_epoch, 4),
                            "lr": lrs[-1],  # the head's; the backbone's is lr x backbone_lr_mult
                            "loss": loss_value,
                            "data_time": window["data_time"] / n,
                            "step_time": window["step_time"] / n,
                            **({"grad_norm": float(grad_norm)} if grad_norm is not None else {}),
                            **self._memory(),
                        }
                    )
                    window = {"data_time": 0.0, "step_time": 0.0, "n": 0}
                    window_loss = torch.zeros((), device=device)
                    window_first = state.global_iter + 1
                update_bar(loss_value, lrs[-1], t_data, t_step)
                t_end = time.perf_counter()
                if stop:
                    if window["n"]:  # steps since the last check: the guard runs before anything is saved
                        loss_sum, _ = self._sum_loss_and_stop(window_loss)
                        if not math.isfinite(loss_sum):
                            self._non_finite(
                                loss_sum / window["n"], epoch, window_first, state.global_iter, window["n"]
                            )
                    raise _Interrupted
        steps = max(1, state.epoch_iter - done_before)
        return {k: v / steps for k, v in sums.items()}

    def _step(
        self,
        images: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor,
        clip_params: list[nn.Parameter],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimisation step: (this process's loss, detached, on the device; gradient norm when clipping)."""
        cfg, device = self.train_cfg, self.info.device
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            heatmaps = self.model(images)  # (B, K, h, w)
        loss = self.raw.loss(heatmaps, target, weight)  # fp32 inside
        self.scaler.scale(loss).backward()
        grad_norm = None
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            grad_norm = nn.utils.clip_grad_norm_(clip_params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().float(), grad_norm

    def _sum_loss_and_stop(self, loss_sum: torch.Tensor) -> tuple[float, bool]:
        """A window's loss sum, averaged over processes, and whether any process was asked to stop (one all-reduce)."""
        flag = 1.0 if self.interrupt.requested else 0.0
        packed = torch.stack([loss_sum.float(), torch.tensor(flag, device=loss_sum.device)])
        all_reduce_sum(packed, self.info)
        total, stops = packed.tolist()  # CPU-GPU sync point, once per log interval
        return total / self.info.world_size, stops > 0

    def stop_requested(self) -> bool:
        """Whether Ctrl-C reached any process (all processes agree, so they stop together)."""
        flag = torch.tensor(1.0 if self.interrupt.requested else 0.0, device=self.info.device)
        return all_reduce_sum(flag, self.info).item() > 0

    def _memory(self) -> dict[str, float]:
        if self.info.device.type != "cuda":
            return {}
        return {"memory_mb": round(torch.cuda.max_memory_allocated(self.info.device) / 2**20, 1)}

    def _non_finite(self, loss_value: float, epoch: int, first: int, last: int, steps: int) -> None:
        """Stop on a non-finite loss found at a check point, naming the iterations it may come from."""
        step_last = self.state.epoch_iter
        step_first = step_last - steps + 1
        where = (
            f"at iteration {last} (epoch {epoch + 1}, step {step_last} of the epoch)"
            if first == last
            else f"in iterations {first}-{last} (epoch {epoch + 1}, steps {step_first}-{step_last} of the epoch; "
            "the loss is read every --log-interval steps)"
        )
        path = self.work_dir / LAST_CKPT
        kept = f"the last good checkpoint is {path}" if path.is_file() else "no checkpoint was written yet"
        self.log.write(
            {
                "type": "error",
                "epoch": epoch + 1,
                "iter": last,
                "first_iter": first,
                "error": f"non-finite loss {loss_value}",
            }
        )
        raise PoseCliError(
            f"training stopped: the loss is {loss_value} {where}; nothing was saved after it and {kept}. "
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
        self.report.validation(metrics, title, warnings)
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
            self.report.note(
                f"the checkpoint holds RNG states of {len(rng)} processes, this run has "
                f"{self.info.world_size}: reseeded (the data order is still the same)"
            )


# ---------------------------------------------------------------------------------------------- the run
def finetune(
    settings: Settings,
    work_dir: Path,
    device: str = "auto",
    resume: str | None = None,
    overwrite: bool = False,
    report: TrainReport | None = None,
) -> FinetuneSummary:
    """Fine-tune per ``settings`` into ``work_dir``; ``resume`` = 'auto' (work_dir/last.pth) or a path.

    ``report`` is told what happens (rank 0 only); without one the run is silent.
    """
    info = init_distributed(device)
    try:
        summary = _finetune(settings, Path(work_dir), info, resume, overwrite, report)
        barrier(info)  # every rank is done with its collectives before the group goes
        return summary
    finally:
        cleanup_distributed(info)


def build_start_model(
    settings: Settings, meta: DatasetMeta, info: DistInfo, report: TrainReport, load_weights: bool
) -> tuple[TopDown, torch.memory_format]:
    """The model with load_from / pretrained loaded (rank 0; DDP hands its weights to the others), on the device."""
    cfg = settings.train
    raw = build_model(settings.model)
    if load_weights and info.is_main:
        source, mode = (cfg.load_from, "load_from") if cfg.load_from else (cfg.pretrained, "pretrained")
        if source:
            loaded = load_into_model(
                raw,
                source,
                mode=mode,
                meta=meta,
                keypoint_map=cfg.keypoint_map,
                progress=report.download,  # type: ignore[arg-type]
            )
            report.loaded(source, mode, loaded)
        else:
            report.note("no load_from / pretrained: training from random initialisation")
    if cfg.sync_bn and info.distributed:
        if info.device.type == "cuda":
            raw = nn.SyncBatchNorm.convert_sync_batchnorm(raw)  # type: ignore[assignment]
        else:
            report.note("--sync-bn needs CUDA; the CPU (gloo) run keeps per-process BatchNorm")
    memory_format = (
        torch.channels_last if (info.device.type == "cuda" and cfg.channels_last) else torch.contiguous_format
    )
    return raw.to(info.device, memory_format=memory_format), memory_format


def _finetune(
    settings: Settings,
    work_dir: Path,
    info: DistInfo,
    resume: str | None,
    overwrite: bool,
    report: TrainReport | None,
) -> FinetuneSummary:
    t_start = time.perf_counter()
    cfg = settings.train
    if report is None or not info.is_main:
        report = SilentReport()

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
    if cfg.gpu_decode and info.device.type != "cuda":
        raise PoseCliError(f"--gpu-decode needs a CUDA device (nvjpeg decodes on the GPU); this run has {info.device}")
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once
    data = build_data(settings, info, report.message)
    ckpt = load_resume_checkpoint(resume_path, settings, data.meta) if resume_path is not None else None
    loader, sampler = build_train_loader(data.train_set, cfg, info)
    raw, memory_format = build_start_model(settings, data.meta, info, report, load_weights=ckpt is None)
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
        report=report,
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
        report.message(
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
    report.run_setup(trainer, data, lr, lr_note)

    # ------------------------------------------------------------------------------- epochs
    state, metric = trainer.state, trainer.metric
    before: dict[str, float] | None = None
    if cfg.eval_before_train and ckpt is None and data.val_set is not None:
        before = trainer.evaluate(0, "before fine-tuning (epoch 0)")
    if state.epoch >= cfg.total_epochs:
        report.message(f"nothing to do: already trained for {state.epoch} epochs (raise --epochs to continue)")
    with trainer.interrupt:
        try:
            for epoch in range(state.epoch, cfg.total_epochs):
                if epoch == cfg.freeze_backbone_epochs and cfg.freeze_backbone_epochs:
                    report.message(f"epoch {epoch + 1}: backbone unfrozen")
                t_epoch = time.perf_counter()
                stats = trainer.train_one_epoch(epoch)
                state.epoch, state.epoch_iter = epoch + 1, 0
                data_share = stats["data_time"] / max(1e-9, stats["data_time"] + stats["step_time"])
                lr_now, seconds = optimizer.param_groups[-1]["lr"], time.perf_counter() - t_epoch
                data_bound = data_share > 0.4 and len(loader) > 2
                report.epoch_done(epoch + 1, cfg.total_epochs, stats, lr_now, seconds, data_bound)
                due = (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.total_epochs
                if due and data.val_set is not None:
                    metrics = trainer.evaluate(epoch + 1, f"validation after epoch {epoch + 1}")
                    if trainer.is_better(metrics[metric]):
                        state.best_value, state.best_epoch = metrics[metric], epoch + 1
                        trainer.save(BEST_CKPT, full=False)
                        report.message(f"best {metric} {state.best_value:.4f}: saved {work_dir / BEST_CKPT}")
                trainer.save(LAST_CKPT, full=True)  # after evaluation: it also carries the best so far
                if info.is_main:
                    plot_curves(trainer.log.records, work_dir / CURVES_FILE, metric=metric)
                if trainer.stop_requested():
                    raise _Interrupted
        except _Interrupted:
            trainer.save(LAST_CKPT, full=True)
            report.interrupted(
                f"after {state.global_iter} iterations (epoch {state.epoch + 1}"
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
        report.result(line)
    report.message(
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
