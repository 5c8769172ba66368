"""Scoring: COCO AP/AR against pycocotools run directly, WholeBody against MMPose's numbers, NMS, rescoring,
PCK/AUC/EPE on hand-computed cases, the results loader and the metrics table."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rich.console import Console

from posecli import metrics as M
from posecli.datasets.meta import DatasetMeta, load_builtin
from posecli.datasets.wholebody import split_wholebody
from posecli.errors import PoseCliError
from posecli.report import metrics_table

COCO17 = load_builtin("coco")


# ------------------------------------------------------------------------------------------------ helpers
def make_gt(meta: DatasetMeta, num_images: int = 4, seed: int = 0) -> dict[str, Any]:
    """A small COCO keypoint ground truth: 1-3 people per image, random boxes, areas (medium and large), labels."""
    rng = np.random.default_rng(seed)
    k = meta.num_keypoints
    images, anns = [], []
    for i in range(num_images):
        images.append({"id": 100 + i, "file_name": f"{i}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.integers(1, 4))):
            w, h = rng.uniform(50, 250, 2)
            x, y = rng.uniform(0, 300, 2)
            kx, ky = x + rng.uniform(0, w, k), y + rng.uniform(0, h, k)
            v = rng.choice([0, 1, 2], k, p=[0.2, 0.3, 0.5])
            v[0] = 2  # everybody has at least one labelled keypoint
            kpts = np.stack([kx * (v > 0), ky * (v > 0), v], 1)  # unlabelled keypoints are (0, 0, 0) as in COCO
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": 100 + i,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h * rng.uniform(0.4, 0.8)),
                    "keypoints": [float(a) for a in kpts.reshape(-1)],
                    "num_keypoints": int((v > 0).sum()),
                }
            )
    category = {"id": 1, "name": "person", "keypoints": list(meta.keypoint_names), "skeleton": []}
    return {"images": images, "annotations": anns, "categories": [category]}


def perfect_results(gt: dict[str, Any], unlabelled_score: float = 1.0) -> list[dict[str, Any]]:
    """Every GT person predicted exactly (score 1; unlabelled keypoints at the box centre, unlabelled_score)."""
    out = []
    for ann in gt["annotations"]:
        kpts = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        x, y, w, h = ann["bbox"]
        unlabelled = kpts[:, 2] == 0
        kpts[unlabelled, :2] = [x + w / 2, y + h / 2]
        kpts[:, 2] = np.where(unlabelled, unlabelled_score, 1.0)
        out.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": kpts.reshape(-1).tolist(), "score": 1})
    return out


def noisy_results(gt: dict[str, Any], seed: int = 1, sd: float = 4.0) -> list[dict[str, Any]]:
    """GT + Gaussian noise, random scores, the last person dropped, one false positive."""
    rng = np.random.default_rng(seed)
    out = []
    for ann in gt["annotations"][:-1]:
        kpts = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        kpts[:, :2] += rng.normal(0, sd, (len(kpts), 2))
        kpts[:, 2] = rng.uniform(0.1, 1.0, len(kpts))
        out.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": kpts.reshape(-1).tolist(),
                "score": float(rng.uniform(0.3, 1.0)),
            }
        )
    k = len(gt["categories"][0]["keypoints"])
    fp = np.stack([rng.uniform(0, 600, k), rng.uniform(0, 400, k), np.full(k, 0.5)], 1)
    out.append(
        {"image_id": gt["images"][0]["id"], "category_id": 1, "keypoints": fp.reshape(-1).tolist(), "score": 0.6}
    )
    return out


def pycocotools_direct(gt: dict[str, Any], results: list[dict[str, Any]], sigmas: list[float]) -> dict[str, float]:
    """The numbers pycocotools gives when used the usual way (file GT, loadRes, kpt_oks_sigmas)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.array(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(M.STAT_NAMES, (float(s) for s in ev.stats), strict=True))


def _write(folder: Path, gt: dict[str, Any], results: list[dict[str, Any]]) -> tuple[Path, Path]:
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "gt.json").write_text(json.dumps(gt))
    return folder / "results.json", folder / "gt.json"


def person(kpts: np.ndarray, score: float, area: float) -> dict[str, Any]:
    return {"keypoints": kpts.astype(np.float32), "score": score, "area": np.float32(area)}


@pytest.fixture(scope="module")
def gt17() -> dict[str, Any]:
    return make_gt(COCO17)


@pytest.fixture(scope="module")
def wholebody(reference_dir: Path) -> dict[str, Any]:
    folder = reference_dir / "wholebody"
    return {
        "ann": folder / "annotations.json",
        "pred_path": folder / "predictions.json",
        "pred": json.loads((folder / "predictions.json").read_text()),
        "ref": json.loads((folder / "metrics_ref.json").read_text()),
        "meta": load_builtin("coco_wholebody"),
    }


