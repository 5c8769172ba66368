"""TopDownCocoDataset on tiny COCO / COCO-WholeBody files written here: which people become samples,
detection boxes, split fields, what a file must hold to load (and the one-line refusals), colour order,
targets, flip consistency, seeding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

import posecli.datasets.coco_format as coco_format
from posecli.datasets.coco import read_image_rgb
from posecli.datasets.meta import load_builtin
from posecli.engine.data import build_dataset
from posecli.errors import PoseCliError
from posecli.settings import DataSettings
from posecli.transforms import affine_points, bbox_xywh_to_center_scale, clip_bbox_xywh, get_affine_transform

torch.set_num_threads(1)

NO_AUG = dict(shift_prob=0.0, flip_prob=0.0, prob_half_body=0.0, scale_factor=0.0, rot_prob=0.0)


def data_settings(**kw: Any) -> DataSettings:
    """A small input (48 x 64) with 12 x 16 heatmaps."""
    return DataSettings(image_size=(48, 64), heatmap_size=(12, 16), sigma=2.0, **kw)


def _person(ann_id: int, image_id: int, bbox: list[float], kp: np.ndarray, **kw: Any) -> dict[str, Any]:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "num_keypoints": int((kp[:, 2] > 0).sum()),
        "keypoints": kp.reshape(-1).tolist(),
        **kw,
    }


def _kp17(x0: float, y0: float, visible_every: int = 1) -> np.ndarray:
    i = np.arange(17)
    kp = np.stack([x0 + 2.0 * i, y0 + 3.0 * i, np.full(17, 2.0)], axis=1)
    kp[i % visible_every != 0] = 0  # unlabelled keypoints are (0, 0, 0) in COCO files
    return kp


def write_coco(root: Path, images: dict[str, tuple[int, int]] | None = None) -> tuple[Path, Path]:
    """Two images: a labelled person, a crowd, an unlabelled person, a half-labelled person, two empty boxes."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images = images or {"a.png": (100, 80), "b.png": (120, 90)}
    rng = np.random.default_rng(0)
    for name, (w, h) in images.items():
        cv2.imwrite(str(img_dir / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    anns = [
        _person(1, 1, [20, 10, 40, 60], _kp17(25, 15)),
        _person(2, 1, [0, 0, 100, 80], _kp17(5, 5), iscrowd=1),
        _person(3, 1, [60, 20, 30, 40], np.zeros((17, 3))),
        _person(4, 2, [30, 20, 50, 60], _kp17(35, 22, visible_every=2)),
        _person(5, 2, [119.5, 10, 5, 30], _kp17(10, 12)),  # labelled, but empty once clipped: x2 = W - 1 < x1
        _person(6, 2, [10, 10, 0, 30], np.zeros((17, 3))),  # unlabelled and zero width: skipped like MMPose
    ]
    data = {
        "images": [
            {"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, (w, h)) in enumerate(images.items())
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": load_builtin("coco").keypoint_names}],
    }
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    return ann_file, img_dir


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path]:
    return write_coco(tmp_path)


# ------------------------------------------------------------------------------------------- samples
def test_train_skips_crowd_unlabelled_and_empty_boxes(coco: tuple[Path, Path]) -> None:
    ann, img_dir = coco
    ds = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)
    assert len(ds) == 2
    assert [s.ann_id for s in ds.samples] == [1, 4]
    assert [s.image_id for s in ds.samples] == [1, 2]
    s = ds.samples[1]
    assert s.bbox.tolist() == [30, 20, 50, 60]  # MMPose 0.29: x2 = min(W - 1, x1 + w), no '- 1' inside the image
    np.testing.assert_array_equal(s.visible, (np.arange(17) % 2 == 0).astype(np.float32))
    np.testing.assert_allclose(s.keypoints[2], [39, 28])
    assert s.image_file == str(img_dir / "b.png") and s.bbox_score == 1.0


def test_val_with_gt_boxes_keeps_the_same_people_as_mmpose(coco: tuple[Path, Path]) -> None:
    """MMPose 0.x also drops unlabelled people when evaluating on ground-truth boxes (COCOeval ignores them)."""
    ann, img_dir = coco
    ds = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=False)
    assert [s.ann_id for s in ds.samples] == [1, 4]
    assert ds.coco.getAnnIds() == [1, 2, 3, 4, 5, 6]  # the full ground truth for the evaluator


def test_detection_boxes_filtered_by_score(coco: tuple[Path, Path], tmp_path: Path) -> None:
    ann, img_dir = coco
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [20, 10, 40, 60], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [60, 20, 30, 40], "score": 0.3},
        {"image_id": 2, "category_id": 1, "bbox": [31.5, 20, 50, 60], "score": 0.6},
        {"image_id": 2, "category_id": 2, "bbox": [0, 0, 50, 60], "score": 0.99},  # not a person
    ]
    bbox_file = tmp_path / "dets.json"
    bbox_file.write_text(json.dumps(dets))
    meta, data = load_builtin("coco"), data_settings()
    ds = build_dataset(ann, img_dir, meta, data, train=False, bbox_file=bbox_file, det_bbox_thr=0.5, with_target=True)
    assert [(s.image_id, s.bbox_score) for s in ds.samples] == [(1, pytest.approx(0.9)), (2, pytest.approx(0.6))]
    np.testing.assert_allclose(ds.samples[1].bbox, [31.5, 20, 50, 60])  # detections are not clipped
    item = ds[1]
    center, scale = bbox_xywh_to_center_scale([31.5, 20, 50, 60], 48 / 64)
    np.testing.assert_allclose(item["center"].numpy(), center)
    np.testing.assert_allclose(item["scale"].numpy(), scale)
    assert item["bbox_score"] == pytest.approx(0.6)
    assert item["area"] == pytest.approx(float(np.prod(scale * 200)), rel=1e-6)
    assert float(item["target_weight"].sum()) == 0.0  # no ground truth for a detection
    all_dets = build_dataset(ann, img_dir, meta, data, train=False, bbox_file=bbox_file, with_target=False)
    assert len(all_dets) == 3
    assert "target" not in all_dets[2] and torch.equal(all_dets[2]["image"], item["image"])

    bbox_file.write_text(json.dumps([{"image_id": 77, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}]))
    with pytest.raises(PoseCliError, match="image_id 77") as exc:
        build_dataset(ann, img_dir, meta, data, train=False, bbox_file=bbox_file)
    assert exc.value.path == str(bbox_file)


