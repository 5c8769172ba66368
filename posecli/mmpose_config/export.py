"""Write posecli settings as an MMPose 0.x config ``.py``: model, data_cfg, pipelines, test_cfg, dataset_info, schedule.

The file is what MMPose 0.29's ``mmcv.Config.fromfile`` and ``build_posenet`` expect; a posecli checkpoint loads
into the model it describes with ``strict=True``. Settings MMPose has no word for (the synthetic demo data, AMP,
seeds, ...) go into one ``posecli = dict(...)`` at the end, which MMPose ignores and ``presets import`` reads back.
"""

from __future__ import annotations

import keyword
from typing import Any

from posecli.datasets.meta import DatasetMeta
from posecli.mmpose_config.parse import load_config_text
from posecli.mmpose_config.to_settings import IMAGENET_MEAN, IMAGENET_STD, config_to_settings
from posecli.settings import Settings

WIDTH = 100  # line length of the written config
DATASET_TYPES = {"coco": "TopDownCocoDataset", "coco_wholebody": "TopDownCocoWholeBodyDataset"}
DEFAULT_COLOR = [255, 128, 0]


class _Raw:
    """Python source written as is (a name such as ``data_cfg`` or ``list(range(17))``)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str, _Raw))


def _inline(v: Any) -> str:
    if isinstance(v, _Raw):
        return v.text
    if isinstance(v, dict):
        if all(isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k) for k in v):
            return "dict(" + ", ".join(f"{k}={_inline(x)}" for k, x in v.items()) + ")"
        return "{" + ", ".join(f"{_inline(k)}: {_inline(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_inline(x) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(_inline(x) for x in v) + (", )" if len(v) == 1 else ")")
    return repr(v)


def _fmt(v: Any, indent: int = 0, used: int = 0) -> str:
    """Python source for ``v`` starting ``used`` columns into a line indented by ``indent``; wrapped at WIDTH."""
    one = _inline(v)
    if used + len(one) <= WIDTH or _is_scalar(v):
        return one
    pad = " " * (indent + 4)
    if isinstance(v, dict):
        if one.startswith("dict("):
            items = [f"{pad}{k}={_fmt(x, indent + 4, len(pad) + len(k) + 2)}" for k, x in v.items()]
            return "dict(\n" + ",\n".join(items) + ")"
        items = [f"{pad}{_inline(k)}: {_fmt(x, indent + 4, len(pad) + len(_inline(k)) + 3)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + ",\n" + " " * indent + "}"
    opening, closing = ("[", "]") if isinstance(v, list) else ("(", ")")
    if all(_is_scalar(x) for x in v):  # pack numbers and short strings into lines
        lines, line = [], ""
        for x in map(_inline, v):
            candidate = f"{line} {x}," if line else f"{x},"
            if line and len(pad) + len(candidate) > WIDTH:
                lines.append(line)
                candidate = f"{x},"
            line = candidate
        lines.append(line)
        return opening + "\n" + "\n".join(pad + ln for ln in lines) + "\n" + " " * indent + closing
    items = [pad + _fmt(x, indent + 4, len(pad) + 1) for x in v]
    return opening + "\n" + ",\n".join(items) + ",\n" + " " * indent + closing


def dataset_info_of(meta: DatasetMeta) -> dict[str, Any]:
    """DatasetMeta -> MMPose 0.x ``dataset_info`` dict (keypoint_info with swap/type, skeleton_info by name)."""
    swap = {a: b for a, b in meta.flip_pairs} | {b: a for a, b in meta.flip_pairs}
    upper, lower = set(meta.upper_body_ids), set(meta.lower_body_ids)
    names = meta.keypoint_names
    keypoint_info = {
        i: {
            "name": name,
            "id": i,
            "color": list(meta.keypoint_color[i]) if i < len(meta.keypoint_color) else DEFAULT_COLOR,
            "type": "upper" if i in upper else "lower" if i in lower else "",
            "swap": names[swap[i]] if i in swap else "",
        }
        for i, name in enumerate(names)
    }
    skeleton_info = {
        i: {
            "link": (names[a], names[b]),
            "id": i,
            "color": list(meta.skeleton_color[i]) if i < len(meta.skeleton_color) else DEFAULT_COLOR,
        }
        for i, (a, b) in enumerate(meta.skeleton)
    }
    return {
        "dataset_name": meta.name,
        "paper_info": {},
        "keypoint_info": keypoint_info,
        "skeleton_info": skeleton_info,
        "joint_weights": [float(w) for w in meta.joint_weights],
        "sigmas": [float(s) for s in meta.sigmas],
    }


def _model(s: Settings) -> dict[str, Any]:
    backbone: dict[str, Any] = {"type": "HRNet", "in_channels": s.model.backbone.in_channels}
    extra: dict[str, Any] = {}
    for i, stage in enumerate(s.model.backbone.extra.stages, start=1):
        spec = stage.model_dump(mode="json", exclude_none=True)
        if spec.get("fuse_method") == "SUM":
            del spec["fuse_method"]  # MMPose's default
        spec["num_blocks"], spec["num_channels"] = tuple(spec["num_blocks"]), tuple(spec["num_channels"])
        extra[f"stage{i}"] = spec
    backbone_extra = s.model.backbone.extra
    for name, spec in type(backbone_extra).model_fields.items():  # e.g. HRNetV2's upsample (MMPose reads every key)
        value = getattr(backbone_extra, name)
        default = spec.get_default(call_default_factory=True)
        if not name.startswith("stage") and value != default:
            extra[name] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    backbone["extra"] = extra
    if s.model.backbone.frozen_stages != -1:
        backbone["frozen_stages"] = s.model.backbone.frozen_stages
    if s.train.sync_bn:
        backbone["norm_cfg"] = {"type": "SyncBN", "requires_grad": True}
    if s.train.freeze_bn:
        backbone["norm_eval"] = True

    h = s.model.head
    head: dict[str, Any] = {"type": "TopdownHeatmapSimpleHead", "in_channels": h.in_channels}
    for name, default in (("in_index", 0), ("input_transform", None), ("align_corners", False)):
        value = getattr(h, name, default)
        if value != default:
            head[name] = tuple(value) if isinstance(value, list) else value
    head["out_channels"] = _Raw("channel_cfg['num_output_channels']")
    head["num_deconv_layers"] = h.num_deconv_layers
    if h.num_deconv_layers:
        head["num_deconv_filters"] = tuple(h.num_deconv_filters[: h.num_deconv_layers])
        head["num_deconv_kernels"] = tuple(h.num_deconv_kernels[: h.num_deconv_layers])
    head_extra: dict[str, Any] = {"final_conv_kernel": h.final_conv_kernel}
    if getattr(h, "num_conv_layers", 0):
        head_extra["num_conv_layers"] = h.num_conv_layers
        head_extra["num_conv_kernels"] = tuple(h.num_conv_kernels or [1] * h.num_conv_layers)
    head["extra"] = head_extra
    loss = h.loss_keypoint
    head["loss_keypoint"] = {
        "type": loss.type,
        "use_target_weight": loss.use_target_weight,
        "loss_weight": loss.loss_weight,
    }
    t = s.test
    return {
        "type": "TopDown",
        "pretrained": s.train.pretrained,
        "backbone": backbone,
        "keypoint_head": head,
        "train_cfg": {},
        "test_cfg": {
            "flip_test": t.flip_test,
            "post_process": None if t.post_process == "none" else t.post_process,
            "shift_heatmap": t.shift_heatmap,
            "modulate_kernel": t.modulate_kernel,
        },
    }


def _pipelines(s: Settings) -> tuple[list[Any], list[Any]]:
    d = s.data
    normalize = {"type": "NormalizeTensor", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    train = [
        {"type": "LoadImageFromFile"},
        {"type": "TopDownGetBboxCenterScale", "padding": 1.25},
        {"type": "TopDownRandomShiftBboxCenter", "shift_factor": d.shift_factor, "prob": d.shift_prob},
        {"type": "TopDownRandomFlip", "flip_prob": d.flip_prob},
        {
            "type": "TopDownHalfBodyTransform",
            "num_joints_half_body": d.num_joints_half_body,
            "prob_half_body": d.prob_half_body,
        },
        {
            "type": "TopDownGetRandomScaleRotation",
            "rot_factor": d.rot_factor,
            "scale_factor": d.scale_factor,
            "rot_prob": d.rot_prob,
        },
        {"type": "TopDownAffine"},
        {"type": "ToTensor"},
        normalize,
        {"type": "TopDownGenerateTarget", "sigma": d.sigma, "unbiased_encoding": d.unbiased_encoding},
        {
            "type": "Collect",
            "keys": ["img", "target", "target_weight"],
            "meta_keys": [
                "image_file", "joints_3d", "joints_3d_visible", "center", "scale", "rotation", "bbox_score",
                "flip_pairs",
            ],
        },
    ]  # fmt: skip
    val = [
        {"type": "LoadImageFromFile"},
        {"type": "TopDownGetBboxCenterScale", "padding": 1.25},
        {"type": "TopDownAffine"},
        {"type": "ToTensor"},
        dict(normalize),
        {
            "type": "Collect",
            "keys": ["img"],
            "meta_keys": ["image_file", "center", "scale", "rotation", "bbox_score", "flip_pairs"],
        },
    ]
    return train, val


def _mmpose_part(s: Settings, meta: DatasetMeta) -> list[tuple[str, Any]]:
    """The MMPose config as (name, value) assignments, in MMPose's usual order."""
    k = s.model.head.out_channels
    d, t, tr = s.data, s.test, s.train
    lr = tr.lr_config
    lr_config: dict[str, Any] = {"policy": {"step": "step", "cosine": "CosineAnnealing", "fixed": "fixed"}[lr.policy]}
    if lr.warmup is not None:
        lr_config.update(warmup=lr.warmup, warmup_iters=lr.warmup_iters, warmup_ratio=lr.warmup_ratio)
    else:
        lr_config["warmup"] = None
    if lr.policy == "step":
        lr_config.update(step=lr.step, gamma=lr.gamma)
    elif lr.policy == "cosine":
        lr_config["min_lr"] = lr.min_lr
    opt: dict[str, Any] = {"type": tr.optimizer.type, "lr": tr.optimizer.lr, "weight_decay": tr.optimizer.weight_decay}
    if tr.optimizer.type == "SGD":
        opt["momentum"] = tr.optimizer.momentum
    else:
        opt["betas"] = tuple(tr.optimizer.betas)
    train_pipeline, val_pipeline = _pipelines(s)
    dataset_type = DATASET_TYPES.get(str(s.dataset), "TopDownCocoDataset")

    def split(ann: str | None, img: str | None, pipeline: str) -> dict[str, Any]:
        part: dict[str, Any] = {"type": dataset_type}
        if ann is not None:
            part["ann_file"] = ann
        if img is not None:
            part["img_prefix"] = img
        part.update(
            data_cfg=_Raw("data_cfg"), pipeline=_Raw(pipeline), dataset_info=_Raw("dataset_info")
        )  # fmt: skip
        return part

    return [
        ("log_level", "INFO"),
        ("load_from", tr.load_from),
        ("resume_from", None),
        ("dist_params", {"backend": "nccl"}),
        ("workflow", [("train", 1)]),
        ("checkpoint_config", {"interval": tr.eval_interval}),
        ("evaluation", {"interval": tr.eval_interval, "metric": "mAP", "save_best": tr.save_best}),
        ("optimizer", opt),
        ("optimizer_config", {"grad_clip": None if tr.grad_clip is None else {"max_norm": tr.grad_clip}}),
        ("lr_config", lr_config),
        ("total_epochs", tr.total_epochs),
        ("log_config", {"interval": tr.log_interval, "hooks": [{"type": "TextLoggerHook"}]}),
        (
            "channel_cfg",
            {
                "num_output_channels": k,
                "dataset_joints": k,
                "dataset_channel": [_Raw(f"list(range({k}))")],
                "inference_channel": _Raw(f"list(range({k}))"),
            },
        ),
        ("model", _model(s)),
        (
            "data_cfg",
            {
                "image_size": list(d.image_size),
                "heatmap_size": list(d.heatmap_size),
                "num_output_channels": _Raw("channel_cfg['num_output_channels']"),
                "num_joints": _Raw("channel_cfg['dataset_joints']"),
                "dataset_channel": _Raw("channel_cfg['dataset_channel']"),
                "inference_channel": _Raw("channel_cfg['inference_channel']"),
                "use_different_joint_weights": d.use_different_joint_weights,
                "soft_nms": t.soft_nms,
                "use_nms": t.use_nms,
                "nms_thr": 1.0,
                "oks_thr": t.oks_thr,
                "vis_thr": t.vis_thr,
                "use_gt_bbox": d.bbox_file is None,
                "det_bbox_thr": d.det_bbox_thr,
                "bbox_file": d.bbox_file or "",
            },
        ),
        ("train_pipeline", train_pipeline),
        ("val_pipeline", val_pipeline),
        ("test_pipeline", _Raw("val_pipeline")),
        ("dataset_info", dataset_info_of(meta)),
        (
            "data",
            {
                "samples_per_gpu": tr.batch_size,
                "workers_per_gpu": 2 if tr.workers is None else tr.workers,  # None (posecli: per core) is kept aside
                "val_dataloader": {"samples_per_gpu": t.batch_size},
                "test_dataloader": {"samples_per_gpu": t.batch_size},
                "train": split(d.train_ann, d.train_img_dir, "train_pipeline"),
                "val": split(d.val_ann, d.val_img_dir, "val_pipeline"),
                "test": split(d.val_ann, d.val_img_dir, "test_pipeline"),
            },
        ),
    ]


