"""An Ultralytics pose folder (images/, labels/*.txt, data.yaml) -> COCO in pixels + meta with flip pairs."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from posecli.datasets.converters.common import (
    IMAGE_EXTENSIONS,
    ConvertResult,
    _category,
    _guard_outputs,
    _make_meta,
    _num,
    _write_outputs,
    meta_path_for,
    parse_keypoints_spec,
    person_annotation,
)
from posecli.datasets.meta import MAX_KEYPOINTS, DatasetMeta
from posecli.errors import PoseCliError
from posecli.files import is_whole_number, read_image_wh


def _find_data_yaml(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.is_dir():
        raise PoseCliError("no such file or folder", src)
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (src / name).is_file():
            return src / name
    yamls = sorted(src.glob("*.yaml")) + sorted(src.glob("*.yml"))
    if len(yamls) == 1:
        return yamls[0]
    raise PoseCliError("no data.yaml (with kpt_shape) in this folder", src)


def _yolo_names(data: dict[str, Any], path: Path) -> dict[int, str]:
    names = data.get("names", {0: "person"})
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise PoseCliError("'names' must map class indices to names", path)
    try:
        return {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError):
        raise PoseCliError("'names' keys must be class indices (0, 1, ...)", path) from None


def _yolo_kpt_names(data: dict[str, Any], k: int, path: Path) -> list[str] | None:
    raw = data.get("kpt_names", data.get("keypoint_names"))
    if raw is None:
        return None
    if isinstance(raw, dict):  # Ultralytics: {class index: [names]}; one keypoint set for all classes
        raw = raw.get(0, next(iter(raw.values()), None))
    if not isinstance(raw, list) or len(raw) != k:
        raise PoseCliError(f"kpt_names must list {k} keypoint names (kpt_shape[0])", path)
    return [str(n) for n in raw]


def _yolo_flip_pairs(data: dict[str, Any], k: int, path: Path) -> list[tuple[int, int]] | None:
    flip_idx = data.get("flip_idx")
    if flip_idx is None:
        return None
    if not isinstance(flip_idx, list) or len(flip_idx) != k or not all(is_whole_number(i) for i in flip_idx):
        raise PoseCliError(f"flip_idx must be a list of {k} keypoint indices", path)
    pairs = []
    for i, j in enumerate(flip_idx):
        if not 0 <= j < k or flip_idx[j] != i:
            raise PoseCliError(
                f"flip_idx is not a pairing: index {i} -> {j} -> {flip_idx[j] if 0 <= j < k else '?'}", path
            )
        if i < j:
            pairs.append((i, j))
    return pairs


def _label_path(image: Path) -> Path:
    """Ultralytics' rule: the last '/images/' in the path becomes '/labels/', the extension '.txt'."""
    s = str(image)
    a, b = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if a in s:
        head, tail = s.rsplit(a, 1)
        s = head + b + tail
    return Path(s).with_suffix(".txt")


def _parse_yolo_line(
    line: str, lineno: int, label: Path, k: int, dims: int, names: dict[int, str], image_wh: tuple[int, int]
) -> tuple[int, list[float], list[float]]:
    """One label line -> (class, bbox xywh px, keypoints [x, y, v]*K px)."""
    values = line.split()
    expected = 5 + k * dims
    if len(values) != expected:
        raise PoseCliError(
            f"line {lineno}: {len(values)} values, expected {expected} (class, 4 box values, {k} keypoints x {dims})",
            label,
        )
    try:
        nums = [float(v) for v in values]
    except ValueError:
        bad = next(v for v in values if not _float_ok(v))
        raise PoseCliError(f"line {lineno}: '{bad}' is not a number", label) from None
    if not all(math.isfinite(v) for v in nums):
        raise PoseCliError(f"line {lineno}: non-finite value", label)
    cls = nums[0]
    if cls != int(cls) or int(cls) not in names:
        raise PoseCliError(f"line {lineno}: class {values[0]} is not in data.yaml names {sorted(names)}", label)
    w, h = image_wh
    cx, cy, bw, bh = nums[1:5]
    if bw <= 0 or bh <= 0:
        raise PoseCliError(f"line {lineno}: box width and height must be positive", label)
    bbox = [_num((cx - bw / 2) * w), _num((cy - bh / 2) * h), _num(bw * w), _num(bh * h)]
    kpts: list[float] = []
    for j in range(k):
        x, y = nums[5 + j * dims], nums[6 + j * dims]
        if dims == 3:
            v = nums[7 + j * dims]
            if v not in (0, 1, 2):
                raise PoseCliError(
                    f"line {lineno}: keypoint {j} visibility {values[7 + j * dims]} not 0, 1 or 2", label
                )
        else:
            v = 0 if x == 0 and y == 0 else 2
        kpts += [0.0, 0.0, 0] if v == 0 else [_num(x * w), _num(y * h), int(v)]
    return int(cls), bbox, kpts