# ---------------------------------------------------------------------------------------- wholebody
def test_wholebody_split_fields_read_as_133_in_mmpose_order(tmp_path: Path) -> None:
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    cv2.imwrite(str(img_dir / "w.png"), np.zeros((300, 400, 3), np.uint8))
    idx = np.arange(133, dtype=np.float64)
    kp = np.stack([idx + 1, idx * 0.5 + 2, np.where(idx % 3 == 0, 2.0, 1.0)], axis=1)
    kp[130] = 0  # one unlabelled right-hand point
    parts = {"keypoints": (0, 17), "foot_kpts": (17, 23), "face_kpts": (23, 91)}
    parts |= {"lefthand_kpts": (91, 112), "righthand_kpts": (112, 133)}
    ann: dict[str, Any] = {"id": 9, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 200, 150]}
    ann |= {name: kp[a:b].reshape(-1).tolist() for name, (a, b) in parts.items()}
    ann |= {"area": 30000.0, "num_keypoints": 17, "face_valid": True, "foot_valid": True}
    data = {
        "images": [{"id": 1, "file_name": "w.png", "width": 400, "height": 300}],
        "annotations": [ann],
        "categories": [{"id": 1, "name": "person", "keypoints": load_builtin("coco").keypoint_names}],
    }
    ann_file = tmp_path / "wb.json"
    ann_file.write_text(json.dumps(data))

    ds = build_dataset(ann_file, img_dir, load_builtin("coco_wholebody"), data_settings(), train=True, with_target=True)
    s = ds.samples[0]
    np.testing.assert_allclose(s.keypoints, kp[:, :2])
    np.testing.assert_array_equal(s.visible, (kp[:, 2] > 0).astype(np.float32))
    assert s.visible[130] == 0 and s.visible.sum() == 132
    assert ds[0]["target"].shape == (133, 16, 12)

    body = build_dataset(ann_file, img_dir, load_builtin("body_foot"), data_settings(), train=True)
    np.testing.assert_allclose(body.samples[0].keypoints, kp[:23, :2])  # keypoints + foot_kpts

    ann["face_kpts"] = ann["face_kpts"][:-3]  # 67 face points
    ann_file.write_text(json.dumps(data))
    with pytest.raises(PoseCliError, match=r"annotation id 9: .*face_kpts \(201\).* expected 3 x 133 = 399") as exc:
        build_dataset(ann_file, img_dir, load_builtin("coco_wholebody"), data_settings(), train=True)
    assert exc.value.path == str(ann_file)


