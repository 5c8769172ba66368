"""convert-dataset: COCO-WholeBody, YOLO-pose, LabelMe and DeepLabCut to COCO, and --check of COCO files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from posecli.cli import app
from posecli.datasets.coco_format import check_coco_file
from posecli.datasets.converters import meta_path_for
from posecli.datasets.meta import load_builtin, load_meta_file

runner = CliRunner()


def convert(*args: str) -> Any:
    """Run `posecli convert-dataset ARGS` and return the result."""
    return runner.invoke(app, ["convert-dataset", *map(str, args)])


def write_image(path: Path, wh: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((wh[1], wh[0], 3), 90, np.uint8))


# ------------------------------------------------------------------------------------------ coco-wholebody
def wholebody_file(path: Path) -> dict:
    """A two-person COCO-WholeBody file with split keypoint fields."""
    rng = np.random.default_rng(0)

    def part(n: int) -> list[float]:
        out: list[float] = []
        for _ in range(n):
            v = int(rng.integers(0, 3))
            out += (
                [0, 0, 0] if v == 0 else [round(float(rng.uniform(0, 300)), 2), round(float(rng.uniform(0, 200)), 2), v]
            )
        return out

    anns = []
    for i, image_id in enumerate((7, 7, 9)):
        anns.append(
            {
                "id": 100 + i,
                "image_id": image_id,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [10.0 + i, 20.0, 100.0, 150.0],
                "area": 9000.0,
                "segmentation": [[1, 2, 3, 4, 5, 6]],
                "num_keypoints": 99,  # COCO-WholeBody counts only body points here: recounted on conversion
                "keypoints": part(17),
                "foot_kpts": part(6),
                "face_kpts": part(68),
                "lefthand_kpts": part(21),
                "righthand_kpts": part(21),
                "face_box": [0, 0, 1, 1],
                "face_valid": True,
                "lefthand_valid": False,
                "righthand_valid": True,
                "foot_valid": True,
            }
        )
    data = {
        "info": {"description": "tiny wholebody"},
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 320, "height": 240},
            {"id": 9, "file_name": "b.jpg", "width": 320, "height": 240},
        ],
        "annotations": anns,
        "categories": [
            {
                "id": 1,
                "name": "person",
                "supercategory": "person",
                "keypoints": load_builtin("coco").keypoint_names,
                "skeleton": [[a + 1, b + 1] for a, b in load_builtin("coco").skeleton],
            }
        ],
    }
    path.write_text(json.dumps(data))
    return data


def test_wholebody_to_flat_133(tmp_path: Path) -> None:
    src = tmp_path / "wb.json"
    data = wholebody_file(src)
    out = tmp_path / "flat.json"
    result = convert(src, "--from", "coco-wholebody", "--out", out, "--check")
    assert result.exit_code == 0, result.output
    assert "2 images, 3 people" in result.output and "no problems found" in result.output
    flat = json.loads(out.read_text())
    assert flat["categories"][0]["keypoints"] == load_builtin("coco_wholebody").keypoint_names
    for a, b in zip(data["annotations"], flat["annotations"], strict=True):
        assert (b["id"], b["image_id"], b["bbox"], b["area"]) == (a["id"], a["image_id"], a["bbox"], a["area"])
        expected = a["keypoints"] + a["foot_kpts"] + a["face_kpts"] + a["lefthand_kpts"] + a["righthand_kpts"]
        assert b["keypoints"] == expected
        assert b["num_keypoints"] == sum(v > 0 for v in expected[2::3])
        assert "foot_kpts" not in b and "face_valid" not in b and b["segmentation"] == a["segmentation"]
    assert [im["id"] for im in flat["images"]] == [7, 9]
    assert load_meta_file(meta_path_for(out)).to_dict() == load_builtin("coco_wholebody").to_dict()
    assert json.loads(src.read_text()) == data  # input untouched


def test_wholebody_parts_body_foot_equals_body_foot_meta(tmp_path: Path) -> None:
    src = tmp_path / "wb.json"
    data = wholebody_file(src)
    out = tmp_path / "bf.json"
    result = convert(src, "--from", "coco-wholebody", "--out", out, "--parts", "foot,body")
    assert result.exit_code == 0, result.output
    flat = json.loads(out.read_text())
    assert flat["categories"][0]["keypoints"] == load_builtin("body_foot").keypoint_names
    assert [[a - 1, b - 1] for a, b in flat["categories"][0]["skeleton"]] == [
        list(p) for p in load_builtin("body_foot").skeleton
    ]
    a = data["annotations"][1]
    assert flat["annotations"][1]["keypoints"] == a["keypoints"] + a["foot_kpts"]
    meta = load_meta_file(meta_path_for(out))
    body_foot = load_builtin("body_foot")
    assert meta.keypoint_names == body_foot.keypoint_names
    assert meta.flip_pairs == body_foot.flip_pairs
    assert meta.sigmas == body_foot.sigmas
    assert meta.parts == {"body": (0, 17), "foot": (17, 23)}


def test_wholebody_face_hands_subset_reindexes(tmp_path: Path) -> None:
    src = tmp_path / "wb.json"
    wholebody_file(src)
    out = tmp_path / "fh.json"
    assert convert(src, "--from", "coco-wholebody", "--out", out, "--parts", "lefthand,righthand").exit_code == 0
    meta = load_meta_file(meta_path_for(out))
    assert meta.num_keypoints == 42 and meta.parts == {"lefthand": (0, 21), "righthand": (21, 42)}
    assert (0, 21) in meta.flip_pairs and len(meta.flip_pairs) == 21
    assert meta.skeleton[0] == (0, 1)  # left_hand_root - left_thumb1, re-indexed


def test_wholebody_malformed_part_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "wb.json"
    data = wholebody_file(src)
    data["annotations"][2]["foot_kpts"] = data["annotations"][2]["foot_kpts"][:-3]
    src.write_text(json.dumps(data))
    out = tmp_path / "flat.json"
    result = convert(src, "--from", "coco-wholebody", "--out", out)
    assert result.exit_code == 2
    assert "annotation 102: 'foot_kpts' must be 18 numbers, got 15" in result.output
    assert str(src) in result.output
    assert not out.exists()


def test_wholebody_plain_coco_and_bad_parts_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "wb.json"
    data = wholebody_file(src)
    for ann in data["annotations"]:
        del ann["face_kpts"]
    src.write_text(json.dumps(data))
    result = convert(src, "--from", "coco-wholebody", "--out", tmp_path / "o.json", "--parts", "body,face")
    assert result.exit_code == 2 and "has no 'face_kpts'" in result.output
    result = convert(src, "--from", "coco-wholebody", "--out", tmp_path / "o.json", "--parts", "body,tail")
    assert result.exit_code == 2 and "unknown --parts ['tail']" in result.output
    # but the body alone converts
    assert convert(src, "--from", "coco-wholebody", "--out", tmp_path / "o.json", "--parts", "body").exit_code == 0


def test_refuses_to_overwrite_input(tmp_path: Path) -> None:
    src = tmp_path / "wb.json"
    wholebody_file(src)
    before = src.read_bytes()
    result = convert(src, "--from", "coco-wholebody", "--out", src)
    assert result.exit_code == 2 and "refusing to overwrite the input file" in result.output
    assert src.read_bytes() == before


# ----------------------------------------------------------------------------------------------- yolo-pose
def yolo_folder(root: Path, data_yaml: dict | None = None) -> Path:
    """images/{train,val}, labels/{train,val}, data.yaml with 4 keypoints (x, y, v)."""
    cfg = {
        "path": ".",
        "train": "images/train",
        "val": "images/val",
        "kpt_shape": [4, 3],
        "flip_idx": [0, 2, 1, 3],
        "names": {0: "person"},
        "kpt_names": {0: ["head", "left_hand", "right_hand", "tail"]},
    }
    cfg.update(data_yaml or {})
    (root).mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    write_image(root / "images/train/a.jpg", (200, 100))
    write_image(root / "images/train/b.png", (50, 40))
    write_image(root / "images/val/c.jpg", (64, 64))
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text(
        "0 0.5 0.5 0.4 0.6 0.5 0.3 2 0.4 0.5 1 0.6 0.5 2 0 0 0\n"
        "\n"
        "0 0.2 0.25 0.2 0.3 0.2 0.2 2.000000 0.15 0.3 2 0.25 0.3 2 0.2 0.35 2\n"
    )
    (root / "labels/val/c.txt").write_text("0 0.5 0.5 1.0 1.0 0.5 0.5 2 0.25 0.5 2 0.75 0.5 2 0.5 0.9 1\n")
    # b.png has no label file: an image without people
    return root


def test_yolo_pose_to_coco_pixels_and_meta(tmp_path: Path) -> None:
    src = yolo_folder(tmp_path / "ds")
    out = tmp_path / "out" / "all.json"
    result = convert(src, "--from", "yolo-pose", "--out", out, "--check")
    assert result.exit_code == 0, result.output
    assert "3 images, 3 people" in result.output and "no problems found" in result.output
    data = json.loads(out.read_text())
    assert [im["file_name"] for im in data["images"]] == ["train/a.jpg", "train/b.png", "val/c.jpg"]
    assert [(im["width"], im["height"]) for im in data["images"]] == [(200, 100), (50, 40), (64, 64)]
    a0 = data["annotations"][0]
    assert a0["image_id"] == 1 and a0["category_id"] == 1
    assert a0["bbox"] == [60.0, 20.0, 80.0, 60.0]
    assert a0["area"] == 4800.0
    assert a0["keypoints"] == [100.0, 30.0, 2, 80.0, 50.0, 1, 120.0, 50.0, 2, 0.0, 0.0, 0]
    assert a0["num_keypoints"] == 3
    assert data["annotations"][1]["keypoints"][:3] == [40.0, 20.0, 2]
    assert data["annotations"][2]["image_id"] == 3
    assert data["categories"][0]["keypoints"] == ["head", "left_hand", "right_hand", "tail"]
    meta = load_meta_file(meta_path_for(out))
    assert meta.keypoint_names == ["head", "left_hand", "right_hand", "tail"]
    assert meta.flip_pairs == [(1, 2)]
    assert "converted all splits together (train, val)" in result.output


def test_yolo_pose_split_generated_names_and_2d(tmp_path: Path) -> None:
    src = yolo_folder(tmp_path / "ds", {"kpt_names": None, "flip_idx": [3, 1, 2, 0]})
    out = tmp_path / "val.json"
    result = convert(src / "data.yaml", "--from", "yolo-pose", "--out", out, "--split", "val")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [im["file_name"] for im in data["images"]] == ["c.jpg"]
    assert data["categories"][0]["keypoints"] == ["kpt_0", "kpt_1", "kpt_2", "kpt_3"]
    assert data["annotations"][0]["keypoints"] == [32.0, 32.0, 2, 16.0, 32.0, 2, 48.0, 32.0, 2, 32.0, 57.6, 1]
    assert load_meta_file(meta_path_for(out)).flip_pairs == [(0, 3)]
    # two values per keypoint: (0, 0) is unlabelled, anything else labelled
    src2 = tmp_path / "ds2"
    src2.mkdir()
    (src2 / "data.yaml").write_text(yaml.safe_dump({"kpt_shape": [2, 2], "names": ["cat"]}))
    write_image(src2 / "images/x.png", (10, 20))
    (src2 / "labels").mkdir()
    (src2 / "labels/x.txt").write_text("0 0.5 0.5 1 1 0.1 0.5 0 0\n")
    result = convert(src2, "--from", "yolo-pose", "--out", tmp_path / "cat.json", "--keypoints", "nose,tail")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "cat.json").read_text())
    assert data["annotations"][0]["keypoints"] == [1.0, 10.0, 2, 0.0, 0.0, 0]
    assert data["categories"][0]["name"] == "cat" and data["categories"][0]["keypoints"] == ["nose", "tail"]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("0 0.5 0.5 0.4 0.6 0.5 0.3 2 0.4 0.5 1 0.6 0.5 2\n", "line 1: 14 values, expected 17"),
        ("0 0.5 0.5 0.4 0.6 0.5 0.3 2 0.4 0.5 1 0.6 0.5 2 0 0 0\n0 1 2\n", "line 2: 3 values, expected 17"),
        ("0 0.5 0.5 0.4 0.6 0.5 0.3 3 0.4 0.5 1 0.6 0.5 2 0 0 0\n", "line 1: keypoint 0 visibility 3"),
        ("0 0.5 0.5 0.4 0.6 0.5 abc 2 0.4 0.5 1 0.6 0.5 2 0 0 0\n", "line 1: 'abc' is not a number"),
        ("4 0.5 0.5 0.4 0.6 0.5 0.3 2 0.4 0.5 1 0.6 0.5 2 0 0 0\n", "line 1: class 4 is not in data.yaml names"),
    ],
)
def test_yolo_pose_malformed_label_exit_2(tmp_path: Path, label: str, message: str) -> None:
    src = yolo_folder(tmp_path / "ds")
    (src / "labels/train/a.txt").write_text(label)
    out = tmp_path / "o.json"
    result = convert(src, "--from", "yolo-pose", "--out", out)
    assert result.exit_code == 2
    assert message in result.output and "a.txt" in result.output
    assert not out.exists()


def test_yolo_pose_bad_data_yaml_exit_2(tmp_path: Path) -> None:
    src = yolo_folder(tmp_path / "ds", {"flip_idx": [0, 2, 2, 3]})
    result = convert(src, "--from", "yolo-pose", "--out", tmp_path / "o.json")
    assert result.exit_code == 2 and "flip_idx is not a pairing" in result.output
    (src / "data.yaml").write_text(yaml.safe_dump({"names": ["a"]}))
    result = convert(src, "--from", "yolo-pose", "--out", tmp_path / "o.json")
    assert result.exit_code == 2 and "needs kpt_shape" in result.output
    (src / "data.yaml").write_text(yaml.safe_dump({"kpt_shape": [20000, 3]}))
    result = convert(src, "--from", "yolo-pose", "--out", tmp_path / "o.json")
    assert result.exit_code == 2 and "20000 keypoints" in result.output


# ------------------------------------------------------------------------------------------------- labelme
def labelme_doc(image: str, shapes: list[dict], wh: tuple[int, int] = (100, 80)) -> dict:
    return {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image, "imageData": None,
            "imageWidth": wh[0], "imageHeight": wh[1]}  # fmt: skip


def point(label: str, x: float, y: float, group: int | None = None, **flags: bool) -> dict:
    return {"label": label, "points": [[x, y]], "group_id": group, "shape_type": "point", "flags": flags}


def rect(x0: float, y0: float, x1: float, y1: float, group: int | None = None) -> dict:
    return {"label": "person", "points": [[x0, y0], [x1, y1]], "group_id": group, "shape_type": "rectangle"}


def labelme_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    two = [
        point("nose", 10, 12, 1),
        point("left_eye", 14, 10, 1, occluded=True),
        rect(40, 50, 5, 2, 1),  # corners in any order
        point("right_eye", 60, 30, 2),
        point("nose", 50, 40, 2),
        {"label": "hair", "points": [[1, 1], [2, 2], [3, 1]], "shape_type": "polygon", "group_id": 2},
    ]
    (root / "a.json").write_text(json.dumps(labelme_doc("a.jpg", two)))
    one = [point("left_eye", 20, 20), point("nose", 30, 40), rect(0, 0, 99, 79)]
    (root / "sub" / "b.json").write_text(json.dumps(labelme_doc("../imgs/b.png", one, (120, 90))))
    return root


def test_labelme_to_coco(tmp_path: Path) -> None:
    src = labelme_folder(tmp_path / "lm")
    out = tmp_path / "lm.json"
    result = convert(src, "--from", "labelme", "--out", out, "--margin", "0.5")
    assert result.exit_code == 0, result.output
    assert "2 images, 3 people, 6 labelled keypoints" in result.output
    data = json.loads(out.read_text())
    assert [im["file_name"] for im in data["images"]] == ["a.jpg", "imgs/b.png"]
    assert data["images"][1]["width"] == 120
    names = data["categories"][0]["keypoints"]
    assert names == ["nose", "left_eye", "right_eye"]  # order of first appearance
    p1, p2, p3 = data["annotations"]
    assert p1["keypoints"] == [10.0, 12.0, 2, 14.0, 10.0, 1, 0.0, 0.0, 0]  # occluded flag -> v=1
    assert p1["bbox"] == [5.0, 2.0, 35.0, 48.0]  # from the rectangle
    assert p2["keypoints"] == [50.0, 40.0, 2, 0.0, 0.0, 0, 60.0, 30.0, 2]
    # from the points (50..60, 30..40) padded by 0.5 x 10 on each side
    assert p2["bbox"] == [45.0, 25.0, 20.0, 20.0]
    assert p3["image_id"] == 2 and p3["bbox"] == [0.0, 0.0, 99.0, 79.0]
    assert "1 shape(s) that are neither points nor rectangles ignored" in result.output
    meta = load_meta_file(meta_path_for(out))
    assert meta.flip_pairs == [(1, 2)]  # inferred from left_/right_ names


def test_labelme_output_inside_the_source_folder_is_not_read_back(tmp_path: Path) -> None:
    src = labelme_folder(tmp_path / "lm")
    for _ in range(2):  # the second run must skip its own earlier output
        result = convert(src, "--from", "labelme", "--out", src / "coco.json")
        assert result.exit_code == 0, result.output
        assert "2 images, 3 people" in result.output
    result = convert(src / "a.json", "--from", "labelme", "--out", src / "a.json")
    assert result.exit_code == 2 and "refusing to overwrite the input file" in result.output


def test_labelme_keypoint_order_from_builtin(tmp_path: Path) -> None:
    src = labelme_folder(tmp_path / "lm")
    out = tmp_path / "lm.json"
    assert convert(src, "--from", "labelme", "--out", out, "--keypoints", "coco").exit_code == 0
    data = json.loads(out.read_text())
    assert len(data["annotations"][0]["keypoints"]) == 51
    assert data["annotations"][0]["keypoints"][3:6] == [14.0, 10.0, 1]  # left_eye is COCO index 1
    assert load_meta_file(meta_path_for(out)).sigmas == load_builtin("coco").sigmas
    result = convert(src, "--from", "labelme", "--out", out, "--keypoints", "nose,left_eye")
    assert result.exit_code == 2 and "keypoint label 'right_eye' is not in --keypoints" in result.output


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {
                "shapes": [{"label": "nose", "points": [[1, 2], [3, 4]], "shape_type": "point"}],
                "imagePath": "x.jpg",
                "imageWidth": 9,
                "imageHeight": 9,
            },
            "shapes[0] ('nose'): a point needs 1 point(s)",
        ),  # fmt: skip
        ({"images": []}, "not a LabelMe file (no 'shapes' list)"),
        (labelme_doc("x.jpg", [point("nose", 1, 1, 3), point("nose", 2, 2, 3)]), "keypoint 'nose' appears twice"),
        (
            labelme_doc("x.jpg", [point("nose", 1, 1, 1), point("eye", 2, 2, 2), rect(0, 0, 5, 5)]),
            "rectangle without group_id but 2 people",
        ),  # fmt: skip
    ],
)
def test_labelme_malformed_exit_2(tmp_path: Path, doc: dict, message: str) -> None:
    src = tmp_path / "lm"
    src.mkdir()
    (src / "bad.json").write_text(json.dumps(doc))
    result = convert(src, "--from", "labelme", "--out", tmp_path / "o.json")
    assert result.exit_code == 2
    assert message in result.output and "bad.json" in result.output


def test_labelme_invalid_json_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "one.json"
    src.write_text('{"shapes": [')
    result = convert(src, "--from", "labelme", "--out", tmp_path / "o.json")
    assert result.exit_code == 2 and "not valid JSON" in result.output and "line 1" in result.output


# ---------------------------------------------------------------------------------------------- deeplabcut
def dlc_project(root: Path, text: str, images: tuple[str, ...] = ("img0.png", "img1.png")) -> Path:
    folder = root / "labeled-data" / "vid1"
    folder.mkdir(parents=True)
    for name in images:
        write_image(folder / name, (160, 120))
    csv_path = folder / "CollectedData_me.csv"
    csv_path.write_text(text)
    return csv_path


SINGLE = (
    "scorer,,,me,me,me,me,me,me\n"
    "bodyparts,,,snout,snout,leftear,leftear,rightear,rightear\n"
    "coords,,,x,y,x,y,x,y\n"
    "labeled-data,vid1,img0.png,50.5,40,60,30,40,30\n"
    "labeled-data,vid1,img1.png,100,80,,,NaN,NaN\n"
)


def test_deeplabcut_single_animal(tmp_path: Path) -> None:
    csv_path = dlc_project(tmp_path / "proj", SINGLE)
    out = tmp_path / "dlc.json"
    result = convert(csv_path, "--from", "deeplabcut", "--out", out, "--margin", "0.1", "--check")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [im["file_name"] for im in data["images"]] == ["labeled-data/vid1/img0.png", "labeled-data/vid1/img1.png"]
    assert data["images"][0]["width"] == 160 and data["images"][0]["height"] == 120
    assert data["categories"][0]["keypoints"] == ["snout", "leftear", "rightear"]
    a0, a1 = data["annotations"]
    assert a0["keypoints"] == [50.5, 40.0, 2, 60.0, 30.0, 2, 40.0, 30.0, 2]
    assert a0["bbox"] == [38.0, 28.0, 24.0, 14.0]  # points 40..60 x 30..40, padded by 0.1 x 20 = 2
    assert a1["keypoints"] == [100.0, 80.0, 2, 0.0, 0.0, 0, 0.0, 0.0, 0] and a1["num_keypoints"] == 1
    assert a1["bbox"] == [99.9, 79.9, 0.2, 0.2]  # one point: padded by 0.1 x 1 px
    assert str((tmp_path / "proj").resolve()) in result.output  # the image root to use
    assert load_meta_file(meta_path_for(out)).keypoint_names == ["snout", "leftear", "rightear"]


def test_deeplabcut_multi_animal_and_old_index(tmp_path: Path) -> None:
    text = (
        "scorer,,,me,me,me,me,me,me\n"
        "individuals,,,m1,m1,m2,m2,single,single\n"
        "bodyparts,,,nose,nose,nose,nose,feeder,feeder\n"
        "coords,,,x,y,x,y,x,y\n"
        "labeled-data,vid1,img0.png,10,10,20,25,5,5\n"
        "labeled-data,vid1,img1.png,,,30,35,5,5\n"
    )
    csv_path = dlc_project(tmp_path / "proj", text)
    out = tmp_path / "ma.json"
    result = convert(csv_path, "--from", "deeplabcut", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["categories"][0]["keypoints"] == ["nose"]
    assert [(a["image_id"], a["keypoints"]) for a in data["annotations"]] == [
        (1, [10.0, 10.0, 2]),
        (1, [20.0, 25.0, 2]),
        (2, [30.0, 35.0, 2]),  # m1 is not labelled in img1
    ]
    assert "unique bodyparts" in result.output
    # old single-index format, images found with --img-dir
    old = tmp_path / "old.csv"
    old.write_text("scorer,me,me\nbodyparts,nose,nose\ncoords,x,y\nlabeled-data/vid1/img1.png,3,4\n")
    result = convert(old, "--from", "deeplabcut", "--out", tmp_path / "old.json", "--img-dir", tmp_path / "proj")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "old.json").read_text())["annotations"][0]["keypoints"] == [3.0, 4.0, 2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SINGLE.replace("100,80", "100,eighty"), "line 5: 'eighty' is not a number"),
        (SINGLE.replace("bodyparts", "parts"), "line 2 starts with 'parts'"),
        (SINGLE.replace("coords", "xy"), "line 3 starts with 'xy'"),
        ("scorer,,,me\nbodyparts,,,a\n", "header rows coords missing"),
        (SINGLE.replace(",40,30\n", ",40\n", 1), "line 4: 8 cells, the header has 9"),
        (SINGLE.replace("img1.png", "missing.png"), "image 'labeled-data/vid1/missing.png' not found"),
        (SINGLE.replace("100,80,,", "100,,,"), "line 5: 'snout' has only one of x, y"),
    ],
)
def test_deeplabcut_malformed_exit_2(tmp_path: Path, text: str, message: str) -> None:
    csv_path = dlc_project(tmp_path / "proj", text)
    out = tmp_path / "o.json"
    result = convert(csv_path, "--from", "deeplabcut", "--out", out)
    assert result.exit_code == 2
    assert message in result.output and "CollectedData_me.csv" in result.output
    assert not out.exists()


# --------------------------------------------------------------------------------------------------- check
def good_coco(root: Path) -> Path:
    write_image(root / "img" / "a.jpg", (64, 48))
    write_image(root / "img" / "b.jpg", (32, 32))
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.jpg", "width": 32, "height": 32},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 2, 30, 40],
                "area": 1200,
                "iscrowd": 0,
                "num_keypoints": 2,
                "keypoints": [10, 10, 2, 20, 20, 1, 0, 0, 0],
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 1,
                "bbox": [0, 0, 32, 32],
                "area": 1024,
                "iscrowd": 0,
                "num_keypoints": 1,
                "keypoints": [5, 5, 2, 0, 0, 0, 0, 0, 0],
            },
        ],  # fmt: skip
        "categories": [{"id": 1, "name": "person", "keypoints": ["nose", "left_eye", "right_eye"], "skeleton": []}],
    }
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_check_good_file_summary(tmp_path: Path) -> None:
    ann = good_coco(tmp_path)
    result = convert(ann, "--check", "--img-dir", tmp_path / "img")
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output
    report = check_coco_file(ann, tmp_path / "img")
    assert (report.num_images, report.num_annotations, report.num_labelled) == (2, 2, 3)
    assert report.labelled_per_name == {"nose": 2, "left_eye": 1, "right_eye": 0}
    assert report.visible_per_name == {"nose": 2, "left_eye": 0, "right_eye": 0}
    assert not report.problems
    assert "nose" in result.output


def broken(ann: Path, change: Any) -> Path:
    data = json.loads(ann.read_text())
    change(data)
    ann.write_text(json.dumps(data))
    return ann


def _a(i: int, **fields: Any) -> Any:
    return lambda d: d["annotations"][i].update(fields)


@pytest.mark.parametrize(
    ("change", "kind", "where", "fatal"),
    [
        (_a(1, id=1), "duplicate_id", "annotation 1", True),
        (lambda d: d["images"][1].update(id=1), "duplicate_id", "image 1", True),
        (_a(1, image_id=5), "unknown_image", "annotation 2", True),
        (_a(1, category_id=3), "unknown_category", "annotation 2", True),
        (_a(0, keypoints=[10, 10, 2, 20, 20, 1]), "keypoints_length", "annotation 1", True),
        (_a(0, keypoints=[10, 10, 3, 20, 20, 1, 0, 0, 0]), "visibility", "annotation 1", True),
        (_a(1, bbox=[0, 0, -3, 10]), "bbox", "annotation 2", True),
        (_a(1, bbox=[100, 100, 5, 5]), "bbox_outside", "annotation 2", False),  # MMPose skips that person
        (_a(1, bbox=[10, 10, 40, 10]), "bbox_outside", "annotation 2", False),
        (_a(0, num_keypoints=3), "num_keypoints", "annotation 1", False),
        (_a(0, keypoints=[10, 10, 2, 99, 20, 1, 0, 0, 0]), "keypoint_outside", "annotation 1", False),
        (lambda d: d["annotations"][1].pop("area"), "area", "file", False),  # OKS: 0.53 x box area, as MMPose
        (lambda d: d["images"][1].update(file_name="zzz.jpg"), "image_missing", "image 2", True),
        (lambda d: d["images"][0].update(width=65), "image_size", "image 1", True),
        (lambda d: d["images"][1].update(file_name="../img/b.jpg"), "image_path", "image 2", True),
        (lambda d: d["images"][1].update(file_name="/etc/passwd"), "image_path", "image 2", True),
        (lambda d: d["categories"][0].update(keypoints="nose"), "category", "file", True),
    ],
)
def test_check_finds_each_problem(tmp_path: Path, change: Any, kind: str, where: str, fatal: bool) -> None:
    ann = broken(good_coco(tmp_path), change)
    report = check_coco_file(ann, tmp_path / "img")
    found = [p for p in report.problems if p.kind == kind]
    assert found, [p.line() for p in report.problems]
    assert found[0].fatal is fatal
    result = convert(ann, "--check", "--img-dir", tmp_path / "img")
    assert result.exit_code == (2 if fatal else 0), result.output
    assert f"[{kind}] {where}:" in result.output
    if fatal:
        assert "fatal problem(s), listed above" in result.output


def test_check_outside_img_dir_can_be_allowed(tmp_path: Path) -> None:
    ann = broken(good_coco(tmp_path), lambda d: d["images"][1].update(file_name="../img/b.jpg"))
    result = convert(ann, "--check", "--img-dir", tmp_path / "img", "--allow-outside-img-dir")
    assert result.exit_code == 0, result.output


def test_check_without_img_dir_says_so(tmp_path: Path) -> None:
    ann = broken(good_coco(tmp_path), lambda d: d["images"][1].update(file_name="zzz.jpg"))
    result = convert(ann, "--check")
    assert result.exit_code == 0 and "images on disk not checked" in result.output


def test_check_rejects_oversized_and_absurd_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ann = good_coco(tmp_path)
    monkeypatch.setenv("POSECLI_MAX_ANN_BYTES", "100")
    result = convert(ann, "--check")
    assert result.exit_code == 2 and "over the 100-byte limit" in result.output
    monkeypatch.delenv("POSECLI_MAX_ANN_BYTES")
    broken(ann, lambda d: d["categories"][0].update(keypoints=[f"k{i}" for i in range(10001)]))
    result = convert(ann, "--check")
    assert result.exit_code == 2 and "10,001 keypoints" in result.output
    ann.write_text("[1, 2")
    result = convert(ann, "--check")
    assert result.exit_code == 2 and "not valid JSON" in result.output
    ann.write_text("[]")
    result = convert(ann, "--check")
    assert result.exit_code == 2 and "top level must be an object" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --from FORMAT"),
        (["--check"], "--check needs the COCO keypoint file"),
        (["x.json", "--from", "csv", "--out", "o.json"], "unknown --from 'csv'"),
        (["x.json", "--from", "labelme"], "needs --out"),
        (["missing.json", "--from", "labelme", "--out", "o.json"], "no such file or folder"),
        (["x.json", "--from", "labelme", "--out", "o.json", "--parts", "body"], "--parts is only used with"),
    ],
)
def test_command_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = convert(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_wholebody_real_format_confidences_become_flags(tmp_path: Path, reference_dir: Path) -> None:
    """Real COCO-WholeBody files hold detector confidences in the face/hand/foot fields: v > 0 = labelled."""
    repo_ref = reference_dir / "wholebody" / "annotations.json"
    data = json.loads(repo_ref.read_text())
    for ann in data["annotations"]:
        ann["lefthand_kpts"][2::3] = [0.104 if v > 0 else 0 for v in ann["lefthand_kpts"][2::3]]
        ann["face_kpts"][2::3] = [1.37 if v > 0 else 0 for v in ann["face_kpts"][2::3]]
    src = tmp_path / "wb.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "flat.json"
    result = runner.invoke(app, ["convert-dataset", str(src), "--from", "coco-wholebody", "--out", str(out)])
    assert result.exit_code == 0, result.output
    flat = json.loads(out.read_text())
    for before, after in zip(data["annotations"], flat["annotations"], strict=True):
        flags = after["keypoints"][2::3]
        assert set(flags) <= {0, 1, 2}
        assert flags[91:112] == [2 if v > 0 else 0 for v in before["lefthand_kpts"][2::3]]
        assert after["num_keypoints"] == sum(1 for v in flags if v > 0)
    bad = json.loads(repo_ref.read_text())
    bad["annotations"][0]["keypoints"][2] = 0.5  # the body field keeps COCO's 0/1/2 rule
    src.write_text(json.dumps(bad))
    result = runner.invoke(
        app, ["convert-dataset", str(src), "--from", "coco-wholebody", "--out", str(tmp_path / "b.json")]
    )
    assert result.exit_code == 2 and "not in 0, 1, 2" in result.stderr
