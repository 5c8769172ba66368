"""Converters from other keypoint formats to COCO keypoints, synthetic data, and `--check` of a COCO file.

Every converter reads its input without changing it, writes ``OUT`` (COCO keypoints JSON) and
``OUT.meta.yaml`` (a posecli dataset meta file, usable as a preset's ``dataset:``) atomically, refuses to
write over an input file, and reports what it wrote. Malformed input raises PoseCliError naming the file
and the problem (line or row numbers where the format has them).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml

from posecli.atomic import atomic_write_text
from posecli.datasets.coco_format import CheckReport, Problem, check_coco  # noqa: F401 (Problem: re-exported)
from posecli.datasets.meta import BUILTIN, DatasetMeta, infer_flip_pairs, load_builtin, load_meta_file
from posecli.errors import PoseCliError

FORMATS = ("coco-wholebody", "yolo-pose", "labelme", "deeplabcut", "synthetic")
MAX_KEYPOINTS = 10_000  # more keypoints than this in one category is taken as a corrupt or hostile file
DEFAULT_MAX_ANN_BYTES = 2 * 1024**3
WHOLEBODY_PARTS = {  # part -> (field in a COCO-WholeBody annotation, number of keypoints), in flat order
    "body": ("keypoints", 17),
    "foot": ("foot_kpts", 6),
    "face": ("face_kpts", 68),
    "lefthand": ("lefthand_kpts", 21),
    "righthand": ("righthand_kpts", 21),
}
_WHOLEBODY_EXTRA_KEYS = {
    "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts",
    "face_box", "lefthand_box", "righthand_box", "face_valid", "lefthand_valid", "righthand_valid", "foot_valid",
}  # fmt: skip
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


# ------------------------------------------------------------------------------------------------ helpers
def max_annotation_bytes() -> int:
    """The largest annotation file posecli will parse (env POSECLI_MAX_ANN_BYTES, default 2 GiB)."""
    raw = os.environ.get("POSECLI_MAX_ANN_BYTES")
    if raw is None:
        return DEFAULT_MAX_ANN_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise PoseCliError(f"POSECLI_MAX_ANN_BYTES must be a whole number of bytes, got '{raw}'") from None
    if value <= 0:
        raise PoseCliError(f"POSECLI_MAX_ANN_BYTES must be positive, got {value}")
    return value


def load_json_file(path: str | Path, what: str = "annotation file") -> Any:
    """Parse a JSON file after checking its size against the limit; errors name the file and the position."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PoseCliError(f"cannot read {what} ({exc.strerror or exc})", path) from None
    if path.is_dir():
        raise PoseCliError(f"expected a {what}, found a folder", path)
    limit = max_annotation_bytes()
    if size > limit:
        raise PoseCliError(
            f"{what} is {size:,} bytes, over the {limit:,}-byte limit (raise POSECLI_MAX_ANN_BYTES to allow it)",
            path,
        )
    try:
        with path.open("rb") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise PoseCliError(json_error_text(exc, what), path) from None
    except UnicodeDecodeError:
        raise PoseCliError(f"{what} is not UTF-8 text", path) from None
    except OSError as exc:
        raise PoseCliError(f"cannot read {what} ({exc.strerror or exc})", path) from None


def json_error_text(exc: json.JSONDecodeError, what: str) -> str:
    """The problem of an unparsable JSON file in words, saying so when the file simply stops early."""
    if not exc.doc[exc.pos :].strip() or exc.msg.startswith("Unterminated string"):
        if not exc.doc.strip():
            return f"{what} is not valid JSON: the file is empty"
        return f"{what} is not valid JSON: it stops before the JSON is complete, at line {exc.lineno} (truncated?)"
    return f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"


