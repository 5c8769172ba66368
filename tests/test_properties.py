"""Property-based tests (hypothesis) of what posecli reads from strangers and of its geometry.

- Converters (LabelMe, YOLO-pose, DeepLabCut, COCO-WholeBody) and ``--check``, through the CLI, on random valid
  inputs and on corrupted ones (a value replaced by junk, a key removed, the file cut short, bytes garbled):
  never a traceback; either exit 0 with a COCO file that posecli's own checker finds no fatal problem in, or
  exit 2 with one ``error:`` line. Valid inputs always convert.
- The COCO loader (TopDownCocoDataset) on random valid and corrupted annotation files: it builds and yields
  finite samples, or raises PoseCliError; nothing else.
- The affine transform: a point mapped into the crop and back is the same point.
- Flip: an involution for any metadata whose flip pairs are consistent; inconsistent pairs are refused when
  the metadata file is loaded.

Examples are derandomised (the same inputs on every run, so CI is reproducible) and few (40 each); to hunt for
new failures run with POSECLI_HYPOTHESIS_EXAMPLES=500 POSECLI_HYPOTHESIS_RANDOM=1.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from posecli.cli import app
from posecli.codec import flip_back, flip_keypoints_xy
from posecli.datasets.converters import meta_path_for
from posecli.datasets.meta import DatasetMeta, load_meta_file
from posecli.engine.data import build_dataset
from posecli.errors import PoseCliError
from posecli.settings import DataSettings
from posecli.transforms import affine_points, flip_keypoints, get_affine_transform

torch.set_num_threads(1)
runner = CliRunner()
EXAMPLES = int(os.environ.get("POSECLI_HYPOTHESIS_EXAMPLES", "40"))  # raise it (and unset derandomize) to hunt
FEW = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("POSECLI_HYPOTHESIS_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAMES = ["nose", "left_eye", "right_eye", "left_knee", "right_knee"]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for the examples (hypothesis runs many examples in one test call: one subfolder each)."""
    yield tmp_path_factory.mktemp("properties")


def fresh(scratch: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=scratch))


# ------------------------------------------------------------------------------------------ corruption
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _set(doc: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def corrupt_json(draw: st.DrawFn, doc: Any) -> tuple[str, bool]:
    """(file text, still the valid original?) after one random corruption of a JSON document (or none)."""
    kind = draw(st.sampled_from(["none", "replace", "replace", "delete", "truncate", "garble"]))
    doc = copy.deepcopy(doc)
    if kind in ("replace", "delete"):
        path = draw(st.sampled_from(list(_paths(doc))))
        value = None if kind == "delete" and path else draw(JUNK)
        doc = _set(doc, path, value, delete=kind == "delete" and bool(path))
    text = json.dumps(doc)
    if kind == "truncate":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif kind == "garble" and text:
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from(["\x00", "}", "[", '"', "\\", "é", ",,", "1e999999"])) + text[at + 1 :]
    return text, kind == "none"


@st.composite
def corrupt_text(draw: st.DrawFn, text: str) -> tuple[str, bool]:
    """(text, unchanged?) after cutting, garbling or inserting a token into a line-based file."""
    kind = draw(st.sampled_from(["none", "truncate", "garble", "token"]))
    if kind == "none" or not text:
        return text, True
    at = draw(st.integers(0, len(text) - 1))
    if kind == "truncate":
        return text[:at], False
    if kind == "garble":
        return text[:at] + draw(st.sampled_from(["x", ",", " ", "\n", "-", "nan", "inf", "1e400"])) + text[
            at + 1 :
        ], False
    return text[:at] + draw(st.sampled_from([" 7", " -1", " 0.5", ",foo", "\n0 1 2", " 3"])) + text[at:], False


