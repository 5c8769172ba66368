"""The posecli command line: Typer flags only. Each command builds its typed options (``options.py``) and calls
``commands.<name>.run``; the command modules (and torch, Rich) are imported only when a command runs.

Help pages are laid out by ``commands/help.py`` (panels, defaults, examples; nothing cut at 80 columns), and usage
errors (missing option, bad choice) end the command with one ``error:`` line and exit 2, as every other bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from posecli import __version__
from posecli import cli_flags as flags
from posecli.errors import PoseCliError

try:  # Typer >= 0.20 ships its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older Typer with click installed
    from click.exceptions import UsageError  # type: ignore[no-redef]


def _usage_error(exc: UsageError) -> NoReturn:
    """End the command on a usage error: one ``error:`` line (the help page for a bare group), exit 2."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `posecli` alone: the help page
        typer.echo(exc.format_message())
    else:
        from posecli.commands.help import usage_error_line

        _echo_err(usage_error_line(exc))
    raise typer.Exit(2) from None


def _one_line_usage_errors(call: Any, ctx: typer.Context, *args: Any) -> Any:
    try:
        return call(ctx, *args)
    except UsageError as exc:
        _usage_error(exc)


class _Command(TyperCommand):
    """A command whose help fits the terminal (commands/help.py)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from posecli.commands.help import page_for, render_help

        formatter.write(render_help(page_for(self, ctx), color=ctx.color is not False) + "\n")

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return _one_line_usage_errors(super().parse_args, ctx, args)


class _SubGroup(TyperGroup):
    """``posecli presets``: a group with the same help layout."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from posecli.commands.help import group_page_for, render_help

        formatter.write(render_help(group_page_for(self, ctx), color=ctx.color is not False) + "\n")


class _Group(_SubGroup):
    """Root command group: a PoseCliError or usage error anywhere ends the command with one line and exit 2."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            _usage_error(exc)

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
            return _one_line_usage_errors(super().invoke, ctx)
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
presets_app = typer.Typer(
    cls=_SubGroup, help="List and show presets; import and export MMPose 0.x configs.", no_args_is_help=True
)
app.add_typer(presets_app, name="presets")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"posecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Print posecli's version and exit."),
    ] = False,
) -> None:
    pass


def _echo_err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _command(name: str, examples: str, group: typer.Typer = app) -> Any:
    return group.command(name, cls=_Command, epilog=examples)


# ---------------------------------------------------------------------------------------------- presets
@_command(
    "import",
    "posecli presets import hrnet_w32_coco_256x192.py --out my.yaml\nposecli finetune --preset my.yaml --print-config",
    presets_app,
)
def presets_import(
    config: flags.PresetsImportConfig,
    out: flags.PresetsImportOut,
) -> None:
    """Turn an MMPose 0.x top-down heatmap config into a posecli preset; prints what was mapped and ignored."""
    from posecli.commands import presets

    presets.run_import(config, out)


@_command(
    "export-mmpose",
    "posecli presets export-mmpose demo --out demo_config.py\n"
    "posecli presets export-mmpose work_dirs/demo/best.pth --out config.py",
    presets_app,
)
def presets_export_mmpose(
    source: flags.PresetsExportMmposeSource,
    out: flags.PresetsExportMmposeOut,
) -> None:
    """Write an MMPose 0.x config (model, data_cfg, pipelines, test_cfg, dataset_info, schedule)."""
    from posecli.commands import presets

    presets.run_export_mmpose(source, out)


@_command("list", "posecli presets list\nposecli presets show demo", presets_app)
def presets_list() -> None:
    """List the shipped presets with their dataset, keypoint count, input size and starting checkpoint."""
    from posecli.commands import presets

    presets.run_list()


@_command("show", "posecli presets show demo\nposecli presets show my.yaml --json", presets_app)
def presets_show(
    name: flags.PresetsShowName,
    as_json: flags.PresetsShowAsJson = False,
) -> None:
    """Print a preset's resolved settings and its dataset metadata summary."""
    from posecli.commands import presets

    presets.run_show(name, as_json)


