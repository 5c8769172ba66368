"""The one set of rules for COCO keypoint files, shared by `convert-dataset --check`, the training/evaluation
loader and the ground truth of `evaluate --predictions`.

``check_coco`` returns a ``CheckReport``: every finding, each fatal (the file cannot be used) or a warning (it is
used, and this is what happens). ``require_valid_coco`` raises PoseCliError on the first fatal finding. The three
callers therefore give the same verdict on the same file.

Fatal: a top level without ``images``/``annotations``/``categories`` lists; a category without a whole-number id,
twice, or without a list of keypoint names (or a name twice); an image or annotation that is not an object, lacks
a required key, has an id that is not a whole number or is used twice; an image whose width/height is not a
positive number or whose file_name is not a string or points outside the image folder (``/abs.png``,
``..\\x.png``: backslashes count as separators; allowed with --allow-outside-img-dir); an annotation whose
image_id or category_id is not listed, whose bbox is not 4 finite numbers, whose ``area`` is present but not a
finite number, whose ``iscrowd`` is not 0/1, a non-crowd annotation without ``keypoints``, keypoint fields that are
not lists of finite numbers, ``keypoints`` visibility outside 0/1/2, a ``keypoints`` length other than 3 x the
category's names, and a labelled non-crowd person whose box has a width or height <= 0. With an image folder:
an image that is missing, unreadable, or of another size than the file says.

Warnings: no ``area`` (OKS then uses 0.53 x box area, MMPose's/xtcocotools' rule, in every evaluation path);
``area`` <= 0 or a box that lies outside the image or is empty (MMPose skips that person); a box or labelled keypoint
beyond the image border; ``num_keypoints`` missing or wrong; skeleton links that name no keypoint of the category
(dropped; skeletons only draw pictures); ids written as whole floats (5.0); a file_name used twice; no annotations.
"""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posecli.datasets.wholebody import KEYPOINT_FIELDS
from posecli.errors import PoseCliError
from posecli.files import load_json_file, read_image_wh

MAX_KEYPOINTS = 10_000  # more keypoints than this in one category is taken as a corrupt or hostile file
MISSING_AREA_FACTOR = 0.53  # xtcocotools (MMPose's COCO evaluation): OKS area = 0.53 x box area without `area`
KEYPOINT_CHUNK_VALUES = 1 << 20  # values per fast numeric pass; a fault is then looked for in this many at most
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_REQUIRED_IMAGE_KEYS = ("id", "file_name", "width", "height")
_REQUIRED_ANN_KEYS = ("id", "image_id", "category_id", "bbox")


# ------------------------------------------------------------------------------------------------ report
@dataclass
class Problem:
    """One finding: what kind, where (annotation or image id), whether it is fatal."""

    kind: str
    message: str
    fatal: bool
    ann_id: Any = None
    image_id: Any = None

    def line(self) -> str:
        """One printable line for --check."""
        if self.ann_id is not None:
            where = f"annotation {self.ann_id}"
        elif self.image_id is not None:
            where = f"image {self.image_id}"
        else:
            where = "file"
        return f"{'FATAL' if self.fatal else 'warning'} [{self.kind}] {where}: {self.message}"

    def sentence(self) -> str:
        """The problem as an error message (without the file name)."""
        if self.ann_id is not None:
            return f"annotation id {self.ann_id}: {self.message}"
        if self.image_id is not None:
            return f"image id {self.image_id}: {self.message}"
        return self.message


@dataclass
class CheckReport:
    """Result of check_coco: summary counts and every problem found."""

    ann_file: Path
    img_dir: Path | None
    num_images: int = 0
    num_annotations: int = 0
    num_with_keypoints: int = 0
    num_labelled: int = 0
    labelled_per_name: dict[str, int] = field(default_factory=dict)
    visible_per_name: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def fatal(self) -> bool:
        """True when any problem makes the file unusable for training or evaluation."""
        return any(p.fatal for p in self.problems)

    @property
    def num_fatal(self) -> int:
        """Number of fatal problems."""
        return sum(p.fatal for p in self.problems)

    @property
    def warnings(self) -> list[str]:
        """The non-fatal findings as one-line messages."""
        return [p.sentence() for p in self.problems if not p.fatal]

    def add(self, kind: str, message: str, fatal: bool, ann_id: Any = None, image_id: Any = None) -> None:
        """Record a problem."""
        self.problems.append(Problem(kind, message, fatal, ann_id, image_id))