def cli(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def assert_clean(result: Any, *, must_succeed: bool = False) -> None:
    """Exit 0, or exit 2 with exactly one ``error:`` line; never an uncaught exception."""
    if result.exit_code not in (0, 2) or (
        result.exception is not None and not isinstance(result.exception, SystemExit)
    ):
        raise AssertionError(f"exit {result.exit_code}: {result.exception!r}\n{result.output}") from result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert not must_succeed, f"a valid input was refused: {result.stderr}"
        errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr


def assert_valid_output(out: Path) -> None:
    """A converter's output loads through the training Dataset (its own reader, not the --check the converter ran):
    every labelled person becomes one sample with the file's keypoints, and the written meta file loads."""
    data = json.loads(out.read_text(encoding="utf-8"))
    meta = load_meta_file(meta_path_for(out))
    img_dir = out.parent / "stub_images"  # building the Dataset checks that each image exists; pixels are not read
    for img in data["images"]:
        (img_dir / img["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        (img_dir / img["file_name"]).touch()
    geometry = DataSettings(image_size=(48, 64), heatmap_size=(12, 16))
    ds = build_dataset(out, img_dir, meta, geometry, train=True)
    labelled = {a["id"]: a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]}
    size = {img["id"]: (img["width"], img["height"]) for img in data["images"]}

    def inside(a: dict[str, Any]) -> bool:  # a box of at least 1 px inside its image (smaller ones MMPose drops)
        x, y, w, h = a["bbox"]
        return (
            w > 1
            and h > 1
            and x >= 0
            and y >= 0
            and x + w <= size[a["image_id"]][0]
            and y + h <= size[a["image_id"]][1]
        )

    loaded = [s.ann_id for s in ds.samples]
    assert set(loaded) <= set(labelled) and loaded == sorted(loaded, key=list(labelled).index)
    assert {i for i, a in labelled.items() if inside(a)} <= set(loaded)
    for sample in ds.samples:
        ann = labelled[sample.ann_id]
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(meta.num_keypoints, 3)
        np.testing.assert_array_equal(sample.visible, (kp[:, 2] > 0).astype(np.float32))
        np.testing.assert_allclose(sample.keypoints, kp[:, :2], rtol=1e-6)


def convert_cleanly(src: Path, fmt: str, out: Path, *, must_succeed: bool, extra: tuple = ()) -> None:
    """Run a converter through the CLI: a clean refusal, or a success whose output --check accepts."""
    result = cli("convert-dataset", src, "--from", fmt, "--out", out, *extra)
    assert_clean(result, must_succeed=must_succeed)
    if result.exit_code == 0:
        assert_valid_output(out)


def write_image(path: Path, wh: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((wh[1], wh[0], 3), 127, np.uint8))


# ----------------------------------------------------------------------------------------------- LabelMe
@st.composite
def labelme_doc(draw: st.DrawFn) -> dict[str, Any]:
    """A LabelMe file: people as groups of point shapes (some occluded), rectangles, other shapes ignored."""
    w, h = draw(st.integers(8, 4000)), draw(st.integers(8, 4000))
    groups = draw(st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True))
    if len(groups) == 1 and draw(st.booleans()):
        groups = [None]  # one person needs no group_id
    coord = st.floats(0, 1, allow_nan=False)
    shapes: list[dict[str, Any]] = []
    for group in groups:
        names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=len(NAMES), unique=True))
        for name in names:
            flags = {"occluded": True} if draw(st.booleans()) else {}
            point = [round(draw(coord) * w, 2), round(draw(coord) * h, 2)]
            shapes.append({"label": name, "points": [point], "group_id": group, "shape_type": "point", "flags": flags})
        if draw(st.booleans()):
            x0, x1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
            y0, y1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
            corners = [[round(x0 * w, 2), round(y0 * h, 2)], [round(x1 * w, 2), round(y1 * h, 2)]]
            if corners[0][0] < corners[1][0] and corners[0][1] < corners[1][1]:
                shapes.append({"label": "person", "points": corners, "group_id": group, "shape_type": "rectangle"})
    if draw(st.booleans()):
        shapes.append({"label": "tree", "points": [[1, 1], [2, 2], [1, 3]], "group_id": None, "shape_type": "polygon"})
    return {"version": "5.2.1", "shapes": shapes, "imagePath": "frame.jpg", "imageWidth": w, "imageHeight": h}


@FEW
@given(data=st.data())
def test_labelme_converter_never_crashes(scratch: Path, data: st.DataObject) -> None:
    text, valid = data.draw(corrupt_json(data.draw(labelme_doc())))
    folder = fresh(scratch)
    (folder / "src").mkdir()
    (folder / "src" / "frame.json").write_text(text, encoding="utf-8")
    out = folder / "out.json"
    convert_cleanly(folder / "src", "labelme", out, must_succeed=valid)