def _write_images(img_dir: Path, images: list[dict[str, Any]]) -> None:
    img_dir.mkdir(parents=True, exist_ok=True)
    for img in images:
        cv2.imwrite(str(img_dir / img["file_name"]), np.zeros((img["height"], img["width"], 3), np.uint8))


def test_real_format_wholebody_file_loads_with_float_confidences(tmp_path: Path, reference_dir: Path) -> None:
    """The reference COCO-WholeBody sample loads as 133 keypoints. Real COCO-WholeBody files also hold detector
    confidences (0.104, 1.37 ...) as the third value of face/hand points: accepted there, v > 0 = labelled."""
    data = json.loads((reference_dir / "wholebody" / "annotations.json").read_text())
    img_dir = tmp_path / "images"
    _write_images(img_dir, data["images"])
    meta = load_builtin("coco_wholebody")
    fields = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
    people = [a for a in data["annotations"] if max(a["keypoints"]) > 0]  # MMPose: body keypoints decide
    assert len(people) == 16 < len(data["annotations"])

    def check(ann_file: Path) -> None:
        ds = build_dataset(ann_file, img_dir, meta, data_settings(), train=False, with_target=False)
        assert [s.ann_id for s in ds.samples] == [a["id"] for a in people]
        for s, a in zip(ds.samples, people, strict=True):
            kp = np.concatenate([np.asarray(a[f], np.float32).reshape(-1, 3) for f in fields])  # (133, 3)
            np.testing.assert_array_equal(s.keypoints, kp[:, :2])
            np.testing.assert_array_equal(s.visible, (kp[:, 2] > 0).astype(np.float32))
        assert ds[0]["image"].shape == (3, 64, 48)

    check(reference_dir / "wholebody" / "annotations.json")
    person = people[0]
    person["righthand_kpts"][2::3] = [0.104, 0.0, 0.53] + [0.2] * 18
    person["face_kpts"][5] = 1.37
    edited = tmp_path / "confidences.json"
    edited.write_text(json.dumps(data))
    check(edited)
    person["face_kpts"][9] = None
    edited.write_text(json.dumps(data))
    with pytest.raises(
        PoseCliError, match=rf"id {person['id']}: 'face_kpts' holds a value that is not a finite number"
    ):
        build_dataset(edited, img_dir, meta, data_settings(), train=False)
    person["face_kpts"][9] = 1.0
    person["keypoints"][2] = 0.5  # but the COCO body field keeps COCO's 0/1/2 flags
    edited.write_text(json.dumps(data))
    with pytest.raises(PoseCliError, match=rf"annotation id {person['id']}: 'keypoints' visibility values \[0\.5\]"):
        build_dataset(edited, img_dir, meta, data_settings(), train=False)


# ------------------------------------------------------------------------------------------- errors
def test_wrong_keypoint_count_names_the_annotation(coco: tuple[Path, Path]) -> None:
    ann, img_dir = coco
    data = json.loads(ann.read_text())
    data["annotations"][3]["keypoints"] = data["annotations"][3]["keypoints"] + [1, 2, 2]
    ann.write_text(json.dumps(data))
    with pytest.raises(
        PoseCliError, match=r"annotation id 4: 'keypoints' has 54 values, category 1 needs 51 \(3 x 17 keypoints\)"
    ) as e:
        build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)
    assert e.value.path == str(ann)


