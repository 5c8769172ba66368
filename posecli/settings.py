"""Typed settings for presets and flags: Pydantic models in MMPose 0.x vocabulary, preset loading, overrides."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from posecli.errors import PoseCliError
from posecli.files import check_document_size

_Side = Annotated[int, Field(ge=1, le=8192)]  # image or heatmap side in pixels; more would not fit in memory
MAX_PRESET_BYTES = 1024**2  # a preset is a few KB of YAML


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------------------------- model
class StageSpec(_Strict):
    """One HRNet stage, exactly as in MMPose's ``extra`` dict."""

    num_modules: int = Field(ge=1, description="how many HRModules the stage stacks")
    num_branches: int = Field(ge=1, description="parallel resolutions in the stage")
    block: Literal["BASIC", "BOTTLENECK"] = Field(description="residual block type")
    num_blocks: list[int] = Field(description="blocks per branch")
    num_channels: list[int] = Field(description="channels per branch (before block expansion)")
    fuse_method: Literal["SUM"] = "SUM"
    multiscale_output: bool | None = Field(
        None,
        description="stage4 only: true = the last module outputs every branch (HRNetV2); null = MMPose's default "
        "(false for stage4)",
    )

    @model_validator(mode="after")
    def _lengths(self) -> StageSpec:
        if len(self.num_blocks) != self.num_branches or len(self.num_channels) != self.num_branches:
            raise ValueError(
                f"num_blocks {self.num_blocks} and num_channels {self.num_channels} "
                f"must each have num_branches={self.num_branches} entries"
            )
        return self


class UpsampleSpec(_Strict):
    """How the fuse layers upsample lower-resolution branches (MMPose's ``extra.upsample``)."""

    mode: Literal["nearest", "bilinear"] = "nearest"
    align_corners: bool | None = Field(None, description="bilinear only (MMPose's HRNetV2 configs: false)")

    @model_validator(mode="after")
    def _corners(self) -> UpsampleSpec:
        if self.mode == "nearest" and self.align_corners is not None:
            raise ValueError("align_corners applies to bilinear upsampling only; leave it null for nearest")
        return self


BLOCK_EXPANSION = {"BASIC": 1, "BOTTLENECK": 4}  # output channels per num_channels of a residual block


class HRNetExtra(_Strict):
    """MMPose's HRNet ``extra``: four stages (stage1 has one branch) and the fuse layers' upsampling."""

    stage1: StageSpec
    stage2: StageSpec
    stage3: StageSpec
    stage4: StageSpec
    upsample: UpsampleSpec = Field(default_factory=UpsampleSpec)

    @model_validator(mode="after")
    def _branches_grow(self) -> HRNetExtra:
        stages = [self.stage1, self.stage2, self.stage3, self.stage4]
        if self.stage1.num_branches != 1:
            raise ValueError("stage1 must have num_branches=1")
        for prev, cur in zip(stages, stages[1:], strict=False):
            if cur.num_branches < prev.num_branches:
                raise ValueError("num_branches may not shrink from one stage to the next")
        for name, stage in (("stage1", self.stage1), ("stage2", self.stage2), ("stage3", self.stage3)):
            if stage.multiscale_output is False:
                raise ValueError(
                    f"{name}.multiscale_output=false: only stage4 may output fewer branches "
                    "(the next stage needs them all; MMPose ignores the key before stage4)"
                )
        return self

    @property
    def stages(self) -> list[StageSpec]:
        """The four stage specs in order."""
        return [self.stage1, self.stage2, self.stage3, self.stage4]

    @property
    def stage4_multiscale(self) -> bool:
        """Whether the backbone outputs every stage4 branch (HRNetV2) rather than the highest resolution only."""
        return bool(self.stage4.multiscale_output)

    @property
    def output_channels(self) -> list[int]:
        """Channels of each feature map the backbone returns, highest resolution first."""
        widths = [c * BLOCK_EXPANSION[self.stage4.block] for c in self.stage4.num_channels]
        return widths if self.stage4_multiscale else widths[:1]


class BackboneSettings(_Strict):
    """The HRNet backbone."""

    type: Literal["HRNet"] = "HRNet"
    in_channels: int = Field(3, ge=1, description="input image channels")
    extra: HRNetExtra
    frozen_stages: int = Field(-1, description="MMPose compatibility; -1 trains everything")