# --------------------------------------------------------------------------------------------- YOLO-pose
@st.composite
def yolo_label_text(draw: st.DrawFn, k: int) -> str:
    """Label lines: class, box (normalised centre, size), then k (x, y, v) with x, y inside the box."""
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        cx, cy = draw(st.floats(0.1, 0.9)), draw(st.floats(0.1, 0.9))
        bw, bh = draw(st.floats(0.05, 0.2)), draw(st.floats(0.05, 0.2))
        values = [0, cx, cy, bw, bh]
        for _ in range(k):
            v = draw(st.sampled_from([0, 1, 2]))
            if v == 0:
                values += [0, 0, 0]
            else:
                values += [cx + draw(st.floats(-0.5, 0.5)) * bw, cy + draw(st.floats(-0.5, 0.5)) * bh, v]
        lines.append(" ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in values))
    return "\n".join(lines) + ("\n" if lines else "")


@FEW
@given(data=st.data())
def test_yolo_pose_converter_never_crashes(scratch: Path, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, 5))
    cfg: dict[str, Any] = {"kpt_shape": [k, 3], "names": {0: "person"}}
    if data.draw(st.booleans()):
        cfg["flip_idx"] = list(range(k))
    yaml_text, yaml_ok = data.draw(corrupt_text(yaml.safe_dump(cfg)))
    labels, labels_ok = data.draw(corrupt_text(data.draw(yolo_label_text(k))))
    folder = fresh(scratch)
    src = folder / "ds"
    write_image(src / "images" / "a.png", (data.draw(st.integers(8, 64)), data.draw(st.integers(8, 64))))
    (src / "labels").mkdir(parents=True)
    (src / "labels" / "a.txt").write_text(labels, encoding="utf-8")
    (src / "data.yaml").write_text(yaml_text, encoding="utf-8")
    out = folder / "out.json"
    convert_cleanly(src, "yolo-pose", out, must_succeed=yaml_ok and labels_ok)


# -------------------------------------------------------------------------------------------- DeepLabCut
@st.composite
def dlc_csv(draw: st.DrawFn) -> str:
    """A single-animal CollectedData CSV (3 body parts, 2 frames; empty or NaN cells are unlabelled)."""
    parts = ["snout", "leftear", "rightear"]
    rows = [
        "scorer,,," + ",".join(["me"] * 6),
        "bodyparts,,," + ",".join(p for p in parts for _ in "xy"),
        "coords,,," + ",".join("xy" * 3),
    ]
    for frame in ("img0.png", "img1.png"):
        cells = []
        for _ in parts:
            if draw(st.booleans()):
                cells += [f"{draw(st.floats(0, 159)):.2f}", f"{draw(st.floats(0, 119)):.2f}"]
            else:
                cells += draw(st.sampled_from([["", ""], ["NaN", "NaN"]]))
        if all(c in ("", "NaN") for c in cells):
            cells[:2] = ["10", "10"]  # at least one labelled point per frame
        rows.append(f"labeled-data,vid1,{frame}," + ",".join(cells))
    return "\n".join(rows) + "\n"


@FEW
@given(data=st.data())
def test_deeplabcut_converter_never_crashes(scratch: Path, data: st.DataObject) -> None:
    text, valid = data.draw(corrupt_text(data.draw(dlc_csv())))
    folder = fresh(scratch)
    frames = folder / "project" / "labeled-data" / "vid1"
    for name in ("img0.png", "img1.png"):
        write_image(frames / name, (160, 120))
    (frames / "CollectedData_me.csv").write_text(text, encoding="utf-8")
    out = folder / "out.json"
    convert_cleanly(folder / "project", "deeplabcut", out, must_succeed=valid)


# ---------------------------------------------------------------------------------------- COCO-WholeBody
@st.composite
def wholebody_doc(draw: st.DrawFn) -> dict[str, Any]:
    """A COCO-WholeBody file: split keypoint fields of 17 + 6 + 68 + 21 + 21 points (drawn from a seeded rng:
    133 points per person are too many to draw one by one)."""
    w, h = draw(st.integers(16, 640)), draw(st.integers(16, 640))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def part(n: int) -> list[float]:
        v = rng.integers(0, 3, n)
        xy = np.round(rng.uniform(0, 1, (n, 2)) * [w - 1, h - 1], 2)
        return [float(x) for row in np.column_stack([xy * (v[:, None] > 0), v]) for x in row]

    anns = []
    for i in range(draw(st.integers(0, 2))):
        fields = {key: part(n) for key, n in (("keypoints", 17), ("foot_kpts", 6), ("face_kpts", 68),
                                              ("lefthand_kpts", 21), ("righthand_kpts", 21))}  # fmt: skip
        for key in fields:
            fields[key] = [int(x) if j % 3 == 2 else x for j, x in enumerate(fields[key])]
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, w / 2, h / 2],
                     "area": w * h / 4.0, "num_keypoints": 0, "face_valid": True, **fields})  # fmt: skip
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}],
    }


