"""One typed options object per command: what the flags say, with the rules between flags checked once, here.

``cli.py`` fills these from Typer's parsed flags and hands them to ``commands.<name>.run``. A broken rule raises
PoseCliError (not a Pydantic error), so the CLI prints one line and exits 2, as for any bad input. Checks that need
the file system (does SRC exist, is the output folder writable) stay in the command flows, where they happen in
the order the work needs them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from posecli.errors import PoseCliError

CONVERT_FORMATS = ("coco-wholebody", "yolo-pose", "labelme", "deeplabcut", "synthetic")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConvertOptions(_Options):
    """``posecli convert-dataset``: convert SRC (``from_format``), generate synthetic people, and/or ``check``."""

    src: str | None = None
    from_format: str | None = None  # as typed; ``fmt`` is the normalised name
    out: Path | None = None
    check: bool = False
    img_dir: Path | None = None
    parts: str | None = None
    num_images: int = 100
    keypoints: str | None = None
    image_size: int = 256
    seed: int = 0
    margin: float = 0.1
    allow_outside_img_dir: bool = False
    split: str | None = None
    max_people: int = 2

    @property
    def fmt(self) -> str | None:
        """The --from format in canonical spelling (coco_wholebody -> coco-wholebody), None for --check alone."""
        return None if self.from_format is None else self.from_format.strip().lower().replace("_", "-")

    @model_validator(mode="after")
    def _rules(self) -> ConvertOptions:
        if self.from_format is None:
            if not self.check:
                raise PoseCliError(
                    f"give --from FORMAT ({', '.join(CONVERT_FORMATS)}) to convert, or --check to validate a file"
                )
            if self.src is None:
                raise PoseCliError("--check needs the COCO keypoint file: posecli convert-dataset ANN.json --check")
            if self.out is not None:
                raise PoseCliError("--out is only used with --from; --check alone writes nothing")
            return self
        fmt = self.fmt
        if fmt not in CONVERT_FORMATS:
            raise PoseCliError(f"unknown --from '{self.from_format}' (choose from {', '.join(CONVERT_FORMATS)})")
        if self.out is None:
            raise PoseCliError(
                f"--from {fmt} needs --out ({'a folder' if fmt == 'synthetic' else 'the COCO JSON to write'})"
            )
        if self.parts is not None and fmt != "coco-wholebody":
            raise PoseCliError("--parts is only used with --from coco-wholebody")
        if self.split is not None and fmt != "yolo-pose":
            raise PoseCliError("--split is only used with --from yolo-pose")
        if not (math.isfinite(self.margin) and 0 <= self.margin <= 10):
            raise PoseCliError(
                f"--margin must be between 0 and 10 (a fraction of the points' extent), got {self.margin}"
            )
        if fmt == "synthetic":
            if self.src is not None:
                raise PoseCliError("--from synthetic takes no SRC; give --out FOLDER")
            return self
        if self.src is None:
            raise PoseCliError(f"--from {fmt} needs SRC (the file or folder to convert)")
        if not Path(self.src).exists():
            raise PoseCliError("no such file or folder", Path(self.src))
        if fmt == "coco-wholebody" and self.keypoints is not None:
            raise PoseCliError("--keypoints is not used with coco-wholebody; --parts chooses the keypoints")
        return self


class InspectOptions(_Options):
    """``posecli inspect-checkpoint``: describe CHECKPOINT; with ``preset``, the load plan into that model."""

    checkpoint: str
    preset: str | None = None
    keypoints: int | None = None
    keypoint_map: Path | None = None
    as_json: bool = False
    cache_dir: Path | None = None
    timeout: float | None = None

    @model_validator(mode="after")
    def _rules(self) -> InspectOptions:
        if self.preset is None and self.keypoints is not None:
            raise PoseCliError("--keypoints changes the preset's head; it needs --preset")
        return self


class FinetuneOptions(_Options):
    """``posecli finetune``: the preset (or what resolves one), flag overrides of its fields, the run controls."""

    preset: str | None = None  # None: resolved from load_from / pretrained (preset_resolution)
    dataset: str | None = None  # --dataset NAME|META_FILE
    keypoints: int | None = None
    load_from: str | None = None
    pretrained: str | None = None
    train_ann: str | None = None
    overrides: dict[str, Any] = {}  # dotted settings keys -> flag values; None values are dropped
    work_dir: Path | None = None  # default work_dirs/<preset name, or the checkpoint's file stem>
    device: str = "auto"
    resume: str | None = None  # 'auto' (the work dir's last.pth) or a path
    overwrite: bool = False
    print_config: bool = False

    @property
    def source(self) -> str | None:
        """The checkpoint to start from (--load-from or --pretrained), None for neither."""
        return self.load_from if self.load_from is not None else self.pretrained

    @property
    def mode(self) -> str:
        """``load_from`` (whole model) or ``pretrained`` (backbone only)."""
        return "pretrained" if self.load_from is None and self.pretrained is not None else "load_from"

    @model_validator(mode="after")
    def _rules(self) -> FinetuneOptions:
        self.overrides = {k: v for k, v in self.overrides.items() if v is not None}
        if self.load_from is not None and self.pretrained is not None:
            raise PoseCliError("can't use both --load-from (whole model) and --pretrained (backbone only). Choose one.")
        if self.keypoints is not None and self.keypoints < 1:
            raise PoseCliError(f"--keypoints must be at least 1, got {self.keypoints}")
        return self


class EvaluateOptions(_Options):
    """``posecli evaluate``: run ``checkpoint`` over a dataset, or score a ``predictions`` file."""

    checkpoint: str | None = None
    predictions: Path | None = None
    preset: str | None = None
    overrides: dict[str, Any] = {}  # dotted settings keys -> flag values; None values are dropped
    ann_file: Path | None = None
    img_dir: Path | None = None
    dataset: str | None = None
    output_dir: Path | None = None
    device: str = "auto"
    per_keypoint: bool = False
    save_vis: int = 0
    vis_gt: bool = False
    cache_dir: Path | None = None
    print_config: bool = False

    @model_validator(mode="after")
    def _rules(self) -> EvaluateOptions:
        self.overrides = {k: v for k, v in self.overrides.items() if v is not None}
        if self.checkpoint is not None and self.predictions is not None:
            raise PoseCliError("give --checkpoint (run a model) or --predictions (score a results file), not both")
        if self.checkpoint is None and self.predictions is None:
            raise PoseCliError(
                "nothing to evaluate: give --checkpoint CKPT --img-dir D (run a model) or --predictions RESULTS.json"
            )
        if self.save_vis < 0:
            raise PoseCliError(f"--save-vis takes a number of images >= 0, got {self.save_vis}")
        if self.save_vis and self.output_dir is None:
            raise PoseCliError("--save-vis writes into OUTPUT_DIR/vis: give --output-dir too")
        return self


class PredictOptions(_Options):
    """``posecli predict``: run ``checkpoint`` (.pth or .onnx) on ``sources``; boxes from one of three places."""

    sources: list[str]
    checkpoint: str | None = None
    preset: str | None = None
    dataset: str | None = None
    overrides: dict[str, Any] = {}  # dotted test settings -> flag values; None values are dropped
    bbox_file: Path | None = None
    ann_file: Path | None = None
    whole_image: bool = False
    detector: str | None = None
    detector_weights: Path | None = None
    det_bbox_thr: float | None = None
    output_dir: Path = Path("work_dirs/predict")
    save_vis: bool = False
    oks_nms: bool = False
    skip_bad: bool = False
    device: str = "auto"
    cache_dir: Path | None = None

    @model_validator(mode="after")
    def _rules(self) -> PredictOptions:
        self.overrides = {k: v for k, v in self.overrides.items() if v is not None}
        if self.checkpoint is None:
            raise PoseCliError("--checkpoint CKPT|MODEL.onnx is required (the model to run)")
        chosen = [
            name
            for name, on in (
                ("--bbox-file", self.bbox_file),
                ("--whole-image", self.whole_image),
                ("--detector", self.detector),
            )
            if on
        ]
        if len(chosen) != 1:
            raise PoseCliError(
                "say where the people are with exactly one of --bbox-file F, --whole-image or --detector NAME"
                + (f" (got {', '.join(chosen)})" if chosen else "")
            )
        if self.ann_file is not None and self.bbox_file is None:
            raise PoseCliError("--ann-file maps the image ids of --bbox-file to file names; it needs --bbox-file")
        if self.detector_weights is not None and self.detector is None:
            raise PoseCliError("--detector-weights needs --detector NAME")
        if self.det_bbox_thr is not None and self.whole_image:
            raise PoseCliError("--det-bbox-thr filters detections; --whole-image has none")
        if self.det_bbox_thr is not None and not 0.0 <= self.det_bbox_thr <= 1.0:
            raise PoseCliError(f"--det-bbox-thr must be within [0, 1], got {self.det_bbox_thr}")
        if self.checkpoint.lower().endswith(".onnx") and (self.preset is not None or self.dataset is not None):
            flag = "--preset" if self.preset is not None else "--dataset"
            raise PoseCliError(
                f"an ONNX model carries its own settings; {flag} is for .pth checkpoints", Path(self.checkpoint)
            )
        return self


EXPORT_FORMATS = ("onnx",)


class ExportOptions(_Options):
    """``posecli export``: ``checkpoint`` to an ONNX file at ``out``."""

    checkpoint: str
    preset: str | None = None
    fmt: str = "onnx"
    out: Path | None = None
    opset: int = 17
    overrides: dict[str, Any] = {}  # dotted settings keys -> flag values; None values are dropped
    cache_dir: Path | None = None

    @model_validator(mode="after")
    def _rules(self) -> ExportOptions:
        self.overrides = {k: v for k, v in self.overrides.items() if v is not None}
        if self.fmt.lower() not in EXPORT_FORMATS:
            raise PoseCliError(f"unknown export format '{self.fmt}' (supported: {', '.join(EXPORT_FORMATS)})")
        if self.out is None:
            raise PoseCliError("--out MODEL.onnx is required (where to write the exported model)")
        if not 7 <= self.opset <= 30:
            raise PoseCliError(f"--opset {self.opset} is out of range (ONNX opsets used today: 11-20; default 17)")
        return self