def _huge_values_that_cancel(doc: dict[str, Any]) -> dict[str, Any]:
    """Two values beyond float32 whose sum is 0: past validation's fast pass, refused when read as float32."""
    kp = doc["annotations"][3]["keypoints"]
    kp[0], kp[3] = 1e39, -1e39
    return doc


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: {"annotations": []}, "missing 'images' list"),
        (lambda d: d["images"][0].pop("file_name") and d, "image id 1: missing file_name"),
        (lambda d: d["annotations"][0].pop("bbox") and d, "annotation id 1: missing bbox"),
        (lambda d: d["annotations"][0].update(image_id=42) or d, "annotation id 1: image_id 42 is not in 'images'"),
        # what pycocotools or the samples would crash on, or turn into NaN targets
        (lambda d: d.pop("categories") and d, "missing 'categories' list"),
        (lambda d: d["categories"].__setitem__(0, None) or d, r"categories\[0\] is not an object with a whole-number"),
        (lambda d: d["categories"][0].pop("id") and d, r"categories\[0\] is not an object with a whole-number 'id'"),
        (lambda d: d["categories"].append({"id": 1}) or d, "category id 1 appears twice in 'categories'"),
        (lambda d: d["images"][0].update(id=[1]) or d, r"images\[0\]: id \[1\] is not a whole number"),
        (lambda d: d["images"][1].update(width=0) or d, "image id 2: width/height must be positive numbers"),
        (lambda d: d["images"][1].update(height=float("nan")) or d, "image id 2: width/height must be positive"),
        (lambda d: d["images"][0].update(file_name=None) or d, "image id 1: file_name must be a string"),
        (lambda d: d["annotations"][1].update(id=None) or d, r"annotations\[1\]: id None is not a whole number"),
        (lambda d: d["annotations"][1].update(id=1) or d, "annotation id 1: appears twice in 'annotations'"),
        (
            lambda d: d["annotations"][0].update(image_id=[1]) or d,
            r"annotation id 1: image_id \[1\] is not in 'images'",
        ),
        (lambda d: d["annotations"][0].pop("category_id") and d, "annotation id 1: missing category_id"),
        (lambda d: d["annotations"][0].update(category_id=[1]) or d, r"category_id \[1\] is not in 'categories'"),
        (lambda d: d["annotations"][0].update(category_id=7) or d, "annotation id 1: category_id 7 is not in"),
        (
            lambda d: d["annotations"][0]["bbox"].__setitem__(2, float("nan")) or d,
            r"bbox must be \[x, y, w, h\] finite",
        ),
        (lambda d: d["annotations"][0]["bbox"].pop() and d, r"annotation id 1: bbox must be \[x, y, w, h\]"),
        (lambda d: d["annotations"][0].update(area=None) or d, "annotation id 1: area None is not a finite number"),
        (lambda d: d["annotations"][0].update(area=float("inf")) or d, "annotation id 1: area inf is not a finite"),
        (lambda d: d["annotations"][0].update(iscrowd="no") or d, "annotation id 1: iscrowd 'no' is not 0 or 1"),
        (lambda d: d["annotations"][0].update(keypoints="x") or d, "annotation id 1: 'keypoints' is not a list"),
        (
            lambda d: d["annotations"][0].update(keypoints=[None] * 51) or d,
            "id 1: 'keypoints' holds a value that is not",
        ),
        (
            lambda d: d["annotations"][3]["keypoints"].__setitem__(3, float("nan")) or d,
            r"id 4: .* finite number \(nan\)",
        ),
        (lambda d: d["annotations"][3]["keypoints"].__setitem__(0, 1e39) or d, r"id 4: .* finite number \(1e\+39\)"),
        (
            lambda d: d["annotations"][3]["keypoints"].__setitem__(0, "5") or d,
            "id 4: 'keypoints' holds a value that is",
        ),
        (_huge_values_that_cancel, "annotation id 4: keypoints hold a value that is not a finite number"),
        (lambda d: d["annotations"][1]["keypoints"].__setitem__(0, None) or d, "id 2: 'keypoints' holds"),  # a crowd
        (
            lambda d: d["annotations"][3]["keypoints"].__setitem__(2, 3) or d,
            r"id 4: 'keypoints' visibility values \[3\]",
        ),
        (lambda d: d["annotations"][3]["keypoints"].__setitem__(5, 0.5) or d, r"visibility values \[0\.5\] not in 0"),
        (
            lambda d: d["annotations"][3]["keypoints"].__setitem__(2, -1) or d,
            r"visibility values \[-1\] not in 0, 1, 2",
        ),
        (
            lambda d: d["annotations"][3].update(bbox=[30, 20, 0, 60]) or d,
            r"id 4: bbox \[30, 20, 0, 60\] has a non-pos",
        ),
        (lambda d: d["annotations"][0].update(bbox=[20, 10, 40, -6]) or d, r"id 1: bbox \[20, 10, 40, -6\] has a non-"),
    ],
)
def test_malformed_annotation_file_names_the_file(coco: tuple[Path, Path], edit: Any, message: str) -> None:
    ann, img_dir = coco
    new = edit(json.loads(ann.read_text()))
    ann.write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(PoseCliError, match=message) as exc:
        build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)
    assert exc.value.path == str(ann)