# ------------------------------------------------------------------------------------------------ COCO AP/AR
def test_perfect_results_score_one(gt17: dict[str, Any]) -> None:
    areas = [a["area"] for a in gt17["annotations"]]
    assert any(32**2 < a < 96**2 for a in areas) and any(a > 96**2 for a in areas)  # both M and L are scored
    metrics = M.coco_keypoint_metrics(gt17, perfect_results(gt17), COCO17)
    assert list(metrics) == list(M.STAT_NAMES)  # exactly MMPose's names, no warnings for COCO's own sigmas
    assert all(v == 1.0 for v in metrics.values()), metrics


def test_perturbation_equals_pycocotools_direct(gt17: dict[str, Any]) -> None:
    results = noisy_results(gt17)
    ours = M.coco_keypoint_metrics(gt17, results, COCO17)
    expected = pycocotools_direct(gt17, results, COCO17.sigmas)
    assert 0.2 < expected["AP"] < 0.95  # a real, non-trivial case
    for name in M.STAT_NAMES:
        assert ours[name] == pytest.approx(expected[name], abs=1e-12), name


def test_custom_sigmas_are_used() -> None:
    names = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
    tight = DatasetMeta(name="five", keypoint_names=names, sigmas=[0.02] * 5)
    loose = DatasetMeta(name="five", keypoint_names=names, sigmas=[0.1, 0.08, 0.08, 0.12, 0.12])
    gt = make_gt(tight, num_images=5, seed=3)
    results = noisy_results(gt, seed=4, sd=3.0)
    ap_tight = M.coco_keypoint_metrics(gt, results, tight)
    ap_loose = M.coco_keypoint_metrics(gt, results, loose)
    assert ap_tight["AP"] == pytest.approx(pycocotools_direct(gt, results, tight.sigmas)["AP"], abs=1e-12)
    assert ap_loose["AP"] == pytest.approx(pycocotools_direct(gt, results, loose.sigmas)["AP"], abs=1e-12)
    assert ap_tight["AP"] < ap_loose["AP"] - 0.1  # tighter sigmas, stricter OKS


def test_defaulted_sigmas_warn(tmp_path: Path) -> None:
    meta = DatasetMeta(name="nosig", keypoint_names=["a", "b", "c"])
    gt = make_gt(meta, num_images=2)
    notes: list[str] = []
    metrics = M.coco_keypoint_metrics(gt, perfect_results(gt), meta, warnings=notes)
    assert metrics["AP"] == 1.0 and "warnings" not in metrics  # values stay floats only
    assert len(notes) == 1 and "sigma" in notes[0]
    assert "sigma" in M.score_results_file(*_write(tmp_path, gt, perfect_results(gt)))["warnings"][0]


def test_gt_ignore_counts_labelled_keypoints_not_num_keypoints(gt17: dict[str, Any]) -> None:
    """xtcocotools (MMPose) decides 'no keypoints' from the visibilities; a stale num_keypoints=0 changes nothing."""
    gt = copy.deepcopy(gt17)
    gt["annotations"][0]["num_keypoints"] = 0
    results = perfect_results(gt)[1:]  # that person is missed
    n = len(gt["annotations"])
    ours = M.coco_keypoint_metrics(gt, results, COCO17)
    assert ours["AR"] == pytest.approx((n - 1) / n)
    assert pycocotools_direct(gt, results, COCO17.sigmas)["AR"] == 1.0  # plain pycocotools would ignore it