class LossSettings(_Strict):
    """Keypoint loss: JointsMSELoss, as in MMPose."""

    type: Literal["JointsMSELoss"] = "JointsMSELoss"
    use_target_weight: bool = True
    loss_weight: float = 1.0


class HeadSettings(_Strict):
    """TopdownHeatmapSimpleHead: selects backbone outputs, optional deconvs and convs, a final conv to K heatmaps."""

    type: Literal["TopdownHeatmapSimpleHead"] = "TopdownHeatmapSimpleHead"
    in_channels: int | list[int] = Field(
        description="channels of the backbone output(s) the head reads: stage4 num_channels[0], or a list with "
        "in_index (HRNetV2: [18, 36, 72, 144])"
    )
    out_channels: int = Field(ge=1, le=10_000, description="number of keypoints (--keypoints overrides it)")
    in_index: int | list[int] = Field(0, description="which backbone output(s) to read (0 = highest resolution)")
    input_transform: Literal["resize_concat", "multiple_select"] | None = Field(
        None, description="resize_concat: upsample the selected outputs to the first one's size and concatenate"
    )
    align_corners: bool = Field(False, description="align_corners of the resize_concat bilinear upsampling")
    num_deconv_layers: int = Field(0, ge=0)
    num_deconv_filters: list[int] = Field(default_factory=lambda: [256, 256, 256])
    num_deconv_kernels: list[int] = Field(default_factory=lambda: [4, 4, 4])
    num_conv_layers: int = Field(0, ge=0, description="conv + BN + ReLU layers before the final conv (MMPose extra)")
    num_conv_kernels: list[int] = Field(default_factory=list, description="their kernel sizes; empty = all 1")
    final_conv_kernel: Literal[1, 3] = 1
    loss_keypoint: LossSettings = Field(default_factory=LossSettings)

    @model_validator(mode="after")
    def _deconvs(self) -> HeadSettings:
        n = self.num_deconv_layers
        if n and (len(self.num_deconv_filters) < n or len(self.num_deconv_kernels) < n):
            raise ValueError(f"num_deconv_filters and num_deconv_kernels need {n} entries each")
        for k in self.num_deconv_kernels[:n]:
            if k not in (2, 3, 4):
                raise ValueError(f"deconv kernel {k} not supported (use 2, 3 or 4, as MMPose does)")
        if self.num_conv_kernels and len(self.num_conv_kernels) < self.num_conv_layers:
            raise ValueError(f"num_conv_kernels needs {self.num_conv_layers} entries (or none: all 1)")
        for k in self.conv_kernels:
            if k < 1 or k % 2 == 0:
                raise ValueError(f"conv kernel {k} not supported (use an odd size such as 1 or 3: it keeps H and W)")
        return self

    @model_validator(mode="after")
    def _inputs(self) -> HeadSettings:
        channels, index = self.in_channels, self.in_index
        if self.input_transform is None:
            if not isinstance(channels, int) or not isinstance(index, int):
                raise ValueError(
                    "in_channels and in_index must be single numbers without input_transform "
                    "(lists need input_transform: resize_concat)"
                )
        else:
            if self.input_transform == "multiple_select":
                raise ValueError(
                    "input_transform=multiple_select hands the head a list of feature maps, which "
                    "TopdownHeatmapSimpleHead cannot use (MMPose fails too); use resize_concat"
                )
            if not isinstance(channels, list) or not isinstance(index, list) or len(channels) != len(index):
                raise ValueError(
                    f"input_transform={self.input_transform} needs in_channels and in_index as lists of the same "
                    f"length (got {channels} and {index})"
                )
            if not channels:
                raise ValueError("in_channels and in_index must not be empty")
        for c in self.in_channel_list:
            if c < 1:
                raise ValueError(f"in_channels must be >= 1 (got {c})")
        for i in self.in_index_list:
            if i < 0:
                raise ValueError(f"in_index must be >= 0 (got {i})")
        return self

    @property
    def in_channel_list(self) -> list[int]:
        """in_channels as a list (one entry per selected backbone output)."""
        return list(self.in_channels) if isinstance(self.in_channels, list) else [self.in_channels]

    @property
    def in_index_list(self) -> list[int]:
        """in_index as a list (one entry per selected backbone output)."""
        return list(self.in_index) if isinstance(self.in_index, list) else [self.in_index]

    @property
    def conv_kernels(self) -> list[int]:
        """Kernel size of each extra conv layer (MMPose's default: 1)."""
        return list(self.num_conv_kernels[: self.num_conv_layers]) or [1] * self.num_conv_layers