# ------------------------------------------------------------------------------------------------ helpers
def _is_num(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _whole(v: Any) -> bool:
    """A whole-number id: an int, or a float with an integral value (5.0, accepted with a warning)."""
    return type(v) is int or (type(v) is float and math.isfinite(v) and v.is_integer())


def file_name_escapes(name: str) -> bool:
    """Whether an image file_name points outside the image folder: absolute (``/x``, ``\\x``, ``C:x``) or ``..``."""
    unified = name.replace("\\", "/")
    if os.path.isabs(name) or unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        return True
    norm = os.path.normpath(unified)
    return norm == ".." or norm.startswith("../")


def effective_area(ann: dict[str, Any]) -> float:
    """The OKS area of a ground-truth person: its ``area``, or 0.53 x box area without one (MMPose's rule)."""
    area = ann.get("area")
    if _is_num(area):
        return float(area)
    bbox = ann["bbox"]
    return float(bbox[2]) * float(bbox[3]) * MISSING_AREA_FACTOR


def skeleton_links(category: dict[str, Any], num_keypoints: int) -> tuple[list[tuple[int, int]], list[Any]]:
    """A category's skeleton as 0-based links within its keypoints, and the links (as written) that are not."""
    raw = category.get("skeleton") or []
    if not isinstance(raw, list):
        return [], [raw]
    good: list[tuple[int, int]] = []
    bad: list[Any] = []
    for link in raw:
        if isinstance(link, list) and len(link) == 2 and all(_whole(v) and 1 <= v <= num_keypoints for v in link):
            good.append((int(link[0]) - 1, int(link[1]) - 1))
        else:
            bad.append(link)
    return good, bad


def skeleton_warning(category: dict[str, Any], bad: list[Any], num_keypoints: int) -> str:
    """The message for skeleton links that were dropped, in the file's own 1-based numbers."""
    shown = ", ".join(str(link) for link in bad[:6]) + (" ..." if len(bad) > 6 else "")
    return (
        f"category {category.get('id')} ('{category.get('name', '?')}'): {len(bad)} skeleton link(s) {shown} do not "
        f"join two of its {num_keypoints} keypoints (numbered 1..{num_keypoints}); dropped (skeletons only draw)"
    )


def as_finite_doubles(values: list[Any]) -> np.ndarray | None:
    """``values`` as a float64 array if each is a real number that stays finite as float32, else None.

    ``array('d', ...)`` converts at C speed and refuses None, strings and lists (TypeError) and ints too big
    for a double (OverflowError); booleans pass as 0/1, which is harmless.
    """
    if not values:
        return np.zeros(0)
    try:
        doubles = np.frombuffer(array("d", values), dtype=np.float64)
    except (TypeError, OverflowError):
        return None
    with np.errstate(over="ignore"):
        finite = np.isfinite(doubles.astype(np.float32)).all()  # 1e300 is finite as float64, inf as float32
    return doubles if finite else None


def _strict_visibility(name: str, values: list[Any]) -> bool:
    """COCO's flags 0/1/2 hold in ``keypoints``. COCO-WholeBody's face/hand/foot fields keep detector confidences
    (0.104, 1.37 ...) for pseudo-labelled points: any finite v there, v > 0 = labelled."""
    return name == "keypoints" and len(values) % 3 == 0


def _keypoint_problem(values: list[Any], coco_visibility: bool) -> tuple[str, str] | None:
    """(kind, message) of what is wrong with flat x, y, v values, or None."""
    doubles = as_finite_doubles(values)
    if doubles is None:
        bad = next((v for v in values if as_finite_doubles([v]) is None), "?")
        return "keypoints", f"holds a value that is not a finite number ({bad!r})"[:160]
    if coco_visibility:
        vis = doubles[2::3]
        bad_at = np.flatnonzero((vis != 0) & (vis != 1) & (vis != 2))
        if len(bad_at):
            shown = list(dict.fromkeys(values[2 + 3 * int(j)] for j in bad_at))[:5]  # as written in the file
            return "visibility", f"visibility values {shown} not in 0, 1, 2"
    return None


def _numbers_look_fine(anns: list[dict[str, Any]]) -> bool:
    """A fast filter: True when no keypoint value of ``anns`` can be bad (C-speed loops only).

    ``sum`` raises TypeError on a non-number and carries NaN/infinity into the total; a total beyond float32
    means some value may be too; the COCO flags of all ``keypoints`` fields are gathered in one set.
    """
    flags: set[Any] = set()
    total = 0.0
    try:
        for ann in anns:
            for name in KEYPOINT_FIELDS:
                values = ann.get(name)
                if values:
                    total += sum(values)
                    if _strict_visibility(name, values):
                        flags.update(values[2::3])
    except (TypeError, OverflowError):
        return False
    return -_FLOAT32_MAX <= total <= _FLOAT32_MAX and flags <= {0, 1, 2}


def _check_keypoint_numbers(anns: list[dict[str, Any]], report: CheckReport) -> None:
    """Every keypoint field of ``anns`` finite, ``keypoints`` flags 0/1/2: one fast pass, exact checks on failure."""
    if _numbers_look_fine(anns):
        return
    for ann in anns:
        for name in KEYPOINT_FIELDS:
            values = ann.get(name)
            problem = _keypoint_problem(values, _strict_visibility(name, values)) if values else None
            if problem:
                report.add(problem[0], f"'{name}' {problem[1]}", True, ann_id=ann["id"])
                break


# ------------------------------------------------------------------------------------------------ rules
def _check_categories(cats: list[Any], report: CheckReport, source: Path) -> dict[Any, list[str]]:
    by_id: dict[Any, list[str]] = {}
    for i, cat in enumerate(cats):
        if type(cat) is not dict or type(cat.get("id")) is not int:
            report.add("category", f"categories[{i}] is not an object with a whole-number 'id'", True)
            continue
        cid = cat["id"]
        if cid in by_id:
            report.add("duplicate_id", f"category id {cid} appears twice in 'categories'", True)
            continue
        names = cat.get("keypoints")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            report.add("category", f"category {cid} has no 'keypoints' name list", True)
            by_id[cid] = []
            continue
        if len(names) > MAX_KEYPOINTS:
            raise PoseCliError(f"category {cid} has {len(names):,} keypoints (more than {MAX_KEYPOINTS:,})", source)
        if len(set(names)) != len(names):
            report.add("category", f"category {cid} lists a keypoint name twice", True)
        _, bad = skeleton_links(cat, len(names))
        if bad:
            report.add("skeleton", skeleton_warning(cat, bad, len(names)), False)
        by_id[cid] = names
    return by_id


def _check_images(
    images: list[Any], report: CheckReport, img_dir: Path | None, allow_outside: bool
) -> dict[Any, tuple[float, float] | None]:
    sizes: dict[Any, tuple[float, float] | None] = {}
    seen_names: dict[str, Any] = {}
    float_ids = 0
    for i, img in enumerate(images):
        if type(img) is not dict:
            report.add("image", f"images[{i}] is not an object", True)
            continue
        missing = [k for k in _REQUIRED_IMAGE_KEYS if k not in img]
        if missing:
            report.add("image", f"image id {img.get('id')!r}: missing {', '.join(missing)}"[:160], True)
            continue
        iid = img["id"]
        if not _whole(iid):
            report.add("image", f"images[{i}]: id {iid!r} is not a whole number"[:160], True)
            continue
        float_ids += type(iid) is float
        if iid in sizes:
            report.add("duplicate_id", "appears twice in 'images'", True, image_id=iid)
            continue
        w, h = img["width"], img["height"]
        ok_size = _is_num(w) and _is_num(h) and w > 0 and h > 0
        sizes[iid] = (float(w), float(h)) if ok_size else None
        if not ok_size:
            report.add("image", "width/height must be positive numbers", True, image_id=iid)
        name = img["file_name"]
        if type(name) is not str or not name:
            report.add("image", "file_name must be a string", True, image_id=iid)
            continue
        if name in seen_names:
            report.add(
                "duplicate_file", f"file_name '{name}' also used by image {seen_names[name]}", False, image_id=iid
            )
        seen_names[name] = iid
        if file_name_escapes(name) and not allow_outside:
            report.add(
                "image_path",
                f"file_name '{name}' points outside the image folder (--allow-outside-img-dir, "
                "data.allow_outside_img_dir: true, accepts it)",
                True,
                image_id=iid,
            )
            continue
        if img_dir is None:
            continue
        full = img_dir / name
        if not full.is_file():
            report.add("image_missing", f"'{name}' not found in {img_dir}", True, image_id=iid)
            continue
        try:
            real = read_image_wh(full)
        except PoseCliError as exc:
            report.add("image_unreadable", f"'{name}': {exc.message}", True, image_id=iid)
            continue
        if ok_size and (int(w), int(h)) != real:
            report.add(
                "image_size", f"'{name}' is {real[0]}x{real[1]} on disk, {w}x{h} in the file", True, image_id=iid
            )
    if float_ids:
        report.add("id", f"{float_ids} image ids are written as floats (5.0); used as whole numbers", False)
    return sizes


def _labelled(ann: dict[str, Any]) -> bool:
    return any(v > 0 for v in (ann.get("keypoints") or [])[2::3])


def _check_annotation(
    ann: dict[str, Any], report: CheckReport, sizes: dict[Any, Any], cats: dict[Any, list[str]]
) -> bool:
    """Structure of one annotation with a valid id; False when its numbers cannot be checked further."""
    aid = ann["id"]
    image_id = ann["image_id"]
    if not _whole(image_id) or image_id not in sizes:
        report.add("unknown_image", f"image_id {image_id!r} is not in 'images'"[:160], True, ann_id=aid)
    cid = ann["category_id"]
    if type(cid) is not int or cid not in cats:
        report.add("unknown_category", f"category_id {cid!r} is not in 'categories'"[:160], True, ann_id=aid)
    bbox = ann["bbox"]
    ok = True
    if not (type(bbox) is list and len(bbox) == 4 and as_finite_doubles(bbox) is not None):
        report.add("bbox", "bbox must be [x, y, w, h] finite numbers", True, ann_id=aid)
        ok = False
    if "area" in ann and as_finite_doubles([ann["area"]]) is None:
        report.add("area", f"area {ann['area']!r} is not a finite number"[:160], True, ann_id=aid)
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1):
        report.add("iscrowd", f"iscrowd {crowd!r} is not 0 or 1"[:160], True, ann_id=aid)
        crowd = 1
    if not crowd and "keypoints" not in ann:
        report.add("keypoints", "missing keypoints", True, ann_id=aid)
    for name in KEYPOINT_FIELDS:
        if name in ann and type(ann[name]) is not list:
            report.add("keypoints", f"'{name}' is not a list", True, ann_id=aid)
            ok = False
    return ok


