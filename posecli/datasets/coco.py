"""Top-down dataset over COCO-format keypoint files: one sample per person box, MMPose 0.x pipeline.

Reading rules (those of MMPose 0.29's TopDownCocoDataset / TopDownCocoWholeBodyDataset):

- ground-truth boxes are clipped to the image (x1 = max(0, x), x2 = min(W - 1, x1 + w)) and kept as float64
  until center/scale are computed; empty boxes, boxes with ``area`` <= 0
  and crowd annotations are skipped; people with no labelled keypoint are skipped (training and
  evaluation with ground-truth boxes alike, as MMPose does);
- for evaluation, boxes may come instead from a detection results file (COCO detection results
  format, person category only), keeping those scoring at least ``det_bbox_thr``;
- COCO-WholeBody's split fields ``keypoints, foot_kpts, face_kpts, lefthand_kpts, righthand_kpts``
  are concatenated in that order (MMPose's 133-keypoint order); generally the fields are taken in
  that order until they give 3*K values for the dataset meta's K keypoints;
- images are read with OpenCV (BGR on disk) and converted to RGB before ImageNet normalisation.

Hardening beyond MMPose (which crashes later, or trains on NaN): the file is read through the size-limited
JSON reader, ``validate_coco_keypoints`` refuses what would crash pycocotools or poison targets (see there),
a labelled person with a zero or negative box side is refused rather than dropped, and every image a sample
uses must exist when the dataset is built.
"""

from __future__ import annotations

import contextlib
import io
import os
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from posecli.codec import HeatmapCodec
from posecli.datasets.convert import load_json_file
from posecli.datasets.meta import DatasetMeta
from posecli.errors import PoseCliError
from posecli.settings import DataSettings
from posecli.transforms import (
    affine_keypoints,
    bbox_xywh_to_center_scale,
    clip_bbox_xywh,
    flip_center,
    flip_image,
    flip_keypoints,
    get_affine_transform,
    normalize_image,
    random_half_body,
    random_scale_rotation,
    random_shift_center,
    warp_image,
)

KEYPOINT_FIELDS = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")  # MMPose order
BBOX_PADDING = 1.25  # MMPose's TopDownGetBboxCenterScale padding


@dataclass(frozen=True)
class PersonSample:
    """One person box: where it comes from and its ground-truth keypoints (zeros for detections)."""

    image_id: int
    image_file: str
    bbox: np.ndarray  # (4,) f64 x, y, w, h (clipped GT box or detection box), MMPose's Python floats
    keypoints: np.ndarray  # (K, 2) f32 x, y image pixels
    visible: np.ndarray  # (K,) f32 1 = labelled (COCO v > 0)
    bbox_score: float  # 1 for ground-truth boxes, the detector's score otherwise
    ann_id: int | None  # COCO annotation id; None for detections


class SampleTable(Sequence[PersonSample]):
    """All person samples, stored as a few numpy arrays (cheap to share with forked workers)."""

    def __init__(
        self,
        image_files: list[str],
        image_ids: np.ndarray,
        image_index: np.ndarray,
        bboxes: np.ndarray,
        keypoints: np.ndarray,
        visible: np.ndarray,
        scores: np.ndarray,
        ann_ids: np.ndarray,
    ) -> None:
        self.image_files = image_files  # one per image
        self.image_ids = image_ids  # (N,) int64
        self.image_index = image_index  # (N,) int32 index into image_files
        self.bboxes = bboxes  # (N, 4) f64: float32 would move centers (MMPose casts only center/scale)
        self.keypoints = keypoints  # (N, K, 2) f32
        self.visible = visible  # (N, K) f32
        self.scores = scores  # (N,) f32
        self.ann_ids = ann_ids  # (N,) int64, -1 for detections

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> PersonSample:  # type: ignore[override]
        ann_id = int(self.ann_ids[i])
        return PersonSample(
            image_id=int(self.image_ids[i]),
            image_file=self.image_files[self.image_index[i]],
            bbox=self.bboxes[i],
            keypoints=self.keypoints[i],
            visible=self.visible[i],
            bbox_score=float(self.scores[i]),
            ann_id=None if ann_id < 0 else ann_id,
        )

    def __iter__(self) -> Iterator[PersonSample]:
        return (self[i] for i in range(len(self)))