def test_detection_without_positive_scores_is_dropped(gt17: dict[str, Any]) -> None:
    gt = copy.deepcopy(gt17)
    gt["annotations"] = gt["annotations"][:1]
    good = perfect_results(gt)[0] | {"score": 0.5}
    far = np.array(good["keypoints"]).reshape(-1, 3) + [1000.0, 1000.0, 0.0]
    far[:, 2] = 0.0
    junk = {"image_id": good["image_id"], "category_id": 1, "keypoints": far.reshape(-1).tolist(), "score": 0.9}
    assert M.coco_keypoint_metrics(gt, [good, junk], COCO17)["AP"] == pytest.approx(
        1.0
    )  # junk never enters the ranking
    far[:, 2] = 0.5
    junk["keypoints"] = far.reshape(-1).tolist()
    # A ranked-first false positive halves the precision at full recall: AP = 0.5 exactly.
    assert M.coco_keypoint_metrics(gt, [good, junk], COCO17)["AP"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------ WholeBody
def test_wholebody_matches_mmpose_reference(wholebody: dict[str, Any]) -> None:
    stats = M.wholebody_part_stats(wholebody["ann"], wholebody["pred"], wholebody["meta"])
    ref = wholebody["ref"]["metrics"]
    assert list(stats) == list(ref)
    for part, values in ref.items():
        for name, value in values.items():
            assert stats[part][name] == pytest.approx(value, abs=1e-12), (part, name)


def test_wholebody_metrics_keys_and_flat_results(wholebody: dict[str, Any]) -> None:
    ref = wholebody["ref"]
    flat = [
        {k: v for k, v in r.items() if k not in M.WHOLEBODY_FIELDS.values()} | {"keypoints": M.merge_wholebody(r)}
        for r in wholebody["pred"]
    ]
    metrics = M.wholebody_metrics(wholebody["ann"], flat, wholebody["meta"])
    parts = ["body", "foot", "face", "lefthand", "righthand", "wholebody"]
    assert list(metrics) == [*M.STAT_NAMES, *(f"{p}_AP" for p in parts), *(f"{p}_AR" for p in parts)]
    for name, value in ref["returned_by_do_python_keypoint_eval"].items():
        assert metrics[name] == pytest.approx(value, abs=1e-12)
    for part in parts:
        assert metrics[f"{part}_AP"] == pytest.approx(ref["metrics"][part]["AP"], abs=1e-12)
        assert metrics[f"{part}_AR"] == pytest.approx(ref["metrics"][part]["AR"], abs=1e-12)


def test_score_results_file_infers_wholebody(wholebody: dict[str, Any]) -> None:
    metrics = M.score_results_file(wholebody["pred_path"], wholebody["ann"], dataset=None)
    assert metrics["face_AP"] == pytest.approx(wholebody["ref"]["metrics"]["face"]["AP"], abs=1e-12)
    assert metrics["AP"] == pytest.approx(wholebody["ref"]["metrics"]["wholebody"]["AP"], abs=1e-12)
    assert set(metrics["per_keypoint"]) == set(wholebody["meta"].keypoint_names)
    assert 0.0 < metrics["PCK@0.05"] <= metrics["PCK@0.1"] <= metrics["PCK@0.2"] <= 1.0
    assert "warnings" not in metrics


def test_split_merge_round_trip() -> None:
    flat = [float(i) for i in range(399)]
    split = split_wholebody(flat)
    assert {k: len(v) for k, v in split.items()} == {
        "keypoints": 51,
        "foot_kpts": 18,
        "face_kpts": 204,
        "lefthand_kpts": 63,
        "righthand_kpts": 63,
    }
    assert split["foot_kpts"][0] == 51.0 and split["righthand_kpts"][-1] == 398.0
    assert M.merge_wholebody(split) == flat
    with pytest.raises(PoseCliError, match="399"):
        split_wholebody(flat[:-3])


# ------------------------------------------------------------------------------------------------ NMS, rescoring
def _three_people() -> list[dict[str, Any]]:
    rng = np.random.default_rng(5)
    base = np.stack([rng.uniform(100, 200, 17), rng.uniform(100, 300, 17), rng.uniform(0.5, 1, 17)], 1)
    dup = base + [0.5, -0.5, 0.0]
    other = base + [250.0, 0.0, 0.0]
    return [person(base, 0.9, 20000), person(dup, 0.8, 20000), person(other, 0.7, 20000)]


def test_oks_iou_hand_value() -> None:
    g = np.array([0.0, 0.0, 1.0])
    d = np.array([[3.0, 4.0, 1.0]])
    oks = M.oks_iou(g, d, 100.0, np.array([100.0]), [0.1])
    # e = 5^2 / (2 * 0.1)^2 / 100 / 2 = 3.125
    assert oks.dtype == np.float32 and oks[0] == pytest.approx(math.exp(-3.125), rel=1e-6)


def test_oks_nms_removes_duplicate_keeps_distinct() -> None:
    people = _three_people()
    sigmas = COCO17.sigmas
    assert M.oks_nms(people, 0.9, sigmas) == [0, 2]
    dup_oks = float(M.oks_iou(people[0]["keypoints"].reshape(-1), people[1]["keypoints"].reshape(1, -1),
                              20000, np.array([20000.0]), sigmas)[0])  # fmt: skip
    assert 0.9 < dup_oks < 1.0
    assert M.oks_nms(people, min(dup_oks + 1e-3, 0.99999), sigmas) == [0, 1, 2]  # below its OKS: both stay
    assert M.oks_nms([], 0.9, sigmas) == []


def test_soft_oks_nms_decays_duplicate_score() -> None:
    people = _three_people()
    sigmas = np.array(COCO17.sigmas)
    keep, decayed = M.soft_oks_nms_decayed(people, 0.9, sigmas)
    assert keep == [0, 2, 1]  # the duplicate falls below the distinct person
    flat = [p["keypoints"].reshape(-1) for p in people]
    o01 = M.oks_iou(flat[0], flat[1][None], 20000, np.array([20000.0]), sigmas)[0]
    o02 = M.oks_iou(flat[0], flat[2][None], 20000, np.array([20000.0]), sigmas)[0]
    o21 = M.oks_iou(flat[2], flat[1][None], 20000, np.array([20000.0]), sigmas)[0]
    assert decayed[0] == pytest.approx(0.9)
    assert decayed[1] == pytest.approx(0.7 * math.exp(-(o02**2) / 0.9), rel=1e-6)
    assert decayed[2] == pytest.approx(0.8 * math.exp(-(o01**2) / 0.9) * math.exp(-(o21**2) / 0.9), rel=1e-6)
    assert decayed[2] < 0.8 * 0.4
    assert M.soft_oks_nms(people, 0.9, sigmas) == keep
    many = [person(np.array([[i * 50.0, 0.0, 1.0]]), 1.0 - i / 100, 1000) for i in range(25)]
    assert M.soft_oks_nms(many, 0.9, [0.1]) == list(range(20))  # max_dets


def test_rescore_formula() -> None:
    kpts = np.array([[0, 0, 0.9], [0, 0, 0.1], [0, 0, 0.5], [0, 0, 0.3]], dtype=np.float32)
    people = [
        {"keypoints": kpts, "score": np.float32(0.8), "area": 1.0},
        {"keypoints": kpts * [1, 1, 0.1], "score": np.float32(0.8), "area": 1.0},  # no score above 0.2
    ]
    out = M.rescore(people, vis_thr=0.2)
    assert out[0]["score"] == pytest.approx((0.9 + 0.5 + 0.3) / 3 * 0.8, rel=1e-6)
    assert out[1]["score"] == 0.0
    assert people[0]["score"] == np.float32(0.8)  # inputs untouched


# ------------------------------------------------------------------------------------------------ PCK / AUC / EPE
def _three_kpt_case() -> tuple[DatasetMeta, dict[str, Any], list[dict[str, Any]]]:
    meta = DatasetMeta(name="tri", keypoint_names=["a", "b", "c"], sigmas=[0.1, 0.1, 0.1])
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 80, 40], "area": 2000.0,
         "keypoints": [10, 10, 2, 30, 20, 2, 0, 0, 0]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [200, 200, 60, 60], "area": 2000.0,
         "keypoints": [210, 210, 2, 220, 230, 1, 0, 0, 0]},
    ]  # fmt: skip
    images = [{"id": 1, "file_name": "1.png", "width": 400, "height": 400}]
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "keypoints": meta.keypoint_names}]}
    results = [
        {"image_id": 1, "category_id": 1, "keypoints": [13, 14, 1, 36, 28, 1, 5, 5, 1], "score": 0.3},  # 5 px, 10 px
        {"image_id": 1, "category_id": 1, "keypoints": [900, 900, 1, 910, 900, 1, 920, 900, 1], "score": 0.9},
    ]
    return meta, gt, results


