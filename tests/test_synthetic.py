"""Synthetic people: exact COCO annotations on the drawn figures, left/right tellable apart, deterministic."""

from __future__ import annotations

import colorsys
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from posecli.cli import app
from posecli.datasets.meta import load_builtin
from posecli.datasets.synthetic import (
    figure_points,
    generate_synthetic_dataset,
    image_rng,
    render_synthetic_image,
    symmetric_pose,
)

runner = CliRunner()
LIMBS = [
    (f"{s}_{a}", f"{s}_{b}")
    for s in ("left", "right")
    for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle"))
]


def _hue(bgr: tuple[int, int, int]) -> float:
    b, g, r = (c / 255 for c in bgr)
    return colorsys.rgb_to_hsv(r, g, b)[0]


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 128-pixel COCO-17 images made through the CLI."""
    out = tmp_path_factory.mktemp("syn") / "coco"
    args = ["convert-dataset", "--from", "synthetic", "--out", str(out), "--num-images", "12", "--image-size", "128"]
    result = runner.invoke(app, [*args, "--seed", "5", "--keypoints", "coco"])
    assert result.exit_code == 0, result.output
    assert "12 images" in result.output
    return out


def test_cli_output_is_valid_coco_that_check_accepts(coco_set: Path) -> None:
    data = json.loads((coco_set / "annotations.json").read_text())
    assert [im["file_name"] for im in data["images"]] == [f"{i:06d}.jpg" for i in range(1, 13)]
    assert all((coco_set / "images" / im["file_name"]).is_file() for im in data["images"])
    cat = data["categories"][0]
    assert cat["keypoints"] == load_builtin("coco").keypoint_names
    assert [[a - 1, b - 1] for a, b in cat["skeleton"]] == [list(p) for p in load_builtin("coco").skeleton]
    assert len(data["annotations"]) >= 12
    for ann in data["annotations"]:
        assert len(ann["keypoints"]) == 51
        assert ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])
        assert ann["area"] == ann["bbox"][2] * ann["bbox"][3] > 0
    result = runner.invoke(
        app, ["convert-dataset", str(coco_set / "annotations.json"), "--check", "--img-dir", str(coco_set / "images")]
    )
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output


def test_file_matches_render_and_keypoints_are_on_the_figure(coco_set: Path) -> None:
    data = json.loads((coco_set / "annotations.json").read_text())
    meta = load_builtin("coco")
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    counts = {0: 0, 1: 0, 2: 0}
    for i in range(12):
        sample = render_synthetic_image(meta, (128, 128), image_rng(5, i), max_people=2)
        anns = by_image[i + 1]
        assert len(anns) == len(sample.people)
        jpeg = cv2.imread(str(coco_set / "images" / f"{i + 1:06d}.jpg"))
        for idx, (ann, person) in enumerate(zip(anns, sample.people, strict=True)):
            kpts = np.array(ann["keypoints"]).reshape(-1, 3)
            np.testing.assert_array_equal(kpts, person.keypoints)  # the file holds exactly what was drawn
            assert ann["bbox"] == list(person.bbox_xywh)
            colours = {tuple(c) for c in person.palette.values()}
            for k, (x, y, v) in enumerate(kpts):
                counts[int(v)] += 1
                if v == 0:
                    assert (x, y) == (0, 0)
                    continue
                px, py = int(round(x)), int(round(y))
                assert person.mask[py, px], (i, meta.keypoint_names[k])  # drawn for this figure
                if v == 2:  # on top: the pixel has one of the figure's own colours
                    assert sample.owner[py, px] == idx + 1
                    assert tuple(int(c) for c in sample.image[py, px]) in colours
                else:  # covered by another figure or an occluding block
                    assert sample.owner[py, px] != idx + 1
            for name in ("left_shoulder", "right_hip", "left_knee"):  # big joint discs survive JPEG
                x, y, v = kpts[meta.keypoint_names.index(name)]
                if v == 2:
                    raw = sample.image[int(round(y)), int(round(x))].astype(int)
                    assert np.abs(jpeg[int(round(y)), int(round(x))].astype(int) - raw).max() <= 40
    assert counts[2] > counts[1] > 0  # mostly visible, some occluded
    assert counts[0] > 0  # some truncated


def test_keypoints_lie_on_the_drawn_limbs() -> None:
    meta = load_builtin("coco")
    index = {n: i for i, n in enumerate(meta.keypoint_names)}
    checked = 0
    for i in range(10):
        sample = render_synthetic_image(meta, (160, 160), image_rng(11, i))
        for person in sample.people:
            for a, b in LIMBS:
                pa, pb = person.keypoints[index[a]], person.keypoints[index[b]]
                if pa[2] == 0 or pb[2] == 0:
                    continue
                for t in np.linspace(0.0, 1.0, 9):
                    x, y = pa[:2] + t * (pb[:2] - pa[:2])
                    assert person.mask[int(round(y)), int(round(x))], (i, a, b, t)
                checked += 1
    assert checked > 100


def test_left_and_right_are_distinguishable() -> None:
    meta = load_builtin("coco")
    index = {n: i for i, n in enumerate(meta.keypoint_names)}
    signs = []
    for i in range(20):
        sample = render_synthetic_image(meta, (128, 128), image_rng(2, i))
        for person in sample.people:
            pal = person.palette
            assert 0.25 <= _hue(pal["left"]) <= 0.45 and 0.78 <= _hue(pal["right"]) <= 0.95  # green vs magenta
            k = person.keypoints
            for joint in ("knee", "elbow", "shoulder"):
                left, right = k[index[f"left_{joint}"]], k[index[f"right_{joint}"]]
                if left[2] == 2 and right[2] == 2:
                    lp = sample.image[int(round(left[1])), int(round(left[0]))]
                    rp = sample.image[int(round(right[1])), int(round(right[0]))]
                    assert tuple(lp) != tuple(rp)
            # chirality: seen from the front, the person's left shoulder is on the right of the body's up axis
            hips = k[[index["left_hip"], index["right_hip"]], :2].mean(0)
            shoulders = k[[index["left_shoulder"], index["right_shoulder"]], :2].mean(0)
            if min(k[index[n], 2] for n in ("left_hip", "right_hip", "left_shoulder", "right_shoulder")) > 0:
                up = shoulders - hips
                across = k[index["left_shoulder"], :2] - k[index["right_shoulder"], :2]
                signs.append(np.sign(up[0] * across[1] - up[1] * across[0]))
    assert len(signs) > 10 and set(signs) == {1.0}  # (y down) same handedness in every image: learnable, flip-sensitive


@pytest.mark.parametrize("name", ["coco", "body_foot", "coco_wholebody"])
def test_figure_is_mirror_consistent_with_flip_pairs(name: str) -> None:
    meta = load_builtin(name)
    pts = figure_points(symmetric_pose())
    xy = np.array([pts[n] for n in meta.keypoint_names])  # (K, 2), pelvis at x = 0
    mirrored = xy[meta.flip_index] * np.array([-1.0, 1.0])
    np.testing.assert_allclose(mirrored, xy, atol=1e-12)
    assert np.abs(xy[:, 0]).max() > 0.1  # not trivially all on the axis


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = generate_synthetic_dataset(tmp_path / "a", 3, "coco", image_size=96, seed=7)
    b = generate_synthetic_dataset(tmp_path / "b", 3, "coco", image_size=96, seed=7)
    c = generate_synthetic_dataset(tmp_path / "c", 3, "coco", image_size=96, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a/images/000002.jpg").read_bytes() == (tmp_path / "b/images/000002.jpg").read_bytes()
    assert a.read_bytes() != c.read_bytes()
    # image i does not depend on how many images are made
    d = generate_synthetic_dataset(tmp_path / "d", 2, "coco", image_size=96, seed=7)
    assert json.loads(d.read_text())["annotations"] == [
        ann for ann in json.loads(a.read_text())["annotations"] if ann["image_id"] <= 2
    ]


@pytest.mark.parametrize(("name", "k"), [("body_foot", 23), ("coco_wholebody", 133)])
def test_other_keypoint_sets(tmp_path: Path, name: str, k: int) -> None:
    out = tmp_path / name
    args = ["convert-dataset", "--from", "synthetic", "--out", str(out), "--num-images", "3", "--image-size", "96"]
    result = runner.invoke(app, [*args, "--keypoints", name, "--max-people", "1", "--check"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "annotations.json").read_text())
    assert data["categories"][0]["keypoints"] == load_builtin(name).keypoint_names
    assert len(data["annotations"]) == 3  # --max-people 1
    assert all(len(a["keypoints"]) == 3 * k for a in data["annotations"])
    names = data["categories"][0]["keypoints"]
    # the foot keypoints are distinct points near the ankle (within a foot length)
    for ann in data["annotations"]:
        kp = np.array(ann["keypoints"]).reshape(-1, 3)
        ankle, toe, heel = (kp[names.index(n)] for n in ("left_ankle", "left_big_toe", "left_heel"))
        if min(ankle[2], toe[2], heel[2]) > 0:
            assert 0 < np.linalg.norm(toe[:2] - ankle[:2]) < 30 and not np.allclose(toe[:2], heel[:2])


def test_multiple_people_occlusion_and_rotation_vary() -> None:
    meta = load_builtin("coco")
    people = [p for i in range(30) for p in render_synthetic_image(meta, (96, 96), image_rng(0, i)).people]
    per_image = [len(render_synthetic_image(meta, (96, 96), image_rng(0, i)).people) for i in range(30)]
    assert 1 in per_image and 2 in per_image
    rotations = [p.rotation for p in people]
    assert max(rotations) - min(rotations) > 1.0
    heights = [p.height_px for p in people]
    assert max(heights) / min(heights) > 1.5


def test_generation_is_fast(tmp_path: Path) -> None:
    start = time.process_time()
    generate_synthetic_dataset(tmp_path, 40, "body_foot", image_size=192, seed=0)
    per_image = (time.process_time() - start) / 40
    assert per_image < 0.05, f"{per_image * 1000:.1f} ms CPU per image"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keypoints", "hands"], "synthetic people support --keypoints"),
        (["--num-images", "0"], "--num-images must be between"),
        (["--image-size", "8"], "--image-size must be between"),
    ],
)
def test_bad_synthetic_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["convert-dataset", "--from", "synthetic", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "o" / "annotations.json").exists()


def test_synthetic_takes_no_src(tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert-dataset", "x.json", "--from", "synthetic", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "takes no SRC" in result.output