# ------------------------------------------------------------------------------------------- reading
def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3) with OpenCV (which decodes to BGR; we swap to RGB)."""
    path = str(path)
    if not os.path.isfile(path):
        raise PoseCliError("image file not found", path)
    image = cv2.imread(path, cv2.IMREAD_COLOR)  # (H, W, 3) BGR; grey images are expanded to 3 channels
    if image is None:
        raise PoseCliError("cannot read image (not an image OpenCV can decode, or corrupt)", path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_json(path: str | Path, what: str) -> Any:
    """A JSON file through the size-limited reader (POSECLI_MAX_ANN_BYTES); errors name the file."""
    if not os.path.exists(path):
        raise PoseCliError(f"{what} not found", path)
    return load_json_file(path, what)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_number(v: Any) -> bool:
    """An int or float that stays finite as float32 (not NaN, infinity, a boolean or a string)."""
    return (type(v) is int or type(v) is float) and -_FLOAT32_MAX <= v <= _FLOAT32_MAX  # False for NaN


def _check_bbox(bbox: Any) -> bool:
    return type(bbox) is list and len(bbox) == 4 and all(_is_number(v) for v in bbox)


def _as_finite_doubles(values: list[Any]) -> np.ndarray | None:
    """``values`` as a float64 array if each is a real number that stays finite as float32 (the samples' dtype).

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


def read_keypoints(ann: dict[str, Any], num_keypoints: int, source: str | Path) -> tuple[np.ndarray, bool]:
    """An annotation's keypoints as (K, 3) f32 x, y, v and whether split (WholeBody) fields were used.

    The fields ``keypoints, foot_kpts, face_kpts, lefthand_kpts, righthand_kpts`` are concatenated in
    that order until they hold 3*K values; any other count is an error naming the annotation.
    """
    need = 3 * num_keypoints
    values: list[Any] = []
    used: list[str] = []
    for name in KEYPOINT_FIELDS:
        if name not in ann or len(values) >= need:
            break
        field = ann[name]
        if not isinstance(field, list):
            raise PoseCliError(f"annotation id {ann.get('id')}: '{name}' is not a list", source)
        values.extend(field)
        used.append(name)
    if len(values) != need:
        got = " + ".join(f"{n} ({len(ann[n])})" for n in used) or "no 'keypoints' field"
        raise PoseCliError(
            f"annotation id {ann.get('id')}: {got} give {len(values)} values, expected 3 x {num_keypoints} = {need} "
            f"for the dataset's {num_keypoints} keypoints (check --keypoints / the dataset meta)",
            source,
        )
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            kp = np.asarray(values, dtype=np.float32).reshape(num_keypoints, 3)
    except (TypeError, ValueError):
        raise PoseCliError(f"annotation id {ann.get('id')}: keypoints hold non-numbers", source) from None
    if not np.isfinite(kp).all():  # NaN, or a value beyond float32 (validation's fast pass may let one through)
        raise PoseCliError(f"annotation id {ann.get('id')}: keypoints hold a value that is not a finite number", source)
    return kp, len(used) > 1


KEYPOINT_CHUNK_VALUES = 1 << 20  # values per validation pass: a fault is then looked for in this many at most
_ANN_KEYS = frozenset(("id", "image_id", "category_id", "bbox"))
_IMAGE_KEYS = frozenset(("id", "file_name", "width", "height"))


def _keypoint_problem(values: list[Any], coco_visibility: bool) -> str | None:
    """What is wrong with flat x, y, v values (None if nothing); with ``coco_visibility`` every v is 0, 1 or 2."""
    doubles = _as_finite_doubles(values)
    if doubles is None:
        bad = next((v for v in values if _as_finite_doubles([v]) is None), "?")
        return f"holds a value that is not a finite number ({bad!r})"
    if coco_visibility:
        vis = doubles[2::3]
        bad_at = np.flatnonzero((vis != 0) & (vis != 1) & (vis != 2))
        if len(bad_at):
            shown = list(dict.fromkeys(values[2 + 3 * int(j)] for j in bad_at))[:5]  # as written in the file
            return f"visibility values {shown} not in 0, 1, 2"
    return None


def _strict_visibility(name: str, field: list[Any]) -> bool:
    """COCO's flags 0/1/2 hold in ``keypoints`` (of x, y, v triples). COCO-WholeBody's face/hand/foot fields keep
    detector confidences (0.104, 1.37 ...) for pseudo-labelled points: any finite v there, v > 0 = labelled."""
    return name == "keypoints" and len(field) % 3 == 0  # other lengths: read_keypoints refuses them by count


def _annotation_problem(ann: dict[str, Any]) -> str | None:
    """The exact check of one annotation's numbers (bbox, area, keypoint fields); None if they are fine."""
    if _as_finite_doubles(ann["bbox"]) is None:
        return "bbox must be [x, y, w, h] finite numbers"
    if "area" in ann and _as_finite_doubles([ann["area"]]) is None:
        return f"area {ann['area']!r} is not a finite number"
    for name in KEYPOINT_FIELDS:
        field = ann.get(name)
        problem = _keypoint_problem(field, _strict_visibility(name, field)) if field else None
        if problem:
            return f"'{name}' {problem}"
    return None


def _numbers_look_fine(anns: list[dict[str, Any]]) -> bool:
    """A fast filter over ``anns``: True when no bbox, area or keypoint value can be bad (C-speed loops only).

    ``sum`` raises TypeError on a non-number and carries NaN/infinity into the total; a total beyond float32
    means some value may be too; the COCO flags of all ``keypoints`` fields are gathered in one set.
    """
    boxes: list[Any] = []
    areas: list[Any] = []
    flags: set[Any] = set()
    total = 0.0
    try:
        for ann in anns:
            boxes.extend(ann["bbox"])
            if "area" in ann:
                areas.append(ann["area"])
            for name in KEYPOINT_FIELDS:
                field = ann.get(name)
                if field:
                    total += sum(field)
                    if _strict_visibility(name, field):
                        flags.update(field[2::3])
    except (TypeError, OverflowError):  # None, a string or a list among the values; an int beyond a double
        return False
    return (
        -_FLOAT32_MAX <= total <= _FLOAT32_MAX  # False for NaN
        and flags <= {0, 1, 2}
        and _as_finite_doubles(boxes) is not None
        and _as_finite_doubles(areas) is not None
    )


def _check_annotation_numbers(anns: list[dict[str, Any]], source: str | Path) -> None:
    """Refuse the first annotation of ``anns`` with a bad bbox, area or keypoint value, or a labelled non-crowd
    person whose box has a width or height <= 0. One fast pass; the exact check runs only where it may fail."""
    if not _numbers_look_fine(anns):
        for ann in anns:
            problem = _annotation_problem(ann)
            if problem:
                raise PoseCliError(f"annotation id {ann['id']}: {problem}", source)
    for ann in anns:
        bbox = ann["bbox"]
        flat = (bbox[2] <= 0 or bbox[3] <= 0) and not ann["iscrowd"]
        if flat and any(v > 0 for v in ann.get("keypoints", [])[2::3]):  # labelled: body flags, as for samples
            raise PoseCliError(f"annotation id {ann['id']}: bbox {bbox} has a non-positive width or height", source)


def _check_categories(categories: list[Any], source: str | Path) -> set[int]:
    ids: set[int] = set()
    for i, cat in enumerate(categories):
        if type(cat) is not dict or type(cat.get("id")) is not int:
            raise PoseCliError(f"categories[{i}] is not an object with a whole-number 'id'", source)
        if cat["id"] in ids:
            raise PoseCliError(f"category id {cat['id']} appears twice in 'categories'", source)
        ids.add(cat["id"])
    return ids


def _check_images(images: list[Any], source: str | Path) -> set[int]:
    ids: set[int] = set()
    sizes: list[Any] = []
    for i, img in enumerate(images):
        if type(img) is not dict:
            raise PoseCliError(f"images[{i}] is not an object", source)
        if not img.keys() >= _IMAGE_KEYS:
            missing = [k for k in ("id", "file_name", "width", "height") if k not in img]
            raise PoseCliError(f"image id {img.get('id')}: missing {', '.join(missing)}", source)
        iid = img["id"]
        if type(iid) is not int:
            raise PoseCliError(f"images[{i}]: id {iid!r} is not a whole number", source)
        if iid in ids:
            raise PoseCliError(f"image id {iid} appears twice in 'images'", source)
        ids.add(iid)
        if type(img["file_name"]) is not str:
            raise PoseCliError(f"image id {iid}: file_name must be a string", source)
        sizes += (img["width"], img["height"])
    values = _as_finite_doubles(sizes)
    if values is None or (values <= 0).any():
        for img in images:
            wh = _as_finite_doubles([img["width"], img["height"]])
            if wh is None or (wh <= 0).any():
                raise PoseCliError(f"image id {img['id']}: width/height must be positive numbers", source)
    return ids


def validate_coco_keypoints(data: Any, source: str | Path) -> None:
    """Check what the dataset and pycocotools rely on; fill ``iscrowd``/``area``/``num_keypoints`` when absent.

    Refused (one line naming the annotation or image): missing ``images``/``annotations``/``categories``
    lists; ids that are not whole numbers or appear twice; ``image_id``/``category_id`` not listed; a bbox
    that is not 4 finite numbers; a non-finite ``area``; ``iscrowd`` other than 0/1; keypoints that are not
    finite numbers; ``keypoints`` visibility outside 0/1/2; a labelled non-crowd person whose box has a
    width or height <= 0 (an unlabelled one is skipped by the dataset, as in MMPose). Cost: a few dict and
    type checks per annotation in Python; the numbers in C-speed passes (``sum``, ``set``, ``array``) over
    chunks of about KEYPOINT_CHUNK_VALUES values, each value checked on its own only in a chunk that fails.
    """
    if type(data) is not dict:
        raise PoseCliError("a COCO annotation file must be a JSON object", source)
    for key in ("images", "annotations", "categories"):
        if type(data.get(key)) is not list:
            raise PoseCliError(f"missing '{key}' list (not a COCO keypoint annotation file?)", source)
    cat_ids = _check_categories(data["categories"], source)
    img_ids = _check_images(data["images"], source)
    ann_ids: set[int] = set()
    chunk: list[dict[str, Any]] = []
    chunk_values = 0
    for i, ann in enumerate(data["annotations"]):
        if type(ann) is not dict:
            raise PoseCliError(f"annotations[{i}] is not an object", source)
        if not ann.keys() >= _ANN_KEYS:
            missing = [k for k in ("id", "image_id", "category_id", "bbox") if k not in ann]
            raise PoseCliError(f"annotation id {ann.get('id')}: missing {', '.join(missing)}", source)
        aid = ann["id"]
        if type(aid) is not int:
            raise PoseCliError(f"annotations[{i}]: id {aid!r} is not a whole number", source)
        if aid in ann_ids:
            raise PoseCliError(f"annotation id {aid} appears twice in 'annotations'", source)
        ann_ids.add(aid)
        if type(ann["image_id"]) is not int or ann["image_id"] not in img_ids:
            raise PoseCliError(f"annotation id {aid}: image_id {ann['image_id']!r} is not in 'images'", source)
        if type(ann["category_id"]) is not int or ann["category_id"] not in cat_ids:
            raise PoseCliError(
                f"annotation id {aid}: category_id {ann['category_id']!r} is not in 'categories'", source
            )
        bbox = ann["bbox"]
        if type(bbox) is not list or len(bbox) != 4:
            raise PoseCliError(f"annotation id {aid}: bbox must be [x, y, w, h] finite numbers", source)
        crowd = ann.setdefault("iscrowd", 0)
        if crowd not in (0, 1):
            raise PoseCliError(f"annotation id {aid}: iscrowd {crowd!r} is not 0 or 1", source)
        if not crowd and "keypoints" not in ann:
            raise PoseCliError(f"annotation id {aid}: missing keypoints", source)
        for name in KEYPOINT_FIELDS:
            if name in ann:
                if type(ann[name]) is not list:
                    raise PoseCliError(f"annotation id {aid}: '{name}' is not a list", source)
                chunk_values += len(ann[name])
        chunk.append(ann)
        if chunk_values >= KEYPOINT_CHUNK_VALUES:
            _check_annotation_numbers(chunk, source)
            chunk, chunk_values = [], 0
    _check_annotation_numbers(chunk, source)
    for ann in data["annotations"]:  # numbers are valid now
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        if "num_keypoints" not in ann and "keypoints" in ann:
            ann["num_keypoints"] = int(sum(1 for v in ann["keypoints"][2::3] if v > 0))


def load_coco(ann_file: str | Path) -> COCO:
    """Read and validate a COCO keypoint file into a pycocotools COCO object (without its chatter)."""
    data = _read_json(ann_file, "annotation file")
    validate_coco_keypoints(data, ann_file)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


def _image_path(img_dir: Path, img: dict[str, Any], allow_outside: bool, source: str | Path) -> str:
    name = img["file_name"]
    escapes = os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == ".."
    if escapes and not allow_outside:
        raise PoseCliError(
            f"image id {img['id']}: file_name '{name}' points outside the image folder "
            "(set data.allow_outside_img_dir: true to accept it)",
            source,
        )
    return str(img_dir / name)


# ------------------------------------------------------------------------------------------- dataset
class TopDownCocoDataset(Dataset):
    """One item per person box: the affine-warped, normalised crop and its heatmap targets.

    Item: ``image`` (3, H, W) f32 (RGB, ImageNet-normalised), ``target`` (K, h, w) f32, ``target_weight``
    (K, 1) f32, ``center`` (2,), ``scale`` (2,) (200-px units, after augmentation), ``rotation`` (deg),
    ``keypoints`` (K, 3) x, y in input pixels after the transforms and visibility 0/1, ``bbox`` (4,) x, y, w, h
    (the clipped ground-truth box or the detection), ``image_id``, ``bbox_score``, ``area``
    (= prod(scale * 200), what MMPose uses for OKS NMS), ``index``. ``with_target=False`` leaves out
    ``target``/``target_weight`` (evaluation does not need them; encoding 133 heatmaps is the costliest step).

    Randomness: with ``rng_seed`` the augmentation of item i in epoch e is drawn from
    ``numpy.random.default_rng((rng_seed, e, i))`` (call ``set_epoch``; independent of worker count,
    but persistent workers don't see ``set_epoch``). Without it, each process keeps one Generator
    seeded from torch's seed for that process (a DataLoader worker's seed is derived from
    ``torch.manual_seed``), which is reproducible for a fixed worker count.
    """

    def __init__(
        self,
        ann_file: str | Path,
        img_dir: str | Path,
        meta: DatasetMeta,
        data: DataSettings,
        train: bool,
        bbox_file: str | Path | None = None,
        det_bbox_thr: float = 0.0,
        rng_seed: int | None = None,
        with_target: bool = True,
    ) -> None:
        self.ann_file = str(ann_file)
        self.img_dir = Path(img_dir)
        self.meta = meta
        self.data = data
        self.train = train
        self.bbox_file = None if bbox_file is None else str(bbox_file)
        self.det_bbox_thr = float(det_bbox_thr)
        self.rng_seed = rng_seed
        self.with_target = with_target
        self.epoch = 0
        self.image_wh = (int(data.image_size[0]), int(data.image_size[1]))
        self.aspect_ratio = self.image_wh[0] / self.image_wh[1]
        self.codec = HeatmapCodec(
            input_wh=self.image_wh,
            heatmap_wh=tuple(data.heatmap_size),
            sigma=data.sigma,
            unbiased_encoding=data.unbiased_encoding,
            joint_weights=meta.joint_weights if data.use_different_joint_weights else None,
        )
        if train and bbox_file is not None:
            raise PoseCliError("detection boxes (--bbox-file) are for evaluation; training uses the ground truth")
        if not self.img_dir.is_dir():
            raise PoseCliError("image folder not found", self.img_dir)
        self.coco = load_coco(self.ann_file)
        self.samples = self._load_detections() if bbox_file is not None else self._load_ground_truth()
        self.check_image_files()  # a stat per image: a missing image stops here, not hours into training
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple[int, int] | None = None

    # ---------------------------------------------------------------------------------- loading
    def _image_files(self) -> tuple[list[str], dict[Any, int]]:
        files: list[str] = []
        position: dict[Any, int] = {}
        allow = self.data.allow_outside_img_dir
        for img in self.coco.dataset["images"]:
            position[img["id"]] = len(files)
            files.append(_image_path(self.img_dir, img, allow, self.ann_file))
        return files, position

    def _load_ground_truth(self) -> SampleTable:
        """One sample per usable, labelled, non-crowd person, in image order then annotation order."""
        files, position = self._image_files()
        k = self.meta.num_keypoints
        rows: list[tuple[int, int, Sequence[float], np.ndarray, int]] = []
        for img in self.coco.dataset["images"]:
            for ann in self.coco.imgToAnns.get(img["id"], []):
                if ann.get("iscrowd"):
                    continue
                keypoints, split = read_keypoints(ann, k, self.ann_file)  # validates every person
                bbox = clip_bbox_xywh(ann["bbox"], (img["width"], img["height"]))
                if bbox is None or ann["area"] <= 0:
                    continue
                # MMPose: no labelled keypoint -> skipped (WholeBody files: judged by the body keypoints).
                body = ann["keypoints"]
                if not body or max(body) == 0:
                    continue
                if not split and ann.get("num_keypoints", 1) == 0:
                    continue
                rows.append((img["id"], position[img["id"]], bbox, keypoints, int(ann["id"])))
        return self._table(files, rows, scores=None)

    def _load_detections(self) -> SampleTable:
        """One sample per person detection scoring at least det_bbox_thr, in file order."""
        assert self.bbox_file is not None
        dets = _read_json(self.bbox_file, "detection results file")
        if not isinstance(dets, list):
            raise PoseCliError(
                "a detection results file must be a JSON list of {image_id, bbox, score}", self.bbox_file
            )
        files, position = self._image_files()
        cats = self.coco.dataset.get("categories") or [{"id": 1}]
        person = cats[0].get("id", 1)
        k = self.meta.num_keypoints
        rows: list[tuple[int, int, Sequence[float], np.ndarray, int]] = []
        scores: list[float] = []
        for i, det in enumerate(dets):
            if not isinstance(det, dict) or not {"image_id", "bbox", "score"} <= det.keys():
                raise PoseCliError(f"detection #{i}: needs image_id, bbox and score", self.bbox_file)
            if not _check_bbox(det["bbox"]) or not _is_number(det["score"]):
                raise PoseCliError(
                    f"detection #{i}: bbox must be [x, y, w, h] finite numbers and score a finite number",
                    self.bbox_file,
                )
            if det.get("category_id", person) != person:
                continue
            if type(det["image_id"]) is not int or det["image_id"] not in position:
                raise PoseCliError(
                    f"detection #{i}: image_id {det['image_id']!r} is not in {self.ann_file}", self.bbox_file
                )
            if det["score"] < self.det_bbox_thr:
                continue
            bbox = np.asarray(det["bbox"][:4], dtype=np.float64)
            rows.append((det["image_id"], position[det["image_id"]], bbox, np.zeros((k, 3), np.float32), -1))
            scores.append(float(det["score"]))
        if not dets:
            raise PoseCliError("detection results file holds no detections", self.bbox_file)
        return self._table(files, rows, scores=scores)

    @staticmethod
    def _table(
        files: list[str], rows: list[tuple[int, int, Sequence[float], np.ndarray, int]], scores: list[float] | None
    ) -> SampleTable:
        n = len(rows)
        k = rows[0][3].shape[0] if rows else 0
        keypoints = np.zeros((n, k, 3), dtype=np.float32)
        for i, row in enumerate(rows):
            keypoints[i] = row[3]
        return SampleTable(
            image_files=files,
            image_ids=np.array([r[0] for r in rows], dtype=np.int64),
            image_index=np.array([r[1] for r in rows], dtype=np.int32),
            bboxes=np.array([r[2] for r in rows], dtype=np.float64).reshape(n, 4),
            keypoints=np.ascontiguousarray(keypoints[:, :, :2]),
            visible=(keypoints[:, :, 2] > 0).astype(np.float32),
            scores=np.ones(n, np.float32) if scores is None else np.array(scores, dtype=np.float32),
            ann_ids=np.array([r[4] for r in rows], dtype=np.int64),
        )

    # ---------------------------------------------------------------------------------- sampling
    def __len__(self) -> int:
        return len(self.samples)

    def check_image_files(self) -> None:
        """Raise PoseCliError naming the first image of a sample that is missing (a stat per image, no decoding).

        The constructor calls it, so that a missing image stops a run before the first step rather than hours
        in (measured ~5 µs per image on a local disk: ~0.3 s for COCO train's ~56k images with people).
        """
        for i in sorted(set(self.samples.image_index.tolist())):
            path = self.samples.image_files[i]
            if not os.path.isfile(path):
                raise PoseCliError(f"image file not found (listed in {self.ann_file})", path)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch for seeded augmentation (only used with rng_seed)."""
        self.epoch = int(epoch)

    def _rng_for(self, index: int) -> np.random.Generator:
        if self.rng_seed is not None:
            return np.random.default_rng((self.rng_seed, self.epoch, index))
        info = torch.utils.data.get_worker_info()
        owner = (os.getpid(), -1 if info is None else info.id)
        if self._rng is None or self._rng_owner != owner:
            # (OpenCV's thread count is left alone: cv2.setNumThreads in a forked worker can deadlock.)
            self._rng = np.random.default_rng(torch.initial_seed() if info is None else info.seed)
            self._rng_owner = owner
        return self._rng

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        image = read_image_rgb(s.image_file)  # (H, W, 3) uint8 RGB
        center, scale = bbox_xywh_to_center_scale(s.bbox, self.aspect_ratio, BBOX_PADDING)
        keypoints, visible = s.keypoints, s.visible  # (K, 2), (K,)
        rot = 0.0
        if self.train:  # MMPose 0.x order: shift center, flip, half body, scale/rotation
            d = self.data
            rng = self._rng_for(index)
            center = random_shift_center(center, scale, d.shift_factor, d.shift_prob, rng)
            if rng.random() <= d.flip_prob and d.flip_prob > 0:
                width = image.shape[1]
                image = flip_image(image)
                keypoints, visible = flip_keypoints(keypoints, visible, width, self.meta.flip_pairs)
                center = flip_center(center, width)
            half = random_half_body(
                keypoints,
                visible,
                self.meta.upper_body_ids,
                self.aspect_ratio,
                d.num_joints_half_body,
                d.prob_half_body,
                rng,
            )
            if half is not None:
                center, scale = half
            scale, rot = random_scale_rotation(scale, d.scale_factor, d.rot_factor, d.rot_prob, rng)
        matrix = get_affine_transform(center, scale, rot, self.image_wh)
        crop = warp_image(image, matrix, self.image_wh)  # (H, W, 3) uint8 RGB
        keypoints = affine_keypoints(keypoints, visible, matrix)  # (K, 2) input pixels
        item: dict[str, Any] = {
            "image": torch.from_numpy(normalize_image(crop)),
            "center": torch.from_numpy(center.astype(np.float32)),
            "scale": torch.from_numpy(scale.astype(np.float32)),
            "rotation": float(rot),
            "keypoints": torch.from_numpy(np.concatenate([keypoints, visible[:, None]], axis=1).astype(np.float32)),
            "bbox": torch.from_numpy(np.array(s.bbox, dtype=np.float32)),
            "image_id": s.image_id,
            "bbox_score": s.bbox_score,
            "area": float(np.prod(scale.astype(np.float32) * np.float32(200.0))),  # f32 as MMPose
            "index": index,
        }
        if self.with_target:
            heatmaps, weights = self.codec.encode(keypoints, visible)  # (K, h, w), (K,) x joint_weights if set
            item["target"] = torch.from_numpy(np.asarray(heatmaps, dtype=np.float32))
            item["target_weight"] = torch.from_numpy(np.asarray(weights, dtype=np.float32).reshape(-1, 1))
        return item