@FEW
@given(data=st.data())
def test_coco_wholebody_converter_never_crashes(scratch: Path, data: st.DataObject) -> None:
    text, valid = data.draw(corrupt_json(data.draw(wholebody_doc())))
    parts = data.draw(st.sampled_from([None, "body,foot", "face,lefthand"]))
    folder = fresh(scratch)
    src = folder / "wholebody.json"
    src.write_text(text, encoding="utf-8")
    out = folder / "out.json"
    convert_cleanly(src, "coco-wholebody", out, must_succeed=valid, extra=("--parts", parts) if parts else ())


# ------------------------------------------------------------------------------------- COCO files and loader
IMAGE_WH = {1: (40, 32), 2: (24, 48)}


@st.composite
def coco_doc(draw: st.DrawFn) -> dict[str, Any]:
    """A COCO keypoint file over two images on disk, with the 5 keypoints of NAMES."""
    anns = []
    for i in range(draw(st.integers(0, 4))):
        image_id = draw(st.sampled_from([1, 2]))
        w, h = IMAGE_WH[image_id]
        x, y = draw(st.floats(0, w - 4)), draw(st.floats(0, h - 4))
        bw, bh = draw(st.floats(2, w - x)), draw(st.floats(2, h - y))
        kpts: list[float] = []
        for v in draw(st.lists(st.sampled_from([0, 1, 2]), min_size=len(NAMES), max_size=len(NAMES))):
            kpts += (
                [0, 0, 0]
                if v == 0
                else [round(x + draw(st.floats(0, 1)) * bw, 2), round(y + draw(st.floats(0, 1)) * bh, 2), v]
            )
        anns.append({"id": 10 + i, "image_id": image_id, "category_id": 1, "bbox": [x, y, bw, bh], "area": bw * bh,
                     "iscrowd": draw(st.sampled_from([0, 0, 0, 1])), "keypoints": kpts,
                     "num_keypoints": sum(1 for v in kpts[2::3] if v > 0)})  # fmt: skip
    return {
        "images": [{"id": i, "file_name": f"{i}.png", "width": wh[0], "height": wh[1]} for i, wh in IMAGE_WH.items()],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing", "keypoints": list(NAMES), "skeleton": [[1, 2], [1, 3]]}],
    }


@FEW
@given(data=st.data())
def test_check_command_never_crashes(scratch: Path, data: st.DataObject) -> None:
    text, valid = data.draw(corrupt_json(data.draw(coco_doc())))
    folder = fresh(scratch)
    for image_id, wh in IMAGE_WH.items():
        write_image(folder / "images" / f"{image_id}.png", wh)
    ann = folder / "people.json"
    ann.write_text(text, encoding="utf-8")
    assert_clean(cli("convert-dataset", ann, "--check", "--img-dir", folder / "images"), must_succeed=valid)


LOADER_META = DatasetMeta(name="thing", keypoint_names=list(NAMES), flip_pairs=[(1, 2), (3, 4)])
LOADER_DATA = DataSettings(image_size=(16, 24), heatmap_size=(4, 6), sigma=1.0)


def load_all(ann: Path, img_dir: Path, train: bool) -> list[dict[str, Any]]:
    """Build the dataset and read every sample (the work a training epoch or an evaluation does)."""
    dataset = build_dataset(ann, img_dir, LOADER_META, LOADER_DATA, train=train, rng_seed=0, with_target=True)
    return [dataset[i] for i in range(len(dataset))]


def assert_samples(items: list[dict[str, Any]]) -> None:
    for item in items:
        assert item["image"].shape == (3, 24, 16) and torch.isfinite(item["image"]).all()
        assert item["target"].shape == (5, 6, 4) and torch.isfinite(item["target"]).all()
        assert torch.isfinite(item["keypoints"]).all() and torch.isfinite(item["target_weight"]).all()
        assert torch.isfinite(item["center"]).all() and (item["scale"] > 0).all()
        assert math.isfinite(item["area"])


