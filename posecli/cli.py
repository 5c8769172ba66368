"""The posecli command line: Typer flags only. Each command builds its typed options (``options.py``) and calls
``commands.<name>.run``; the command modules (and torch, Rich) are imported only when a command runs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from posecli.errors import PoseCliError


class _Group(TyperGroup):
    """Root command group: a PoseCliError anywhere ends the command with one line on stderr and exit 2."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        # `--resume` takes an optional value: a bare `--resume` means "the work dir's last.pth".
        args = list(args)
        for i, arg in enumerate(args):
            if arg == "--resume" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                args.insert(i + 1, "auto")
                break
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PoseCliError as exc:
            _echo_err(str(exc))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            _echo_err("interrupted")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Group,
    name="posecli",
    help="Fine-tune and evaluate top-down HRNet heatmap pose estimators (MMPose-compatible numbers and checkpoints).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
presets_app = typer.Typer(help="List and show presets; import and export MMPose 0.x configs.", no_args_is_help=True)
app.add_typer(presets_app, name="presets")


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class PostProcess(str, Enum):
    default = "default"
    unbiased = "unbiased"
    none = "none"


PresetOpt = Annotated[str, typer.Option("--preset", "-p", help="Shipped preset name or path to a preset YAML.")]
KeypointsOpt = Annotated[
    int | None,
    typer.Option("--keypoints", help="Number of keypoints of the head (overrides model.head.out_channels)."),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto picks CUDA when available.")]
PrintConfigOpt = Annotated[bool, typer.Option("--print-config", help="Print the resolved settings as YAML and exit.")]


def _echo_err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


# ---------------------------------------------------------------------------------------------- presets
@presets_app.command("import")
def presets_import(
    config: Annotated[Path, typer.Argument(help="MMPose 0.x config .py (read, never executed).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Preset YAML to write.")],
) -> None:
    """Turn an MMPose 0.x top-down heatmap config into a posecli preset; prints what was mapped and ignored."""
    from posecli.commands import presets

    presets.run_import(config, out)


@presets_app.command("export-mmpose")
def presets_export_mmpose(
    source: Annotated[str, typer.Argument(help="Preset name, preset YAML or posecli checkpoint (.pth).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="MMPose config .py to write.")],
) -> None:
    """Write an MMPose 0.x config (model, data_cfg, pipelines, test_cfg, dataset_info, schedule)."""
    from posecli.commands import presets

    presets.run_export_mmpose(source, out)


@presets_app.command("list")
def presets_list() -> None:
    """List the shipped presets with their keypoint count and input size."""
    from posecli.commands import presets

    presets.run_list()


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="Preset name or path.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: settings and dataset_meta.")] = False,
) -> None:
    """Print a preset's resolved settings and its dataset metadata summary."""
    from posecli.commands import presets

    presets.run_show(name, as_json)


