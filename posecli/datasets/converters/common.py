"""What every converter shares: the COCO records it writes, the meta file next to the output, output guards.

Every converter reads its input without changing it, writes ``OUT`` (COCO keypoints JSON) and ``OUT.meta.yaml`` (a
posecli dataset meta file, usable as a preset's ``dataset:``) atomically, refuses to write over an input file, and
never writes a file that posecli itself would refuse (``_refuse_unusable``, the ``--check`` rules).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from posecli.atomic import atomic_write_text
from posecli.datasets.coco_format import check_coco
from posecli.datasets.meta import BUILTIN, MAX_KEYPOINTS, DatasetMeta, infer_flip_pairs, load_builtin, load_meta_file
from posecli.errors import PoseCliError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _num(v: float) -> float:
    """A coordinate for the JSON output: 3 decimals, no -0.0."""
    r = round(float(v), 3)
    return 0.0 if r == 0 else r


def person_annotation(
    ann_id: int, image_id: int, bbox: list[float], keypoints: list[float], category_id: int = 1
) -> dict[str, Any]:
    """One COCO person annotation; ``area`` is the box area and ``num_keypoints`` counts v > 0."""
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": _num(bbox[2] * bbox[3]),
        "iscrowd": 0,
        "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0),
        "keypoints": keypoints,
    }


def box_from_points(xy: list[tuple[float, float]], margin: float, image_wh: tuple[int, int]) -> list[float]:
    """Box xywh around points, each side padded by margin x the longer side, clipped to the image."""
    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = margin * max(x1 - x0, y1 - y0, 1.0)
    w, h = image_wh
    x0, y0 = max(0.0, x0 - pad), max(0.0, y0 - pad)
    x1, y1 = min(float(w), x1 + pad), min(float(h), y1 + pad)
    return [_num(x0), _num(y0), _num(max(x1 - x0, 0.0)), _num(max(y1 - y0, 0.0))]


def meta_path_for(out: Path) -> Path:
    """OUT.json -> OUT.meta.yaml (the dataset meta written next to a converted file)."""
    return out.with_name((out.name[: -len(out.suffix)] if out.suffix else out.name) + ".meta.yaml")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _guard_outputs(outputs: list[Path], inputs: list[Path]) -> None:
    """Refuse to write over an input file or onto a folder."""
    for out in outputs:
        if out.is_dir():
            raise PoseCliError("output is a folder; give a file name such as train.json", out)
        for src in inputs:
            if _same_file(out, src):
                raise PoseCliError("refusing to overwrite the input file; choose another --out", out)


def parse_keypoints_spec(spec: str | None) -> tuple[list[str] | None, DatasetMeta | None]:
    """--keypoints for converters: a built-in set, a meta file, or comma-separated names (None: infer)."""
    if spec is None:
        return None, None
    if spec in BUILTIN:
        meta = load_builtin(spec)
        return list(meta.keypoint_names), meta
    if Path(spec).suffix.lower() in (".yaml", ".yml", ".json") and Path(spec).is_file():
        meta = load_meta_file(spec)
        return list(meta.keypoint_names), meta
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise PoseCliError(f"--keypoints '{spec}' names no keypoints")
    if len(set(names)) != len(names):
        raise PoseCliError(f"--keypoints lists a name twice: {spec}")
    if len(names) > MAX_KEYPOINTS:
        raise PoseCliError(f"--keypoints lists {len(names)} names, more than {MAX_KEYPOINTS}")
    return names, None


def _make_meta(name: str, names: list[str], given: DatasetMeta | None, flip_pairs: list | None = None) -> DatasetMeta:
    """The meta for converted data: the given one, or names with given or inferred flip pairs."""
    if given is not None:
        return given
    pairs = infer_flip_pairs(names) if flip_pairs is None else flip_pairs
    meta = DatasetMeta(name=name, keypoint_names=list(names), flip_pairs=pairs)
    return meta


def _meta_file_dict(meta: DatasetMeta, full: bool) -> dict[str, Any]:
    """What goes into OUT.meta.yaml: everything for a known meta, else only what the source defines."""
    if full:
        return meta.to_dict()
    d: dict[str, Any] = {
        "name": meta.name,
        "keypoint_names": list(meta.keypoint_names),
        "flip_pairs": [list(p) for p in meta.flip_pairs],
    }
    if meta.skeleton:
        d["skeleton"] = [list(p) for p in meta.skeleton]
    return d


def _category(meta: DatasetMeta, cat_id: int = 1, name: str = "person") -> dict[str, Any]:
    return {
        "id": cat_id,
        "name": name,
        "supercategory": name,
        "keypoints": list(meta.keypoint_names),
        "skeleton": [[a + 1, b + 1] for a, b in meta.skeleton],  # COCO files are 1-based
    }


@dataclass
class ConvertResult:
    """What a converter wrote and counted."""

    ann_file: Path
    meta_file: Path | None
    img_root: Path | None  # folder the image file names are relative to
    num_images: int
    num_people: int
    num_labelled: int  # keypoints with v > 0
    num_keypoint_names: int
    flip_pairs: int = 0
    notes: list[str] = field(default_factory=list)


def _refuse_unusable(coco: dict[str, Any], src: Path) -> None:
    """Never write a COCO file that posecli itself would refuse: name the first fatal problem and the source."""
    report = check_coco(coco, src)
    fatal = [p for p in report.problems if p.fatal]
    if fatal:
        first = fatal[0]
        where = f"annotation {first.ann_id}" if first.ann_id is not None else None
        where = where or (f"image {first.image_id}" if first.image_id is not None else "the file")
        more = f" (and {len(fatal) - 1} more problems)" if len(fatal) > 1 else ""
        raise PoseCliError(f"cannot convert: {where}: {first.message}{more}", src)


def _write_outputs(
    out: Path, coco: dict[str, Any], meta: DatasetMeta, full_meta: bool, source: str, src: Path
) -> tuple[Path, int, int]:
    """Check, then write OUT and OUT.meta.yaml atomically; return the meta path, people and labelled counts."""
    _refuse_unusable(coco, src)
    meta_file = meta_path_for(out)
    header = (
        f"# dataset meta written by `posecli convert-dataset --from {source}` for {out.name};\n"
        f"# use it in a preset as `dataset: {meta_file}`\n"
    )
    meta_text = header + yaml.safe_dump(_meta_file_dict(meta, full_meta), sort_keys=False, default_flow_style=None)
    atomic_write_text(out, json.dumps(coco) + "\n")
    atomic_write_text(meta_file, meta_text)
    people = len(coco["annotations"])
    labelled = sum(a.get("num_keypoints", 0) for a in coco["annotations"])
    return meta_file, people, labelled
