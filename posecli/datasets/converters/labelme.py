"""LabelMe JSON files (point shapes: label = keypoint, group_id = person; optional rectangles) -> COCO."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from posecli.datasets.converters.common import (
    ConvertResult,
    _category,
    _guard_outputs,
    _make_meta,
    _num,
    _same_file,
    _write_outputs,
    box_from_points,
    meta_path_for,
    parse_keypoints_spec,
    person_annotation,
)
from posecli.errors import PoseCliError
from posecli.files import is_finite_number, is_whole_number, load_json_file, read_image_wh

_OCCLUDED_FLAGS = ("occluded", "invisible", "hidden")


def _labelme_files(src: Path, outputs: list[Path]) -> tuple[Path, list[Path]]:
    if src.is_file():
        return src.parent, [src]
    if not src.is_dir():
        raise PoseCliError("no such file or folder", src)
    files = [p for p in sorted(src.rglob("*.json")) if not any(_same_file(p, o) for o in outputs)]
    if not files:
        raise PoseCliError("no LabelMe .json files in this folder", src)
    return src, files


def _labelme_point(shape: dict[str, Any], i: int, path: Path, n_points: int) -> list[tuple[float, float]]:
    pts = shape.get("points")
    if not isinstance(pts, list) or len(pts) != n_points:
        kind = "a point" if n_points == 1 else "a rectangle"
        raise PoseCliError(f"shapes[{i}] ('{shape.get('label')}'): {kind} needs {n_points} point(s) [x, y]", path)
    out = []
    for p in pts:
        if not (isinstance(p, list) and len(p) == 2 and all(is_finite_number(v) for v in p)):
            raise PoseCliError(f"shapes[{i}] ('{shape.get('label')}'): points must be [x, y] numbers", path)
        out.append((float(p[0]), float(p[1])))
    return out


def _read_labelme(path: Path, root: Path) -> dict[str, Any]:
    """One LabelMe file -> {file_name, wh, people: {group: {points: {label: (x, y, v)}, box}}, ignored}."""
    data = load_json_file(path, "LabelMe file")
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise PoseCliError("not a LabelMe file (no 'shapes' list)", path)
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise PoseCliError("LabelMe file has no imagePath", path)
    image_path = image_path.replace("\\", "/")
    full = path.parent / image_path
    w, h = data.get("imageWidth"), data.get("imageHeight")
    if not (is_whole_number(w) and is_whole_number(h) and w > 0 and h > 0):
        if not full.is_file():
            raise PoseCliError("no imageWidth/imageHeight and the image is not there to measure", path)
        w, h = read_image_wh(full)
    file_name = Path(os.path.normpath(os.path.relpath(full, root))).as_posix()
    people: dict[Any, dict[str, Any]] = {}
    loose_boxes = []
    ignored = 0
    for i, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict):
            raise PoseCliError(f"shapes[{i}] is not an object", path)
        kind = shape.get("shape_type", "polygon")
        label = shape.get("label")
        group = shape.get("group_id")
        if group is not None and not is_whole_number(group):
            raise PoseCliError(f"shapes[{i}] ('{label}'): group_id must be a whole number or null", path)
        if kind == "point":
            if not isinstance(label, str) or not label:
                raise PoseCliError(f"shapes[{i}]: a point shape needs a label (the keypoint name)", path)
            (x, y) = _labelme_point(shape, i, path, 1)[0]
            flags = shape.get("flags") or {}
            v = 1 if isinstance(flags, dict) and any(flags.get(f) for f in _OCCLUDED_FLAGS) else 2
            person = people.setdefault(group, {"points": {}, "box": None})
            if label in person["points"]:
                who = f"group_id {group}" if group is not None else "the person without group_id"
                raise PoseCliError(f"shapes[{i}]: keypoint '{label}' appears twice for {who}", path)
            person["points"][label] = (x, y, v)
        elif kind == "rectangle":
            (x0, y0), (x1, y1) = _labelme_point(shape, i, path, 2)
            box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            if group is None:
                loose_boxes.append((i, box))
                continue
            person = people.setdefault(group, {"points": {}, "box": None})
            if person["box"] is not None:
                raise PoseCliError(f"shapes[{i}]: a second rectangle for group_id {group}", path)
            person["box"] = box
        else:
            ignored += 1
    for i, box in loose_boxes:  # a rectangle without group_id belongs to the only person, if there is one
        if len(people) == 1 and next(iter(people.values()))["box"] is None:
            next(iter(people.values()))["box"] = box
        elif not people:
            people[None] = {"points": {}, "box": box}
        else:
            raise PoseCliError(f"shapes[{i}]: rectangle without group_id but {len(people)} people in the image", path)
    return {"file_name": file_name, "wh": (int(w), int(h)), "people": people, "ignored": ignored}


def convert_labelme(src: Path, out: Path, keypoints: str | None = None, margin: float = 0.1) -> ConvertResult:
    """LabelMe JSON files (point shapes: label = keypoint, group_id = person; optional rectangles) -> COCO."""
    outputs = [out, meta_path_for(out)]
    root, files = _labelme_files(src, outputs)
    _guard_outputs(outputs, files)
    spec_names, spec_meta = parse_keypoints_spec(keypoints)
    parsed = [(f, _read_labelme(f, root)) for f in files]
    if spec_names is None:  # keypoint order: first appearance across the (sorted) files
        names: list[str] = []
        for _, item in parsed:
            for person in item["people"].values():
                names.extend(n for n in person["points"] if n not in names)
        if not names:
            raise PoseCliError("no point shapes found (keypoints are LabelMe 'point' shapes)", src)
    else:
        names = spec_names
    index = {n: i for i, n in enumerate(names)}
    images, anns = [], []
    ignored = 0
    for image_id, (f, item) in enumerate(parsed, start=1):
        w, h = item["wh"]
        images.append({"id": image_id, "file_name": item["file_name"], "width": w, "height": h})
        ignored += item["ignored"]
        for group in sorted(item["people"], key=lambda g: (g is None, g if g is not None else 0)):
            person = item["people"][group]
            kpts = [0.0] * (3 * len(names))
            for label, (x, y, v) in person["points"].items():
                if label not in index:
                    raise PoseCliError(f"keypoint label '{label}' is not in --keypoints ({', '.join(names)})", f)
                j = index[label]
                kpts[3 * j : 3 * j + 3] = [_num(x), _num(y), v]
            if person["box"] is not None:
                x0, y0, x1, y1 = person["box"]
                bbox = [_num(x0), _num(y0), _num(x1 - x0), _num(y1 - y0)]
            else:
                bbox = box_from_points([(x, y) for x, y, _ in person["points"].values()], margin, (w, h))
            anns.append(person_annotation(len(anns) + 1, image_id, bbox, kpts))
    meta = _make_meta(root.name or "labelme", names, spec_meta)
    notes = []
    if ignored:
        notes.append(f"{ignored} shape(s) that are neither points nor rectangles ignored")
    if spec_names is None:
        notes.append("keypoint order is the order of first appearance; --keypoints fixes it")
    coco = {"images": images, "annotations": anns, "categories": [_category(meta)]}
    meta_file, people, labelled = _write_outputs(out, coco, meta, spec_meta is not None, "labelme", src)
    return ConvertResult(out, meta_file, root, len(images), people, labelled, len(names), len(meta.flip_pairs), notes)