# -------------------------------------------------------------------------------------- convert-dataset
@app.command("convert-dataset")
def convert_dataset(
    src: Annotated[str | None, typer.Argument(help="Source file or folder (not needed for --from synthetic).")] = None,
    from_format: Annotated[
        str | None,
        typer.Option("--from", help="coco-wholebody | yolo-pose | labelme | deeplabcut | synthetic"),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output COCO JSON (a folder for synthetic).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Validate SRC as a COCO keypoint file.")] = False,
    img_dir: Annotated[
        Path | None, typer.Option("--img-dir", help="Image folder (for --check; deeplabcut: the project folder).")
    ] = None,
    parts: Annotated[str | None, typer.Option("--parts", help="coco-wholebody: parts to keep, e.g. body,foot")] = None,
    num_images: Annotated[int, typer.Option("--num-images", help="synthetic: number of images.")] = 100,
    keypoints: Annotated[
        str | None,
        typer.Option(
            "--keypoints",
            help="synthetic: coco | body_foot | coco_wholebody (default coco). labelme, deeplabcut, yolo-pose: "
            "keypoint order as a built-in set, a meta file or comma-separated names.",
        ),
    ] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="synthetic: image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="synthetic: random seed.")] = 0,
    margin: Annotated[
        float,
        typer.Option(
            "--margin", help="labelme/deeplabcut boxes from points: pad each side by this x the points' longer extent."
        ),
    ] = 0.1,
    allow_outside_img_dir: Annotated[
        bool, typer.Option("--allow-outside-img-dir", help="Accept image paths escaping --img-dir.")
    ] = False,
    split: Annotated[
        str | None, typer.Option("--split", help="yolo-pose: convert one split of data.yaml (e.g. train, val).")
    ] = None,
    max_people: Annotated[int, typer.Option("--max-people", help="synthetic: most people in one image.")] = 2,
) -> None:
    """Convert other keypoint formats to COCO, generate synthetic people, or --check a COCO file."""
    from posecli.commands import convert
    from posecli.options import ConvertOptions

    convert.run(
        ConvertOptions(
            src=src,
            from_format=from_format,
            out=out,
            check=check,
            img_dir=img_dir,
            parts=parts,
            num_images=num_images,
            keypoints=keypoints,
            image_size=image_size,
            seed=seed,
            margin=margin,
            allow_outside_img_dir=allow_outside_img_dir,
            split=split,
            max_people=max_people,
        )
    )


# ----------------------------------------------------------------------------------- inspect-checkpoint
@app.command("inspect-checkpoint")
def inspect_checkpoint(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint path, or a file://, http(s):// or builtin:// URL.")],
    preset: Annotated[str | None, typer.Option("--preset", "-p", help="Show the load plan into this preset.")] = None,
    keypoints: KeypointsOpt = None,
    keypoint_map: Annotated[
        Path | None, typer.Option("--keypoint-map", help="YAML/JSON {new_name: old_name} for the transplant.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help="Download cache (default $POSECLI_CACHE/checkpoints or ~/.cache/posecli/checkpoints)."
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", min=0.001, help="Download timeout, seconds (default $POSECLI_DOWNLOAD_TIMEOUT or 60)."
        ),
    ] = None,
) -> None:
    """Describe a checkpoint; with --preset, show what finetune --load-from would do with it."""
    from posecli.commands import inspect
    from posecli.options import InspectOptions

    inspect.run(
        InspectOptions(
            checkpoint=checkpoint,
            preset=preset,
            keypoints=keypoints,
            keypoint_map=keypoint_map,
            as_json=as_json,
            cache_dir=cache_dir,
            timeout=timeout,
        )
    )


# ------------------------------------------------------------------------------------------------ finetune
@app.command("finetune")
def finetune(
    preset: PresetOpt,
    keypoints: KeypointsOpt = None,
    load_from: Annotated[str | None, typer.Option("--load-from", help="Whole-model checkpoint (path/URL).")] = None,
    pretrained: Annotated[str | None, typer.Option("--pretrained", help="Backbone-only checkpoint.")] = None,
    keypoint_map: Annotated[str | None, typer.Option("--keypoint-map", help="{new_name: old_name} file.")] = None,
    train_ann: Annotated[str | None, typer.Option("--train-ann", help="Training COCO keypoint file.")] = None,
    train_img_dir: Annotated[str | None, typer.Option("--train-img-dir", help="Training images.")] = None,
    val_ann: Annotated[str | None, typer.Option("--val-ann", help="Validation COCO keypoint file.")] = None,
    val_img_dir: Annotated[str | None, typer.Option("--val-img-dir", help="Validation images.")] = None,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Output folder (default work_dirs/PRESET).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="train.total_epochs")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Per-process batch size.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="train.optimizer.lr")] = None,
    device: DeviceOpt = Device.auto,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Resume from PATH; a bare --resume takes last.pth of the work dir."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="train.seed")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Data-loading worker processes.")] = None,
    eval_interval: Annotated[int | None, typer.Option("--eval-interval", help="Evaluate every N epochs.")] = None,
    amp: Annotated[str | None, typer.Option("--amp", help="auto | bf16 | fp16 | none")] = None,
    compile_model: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile")] = None,
    gpu_decode: Annotated[
        bool | None,
        typer.Option(
            "--gpu-decode/--no-gpu-decode",
            help="CUDA only: decode JPEGs on the GPU (nvjpeg) and warp the crops there (same crops as OpenCV's); "
            "other formats are decoded on the CPU and moved.",
            rich_help_panel="Runtime",
        ),
    ] = None,
    freeze_backbone_epochs: Annotated[int | None, typer.Option("--freeze-backbone-epochs")] = None,
    freeze_bn: Annotated[bool | None, typer.Option("--freeze-bn/--no-freeze-bn")] = None,
    backbone_lr_mult: Annotated[float | None, typer.Option("--backbone-lr-mult")] = None,
    auto_scale_lr: Annotated[
        int | None, typer.Option("--auto-scale-lr", help="Base batch for linear lr scaling.")
    ] = None,
    sync_bn: Annotated[bool | None, typer.Option("--sync-bn/--no-sync-bn")] = None,
    grad_clip: Annotated[float | None, typer.Option("--grad-clip", help="Max gradient norm.")] = None,
    save_best: Annotated[
        str | None, typer.Option("--save-best", help="Metric that picks best.pth (train.save_best, e.g. AP, AR).")
    ] = None,
    log_interval: Annotated[int | None, typer.Option("--log-interval", help="Log every N iterations.")] = None,
    eval_before: Annotated[
        bool | None,
        typer.Option("--eval-before/--no-eval-before", help="Evaluate the loaded model once before training."),
    ] = None,
    allow_outside_img_dir: Annotated[
        bool | None, typer.Option("--allow-outside-img-dir", help="Accept image paths escaping the image dirs.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start a new run in a work dir that already holds one.")
    ] = False,
    print_config: PrintConfigOpt = False,
) -> None:
    """Fine-tune a model: load a checkpoint, swap the head, train, evaluate, keep last/best checkpoints."""
    from posecli.commands import finetune as finetune_command
    from posecli.options import FinetuneOptions

    overrides: dict[str, Any] = {
        "model.head.out_channels": keypoints,
        "train.load_from": load_from,
        "train.pretrained": pretrained,
        "train.keypoint_map": keypoint_map,
        "data.train_ann": train_ann,
        "data.train_img_dir": train_img_dir,
        "data.val_ann": val_ann,
        "data.val_img_dir": val_img_dir,
        "data.allow_outside_img_dir": allow_outside_img_dir,
        "train.total_epochs": epochs,
        "train.batch_size": batch_size,
        "train.optimizer.lr": lr,
        "train.seed": seed,
        "train.workers": workers,
        "train.eval_interval": eval_interval,
        "train.amp": amp,
        "train.compile": compile_model,
        "train.gpu_decode": gpu_decode,
        "train.freeze_backbone_epochs": freeze_backbone_epochs,
        "train.freeze_bn": freeze_bn,
        "train.backbone_lr_mult": backbone_lr_mult,
        "train.auto_scale_lr": auto_scale_lr,
        "train.sync_bn": sync_bn,
        "train.grad_clip": grad_clip,
        "train.save_best": save_best,
        "train.log_interval": log_interval,
        "train.eval_before_train": eval_before,
    }
    finetune_command.run(
        FinetuneOptions(
            preset=preset,
            overrides=overrides,
            work_dir=work_dir,
            device=device.value,
            resume=resume,
            overwrite=overwrite,
            print_config=print_config,
        )
    )