class ModelSettings(_Strict):
    """Backbone + head of the top-down model."""

    type: Literal["TopDown"] = "TopDown"
    backbone: BackboneSettings
    head: HeadSettings

    @model_validator(mode="after")
    def _head_matches_backbone(self) -> ModelSettings:
        outputs = self.backbone.extra.output_channels
        head = self.head
        if any(i >= len(outputs) for i in head.in_index_list):
            kind = "every stage4 branch" if len(outputs) > 1 else "one feature map (stage4.multiscale_output false)"
            raise ValueError(
                f"head.in_index={head.in_index} but the backbone outputs {kind}: {len(outputs)} output(s) "
                f"with channels {outputs}"
            )
        selected = [outputs[i] for i in head.in_index_list]
        if head.in_channel_list != selected:
            if head.input_transform is None and head.in_index == 0:
                raise ValueError(
                    f"head.in_channels={head.in_channels} must equal the backbone's stage4 "
                    f"num_channels[0]={selected[0]} (the head reads the highest-resolution branch)"
                )
            raise ValueError(
                f"head.in_channels={head.in_channels} (sum {sum(head.in_channel_list)}) must equal the channels of "
                f"the backbone outputs it selects (in_index={head.in_index}): {selected} (sum {sum(selected)})"
            )
        return self


# ------------------------------------------------------------------------------------------------ data
class SyntheticSettings(_Strict):
    """Synthetic people generated (and cached) when no annotation files are given, as in the demo."""

    keypoints: Literal["coco", "body_foot"] = Field("coco", description="keypoint set to draw")
    num_train: int = Field(200, ge=1)
    num_val: int = Field(50, ge=1)
    image_size: int = Field(256, ge=64, description="side of the square synthetic images in pixels")
    seed: int = 0


class DataSettings(_Strict):
    """Input geometry, target encoding, data files and train augmentations (MMPose 0.x pipeline)."""

    image_size: tuple[_Side, _Side] = Field(description="model input (width, height), MMPose order")
    heatmap_size: tuple[_Side, _Side] = Field(description="heatmap (width, height)")
    sigma: float = Field(2.0, gt=0, description="Gaussian sigma of the target heatmaps, heatmap pixels")
    unbiased_encoding: bool = Field(False, description="DARK sub-pixel target encoding")
    use_different_joint_weights: bool = Field(False, description="multiply target weights by joint_weights")
    train_ann: str | None = None
    train_img_dir: str | None = None
    val_ann: str | None = None
    val_img_dir: str | None = None
    bbox_file: str | None = Field(None, description="detections (COCO results format) for evaluation")
    det_bbox_thr: float = Field(0.0, ge=0.0, le=1.0, description="drop detections scoring below this")
    allow_outside_img_dir: bool = Field(False, description="accept image paths escaping the image dir")
    synthetic: SyntheticSettings | None = None
    # augmentation (TopDownRandomShiftBboxCenter, TopDownRandomFlip, TopDownHalfBodyTransform,
    # TopDownGetRandomScaleRotation in MMPose 0.x)
    shift_factor: float = Field(0.16, ge=0)
    shift_prob: float = Field(0.3, ge=0, le=1)
    flip_prob: float = Field(0.5, ge=0, le=1)
    num_joints_half_body: int = Field(8, ge=0)
    prob_half_body: float = Field(0.3, ge=0, le=1)
    rot_factor: float = Field(40.0, ge=0)
    scale_factor: float = Field(0.5, ge=0)
    rot_prob: float = Field(0.6, ge=0, le=1)


# ----------------------------------------------------------------------------------------------- train
class OptimizerSettings(_Strict):
    """Optimizer, MMPose ``optimizer`` dict."""

    type: Literal["Adam", "AdamW", "SGD"] = "Adam"
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, description="SGD only")
    betas: tuple[float, float] = (0.9, 0.999)


