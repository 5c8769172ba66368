"""posecli's flags: every option's names, description, default wording and help panel, declared once for
``cli.py`` (which wires them to the commands). Aliases are named <Command><Parameter>; the shared ones by what they
set."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

# panels of the help pages
DATA, MODEL, SCHEDULE, RUNTIME, OUTPUT = "Data", "Model and checkpoint", "Schedule", "Runtime", "Output"
TEST, INPUT, SYNTHETIC = "Test-time settings", "Input", "Synthetic data (--from synthetic)"
FROM_PRESET = "[default: from the preset]"
FROM_CKPT = "[default: from the checkpoint]"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class PostProcess(str, Enum):
    default = "default"
    unbiased = "unbiased"
    none = "none"


class Amp(str, Enum):
    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    none = "none"


def _opt(*names: str, help: str, panel: str, metavar: str | None = None, **kw: Any) -> Any:
    """A Typer option in a help panel."""
    return typer.Option(*names, help=help, rich_help_panel=panel, metavar=metavar, **kw)


def _device(panel: str = RUNTIME) -> Any:
    return _opt("--device", help="Where to run: auto picks CUDA when available.", panel=panel)


def _cache_dir(panel: str = MODEL) -> Any:
    return _opt(
        "--cache-dir",
        help="Download cache for checkpoint URLs. "
        "[default: $POSECLI_CACHE/checkpoints or ~/.cache/posecli/checkpoints]",
        panel=panel,
        metavar="DIR",
    )


def _print_config(panel: str = OUTPUT) -> Any:
    return _opt("--print-config", help="Print the resolved settings as YAML and exit (nothing runs).", panel=panel)


# -------------------------------------------------------------------------------- evaluate, predict: shared
FlipTestOpt = Annotated[
    bool | None, _opt("--flip-test/--no-flip-test", help="Average with the mirrored crop. " + FROM_CKPT, panel=TEST)
]
PostProcessOpt = Annotated[
    PostProcess | None,
    _opt(
        "--post-process",
        help="Heatmap decoding: default (quarter offset), unbiased (DARK) or none. " + FROM_CKPT,
        panel=TEST,
    ),
]
ModulateKernelOpt = Annotated[
    int | None, _opt("--modulate-kernel", help="DARK blur kernel size (odd). " + FROM_CKPT, panel=TEST)
]
ShiftHeatmapOpt = Annotated[
    bool | None,
    _opt(
        "--shift-heatmap/--no-shift-heatmap",
        help="Shift the flipped heatmap one pixel (MMPose). " + FROM_CKPT,
        panel=TEST,
    ),
]
BatchSizeOpt = Annotated[int | None, _opt("--batch-size", help="Boxes per forward pass. " + FROM_CKPT, panel=RUNTIME)]
OksThrOpt = Annotated[float | None, _opt("--oks-thr", help="OKS NMS threshold. " + FROM_CKPT, panel=TEST)]
VisThrOpt = Annotated[
    float | None,
    _opt("--vis-thr", help="Keypoint score threshold for rescoring (and drawing). " + FROM_CKPT, panel=TEST),
]
PresetForCkptOpt = Annotated[
    str | None,
    _opt(
        "--preset",
        "-p",
        help="Preset to read the checkpoint with. [default: the checkpoint's own settings]",
        panel=MODEL,
        metavar="PRESET",
    ),
]

# -------------------------------------------------------------------------------- presets_import
PresetsImportConfig = Annotated[Path, typer.Argument(help="MMPose 0.x config .py (read, never executed).")]
PresetsImportOut = Annotated[
    Path, _opt("--out", "-o", help="Preset YAML to write. [default: none, required]", panel=OUTPUT)
]

# -------------------------------------------------------------------------------- presets_export_mmpose
PresetsExportMmposeSource = Annotated[
    str, typer.Argument(help="Preset name, preset YAML or posecli checkpoint (.pth).")
]
PresetsExportMmposeOut = Annotated[
    Path, _opt("--out", "-o", help="MMPose config .py to write. [default: none, required]", panel=OUTPUT)
]

# -------------------------------------------------------------------------------- presets_show
PresetsShowName = Annotated[str, typer.Argument(help="Preset name or path.")]
PresetsShowAsJson = Annotated[bool, _opt("--json", help="One JSON object: settings and dataset_meta.", panel=OUTPUT)]

# -------------------------------------------------------------------------------- convert_dataset
ConvertDatasetSrc = Annotated[
    str | None, typer.Argument(help="Source file or folder (not needed for --from synthetic).")
]
ConvertDatasetFromFormat = Annotated[
    str | None,
    _opt(
        "--from",
        help="Source format: coco-wholebody, yolo-pose, labelme, deeplabcut or synthetic. [default: none]",
        panel=INPUT,
        metavar="FORMAT",
    ),
]
ConvertDatasetImgDir = Annotated[
    Path | None,
    _opt(
        "--img-dir",
        help="Image folder (for --check; deeplabcut: the project folder). [default: none]",
        panel=INPUT,
        metavar="DIR",
    ),
]
ConvertDatasetKeypoints = Annotated[
    str | None,
    _opt(
        "--keypoints",
        help="synthetic: coco, body_foot or coco_wholebody. labelme, deeplabcut, yolo-pose: the keypoint order "
        "as a built-in set, a meta file or comma-separated names. [default: coco for synthetic, else inferred]",
        panel=INPUT,
        metavar="SET",
    ),
]
ConvertDatasetParts = Annotated[
    str | None,
    _opt("--parts", help="coco-wholebody: parts to keep, e.g. body,foot. [default: all]", panel=INPUT, metavar="LIST"),
]
ConvertDatasetSplit = Annotated[
    str | None,
    _opt(
        "--split",
        help="yolo-pose: convert one split of data.yaml (e.g. train, val). [default: the only one]",
        panel=INPUT,
        metavar="NAME",
    ),
]
ConvertDatasetMargin = Annotated[
    float,
    _opt("--margin", help="labelme/deeplabcut boxes: pad each side by this x the points' extent.", panel=INPUT),
]
ConvertDatasetAllowOutsideImgDir = Annotated[
    bool, _opt("--allow-outside-img-dir", help="Accept image paths escaping --img-dir.", panel=INPUT)
]
ConvertDatasetNumImages = Annotated[int, _opt("--num-images", help="Number of images.", panel=SYNTHETIC)]
ConvertDatasetImageSize = Annotated[int, _opt("--image-size", help="Image side in pixels.", panel=SYNTHETIC)]
ConvertDatasetMaxPeople = Annotated[int, _opt("--max-people", help="Most people in one image.", panel=SYNTHETIC)]
ConvertDatasetSeed = Annotated[int, _opt("--seed", help="Random seed.", panel=SYNTHETIC)]
ConvertDatasetOut = Annotated[
    Path | None,
    _opt("--out", "-o", help="Output COCO JSON (a folder for synthetic). [default: none]", panel=OUTPUT),
]
ConvertDatasetCheck = Annotated[bool, _opt("--check", help="Validate SRC as a COCO keypoint file.", panel=OUTPUT)]

# -------------------------------------------------------------------------------- inspect_checkpoint
InspectCheckpointCheckpoint = Annotated[
    str, typer.Argument(help="Checkpoint path, or a file://, http(s):// or builtin:// URL.")
]
InspectCheckpointPreset = Annotated[
    str | None,
    _opt("--preset", "-p", help="Show the load plan into this preset. [default: none]", panel=MODEL, metavar="PRESET"),
]
InspectCheckpointKeypoints = Annotated[
    int | None, _opt("--keypoints", help="Keypoints of the preset's head. " + FROM_PRESET, panel=MODEL)
]
InspectCheckpointKeypointMap = Annotated[
    Path | None,
    _opt(
        "--keypoint-map",
        help="YAML/JSON {new_name: old_name} for the transplant. [default: by name]",
        panel=MODEL,
        metavar="FILE",
    ),
]
InspectCheckpointCacheDir = Annotated[Path | None, _cache_dir(RUNTIME)]
InspectCheckpointTimeout = Annotated[
    float | None,
    _opt(
        "--timeout",
        min=0.001,
        help="Download timeout, seconds. [default: $POSECLI_DOWNLOAD_TIMEOUT or 60]",
        panel=RUNTIME,
    ),
]
InspectCheckpointAsJson = Annotated[bool, _opt("--json", help="Print one JSON object.", panel=OUTPUT)]

# -------------------------------------------------------------------------------- finetune
FinetunePreset = Annotated[
    str | None,
    _opt(
        "--preset",
        "-p",
        help="Shipped preset name or preset YAML. [default: resolved from --load-from / --pretrained]",
        panel=MODEL,
        metavar="PRESET",
    ),
]
FinetuneLoadFrom = Annotated[
    str | None,
    _opt(
        "--load-from",
        help="Whole-model checkpoint to start from (path, URL or builtin://); its head is adapted to the "
        "keypoints. " + FROM_PRESET,
        panel=MODEL,
        metavar="CKPT",
    ),
]
FinetunePretrained = Annotated[
    str | None,
    _opt(
        "--pretrained",
        help="Backbone-only checkpoint (e.g. ImageNet HRNet); the head starts fresh. " + FROM_PRESET,
        panel=MODEL,
        metavar="CKPT",
    ),
]
FinetuneKeypoints = Annotated[
    int | None,
    _opt("--keypoints", help="Keypoints of the head. [default: the dataset's]", panel=MODEL),
]
FinetuneDataset = Annotated[
    str | None,
    _opt(
        "--dataset",
        help="Keypoint set: coco, coco_wholebody, body_foot, onehand10k or a META file. [default: from the "
        "preset, else from --keypoints or the training annotations]",
        panel=MODEL,
        metavar="NAME|FILE",
    ),
]
FinetuneKeypointMap = Annotated[
    str | None,
    _opt(
        "--keypoint-map",
        help="YAML/JSON {new_name: old_name}: which checkpoint rows seed which keypoints. [default: by name]",
        panel=MODEL,
        metavar="FILE",
    ),
]
FinetuneTrainAnn = Annotated[
    str | None, _opt("--train-ann", help="Training COCO keypoint file. " + FROM_PRESET, panel=DATA, metavar="FILE")
]
FinetuneTrainImgDir = Annotated[
    str | None, _opt("--train-img-dir", help="Training images. " + FROM_PRESET, panel=DATA, metavar="DIR")
]
FinetuneValAnn = Annotated[
    str | None, _opt("--val-ann", help="Validation COCO keypoint file. " + FROM_PRESET, panel=DATA, metavar="FILE")
]
FinetuneValImgDir = Annotated[
    str | None, _opt("--val-img-dir", help="Validation images. " + FROM_PRESET, panel=DATA, metavar="DIR")
]
FinetuneAllowOutsideImgDir = Annotated[
    bool | None,
    _opt("--allow-outside-img-dir", help="Accept image paths escaping the image folders. [default: off]", panel=DATA),
]
FinetuneWorkers = Annotated[
    int | None, _opt("--workers", help="Data-loading worker processes. " + FROM_PRESET, panel=DATA)
]
FinetuneEpochs = Annotated[int | None, _opt("--epochs", help="Training epochs. " + FROM_PRESET, panel=SCHEDULE)]
FinetuneBatchSize = Annotated[
    int | None, _opt("--batch-size", help="Batch size per process. " + FROM_PRESET, panel=SCHEDULE)
]
FinetuneLr = Annotated[
    float | None, _opt("--lr", help="Base learning rate. " + FROM_PRESET, panel=SCHEDULE, metavar="LR")
]
FinetuneAutoScaleLr = Annotated[
    int | None,
    _opt(
        "--auto-scale-lr",
        help="Scale the lr linearly from this base batch to the global batch. " + FROM_PRESET,
        panel=SCHEDULE,
        metavar="BATCH",
    ),
]
FinetuneBackboneLrMult = Annotated[
    float | None, _opt("--backbone-lr-mult", help="Backbone lr = lr x this. " + FROM_PRESET, panel=SCHEDULE)
]
FinetuneFreezeBackboneEpochs = Annotated[
    int | None,
    _opt(
        "--freeze-backbone-epochs",
        help="Train the head alone for the first N epochs. " + FROM_PRESET,
        panel=SCHEDULE,
    ),
]
FinetuneFreezeBn = Annotated[
    bool | None,
    _opt("--freeze-bn/--no-freeze-bn", help="Keep BatchNorm statistics fixed. " + FROM_PRESET, panel=SCHEDULE),
]
FinetuneGradClip = Annotated[
    float | None,
    _opt("--grad-clip", help="Clip the gradient norm to this. " + FROM_PRESET, panel=SCHEDULE, metavar="NORM"),
]
FinetuneEvalInterval = Annotated[
    int | None,
    _opt("--eval-interval", help="Evaluate every N epochs (and after the last). " + FROM_PRESET, panel=SCHEDULE),
]
FinetuneEvalBefore = Annotated[
    bool | None,
    _opt(
        "--eval-before/--no-eval-before",
        help="Evaluate the loaded model once before training. " + FROM_PRESET,
        panel=SCHEDULE,
    ),
]
FinetuneSaveBest = Annotated[
    str | None,
    _opt(
        "--save-best",
        help="Metric that picks best.pth, e.g. AP, AR. " + FROM_PRESET,
        panel=SCHEDULE,
        metavar="METRIC",
    ),
]
FinetuneSeed = Annotated[int | None, _opt("--seed", help="Random seed. " + FROM_PRESET, panel=SCHEDULE)]
FinetuneDevice = Annotated[Device, _device()]
FinetuneAmp = Annotated[
    Amp | None,
    _opt("--amp", help="Mixed precision: auto = bf16 on CUDA, off on CPU. " + FROM_PRESET, panel=RUNTIME),
]
FinetuneCompileModel = Annotated[
    bool | None,
    _opt("--compile/--no-compile", help="Run the model through torch.compile. " + FROM_PRESET, panel=RUNTIME),
]
FinetuneGpuDecode = Annotated[
    bool | None,
    _opt(
        "--gpu-decode/--no-gpu-decode",
        help="CUDA only: decode JPEGs on the GPU (nvjpeg) and warp the crops there (the same crops as OpenCV's); "
        "other formats are decoded on the CPU and moved. " + FROM_PRESET,
        panel=RUNTIME,
    ),
]
FinetuneSyncBn = Annotated[
    bool | None,
    _opt("--sync-bn/--no-sync-bn", help="SyncBatchNorm across processes (torchrun). " + FROM_PRESET, panel=RUNTIME),
]
FinetuneResume = Annotated[
    str | None,
    _opt(
        "--resume",
        help="Resume from PATH; a bare --resume takes last.pth of the work dir. [default: start afresh]",
        panel=RUNTIME,
        metavar="[PATH]",
    ),
]
FinetuneWorkDir = Annotated[
    Path | None,
    _opt(
        "--work-dir",
        help="Output folder. [default: work_dirs/PRESET, or the checkpoint's name without a preset]",
        panel=OUTPUT,
        metavar="DIR",
    ),
]
FinetuneOverwrite = Annotated[
    bool, _opt("--overwrite", help="Start a new run in a work dir that already holds one.", panel=OUTPUT)
]
FinetuneLogInterval = Annotated[
    int | None, _opt("--log-interval", help="Log every N iterations. " + FROM_PRESET, panel=OUTPUT)
]
FinetunePrintConfig = Annotated[bool, _print_config()]

# -------------------------------------------------------------------------------- evaluate
EvaluateCheckpoint = Annotated[
    str | None,
    _opt(
        "--checkpoint",
        "-c",
        help="Checkpoint to run: path, URL or builtin://. [default: none]",
        panel=MODEL,
        metavar="CKPT",
    ),
]
EvaluateDataset = Annotated[
    str | None,
    _opt(
        "--dataset",
        help="Keypoint set: coco, coco_wholebody, body_foot, onehand10k or a META file. [default: the "
        "checkpoint's; with --predictions: from the annotations]",
        panel=MODEL,
        metavar="NAME|FILE",
    ),
]
EvaluateKeypoints = Annotated[int | None, _opt("--keypoints", help="Keypoints of the head. " + FROM_CKPT, panel=MODEL)]
EvaluateCacheDir = Annotated[Path | None, _cache_dir()]
EvaluateAnnFile = Annotated[
    Path | None,
    _opt(
        "--ann-file",
        help="COCO keypoint ground truth. [default: the checkpoint's synthetic validation set, if it had one]",
        panel=DATA,
        metavar="FILE",
    ),
]
EvaluateImgDir = Annotated[
    Path | None, _opt("--img-dir", help="Image folder. [default: none]", panel=DATA, metavar="DIR")
]
EvaluateBboxFile = Annotated[
    Path | None,
    _opt(
        "--bbox-file",
        help="Person detections (COCO results). [default: ground-truth boxes]",
        panel=DATA,
        metavar="FILE",
    ),
]
EvaluateDetBboxThr = Annotated[
    float | None, _opt("--det-bbox-thr", help="Drop detections scoring below this. " + FROM_CKPT, panel=DATA)
]
EvaluatePredictions = Annotated[
    Path | None,
    _opt(
        "--predictions",
        help="Score this results file instead of running a model. [default: none]",
        panel=DATA,
        metavar="FILE",
    ),
]
EvaluateAllowOutsideImgDir = Annotated[
    bool, _opt("--allow-outside-img-dir", help="Accept image paths escaping --img-dir.", panel=DATA)
]
EvaluateSoftNms = Annotated[
    bool | None,
    _opt("--soft-nms/--no-soft-nms", help="Soft OKS NMS instead of greedy OKS NMS. " + FROM_CKPT, panel=TEST),
]
EvaluateWorkers = Annotated[
    int | None, _opt("--workers", help="Data-loading worker processes. " + FROM_CKPT, panel=RUNTIME)
]
EvaluateDevice = Annotated[Device, _device()]
EvaluateOutputDir = Annotated[
    Path | None,
    _opt(
        "--output-dir",
        "-o",
        help="Write results.json and metrics.json here. [default: none]",
        panel=OUTPUT,
        metavar="DIR",
    ),
]
EvaluatePerKeypoint = Annotated[bool, _opt("--per-keypoint", help="Also print the per-keypoint table.", panel=OUTPUT)]
EvaluateSaveVis = Annotated[
    int, _opt("--save-vis", help="Draw predictions on N images into OUTPUT_DIR/vis.", panel=OUTPUT, metavar="N")
]
EvaluateVisGt = Annotated[bool, _opt("--vis-gt", help="Also draw the ground truth.", panel=OUTPUT)]
EvaluatePrintConfig = Annotated[bool, _print_config()]

# -------------------------------------------------------------------------------- predict
PredictSources = Annotated[list[str], typer.Argument(help="Images, folders, videos or globs (quote globs).")]
PredictBboxFile = Annotated[
    Path | None,
    _opt(
        "--bbox-file",
        help="Boxes: COCO detections (with --ann-file) or records with file_name. [default: none]",
        panel=INPUT,
        metavar="FILE",
    ),
]
PredictAnnFile = Annotated[
    Path | None,
    _opt(
        "--ann-file",
        help="COCO file mapping the image ids of --bbox-file to files. [default: none]",
        panel=INPUT,
        metavar="FILE",
    ),
]
PredictWholeImage = Annotated[bool, _opt("--whole-image", help="One box = the whole image or frame.", panel=INPUT)]
PredictDetector = Annotated[
    str | None,
    _opt(
        "--detector",
        help="torchvision person detector, e.g. fasterrcnn_resnet50_fpn_v2. [default: none]",
        panel=INPUT,
        metavar="NAME",
    ),
]
PredictDetectorWeights = Annotated[
    Path | None,
    _opt(
        "--detector-weights",
        help="Local state_dict for --detector. [default: torchvision's COCO weights]",
        panel=INPUT,
        metavar="FILE",
    ),
]
PredictDetBboxThr = Annotated[
    float | None,
    _opt(
        "--det-bbox-thr",
        help="Drop boxes scoring below this. [default: the preset's for --bbox-file, 0.3 for --detector]",
        panel=INPUT,
    ),
]
PredictSkipBad = Annotated[bool, _opt("--skip-bad", help="Warn about unreadable inputs and go on.", panel=INPUT)]
PredictCheckpoint = Annotated[
    str | None,
    _opt(
        "--checkpoint",
        "-c",
        help="Checkpoint path/URL, or a MODEL.onnx from export. [default: none, required]",
        panel=MODEL,
        metavar="CKPT",
    ),
]
PredictDataset = Annotated[
    str | None,
    _opt(
        "--dataset",
        help="Keypoint set: built-in name or META file (not for .onnx). [default: the checkpoint's]",
        panel=MODEL,
        metavar="NAME|FILE",
    ),
]
PredictCacheDir = Annotated[Path | None, _cache_dir()]
PredictOksNms = Annotated[bool, _opt("--oks-nms", help="OKS NMS per image or frame (--oks-thr).", panel=TEST)]
PredictDevice = Annotated[Device, _device()]
PredictOutputDir = Annotated[
    Path, _opt("--output-dir", "-o", help="Writes predictions.json (and vis/) here.", panel=OUTPUT, metavar="DIR")
]
PredictSaveVis = Annotated[bool, _opt("--save-vis", help="Draw into OUTPUT_DIR/vis (images, videos).", panel=OUTPUT)]

# -------------------------------------------------------------------------------- export
ExportCheckpoint = Annotated[str, typer.Argument(help="Checkpoint path or URL.")]
ExportKeypoints = Annotated[int | None, _opt("--keypoints", help="Keypoints of the head. " + FROM_CKPT, panel=MODEL)]
ExportCacheDir = Annotated[Path | None, _cache_dir()]
ExportOut = Annotated[
    Path | None,
    _opt("--out", "-o", help="Output file, e.g. model.onnx. [default: none, required]", panel=OUTPUT, metavar="FILE"),
]
ExportFmt = Annotated[str, _opt("--format", "-f", help="Export format (onnx).", panel=OUTPUT, metavar="FORMAT")]
ExportOpset = Annotated[int, _opt("--opset", help="ONNX opset version.", panel=OUTPUT)]