def test_pck_auc_epe_hand_computed() -> None:
    meta, gt, results = _three_kpt_case()
    extra = M.extra_metrics(gt, results, meta)
    # Labelled: 4 keypoints. Person 1 (box side 80): errors 5 px (0.0625) and 10 px (0.125); person 2 unmatched.
    assert extra["PCK@0.05"] == 0.0
    assert extra["PCK@0.1"] == 0.25
    assert extra["PCK@0.2"] == 0.5
    # AUC: a keypoint at ratio r is correct from the first grid step above r; trapezoids on steps of 0.01:
    # r=0.0625 -> (0.005 + 0.43) / 0.5 = 0.87, r=0.125 -> (0.005 + 0.37) / 0.5 = 0.75, misses -> 0.
    assert extra["AUC"] == pytest.approx((0.87 + 0.75) / 4, abs=1e-12)
    assert extra["EPE"] == pytest.approx(7.5)
    per = extra["per_keypoint"]
    assert per["a"]["PCK@0.1"] == 0.5 and per["a"]["EPE"] == pytest.approx(5.0)
    assert per["b"]["PCK@0.1"] == 0.0 and per["b"]["EPE"] == pytest.approx(10.0)
    assert per["c"] == {"AP": None, "PCK@0.1": None, "EPE": None}  # never labelled