def read_image_wh(path: Path) -> tuple[int, int]:
    """Image (width, height) as OpenCV loads it (EXIF orientation applied), reading only the header."""
    from PIL import Image  # Pillow comes with matplotlib; only the header is read

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PoseCliError(f"cannot read the image ({exc})", path) from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _num(v: float) -> float:
    """A coordinate for the JSON output: 3 decimals, no -0.0."""
    r = round(float(v), 3)
    return 0.0 if r == 0 else r


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


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
    report = check_coco_data(coco, src)
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


# ------------------------------------------------------------------------------------------ coco-wholebody
def parse_parts(parts: str | None) -> list[str]:
    """--parts body,foot -> the COCO-WholeBody parts in flat order (all five when None)."""
    if parts is None:
        return list(WHOLEBODY_PARTS)
    wanted = [p.strip().lower().replace("_", "") for p in parts.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in WHOLEBODY_PARTS]
    if unknown or not wanted:
        raise PoseCliError(f"unknown --parts {unknown or parts!r} (choose from {', '.join(WHOLEBODY_PARTS)})")
    return [p for p in WHOLEBODY_PARTS if p in wanted]  # flat COCO-WholeBody order whatever order was given


def wholebody_subset_meta(parts: list[str]) -> DatasetMeta:
    """The COCO-WholeBody meta restricted to some parts (names, sigmas, flip pairs, skeleton re-indexed)."""
    full = load_builtin("coco_wholebody")
    if parts == list(WHOLEBODY_PARTS):
        return full
    keep: list[int] = []
    new_parts: dict[str, tuple[int, int]] = {}
    for part in parts:
        start, end = full.parts[part]
        new_parts[part] = (len(keep), len(keep) + end - start)
        keep.extend(range(start, end))
    new = {old: i for i, old in enumerate(keep)}

    def pairs(src: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(new[a], new[b]) for a, b in src if a in new and b in new]

    kept_links = [i for i, (a, b) in enumerate(full.skeleton) if a in new and b in new]
    name = "body_foot" if parts == ["body", "foot"] else "coco_wholebody_" + "_".join(parts)
    return DatasetMeta(
        name=name,
        keypoint_names=[full.keypoint_names[i] for i in keep],
        flip_pairs=pairs(full.flip_pairs),
        sigmas=[full.sigmas[i] for i in keep],
        joint_weights=[full.joint_weights[i] for i in keep],
        skeleton=pairs(full.skeleton),
        upper_body_ids=[new[i] for i in full.upper_body_ids if i in new],
        lower_body_ids=[new[i] for i in full.lower_body_ids if i in new],
        parts=new_parts,
        keypoint_color=[full.keypoint_color[i] for i in keep] if full.keypoint_color else [],
        skeleton_color=[full.skeleton_color[i] for i in kept_links] if full.skeleton_color else [],
    )


def _check_top_level(data: Any, path: Path, what: str) -> tuple[list, list, list]:
    if not isinstance(data, dict):
        raise PoseCliError(f"not a {what} file: the top level must be an object with images, annotations", path)
    out = []
    for key in ("images", "annotations", "categories"):
        value = data.get(key)
        if not isinstance(value, list):
            raise PoseCliError(f"not a {what} file: no '{key}' list", path)
        out.append(value)
    return out[0], out[1], out[2]


