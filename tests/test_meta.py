"""Dataset metadata equals MMPose's; custom metadata is read from files or inferred from COCO categories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posecli.datasets.meta import (
    DEFAULT_SIGMA,
    DatasetMeta,
    infer_flip_pairs,
    load_builtin,
    load_meta_file,
    meta_from_category,
    resolve_meta,
)
from posecli.errors import PoseCliError


@pytest.mark.parametrize(
    ("name", "ref"), [("coco", "coco17_dataset_meta.json"), ("coco_wholebody", "wholebody/dataset_meta.json")]
)
def test_builtin_meta_equals_mmpose(reference_dir: Path, name: str, ref: str) -> None:
    expected = json.loads((reference_dir / ref).read_text())
    meta = load_builtin(name)
    assert meta.num_keypoints == expected["num_keypoints"]
    assert meta.keypoint_names == expected["keypoint_names"]
    assert [list(p) for p in meta.flip_pairs] == expected["flip_pairs"]
    assert meta.flip_index == expected["flip_index"]
    assert meta.sigmas == expected["sigmas"]
    assert meta.joint_weights == expected["joint_weights"]
    assert [list(s) for s in meta.skeleton] == expected["skeleton"]
    assert meta.upper_body_ids == expected["upper_body_ids"]
    assert meta.lower_body_ids == expected["lower_body_ids"]
    assert {k: list(v) for k, v in meta.parts.items()} == expected["part_index_ranges"]
    # the swap names MMPose derives must agree with our flip index
    swaps = expected["keypoint_swap"]
    for i, j in enumerate(meta.flip_index):
        assert swaps[i] == ("" if i == j else meta.keypoint_names[j])


def test_body_foot_is_wholebody_prefix() -> None:
    wb, bf = load_builtin("coco_wholebody"), load_builtin("body_foot")
    assert bf.num_keypoints == 23 and bf.keypoint_names == wb.keypoint_names[:23]
    assert bf.sigmas == wb.sigmas[:23]
    assert bf.flip_index == wb.flip_index[:23]
    assert bf.parts == {"body": (0, 17), "foot": (17, 23)}


def test_onehand10k_meta_equals_mmpose() -> None:
    """MMPose's configs/_base_/datasets/onehand10k.py; the sigmas (MMPose gives none) are COCO-WholeBody's hand's."""
    meta = load_builtin("onehand10k")
    fingers = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
    names = ["wrist"] + [f"{f}{i}" for f in fingers for i in range(1, 5)]
    assert meta.num_keypoints == 21 and meta.keypoint_names == names
    assert meta.flip_pairs == [] and meta.flip_index == list(range(21))  # swap='' for every keypoint
    assert meta.joint_weights == [1.0] * 21
    links = [[names[a], names[b]] for a, b in meta.skeleton]
    assert links == [(["wrist"] + [f"{f}{i}" for i in range(1, 5)])[k : k + 2] for f in fingers for k in range(4)]
    assert len(links) == 20
    wb = load_builtin("coco_wholebody")
    start, end = wb.parts["lefthand"]
    assert meta.sigmas == wb.sigmas[start:end]  # same 21-point layout: root(wrist), thumb1..4, ..., pinky4
    assert [n.removeprefix("left_") for n in wb.keypoint_names[start + 1 : end]] == names[1:]
    assert meta.keypoint_color[0] == [255, 255, 255] and meta.skeleton_color[-1] == [0, 255, 0]
    assert meta.notes == []  # nothing defaulted


def test_infer_flip_pairs_naming_styles() -> None:
    names = ["nose", "left_eye", "right_eye", "L_knee", "R_knee", "paw_left", "paw_right", "LeftHand", "RightHand"]
    assert infer_flip_pairs(names) == [(1, 2), (3, 4), (5, 6), (7, 8)]
    assert infer_flip_pairs(["a", "b"]) == []


def test_meta_from_category_infers_and_reports() -> None:
    cat = {"name": "mouse", "keypoints": ["snout", "left_ear", "right_ear", "tail"], "skeleton": [[1, 2], [1, 3]]}
    meta = meta_from_category(cat, source="ann.json")
    assert meta.flip_pairs == [(1, 2)] and meta.skeleton == [(0, 1), (0, 2)]
    assert meta.sigmas == [DEFAULT_SIGMA] * 4
    assert any("sigmas" in n for n in meta.notes) and any("flip pairs inferred" in n for n in meta.notes)


def test_meta_file_yaml_and_resolve(tmp_path: Path) -> None:
    path = tmp_path / "meta.yaml"
    path.write_text(
        "name: fish\nkeypoint_names: [head, left_fin, right_fin]\nflip_pairs: [[1, 2]]\nsigmas: [0.1, 0.2, 0.2]\n"
    )
    meta = load_meta_file(path)
    assert meta.flip_index == [0, 2, 1] and meta.sigmas == [0.1, 0.2, 0.2]
    assert resolve_meta(str(path)).keypoint_names == meta.keypoint_names
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"categories": [{"id": 1, "name": "p", "keypoints": ["left_a", "right_a"]}]}))
    assert resolve_meta(None, ann).flip_pairs == [(0, 1)]


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"keypoint_names": ["a", "b", "c"], "flip_pairs": [[0, 1], [1, 2]]}, "two flip pairs"),
        ({"keypoint_names": ["a", "b"], "flip_pairs": [[0, 5]]}, "out of range"),
        ({"keypoint_names": ["a", "a"]}, "duplicate"),
        ({"keypoint_names": ["a", "b"], "sigmas": [0.1]}, "sigmas has 1 values"),
    ],
)
def test_inconsistent_meta_rejected(fields: dict, needle: str) -> None:
    with pytest.raises(PoseCliError, match=needle):
        DatasetMeta.from_dict({"name": "x", **fields})


def test_unknown_meta_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"keypoint_names": ["a"], "flip_pair": []}))
    with pytest.raises(PoseCliError, match="unknown keys"):
        load_meta_file(path)