def test_matching_takes_best_oks_not_best_score() -> None:
    meta, gt, _ = _three_kpt_case()
    gt["annotations"] = gt["annotations"][:1]
    results = [
        {"image_id": 1, "category_id": 1, "keypoints": [16, 18, 1, 36, 28, 1, 0, 0, 1], "score": 0.9},  # 10 px off
        {"image_id": 1, "category_id": 1, "keypoints": [10, 10, 1, 30, 20, 1, 0, 0, 1], "score": 0.1},  # exact
    ]
    extra = M.extra_metrics(gt, results, meta, per_keypoint_ap=False)
    assert extra["EPE"] == 0.0 and extra["PCK@0.05"] == 1.0
    assert "AP" not in extra["per_keypoint"]["a"]


def test_per_keypoint_ap(gt17: dict[str, Any]) -> None:
    # Unlabelled keypoints predicted with score 0: dropped from that keypoint's evaluation. (With a positive
    # score, a one-keypoint OKS lets a box-centre guess of one person take another's match: AP < 1.)
    results = perfect_results(gt17, unlabelled_score=0.0)
    for r in results:
        r["keypoints"][9 * 3] += 60.0  # left_wrist far off for everybody
    per = M.extra_metrics(gt17, results, COCO17)["per_keypoint"]
    assert per["left_wrist"]["AP"] < 0.1
    assert all(v["AP"] == 1.0 for name, v in per.items() if name != "left_wrist" and v["AP"] is not None)
    assert per["left_wrist"]["EPE"] == pytest.approx(60.0)


# ------------------------------------------------------------------------------------------------ results files
def test_score_results_file_coco17(tmp_path: Path, gt17: dict[str, Any]) -> None:
    ann, pred = tmp_path / "gt.json", tmp_path / "results.json"
    ann.write_text(json.dumps(gt17))
    pred.write_text(json.dumps(perfect_results(gt17)))
    metrics = M.score_results_file(pred, ann, dataset=None, per_keypoint_ap=True)
    assert metrics["AP"] == 1.0 and metrics["AR"] == 1.0 and "warnings" not in metrics  # COCO's own sigmas
    assert metrics["PCK@0.05"] == 1.0 and metrics["EPE"] == 0.0 and metrics["AUC"] == pytest.approx(0.99)
    assert metrics["per_keypoint"]["nose"]["AP"] == 1.0
    loaded = M.load_results(pred, COCO17)
    assert len(loaded) == len(gt17["annotations"]) and len(loaded[0]["keypoints"]) == 51


def test_results_loader_errors(tmp_path: Path, gt17: dict[str, Any]) -> None:
    path = tmp_path / "results.json"
    good = perfect_results(gt17)[:2]
    cases: list[tuple[str, str]] = [
        ("{not json", "not valid JSON"),
        (json.dumps({"results": good}), "JSON list"),
        (json.dumps([good[0], good[1] | {"keypoints": good[1]["keypoints"][:-3]}]), r"results\[1\].*48 values.*51"),
        (json.dumps([{k: v for k, v in good[0].items() if k != "score"}]), r"results\[0\] has no 'score'"),
        (json.dumps([good[0] | {"keypoints": [float("nan")] * 51}]), "non-finite"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(PoseCliError, match=message) as info:
            M.load_results(path, COCO17)
        assert info.value.path == str(path)
    with pytest.raises(PoseCliError, match="cannot read"):
        M.load_results(tmp_path / "missing.json", COCO17)
    split = split_wholebody([1.0] * 399) | {"image_id": 1, "category_id": 1, "score": 1.0}
    split["face_kpts"] = split["face_kpts"][:-3]
    path.write_text(json.dumps([split]))
    with pytest.raises(PoseCliError, match=r"results\[0\].*face_kpts"):
        M.load_results(path, load_builtin("coco_wholebody"))
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(gt17))
    path.write_text(json.dumps([good[0] | {"image_id": 999}]))
    with pytest.raises(PoseCliError, match="image_id 999"):
        M.score_results_file(path, ann)


# ------------------------------------------------------------------------------------------------ table
def test_metrics_table_renders(wholebody: dict[str, Any]) -> None:
    metrics = M.score_results_file(wholebody["pred_path"], wholebody["ann"]) | {"warnings": ["sigmas defaulted"]}
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(metrics_table(metrics))
    text = console.export_text()
    assert "AP .5" in text and "0.7581" in text and "face_AP" in text and "warning: sigmas defaulted" in text
    assert "left_eye" not in text
    console.print(metrics_table(metrics, per_keypoint=True))
    assert "left_eye" in console.export_text()
