"""The lr schedule follows mmcv 1.x (MMPose 0.x) numbers; the optimizer has backbone and head groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from posecli.engine.schedule import LrScheduler, build_optimizer, lr_at, regular_lr, split_backbone_head, warmup_factor
from posecli.settings import LrConfig, OptimizerSettings

# The MMPose recipe: Adam 5e-4, steps at 170 and 200, 500 linear warmup iterations from 0.001 x lr.
RECIPE = LrConfig(policy="step", step=[170, 200], gamma=0.1, warmup="linear", warmup_iters=500, warmup_ratio=0.001)


def test_linear_warmup_matches_mmcv_formula() -> None:
    # mmcv: k = (1 - it / warmup_iters) * (1 - ratio); lr = regular * (1 - k), it = runner.iter (0-based)
    assert lr_at(RECIPE, 5e-4, 0, 0, 210) == pytest.approx(5e-7, rel=1e-12)
    assert lr_at(RECIPE, 5e-4, 0, 250, 210) == pytest.approx(5e-4 * (1 - 0.5 * 0.999), rel=1e-12)  # 2.5025e-4
    assert lr_at(RECIPE, 5e-4, 0, 499, 210) == pytest.approx(4.99001e-4, rel=1e-9)
    assert lr_at(RECIPE, 5e-4, 0, 500, 210) == 5e-4  # it == warmup_iters: the regular lr
    assert lr_at(RECIPE, 5e-4, 3, 10_000, 210) == 5e-4


def test_step_policy_counts_passed_steps() -> None:
    assert regular_lr(RECIPE, 5e-4, 169, 210) == 5e-4
    assert regular_lr(RECIPE, 5e-4, 170, 210) == pytest.approx(5e-5)
    assert regular_lr(RECIPE, 5e-4, 199, 210) == pytest.approx(5e-5)
    assert regular_lr(RECIPE, 5e-4, 200, 210) == pytest.approx(5e-6)
    assert regular_lr(RECIPE, 5e-4, 209, 210) == pytest.approx(5e-6)


def test_warmup_scales_the_decayed_lr() -> None:
    # warmup still running when the first step passes: mmcv multiplies the *regular* (decayed) lr
    cfg = LrConfig(policy="step", step=[1], gamma=0.5, warmup="linear", warmup_iters=100, warmup_ratio=0.1)
    assert lr_at(cfg, 1.0, 1, 50, 10) == pytest.approx(0.5 * (1 - 0.5 * 0.9))


def test_constant_warmup_and_no_warmup() -> None:
    cfg = LrConfig(policy="fixed", warmup="constant", warmup_iters=10, warmup_ratio=0.25)
    assert [lr_at(cfg, 2.0, 0, it, 5) for it in (0, 9, 10)] == [0.5, 0.5, 2.0]
    none = LrConfig(policy="step", step=[2], warmup=None)
    assert warmup_factor(none, 0) == 1.0
    assert lr_at(none, 1.0, 0, 0, 5) == 1.0


def test_cosine_anneals_per_epoch_to_min_lr() -> None:
    cfg = LrConfig(policy="cosine", min_lr=1e-5, warmup=None)
    assert regular_lr(cfg, 1e-3, 0, 10) == pytest.approx(1e-3)
    assert regular_lr(cfg, 1e-3, 5, 10) == pytest.approx((1e-3 + 1e-5) / 2)
    assert regular_lr(cfg, 1e-3, 9, 10) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.9)))


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.keypoint_head = nn.Conv2d(4, 2, 1)


@pytest.mark.parametrize("kind", ["Adam", "AdamW", "SGD"])
def test_optimizer_groups_and_scheduler(kind: str) -> None:
    model = _Tiny()
    opt = build_optimizer(model, OptimizerSettings(type=kind, lr=1e-3, weight_decay=1e-4), 1e-3, backbone_lr_mult=0.1)
    assert type(opt).__name__ == kind
    backbone, head = split_backbone_head(model)
    assert len(backbone) == 4 and len(head) == 2  # conv w/b + bn w/b; head conv w/b
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head"]
    assert opt.param_groups[0]["params"] == backbone and opt.param_groups[1]["params"] == head
    sched = LrScheduler(opt, LrConfig(policy="step", step=[1], gamma=0.1, warmup="linear", warmup_iters=4), 3)
    lrs = sched.step(epoch=0, global_iter=2)  # halfway through warmup
    factor = 1 - 0.5 * (1 - 0.001)
    assert lrs == pytest.approx([1e-4 * factor, 1e-3 * factor])
    assert [g["lr"] for g in opt.param_groups] == lrs
    assert sched.step(epoch=1, global_iter=40) == pytest.approx([1e-5, 1e-4])
    if kind == "SGD":
        assert opt.param_groups[0]["momentum"] == 0.9


def test_schedule_drives_a_real_step() -> None:
    # the lr the scheduler sets is the one the optimizer applies: SGD without momentum moves w by lr * grad
    model = _Tiny()
    opt = build_optimizer(model, OptimizerSettings(type="SGD", lr=0.5, momentum=0.0), 0.5, backbone_lr_mult=1.0)
    sched = LrScheduler(opt, LrConfig(policy="fixed", warmup="linear", warmup_iters=2, warmup_ratio=0.2), 1)
    sched.step(0, 0)  # lr = 0.5 * 0.2
    before = model.keypoint_head.bias.detach().clone()
    model.keypoint_head.bias.grad = torch.ones(2)
    opt.step()
    assert torch.allclose(before - model.keypoint_head.bias.detach(), torch.full((2,), 0.1))


def test_int_step_means_every_n_epochs_as_in_mmcv() -> None:
    from posecli.engine.schedule import regular_lr
    from posecli.settings import LrConfig

    cfg = LrConfig(policy="step", step=2, gamma=0.5, warmup=None)
    assert [regular_lr(cfg, 1.0, e, 10) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    listed = LrConfig(policy="step", step=[2], gamma=0.5, warmup=None)
    assert [regular_lr(listed, 1.0, e, 10) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
