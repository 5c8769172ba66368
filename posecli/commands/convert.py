"""``posecli convert-dataset``: convert SRC to COCO keypoints, generate synthetic people, and/or --check a file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from posecli.datasets.coco_format import check_coco_file
from posecli.datasets.converters import (
    ConvertResult,
    convert_coco_wholebody,
    convert_deeplabcut,
    convert_labelme,
    convert_yolo_pose,
)
from posecli.errors import PoseCliError
from posecli.options import ConvertOptions
from posecli.report import print_check_report


def run(opts: ConvertOptions) -> None:
    """Convert (``--from``), then ``--check`` the written file; or ``--check`` SRC alone. Flag rules: ConvertOptions."""
    fmt = opts.fmt
    if fmt is None:
        assert opts.src is not None
        _run_check(Path(opts.src), opts.img_dir, opts.allow_outside_img_dir)
        return
    assert opts.out is not None
    if fmt == "synthetic":
        keypoints = opts.keypoints or "coco"
        result = _run_synthetic(opts.out, opts.num_images, keypoints, opts.image_size, opts.seed, opts.max_people)
    else:
        assert opts.src is not None
        source = Path(opts.src)
        if fmt == "coco-wholebody":
            result = convert_coco_wholebody(source, opts.out, opts.parts)
        elif fmt == "yolo-pose":
            result = convert_yolo_pose(source, opts.out, opts.split, opts.keypoints)
        elif fmt == "labelme":
            result = convert_labelme(source, opts.out, opts.keypoints, opts.margin)
        else:
            result = convert_deeplabcut(source, opts.out, opts.img_dir, opts.keypoints, opts.margin)
    _report_result(result, fmt)
    if opts.check:
        root = result.img_root if result.img_root is not None else opts.img_dir
        _run_check(result.ann_file, root, opts.allow_outside_img_dir)


def _report_result(result: ConvertResult, source: str) -> None:
    """What a converter wrote, in a few lines."""
    typer.echo(
        f"wrote {result.ann_file}: {result.num_images} images, {result.num_people} people, "
        f"{result.num_labelled} labelled keypoints ({result.num_keypoint_names} keypoint names) from {source}"
    )
    if result.meta_file is not None:
        typer.echo(f"wrote {result.meta_file}: dataset meta with {result.flip_pairs} flip pairs")
    if result.img_root is not None:
        typer.echo(f"image file names are relative to {result.img_root} (use it as the image folder)")
    for note in result.notes:
        typer.echo(f"note: {note}")


def _run_check(ann_file: Path, img_dir: Path | None, allow_outside: bool) -> None:
    report = check_coco_file(ann_file, img_dir, allow_outside)
    print_check_report(report)
    if report.fatal:
        raise PoseCliError(f"{report.num_fatal} fatal problem(s), listed above", ann_file)


def _run_synthetic(
    out: Path, num_images: int, keypoints: str, image_size: int, seed: int, max_people: int
) -> ConvertResult:
    from posecli.datasets.synthetic import generate_synthetic_dataset

    ann_file = generate_synthetic_dataset(out, num_images, keypoints, image_size, seed, max_people)
    data = json.loads(ann_file.read_text())
    anns = data["annotations"]
    return ConvertResult(
        ann_file=ann_file,
        meta_file=None,
        img_root=out / "images",
        num_images=len(data["images"]),
        num_people=len(anns),
        num_labelled=sum(a["num_keypoints"] for a in anns),
        num_keypoint_names=len(data["categories"][0]["keypoints"]),
        flip_pairs=0,
        notes=[f"keypoint set: {keypoints} (use `dataset: {keypoints}` in a preset)"],
    )
