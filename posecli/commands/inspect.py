"""``posecli inspect-checkpoint``: describe a checkpoint and, with --preset, what finetune --load-from would do."""

from __future__ import annotations

import json
from typing import Any

import torch

from posecli.checkpoints import describe_checkpoint, plan_load, read_checkpoint, resolve_source
from posecli.datasets.meta import DatasetMeta, resolve_meta
from posecli.errors import PoseCliError
from posecli.models import build_model
from posecli.options import InspectOptions
from posecli.report import download_bar, print_inspect
from posecli.settings import Settings, load_settings


def run(opts: InspectOptions) -> dict[str, Any]:
    """Describe the checkpoint (a table, or one JSON object); with a preset add the load plan into its model."""
    settings = None
    if opts.preset is not None:
        overrides = {"model.head.out_channels": opts.keypoints} if opts.keypoints else {}
        settings = load_settings(opts.preset, overrides)
    path = resolve_source(opts.checkpoint, opts.cache_dir, timeout=opts.timeout, progress=download_bar)
    ckpt = read_checkpoint(path)
    info = describe_checkpoint(path, ckpt)
    report = None
    if settings is not None:
        report = plan_load(_target_state_for(settings), ckpt, "load_from", _settings_meta(settings), opts.keypoint_map)
        info.update(report.to_dict())
        info["format"] = ckpt.format  # the report's format is the same; keep the key order readable
    if opts.as_json:
        print(json.dumps(info, indent=2))
    else:
        print_inspect(info, report)
    if report is not None and report.refusal:
        raise PoseCliError(f"finetune --load-from would refuse: {report.refusal}", path)
    return info


def _target_state_for(settings: Settings) -> dict[str, torch.Tensor]:
    """The state_dict shapes of the model a preset builds (on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        model = build_model(settings.model)
    return model.state_dict()


def _settings_meta(settings: Settings) -> DatasetMeta | None:
    ann = settings.data.train_ann or settings.data.val_ann
    if settings.dataset is None and ann is None:
        return None
    return resolve_meta(settings.dataset, ann)