class LrConfig(_Strict):
    """Learning-rate schedule, MMPose ``lr_config`` dict (epoch-based steps, iteration-based warmup)."""

    policy: Literal["step", "cosine", "fixed"] = "step"
    step: list[int] | int = Field(
        default_factory=lambda: [170, 200],
        description="epochs where lr *= gamma; a single number N means every N epochs (as in mmcv)",
    )
    gamma: float = Field(0.1, gt=0)
    min_lr: float = Field(0.0, ge=0, description="cosine floor")
    warmup: Literal["linear", "constant"] | None = "linear"
    warmup_iters: int = Field(500, ge=0)
    warmup_ratio: float = Field(0.001, gt=0, le=1)

    @field_validator("step")
    @classmethod
    def _positive_steps(cls, v: list[int] | int) -> list[int] | int:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"step={v}: a single step means 'every N epochs' and must be >= 1")
        if isinstance(v, list) and any(s < 0 for s in v):
            raise ValueError("step epochs must be >= 0")
        return v


class TrainSettings(_Strict):
    """Fine-tuning schedule and run controls."""

    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    lr_config: LrConfig = Field(default_factory=LrConfig)
    total_epochs: int = Field(210, ge=1)
    batch_size: int = Field(32, ge=1, description="per process")
    workers: int | None = Field(
        None, ge=0, description="data-loading processes per training process; None = the CPU cores available to it"
    )
    seed: int = 0
    load_from: str | None = Field(None, description="checkpoint (path or URL) loaded into the whole model")
    pretrained: str | None = Field(None, description="checkpoint loaded into the backbone only")
    keypoint_map: str | None = Field(None, description="YAML/JSON {new_name: old_name} for the head transplant")
    eval_interval: int = Field(10, ge=1, description="evaluate every N epochs (and after the last)")
    save_best: str = Field("AP", description="metric that picks best.pth")
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm; None disables")
    freeze_backbone_epochs: int = Field(0, ge=0)
    freeze_bn: bool = False
    backbone_lr_mult: float = Field(1.0, gt=0)
    auto_scale_lr: int | None = Field(None, ge=1, description="base batch for linear lr scaling")
    amp: Literal["auto", "bf16", "fp16", "none"] = Field("auto", description="auto = bf16 on CUDA, off on CPU")
    channels_last: bool = True
    compile: bool = False
    gpu_decode: bool = Field(False, description="decode JPEGs (nvjpeg) and warp the crops on the GPU; CUDA only")
    sync_bn: bool = False
    log_interval: int = Field(10, ge=1)
    eval_before_train: bool = Field(False, description="evaluate the loaded model once before training (epoch 0)")

    @model_validator(mode="after")
    def _one_source(self) -> TrainSettings:
        if self.load_from and self.pretrained:
            raise ValueError("can't use both load_from (whole model) and pretrained (backbone only). Choose one.")
        return self