def _render(assignments: list[tuple[str, Any]]) -> str:
    return "\n".join(f"{name} = {_fmt(value, 0, len(name) + 3)}" for name, value in assignments) + "\n"


def _diff(want: Any, got: Any) -> Any:
    """The parts of ``want`` (a settings dump) that ``got`` lacks or has otherwise, as a nested dict."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = {k: _diff(v, got.get(k, _Raw("missing"))) for k, v in want.items()}
        return {k: v for k, v in out.items() if v is not _SAME and v != {}} or _SAME
    return _SAME if want == got else want


_SAME = _Raw("same")


def settings_to_config_text(settings: Settings, meta: DatasetMeta, source: str = "posecli settings") -> str:
    """An MMPose 0.x config (Python source) equivalent to ``settings``, with ``meta`` as its dataset_info."""
    header = (
        f"# MMPose 0.x config written by `posecli presets export-mmpose` from {source}.\n"
        "# Load it with mmcv.Config.fromfile; `posecli presets import` reads it back.\n"
    )
    body = _render(_mmpose_part(settings, meta))
    # whatever the MMPose part cannot say goes into `posecli`, found by reading the text back as the importer does
    back = config_to_settings(load_config_text(body, "exported.py"), "exported config")
    want = settings.model_dump(mode="json")
    got = Settings.model_validate({**back.settings, "dataset": settings.dataset}).model_dump(mode="json")
    extra = _diff(want, got)
    tail = ""
    if extra is not _SAME:
        tail = (
            "\n# posecli-only settings (MMPose ignores this variable)\n" + _render([("posecli", extra)])
        )  # fmt: skip
    return header + body + tail
