"""One COCO rule set (posecli.datasets.coco_format): every file below gets the same verdict from
`convert-dataset --check`, from the loader (through `finetune`) and from `evaluate --predictions`, with the same
problem named. Plus the rules MMPose fixes: missing `area` (0.53 x box area on every path), each result's own
category, default OKS sigmas said at every evaluation, and checkpoints written by NumPy 1.x or 2.x."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml
from realworld_fixtures import COCO17, write_fixture
from tiny_hrnet import tiny_stages
from typer.testing import CliRunner

from posecli.checkpoints import checkpoint_meta, load_weights_only, read_checkpoint, save_checkpoint
from posecli.cli import app
from posecli.datasets.meta import resolve_meta
from posecli.metrics import STAT_NAMES
from posecli.models import build_model
from posecli.settings import load_settings

torch.set_num_threads(1)
runner = CliRunner()
E2E_PRESET = Path(__file__).resolve().parent / "presets" / "e2e_small_hrnet.yaml"
E2E_CHECKPOINT = "small_hrnet_mmpose0x_published-8cbcc10a.pth"


def cli(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def tiny_preset(path: Path, dataset: str | None = "coco", use_nms: bool = True) -> Path:
    preset = {
        "dataset": dataset,
        "model": {
            "backbone": {"type": "HRNet", "in_channels": 3, "extra": tiny_stages(8)},
            "head": {"in_channels": 8, "out_channels": 17, "num_deconv_layers": 0},
        },
        "data": {"image_size": [32, 48], "heatmap_size": [8, 12], "sigma": 1.0},
        "train": {"lr_config": {"policy": "step", "step": [1]}, "total_epochs": 1, "batch_size": 2, "workers": 0},
        "test": {"flip_test": False, "batch_size": 4, "use_nms": use_nms},
    }
    path.write_text(yaml.safe_dump(preset), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ one verdict
def base_file() -> dict[str, Any]:
    """Two labelled people in one 96x80 image, COCO-17 names."""
    rng = np.random.default_rng(3)

    def person(aid: int, box: list[float]) -> dict[str, Any]:
        x, y, w, h = box
        kp = np.stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), np.full(17, 2.0)], 1).round(2)
        return {"id": aid, "image_id": 1, "category_id": 1, "bbox": box, "area": w * h * 0.6, "iscrowd": 0,
                "num_keypoints": 17, "keypoints": kp.reshape(-1).tolist()}  # fmt: skip

    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 96, "height": 80}],
        "annotations": [person(1, [10.0, 8.0, 30.0, 60.0]), person(2, [50.0, 10.0, 35.0, 62.0])],
        "categories": [{"id": 1, "name": "person", "keypoints": COCO17, "skeleton": [[1, 2], [2, 3]]}],
    }


def _ann(i: int, **change: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["annotations"][i].update(change)


def _img(**change: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["images"][0].update(change)


def _drop_area(d: dict[str, Any]) -> None:
    for a in d["annotations"]:
        del a["area"]


def _float_ids(d: dict[str, Any]) -> None:
    d["images"][0]["id"] = 1.0
    d["annotations"][1]["id"] = 2.0


# (name, edit, fatal, the problem named by all three commands)
CASES: list[tuple[str, Callable[[dict[str, Any]], Any], bool, str]] = [
    ("iscrowd 2", _ann(1, iscrowd=2), True, "iscrowd 2 is not 0 or 1"),
    ("no area", _drop_area, False, "have no 'area': OKS uses 0.53 x box area"),
    ("negative area", _ann(1, area=-5), False, "area -5 is not positive"),
    ("backslash parent", _img(file_name="..\\x.png"), True, "points outside the image folder"),
    ("backslash absolute", _img(file_name="\\abs.png"), True, "points outside the image folder"),
    ("absolute", _img(file_name="/abs.png"), True, "points outside the image folder"),
    ("visibility 3", lambda d: d["annotations"][0]["keypoints"].__setitem__(5, 3), True, "visibility values [3]"),
    ("short keypoints", lambda d: d["annotations"][0]["keypoints"].__delitem__(slice(0, 3)), True, "has 48 values"),
    ("duplicate id", _ann(1, id=1), True, "appears twice in 'annotations'"),
    ("unknown image", _ann(1, image_id=99), True, "image_id 99 is not in 'images'"),
    ("unknown category", _ann(1, category_id=7), True, "category_id 7 is not in 'categories'"),
    ("flat box", _ann(1, bbox=[50.0, 10.0, 0.0, 62.0]), True, "has a non-positive width or height"),
    ("no categories", lambda d: d.pop("categories"), True, "missing 'categories' list"),
    ("unnamed keypoints", lambda d: d["categories"][0].pop("keypoints"), True, "has no 'keypoints' name list"),
    ("zero width image", _img(width=0), True, "width/height must be positive numbers"),
    ("non-finite area", _ann(1, area="big"), True, "area 'big' is not a finite number"),
    ("bbox of 3", _ann(1, bbox=[1.0, 2.0, 3.0]), True, "bbox must be [x, y, w, h] finite numbers"),
    ("float ids", _float_ids, False, "ids are written as floats"),
    ("skeleton beyond", lambda d: d["categories"][0].update(skeleton=[[1, 2], [17, 18]]), False, "[17, 18]"),
    ("box outside image", _ann(1, bbox=[200.0, 10.0, 35.0, 62.0]), False, "lies outside the 96x80 image"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rules")
    img_dir = root / "images"
    img_dir.mkdir()
    cv2.imwrite(str(img_dir / "a.png"), np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8))
    preds = [
        {"image_id": 1, "category_id": 1, "keypoints": a["keypoints"], "score": 1.0} for a in base_file()["annotations"]
    ]
    (root / "preds.json").write_text(json.dumps(preds))
    return {"root": root, "img_dir": img_dir, "preds": root / "preds.json", "preset": tiny_preset(root / "p.yaml")}


@pytest.mark.parametrize(("name", "edit", "fatal", "problem"), CASES, ids=[c[0] for c in CASES])
def test_one_verdict_for_check_loader_and_predictions(
    world: dict[str, Path], tmp_path: Path, name: str, edit: Any, fatal: bool, problem: str
) -> None:
    data = base_file()
    edit(data)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    check = cli("convert-dataset", ann, "--check")
    train = cli(
        "finetune", "--preset", world["preset"], "--train-ann", ann, "--train-img-dir", world["img_dir"],
        "--work-dir", tmp_path / "work", "--device", "cpu",
    )  # fmt: skip
    score = cli("evaluate", "--predictions", world["preds"], "--ann-file", ann)
    expected = 2 if fatal else 0
    for what, result in (("--check", check), ("finetune", train), ("evaluate --predictions", score)):
        assert result.exit_code == expected, (what, result.output)
        if fatal:  # the same problem named, in one line with the file
            assert problem in " ".join(result.output.split()), (what, result.output)
            assert "Traceback" not in result.output
    assert problem in " ".join(check.output.split())  # warnings too are listed by --check
    if fatal:
        assert "FATAL" in check.output
    else:
        assert json.loads((tmp_path / "work" / "log.jsonl").read_text().splitlines()[-1])
        if name == "no area":  # and the scoring says which area it used
            assert "0.53" in " ".join(score.output.split())


# ------------------------------------------------------------------------------------------ missing area
def _e2e_eval(e2e: Path, ann: Path, out: Path) -> dict[str, Any]:
    result = cli(
        "evaluate", "--checkpoint", e2e / E2E_CHECKPOINT, "--preset", E2E_PRESET, "--ann-file", ann,
        "--img-dir", e2e / "images", "--device", "cpu", "--output-dir", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


def test_missing_area_scores_the_same_through_model_and_predictions(reference_dir: Path, tmp_path: Path) -> None:
    """Without `area`, evaluate --checkpoint (the loader's ground truth) and evaluate --predictions (the file)
    both use 0.53 x box area: the same ten numbers, equal to a file that writes 0.53 x box area itself."""
    e2e = reference_dir / "e2e"
    data = json.loads((e2e / "annotations.json").read_text())
    no_area = copy.deepcopy(data)
    for a in no_area["annotations"]:
        del a["area"]
    ann = tmp_path / "no_area.json"
    ann.write_text(json.dumps(no_area))
    model_path = _e2e_eval(e2e, ann, tmp_path / "model")
    scored = cli("evaluate", "--predictions", tmp_path / "model" / "results.json", "--ann-file", ann)
    assert scored.exit_code == 0, scored.output
    out = tmp_path / "scored"
    cli("evaluate", "--predictions", tmp_path / "model" / "results.json", "--ann-file", ann, "--output-dir", out)
    file_path = json.loads((out / "metrics.json").read_text())
    explicit = copy.deepcopy(data)
    for a in explicit["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3] * 0.53
    (tmp_path / "explicit.json").write_text(json.dumps(explicit))
    out2 = tmp_path / "explicit"
    cli("evaluate", "--predictions", tmp_path / "model" / "results.json", "--ann-file", tmp_path / "explicit.json",
        "--output-dir", out2)  # fmt: skip
    explicit_metrics = json.loads((out2 / "metrics.json").read_text())
    with_area = json.loads((e2e / "mmpose_metrics_a_gt.json").read_text())
    for name in STAT_NAMES:
        assert model_path[name] == file_path[name] == explicit_metrics[name], name
    assert any(model_path[n] != with_area[n] for n in STAT_NAMES)  # the area does matter here
    assert any("'area'" in w for w in model_path["warnings"]) and any("'area'" in w for w in file_path["warnings"])


# ------------------------------------------------------------------------------------------ categories, sigmas
def _posecli_checkpoint(path: Path, preset: Path, ann: Path, keypoints: int) -> Path:
    settings = load_settings(str(preset), {"model.head.out_channels": keypoints})
    meta = resolve_meta(None, ann)  # `dataset: null`: names from the file, default sigmas
    torch.manual_seed(0)
    save_checkpoint(path, build_model(settings.model), checkpoint_meta(settings, meta))
    return path


def test_each_result_keeps_its_category_and_default_sigmas_are_said(tmp_path: Path) -> None:
    ann, img_dir = write_fixture("ap10k", tmp_path)  # species 26, 1 and 2 share one keypoint set
    ckpt = _posecli_checkpoint(tmp_path / "m.pth", tiny_preset(tmp_path / "p.yaml", None, use_nms=False), ann, 17)
    assert read_checkpoint(ckpt).dataset_meta().default_sigmas
    out = tmp_path / "out"
    result = cli("evaluate", "--checkpoint", ckpt, "--ann-file", ann, "--img-dir", img_dir, "--output-dir", out,
                 "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    gt = json.loads(ann.read_text())
    results = json.loads((out / "results.json").read_text())
    assert sorted((r["image_id"], r["category_id"]) for r in results) == sorted(
        (a["image_id"], a["category_id"]) for a in gt["annotations"]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert any("sigma" in w for w in metrics["warnings"]) and "sigma" in result.output
    assert "antelope" not in result.output  # the data set is named after the file, not its first species


def test_perfect_multi_category_predictions_score_ap_1(tmp_path: Path) -> None:
    ann, _ = write_fixture("ap10k", tmp_path)
    gt = json.loads(ann.read_text())
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": a["keypoints"], "score": 1.0}
        for a in gt["annotations"]
    ]
    (tmp_path / "perfect.json").write_text(json.dumps(perfect))
    first_only = [{**r, "category_id": 1} for r in perfect]  # the old bug: every animal an antelope
    (tmp_path / "first.json").write_text(json.dumps(first_only))
    aps = {}
    for name in ("perfect", "first"):
        out = tmp_path / name
        result = cli("evaluate", "--predictions", tmp_path / f"{name}.json", "--ann-file", ann, "--output-dir", out)
        assert result.exit_code == 0, result.output
        aps[name] = json.loads((out / "metrics.json").read_text())["AP"]
    assert aps["perfect"] == pytest.approx(1.0, abs=1e-12)  # COCOeval's mean over the 3 categories
    assert aps["first"] == pytest.approx(1 / 3, abs=1e-12)  # only the antelope matched


# ------------------------------------------------------------------------------------------ NumPy 1.x / 2.x
def test_checkpoints_pickled_by_numpy_1_or_2_load(tmp_path: Path) -> None:
    """MMCV writes NumPy scalars and arrays into checkpoint meta; their pickles name numpy.core (NumPy 1.x) or
    numpy._core (2.x). Both load with weights_only=True whatever NumPy is installed."""
    state = {"backbone.conv1.weight": torch.arange(54, dtype=torch.float32).reshape(2, 3, 3, 3)}
    meta = {"best_score": np.float64(0.725), "sigmas": np.array([0.026, 0.025], np.float32), "epoch": np.int64(7)}
    path = tmp_path / "np.pth"
    torch.save({"state_dict": state, "meta": meta}, path, _use_new_zipfile_serialization=False)  # plain pickle
    raw = path.read_bytes()
    current, other = (b"numpy._core.multiarray", b"numpy.core.multiarray")
    if current not in raw:
        current, other = other, current
    assert current in raw
    variants = {"as written": raw, "other numpy": raw.replace(current, other)}
    for name, data in variants.items():
        (tmp_path / f"{name}.pth").write_bytes(data)
        loaded = load_weights_only(tmp_path / f"{name}.pth")
        assert loaded["meta"]["best_score"] == 0.725 and loaded["meta"]["epoch"] == 7, name
        np.testing.assert_array_equal(loaded["meta"]["sigmas"], np.array([0.026, 0.025], np.float32))
        assert torch.equal(loaded["state_dict"]["backbone.conv1.weight"], state["backbone.conv1.weight"])