@FEW
@given(data=st.data())
def test_coco_loader_gives_samples_or_a_clean_error(scratch: Path, data: st.DataObject) -> None:
    text, valid = data.draw(corrupt_json(data.draw(coco_doc())))
    folder = fresh(scratch)
    for image_id, wh in IMAGE_WH.items():
        write_image(folder / "images" / f"{image_id}.png", wh)
    ann = folder / "people.json"
    ann.write_text(text, encoding="utf-8")
    for train in (False, True):
        try:
            items = load_all(ann, folder / "images", train)
        except PoseCliError as exc:
            assert not valid, f"a valid file was refused: {exc}"
            assert "\n" not in str(exc)
            continue
        assert_samples(items)


def _person(**change: Any) -> Any:
    """An edit of the one person of the file: set (or with None, remove) fields."""

    def edit(doc: dict[str, Any]) -> None:
        person = doc["annotations"][0]
        for key, value in change.items():
            if value is None:
                person.pop(key, None)
            else:
                person[key] = value

    return edit


# corruptions that crashed the loader with a traceback, or (NaN) loaded into NaN targets that stop training hours
# later: found by the search above in hunting mode, and by hand
KNOWN_BAD = {
    "keypoint null": lambda d: d["annotations"][0].update(keypoints=[None] * 15),
    "keypoint nan": _person(keypoints=[float("nan"), 5, 2] * 5),
    "area null": lambda d: d["annotations"][0].update(area=None),
    "annotation id null": lambda d: d["annotations"][0].update(id=None),
    "annotation id a list": _person(id=[1]),
    "image_id a list": _person(image_id=[1]),
    "category_id a list": _person(category_id=[1]),
    "no category_id": _person(category_id=None),
    "image id a list": lambda d: d["images"][0].update(id=[1]),
    "category without id": lambda d: d["categories"][0].pop("id"),
    "category null": lambda d: d["categories"].__setitem__(0, None),
}


@pytest.mark.parametrize("fault", list(KNOWN_BAD))
def test_coco_loader_known_bad_fields(tmp_path: Path, fault: str) -> None:
    doc = {
        "images": [{"id": 1, "file_name": "1.png", "width": 40, "height": 32}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 1, 9, 9],
                "area": 81.0,
                "iscrowd": 0,
                "keypoints": [5, 5, 2] * 5,
                "num_keypoints": 5,
            }
        ],  # fmt: skip
        "categories": [{"id": 1, "name": "thing", "keypoints": list(NAMES)}],
    }
    write_image(tmp_path / "images" / "1.png", (40, 32))
    ann = tmp_path / "people.json"
    ann.write_text(json.dumps(doc), encoding="utf-8")
    assert len(load_all(ann, tmp_path / "images", train=False)) == 1  # the file before the fault loads
    KNOWN_BAD[fault](doc)
    ann.write_text(json.dumps(doc), encoding="utf-8")
    for train in (False, True):
        try:
            items = load_all(ann, tmp_path / "images", train)
        except PoseCliError as err:
            assert err.path == str(ann) and "\n" not in str(err)
            continue
        assert_samples(items)  # or else a clean result: finite crops, targets and keypoints


# ---------------------------------------------------------------------------------------------- geometry
@FEW
@given(
    center=st.tuples(st.floats(-500, 3000), st.floats(-500, 3000)),
    scale=st.tuples(st.floats(0.05, 20), st.floats(0.05, 20)),
    rot=st.floats(-180, 180),
    output_wh=st.tuples(st.integers(8, 1024), st.integers(8, 1024)),
    points=st.lists(st.tuples(st.floats(-2, 2), st.floats(-2, 2)), min_size=1, max_size=20),
)
def test_affine_point_there_and_back_is_the_same_point(
    center: tuple[float, float],
    scale: tuple[float, float],
    rot: float,
    output_wh: tuple[int, int],
    points: list[tuple[float, float]],
) -> None:
    size = np.asarray(scale) * 200.0  # box size in pixels
    image_pts = np.asarray(center) + np.asarray(points) * size  # (N, 2) around the box, inside and out
    forward = get_affine_transform(center, scale, rot, output_wh)
    backward = get_affine_transform(center, scale, rot, output_wh, inv=True)
    crop_pts = affine_points(image_pts, forward)
    back = affine_points(crop_pts, backward)
    # the matrices come from float32 points (as in MMPose): about 1e-6 of the coordinates' magnitude
    tolerance = 2e-5 * (1.0 + np.abs(image_pts).max() + size.max())
    np.testing.assert_allclose(back, image_pts, atol=tolerance, rtol=0)
    # and the box centre lands in the crop's centre
    mid = affine_points(np.asarray([center], dtype=np.float64), forward)[0]
    np.testing.assert_allclose(mid, [output_wh[0] / 2, output_wh[1] / 2], atol=tolerance * max(output_wh) / size.min())