# -------------------------------------------------------------------------------------- convert-dataset
@_command(
    "convert-dataset",
    "posecli convert-dataset data.yaml --from yolo-pose --split val \\\n"
    "    --keypoints coco --out val.json\n"
    "posecli convert-dataset val.json --check --img-dir images/\n"
    "posecli convert-dataset --from synthetic --num-images 50 --out synth/",
)
def convert_dataset(
    src: flags.ConvertDatasetSrc = None,
    from_format: flags.ConvertDatasetFromFormat = None,
    img_dir: flags.ConvertDatasetImgDir = None,
    keypoints: flags.ConvertDatasetKeypoints = None,
    parts: flags.ConvertDatasetParts = None,
    split: flags.ConvertDatasetSplit = None,
    margin: flags.ConvertDatasetMargin = 0.1,
    allow_outside_img_dir: flags.ConvertDatasetAllowOutsideImgDir = False,
    num_images: flags.ConvertDatasetNumImages = 100,
    image_size: flags.ConvertDatasetImageSize = 256,
    max_people: flags.ConvertDatasetMaxPeople = 2,
    seed: flags.ConvertDatasetSeed = 0,
    out: flags.ConvertDatasetOut = None,
    check: flags.ConvertDatasetCheck = False,
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
@_command(
    "inspect-checkpoint",
    "posecli inspect-checkpoint builtin://demo_coco17.pth\n"
    "posecli inspect-checkpoint CKPT.pth --preset demo --keypoints 23 --json",
)
def inspect_checkpoint(
    checkpoint: flags.InspectCheckpointCheckpoint,
    preset: flags.InspectCheckpointPreset = None,
    keypoints: flags.InspectCheckpointKeypoints = None,
    keypoint_map: flags.InspectCheckpointKeypointMap = None,
    cache_dir: flags.InspectCheckpointCacheDir = None,
    timeout: flags.InspectCheckpointTimeout = None,
    as_json: flags.InspectCheckpointAsJson = False,
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
_FINETUNE_EXAMPLES = """\
# the demo: synthetic data, about 25 s on an idle 2-core CPU
posecli finetune --preset demo
# your COCO-format data, starting from an MMPose model-zoo checkpoint
posecli finetune --keypoints 17 --load-from hrnet_w32_coco_256x192.pth \\
    --train-ann train.json --train-img-dir images/ \\
    --val-ann val.json --val-img-dir images/
# keep the resolved settings as a preset
posecli finetune --keypoints 133 --load-from CKPT --print-config > my.yaml"""


@_command("finetune", _FINETUNE_EXAMPLES)
def finetune(
    preset: flags.FinetunePreset = None,
    load_from: flags.FinetuneLoadFrom = None,
    pretrained: flags.FinetunePretrained = None,
    keypoints: flags.FinetuneKeypoints = None,
    dataset: flags.FinetuneDataset = None,
    keypoint_map: flags.FinetuneKeypointMap = None,
    train_ann: flags.FinetuneTrainAnn = None,
    train_img_dir: flags.FinetuneTrainImgDir = None,
    val_ann: flags.FinetuneValAnn = None,
    val_img_dir: flags.FinetuneValImgDir = None,
    allow_outside_img_dir: flags.FinetuneAllowOutsideImgDir = None,
    workers: flags.FinetuneWorkers = None,
    epochs: flags.FinetuneEpochs = None,
    batch_size: flags.FinetuneBatchSize = None,
    lr: flags.FinetuneLr = None,
    auto_scale_lr: flags.FinetuneAutoScaleLr = None,
    backbone_lr_mult: flags.FinetuneBackboneLrMult = None,
    freeze_backbone_epochs: flags.FinetuneFreezeBackboneEpochs = None,
    freeze_bn: flags.FinetuneFreezeBn = None,
    grad_clip: flags.FinetuneGradClip = None,
    eval_interval: flags.FinetuneEvalInterval = None,
    eval_before: flags.FinetuneEvalBefore = None,
    save_best: flags.FinetuneSaveBest = None,
    seed: flags.FinetuneSeed = None,
    device: flags.FinetuneDevice = flags.Device.auto,
    amp: flags.FinetuneAmp = None,
    compile_model: flags.FinetuneCompileModel = None,
    gpu_decode: flags.FinetuneGpuDecode = None,
    sync_bn: flags.FinetuneSyncBn = None,
    resume: flags.FinetuneResume = None,
    work_dir: flags.FinetuneWorkDir = None,
    overwrite: flags.FinetuneOverwrite = False,
    log_interval: flags.FinetuneLogInterval = None,
    print_config: flags.FinetunePrintConfig = False,
) -> None:
    """Fine-tune a model: load a checkpoint, swap the head, train, evaluate, keep last/best checkpoints."""
    from posecli.commands import finetune as finetune_command
    from posecli.options import FinetuneOptions

    overrides: dict[str, Any] = {
        "train.keypoint_map": keypoint_map,
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
        "train.amp": amp.value if amp else None,
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
            dataset=dataset,
            keypoints=keypoints,
            load_from=load_from,
            pretrained=pretrained,
            train_ann=train_ann,
            overrides=overrides,
            work_dir=work_dir,
            device=device.value,
            resume=resume,
            overwrite=overwrite,
            print_config=print_config,
        )
    )


def _test_overrides(
    flip_test: bool | None,
    post_process: flags.PostProcess | None,
    modulate_kernel: int | None,
    shift_heatmap: bool | None,
    batch_size: int | None,
    oks_thr: float | None,
    vis_thr: float | None,
) -> dict[str, Any]:
    return {
        "test.flip_test": flip_test,
        "test.post_process": post_process.value if post_process else None,
        "test.modulate_kernel": modulate_kernel,
        "test.shift_heatmap": shift_heatmap,
        "test.batch_size": batch_size,
        "test.oks_thr": oks_thr,
        "test.vis_thr": vis_thr,
    }


# ------------------------------------------------------------------------------------------------ evaluate
_EVALUATE_EXAMPLES = """\
# the demo checkpoint on the synthetic data it was validated on
posecli evaluate --checkpoint work_dirs/demo/best.pth
# a checkpoint on your COCO-format set, with detected boxes
posecli evaluate -c best.pth --ann-file val.json --img-dir images/ \\
    --bbox-file dets.json -o eval/
# score a results file (no model)
posecli evaluate --predictions results.json --ann-file val.json"""


@_command("evaluate", _EVALUATE_EXAMPLES)
def evaluate(
    checkpoint: flags.EvaluateCheckpoint = None,
    preset: flags.PresetForCkptOpt = None,
    dataset: flags.EvaluateDataset = None,
    keypoints: flags.EvaluateKeypoints = None,
    cache_dir: flags.EvaluateCacheDir = None,
    ann_file: flags.EvaluateAnnFile = None,
    img_dir: flags.EvaluateImgDir = None,
    bbox_file: flags.EvaluateBboxFile = None,
    det_bbox_thr: flags.EvaluateDetBboxThr = None,
    predictions: flags.EvaluatePredictions = None,
    allow_outside_img_dir: flags.EvaluateAllowOutsideImgDir = False,
    flip_test: flags.FlipTestOpt = None,
    post_process: flags.PostProcessOpt = None,
    modulate_kernel: flags.ModulateKernelOpt = None,
    shift_heatmap: flags.ShiftHeatmapOpt = None,
    soft_nms: flags.EvaluateSoftNms = None,
    oks_thr: flags.OksThrOpt = None,
    vis_thr: flags.VisThrOpt = None,
    batch_size: flags.BatchSizeOpt = None,
    workers: flags.EvaluateWorkers = None,
    device: flags.EvaluateDevice = flags.Device.auto,
    output_dir: flags.EvaluateOutputDir = None,
    per_keypoint: flags.EvaluatePerKeypoint = False,
    save_vis: flags.EvaluateSaveVis = 0,
    vis_gt: flags.EvaluateVisGt = False,
    print_config: flags.EvaluatePrintConfig = False,
) -> None:
    """Evaluate a checkpoint on a COCO-format set (flip test, DARK), or score a results file."""
    from posecli.commands import evaluate as evaluate_command
    from posecli.options import EvaluateOptions

    test_overrides: dict[str, Any] = {
        **_test_overrides(flip_test, post_process, modulate_kernel, shift_heatmap, batch_size, oks_thr, vis_thr),
        "model.head.out_channels": keypoints,
        "data.bbox_file": str(bbox_file) if bbox_file else None,
        "data.det_bbox_thr": det_bbox_thr,
        "data.allow_outside_img_dir": allow_outside_img_dir or None,
        "test.soft_nms": soft_nms,
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
_PREDICT_EXAMPLES = """\
posecli predict photos/ --checkpoint best.pth --detector \\
    fasterrcnn_resnet50_fpn_v2 --save-vis
posecli predict clip.mp4 -c model.onnx --whole-image -o out/
posecli predict 'shots/*.jpg' -c best.pth --bbox-file boxes.json"""


@_command("predict", _PREDICT_EXAMPLES)
def predict(
    sources: flags.PredictSources,
    bbox_file: flags.PredictBboxFile = None,
    ann_file: flags.PredictAnnFile = None,
    whole_image: flags.PredictWholeImage = False,
    detector: flags.PredictDetector = None,
    detector_weights: flags.PredictDetectorWeights = None,
    det_bbox_thr: flags.PredictDetBboxThr = None,
    skip_bad: flags.PredictSkipBad = False,
    checkpoint: flags.PredictCheckpoint = None,
    preset: flags.PresetForCkptOpt = None,
    dataset: flags.PredictDataset = None,
    cache_dir: flags.PredictCacheDir = None,
    flip_test: flags.FlipTestOpt = None,
    post_process: flags.PostProcessOpt = None,
    modulate_kernel: flags.ModulateKernelOpt = None,
    shift_heatmap: flags.ShiftHeatmapOpt = None,
    vis_thr: flags.VisThrOpt = None,
    oks_nms: flags.PredictOksNms = False,
    oks_thr: flags.OksThrOpt = None,
    batch_size: flags.BatchSizeOpt = None,
    device: flags.PredictDevice = flags.Device.auto,
    output_dir: flags.PredictOutputDir = Path("work_dirs/predict"),
    save_vis: flags.PredictSaveVis = False,
) -> None:
    """Run a model (.pth or exported .onnx) on images, folders and videos; write predictions.json."""
    from posecli.commands import predict as predict_command
    from posecli.options import PredictOptions

    overrides = _test_overrides(flip_test, post_process, modulate_kernel, shift_heatmap, batch_size, oks_thr, vis_thr)
    predict_command.run(
        PredictOptions(
            sources=sources,
            checkpoint=checkpoint,
            preset=preset,
            dataset=dataset,
            overrides=overrides,
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
    )


# -------------------------------------------------------------------------------------------------- export
@_command(
    "export",
    "posecli export work_dirs/demo/best.pth --out demo.onnx\nposecli predict photos/ -c demo.onnx --whole-image",
)
def export(
    checkpoint: flags.ExportCheckpoint,
    preset: flags.PresetForCkptOpt = None,
    keypoints: flags.ExportKeypoints = None,
    cache_dir: flags.ExportCacheDir = None,
    out: flags.ExportOut = None,
    fmt: flags.ExportFmt = "onnx",
    opset: flags.ExportOpset = 17,
) -> None:
    """Export a checkpoint to ONNX (settings inside the file), checked against PyTorch with ONNX Runtime."""
    from posecli.commands import export as export_command
    from posecli.options import ExportOptions

    export_command.run(
        ExportOptions(
            checkpoint=checkpoint,
            preset=preset,
            fmt=fmt,
            out=out,
            opset=opset,
            overrides={"model.head.out_channels": keypoints},
            cache_dir=cache_dir,
        )
    )


def main() -> None:
    """Console-script entry point."""
    app()
