"""DeepLabCut CollectedData CSV(s) (single- or multi-animal) -> COCO, boxes from the points plus a margin."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from posecli.datasets.converters.common import (
    ConvertResult,
    _category,
    _guard_outputs,
    _make_meta,
    _num,
    _write_outputs,
    box_from_points,
    meta_path_for,
    parse_keypoints_spec,
    person_annotation,
)
from posecli.datasets.meta import MAX_KEYPOINTS
from posecli.errors import PoseCliError
from posecli.files import max_annotation_bytes, read_image_wh

_DLC_HEADERS = ("scorer", "individuals", "bodyparts", "coords")


def _read_dlc_csv(path: Path) -> tuple[list[str], list[tuple[str, str, str]], list[tuple[int, str, list[str]]]]:
    """Parse a CollectedData CSV -> (header kinds, columns (individual, bodypart, coord), rows (line, path, cells))."""
    try:
        size = path.stat().st_size
        if size > max_annotation_bytes():
            raise PoseCliError(f"CSV is {size:,} bytes, over the limit (POSECLI_MAX_ANN_BYTES)", path)
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PoseCliError(f"cannot read the CSV ({exc})", path) from None
    header: dict[str, list[str]] = {}
    n = 0
    while "coords" not in header:  # header rows up to and including 'coords'
        if n >= len(rows) or not rows[n]:
            break
        kind = rows[n][0].strip().lower()
        if kind not in _DLC_HEADERS:
            raise PoseCliError(
                f"not a DeepLabCut CollectedData CSV: line {n + 1} starts with '{rows[n][0]}' "
                "(expected header rows scorer / [individuals] / bodyparts / coords)",
                path,
            )
        header[kind] = rows[n]
        n += 1
    missing = [h for h in ("scorer", "bodyparts", "coords") if h not in header]
    if missing:
        raise PoseCliError(
            f"not a DeepLabCut CollectedData CSV: header rows {', '.join(missing)} missing "
            "(expected scorer / [individuals] / bodyparts / coords)",
            path,
        )
    coords = header["coords"]
    first = next((i for i, c in enumerate(coords) if c.strip() in ("x", "y")), None)
    if first is None:
        raise PoseCliError("the coords header row has no x / y columns", path)
    width = len(coords)
    for kind, row in header.items():
        if len(row) != width:
            raise PoseCliError(f"header row '{kind}' has {len(row)} cells, the coords row {width}", path)
    columns = []
    for c in range(first, width):
        ind = header["individuals"][c].strip() if "individuals" in header else ""
        columns.append((ind, header["bodyparts"][c].strip(), coords[c].strip()))
    data_rows = []
    for lineno, row in enumerate(rows[n:], start=n + 1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != width:
            raise PoseCliError(f"line {lineno}: {len(row)} cells, the header has {width}", path)
        image = "/".join(c.strip() for c in row[:first] if c.strip())
        if not image:
            raise PoseCliError(f"line {lineno}: no image path in the first column(s)", path)
        data_rows.append((lineno, image.replace("\\", "/"), row[first:]))
    return list(header), columns, data_rows


def _dlc_value(cell: str, lineno: int, path: Path) -> float | None:
    cell = cell.strip()
    if cell == "" or cell.lower() == "nan":
        return None
    try:
        v = float(cell)
    except ValueError:
        raise PoseCliError(f"line {lineno}: '{cell}' is not a number", path) from None
    if not math.isfinite(v):
        raise PoseCliError(f"line {lineno}: '{cell}' is not a finite number", path)
    return v


def _dlc_image(image: str, csv_path: Path, img_dir: Path | None) -> tuple[Path, str]:
    """Find an image named in a CSV row -> (root folder, file name relative to it)."""
    if img_dir is not None:
        candidates = [(img_dir, image), (img_dir, Path(image).name)]
    else:
        # labeled-data/VIDEO/CollectedData_X.csv names images relative to the project: labeled-data/VIDEO/img.png
        project = csv_path.parent.parent.parent if csv_path.parent.parent.name == "labeled-data" else csv_path.parent
        candidates = [(project, image), (csv_path.parent, Path(image).name)]
    for root, name in candidates:
        if (root / name).is_file():
            return root, name
    where = img_dir if img_dir is not None else candidates[0][0]
    raise PoseCliError(
        f"image '{image}' not found under {where} (give --img-dir, the DeepLabCut project folder)", csv_path
    )


def convert_deeplabcut(
    src: Path, out: Path, img_dir: Path | None = None, keypoints: str | None = None, margin: float = 0.1
) -> ConvertResult:
    """DeepLabCut CollectedData CSV(s) (single- or multi-animal) -> COCO, boxes from the points plus a margin."""
    outputs = [out, meta_path_for(out)]
    if src.is_dir():
        csvs = sorted(src.rglob("CollectedData*.csv")) or sorted(src.rglob("*.csv"))
        if not csvs:
            raise PoseCliError("no CollectedData*.csv files in this folder", src)
    elif src.is_file():
        csvs = [src]
    else:
        raise PoseCliError("no such file or folder", src)
    _guard_outputs(outputs, csvs)
    spec_names, spec_meta = parse_keypoints_spec(keypoints)
    names: list[str] = list(spec_names or [])
    parsed = []
    notes: list[str] = []
    for path in csvs:
        kinds, columns, rows = _read_dlc_csv(path)
        for ind, part, coord in columns:
            if coord in ("x", "y") and ind != "single" and part not in names:
                if spec_names is not None:
                    raise PoseCliError(f"bodypart '{part}' is not in --keypoints ({', '.join(spec_names)})", path)
                names.append(part)
        if any(ind == "single" for ind, _, _ in columns) and "individuals" in kinds:
            notes.append(f"{path.name}: unique bodyparts (individual 'single') are not per-animal; ignored")
        parsed.append((path, columns, rows))
    if len(names) > MAX_KEYPOINTS:
        raise PoseCliError(f"{len(names)} bodyparts, more than {MAX_KEYPOINTS}", src)
    index = {n: i for i, n in enumerate(names)}
    images, anns = [], []
    roots: set[Path] = set()
    for path, columns, rows in parsed:
        individuals = [ind for ind in dict.fromkeys(ind for ind, _, _ in columns) if ind != "single"]
        for lineno, image, cells in rows:
            root, file_name = _dlc_image(image, path, img_dir)
            roots.add(root.resolve())
            w, h = read_image_wh(root / file_name)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
            for ind in individuals:
                xy: dict[str, list[float | None]] = {}
                for (c_ind, part, coord), cell in zip(columns, cells, strict=True):
                    if c_ind == ind and coord in ("x", "y"):
                        xy.setdefault(part, [None, None])["xy".index(coord)] = _dlc_value(cell, lineno, path)
                kpts = [0.0] * (3 * len(names))
                pts = []
                for part, (x, y) in xy.items():
                    if (x is None) != (y is None):
                        raise PoseCliError(f"line {lineno}: '{part}' has only one of x, y", path)
                    if x is not None and y is not None:
                        j = index[part]
                        kpts[3 * j : 3 * j + 3] = [_num(x), _num(y), 2]
                        pts.append((x, y))
                if not pts:
                    continue  # this animal is not labelled in this frame
                bbox = box_from_points(pts, margin, (w, h))
                anns.append(person_annotation(len(anns) + 1, image_id, bbox, kpts))
    if len(roots) > 1:
        raise PoseCliError("images were found under different folders; give --img-dir (the project folder)", src)
    if not images:
        raise PoseCliError("no labelled frames in the CSV", src)
    img_root = next(iter(roots))
    meta = _make_meta(img_root.name or "deeplabcut", names, spec_meta)
    coco = {"images": images, "annotations": anns, "categories": [_category(meta, name="animal")]}
    meta_file, people, labelled = _write_outputs(out, coco, meta, spec_meta is not None, "deeplabcut", src)
    return ConvertResult(
        out, meta_file, img_root, len(images), people, labelled, len(names), len(meta.flip_pairs), notes
    )