@st.composite
def consistent_pairs(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    """K and disjoint flip pairs among K keypoints."""
    k = draw(st.integers(1, 40))
    order = draw(st.permutations(list(range(k))))
    n = draw(st.integers(0, k // 2))
    return k, [(order[2 * i], order[2 * i + 1]) for i in range(n)]


@FEW
@given(spec=consistent_pairs(), data=st.data())
def test_flip_is_an_involution_for_consistent_pairs(
    spec: tuple[int, list[tuple[int, int]]], data: st.DataObject
) -> None:
    k, pairs = spec
    meta = DatasetMeta(name="any", keypoint_names=[f"p{i}" for i in range(k)], flip_pairs=pairs)
    index = meta.flip_index
    assert [index[index[i]] for i in range(k)] == list(range(k))
    width = data.draw(st.integers(1, 2000))
    xy = np.asarray(data.draw(st.lists(st.tuples(st.floats(0, width - 1), st.floats(0, 2000)), min_size=k, max_size=k)))
    visible = np.asarray(data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=k, max_size=k)), dtype=np.float32)
    once, vis_once = flip_keypoints(xy, visible, width, meta.flip_pairs)
    twice, vis_twice = flip_keypoints(once, vis_once, width, meta.flip_pairs)
    np.testing.assert_array_equal(vis_twice, visible)
    expected = (xy * visible[:, None]).astype(np.float32)  # MMPose zeroes keypoints that are not visible
    np.testing.assert_allclose(twice, expected, atol=1e-3 * (1 + width), rtol=0)
    np.testing.assert_allclose(flip_keypoints_xy(flip_keypoints_xy(xy, index, width), index, width), xy, atol=1e-9)
    heatmaps = torch.from_numpy(np.asarray(data.draw(st.lists(st.floats(0, 1), min_size=k * 6, max_size=k * 6)),
                                           dtype=np.float32).reshape(1, k, 2, 3))  # fmt: skip
    assert torch.equal(flip_back(flip_back(heatmaps, index, shift=False), index, shift=False), heatmaps)


def _consistent(k: int, pairs: list[list[int]]) -> bool:
    """Independent statement of the rule: indices in range, no self-pair, no keypoint in two pairs."""
    used = [i for pair in pairs for i in pair]
    return all(0 <= i < k for i in used) and all(a != b for a, b in pairs) and len(used) == len(set(used))


@FEW
@given(
    k=st.integers(1, 12),
    pairs=st.lists(st.lists(st.integers(-2, 13), min_size=2, max_size=2), max_size=8),
    suffix=st.sampled_from([".yaml", ".json"]),
)
def test_meta_file_flip_pairs_load_only_when_consistent(
    scratch: Path, k: int, pairs: list[list[int]], suffix: str
) -> None:
    path = fresh(scratch) / f"meta{suffix}"
    doc = {"name": "any", "keypoint_names": [f"p{i}" for i in range(k)], "flip_pairs": pairs}
    path.write_text(json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc), encoding="utf-8")
    if _consistent(k, pairs):
        meta = load_meta_file(path)
        index = meta.flip_index
        assert [index[index[i]] for i in range(k)] == list(range(k))
        assert all(index[a] == b and index[b] == a for a, b in pairs)
    else:
        with pytest.raises(PoseCliError, match="flip pair|two flip pairs") as err:
            load_meta_file(path)
        assert err.value.path == str(path) and "\n" not in str(err.value)
        result = cli("presets", "show", _preset_with_meta(path))  # through the CLI too: exit 2, one line
        assert result.exit_code == 2 and str(path) in result.stderr


def _preset_with_meta(meta_path: Path) -> Path:
    """A copy of the demo preset whose ``dataset:`` is the meta file."""
    from posecli.settings import load_preset_dict

    data, _ = load_preset_dict("demo")
    data["dataset"] = str(meta_path)
    path = meta_path.with_name("preset.yaml")
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path