# ------------------------------------------------------------------------------------------------ evaluate
@app.command("evaluate")
def evaluate(
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", "-c", help="Checkpoint path or URL.")] = None,
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="Score this results file instead of running a model.")
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", "-p", help="Preset (default: the checkpoint's own).")
    ] = None,
    ann_file: Annotated[Path | None, typer.Option("--ann-file", help="COCO keypoint ground truth.")] = None,
    img_dir: Annotated[Path | None, typer.Option("--img-dir", help="Image folder.")] = None,
    bbox_file: Annotated[Path | None, typer.Option("--bbox-file", help="Person detections (COCO results).")] = None,
    det_bbox_thr: Annotated[float | None, typer.Option("--det-bbox-thr", help="Detection score threshold.")] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="coco | coco_wholebody | body_foot | META file (for --predictions)."),
    ] = None,
    keypoints: KeypointsOpt = None,
    flip_test: Annotated[bool | None, typer.Option("--flip-test/--no-flip-test")] = None,
    post_process: Annotated[PostProcess | None, typer.Option("--post-process")] = None,
    modulate_kernel: Annotated[int | None, typer.Option("--modulate-kernel", help="DARK blur kernel (odd).")] = None,
    shift_heatmap: Annotated[bool | None, typer.Option("--shift-heatmap/--no-shift-heatmap")] = None,
    soft_nms: Annotated[
        bool | None, typer.Option("--soft-nms/--no-soft-nms", help="Soft OKS NMS instead of greedy OKS NMS.")
    ] = None,
    oks_thr: Annotated[float | None, typer.Option("--oks-thr", help="OKS NMS threshold (test.oks_thr).")] = None,
    vis_thr: Annotated[
        float | None, typer.Option("--vis-thr", help="Keypoint score threshold for rescoring (test.vis_thr).")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Data-loading worker processes.")] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="Write results.json, metrics.json.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    device: DeviceOpt = Device.auto,
    per_keypoint: Annotated[bool, typer.Option("--per-keypoint", help="Also print the per-keypoint table.")] = False,
    save_vis: Annotated[int, typer.Option("--save-vis", help="Draw predictions on N images into OUTPUT_DIR/vis.")] = 0,
    vis_gt: Annotated[bool, typer.Option("--vis-gt", help="Also draw the ground truth.")] = False,
    allow_outside_img_dir: Annotated[bool, typer.Option("--allow-outside-img-dir")] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Download cache for URLs.")] = None,
    print_config: PrintConfigOpt = False,
) -> None:
    """Evaluate a checkpoint on a COCO-format set (flip test, DARK), or score a results file."""
    from posecli.commands import evaluate as evaluate_command
    from posecli.options import EvaluateOptions

    test_overrides: dict[str, Any] = {
        "model.head.out_channels": keypoints,
        "data.bbox_file": str(bbox_file) if bbox_file else None,
        "data.det_bbox_thr": det_bbox_thr,
        "data.allow_outside_img_dir": allow_outside_img_dir or None,
        "test.flip_test": flip_test,
        "test.post_process": post_process.value if post_process else None,
        "test.modulate_kernel": modulate_kernel,
        "test.shift_heatmap": shift_heatmap,
        "test.batch_size": batch_size,
        "test.soft_nms": soft_nms,
        "test.oks_thr": oks_thr,
        "test.vis_thr": vis_thr,
        "train.workers": workers,
    }
    evaluate_command.run(
        EvaluateOptions(
            checkpoint=checkpoint,
            predictions=predictions,
            preset=preset,
            overrides=test_overrides,
            ann_file=ann_file,
            img_dir=img_dir,
            dataset=dataset,
            output_dir=output_dir,
            device=device.value,
            per_keypoint=per_keypoint,
            save_vis=save_vis,
            vis_gt=vis_gt,
            cache_dir=cache_dir,
            print_config=print_config,
        )
    )


