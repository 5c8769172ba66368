"""`posecli evaluate` end to end through the Typer app: a tiny checkpoint on synthetic people, results files,
COCO-WholeBody reference numbers, drawings, the one-pass flip test, and bad inputs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import default_collate
from typer.testing import CliRunner

from posecli.checkpoints import checkpoint_meta, save_checkpoint
from posecli.cli import app
from posecli.datasets.meta import load_builtin
from posecli.datasets.synthetic import generate_synthetic_dataset
from posecli.engine.data import build_dataset
from posecli.engine.evaluate import (
    Predictions,
    evaluate_model,
    kernel_warning,
    predict,
    recommended_modulate_kernel,
)
from posecli.metrics import STAT_NAMES
from posecli.models import build_model
from posecli.settings import TestSettings as EvalSettings
from posecli.settings import load_settings

torch.set_num_threads(1)
runner = CliRunner()
META = load_builtin("body_foot")  # the demo preset's 23 keypoints
K = META.num_keypoints


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 synthetic images (body+feet people, 128 px) and a tiny untrained posecli checkpoint of the demo model."""
    root = tmp_path_factory.mktemp("evaluate")
    ann = generate_synthetic_dataset(root / "synthetic", 6, keypoints="body_foot", image_size=128, seed=3)
    settings = load_settings("demo", {"test.batch_size": 4, "train.workers": 0})
    torch.manual_seed(0)
    model = build_model(settings.model)
    ckpt = root / "tiny.pth"
    save_checkpoint(ckpt, model, checkpoint_meta(settings, META))
    return {"root": root, "ann": ann, "img_dir": ann.parent / "images", "ckpt": ckpt}


def evaluate(*args: str | Path) -> Any:
    return runner.invoke(app, ["evaluate", *map(str, args)])


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def gt_people(ann_file: Path) -> list[dict[str, Any]]:
    return [a for a in read_json(ann_file)["annotations"] if not a.get("iscrowd")]


def check_metrics_keys(metrics: dict[str, Any]) -> None:
    """DESIGN.md: a flat object that starts with MMPose's ten names, all numbers."""
    assert list(metrics)[:10] == list(STAT_NAMES)
    assert all(isinstance(metrics[name], float) for name in STAT_NAMES)