class TestSettings(_Strict):
    """Evaluation / inference settings (MMPose ``test_cfg`` plus dataset evaluation options)."""

    flip_test: bool = True
    post_process: Literal["default", "unbiased", "none"] = "default"
    shift_heatmap: bool = True
    modulate_kernel: int = Field(11, ge=1)
    batch_size: int = Field(32, ge=1)
    vis_thr: float = Field(0.2, ge=0)
    oks_thr: float = Field(0.9, ge=0)
    use_nms: bool = True
    soft_nms: bool = False

    @field_validator("modulate_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"modulate_kernel must be odd (got {v}); MMPose uses 11 for sigma 2, 17 for sigma 3")
        return v


class Settings(_Strict):
    """A whole preset: dataset, model, data, train, test."""

    dataset: str | None = Field(
        "coco",
        description="built-in meta name (coco, coco_wholebody, body_foot, onehand10k) or a meta file path; "
        "null infers it from the training annotations",
    )
    model: ModelSettings
    data: DataSettings
    train: TrainSettings = Field(default_factory=TrainSettings)
    test: TestSettings = Field(default_factory=TestSettings)

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        head = self.model.head
        up = 2**head.num_deconv_layers
        stride = 4 * 2 ** head.in_index_list[0]  # the head works at the resolution of the first output it reads
        expected = (self.data.image_size[0] * up // stride, self.data.image_size[1] * up // stride)
        if tuple(self.data.heatmap_size) != expected:
            raise ValueError(
                f"data.heatmap_size={list(self.data.heatmap_size)} must be {list(expected)}: the HRNet output the "
                f"head reads is image_size/{stride} and each of the head's {head.num_deconv_layers} deconv layers "
                "doubles it"
            )
        if self.dataset is not None:
            from posecli.datasets.meta import builtin_num_keypoints

            count = builtin_num_keypoints(self.dataset)
            if count is not None and count != head.out_channels:
                raise ValueError(
                    f"model.head.out_channels={head.out_channels} but dataset '{self.dataset}' has {count} "
                    f"keypoints; pass --keypoints {count}, or --dataset NAME|META_FILE with {head.out_channels} "
                    "keypoints"
                )
        return self


# ------------------------------------------------------------------------------------ presets & overrides
def preset_dir() -> Path:
    """Folder of the presets shipped with posecli (works from a checkout and after pip install)."""
    return Path(str(resources.files("posecli.presets")))


def list_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def resolve_preset_path(preset: str) -> Path:
    """A shipped preset name or a YAML path -> the file to read."""
    shipped = preset_dir() / f"{preset}.yaml"
    if shipped.is_file():
        return shipped
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in preset:
        if not path.is_file():
            raise PoseCliError("preset file not found", path)
        return path
    raise PoseCliError(f"unknown preset '{preset}' (shipped presets: {', '.join(list_presets())})")


def load_preset_dict(preset: str) -> tuple[dict[str, Any], Path]:
    """Read a preset YAML into a plain dict (not yet validated)."""
    path = resolve_preset_path(preset)
    try:
        if path.stat().st_size > MAX_PRESET_BYTES:
            raise PoseCliError(f"preset is larger than {MAX_PRESET_BYTES // 1024**2} MB (not a preset file?)", path)
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PoseCliError(f"cannot read preset ({getattr(exc, 'strerror', None) or exc})", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PoseCliError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", path) from None
    if not isinstance(data, dict):
        raise PoseCliError("a preset must be a YAML mapping", path)
    check_document_size(data, path)
    return data, path


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data['a']['b']['c'] = value`` for ``dotted='a.b.c'``, creating mappings on the way."""
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = value


def _short_repr(value: Any) -> str:
    """repr() cut to a readable size (a hostile YAML value may be huge or deeply shared)."""
    import reprlib

    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlevel = 60, 60, 3
    return short.repr(value)


def format_validation_error(exc: ValidationError, source: str) -> str:
    """Every problem on one line: ``source: field.path = value: reason; other.field: reason``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see `posecli presets show demo` for the format)"
        value = err.get("input")
        shown = "" if err["type"] in ("missing",) or isinstance(value, dict) else f" = {_short_repr(value)}"
        lines.append(f"{loc}{shown}: {msg}")
    return f"{source}: " + "; ".join(lines)


def validate_settings(data: dict[str, Any], source: str) -> Settings:
    """Validate a settings dict, turning Pydantic errors into a PoseCliError naming the source."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise PoseCliError(format_validation_error(exc, source)) from None


def settings_with_overrides(data: dict[str, Any], overrides: dict[str, Any] | None, source: str) -> Settings:
    """A copy of a settings dict (a preset, or one recorded in a checkpoint) with dotted-key overrides, validated."""
    data = copy.deepcopy(data)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return validate_settings(data, source)


def load_settings(preset: str, overrides: dict[str, Any] | None = None) -> Settings:
    """Load a preset (name or path), apply dotted-key overrides (flags win; None clears a field), validate."""
    data, path = load_preset_dict(preset)
    return settings_with_overrides(with_meta_path(data, path), overrides, str(path))


def with_meta_path(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A preset dict whose ``dataset`` names a meta file relative to the preset (``presets import``) made absolute."""
    dataset = data.get("dataset")
    if isinstance(dataset, str) and not Path(dataset).is_absolute() and (path.parent / dataset).is_file():
        return {**data, "dataset": str(path.parent / dataset)}
    return data


def settings_to_yaml(settings: Settings) -> str:
    """The resolved settings as YAML, in preset format."""
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