def convert_coco_wholebody(src: Path, out: Path, parts: str | None = None) -> ConvertResult:
    """COCO-WholeBody (split fields keypoints/foot_kpts/face_kpts/...) -> flat COCO with 133 or fewer keypoints."""
    chosen = parse_parts(parts)
    meta = wholebody_subset_meta(chosen)
    _guard_outputs([out, meta_path_for(out)], [src])
    data = load_json_file(src)
    images, anns, cats = _check_top_level(data, src, "COCO-WholeBody")
    new_anns = []
    labelled = 0
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise PoseCliError(f"annotations[{i}] is not an object", src)
        ann_id = ann.get("id", f"#{i}")
        flat: list[float] = []
        for part in chosen:
            key, count = WHOLEBODY_PARTS[part]
            values = ann.get(key)
            if values is None:
                raise PoseCliError(
                    f"annotation {ann_id} has no '{key}' (is this a COCO-WholeBody file? --parts picks the parts)",
                    src,
                )
            if not isinstance(values, list) or len(values) != 3 * count or not all(_is_num(v) for v in values):
                n = len(values) if isinstance(values, list) else type(values).__name__
                raise PoseCliError(f"annotation {ann_id}: '{key}' must be {3 * count} numbers, got {n}", src)
            if key == "keypoints":
                bad = [v for v in values[2::3] if v not in (0, 1, 2)]
                if bad:
                    raise PoseCliError(
                        f"annotation {ann_id}: visibility values {sorted(set(bad))[:5]} not in 0, 1, 2", src
                    )
            else:
                # Real COCO-WholeBody files store detector confidences (e.g. 0.104, 1.37) as the third value
                # of the foot/face/hand fields; v > 0 means labelled. Flags 0/1/2 are kept, others become 2 or 0.
                values = [v if j % 3 != 2 or v in (0, 1, 2) else (2 if v > 0 else 0) for j, v in enumerate(values)]
            flat.extend(values)
        vis = flat[2::3]
        num = sum(1 for v in vis if v > 0)
        labelled += num
        new = {k: v for k, v in ann.items() if k not in _WHOLEBODY_EXTRA_KEYS}
        new["keypoints"] = [int(v) if j % 3 == 2 else v for j, v in enumerate(flat)]
        new["num_keypoints"] = num
        new_anns.append(new)
    new_cats = []
    for cat in cats:
        if not isinstance(cat, dict):
            raise PoseCliError("a 'categories' entry is not an object", src)
        new_cat = {k: v for k, v in cat.items() if k not in ("keypoints", "skeleton")}
        new_cat.update(_category(meta, cat.get("id", 1), str(cat.get("name", "person"))))
        new_cat["supercategory"] = cat.get("supercategory", new_cat["name"])
        new_cats.append(new_cat)
    coco = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    coco.update(images=images, annotations=new_anns, categories=new_cats)
    meta_file, people, labelled = _write_outputs(out, coco, meta, True, "coco-wholebody", src)
    return ConvertResult(
        out, meta_file, None, len(images), people, labelled, meta.num_keypoints, len(meta.flip_pairs),
        notes=[f"parts: {', '.join(chosen)}"],
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- yolo-pose
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
    if not isinstance(flip_idx, list) or len(flip_idx) != k or not all(_is_int(i) for i in flip_idx):
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
    if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(v) for v in shape)) or shape[1] not in (2, 3):
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


# ------------------------------------------------------------------------------------------------- labelme
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
        if not (isinstance(p, list) and len(p) == 2 and all(_is_num(v) for v in p)):
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
    if not (_is_int(w) and _is_int(h) and w > 0 and h > 0):
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
        if group is not None and not _is_int(group):
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


# ---------------------------------------------------------------------------------------------- deeplabcut
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


# --------------------------------------------------------------------------------------------------- check
# The rules live in posecli.datasets.coco_format (shared with the loader and `evaluate --predictions`).
def check_coco_file(
    ann_file: str | Path, img_dir: str | Path | None = None, allow_outside_img_dir: bool = False
) -> CheckReport:
    """Validate a COCO keypoint file (and its images under img_dir when given); never raises for content problems."""
    path = Path(ann_file)
    return check_coco_data(load_json_file(path), path, img_dir, allow_outside_img_dir)


def check_coco_data(
    data: Any, path: str | Path, img_dir: str | Path | None = None, allow_outside_img_dir: bool = False
) -> CheckReport:
    """The checks of check_coco_file on an already parsed document (``path`` names it in messages)."""
    return check_coco(data, path, img_dir, allow_outside_img_dir, details=True)


