"""Map a parsed MMPose 0.x top-down heatmap config onto posecli settings, saying what was mapped and what ignored.

Where MMPose's default differs from posecli's (``shift_heatmap`` is off unless the config turns it on, the head
has three deconv layers unless told otherwise, mmcv's lr warmup is off by default, a missing train transform means
no such augmentation) the MMPose value is written explicitly, so the preset means what the config meant.
Parts that would change the model or its numbers and posecli cannot reproduce (another backbone or head, UDP,
other target types, another normalisation) are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from posecli.datasets.meta import DatasetMeta
from posecli.errors import PoseCliError
from posecli.mmpose_config.dataset_info import builtin_name_of, close_lists, meta_from_dataset_info
from posecli.settings import HeadSettings, HRNetExtra, StageSpec, set_dotted, validate_settings

_MISSING = object()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# MMPose's dataset classes whose keypoint set is a posecli built-in (configs older than 0.21 have no dataset_info)
DATASET_TYPES = {"TopDownCocoDataset": "coco", "TopDownCocoWholeBodyDataset": "coco_wholebody"}
# mmcv's lr policy names (after its `policy.title()` for lower-case names) -> posecli's
LR_POLICIES = {"Step": "step", "CosineAnnealing": "cosine", "Fixed": "fixed"}


@dataclass
class ImportResult:
    """A config mapped to posecli: the preset dict, a dataset meta to write when not built-in, and the bookkeeping."""

    settings: dict[str, Any]  # preset dict, validated (``dataset`` is None while ``meta`` still has to be written)
    meta: DatasetMeta | None  # dataset_info that is not a built-in keypoint set
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (config key, settings key)
    ignored: list[str] = field(default_factory=list)  # config keys not used, each with a short reason


class _Section:
    """A config dict whose keys are taken one by one; what is left over is reported as ignored."""

    def __init__(self, reader: _Reader, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise reader.refuse(where, f"must be a dict, got {type(value).__name__}")
        self.reader, self.value, self.where, self.used = reader, value, where, set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def has(self, name: str) -> bool:
        return name in self.value

    def take(self, name: str, default: Any = _MISSING) -> Any:
        self.used.add(name)
        if name in self.value:
            return self.value[name]
        if default is _MISSING:
            raise self.reader.refuse(self.key(name), "is missing")
        return default

    def sub(self, name: str) -> _Section:
        return _Section(self.reader, self.take(name), self.key(name))

    def finish(self, reason: str = "not used by posecli") -> None:
        for name in self.value:
            if name not in self.used:
                self.reader.ignore(self.key(name), reason)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.settings: dict[str, Any] = {}
        self.mapped: list[tuple[str, str]] = []
        self.ignored: list[str] = []

    def refuse(self, part: str, problem: str) -> PoseCliError:
        return PoseCliError(f"{part} {problem}", self.source)

    def ignore(self, key: str, reason: str) -> None:
        self.ignored.append(f"{key} ({reason})")

    def put(self, config_key: str, settings_key: str, value: Any) -> None:
        set_dotted(self.settings, settings_key, _plain(value))
        self.mapped.append((config_key, settings_key))

    def copy(self, sec: _Section, name: str, settings_key: str, default: Any = _MISSING) -> None:
        """Map ``sec[name]`` (or MMPose's ``default`` when absent) to ``settings_key``."""
        if sec.has(name) or default is not _MISSING:
            self.put(sec.key(name), settings_key, sec.take(name, default))


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML presets hold lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------------------------- model
def _backbone(r: _Reader, sec: _Section) -> None:
    kind = sec.take("type")
    if kind != "HRNet":
        raise r.refuse(f"{sec.key('type')}='{kind}'", "is not supported: posecli builds HRNet backbones only")
    r.copy(sec, "in_channels", "model.backbone.in_channels", 3)
    r.copy(sec, "frozen_stages", "model.backbone.frozen_stages")
    norm = sec.take("norm_cfg", None)
    if norm is not None:
        kind = norm.get("type") if isinstance(norm, dict) else None
        if kind not in ("BN", "SyncBN") or norm.get("requires_grad", True) is not True:
            raise r.refuse(f"{sec.key('norm_cfg')}={norm}", "is not supported (BN or SyncBN with requires_grad)")
        r.put(sec.key("norm_cfg"), "train.sync_bn", kind == "SyncBN")
    if sec.has("norm_eval"):
        r.copy(sec, "norm_eval", "train.freeze_bn")
    if sec.take("conv_cfg", None) is not None:
        raise r.refuse(sec.key("conv_cfg"), "is not supported (posecli uses plain convolutions)")

    extra = sec.sub("extra")
    stage_keys = set(StageSpec.model_fields)
    for i in range(1, 5):
        stage = extra.sub(f"stage{i}")
        for name in stage.value:
            if name not in stage_keys:
                raise r.refuse(stage.key(name), "is not a stage field posecli knows")
            stage.take(name)
        r.put(stage.where, f"model.backbone.extra.stage{i}", stage.value)
    if extra.has("upsample"):
        upsample = extra.take("upsample")
        if "upsample" in HRNetExtra.model_fields:
            r.put(extra.key("upsample"), "model.backbone.extra.upsample", upsample)
        elif not (isinstance(upsample, dict) and upsample.get("mode", "nearest") == "nearest"):
            raise r.refuse(
                f"{extra.key('upsample')}={upsample}",
                "is not supported: posecli's HRNet fuses branches with nearest-neighbour upsampling",
            )
        else:
            r.ignore(extra.key("upsample"), "nearest is what posecli does")
    for name in extra.value:
        if name not in extra.used:
            raise r.refuse(extra.key(name), "is not an HRNet extra field posecli knows")
    sec.finish("only affects MMPose's initialisation or memory use")


def _head(r: _Reader, sec: _Section) -> None:
    kind = sec.take("type")
    if kind != "TopdownHeatmapSimpleHead":
        raise r.refuse(f"{sec.key('type')}='{kind}'", "is not supported: posecli's head is TopdownHeatmapSimpleHead")
    fields = HeadSettings.model_fields
    r.copy(sec, "in_channels", "model.head.in_channels")
    r.copy(sec, "out_channels", "model.head.out_channels")
    # MMPose's defaults: three 256-filter 4x4 deconvs, 1x1 final conv
    r.copy(sec, "num_deconv_layers", "model.head.num_deconv_layers", 3)
    r.copy(sec, "num_deconv_filters", "model.head.num_deconv_filters")
    r.copy(sec, "num_deconv_kernels", "model.head.num_deconv_kernels")
    hrnetv2 = {"in_index": 0, "input_transform": None, "align_corners": False}
    for name, default in hrnetv2.items():
        if name in fields:
            r.copy(sec, name, f"model.head.{name}", default)
        elif sec.take(name, default) != default:
            raise r.refuse(f"{sec.key(name)}={sec.value[name]!r}", "needs HRNetV2 support, which this posecli lacks")
    if isinstance(sec.value.get("in_channels"), (list, tuple)) and "input_transform" not in fields:
        raise r.refuse(sec.key("in_channels"), "is a list (HRNetV2), which this posecli does not support")
    if sec.has("extra") and sec.value["extra"] is not None:
        extra = sec.sub("extra")
        r.copy(extra, "final_conv_kernel", "model.head.final_conv_kernel", 1)
        for name, default in (("num_conv_layers", 0), ("num_conv_kernels", None)):
            if name in fields:
                r.copy(extra, name, f"model.head.{name}")
            elif extra.take(name, default) not in (default, 0):
                raise r.refuse(extra.key(name), "needs HRNetV2 support, which this posecli lacks")
        for name in extra.value:
            if name not in extra.used:
                raise r.refuse(extra.key(name), "is not a head extra field posecli knows")
    else:
        sec.take("extra", None)
        r.put(sec.key("extra"), "model.head.final_conv_kernel", 1)
    loss = sec.sub("loss_keypoint") if sec.has("loss_keypoint") else None
    if loss is not None:
        if loss.take("type") != "JointsMSELoss":
            raise r.refuse(f"{loss.key('type')}='{loss.value['type']}'", "is not supported (JointsMSELoss only)")
        r.copy(loss, "use_target_weight", "model.head.loss_keypoint.use_target_weight", False)
        r.copy(loss, "loss_weight", "model.head.loss_keypoint.loss_weight", 1.0)
        loss.finish()
    sec.finish()


def _test_cfg(r: _Reader, sec: _Section) -> None:
    r.copy(sec, "flip_test", "test.flip_test", True)
    if sec.take("use_udp", False):
        raise r.refuse(sec.key("use_udp"), "(UDP) is not supported: posecli decodes with MMPose's MSRA/DARK rules")
    target_type = sec.take("target_type", "GaussianHeatmap")
    if target_type != "GaussianHeatmap":
        raise r.refuse(f"{sec.key('target_type')}='{target_type}'", "is not supported (GaussianHeatmap only)")
    post = sec.take("post_process", "default")
    if sec.take("unbiased_decoding", False):  # MMPose's older spelling
        post = "unbiased"
    if post in (None, False):
        post = "none"
    if post not in ("default", "unbiased", "none"):
        raise r.refuse(f"{sec.key('post_process')}={post!r}", "is not supported (default, unbiased or None)")
    r.put(sec.key("post_process"), "test.post_process", post)
    r.copy(sec, "shift_heatmap", "test.shift_heatmap", False)  # MMPose's head reads it with default False
    r.copy(sec, "modulate_kernel", "test.modulate_kernel", 11)
    sec.finish()


def _model(r: _Reader, sec: _Section) -> None:
    kind = sec.take("type")
    if kind != "TopDown":
        raise r.refuse(f"{sec.key('type')}='{kind}'", "is not supported: posecli builds top-down heatmap models")
    pretrained = sec.take("pretrained", None)
    if pretrained is not None:
        r.put(sec.key("pretrained"), "train.pretrained", pretrained)
    if sec.has("neck"):
        raise r.refuse(sec.key("neck"), "is not supported (posecli's model has no neck)")
    _backbone(r, sec.sub("backbone"))
    _head(r, sec.sub("keypoint_head"))
    _test_cfg(r, sec.sub("test_cfg") if sec.has("test_cfg") else _Section(r, {}, sec.key("test_cfg")))
    sec.finish()


# -------------------------------------------------------------------------------------------------- data
def _data_cfg(r: _Reader, sec: _Section) -> None:
    r.copy(sec, "image_size", "data.image_size")
    r.copy(sec, "heatmap_size", "data.heatmap_size")
    channels = sec.take("num_output_channels", None)
    out = r.settings.get("model", {}).get("head", {}).get("out_channels")
    if channels is not None and channels != out:
        raise r.refuse(f"{sec.key('num_output_channels')}={channels}", f"differs from the head's out_channels={out}")
    r.copy(sec, "use_different_joint_weights", "data.use_different_joint_weights", False)
    use_gt = sec.take("use_gt_bbox", True)
    bbox_file = sec.take("bbox_file", None)
    if not use_gt and bbox_file:
        r.put(sec.key("bbox_file"), "data.bbox_file", bbox_file)
    elif bbox_file:
        r.ignore(sec.key("bbox_file"), "use_gt_bbox=True: ground-truth boxes are used")
    r.copy(sec, "det_bbox_thr", "data.det_bbox_thr", 0.0)
    r.copy(sec, "use_nms", "test.use_nms", True)
    r.copy(sec, "soft_nms", "test.soft_nms")
    r.copy(sec, "oks_thr", "test.oks_thr")
    r.copy(sec, "vis_thr", "test.vis_thr")
    if sec.has("nms_thr"):
        sec.take("nms_thr")
        r.ignore(sec.key("nms_thr"), "MMPose's top-down datasets do not use it; oks_thr is the NMS threshold")
    sec.finish("channel bookkeeping; posecli uses every keypoint")


def _check_normalize(r: _Reader, step: _Section) -> None:
    mean, std = step.take("mean", IMAGENET_MEAN), step.take("std", IMAGENET_STD)
    if not (close_lists(list(mean), list(IMAGENET_MEAN)) and close_lists(list(std), list(IMAGENET_STD))):
        raise r.refuse(step.where, f"mean={list(mean)} std={list(std)} is not supported (ImageNet normalisation only)")


def _train_pipeline(r: _Reader, steps: Any, where: str) -> None:
    if not isinstance(steps, (list, tuple)):
        raise r.refuse(where, "must be a list of transforms")
    # a transform missing from the pipeline means no such augmentation
    r.settings.setdefault("data", {}).update(shift_prob=0.0, flip_prob=0.0, prob_half_body=0.0)
    r.settings["data"].update(rot_factor=0.0, scale_factor=0.0)
    found_target = False
    for i, raw in enumerate(steps):
        step = _Section(r, raw, f"{where}[{i}]")
        kind = step.take("type")
        step.where = f"{where}[{i}]({kind})"
        if kind == "TopDownGetBboxCenterScale":
            if not math.isclose(float(step.take("padding", 1.25)), 1.25):
                raise r.refuse(step.key("padding"), "is not supported (posecli pads boxes by 1.25, as MMPose does)")
        elif kind == "TopDownRandomShiftBboxCenter":
            r.copy(step, "shift_factor", "data.shift_factor", 0.16)
            r.copy(step, "prob", "data.shift_prob", 0.3)
        elif kind == "TopDownRandomFlip":
            r.copy(step, "flip_prob", "data.flip_prob", 0.5)
        elif kind == "TopDownHalfBodyTransform":
            r.copy(step, "num_joints_half_body", "data.num_joints_half_body", 8)
            r.copy(step, "prob_half_body", "data.prob_half_body", 0.3)
        elif kind == "TopDownGetRandomScaleRotation":
            r.copy(step, "rot_factor", "data.rot_factor", 40)
            r.copy(step, "scale_factor", "data.scale_factor", 0.5)
            r.copy(step, "rot_prob", "data.rot_prob", 0.6)
        elif kind == "TopDownAffine":
            if step.take("use_udp", False):
                raise r.refuse(
                    step.key("use_udp"), "(UDP) is not supported: posecli crops with MMPose's non-UDP affine"
                )
        elif kind == "NormalizeTensor":
            _check_normalize(r, step)
        elif kind == "TopDownGenerateTarget":
            found_target = True
            target_type = step.take("target_type", "GaussianHeatmap")
            encoding = step.take("encoding", "MSRA")
            if target_type != "GaussianHeatmap":
                raise r.refuse(f"{step.key('target_type')}='{target_type}'", "is not supported (GaussianHeatmap only)")
            if encoding != "MSRA":
                raise r.refuse(f"{step.key('encoding')}='{encoding}'", "is not supported (MSRA encoding only, no UDP)")
            r.copy(step, "sigma", "data.sigma", 2)
            r.copy(step, "unbiased_encoding", "data.unbiased_encoding", False)
        elif kind in ("LoadImageFromFile", "ToTensor", "Collect"):
            step.value = {}  # what posecli does anyway
        else:
            r.ignore(step.where, "transform not applied by posecli")
            continue
        step.finish()
    if not found_target:
        raise r.refuse(where, "has no TopDownGenerateTarget: posecli trains on heatmap targets")


def _test_pipeline(r: _Reader, steps: Any, where: str) -> None:
    for i, raw in enumerate(steps if isinstance(steps, (list, tuple)) else []):
        if not isinstance(raw, dict):
            continue
        if raw.get("type") == "TopDownAffine" and raw.get("use_udp", False):
            raise r.refuse(f"{where}[{i}](TopDownAffine).use_udp", "(UDP) is not supported")
        if raw.get("type") == "NormalizeTensor":
            _check_normalize(r, _Section(r, raw, f"{where}[{i}](NormalizeTensor)"))
    r.ignore(where, "posecli's test pipeline is fixed: box -> affine crop -> ImageNet normalisation")


def _data(r: _Reader, cfg: dict[str, Any], sec: _Section) -> str | None:
    """data = dict(...): batch sizes, annotation files, pipelines; returns the dataset type."""
    r.copy(sec, "samples_per_gpu", "train.batch_size")
    r.copy(sec, "workers_per_gpu", "train.workers")
    for loader in ("test_dataloader", "val_dataloader"):
        value = sec.value.get(loader)
        if isinstance(value, dict) and "samples_per_gpu" in value:
            sec.take(loader)
            r.put(f"{sec.key(loader)}.samples_per_gpu", "test.batch_size", value["samples_per_gpu"])
            break
    kinds: list[str] = []
    for split, prefix in (("train", "train"), ("val", "val"), ("test", None)):
        if not sec.has(split):
            continue
        part = sec.sub(split)
        kinds.append(str(part.take("type", "")))
        ann, img = part.take("ann_file", None), part.take("img_prefix", None)
        if prefix is not None:
            if ann is not None:
                r.put(part.key("ann_file"), f"data.{prefix}_ann", ann)
            if img is not None:
                r.put(part.key("img_prefix"), f"data.{prefix}_img_dir", img)
        else:
            val = sec.value.get("val") if isinstance(sec.value.get("val"), dict) else {}
            if (ann, img) != (val.get("ann_file"), val.get("img_prefix")):
                r.ignore(part.where, "posecli evaluates on data.val (pass --ann-file/--img-dir to evaluate)")
        if part.has("data_cfg"):
            part.take("data_cfg")
            if part.value["data_cfg"] != cfg.get("data_cfg", part.value["data_cfg"]):
                r.ignore(part.key("data_cfg"), "differs from the top-level data_cfg, which posecli reads")
        part.take("pipeline", None)
        part.take("dataset_info", None)
        part.finish()
    sec.finish()
    return kinds[0] if kinds else None


# ------------------------------------------------------------------------------------------------ train
def _optimizer(r: _Reader, sec: _Section) -> None:
    kind = sec.take("type")
    if kind not in ("Adam", "AdamW", "SGD"):
        raise r.refuse(f"{sec.key('type')}='{kind}'", "is not supported (Adam, AdamW or SGD)")
    r.put(sec.key("type"), "train.optimizer.type", kind)
    r.copy(sec, "lr", "train.optimizer.lr")
    r.copy(sec, "weight_decay", "train.optimizer.weight_decay", 0.01 if kind == "AdamW" else 0.0)
    if kind == "SGD":
        r.copy(sec, "momentum", "train.optimizer.momentum", 0.0)
    else:
        r.copy(sec, "betas", "train.optimizer.betas")
    sec.finish()


def _lr_config(r: _Reader, sec: _Section) -> None:
    policy = sec.take("policy")
    name = policy.title() if isinstance(policy, str) and policy == policy.lower() else policy
    if name not in LR_POLICIES:
        raise r.refuse(f"{sec.key('policy')}='{policy}'", f"is not supported ({', '.join(LR_POLICIES)})")
    r.put(sec.key("policy"), "train.lr_config.policy", LR_POLICIES[name])
    if not sec.take("by_epoch", True) or sec.take("warmup_by_epoch", False):
        raise r.refuse(sec.where, "by iterations (by_epoch=False / warmup_by_epoch=True) is not supported")
    if name == "Step":
        r.copy(sec, "step", "train.lr_config.step")
        r.copy(sec, "gamma", "train.lr_config.gamma", 0.1)
    elif name == "CosineAnnealing":
        if sec.has("min_lr_ratio"):
            lr = r.settings.get("train", {}).get("optimizer", {}).get("lr")
            if lr is None:
                raise r.refuse(sec.key("min_lr_ratio"), "needs optimizer.lr")
            r.put(sec.key("min_lr_ratio"), "train.lr_config.min_lr", lr * sec.take("min_lr_ratio"))
        else:
            r.copy(sec, "min_lr", "train.lr_config.min_lr")
    warmup = sec.take("warmup", None)  # mmcv: no warmup unless asked
    if warmup not in (None, "linear", "constant"):
        raise r.refuse(f"{sec.key('warmup')}='{warmup}'", "is not supported (linear, constant or None)")
    r.put(sec.key("warmup"), "train.lr_config.warmup", warmup)
    if warmup is not None:
        r.copy(sec, "warmup_iters", "train.lr_config.warmup_iters", 0)
        r.copy(sec, "warmup_ratio", "train.lr_config.warmup_ratio", 0.1)
    sec.finish()


# ------------------------------------------------------------------------------------------------- entry
def config_to_settings(cfg: dict[str, Any], source: str) -> ImportResult:
    """Map a parsed MMPose 0.x top-down heatmap config to a validated posecli preset dict."""
    r = _Reader(source)
    top = _Section(r, cfg, "")
    if not top.has("model"):
        raise r.refuse("model", "is missing: not an MMPose model config")
    _model(r, top.sub("model"))
    if top.has("data_cfg"):
        _data_cfg(r, top.sub("data_cfg"))
    else:
        data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
        split = data.get("train") if isinstance(data.get("train"), dict) else {}
        if not isinstance(split.get("data_cfg"), dict):
            raise r.refuse("data_cfg", "is missing (neither a top-level data_cfg nor data.train.data_cfg)")
        _data_cfg(r, _Section(r, split["data_cfg"], "data.train.data_cfg"))

    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    train_split = data.get("train") if isinstance(data.get("train"), dict) else {}
    if "pipeline" in train_split:
        _train_pipeline(r, train_split["pipeline"], "data.train.pipeline")
        top.take("train_pipeline", None)
    else:
        _train_pipeline(r, top.take("train_pipeline"), "train_pipeline")
    for name in ("val_pipeline", "test_pipeline"):
        if top.has(name):
            _test_pipeline(r, top.take(name), name)
    for split in ("val", "test"):
        steps = data.get(split, {}).get("pipeline") if isinstance(data.get(split), dict) else None
        if steps is not None and steps is not cfg.get("val_pipeline") and steps != cfg.get("val_pipeline"):
            _test_pipeline(r, steps, f"data.{split}.pipeline")
    dataset_type = _data(r, cfg, top.sub("data")) if top.has("data") else None
    top.take("channel_cfg", None)

    if top.has("optimizer"):
        _optimizer(r, top.sub("optimizer"))
    if top.has("optimizer_config"):
        oc = top.sub("optimizer_config")
        clip = oc.take("grad_clip", None)
        if clip is not None:
            if not isinstance(clip, dict) or clip.get("norm_type", 2) != 2 or "max_norm" not in clip:
                raise r.refuse(f"{oc.key('grad_clip')}={clip}", "is not supported (dict(max_norm=X, norm_type=2))")
            r.put(f"{oc.key('grad_clip')}.max_norm", "train.grad_clip", clip["max_norm"])
        else:
            r.put(oc.key("grad_clip"), "train.grad_clip", None)
        oc.finish()
    if top.has("lr_config"):
        _lr_config(r, top.sub("lr_config"))
    if top.has("total_epochs"):
        r.copy(top, "total_epochs", "train.total_epochs")
    elif top.has("runner"):
        runner = top.sub("runner")
        if runner.take("type", "EpochBasedRunner") != "EpochBasedRunner":
            raise r.refuse(runner.key("type"), "is not supported (EpochBasedRunner only)")
        r.copy(runner, "max_epochs", "train.total_epochs")
        runner.finish()
    if top.has("log_config"):
        log = top.sub("log_config")
        r.copy(log, "interval", "train.log_interval")
        log.finish()
    if top.has("evaluation"):
        ev = top.sub("evaluation")
        r.copy(ev, "interval", "train.eval_interval")
        save_best = ev.take("save_best", None)
        if isinstance(save_best, str):
            r.put(ev.key("save_best"), "train.save_best", save_best)
        ev.finish("posecli reports COCO AP/AR")
    load_from = top.take("load_from", None)
    if load_from is not None:
        r.put("load_from", "train.load_from", load_from)
        if r.settings.get("train", {}).pop("pretrained", None) is not None:
            r.mapped = [m for m in r.mapped if m[1] != "train.pretrained"]
            r.ignore("model.pretrained", "load_from replaces the whole model after it, as in MMPose")

    meta: DatasetMeta | None = None
    info = top.take("dataset_info", None)
    where = "dataset_info"
    if info is None:
        for split in ("test", "val", "train"):
            part = data.get(split)
            if isinstance(part, dict) and part.get("dataset_info") is not None:
                info, where = part["dataset_info"], f"data.{split}.dataset_info"
                break
    if info is not None:
        meta = meta_from_dataset_info(info, source, where)
        builtin = builtin_name_of(meta)
        if builtin is not None:
            r.put(where, "dataset", builtin)
            meta = None
        else:
            r.mapped.append((where, "dataset (meta file)"))
    elif dataset_type in DATASET_TYPES:
        r.put("data.train.type", "dataset", DATASET_TYPES[dataset_type])
    else:
        raise r.refuse("dataset_info", f"is missing and dataset type '{dataset_type}' is not a built-in keypoint set")
    if meta is not None:
        r.settings["dataset"] = None
        out = r.settings["model"]["head"]["out_channels"]
        if meta.num_keypoints != out:
            raise r.refuse(where, f"has {meta.num_keypoints} keypoints but the head has out_channels={out}")

    if top.has("posecli"):  # posecli-only settings written by `presets export-mmpose`; MMPose ignores them
        _apply_posecli(r, top.take("posecli"), "posecli", "")
    top.finish()
    validate_settings(r.settings, source)
    return ImportResult(settings=r.settings, meta=meta, mapped=r.mapped, ignored=r.ignored)


def _apply_posecli(r: _Reader, value: Any, where: str, dotted: str) -> None:
    if not isinstance(value, dict) or not value:
        if not dotted:
            raise r.refuse(where, "must be a dict of posecli settings")
        r.put(where, dotted, value)
        return
    for key, sub in value.items():
        _apply_posecli(r, sub, f"{where}.{key}", f"{dotted}.{key}" if dotted else str(key))