# ------------------------------------------------------------------------------------------------- predict
@app.command("predict")
def predict(
    sources: Annotated[list[str], typer.Argument(help="Images, folders, videos or globs (quote globs).")],
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", "-c", help="Checkpoint path/URL, or a MODEL.onnx from export.")
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", "-p", help="Preset (default: the checkpoint's own; not for .onnx).")
    ] = None,
    bbox_file: Annotated[
        Path | None,
        typer.Option("--bbox-file", help="Boxes: COCO detections (with --ann-file) or records with file_name."),
    ] = None,
    ann_file: Annotated[Path | None, typer.Option("--ann-file", help="COCO file mapping image ids to files.")] = None,
    whole_image: Annotated[bool, typer.Option("--whole-image", help="One box = the whole image/frame.")] = False,
    detector: Annotated[
        str | None, typer.Option("--detector", help="torchvision person detector, e.g. fasterrcnn_resnet50_fpn_v2.")
    ] = None,
    detector_weights: Annotated[
        Path | None, typer.Option("--detector-weights", help="Local state_dict for --detector (default: COCO).")
    ] = None,
    det_bbox_thr: Annotated[
        float | None,
        typer.Option("--det-bbox-thr", help="Drop boxes scoring below this (bbox file: preset's, detector: 0.3)."),
    ] = None,
    flip_test: Annotated[bool | None, typer.Option("--flip-test/--no-flip-test")] = None,
    post_process: Annotated[PostProcess | None, typer.Option("--post-process")] = None,
    modulate_kernel: Annotated[int | None, typer.Option("--modulate-kernel", help="DARK blur kernel (odd).")] = None,
    shift_heatmap: Annotated[bool | None, typer.Option("--shift-heatmap/--no-shift-heatmap")] = None,
    vis_thr: Annotated[
        float | None, typer.Option("--vis-thr", help="Keypoint score threshold for rescoring and drawing.")
    ] = None,
    oks_nms: Annotated[bool, typer.Option("--oks-nms", help="OKS NMS per image/frame (test.oks_thr).")] = False,
    oks_thr: Annotated[float | None, typer.Option("--oks-thr", help="OKS NMS threshold.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Boxes per forward pass.")] = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Writes predictions.json (and vis/).")] = Path(
        "work_dirs/predict"
    ),
    save_vis: Annotated[bool, typer.Option("--save-vis", help="Draw into OUTPUT_DIR/vis (images, videos).")] = False,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Warn about unreadable inputs and go on.")] = False,
    device: DeviceOpt = Device.auto,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Download cache for URLs.")] = None,
) -> None:
    """Run a model (.pth or exported .onnx) on images, folders and videos; write predictions.json."""
    from posecli.commands.predict import run_predict_command

    test_overrides: dict[str, Any] = {
        "test.flip_test": flip_test,
        "test.post_process": post_process.value if post_process else None,
        "test.modulate_kernel": modulate_kernel,
        "test.shift_heatmap": shift_heatmap,
        "test.batch_size": batch_size,
        "test.vis_thr": vis_thr,
        "test.oks_thr": oks_thr,
    }
    run_predict_command(
        sources,
        checkpoint=checkpoint,
        preset=preset,
        overrides={k: v for k, v in test_overrides.items() if v is not None},
        bbox_file=bbox_file,
        ann_file=ann_file,
        whole_image=whole_image,
        detector=detector,
        detector_weights=detector_weights,
        det_bbox_thr=det_bbox_thr,
        output_dir=output_dir,
        save_vis=save_vis,
        oks_nms=oks_nms,
        skip_bad=skip_bad,
        device=device.value,
        cache_dir=cache_dir,
    )


# -------------------------------------------------------------------------------------------------- export
@app.command("export")
def export(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint path or URL.")],
    preset: Annotated[
        str | None, typer.Option("--preset", "-p", help="Preset (default: the checkpoint's own).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Export format: onnx.")] = "onnx",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file, e.g. model.onnx.")] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 17,
    keypoints: KeypointsOpt = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Download cache for URLs.")] = None,
) -> None:
    """Export a checkpoint to ONNX (settings inside the file), checked against PyTorch with ONNX Runtime."""
    from posecli.commands.export import run_export_command

    overrides = {"model.head.out_channels": keypoints} if keypoints is not None else {}
    run_export_command(checkpoint, preset, fmt, out, opset, overrides, cache_dir)


def main() -> None:
    """Console-script entry point."""
    app()