def _check_annotation_geometry(
    ann: dict[str, Any], report: CheckReport, sizes: dict[Any, Any], cats: dict[Any, list[str]], details: bool
) -> None:
    """Rules on the (valid) numbers of one annotation: box size and position, keypoint count, warnings."""
    aid = ann["id"]
    bbox = ann["bbox"]
    crowd = bool(ann.get("iscrowd", 0))
    names = cats.get(ann["category_id"]) if type(ann["category_id"]) is int else None
    kpts = ann.get("keypoints")
    if names and isinstance(kpts, list) and len(kpts) != 3 * len(names):
        report.add(
            "keypoints_length",
            f"'keypoints' has {len(kpts)} values, category {ann['category_id']} needs {3 * len(names)} "
            f"(3 x {len(names)} keypoints)",
            True,
            ann_id=aid,
        )
        return
    labelled = _labelled(ann)
    wh = sizes.get(ann["image_id"]) if _whole(ann["image_id"]) else None
    if bbox[2] <= 0 or bbox[3] <= 0:
        if labelled and not crowd:
            report.add("bbox", f"bbox {bbox} has a non-positive width or height", True, ann_id=aid)
        else:
            report.add("bbox", f"bbox {bbox} is empty: the person is skipped (as MMPose does)", False, ann_id=aid)
        return
    if _is_num(ann.get("area")) and ann["area"] <= 0:
        report.add("area", f"area {ann['area']} is not positive: the person is skipped (as MMPose does)", False, aid)
    if wh is not None:
        x, y, bw, bh = bbox
        if x >= wh[0] - 1 or y >= wh[1] - 1 or x + bw <= 0 or y + bh <= 0:
            report.add(
                "bbox_outside",
                f"bbox {bbox} lies outside the {wh[0]:g}x{wh[1]:g} image: the person is skipped (as MMPose does)",
                False,
                ann_id=aid,
            )
        elif details and (x < -1 or y < -1 or x + bw > wh[0] + 1 or y + bh > wh[1] + 1):
            report.add("bbox_outside", f"bbox {bbox} extends outside the {wh[0]:g}x{wh[1]:g} image", False, ann_id=aid)
    if not details or not isinstance(kpts, list):
        return
    vis = kpts[2::3]
    count = sum(1 for v in vis if v > 0)
    nk = ann.get("num_keypoints")
    if nk is None:
        report.add("num_keypoints", f"no num_keypoints ({count} keypoints are labelled)", False, ann_id=aid)
    elif nk != count:
        report.add("num_keypoints", f"num_keypoints is {nk} but {count} keypoints are labelled", False, ann_id=aid)
    if wh is not None:
        out = [
            names[j] if names else str(j)
            for j in range(len(vis))
            if vis[j] > 0 and not (-1 <= kpts[3 * j] <= wh[0] + 1 and -1 <= kpts[3 * j + 1] <= wh[1] + 1)
        ]
        if out:
            report.add(
                "keypoint_outside", f"labelled keypoints outside the image: {', '.join(out[:5])}", False, ann_id=aid
            )
    report.num_with_keypoints += count > 0
    report.num_labelled += count
    if names:
        for j, v in enumerate(vis):
            if v > 0:
                report.labelled_per_name[names[j]] = report.labelled_per_name.get(names[j], 0) + 1
            if v == 2:
                report.visible_per_name[names[j]] = report.visible_per_name.get(names[j], 0) + 1