def _float_ok(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def convert_yolo_pose(src: Path, out: Path, split: str | None = None, keypoints: str | None = None) -> ConvertResult:
    """An Ultralytics pose folder (images/, labels/*.txt, data.yaml) -> COCO in pixels + meta with flip pairs."""
    yaml_path = _find_data_yaml(src)
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PoseCliError(f"cannot read data.yaml ({exc})", yaml_path) from None
    if not isinstance(data, dict):
        raise PoseCliError("data.yaml must be a mapping", yaml_path)
    shape = data.get("kpt_shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(is_whole_number(v) for v in shape)) or shape[1] not in (
        2,
        3,
    ):
        raise PoseCliError("data.yaml needs kpt_shape: [number of keypoints, 2 or 3]", yaml_path)
    k, dims = shape
    if not 1 <= k <= MAX_KEYPOINTS:
        raise PoseCliError(f"kpt_shape has {k} keypoints (allowed 1..{MAX_KEYPOINTS})", yaml_path)
    names = _yolo_names(data, yaml_path)
    spec_names, spec_meta = parse_keypoints_spec(keypoints)
    kpt_names = spec_names or _yolo_kpt_names(data, k, yaml_path) or [f"kpt_{i}" for i in range(k)]
    if len(kpt_names) != k:
        raise PoseCliError(f"--keypoints gives {len(kpt_names)} names but kpt_shape has {k} keypoints", yaml_path)
    flip = _yolo_flip_pairs(data, k, yaml_path)
    notes = []
    if flip is None and spec_meta is None:
        notes.append("data.yaml has no flip_idx: flip pairs inferred from keypoint names")
    root = yaml_path.parent
    if isinstance(data.get("path"), str) and data["path"]:
        candidate = Path(data["path"]) if Path(data["path"]).is_absolute() else yaml_path.parent / data["path"]
        if candidate.is_dir():
            root = candidate
    if split is not None:
        rel = data.get(split)
        if not isinstance(rel, str):
            raise PoseCliError(f"data.yaml has no folder for split '{split}'", yaml_path)
        img_root = root / rel
        if img_root.suffix == ".txt":
            raise PoseCliError(f"split '{split}' is an image list file; only image folders are supported", yaml_path)
    else:
        img_root = root / "images"
    if not img_root.is_dir():
        raise PoseCliError("image folder not found (expected images/ next to data.yaml, or --split NAME)", img_root)
    image_files = sorted(p for p in img_root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not image_files:
        raise PoseCliError("no images found", img_root)
    label_files = [_label_path(p.resolve()) for p in image_files]
    _guard_outputs([out, meta_path_for(out)], [yaml_path, *image_files, *label_files])
    if split is None:
        subdirs = sorted(
            {p.relative_to(img_root).parts[0] for p in image_files if len(p.relative_to(img_root).parts) > 1}
        )
        if len(subdirs) > 1:
            notes.append(f"converted all splits together ({', '.join(subdirs)}); --split NAME converts one")
    meta = _make_meta(root.name or "yolo_pose", kpt_names, spec_meta, flip)
    if spec_meta is not None and flip is not None:
        meta = DatasetMeta(**{**vars(spec_meta), "flip_pairs": flip, "notes": []})
    images, anns = [], []
    unlabelled = 0
    for image_id, (img, label) in enumerate(zip(image_files, label_files, strict=True), start=1):
        wh = read_image_wh(img)
        images.append(
            {"id": image_id, "file_name": img.relative_to(img_root).as_posix(), "width": wh[0], "height": wh[1]}
        )
        if not label.is_file():
            unlabelled += 1
            continue
        try:
            lines = label.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise PoseCliError(f"cannot read label file ({exc})", label) from None
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            cls, bbox, kpts = _parse_yolo_line(line, lineno, label, k, dims, names, wh)
            anns.append(person_annotation(len(anns) + 1, image_id, bbox, kpts, category_id=cls + 1))
    if unlabelled:
        notes.append(f"{unlabelled} image(s) without a label file kept as images with no people")
    categories = [_category(meta, cls + 1, name) for cls, name in sorted(names.items())]
    coco = {"images": images, "annotations": anns, "categories": categories}
    meta_file, people, labelled = _write_outputs(out, coco, meta, spec_meta is not None, "yolo-pose", src)
    if flip is not None:
        notes.insert(0, "flip pairs from flip_idx")
    return ConvertResult(out, meta_file, img_root, len(images), people, labelled, k, len(meta.flip_pairs), notes)
