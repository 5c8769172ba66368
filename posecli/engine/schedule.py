"""Learning-rate schedule with MMPose 0.x / mmcv 1.x semantics, and the optimizer's parameter groups.

mmcv's ``LrUpdaterHook`` (by epoch) works in two layers, reproduced here as pure functions:

- the *regular* lr is fixed for a whole epoch and depends on the 0-based epoch only
  (``step``: ``base * gamma ** (number of steps <= epoch)``; ``cosine``: annealed from ``base`` to
  ``min_lr`` over ``total_epochs``; ``fixed``: ``base``);
- during the first ``warmup_iters`` iterations (0-based global iteration ``it``) the lr is replaced by
  ``regular * (1 - (1 - it / warmup_iters) * (1 - warmup_ratio))`` (linear) or
  ``regular * warmup_ratio`` (constant); from ``it == warmup_iters`` on it is the regular lr.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from posecli.settings import LrConfig, OptimizerSettings


def regular_lr(cfg: LrConfig, base_lr: float, epoch: int, total_epochs: int) -> float:
    """The lr of a whole (0-based) epoch, before warmup."""
    if cfg.policy == "step":
        # mmcv: exp = number of steps passed; an int step means "every `step` epochs"
        steps = cfg.step
        passed = epoch // steps if isinstance(steps, int) else sum(1 for s in steps if epoch >= s)
        return base_lr * cfg.gamma**passed
    if cfg.policy == "cosine":
        factor = epoch / total_epochs
        return cfg.min_lr + 0.5 * (base_lr - cfg.min_lr) * (math.cos(math.pi * factor) + 1)
    return base_lr  # fixed


def warmup_factor(cfg: LrConfig, global_iter: int) -> float:
    """Multiplier of the regular lr at a (0-based) global iteration; 1.0 once warmup is over."""
    if cfg.warmup is None or global_iter >= cfg.warmup_iters:
        return 1.0
    if cfg.warmup == "constant":
        return cfg.warmup_ratio
    k = (1 - global_iter / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
    return 1 - k


def lr_at(cfg: LrConfig, base_lr: float, epoch: int, global_iter: int, total_epochs: int) -> float:
    """The lr mmcv would set before training (0-based) iteration ``global_iter`` of (0-based) ``epoch``."""
    return regular_lr(cfg, base_lr, epoch, total_epochs) * warmup_factor(cfg, global_iter)


class LrScheduler:
    """Sets every parameter group's lr from its own base lr before each iteration (no hidden state)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: LrConfig, total_epochs: int) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.total_epochs = total_epochs
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]

    def step(self, epoch: int, global_iter: int) -> list[float]:
        """Apply the lr for this iteration to every group; returns the lrs set."""
        lrs = [lr_at(self.cfg, base, epoch, global_iter, self.total_epochs) for base in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to explain the schedule it was saved under."""
        return {"base_lrs": list(self.base_lrs), "cfg": self.cfg.model_dump(mode="json")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: the lr is a pure function of (epoch, iteration) and the current settings."""
        # The base lrs come from the (possibly changed) current settings on purpose: resuming with a
        # new --lr applies it from the next iteration on.
        del state


def split_backbone_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters of ``model.backbone`` and of everything else (the head)."""
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    backbone = [p for p in model.parameters() if id(p) in backbone_ids]
    head = [p for p in model.parameters() if id(p) not in backbone_ids]
    return backbone, head


def build_optimizer(
    model: nn.Module, cfg: OptimizerSettings, lr: float, backbone_lr_mult: float
) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD over two groups: the backbone at ``lr * backbone_lr_mult``, the head at ``lr``."""
    backbone, head = split_backbone_head(model)
    groups: list[dict[str, Any]] = [
        {"params": backbone, "lr": lr * backbone_lr_mult, "initial_lr": lr * backbone_lr_mult, "name": "backbone"},
        {"params": head, "lr": lr, "initial_lr": lr, "name": "head"},
    ]
    if cfg.type == "Adam":
        return torch.optim.Adam(groups, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.type == "AdamW":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