@pytest.mark.parametrize("train", [True, False])
def test_flat_boxes_refused_only_for_labelled_non_crowd_people(coco: tuple[Path, Path], train: bool) -> None:
    """An unlabelled or crowd box of zero size is dropped as MMPose drops it; a labelled person's is an error."""
    ann, img_dir = coco
    data = json.loads(ann.read_text())
    data["annotations"][1]["bbox"] = [0, 0, 0, 80]  # the crowd (labelled keypoints)
    data["annotations"][2]["bbox"] = [60, 20, -30, 40]  # the unlabelled person
    ann.write_text(json.dumps(data))
    ds = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=train)
    assert [s.ann_id for s in ds.samples] == [1, 4]
    data["annotations"][3]["bbox"] = [30, 20, 50, 0.0]  # half-labelled person 4
    ann.write_text(json.dumps(data))
    with pytest.raises(PoseCliError) as exc:
        build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=train)
    assert str(exc.value) == f"{ann}: annotation id 4: bbox [30, 20, 50, 0.0] has a non-positive width or height"


def test_ids_fields_and_sizes_filled_when_absent(coco: tuple[Path, Path]) -> None:
    ann, img_dir = coco
    data = json.loads(ann.read_text())
    for key in ("area", "num_keypoints", "iscrowd"):
        del data["annotations"][3][key]
    ann.write_text(json.dumps(data))
    ds = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=False)
    person = ds.coco.anns[4]
    assert (person["num_keypoints"], person["iscrowd"]) == (9, 0)
    assert "area" not in person  # left absent: evaluation uses 0.53 x box area (MMPose's rule), see coco_format
    assert [s.ann_id for s in ds.samples] == [1, 4]