def check_coco(
    data: Any,
    source: str | Path,
    img_dir: str | Path | None = None,
    allow_outside_img_dir: bool = False,
    details: bool = True,
) -> CheckReport:
    """Apply every COCO keypoint rule to a parsed file: the report of fatal problems and warnings.

    ``img_dir`` also checks that each image exists with the size the file gives. ``details`` adds the warnings and
    per-name counts that need a pass over every keypoint (--check); the fatal rules are the same either way.
    """
    source = Path(source)
    if type(data) is not dict:
        raise PoseCliError(
            "not a COCO annotation file: the top level must be an object with images, annotations, categories",
            source,
        )
    report = CheckReport(ann_file=source, img_dir=Path(img_dir) if img_dir is not None else None)
    if report.img_dir is not None and not report.img_dir.is_dir():
        raise PoseCliError("--img-dir is not a folder", report.img_dir)
    lists: dict[str, list[Any]] = {}
    for key in ("images", "annotations", "categories"):
        value = data.get(key)
        if type(value) is not list:
            report.add("structure", f"missing '{key}' list (not a COCO keypoint annotation file?)", True)
            value = []
        lists[key] = value
    cats = _check_categories(lists["categories"], report, source)
    if details:
        for names in cats.values():
            for n in names:
                report.labelled_per_name.setdefault(n, 0)
                report.visible_per_name.setdefault(n, 0)
    sizes = _check_images(lists["images"], report, report.img_dir, allow_outside_img_dir)
    report.num_images = len(lists["images"])
    report.num_annotations = len(lists["annotations"])
    seen: set[Any] = set()
    chunk: list[dict[str, Any]] = []
    chunk_values = 0
    no_area = float_ids = 0
    for i, ann in enumerate(lists["annotations"]):
        if type(ann) is not dict:
            report.add("annotation", f"annotations[{i}] is not an object", True)
            continue
        aid = ann.get("id")
        if "id" in ann and not _whole(aid):
            report.add("annotation", f"annotations[{i}]: id {aid!r} is not a whole number"[:160], True)
            continue
        missing = [k for k in _REQUIRED_ANN_KEYS if k not in ann]
        if missing:
            report.add("annotation", f"missing {', '.join(missing)}", True, ann_id=aid if "id" in ann else f"[{i}]")
            continue
        float_ids += type(aid) is float
        if aid in seen:
            report.add("duplicate_id", "appears twice in 'annotations'", True, ann_id=aid)
            continue
        seen.add(aid)
        if not _check_annotation(ann, report, sizes, cats):
            continue
        no_area += "area" not in ann
        chunk.append(ann)
        chunk_values += sum(len(ann[n]) for n in KEYPOINT_FIELDS if n in ann)
        if chunk_values >= KEYPOINT_CHUNK_VALUES:
            _finish_chunk(chunk, report, sizes, cats, details)
            chunk, chunk_values = [], 0
    _finish_chunk(chunk, report, sizes, cats, details)
    if float_ids:
        report.add("id", f"{float_ids} annotation ids are written as floats (5.0); used as whole numbers", False)
    if no_area:
        report.add(
            "area",
            f"{no_area} annotation(s) have no 'area': OKS uses {MISSING_AREA_FACTOR} x box area instead "
            "(MMPose's rule)",
            False,
        )
    if not lists["annotations"]:
        report.add("empty", "no annotations", False)
    return report