def print_check_report(report: CheckReport) -> None:
    """Print the summary table, labelled keypoints per name, then every problem (one line each)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    summary = Table(title=f"{report.ann_file}", title_justify="left")
    for col in ("images", "people", "people with keypoints", "labelled keypoints", "problems (fatal)"):
        summary.add_column(col, justify="right")
    summary.add_row(
        str(report.num_images),
        str(report.num_annotations),
        str(report.num_with_keypoints),
        str(report.num_labelled),
        f"{len(report.problems)} ({report.num_fatal})",
    )
    console.print(summary)
    if report.labelled_per_name:
        per = Table("keypoint", "labelled", "visible (v=2)")
        for name, n in report.labelled_per_name.items():
            per.add_row(name, str(n), str(report.visible_per_name.get(name, 0)))
        console.print(per)
    if report.img_dir is None:
        typer.echo("images on disk not checked (give --img-dir)")
    for problem in report.problems:  # plain echo: file names may contain Rich markup characters
        typer.echo(problem.line())
    typer.echo(
        "no problems found" if not report.problems else f"{len(report.problems)} problem(s), {report.num_fatal} fatal"
    )


# --------------------------------------------------------------------------------------------------- command
def _report_result(result: ConvertResult, source: str) -> None:
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


def run_convert_command(
    src: str | None,
    from_format: str | None,
    out: Path | None,
    check: bool,
    img_dir: Path | None,
    parts: str | None,
    num_images: int,
    keypoints: str | None,
    image_size: int,
    seed: int,
    margin: float,
    allow_outside_img_dir: bool,
    split: str | None = None,
    max_people: int = 2,
) -> None:
    """The `posecli convert-dataset` command: convert SRC to COCO, generate synthetic data, and/or --check."""
    if from_format is None:
        if not check:
            raise PoseCliError(f"give --from FORMAT ({', '.join(FORMATS)}) to convert, or --check to validate a file")
        if src is None:
            raise PoseCliError("--check needs the COCO keypoint file: posecli convert-dataset ANN.json --check")
        if out is not None:
            raise PoseCliError("--out is only used with --from; --check alone writes nothing")
        _run_check(Path(src), img_dir, allow_outside_img_dir)
        return
    fmt = from_format.strip().lower().replace("_", "-")
    if fmt not in FORMATS:
        raise PoseCliError(f"unknown --from '{from_format}' (choose from {', '.join(FORMATS)})")
    if out is None:
        raise PoseCliError(
            f"--from {fmt} needs --out ({'a folder' if fmt == 'synthetic' else 'the COCO JSON to write'})"
        )
    if parts is not None and fmt != "coco-wholebody":
        raise PoseCliError("--parts is only used with --from coco-wholebody")
    if split is not None and fmt != "yolo-pose":
        raise PoseCliError("--split is only used with --from yolo-pose")
    if not (math.isfinite(margin) and 0 <= margin <= 10):
        raise PoseCliError(f"--margin must be between 0 and 10 (a fraction of the points' extent), got {margin}")
    if fmt == "synthetic":
        if src is not None:
            raise PoseCliError("--from synthetic takes no SRC; give --out FOLDER")
        result = _run_synthetic(out, num_images, keypoints or "coco", image_size, seed, max_people)
    else:
        if src is None:
            raise PoseCliError(f"--from {fmt} needs SRC (the file or folder to convert)")
        source = Path(src)
        if not source.exists():
            raise PoseCliError("no such file or folder", source)
        if fmt == "coco-wholebody":
            if keypoints is not None:
                raise PoseCliError("--keypoints is not used with coco-wholebody; --parts chooses the keypoints")
            result = convert_coco_wholebody(source, out, parts)
        elif fmt == "yolo-pose":
            result = convert_yolo_pose(source, out, split, keypoints)
        elif fmt == "labelme":
            result = convert_labelme(source, out, keypoints, margin)
        else:
            result = convert_deeplabcut(source, out, img_dir, keypoints, margin)
    _report_result(result, fmt)
    if check:
        root = result.img_root if result.img_root is not None else img_dir
        _run_check(result.ann_file, root, allow_outside_img_dir)


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