def test_keypoint_check_in_chunks_names_the_annotation(
    coco: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keypoint values are checked in numpy passes of KEYPOINT_CHUNK_VALUES values (here ~one annotation)."""
    monkeypatch.setattr(coco_format, "KEYPOINT_CHUNK_VALUES", 60)
    ann, img_dir = coco
    ds = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)
    assert [s.ann_id for s in ds.samples] == [1, 4]
    for ann_id, index, value in [(4, 5, 7), (6, 0, float("-inf")), (1, 50, 2.5)]:
        data = json.loads(ann.read_text())
        data["annotations"][ann_id - 1]["keypoints"][index] = value
        (ann.parent / "bad.json").write_text(json.dumps(data))
        with pytest.raises(PoseCliError, match=rf"annotation id {ann_id}: 'keypoints' ") as exc:
            build_dataset(ann.parent / "bad.json", img_dir, load_builtin("coco"), data_settings(), train=True)
        assert exc.value.path == str(ann.parent / "bad.json")


def test_annotation_file_size_limit_and_truncation(
    coco: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, img_dir = coco
    size = ann.stat().st_size
    monkeypatch.setenv("POSECLI_MAX_ANN_BYTES", str(size - 1))
    with pytest.raises(PoseCliError, match=rf"annotation file is {size:,} bytes, over the {size - 1:,}-byte limit"):
        build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)
    monkeypatch.setenv("POSECLI_MAX_ANN_BYTES", str(size))
    build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}] * 100))
    with pytest.raises(PoseCliError, match="detection results file is .* bytes, over the") as exc:
        build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=False, bbox_file=dets)
    assert exc.value.path == str(dets)
    monkeypatch.delenv("POSECLI_MAX_ANN_BYTES")
    text = ann.read_text()
    ann.write_text(text[: len(text) // 2])  # an interrupted download
    with pytest.raises(PoseCliError, match=r"not valid JSON: it stops before the JSON is complete.*\(truncated\?\)"):
        build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)
    with pytest.raises(PoseCliError, match="annotation file not found"):
        build_dataset(tmp_path / "nope.json", img_dir, load_builtin("coco"), data_settings(), train=True)


@pytest.mark.parametrize(
    ("det", "message"),
    [
        ({"image_id": 1, "bbox": [0, 0, 5, 5], "score": float("nan")}, "score a finite number"),
        ({"image_id": 1, "bbox": [0, float("inf"), 5, 5], "score": 0.5}, r"bbox must be \[x, y, w, h\] finite"),
        ({"image_id": [1], "bbox": [0, 0, 5, 5], "score": 0.5}, r"detection #0: image_id \[1\] is not in"),
    ],
)
def test_bad_detection_values_are_refused(coco: tuple[Path, Path], tmp_path: Path, det: Any, message: str) -> None:
    ann, img_dir = coco
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([det]))
    with pytest.raises(PoseCliError, match=message) as exc:
        build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=False, bbox_file=dets)
    assert exc.value.path == str(dets)


def test_missing_image_is_refused_when_the_dataset_is_built(tmp_path: Path) -> None:
    """Only images that give a sample must exist (c.png has no people)."""
    ann, img_dir = write_coco(tmp_path, images={"a.png": (100, 80), "b.png": (120, 90), "c.png": (30, 20)})
    (img_dir / "c.png").unlink()
    assert len(build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)) == 2
    (img_dir / "b.png").unlink()
    for train in (True, False):
        with pytest.raises(PoseCliError, match=rf"image file not found \(listed in {ann}\)") as exc:
            build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=train)
        assert exc.value.path == str(img_dir / "b.png")


def test_missing_and_unreadable_images_name_the_file(coco: tuple[Path, Path]) -> None:
    ann, img_dir = coco
    ds = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)
    ds.check_image_files()
    (img_dir / "b.png").unlink()
    with pytest.raises(PoseCliError, match="image file not found") as exc:
        ds[1]
    assert exc.value.path == str(img_dir / "b.png")
    with pytest.raises(PoseCliError, match=r"image file not found \(listed in .*ann\.json\)") as exc:
        ds.check_image_files()
    assert exc.value.path == str(img_dir / "b.png")
    # inside a DataLoader worker: the same one line, not the worker's traceback text
    with pytest.raises(PoseCliError) as exc:
        list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1))
    assert str(exc.value) == f"{img_dir / 'b.png'}: image file not found"
    (img_dir / "b.png").write_bytes(b"not a png")
    with pytest.raises(PoseCliError, match="cannot read image") as exc:
        ds[1]
    assert exc.value.path == str(img_dir / "b.png")


def test_file_names_escaping_the_image_folder_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ann, img_dir = write_coco(root, images={"../outside.png": (100, 80), "b.png": (120, 90)})
    with pytest.raises(PoseCliError, match=r"image id 1: file_name '\.\./outside\.png' points outside") as exc:
        build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)
    assert exc.value.path == str(ann)
    ok = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(allow_outside_img_dir=True), train=True)
    assert ok[0]["image"].shape == (64, 48, 3) and ok[0]["image"].dtype == torch.uint8  # training: uint8 crop


# ------------------------------------------------------------------------------------- item contents
def test_images_are_rgb_after_reading_bgr_from_disk(tmp_path: Path) -> None:
    ann, img_dir = write_coco(tmp_path)
    blue_bgr = np.zeros((80, 100, 3), np.uint8)
    blue_bgr[..., 0] = 255  # OpenCV writes BGR: this file is pure blue
    cv2.imwrite(str(img_dir / "a.png"), blue_bgr)
    assert read_image_rgb(img_dir / "a.png")[0, 0].tolist() == [0, 0, 255]
    ds = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=False)
    pixel = ds[0]["image"][:, 32, 24].numpy()  # crop centre lies inside the image
    np.testing.assert_allclose(pixel, [-0.485 / 0.229, -0.456 / 0.224, (1 - 0.406) / 0.225], rtol=1e-5)


def test_val_item_targets_peak_where_the_keypoints_are(coco: tuple[Path, Path]) -> None:
    ann, img_dir = coco
    ds = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=False, with_target=True)
    item = ds[1]
    assert item["image"].shape == (3, 64, 48) and item["image"].dtype == torch.float32
    assert item["target"].shape == (17, 16, 12) and item["target_weight"].shape == (17, 1)
    assert (item["image_id"], item["index"]) == (2, 1)
    # expected geometry computed independently from the clipped box
    center, scale = bbox_xywh_to_center_scale(clip_bbox_xywh([30, 20, 50, 60], (120, 90)), 0.75)
    np.testing.assert_allclose(item["center"].numpy(), center)
    kp = _kp17(35, 22, visible_every=2)
    in_input = affine_points(kp[:, :2], get_affine_transform(center, scale, 0.0, (48, 64)))
    visible = kp[:, 2] > 0
    np.testing.assert_allclose(item["keypoints"][visible, :2].numpy(), in_input[visible], atol=1e-3)
    target = item["target"].numpy()
    weight = item["target_weight"].numpy()[:, 0]
    np.testing.assert_array_equal(weight, visible.astype(np.float32))
    for j in np.flatnonzero(visible):
        peak = np.unravel_index(target[j].argmax(), target[j].shape)  # (y, x)
        expected = np.floor(in_input[j] / 4 + 0.5).astype(int)  # MSRA target at the rounded heatmap pixel
        assert (peak[1], peak[0]) == tuple(expected) and target[j].max() == pytest.approx(1.0)
    assert np.all(target[~visible] == 0)


def test_joint_weights_multiply_target_weights(coco: tuple[Path, Path]) -> None:
    ann, img_dir = coco
    meta = load_builtin("coco")
    ds = build_dataset(
        ann, img_dir, meta, data_settings(use_different_joint_weights=True), train=False, with_target=True
    )
    np.testing.assert_allclose(ds[0]["target_weight"].numpy()[:, 0], meta.joint_weights)


def test_forced_flip_mirrors_crop_and_swaps_keypoint_slots(coco: tuple[Path, Path]) -> None:
    ann, img_dir = coco
    meta = load_builtin("coco")
    plain = build_dataset(ann, img_dir, meta, data_settings(**NO_AUG), train=True, rng_seed=0, with_target=True)[0]
    flip_aug = NO_AUG | {"flip_prob": 1.0}
    flipped = build_dataset(ann, img_dir, meta, data_settings(**flip_aug), train=True, rng_seed=0, with_target=True)[0]
    # crop column j of the flipped sample shows crop column W - j of the plain one (MMPose's half-pixel shift), up
    # to OpenCV's fixed-point warp: sample positions rounded to 1/32 px on a noise image (neighbours differ by up
    # to 255 grey levels) move a value by at most 255/32 grey levels = 1/32/std after normalisation
    np.testing.assert_allclose(
        flipped["image"][:, :, 1:].numpy(), plain["image"].flip(-1)[:, :, :-1].numpy(), atol=1 / 32 / 0.224
    )
    a = plain["keypoints"].numpy()
    b = flipped["keypoints"].numpy()
    for left, right in meta.flip_pairs:
        np.testing.assert_allclose(b[left, :2], [48 - a[right, 0], a[right, 1]], atol=1e-3)
    np.testing.assert_allclose(b[0, :2], [48 - a[0, 0], a[0, 1]], atol=1e-3)


def test_seeded_augmentation_is_reproducible_and_changes_per_epoch(coco: tuple[Path, Path]) -> None:
    ann, img_dir = coco
    meta, data = load_builtin("coco"), data_settings(flip_prob=0.5, rot_prob=1.0)
    one = build_dataset(ann, img_dir, meta, data, train=True, rng_seed=3, with_target=True)
    two = build_dataset(ann, img_dir, meta, data, train=True, rng_seed=3, with_target=True)
    for i in range(2):
        a, b = one[i], two[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
        assert a["rotation"] == b["rotation"] != 0.0
    first = one[0]["rotation"]
    one.set_epoch(1)
    assert one[0]["rotation"] != first


def test_dataloader_workers_give_the_same_batches(coco: tuple[Path, Path]) -> None:
    ann, img_dir = coco
    ds = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True, rng_seed=5)
    serial = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)))
    parallel = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)))
    assert torch.equal(serial["image"], parallel["image"]) and torch.equal(serial["center"], parallel["center"])

    unseeded = build_dataset(ann, img_dir, load_builtin("coco"), data_settings(), train=True)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)  # worker seeds derive from torch's seed
        runs.append(list(torch.utils.data.DataLoader(unseeded, batch_size=1, num_workers=2)))
    for x, y in zip(*runs, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["scale"], y["scale"])