def _finish_chunk(
    chunk: list[dict[str, Any]], report: CheckReport, sizes: dict[Any, Any], cats: dict[Any, list[str]], details: bool
) -> None:
    before = len(report.problems)
    _check_keypoint_numbers(chunk, report)
    bad = {p.ann_id for p in report.problems[before:]}
    for ann in chunk:
        if ann["id"] not in bad:
            _check_annotation_geometry(ann, report, sizes, cats, details)


def check_coco_file(
    ann_file: str | Path, img_dir: str | Path | None = None, allow_outside_img_dir: bool = False
) -> CheckReport:
    """``convert-dataset --check``: every rule on a COCO keypoint file (and its images under ``img_dir`` when given).

    Raises only when the file cannot be read as JSON; content problems are in the report.
    """
    path = Path(ann_file)
    return check_coco(load_json_file(path), path, img_dir, allow_outside_img_dir, details=True)


def require_valid_coco(
    data: Any, source: str | Path, allow_outside_img_dir: bool = False, details: bool = False
) -> CheckReport:
    """check_coco, raising PoseCliError (naming ``source``) on the first fatal problem; the report otherwise."""
    report = check_coco(data, source, allow_outside_img_dir=allow_outside_img_dir, details=details)
    first = next((p for p in report.problems if p.fatal), None)
    if first is not None:
        more = report.num_fatal - 1
        suffix = f" (and {more} more fatal problem(s); `posecli convert-dataset FILE --check` lists them)" * (more > 0)
        raise PoseCliError(first.sentence() + suffix, source)
    return report


def category_names(categories: Sequence[dict[str, Any]]) -> dict[Any, str]:
    """Category id -> name, for logs of multi-category data sets."""
    return {c.get("id"): str(c.get("name", c.get("id"))) for c in categories if isinstance(c, dict)}