# --------------------------------------------------------------------------------------------- checkpoint
def test_evaluate_checkpoint_end_to_end(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = evaluate(
        "--checkpoint", data["ckpt"], "--ann-file", data["ann"], "--img-dir", data["img_dir"],
        "--output-dir", out, "--device", "cpu", "--modulate-kernel", "9",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = read_json(out / "results.json")
    metrics = read_json(out / "metrics.json")
    people = gt_people(data["ann"])
    assert isinstance(results, list) and 0 < len(results) <= len(people)
    image_ids = {p["image_id"] for p in people}
    for entry in results:
        assert {"image_id", "category_id", "keypoints", "score"} <= set(entry)
        assert len(entry["keypoints"]) == K * 3
        assert entry["image_id"] in image_ids and entry["category_id"] == 1
    check_metrics_keys(metrics)
    assert {"PCK@0.05", "PCK@0.1", "PCK@0.2", "AUC", "EPE"} <= set(metrics)
    assert set(metrics["per_keypoint"]) == set(META.keypoint_names)
    info = metrics["eval_info"]
    assert info["checkpoint_sha256"] == hashlib.sha256(data["ckpt"].read_bytes()).hexdigest()
    assert info["box_source"] == "ground truth" and info["num_boxes"] == len(people)
    assert (info["flip_test"], info["shift_heatmap"], info["post_process"]) == (True, True, "unbiased")
    assert (info["modulate_kernel"], info["trained_sigma"]) == (9, 1.5)
    # the demo model is trained with sigma 1.5: kernel 9 is not the matching 7, so a warning is recorded
    assert any("modulate_kernel 9" in w and "kernel is 7" in w for w in metrics["warnings"])
    assert read_json(out / "results.meta.json") == info
    assert "AP .75" in result.stdout and "PCK@0.1" in result.stdout


def test_flip_off_bbox_file_and_vis(data: dict[str, Path], tmp_path: Path) -> None:
    """Detections from a file (score threshold), no flip test, drawings; person scores follow MMPose's rule."""
    people = gt_people(data["ann"])
    dets = [
        {"image_id": p["image_id"], "category_id": 1, "bbox": p["bbox"], "score": 0.9 if i % 3 else 0.3}
        for i, p in enumerate(people)
    ]
    bbox_file = tmp_path / "dets.json"
    bbox_file.write_text(json.dumps(dets))
    out = tmp_path / "out"
    result = evaluate(
        "--checkpoint", data["ckpt"], "--ann-file", data["ann"], "--img-dir", data["img_dir"],
        "--output-dir", out, "--device", "cpu", "--no-flip-test", "--post-process", "default",
        "--bbox-file", bbox_file, "--det-bbox-thr", "0.5", "--vis-thr", "0", "--no-shift-heatmap",
        "--save-vis", "2", "--vis-gt",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = read_json(out / "metrics.json")
    info = metrics["eval_info"]
    kept = [d for d in dets if d["score"] >= 0.5]
    assert (info["box_source"], info["num_boxes"], info["flip_test"]) == ("file", len(kept), False)
    check_metrics_keys(metrics)
    assert "warnings" not in metrics  # default decoding: no kernel to check

    # MMPose 0.x's rules, checked on the written files with NumPy alone (no posecli function recomputes them):
    # one result per kept detection, on its box (MMPose's TopDownGetBboxCenterScale: center of the box, scale =
    # the box fixed to the input's aspect ratio x 1.25 / 200), person score = detection score x mean keypoint
    # score (vis_thr 0: every keypoint counts). Decoding itself is compared with MMPose's numbers in test_codec.py.
    results = read_json(out / "results.json")
    assert len(results) <= len(kept)  # OKS NMS may merge overlapping people, never adds any
    aspect = 48 / 64  # the demo preset's input (w / h)
    for entry in results:
        kpts = np.asarray(entry["keypoints"], dtype=np.float64).reshape(K, 3)
        det = min(
            (d for d in kept if d["image_id"] == entry["image_id"]),
            key=lambda d: np.hypot(*(np.asarray(d["bbox"][:2]) + np.asarray(d["bbox"][2:]) / 2 - entry["center"])),
        )
        x, y, w, h = det["bbox"]
        np.testing.assert_allclose(entry["center"], [x + w / 2, y + h / 2], atol=1e-3)
        w, h = (h * aspect, h) if w < aspect * h else (w, w / aspect)
        np.testing.assert_allclose(entry["scale"], [w * 1.25 / 200, h * 1.25 / 200], rtol=1e-5)
        assert entry["score"] == pytest.approx(det["score"] * kpts[:, 2].mean(), rel=1e-5)

    vis = sorted((out / "vis").glob("*.jpg"))
    assert len(vis) == 2
    for path in vis:
        image = cv2.imread(str(path))
        assert image is not None and max(image.shape[:2]) == 640  # 128-px images are enlarged to stay legible


def test_flip_test_is_two_forwards_of_b_on_cpu_and_one_of_2b_on_cuda(
    data: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaluate_model: on the CPU each batch of B crops and its mirror go through two forwards of B (measured faster
    there, engine/evaluate.py: flip_test_one_pass); CUDA's one forward of 2B gives the same keypoints."""
    from posecli.engine import evaluate as evaluate_module

    settings = load_settings("demo")
    torch.manual_seed(0)
    model = build_model(settings.model)
    ds = build_dataset(data["ann"], data["img_dir"], META, settings.data, train=False, with_target=False)
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    test = EvalSettings(flip_test=True, batch_size=4, post_process="unbiased", modulate_kernel=7)
    assert not evaluate_module.flip_test_one_pass(torch.device("cpu"))
    assert evaluate_module.flip_test_one_pass(torch.device("cuda"))
    metrics, results = evaluate_model(model, ds, test, META, "cpu")
    n = len(ds)
    assert sizes == [min(4, n - start) for start in range(0, n, 4) for _ in range(2)]
    assert list(metrics)[:10] == list(STAT_NAMES) and all(isinstance(v, float) for v in metrics.values())
    assert len(results) <= n and model.training  # given back in the mode it came in
    loader = [default_collate([ds[i] for i in range(n)])]
    two = predict(model, loader, test, META, "cpu")
    sizes.clear()
    monkeypatch.setattr(evaluate_module, "flip_test_one_pass", lambda device: True)  # CUDA's choice
    one = predict(model, loader, test, META, "cpu")
    assert sizes == [2 * n]
    np.testing.assert_allclose(one.keypoints, two.keypoints, atol=1e-3)

    sizes.clear()
    loader = [default_collate([ds[i] for i in range(3)])]  # one batch of 3
    preds = predict(model, loader, test.model_copy(update={"flip_test": False}), META, "cpu")
    assert sizes == [3] and preds.keypoints.shape == (3, K, 3)


def test_predictions_concat_dedups_ddp_padding() -> None:
    """Shards gathered from ranks (DistributedSampler pads by repeating) -> dataset order, each box once."""

    def shard(idx: list[int]) -> Predictions:
        n = len(idx)
        kp = np.zeros((n, 2, 3), np.float32)
        kp[:, 0, 0] = idx
        return Predictions(
            keypoints=kp, center=np.zeros((n, 2), np.float32), scale=np.ones((n, 2), np.float32),
            area=np.ones(n, np.float32), bbox_score=np.ones(n, np.float32), image_id=[100 + i for i in idx],
            index=np.asarray(idx, np.int64),
        )  # fmt: skip

    joined = Predictions.concat([shard([0, 2, 4]), shard([1, 3, 0])])  # 5 items on 2 ranks: index 0 repeated
    assert joined.index.tolist() == [0, 1, 2, 3, 4]
    assert joined.image_id == [100, 101, 102, 103, 104]
    assert joined.keypoints[:, 0, 0].tolist() == [0, 1, 2, 3, 4]


def test_kernel_rule() -> None:
    assert [recommended_modulate_kernel(s) for s in (1.0, 1.5, 2, 2.5, 3)] == [5, 7, 11, 13, 17]
    unbiased = EvalSettings(post_process="unbiased", modulate_kernel=11)
    assert kernel_warning(unbiased, 2.0, "recorded") is None
    assert "matching kernel is 17" in kernel_warning(unbiased, 3.0, "recorded")  # type: ignore[operator]
    assert kernel_warning(unbiased, None, "unknown") is None
    assert kernel_warning(EvalSettings(post_process="default", modulate_kernel=11), 3.0, "recorded") is None


def test_wholebody_results_are_split_and_score_perfectly(reference_dir: Path) -> None:
    """make_results on 133-keypoint predictions writes MMPose's split fields; the GT itself scores AP 1 per part."""
    from posecli.datasets.coco import read_keypoints
    from posecli.engine.evaluate import make_results, score_results

    gt = read_json(reference_dir / "wholebody" / "annotations.json")
    meta = load_builtin("coco_wholebody")
    anns = [a for a in gt["annotations"] if not a.get("iscrowd")]
    kpts = np.stack([read_keypoints(a, 133, "gt")[0] for a in anns])  # (N, 133, 3)
    # labelled keypoints "detected" with heatmap maximum 1, the others with 0: a part with no labelled keypoint
    # is then no detection for that part (xtcocotools drops it) instead of a false positive at (0, 0)
    kpts[:, :, 2] = kpts[:, :, 2] > 0
    n = len(anns)
    preds = Predictions(
        keypoints=kpts.astype(np.float32), center=np.zeros((n, 2), np.float32), scale=np.ones((n, 2), np.float32),
        area=np.full(n, 1e6, np.float32), bbox_score=np.full(n, 0.5, np.float32),
        image_id=[a["image_id"] for a in anns], index=np.arange(n),
    )  # fmt: skip
    results = make_results(preds, meta, EvalSettings(), category_id=1)
    assert len(results) == n  # distinct people: OKS NMS keeps them all
    sizes = {f: len(results[0][f]) for f in ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")}
    assert sizes == {"keypoints": 51, "foot_kpts": 18, "face_kpts": 204, "lefthand_kpts": 63, "righthand_kpts": 63}
    assert all(r["score"] == 0.5 for r in results)  # box score 0.5 x mean of the keypoint scores above vis_thr
    metrics = score_results(gt, results, meta, extra=False)
    for part in ("body", "foot", "face", "lefthand", "righthand", "wholebody"):
        assert metrics[f"{part}_AP"] == 1.0 and metrics[f"{part}_AR"] == 1.0, part


# -------------------------------------------------------------------------------------------- predictions
def perfect_results(ann_file: Path) -> list[dict[str, Any]]:
    out = []
    for p in gt_people(ann_file):
        k = np.asarray(p["keypoints"], dtype=np.float64).reshape(-1, 3)
        k[:, 2] = 1.0
        out.append({"image_id": p["image_id"], "category_id": 1, "keypoints": k.reshape(-1).tolist(), "score": 1.0})
    return out


def test_predictions_perfect_file_scores_ap_1(data: dict[str, Path], tmp_path: Path) -> None:
    res = tmp_path / "perfect.json"
    res.write_text(json.dumps(perfect_results(data["ann"])))
    out = tmp_path / "out"
    result = evaluate("--predictions", res, "--ann-file", data["ann"], "--output-dir", out)
    assert result.exit_code == 0, result.output
    metrics = read_json(out / "metrics.json")
    check_metrics_keys(metrics)
    assert metrics["AP"] == 1.0 and metrics["AP .5"] == 1.0 and metrics["AR"] == 1.0
    assert metrics["PCK@0.05"] == 1.0 and metrics["EPE"] == 0.0
    assert metrics["eval_info"]["mode"] == "predictions"
    assert not (out / "results.json").exists()  # the results file is the user's own
    assert "warnings" not in metrics  # body_foot has its own sigmas

    # a keypoint set without sigmas (names only from the file's category): default sigma, warned about
    custom = read_json(data["ann"])
    custom["categories"][0]["keypoints"] = [f"point_{i}" for i in range(K)]
    custom_ann = tmp_path / "custom.json"
    custom_ann.write_text(json.dumps(custom))
    result = evaluate("--predictions", res, "--ann-file", custom_ann, "--output-dir", out)
    assert result.exit_code == 0, result.output
    metrics = read_json(out / "metrics.json")
    assert metrics["AP"] == 1.0
    assert any("no OKS sigmas given: using 0.05" in w for w in metrics["warnings"])
    assert "warning: no OKS sigmas given" in result.stdout


def test_predictions_perturbed_file_matches_pycocotools(data: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    results = perfect_results(data["ann"])
    for i, r in enumerate(results):
        k = np.asarray(r["keypoints"]).reshape(-1, 3)
        k[:, :2] += rng.normal(0, 1.0 + i, size=(len(k), 2))  # person i: noise sd 1 + i px
        r["keypoints"] = k.reshape(-1).tolist()
        r["score"] = float(rng.uniform(0.5, 1.0))
    res = tmp_path / "noisy.json"
    res.write_text(json.dumps(results))
    out = tmp_path / "out"
    result = evaluate("--predictions", res, "--ann-file", data["ann"], "--output-dir", out, "--per-keypoint")
    assert result.exit_code == 0, result.output
    metrics = read_json(out / "metrics.json")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(data["ann"]))
        dt = gt.loadRes(str(res))
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(META.sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.0 < ev.stats[0] < 1.0
    for name, value in zip(STAT_NAMES, ev.stats, strict=True):
        assert metrics[name] == pytest.approx(float(value), abs=1e-12), name
    assert all(row["AP"] is not None for row in metrics["per_keypoint"].values())
    assert "Per keypoint" in result.stdout


def test_wholebody_predictions_reproduce_mmpose(reference_dir: Path, tmp_path: Path) -> None:
    wb = reference_dir / "wholebody"
    out = tmp_path / "out"
    result = evaluate(
        "--predictions", wb / "predictions.json", "--ann-file", wb / "annotations.json", "--output-dir", out
    )
    assert result.exit_code == 0, result.output
    metrics = read_json(out / "metrics.json")
    ref = read_json(wb / "metrics_ref.json")["metrics"]
    check_metrics_keys(metrics)
    for name in STAT_NAMES:
        assert metrics[name] == pytest.approx(ref["wholebody"][name], abs=1e-12), name
    for part in ("body", "foot", "face", "lefthand", "righthand", "wholebody"):
        assert metrics[f"{part}_AP"] == pytest.approx(ref[part]["AP"], abs=1e-12), part
        assert metrics[f"{part}_AR"] == pytest.approx(ref[part]["AR"], abs=1e-12), part


def test_predictions_save_vis(data: dict[str, Path], tmp_path: Path) -> None:
    res = tmp_path / "perfect.json"
    res.write_text(json.dumps(perfect_results(data["ann"])))
    out = tmp_path / "out"
    args = ["--predictions", res, "--ann-file", data["ann"], "--output-dir", out]
    result = evaluate(*args, "--save-vis", "3", "--img-dir", data["img_dir"], "--vis-gt")
    assert result.exit_code == 0, result.output
    vis = sorted((out / "vis").glob("*.jpg"))
    assert [p.name for p in vis] == ["1_000001.jpg", "2_000002.jpg", "3_000003.jpg"]
    # a drawing differs from the plain image where the skeleton is
    plain = cv2.resize(cv2.imread(str(data["img_dir"] / "000001.jpg")), (640, 640))
    drawn = cv2.imread(str(vis[0]))
    assert np.mean(np.abs(drawn.astype(int) - plain.astype(int)) > 40) > 0.005


# ------------------------------------------------------------------------------------------------ errors
def one_line_error(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_inputs(data: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    ckpt, ann, img = data["ckpt"], data["ann"], data["img_dir"]
    one_line_error(evaluate("--checkpoint", ckpt, "--ann-file", missing, "--img-dir", img), str(missing), "not found")
    one_line_error(evaluate("--predictions", ann, "--ann-file", missing), str(missing), "not found")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    one_line_error(
        evaluate("--checkpoint", ckpt, "--ann-file", ann, "--img-dir", img, "--output-dir", a_file),
        str(a_file),
        "is a file",
    )
    assert a_file.read_text() == "x"
    one_line_error(evaluate("--ann-file", ann), "--checkpoint", "--predictions")
    one_line_error(evaluate("--checkpoint", ckpt, "--predictions", ann, "--ann-file", ann), "not both")
    one_line_error(evaluate("--checkpoint", ckpt, "--ann-file", ann), "--img-dir")
    one_line_error(evaluate("--checkpoint", missing, "--ann-file", ann, "--img-dir", img), "checkpoint not found")
    bare = tmp_path / "bare.pth"
    torch.save(torch.load(ckpt, weights_only=True)["state_dict"], bare)
    one_line_error(evaluate("--checkpoint", bare, "--ann-file", ann, "--img-dir", img), str(bare), "--preset")
    one_line_error(
        evaluate("--checkpoint", ckpt, "--ann-file", ann, "--img-dir", img, "--keypoints", "17", "--dataset", "coco"),
        "23 keypoints",
    )
    one_line_error(evaluate("--predictions", ann, "--ann-file", ann, "--no-flip-test"), "test.flip_test")
    bad = tmp_path / "bad.json"
    bad.write_text("[{]")
    one_line_error(evaluate("--predictions", bad, "--ann-file", ann), str(bad), "not valid JSON")


def test_print_config_from_checkpoint(data: dict[str, Path]) -> None:
    result = evaluate("--checkpoint", data["ckpt"], "--print-config", "--no-flip-test")
    assert result.exit_code == 0, result.output
    assert "flip_test: false" in result.stdout and "dataset: body_foot" in result.stdout


def _ddp_worker(rank: int, world: int, root: str, ann: str, img_dir: str) -> None:
    """One gloo rank: evaluate its DistributedSampler share; rank 0 saves the gathered metrics and results."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=world)
    try:
        settings = load_settings("demo")
        torch.manual_seed(0)
        model = build_model(settings.model)
        ds = build_dataset(ann, img_dir, META, settings.data, train=False, with_target=False)
        test = EvalSettings(batch_size=2, post_process="unbiased", modulate_kernel=7)
        metrics, results = evaluate_model(model, ds, test, META, "cpu")
        Path(root, f"rank{rank}.json").write_text(json.dumps({"metrics": metrics, "results": results}))
    finally:
        dist.destroy_process_group()


def test_ddp_gathers_on_rank0(data: dict[str, Path], tmp_path: Path) -> None:
    """Two gloo processes: rank 0 gets exactly the single-process results and metrics, rank 1 nothing."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path), str(data["ann"]), str(data["img_dir"])), nprocs=2)
    settings = load_settings("demo")
    torch.manual_seed(0)
    model = build_model(settings.model)
    ds = build_dataset(data["ann"], data["img_dir"], META, settings.data, train=False, with_target=False)
    test = EvalSettings(batch_size=2, post_process="unbiased", modulate_kernel=7)
    metrics, results = evaluate_model(model, ds, test, META, "cpu")
    rank0, rank1 = (read_json(tmp_path / f"rank{r}.json") for r in (0, 1))
    assert rank1 == {"metrics": {}, "results": []}
    assert len(rank0["results"]) == len(results) > 0
    assert rank0["metrics"] == pytest.approx(metrics)
    for got, want in zip(rank0["results"], results, strict=True):
        assert got["image_id"] == want["image_id"]
        np.testing.assert_allclose(got["keypoints"], want["keypoints"], rtol=1e-5, atol=1e-4)
