"""``posecli evaluate``: run a checkpoint over a COCO-format set (flip test, DARK) and score it, or score a results
file; print the metrics table and write results.json, results.meta.json, metrics.json (and drawings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from posecli import __version__
from posecli.atomic import atomic_write_json, atomic_write_text, check_writable_dir
from posecli.checkpoints import read_checkpoint, resolve_source, sha256_of
from posecli.datasets.meta import DatasetMeta, resolve_meta
from posecli.datasets.wholebody import is_wholebody, merge_wholebody
from posecli.engine.data import build_dataset, prepare_synthetic
from posecli.engine.distributed import DistInfo, resolve_device
from posecli.engine.evaluate import kernel_warning, run_evaluation
from posecli.engine.model_loading import (
    load_inference_model,
    meta_for_checkpoint,
    settings_for_checkpoint,
    trained_sigma,
)
from posecli.errors import PoseCliError
from posecli.metrics import infer_meta, load_results, score_results_file
from posecli.options import EvaluateOptions
from posecli.report import download_bar, print_metrics, print_note, print_warning, print_written, progress_bar
from posecli.settings import Settings, TestSettings, settings_to_yaml
from posecli.vis import save_visualisations

RESULTS_FILE = "results.json"
RESULTS_INFO_FILE = "results.meta.json"
METRICS_FILE = "metrics.json"
VIS_DIR = "vis"


def run(opts: EvaluateOptions) -> dict[str, Any]:
    """Evaluate a checkpoint or score a results file; returns the metrics.json object (empty with print_config)."""
    _check_output_dir(opts.output_dir)
    if opts.predictions is not None:
        return _score_predictions_file(opts)
    return _evaluate_checkpoint(opts)


def _check_output_dir(output_dir: Path | None) -> None:
    if output_dir is None:
        return
    check_writable_dir(output_dir, "--output-dir")  # a file or a read-only path fails before inference
    for name in (RESULTS_FILE, METRICS_FILE, VIS_DIR):
        target = output_dir / name
        if name == VIS_DIR and target.exists() and not target.is_dir():
            raise PoseCliError("exists and is not a folder (it would hold the drawings)", target)
        if name != VIS_DIR and target.is_dir():
            raise PoseCliError("is a folder; posecli would write a file there", target)


def _require_file(path: Path | None, flag: str, what: str) -> Path:
    if path is None:
        raise PoseCliError(f"{flag} is required ({what})")
    if not path.exists():
        raise PoseCliError(f"{what} not found", path)
    if not path.is_file():
        raise PoseCliError(f"{what} is not a file", path)
    return path


def _write_outputs(
    output_dir: Path, metrics: dict[str, Any], results: list[dict[str, Any]] | None, info: dict[str, Any]
) -> list[Path]:
    written = []
    if results is not None:
        # compact: a COCO-WholeBody val set gives hundreds of MB pretty-printed
        atomic_write_text(output_dir / RESULTS_FILE, json.dumps(results, separators=(",", ":")) + "\n")
        atomic_write_json(output_dir / RESULTS_INFO_FILE, info)
        written += [output_dir / RESULTS_FILE, output_dir / RESULTS_INFO_FILE]
    atomic_write_json(output_dir / METRICS_FILE, {**metrics, "eval_info": info})
    written.append(output_dir / METRICS_FILE)
    return written


def _score_predictions_file(opts: EvaluateOptions) -> dict[str, Any]:
    """``--predictions``: score a results file as it is (no model); the flags that describe a model are refused."""
    predictions, preset, overrides, ann_file = opts.predictions, opts.preset, opts.overrides, opts.ann_file
    img_dir, dataset, output_dir = opts.img_dir, opts.dataset, opts.output_dir
    per_keypoint, save_vis, vis_gt = opts.per_keypoint, opts.save_vis, opts.vis_gt
    assert predictions is not None
    if preset is not None:
        raise PoseCliError("--preset describes a model; to name the keypoint set of a results file use --dataset")
    model_flags = sorted(
        k for k in overrides if k.startswith(("test.", "data.", "model.")) and k != "data.allow_outside_img_dir"
    )
    if model_flags:
        raise PoseCliError(
            f"{', '.join(model_flags)} only apply when running a model (--checkpoint); "
            "--predictions scores the results file as it is"
        )
    _require_file(ann_file, "--ann-file", "annotation file")
    _require_file(predictions, "--predictions", "results file")
    if save_vis and img_dir is None:
        raise PoseCliError("--save-vis with --predictions needs --img-dir (the images to draw on)")
    assert ann_file is not None
    allow = bool(overrides.get("data.allow_outside_img_dir", False))
    metrics = score_results_file(
        predictions, ann_file, dataset, extra=True, per_keypoint_ap=per_keypoint, allow_outside_img_dir=allow
    )
    info: dict[str, Any] = {
        "mode": "predictions",
        "predictions": str(predictions),
        "predictions_sha256": sha256_of(predictions),
        "ann_file": str(ann_file),
        "dataset": dataset or "inferred",
        "posecli_version": __version__,
    }
    print_metrics(metrics, per_keypoint, f"{predictions} scored against {ann_file}")
    if output_dir is not None:
        written = _write_outputs(output_dir, metrics, None, info)
        if save_vis:
            gt_data = json.loads(ann_file.read_text(encoding="utf-8"))
            raw = json.loads(predictions.read_text(encoding="utf-8"))
            meta = resolve_meta(dataset, ann_file) if dataset is not None else infer_meta(raw, gt_data, ann_file)
            results = load_results(predictions, meta)
            assert img_dir is not None
            kpt_thr = TestSettings().vis_thr  # the results carry no settings: the default threshold
            written += save_visualisations(
                output_dir / VIS_DIR, results, gt_data, Path(img_dir), meta, save_vis, kpt_thr, vis_gt, allow
            )
        print_written(written)
    return {**metrics, "eval_info": info}


# -------------------------------------------------------------------------------------------- checkpoint path
def _validation_data_of(settings: Settings, ckpt_path: Path) -> tuple[Path, Path]:
    """No --ann-file: the synthetic validation set the settings train and validate on (regenerated the same way,
    from its seed, when the cache no longer holds it); for real data, one line saying what to pass."""
    synthetic = settings.data.synthetic
    if settings.data.train_ann is not None or synthetic is None:
        recorded = f" (it was validated on {settings.data.val_ann})" if settings.data.val_ann else ""
        raise PoseCliError(
            f"which data? pass --ann-file VAL.json --img-dir IMAGES/{recorded}; only checkpoints trained on "
            "synthetic data are evaluated without them",
            ckpt_path,
        )
    files = prepare_synthetic(synthetic, DistInfo(0, 1, 0, torch.device("cpu"), None), print_note)
    assert files.val_ann is not None and files.val_img_dir is not None
    print_note(
        f"no --ann-file: evaluating on the synthetic validation set the checkpoint was validated on ({files.val_ann})"
    )
    return files.val_ann, files.val_img_dir


def _evaluate_checkpoint(opts: EvaluateOptions) -> dict[str, Any]:
    """``--checkpoint``: settings (preset or the checkpoint's own), dataset, model; inference, scoring, outputs."""
    checkpoint_src, preset, overrides, ann_file = opts.checkpoint, opts.preset, opts.overrides, opts.ann_file
    img_dir, dataset, output_dir, device = opts.img_dir, opts.dataset, opts.output_dir, opts.device
    per_keypoint, save_vis, vis_gt, print_config = opts.per_keypoint, opts.save_vis, opts.vis_gt, opts.print_config
    cache_dir = opts.cache_dir
    assert checkpoint_src is not None
    if not print_config and (ann_file is not None or img_dir is not None):  # no data: the checkpoint's own
        _require_file(ann_file, "--ann-file", "annotation file")
        if img_dir is None:
            raise PoseCliError("--img-dir is required with --checkpoint (the images of --ann-file)")
        if not Path(img_dir).is_dir():
            raise PoseCliError("image folder not found", img_dir)
    ckpt_path = resolve_source(checkpoint_src, cache_dir, progress=download_bar)
    checkpoint = read_checkpoint(ckpt_path)
    settings, settings_source, from_ckpt = settings_for_checkpoint(checkpoint, ckpt_path, preset, overrides)
    if print_config:
        sys.stdout.write(settings_to_yaml(settings))
        return {}
    if ann_file is None:
        ann_file, img_dir = _validation_data_of(settings, ckpt_path)
    assert ann_file is not None and img_dir is not None
    torch_device = resolve_device(device)
    meta = meta_for_checkpoint(dataset, checkpoint, settings, from_ckpt, ann_file)
    model = load_inference_model(settings, checkpoint, meta, ckpt_path).to(torch_device)
    test, data = settings.test, settings.data
    data_set = build_dataset(
        ann_file,
        img_dir,
        meta,
        data,
        train=False,
        bbox_file=data.bbox_file,
        det_bbox_thr=data.det_bbox_thr,
        with_target=False,
    )
    if len(data_set) == 0:
        raise PoseCliError(
            "no person boxes to evaluate (no labelled people, or no detection above the threshold)", ann_file
        )

    # settings caveats, printed before the long run; scoring caveats (e.g. defaulted sigmas) come with the table
    early = [f"dataset meta: {note}" for note in meta.notes if "sigma" not in note]
    sigma, sigma_source = trained_sigma(checkpoint, settings, from_ckpt)
    warning = kernel_warning(test, sigma, sigma_source)
    if warning:
        early.append(warning)

    for text in early:
        print_warning(text)

    with progress_bar(len(data_set), f"evaluating on {torch_device}") as advance:
        ev = run_evaluation(
            model,
            data_set,
            test,
            meta,
            torch_device,
            workers=settings.train.workers,
            per_keypoint_ap=per_keypoint,
            progress=advance,
        )
    metrics = dict(ev.metrics)
    scoring = list(metrics.pop("warnings", []))
    if early or scoring:
        metrics["warnings"] = early + scoring
    info = {
        "mode": "checkpoint",
        "checkpoint": str(checkpoint_src),
        "checkpoint_file": str(ckpt_path),
        "checkpoint_sha256": sha256_of(ckpt_path),
        "checkpoint_format": checkpoint.format,
        "settings_source": settings_source,
        "dataset": meta.name,
        "num_keypoints": meta.num_keypoints,
        "ann_file": str(ann_file),
        "img_dir": str(img_dir),
        "box_source": "file" if data.bbox_file else "ground truth",
        "bbox_file": data.bbox_file,
        "det_bbox_thr": data.det_bbox_thr if data.bbox_file else None,
        "image_size": list(data.image_size),
        "heatmap_size": list(data.heatmap_size),
        "flip_test": test.flip_test,
        "shift_heatmap": test.shift_heatmap,
        "post_process": test.post_process,
        "modulate_kernel": test.modulate_kernel,
        "trained_sigma": sigma,
        "vis_thr": test.vis_thr,
        "oks_thr": test.oks_thr,
        "use_nms": test.use_nms,
        "soft_nms": test.soft_nms,
        "num_boxes": ev.num_boxes,
        "num_results": len(ev.results),
        "device": str(torch_device),
        "inference_seconds": round(ev.seconds, 3),
        "posecli_version": __version__,
    }
    title = (
        f"{meta.name}: {ev.num_boxes} boxes ({info['box_source']}), flip_test={test.flip_test}, "
        f"shift_heatmap={test.shift_heatmap}, post_process={test.post_process}"
        + (f" (kernel {test.modulate_kernel})" if test.post_process == "unbiased" else "")
    )
    print_metrics({**metrics, "warnings": scoring}, per_keypoint, title)
    if output_dir is not None:
        written = _write_outputs(output_dir, metrics, ev.results, info)
        if save_vis:
            flat = _flat_results(ev.results, meta)
            written += save_visualisations(
                output_dir / VIS_DIR,
                flat,
                data_set.coco.dataset,
                Path(img_dir),
                meta,
                save_vis,
                test.vis_thr,
                vis_gt,
                allow_outside=data.allow_outside_img_dir,
            )
        print_written(written)
    return {**metrics, "eval_info": info}


def _flat_results(results: list[dict[str, Any]], meta: DatasetMeta) -> list[dict[str, Any]]:
    """Results with one flat ``keypoints`` list (COCO-WholeBody's split fields joined) for drawing."""
    if not is_wholebody(meta):
        return results
    return [{**r, "keypoints": merge_wholebody(r)} for r in results]
